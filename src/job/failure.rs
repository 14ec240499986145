//! Failure reasons as GitLab names them, and the mapping onto what a job accepts.

/// Why a job failed, in GitLab's vocabulary (`common/network.go`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// The user's script exited non-zero.
    ScriptFailure,
    /// Something in the runner or its hosts failed.
    RunnerSystemFailure,
    /// The job ran past its timeout.
    JobExecutionTimeout,
    /// The job's image could not be had.
    ImagePullFailure,
    /// Nothing better is known.
    UnknownFailure,
    /// The runner's configuration cannot run this job.
    RunnerConfigurationError,
    /// A dependency outside the runner failed.
    RunnerExternalDependencyFailure,
    /// The runner was stopped, or the job's machine went away, while the job ran.
    RunnerInterrupted,
    /// The job was canceled.
    JobCanceled,
}

impl FailureReason {
    /// Every reason, for metrics that create their series up front.
    pub const ALL: [FailureReason; 9] = [
        FailureReason::ScriptFailure,
        FailureReason::RunnerSystemFailure,
        FailureReason::JobExecutionTimeout,
        FailureReason::ImagePullFailure,
        FailureReason::UnknownFailure,
        FailureReason::RunnerConfigurationError,
        FailureReason::RunnerExternalDependencyFailure,
        FailureReason::RunnerInterrupted,
        FailureReason::JobCanceled,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::ScriptFailure => "script_failure",
            FailureReason::RunnerSystemFailure => "runner_system_failure",
            FailureReason::JobExecutionTimeout => "job_execution_timeout",
            FailureReason::ImagePullFailure => "image_pull_failure",
            FailureReason::UnknownFailure => "unknown_failure",
            FailureReason::RunnerConfigurationError => "runner_configuration_error",
            FailureReason::RunnerExternalDependencyFailure => "runner_external_dependency_failure",
            FailureReason::RunnerInterrupted => "runner_interrupted",
            FailureReason::JobCanceled => "job_canceled",
        }
    }

    /// The reason to send for a job that lists `supported` in `features.failure_reasons`
    /// (GitLab Runner's `failure_reason_mapper.go`, with Flotilla's deliberate difference: an
    /// interruption the job does not list becomes `runner_system_failure`, which every GitLab
    /// accepts, so retry rules fire).
    pub fn for_job(self, supported: &[String]) -> FailureReason {
        let always = matches!(
            self,
            FailureReason::ScriptFailure
                | FailureReason::RunnerSystemFailure
                | FailureReason::JobExecutionTimeout
        );
        if always || supported.iter().any(|s| s == self.as_str()) {
            return self;
        }
        match self {
            FailureReason::ImagePullFailure
            | FailureReason::RunnerExternalDependencyFailure
            | FailureReason::RunnerInterrupted => FailureReason::RunnerSystemFailure,
            FailureReason::RunnerConfigurationError => FailureReason::ScriptFailure,
            _ => FailureReason::UnknownFailure,
        }
    }
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::FailureReason::*;

    #[test]
    fn always_supported_reasons_pass_through() {
        assert_eq!(ScriptFailure.for_job(&[]), ScriptFailure);
        assert_eq!(JobExecutionTimeout.for_job(&[]), JobExecutionTimeout);
    }

    #[test]
    fn unlisted_reasons_use_the_compatibility_map() {
        assert_eq!(ImagePullFailure.for_job(&[]), RunnerSystemFailure);
        assert_eq!(RunnerInterrupted.for_job(&[]), RunnerSystemFailure);
        assert_eq!(RunnerConfigurationError.for_job(&[]), ScriptFailure);
        assert_eq!(JobCanceled.for_job(&[]), UnknownFailure);
        let listed = vec![
            "runner_interrupted".to_string(),
            "image_pull_failure".into(),
        ];
        assert_eq!(RunnerInterrupted.for_job(&listed), RunnerInterrupted);
        assert_eq!(ImagePullFailure.for_job(&listed), ImagePullFailure);
    }
}
