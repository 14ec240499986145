//! One job's run context, shared by every stage: what the caller lent for the run (Docker, the
//! runner's settings, the job, the object names), the trace's runner log, the registry
//! credentials, the job deadline and the helper container's id once made. Also how a stage ends
//! short of success ([`Ended`], [`Interrupt`]).
//!
//! This file sits below the stages: `stages.rs` (their order), `prepare.rs`, `sources.rs`,
//! `cache.rs`, `artifacts.rs` and `helper_container.rs` import it, and it imports none of them.

use super::auth::{self, RegistryAuths};
use super::cleanup::{self, Names};
use super::container::BUILDS_DIR;
use super::error::ExecError;
use super::gitlab_labels;
use super::section::RunnerLog;
use super::{JobOutcome, JobRun};
use crate::config::DockerConfig;
use bollard::Docker;
use std::collections::HashMap;
use std::future::Future;
use tokio::time::Instant;

/// Why stages stopped before their end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Interrupt {
    /// The job's (or the script's) timeout passed.
    TimedOut,
    /// The job was canceled gracefully.
    Canceled,
}

impl Interrupt {
    /// The job's outcome when stages stopped this way.
    pub(super) fn outcome(self) -> JobOutcome {
        match self {
            Interrupt::TimedOut => JobOutcome::TimedOut,
            Interrupt::Canceled => JobOutcome::Canceled,
        }
    }

    /// The trace's warning for stage `stage` being stopped.
    pub(super) fn warn(self, log: &RunnerLog, stage: &str) {
        match self {
            Interrupt::TimedOut => log.warning(&format!(
                "{stage} could not run to completion because the timeout was exceeded."
            )),
            Interrupt::Canceled => log.warning("script canceled externally (UI, API)"),
        }
    }
}

/// One job's run: what it needs from the caller, borrowed for the run's length.
pub(super) struct JobCtx<'a> {
    pub docker: &'a Docker,
    pub settings: &'a DockerConfig,
    pub run: &'a JobRun,
    pub names: &'a Names,
    pub log: RunnerLog,
    /// Registry credentials for every image the job pulls (job, services, helper).
    pub auths: RegistryAuths,
    labels: HashMap<String, String>,
    /// The job timeout, counted from [`JobCtx::new`].
    pub(super) deadline: Instant,
    /// The helper container's id once a stage made it (see `helper_container.rs`).
    pub(super) helper: tokio::sync::OnceCell<String>,
}

impl<'a> JobCtx<'a> {
    /// A run starting now: the job timeout counts from here.
    pub(super) fn new(
        docker: &'a Docker,
        settings: &'a DockerConfig,
        run: &'a JobRun,
        names: &'a Names,
    ) -> Self {
        let timeout = std::time::Duration::from_secs(run.job.timeout_secs());
        let host_config = auth::host_config_path(|key| std::env::var(key).ok());
        let auths =
            RegistryAuths::resolve(&run.variables, host_config.as_deref(), &run.job.credentials);
        JobCtx {
            auths,
            docker,
            settings,
            run,
            names,
            log: RunnerLog::new(run.trace.clone(), run.job.features.trace_sections),
            labels: {
                let mut labels = cleanup::labels(&run.labels);
                labels.extend(gitlab_labels::job_labels(
                    &run.job,
                    &run.variables,
                    &run.labels,
                ));
                labels
            },
            deadline: crate::time::deadline_after(timeout),
            helper: tokio::sync::OnceCell::new(),
        }
    }

    /// The labels every object of the job carries: Flotilla's and GitLab Runner's.
    pub(super) fn labels(&self) -> &HashMap<String, String> {
        &self.labels
    }

    /// The network mode of every container of the job: `[runners.docker] network_mode`, else
    /// the per-job network `prepare` made.
    pub(super) fn network_mode(&self) -> String {
        self.settings
            .network_mode
            .clone()
            .unwrap_or_else(|| self.names.network.clone())
    }

    /// Runs `fut` unless the graceful cancel or `deadline` comes first (then `fut` is dropped).
    pub(super) async fn bounded<F: Future>(
        &self,
        deadline: Instant,
        fut: F,
    ) -> Result<F::Output, Interrupt> {
        tokio::select! {
            biased;
            _ = self.run.cancel.cancelled() => Err(Interrupt::Canceled),
            _ = tokio::time::sleep_until(deadline) => Err(Interrupt::TimedOut),
            out = fut => Ok(out),
        }
    }

    /// GitLab Runner's executor name, for the `Preparing the "…" executor` header.
    pub(super) fn executor_name(&self) -> &'static str {
        if self.run.labels.vm.is_empty() {
            "docker"
        } else {
            "docker+machine"
        }
    }

    /// `CI_PROJECT_DIR`, where the sources go and the scripts run.
    pub(super) fn project_dir(&self) -> String {
        self.run
            .variables
            .expanded("CI_PROJECT_DIR")
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| format!("{BUILDS_DIR}/project-{}", self.run.job.job_info.project_id))
    }

    /// `RUNNER_TEMP_PROJECT_DIR`, where `file: true` variables are written.
    pub(super) fn tmp_dir(&self) -> String {
        self.run
            .variables
            .expanded("RUNNER_TEMP_PROJECT_DIR")
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| format!("{}.tmp", self.project_dir()))
    }
}

/// How the stages up to `after_script` ended, short of success.
pub(super) enum Ended {
    /// A stage exited non-zero (the job fails as a script failure with this code).
    Failed(i32),
    /// The job timed out or was canceled.
    Interrupted(Interrupt),
    /// The executor could not run a stage.
    Error(ExecError),
}
