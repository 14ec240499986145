//! Injectable faults of the fake GitLab: the public [`Fault`] enum (also accepted as JSON by the
//! admin API) and the internal [`Faults`] book that the handlers consume them from. Each fault is
//! one-shot or counted; a fault whose count reaches zero is removed. This module only keeps the
//! book: what a fault does to a response is decided by the handlers in `api.rs`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A fault to inject with [`FakeGitlab::inject`](super::FakeGitlab::inject) or `POST /admin/faults`.
///
/// JSON form: `{"kind": "request_status", "status": 502, "times": 2}`; durations are in
/// milliseconds (`{"kind": "slow_request", "delay_ms": 1500, "times": 1}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// `POST jobs/request` answers `status` (JSON `{"message": …}`) this many times, before any
    /// parsing or authentication, as a proxy or an overloaded Rails would.
    RequestStatus { status: u16, times: u32 },
    /// `PATCH jobs/:id/trace` answers `status` this many times; the trace is not stored.
    TraceStatus { status: u16, times: u32 },
    /// `PUT jobs/:id` answers `status` this many times; the update is not applied.
    UpdateStatus { status: u16, times: u32 },
    /// `POST jobs/request` is delayed by `delay` (then handled normally) this many times.
    SlowRequest {
        #[serde(rename = "delay_ms", with = "duration_ms")]
        delay: Duration,
        times: u32,
    },
    /// The next trace `PATCH` of `job` whose range starts beyond `offset` gets 416 with
    /// `Range: 0-<offset>`, and the stored trace is truncated to `offset` (lost chunks).
    TraceRangeMismatchAt { job: i64, offset: u64 },
    /// The final `PUT` (`success`/`failed`) of `job` answers 412 this many times (not applied).
    FinalUpdate412 { job: i64, times: u32 },
    /// The final `PUT` of `job` answers 202 (accepted, not completed) this many times.
    FinalUpdate202 { job: i64, times: u32 },
    /// A coordinator outage as final updates see it: every final `PUT` (`success`/`failed`) of
    /// any job answers `status` (not applied) until `duration` has passed since the first one
    /// it refused, on the fake's clock; then the fault is gone.
    FinalUpdateOutage {
        status: u16,
        #[serde(rename = "duration_ms", with = "duration_ms")]
        duration: Duration,
    },
    /// Cancel `job` (as [`FakeGitlab::cancel`](super::FakeGitlab::cancel)) once its stored
    /// trace reaches `offset` bytes.
    CancelAtByte { job: i64, offset: u64 },
    /// The next `POST jobs/request` that hands out a job answers this raw body and status
    /// (with `Content-Type: application/json`); the job stays assigned server-side, as GitLab's
    /// does when the runner cannot decode the 201.
    MalformedNext { body: String, status: u16 },
    /// `POST jobs/:id/artifacts` answers `status` this many times (nothing stored).
    UploadArtifactsStatus { status: u16, times: u32 },
    /// `POST jobs/:id/artifacts` answers `307 Temporary Redirect` to the same URL this many
    /// times, as a GitLab that moved would (the runner re-sends the whole body there).
    UploadArtifactsRedirect { times: u32 },
    /// `GET jobs/:id/artifacts` answers `status` this many times.
    DownloadArtifactsStatus { status: u16, times: u32 },
}

/// What an injected artifacts-upload fault answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UploadFault {
    Status(u16),
    Redirect,
}

/// Serde of a [`Duration`] as whole milliseconds.
mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// What an injected final-update fault answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FinalUpdateFault {
    PreconditionFailed,
    Accepted,
    Status(u16),
}

/// The pending faults, in injection order. Owned by the fake's state mutex.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    list: Vec<Fault>,
    /// When the pending `FinalUpdateOutage` (if any) refused its first update.
    outage_since: Option<std::time::Instant>,
}

/// Decrements a counted fault; returns the value and whether the fault is now exhausted.
fn count_down<T>(times: &mut u32, value: T) -> Option<(T, bool)> {
    if *times == 0 {
        return None;
    }
    *times -= 1;
    Some((value, *times == 0))
}

impl Faults {
    /// Adds a fault; counted faults with `times == 0` are ignored.
    pub(crate) fn inject(&mut self, fault: Fault) {
        let empty = matches!(
            fault,
            Fault::RequestStatus { times: 0, .. }
                | Fault::TraceStatus { times: 0, .. }
                | Fault::UpdateStatus { times: 0, .. }
                | Fault::SlowRequest { times: 0, .. }
                | Fault::FinalUpdate412 { times: 0, .. }
                | Fault::FinalUpdate202 { times: 0, .. }
                | Fault::UploadArtifactsStatus { times: 0, .. }
                | Fault::UploadArtifactsRedirect { times: 0 }
                | Fault::DownloadArtifactsStatus { times: 0, .. }
        );
        if !empty {
            self.list.push(fault);
        }
    }

    /// Consumes the first fault `pick` accepts; `pick` returns the value and "exhausted".
    fn take<T>(&mut self, mut pick: impl FnMut(&mut Fault) -> Option<(T, bool)>) -> Option<T> {
        let index_and_value = self
            .list
            .iter_mut()
            .enumerate()
            .find_map(|(i, f)| pick(f).map(|v| (i, v)))?;
        let (i, (value, exhausted)) = index_and_value;
        if exhausted {
            self.list.remove(i);
        }
        Some(value)
    }

    pub(crate) fn request_status(&mut self) -> Option<u16> {
        self.take(|f| match f {
            Fault::RequestStatus { status, times } => count_down(times, *status),
            _ => None,
        })
    }

    pub(crate) fn slow_request(&mut self) -> Option<Duration> {
        self.take(|f| match f {
            Fault::SlowRequest { delay, times } => count_down(times, *delay),
            _ => None,
        })
    }

    pub(crate) fn trace_status(&mut self) -> Option<u16> {
        self.take(|f| match f {
            Fault::TraceStatus { status, times } => count_down(times, *status),
            _ => None,
        })
    }

    pub(crate) fn update_status(&mut self) -> Option<u16> {
        self.take(|f| match f {
            Fault::UpdateStatus { status, times } => count_down(times, *status),
            _ => None,
        })
    }

    pub(crate) fn upload_artifacts(&mut self) -> Option<UploadFault> {
        self.take(|f| match f {
            Fault::UploadArtifactsStatus { status, times } => {
                count_down(times, UploadFault::Status(*status))
            }
            Fault::UploadArtifactsRedirect { times } => count_down(times, UploadFault::Redirect),
            _ => None,
        })
    }

    pub(crate) fn download_artifacts(&mut self) -> Option<u16> {
        self.take(|f| match f {
            Fault::DownloadArtifactsStatus { status, times } => count_down(times, *status),
            _ => None,
        })
    }

    /// Whether a `MalformedNext` is pending (checked before a job is handed out).
    pub(crate) fn malformed_next(&mut self) -> Option<(String, u16)> {
        self.take(|f| match f {
            Fault::MalformedNext { body, status } => Some(((body.clone(), *status), true)),
            _ => None,
        })
    }

    /// The truncation offset if a `TraceRangeMismatchAt` for `job` applies to a PATCH at `start`.
    pub(crate) fn range_mismatch(&mut self, job: i64, start: u64) -> Option<u64> {
        self.take(|f| match f {
            Fault::TraceRangeMismatchAt { job: j, offset } if *j == job && start > *offset => {
                Some((*offset, true))
            }
            _ => None,
        })
    }

    /// Removes every pending fault.
    pub(crate) fn clear(&mut self) {
        self.list.clear();
        self.outage_since = None;
    }

    /// A pending `FinalUpdateOutage`'s status while it lasts (the first call starts its clock).
    fn outage(&mut self) -> Option<u16> {
        let index = self
            .list
            .iter()
            .position(|f| matches!(f, Fault::FinalUpdateOutage { .. }))?;
        let Fault::FinalUpdateOutage { status, duration } = self.list[index] else {
            return None;
        };
        let since = *self
            .outage_since
            .get_or_insert_with(std::time::Instant::now);
        if since.elapsed() < duration {
            return Some(status);
        }
        self.list.remove(index);
        self.outage_since = None;
        None
    }

    pub(crate) fn final_update(&mut self, job: i64) -> Option<FinalUpdateFault> {
        if let Some(status) = self.outage() {
            return Some(FinalUpdateFault::Status(status));
        }
        self.take(|f| match f {
            Fault::FinalUpdate412 { job: j, times } if *j == job => {
                count_down(times, FinalUpdateFault::PreconditionFailed)
            }
            Fault::FinalUpdate202 { job: j, times } if *j == job => {
                count_down(times, FinalUpdateFault::Accepted)
            }
            _ => None,
        })
    }

    /// Whether a `CancelAtByte` for `job` fires now that its trace holds `len` bytes.
    pub(crate) fn cancel_at(&mut self, job: i64, len: u64) -> bool {
        self.take(|f| match f {
            Fault::CancelAtByte { job: j, offset } if *j == job && len >= *offset => {
                Some(((), true))
            }
            _ => None,
        })
        .is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_faults_run_out_and_json_round_trips() {
        let mut faults = Faults::default();
        faults.inject(Fault::RequestStatus {
            status: 502,
            times: 2,
        });
        faults.inject(Fault::RequestStatus {
            status: 500,
            times: 0,
        });
        assert_eq!(faults.request_status(), Some(502));
        assert_eq!(faults.request_status(), Some(502));
        assert_eq!(faults.request_status(), None);

        let json = r#"{"kind":"slow_request","delay_ms":1500,"times":1}"#;
        let fault: Fault = serde_json::from_str(json).unwrap();
        assert_eq!(
            fault,
            Fault::SlowRequest {
                delay: Duration::from_millis(1500),
                times: 1
            }
        );
        assert_eq!(serde_json::to_string(&fault).unwrap(), json);
    }

    #[test]
    fn job_scoped_faults_match_their_job_only() {
        let mut faults = Faults::default();
        faults.inject(Fault::TraceRangeMismatchAt { job: 7, offset: 10 });
        faults.inject(Fault::CancelAtByte {
            job: 7,
            offset: 100,
        });
        assert_eq!(faults.range_mismatch(8, 50), None);
        assert_eq!(
            faults.range_mismatch(7, 10),
            None,
            "must start beyond the offset"
        );
        assert_eq!(faults.range_mismatch(7, 11), Some(10));
        assert_eq!(faults.range_mismatch(7, 11), None, "one-shot");
        assert!(!faults.cancel_at(7, 99));
        assert!(faults.cancel_at(7, 100));
        assert!(!faults.cancel_at(7, 200));
    }
}
