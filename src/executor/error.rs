//! How a stage can fail short of the script's own exit code, and how each failure ends the job.

use super::JobOutcome;
use crate::job::FailureReason;

/// A failure inside the executor (not the user's script exiting non-zero).
#[derive(Debug, thiserror::Error)]
pub(super) enum ExecError {
    /// The job or the runner's configuration cannot be run as given.
    #[error("{0}")]
    Configuration(String),
    /// The job's image could not be had.
    #[error("{0}")]
    ImagePull(String),
    /// The job's own settings cannot be followed (a bad `GIT_SUBMODULE_STRATEGY`, a
    /// `GIT_CLONE_PATH` outside the builds directory): a script failure, as in GitLab Runner.
    #[error("{0}")]
    Job(String),
    /// The engine answered a request with an error.
    #[error("{what}: {source}")]
    Docker {
        /// What was being done ("creating the build container").
        what: String,
        /// The engine's answer.
        #[source]
        source: bollard::errors::Error,
    },
    /// The engine could not be reached, or a container went away under the job.
    #[error("{0}")]
    HostLost(String),
}

/// Where in the job a failure happened: Docker's own errors while preparing are the runner's
/// failure; once the script runs, losing the engine or the container means the host is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Image, volume, network and container setup.
    Prepare,
    /// Stages running in containers.
    Run,
}

impl ExecError {
    /// Wraps a bollard error from `what`; errors that never reached the engine (connection
    /// refused or reset, timeouts, a missing socket) mean the host is lost.
    pub(super) fn docker(what: impl Into<String>, source: bollard::errors::Error) -> Self {
        let what = what.into();
        if is_transport(&source) {
            ExecError::HostLost(format!("{what}: {source}"))
        } else {
            ExecError::Docker { what, source }
        }
    }

    /// The job's outcome for this failure in `phase`.
    pub(super) fn outcome(self, phase: Phase) -> JobOutcome {
        let system = |reason, message| JobOutcome::SystemFailure { reason, message };
        match self {
            ExecError::Configuration(m) => system(FailureReason::RunnerConfigurationError, m),
            ExecError::ImagePull(m) => system(FailureReason::ImagePullFailure, m),
            ExecError::Job(m) => system(FailureReason::ScriptFailure, m),
            e @ ExecError::Docker { .. } if phase == Phase::Prepare => {
                system(FailureReason::RunnerSystemFailure, e.to_string())
            }
            e @ ExecError::Docker { .. } => JobOutcome::HostLost(e.to_string()),
            ExecError::HostLost(m) => JobOutcome::HostLost(m),
        }
    }
}

/// Whether a bollard error happened on the way to the engine rather than in its answer.
fn is_transport(e: &bollard::errors::Error) -> bool {
    use bollard::errors::Error as E;
    !matches!(
        e,
        E::DockerResponseServerError { .. }
            | E::DockerContainerWaitError { .. }
            | E::JsonDataError { .. }
            | E::JsonSerdeError { .. }
            | E::APIVersionParseError {}
            | E::DockerStreamError { .. }
    )
}

/// Whether the engine answered 404 (no such container, volume, network or image).
pub(super) fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(status_code: u16) -> bollard::errors::Error {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message: "boom".into(),
        }
    }

    #[test]
    fn engine_answers_fail_prepare_as_system_failures_and_runs_as_host_lost() {
        let e = ExecError::docker("creating the volume", server(500));
        assert!(matches!(
            e.outcome(Phase::Prepare),
            JobOutcome::SystemFailure { reason: FailureReason::RunnerSystemFailure, ref message }
                if message.contains("creating the volume") && message.contains("boom")
        ));
        let e = ExecError::docker("starting", server(500));
        assert!(matches!(e.outcome(Phase::Run), JobOutcome::HostLost(_)));
    }

    #[test]
    fn transport_errors_are_host_lost_in_any_phase() {
        let e = ExecError::docker("pinging", bollard::errors::Error::RequestTimeoutError);
        assert!(matches!(e.outcome(Phase::Prepare), JobOutcome::HostLost(_)));
    }

    #[test]
    fn pull_and_configuration_failures_keep_their_reason() {
        assert!(matches!(
            ExecError::ImagePull("x".into()).outcome(Phase::Prepare),
            JobOutcome::SystemFailure {
                reason: FailureReason::ImagePullFailure,
                ..
            }
        ));
        assert!(matches!(
            ExecError::Configuration("x".into()).outcome(Phase::Prepare),
            JobOutcome::SystemFailure {
                reason: FailureReason::RunnerConfigurationError,
                ..
            }
        ));
        assert!(is_not_found(&server(404)));
        assert!(!is_not_found(&server(409)));
    }
}
