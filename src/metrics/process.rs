//! Process-level series: `gitlab_runner_process_state_info`, `gitlab_runner_version_info`,
//! `gitlab_runner_concurrent` and `gitlab_runner_limit`, with GitLab Runner's names, help texts
//! and labels. The state is set by the manager at each shutdown phase. Also the configuration
//! file's access counters (`gitlab_runner_configuration_loaded_total`, `…_loading_error_total`,
//! `…_saved_total`, `…_saving_error_total`, as GitLab Runner's `configfile` package), and Flotilla's
//! `flotilla_tokio_alive_tasks` (sampled when read).

use prometheus::{IntCounter, IntGauge, IntGaugeVec, Opts, Registry};
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
    config: ConfigAccess,
}

/// GitLab Runner's configuration access counters.
#[derive(Clone)]
struct ConfigAccess {
    loaded: IntCounter,
    loading_error: IntCounter,
    saved: IntCounter,
    saving_error: IntCounter,
}

impl ConfigAccess {
    fn register(registry: &Registry) -> Result<ConfigAccess, prometheus::Error> {
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        Ok(ConfigAccess {
            loading_error: counter(
                "gitlab_runner_configuration_loading_error_total",
                "Total number of times the configuration file was not loaded by Runner process due to errors",
            )?,
            loaded: counter(
                "gitlab_runner_configuration_loaded_total",
                "Total number of times the configuration file was loaded by Runner process",
            )?,
            saving_error: counter(
                "gitlab_runner_configuration_saving_error_total",
                "Total number of times the configuration file was not saved by Runner process due to errors",
            )?,
            saved: counter(
                "gitlab_runner_configuration_saved_total",
                "Total number of times the configuration file was saved by Runner process",
            )?,
        })
    }
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
        registry.register(Box::new(super::proc_self::ProcessCollector::new()?))?;
        let config = ConfigAccess::register(registry)?;
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
            config,
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

    /// The configuration file was read and accepted (the initial load, each applied reload).
    pub fn config_loaded(&self) {
        self.config.loaded.inc();
    }

    /// The configuration file could not be read or was rejected (a reload that kept the
    /// running configuration).
    pub fn config_loading_failed(&self) {
        self.config.loading_error.inc();
    }

    /// The manager wrote the configuration file (a rotated runner token), or failed to.
    pub fn config_saved(&self, ok: bool) {
        if ok {
            self.config.saved.inc();
        } else {
            self.config.saving_error.inc();
        }
    }
}
