//! What a job endpoint's response headers say about the job on the coordinator's side
//! (GitLab Runner's `network/remote_job_state_response.go`): `Job-Status` and
//! `X-GitLab-Trace-Update-Interval`. Pure functions over headers.

use std::time::Duration;

use reqwest::header::HeaderMap;

/// Longest update interval the coordinator may set.
const MAX_INTERVAL: Duration = Duration::from_secs(15 * 60);

/// The coordinator's view of a job, from one response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RemoteState {
    /// `Job-Status: canceled|failed`, or HTTP 403: stop the job now.
    pub(crate) abort: bool,
    /// `Job-Status: canceling`: cancel the script gracefully.
    pub(crate) cancel_requested: bool,
    /// A new trace update interval (positive, capped at 15 minutes).
    pub(crate) interval: Option<Duration>,
}

impl RemoteState {
    /// Reads the headers of a response with `status`.
    pub(crate) fn from_response(status: u16, headers: &HeaderMap) -> RemoteState {
        let job_status = headers
            .get("Job-Status")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .unwrap_or("");
        RemoteState {
            abort: status == 403 || matches!(job_status, "canceled" | "failed"),
            cancel_requested: job_status == "canceling",
            interval: headers
                .get("X-GitLab-Trace-Update-Interval")
                .and_then(|v| v.to_str().ok())
                .and_then(parse_interval),
        }
    }
}

/// An interval header value in integer seconds; ≤ 0 or unparsable is ignored.
fn parse_interval(value: &str) -> Option<Duration> {
    let seconds: i64 = value.trim().parse().ok()?;
    let seconds = u64::try_from(seconds).ok().filter(|s| *s > 0)?;
    Some(Duration::from_secs(seconds).min(MAX_INTERVAL))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn job_status_and_interval() {
        type Case = (u16, &'static [(&'static str, &'static str)], RemoteState);
        let cases: &[Case] = &[
            (200, &[], RemoteState::default()),
            (
                403,
                &[],
                RemoteState {
                    abort: true,
                    ..Default::default()
                },
            ),
            (
                200,
                &[("Job-Status", "canceled")],
                RemoteState {
                    abort: true,
                    ..Default::default()
                },
            ),
            (
                202,
                &[("Job-Status", "failed")],
                RemoteState {
                    abort: true,
                    ..Default::default()
                },
            ),
            (
                202,
                &[
                    ("Job-Status", "canceling"),
                    ("X-GitLab-Trace-Update-Interval", "30"),
                ],
                RemoteState {
                    cancel_requested: true,
                    interval: Some(Duration::from_secs(30)),
                    ..Default::default()
                },
            ),
            (
                200,
                &[
                    ("Job-Status", "running"),
                    ("X-GitLab-Trace-Update-Interval", "0"),
                ],
                RemoteState::default(),
            ),
            (
                200,
                &[("X-GitLab-Trace-Update-Interval", "-5")],
                RemoteState::default(),
            ),
            (
                200,
                &[("X-GitLab-Trace-Update-Interval", "soon")],
                RemoteState::default(),
            ),
            (
                200,
                &[("X-GitLab-Trace-Update-Interval", "86400")],
                RemoteState {
                    interval: Some(MAX_INTERVAL),
                    ..Default::default()
                },
            ),
        ];
        for (status, pairs, want) in cases {
            assert_eq!(
                RemoteState::from_response(*status, &headers(pairs)),
                *want,
                "{status} {pairs:?}"
            );
        }
    }
}
