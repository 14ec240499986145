//! How a job ended and what GitLab is told: the executor's [`JobOutcome`], the [`FinalState`]
//! sent in the final update, and [`final_state`], the pure mapping from one to the other
//! (GitLab Runner's `common/build.go` failure reasons, narrowed to what the job accepts).
//! Plain data: the executor produces outcomes, the coordinator sends final states, the state
//! directory may keep one pending; none of them is imported here.

use super::failure::FailureReason;
use serde::{Deserialize, Serialize};

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

/// A job's final state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// The job succeeded.
    Success,
    /// The job failed (see [`FinalState::failure_reason`]).
    Failed,
}

/// What the final update reports (`TraceSession::finish` in `coordinator`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalState {
    /// Success or failure.
    pub state: JobState,
    /// Why it failed, already mapped onto what the job accepts ([`FailureReason::for_job`]);
    /// `None` on a failure means `script_failure`, as in GitLab Runner.
    pub failure_reason: Option<FailureReason>,
    /// The script's exit code; 0 and `None` are not sent.
    pub exit_code: Option<i32>,
}

impl FinalState {
    /// A success.
    pub fn success() -> FinalState {
        FinalState {
            state: JobState::Success,
            failure_reason: None,
            exit_code: None,
        }
    }

    /// A failure for `reason` (already mapped onto what the job accepts), with the script's exit
    /// code when there is one.
    pub fn failed(reason: FailureReason, exit_code: Option<i32>) -> FinalState {
        FinalState {
            state: JobState::Failed,
            failure_reason: Some(reason),
            exit_code,
        }
    }
}

/// What besides the outcome decides the final state.
#[derive(Debug, Clone, Copy)]
pub struct EndContext<'a> {
    /// The failure reasons the job accepts (`features.failure_reasons`).
    pub supported: &'a [String],
    /// The runner was stopped (abort) while the job ran.
    pub interrupted: bool,
    /// On [`JobOutcome::HostLost`]: the job's VM is gone, stopped or preempted (not merely
    /// unreachable).
    pub vm_lost: bool,
}

/// The final state GitLab is told for `outcome`: script failures keep their exit code, a
/// cancel during a runner stop and a host lost with its VM are `runner_interrupted`, every
/// reason is narrowed to what the job accepts.
pub fn final_state(outcome: &JobOutcome, ctx: EndContext<'_>) -> FinalState {
    let failed = |reason: FailureReason| FinalState::failed(reason.for_job(ctx.supported), None);
    match outcome {
        JobOutcome::Succeeded => FinalState::success(),
        JobOutcome::ScriptFailed(code) => {
            FinalState::failed(FailureReason::ScriptFailure, Some(*code))
        }
        JobOutcome::TimedOut => FinalState::failed(FailureReason::JobExecutionTimeout, None),
        JobOutcome::Canceled if ctx.interrupted => failed(FailureReason::RunnerInterrupted),
        JobOutcome::Canceled => failed(FailureReason::JobCanceled),
        JobOutcome::HostLost(_) if ctx.interrupted || ctx.vm_lost => {
            failed(FailureReason::RunnerInterrupted)
        }
        JobOutcome::HostLost(_) => failed(FailureReason::RunnerSystemFailure),
        JobOutcome::SystemFailure { reason, .. } => failed(*reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FailureReason as R;

    fn host_lost() -> JobOutcome {
        JobOutcome::HostLost("connection reset".into())
    }

    fn system(reason: FailureReason) -> JobOutcome {
        JobOutcome::SystemFailure {
            reason,
            message: "m".into(),
        }
    }

    #[test]
    fn outcomes_map_onto_final_states() {
        let all: Vec<String> = R::ALL.iter().map(|r| r.as_str().to_string()).collect();
        let none: Vec<String> = Vec::new();
        let ok = FinalState::success;
        let fail = FinalState::failed;
        // (outcome, supported, interrupted, vm_lost) -> final state
        let table: Vec<(JobOutcome, &[String], bool, bool, FinalState)> = vec![
            (JobOutcome::Succeeded, &all, false, false, ok()),
            (JobOutcome::Succeeded, &all, true, false, ok()),
            (
                JobOutcome::ScriptFailed(3),
                &none,
                false,
                false,
                fail(R::ScriptFailure, Some(3)),
            ),
            (
                JobOutcome::TimedOut,
                &none,
                false,
                false,
                fail(R::JobExecutionTimeout, None),
            ),
            (
                JobOutcome::Canceled,
                &all,
                false,
                false,
                fail(R::JobCanceled, None),
            ),
            (
                JobOutcome::Canceled,
                &all,
                true,
                false,
                fail(R::RunnerInterrupted, None),
            ),
            (
                JobOutcome::Canceled,
                &none,
                false,
                false,
                fail(R::UnknownFailure, None),
            ),
            (
                host_lost(),
                &all,
                false,
                false,
                fail(R::RunnerSystemFailure, None),
            ),
            (
                host_lost(),
                &all,
                false,
                true,
                fail(R::RunnerInterrupted, None),
            ),
            (
                host_lost(),
                &all,
                true,
                false,
                fail(R::RunnerInterrupted, None),
            ),
            (
                host_lost(),
                &none,
                false,
                true,
                fail(R::RunnerSystemFailure, None),
            ),
            (
                system(R::ImagePullFailure),
                &all,
                false,
                false,
                fail(R::ImagePullFailure, None),
            ),
            (
                system(R::ImagePullFailure),
                &none,
                false,
                false,
                fail(R::RunnerSystemFailure, None),
            ),
        ];
        for (outcome, supported, interrupted, vm_lost, want) in table {
            let ctx = EndContext {
                supported,
                interrupted,
                vm_lost,
            };
            let got = final_state(&outcome, ctx);
            assert_eq!(
                got, want,
                "{outcome:?} interrupted={interrupted} vm_lost={vm_lost}"
            );
        }
    }

    #[test]
    fn final_state_survives_json() {
        let state = FinalState::failed(R::RunnerSystemFailure, Some(1));
        let json = serde_json::to_string(&state).unwrap();
        assert!(json.contains("\"runner_system_failure\""), "{json}");
        assert_eq!(serde_json::from_str::<FinalState>(&json).unwrap(), state);
    }
}
