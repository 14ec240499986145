//! Process-level series: `gitlab_runner_process_state_info`, `gitlab_runner_version_info`,
//! `gitlab_runner_concurrent` and `gitlab_runner_limit`, with GitLab Runner's names, help texts
//! and labels, and Flotilla's `flotilla_tokio_alive_tasks` (sampled when read). The state is set by the manager at each shutdown phase.

use prometheus::{IntGauge, IntGaugeVec, Opts, Registry};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

/// The process's phase, as GitLab Runner's `process_state` tracker names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessState {
    /// Configuration loaded, runners not yet polling.
    Starting,
    /// Taking jobs.
    Running,
    /// SIGQUIT: no new jobs, waiting for running ones.
    GracefulShutdown,
    /// SIGTERM/SIGINT: running jobs are being stopped.
    ForcefulShutdown,
}

impl ProcessState {
    /// Every state, in GitLab Runner's order.
    pub const ALL: [ProcessState; 4] = [
        ProcessState::Starting,
        ProcessState::Running,
        ProcessState::GracefulShutdown,
        ProcessState::ForcefulShutdown,
    ];

    /// The `state` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessState::Starting => "starting",
            ProcessState::Running => "running",
            ProcessState::GracefulShutdown => "graceful-shutdown",
            ProcessState::ForcefulShutdown => "forceful-shutdown",
        }
    }

    fn index(self) -> u8 {
        match self {
            ProcessState::Starting => 0,
            ProcessState::Running => 1,
            ProcessState::GracefulShutdown => 2,
            ProcessState::ForcefulShutdown => 3,
        }
    }
}

/// The process series. Cheap to clone (shared handles).
#[derive(Clone)]
pub struct ProcessMetrics {
    state_info: IntGaugeVec,
    state: Arc<AtomicU8>,
    concurrent: IntGauge,
    limit: IntGaugeVec,
    tasks: IntGauge,
}

impl ProcessMetrics {
    /// Creates the series (state `starting`, version info) and registers them.
    pub fn register(registry: &Registry) -> Result<ProcessMetrics, prometheus::Error> {
        let state_info = IntGaugeVec::new(
            Opts::new(
                "gitlab_runner_process_state_info",
                "This metric provides info about the current state of the GitLab Runner process",
            ),
            &["state"],
        )?;
        let version = IntGaugeVec::new(
            Opts::new(
                "gitlab_runner_version_info",
                "A metric with a constant '1' value labeled by different build stats fields.",
            ),
            &[
                "name",
                "version",
                "revision",
                "branch",
                "go_version",
                "built_at",
                "os",
                "architecture",
            ],
        )?;
        let concurrent = IntGauge::new(
            "gitlab_runner_concurrent",
            "The current value of concurrent setting",
        )?;
        let limit = IntGaugeVec::new(
            Opts::new(
                "gitlab_runner_limit",
                "The current value of concurrent setting",
            ),
            &["runner", "runner_name", "system_id"],
        )?;
        registry.register(Box::new(state_info.clone()))?;
        registry.register(Box::new(version.clone()))?;
        registry.register(Box::new(concurrent.clone()))?;
        registry.register(Box::new(limit.clone()))?;
        let tasks = IntGauge::new(
            "flotilla_tokio_alive_tasks",
            "Tasks alive in the manager's async runtime when /metrics was read",
        )?;
        registry.register(Box::new(tasks.clone()))?;
        version
            .with_label_values(&[
                "flotilla",
                crate::VERSION,
                crate::coordinator::REVISION,
                "unknown",
                // GitLab Runner's Go version label; Flotilla is not Go.
                "none",
                "unknown",
                std::env::consts::OS,
                std::env::consts::ARCH,
            ])
            .set(1);
        let m = ProcessMetrics {
            state_info,
            state: Arc::new(AtomicU8::new(0)),
            concurrent,
            limit,
            tasks,
        };
        m.set_state(ProcessState::Starting);
        Ok(m)
    }

    /// Records the process's phase: its series is 1, the others 0.
    pub fn set_state(&self, state: ProcessState) {
        self.state.store(state.index(), Ordering::Relaxed);
        for s in ProcessState::ALL {
            self.state_info
                .with_label_values(&[s.as_str()])
                .set(i64::from(s == state));
        }
    }

    /// The current phase.
    pub fn state(&self) -> ProcessState {
        let i = self.state.load(Ordering::Relaxed);
        ProcessState::ALL
            .into_iter()
            .find(|s| s.index() == i)
            .unwrap_or(ProcessState::Starting)
    }

    /// Publishes `concurrent`.
    pub fn set_concurrent(&self, concurrent: usize) {
        self.concurrent
            .set(i64::try_from(concurrent).unwrap_or(i64::MAX));
    }

    /// Publishes the runtime's alive task count (`tokio::runtime::RuntimeMetrics::
    /// num_alive_tasks`); called when `/metrics` is read. Outside a runtime it stays as it was.
    pub fn sample_runtime(&self) {
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let alive = handle.metrics().num_alive_tasks();
            self.tasks.set(i64::try_from(alive).unwrap_or(i64::MAX));
        }
    }

    /// Publishes a runner's `limit` (0: none).
    pub fn set_limit(&self, runner: &str, runner_name: &str, system_id: &str, limit: usize) {
        self.limit
            .with_label_values(&[runner, runner_name, system_id])
            .set(i64::try_from(limit).unwrap_or(i64::MAX));
    }
}
