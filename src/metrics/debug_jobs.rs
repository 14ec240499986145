//! `/debug/jobs/list` as GitLab Runner serves it (`commands/builds_helper.go`
//! `ListJobsHandler`, list version 2): one text line per running job,
//! `url=<job page> state=<state> stage=<stage> executor_stage=<stage> duration=<Go duration>`.
//! Owns only the text; the server routes to it.

use super::jobs::RunningJobView;
use std::fmt::Write;
use std::time::Duration;

/// The `X-List-Version` header GitLab Runner sends with the list.
pub const LIST_VERSION: &str = "2";

/// The list's body: one line per job, oldest first.
pub fn render(jobs: &[RunningJobView]) -> String {
    let mut out = String::new();
    for job in jobs {
        let _ = writeln!(
            out,
            "url={} state=running stage={} executor_stage={} duration={}",
            job.url,
            job.stage,
            job.executor_stage,
            go_duration(job.duration)
        );
    }
    out
}

/// A duration as Go's `time.Duration.String` writes it (`1h2m3.5s`, `2m0s`, `1.5ms`, `0s`).
pub fn go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000_000_000 {
        let (unit, scale) = if nanos < 1_000 {
            ("ns", 1)
        } else if nanos < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{}{unit}", fraction(nanos, scale));
    }
    let secs = d.as_secs();
    let (h, m) = (secs / 3600, (secs / 60) % 60);
    let s = fraction(
        u128::from(secs % 60) * 1_000_000_000 + u128::from(d.subsec_nanos()),
        1_000_000_000,
    );
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, m) => format!("{m}m{s}s"),
        (h, m) => format!("{h}h{m}m{s}s"),
    }
}

/// `value / scale` with the fraction's trailing zeros cut (`1500, 1000` → `1.5`).
fn fraction(value: u128, scale: u128) -> String {
    let (whole, rest) = (value / scale, value % scale);
    if rest == 0 {
        return whole.to_string();
    }
    let width = scale.to_string().len() - 1;
    let digits = format!("{rest:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::RunnerKey;

    #[test]
    fn durations_read_as_go_writes_them() {
        for (d, text) in [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(1500), "1.5µs"),
            (Duration::from_micros(1500), "1.5ms"),
            (Duration::from_millis(2500), "2.5s"),
            (Duration::from_secs(120), "2m0s"),
            (Duration::from_millis(3_723_500), "1h2m3.5s"),
            (Duration::from_secs(3600), "1h0m0s"),
        ] {
            assert_eq!(go_duration(d), text);
        }
    }

    #[test]
    fn one_line_per_job() {
        let job = RunningJobView {
            id: 7,
            runner: RunnerKey {
                runner: "abcdefghi".into(),
                runner_name: "r".into(),
            },
            duration: Duration::from_millis(61_250),
            url: "https://gitlab.example.com/g/p/-/jobs/7".into(),
            stage: "step_script".into(),
            executor_stage: "docker_run".into(),
        };
        assert_eq!(
            render(&[job]),
            "url=https://gitlab.example.com/g/p/-/jobs/7 state=running stage=step_script executor_stage=docker_run duration=1m1.25s\n"
        );
        assert_eq!(render(&[]), "");
    }
}
