//! Runs one job's stages in containers through the Docker API (bollard) and says how it ended.
//! Knows nothing of clouds or of the coordinator: it is handed a Docker connection, the job, its
//! variables and a trace to write into.
//!
//! PLACEHOLDER API (skeleton): the real implementation keeps these signatures.

use crate::config::DockerConfig;
use crate::job::{FailureReason, JobPayload, Variables};
use crate::trace::JobTrace;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// How a job ended, as far as the executor can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// Every user step exited 0.
    Succeeded,
    /// A user step exited non-zero.
    ScriptFailed(i32),
    /// The job ran past its timeout.
    TimedOut,
    /// The job was canceled (gracefully or aborted).
    Canceled,
    /// The Docker connection failed, or a container died without the script's own exit.
    HostLost(String),
    /// Something else failed; `reason` says how GitLab should see it.
    SystemFailure {
        /// The failure reason to report (before mapping onto what the job supports).
        reason: FailureReason,
        /// What happened, for the trace and the log.
        message: String,
    },
}

/// Labels every container of a job carries (`com.flotilla.*`).
#[derive(Debug, Clone, Default)]
pub struct ContainerLabels {
    /// The job id.
    pub job_id: i64,
    /// The runner's short token.
    pub runner: String,
    /// The VM name, empty on the local docker executor.
    pub vm: String,
}

/// One job handed to the executor.
pub struct JobRun {
    /// The job.
    pub job: Arc<JobPayload>,
    /// Every variable the job sees, in order (runner's and payload's).
    pub variables: Variables,
    /// Where output goes.
    pub trace: JobTrace,
    /// Labels for the job's containers.
    pub labels: ContainerLabels,
    /// Graceful cancel (`Job-Status: canceling`): stop the script, still run `after_script`.
    pub cancel: CancellationToken,
    /// Abort: stop everything at once and clean up.
    pub abort: CancellationToken,
}

/// Runs the job to its end and removes every container it made.
pub async fn run_job(
    _docker: &bollard::Docker,
    _settings: &DockerConfig,
    run: JobRun,
) -> JobOutcome {
    run.trace.runner_line("executor not implemented yet");
    JobOutcome::SystemFailure {
        reason: FailureReason::RunnerSystemFailure,
        message: "not implemented".into(),
    }
}
