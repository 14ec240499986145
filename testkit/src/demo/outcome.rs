//! What became of one demo job, read from what flotilla sent the fake GitLab: its final state,
//! the VM and zone it ran on (the trace's `Running on VM <name> in zone <zone>` line) and its
//! wait, from the demo's enqueue to the first line the job script printed (the line timestamps
//! after the `step_script` section start). Pure functions over a [`JobRecord`]: no I/O.

use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use regex::Regex;

use crate::{JobRecord, JobState};

static RUNNING_ON: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"Running on VM (\S+) in zone (\S+)").ok());

/// The VM and zone a job's trace says it ran on.
pub(super) fn vm_and_zone(trace: &str) -> Option<(String, String)> {
    let caps = RUNNING_ON.as_ref()?.captures(trace)?;
    Some((caps[1].to_owned(), caps[2].to_owned()))
}

/// When the job script printed its first line: the timestamp of the first timestamped line
/// after the `step_script` section start (GitLab Runner's FF_TIMESTAMPS format,
/// `2024-05-30T14:30:00.123456Z 01O …`).
pub(super) fn first_script_output(trace: &str) -> Option<SystemTime> {
    let mut lines = trace.split('\n');
    lines.find(|l| l.contains("section_start:") && l.contains(":step_script"))?;
    lines.find_map(line_time)
}

fn line_time(line: &str) -> Option<SystemTime> {
    let stamp = line.get(..27)?;
    let t = chrono::DateTime::parse_from_rfc3339(stamp).ok()?;
    let micros = u64::try_from(t.timestamp_micros()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_micros(micros))
}

/// One job of the demo as it ended.
#[derive(Debug, Clone)]
pub(super) struct Outcome {
    /// GitLab's job id.
    pub id: i64,
    /// The job's name.
    pub name: String,
    /// The state it was meant to end in.
    pub expect: JobState,
    /// The state it ended in.
    pub state: JobState,
    /// `failure_reason` of a failed job.
    pub failure_reason: Option<String>,
    /// The script's exit code, when flotilla reported one.
    pub exit_code: Option<i64>,
    /// VM and zone, from the trace.
    pub vm: Option<(String, String)>,
    /// Enqueue → first script output.
    pub wait: Option<Duration>,
    /// The whole trace, as GitLab stores it.
    pub trace: String,
}

impl Outcome {
    /// Reads a finished job's record; `enqueued` is when the demo enqueued it.
    pub(super) fn read(
        record: &JobRecord,
        name: &str,
        expect: JobState,
        enqueued: SystemTime,
    ) -> Self {
        let trace = record.trace_text();
        let wait = first_script_output(&trace).and_then(|t| t.duration_since(enqueued).ok());
        Outcome {
            id: record.id,
            name: name.to_owned(),
            expect,
            state: record.state,
            failure_reason: record.failure_reason.clone(),
            exit_code: record.exit_code,
            vm: vm_and_zone(&trace),
            wait,
            trace,
        }
    }

    /// Whether the job ended as meant to.
    pub(super) fn as_expected(&self) -> bool {
        self.state == self.expect
    }

    /// One line: id, name, final state (reason, exit code), VM and zone, wait, verdict.
    pub(super) fn line(&self) -> String {
        let mut state = self.state.gitlab_status().to_owned();
        if let Some(r) = &self.failure_reason {
            state.push_str(&format!(" ({r}"));
            if let Some(c) = self.exit_code {
                state.push_str(&format!(", exit {c}"));
            }
            state.push(')');
        }
        let place = match &self.vm {
            Some((vm, zone)) => format!("{vm} in {zone}"),
            None => "no VM".to_owned(),
        };
        let wait = self
            .wait
            .map_or_else(|| "-".to_owned(), |w| format!("{:.1} s", w.as_secs_f64()));
        let verdict = if self.as_expected() {
            "ok".to_owned()
        } else {
            format!("UNEXPECTED (meant to be {})", self.expect.gitlab_status())
        };
        format!(
            "job {:>3} {:<8} {:<32} on {:<44} wait {:>6}  {verdict}",
            self.id, self.name, state, place, wait
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "2026-01-02T03:04:05.000000Z 00O Running on VM runner-abc-demo-1-2 in zone us-central1-b (docker+machine)\n\
        2026-01-02T03:04:06.000000Z 00O section_start:1767323046:step_script\r\x1b[0KExecuting\n\
        2026-01-02T03:04:07.250000Z 01O $ echo hi\n\
        2026-01-02T03:04:08.000000Z 01O hi\n";

    #[test]
    fn finds_the_vm_and_zone() {
        assert_eq!(
            vm_and_zone(TRACE),
            Some(("runner-abc-demo-1-2".to_owned(), "us-central1-b".to_owned()))
        );
        assert_eq!(vm_and_zone("Running on local docker\n"), None);
    }

    #[test]
    fn first_script_output_is_the_line_after_step_script_starts() {
        let t = first_script_output(TRACE).expect("a time");
        let secs = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after the epoch")
            .as_secs_f64();
        assert!((secs - 1_767_323_047.25).abs() < 1e-6, "{secs}");
        assert_eq!(first_script_output("no script here\n"), None);
    }
}
