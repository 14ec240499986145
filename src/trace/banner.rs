//! The lines the runner itself writes into a job's trace, in GitLab Runner's words and colours:
//! the `Running with …` header, error lines, and the last line (`Job succeeded` / `ERROR: Job
//! failed: …`). Callers say what happened; the wording lives here.

use super::JobTrace;
use crate::job::{FailureReason, FinalState, JobState};

/// Who runs the job, for the trace's header.
#[derive(Debug, Clone, Copy)]
pub struct RunnerBanner<'a> {
    /// The runner's `name`.
    pub name: &'a str,
    /// The runner's short token (never the token itself).
    pub short_token: &'a str,
    /// The manager's system id.
    pub system_id: &'a str,
}

impl JobTrace {
    /// `Running with flotilla <version> (<revision>)` and `on <runner> <short token>, system ID: …`.
    pub fn header(&self, runner: RunnerBanner<'_>, version: &str, revision: &str) {
        self.runner_line(&format!(
            "\x1b[0KRunning with flotilla {version} ({revision})\x1b[0;m"
        ));
        self.runner_line(&format!(
            "\x1b[0K  on {} {}, system ID: {}\x1b[0;m",
            runner.name, runner.short_token, runner.system_id
        ));
    }

    /// `ERROR: Job failed (system failure): <message>`, in red.
    pub fn system_failure(&self, message: &str) {
        self.runner_line(&format!(
            "\x1b[31;1mERROR: Job failed (system failure): {message}\x1b[0;m"
        ));
    }

    /// `ERROR: <message>`, in red.
    pub fn error(&self, message: &str) {
        self.runner_line(&format!("\x1b[31;1mERROR: {message}\x1b[0;m"));
    }

    /// The last line GitLab Runner writes for `state`.
    pub fn final_line(&self, state: &FinalState) {
        self.runner_line(&final_line(state));
    }
}

/// The last line GitLab Runner writes for `state`.
fn final_line(state: &FinalState) -> String {
    match (&state.state, state.failure_reason, state.exit_code) {
        (JobState::Success, _, _) => "\x1b[32;1mJob succeeded\x1b[0;m".to_string(),
        (_, Some(FailureReason::ScriptFailure), Some(code)) => {
            format!("\x1b[31;1mERROR: Job failed: exit code {code}\x1b[0;m")
        }
        (_, Some(reason), _) => format!("\x1b[31;1mERROR: Job failed: {reason}\x1b[0;m"),
        _ => "\x1b[31;1mERROR: Job failed\x1b[0;m".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_lines_read_as_gitlab_runner() {
        let table = [
            (FinalState::success(), "\x1b[32;1mJob succeeded\x1b[0;m"),
            (
                FinalState::failed(FailureReason::ScriptFailure, Some(2)),
                "\x1b[31;1mERROR: Job failed: exit code 2\x1b[0;m",
            ),
            (
                FinalState::failed(FailureReason::JobExecutionTimeout, None),
                "\x1b[31;1mERROR: Job failed: job_execution_timeout\x1b[0;m",
            ),
        ];
        for (state, line) in table {
            assert_eq!(final_line(&state), line);
        }
    }
}
