//! `POST /api/v4/jobs/request`: asking for a job (long polling). Owns the request body, the
//! `last_update` echo and the mapping of answers onto [`RequestOutcome`]. Never logs a body: a
//! job payload carries secrets.

use reqwest::header::{HeaderMap, ACCEPT, CONTENT_TYPE};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::client::{api_base, endpoint_url, Call, Coordinator, RunnerEndpoint};
use super::info::VersionInfo;
use super::metrics::Endpoint;
use crate::job::JobHandle;

/// The long-poll state of one runner: the last `X-GitLab-Last-Update` seen. Owned by the
/// runner loop, passed to every [`Coordinator::request_job`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollState {
    last_update: Option<String>,
}

impl PollState {
    /// The value echoed as `last_update` in the next request, if any.
    pub fn last_update(&self) -> Option<&str> {
        self.last_update.as_deref()
    }
}

/// What one job request came to.
pub enum RequestOutcome {
    /// A job was assigned. The manager parses `payload` in full (and acknowledges then fails a
    /// job whose full parse fails).
    Job {
        /// Id and token, decoded first.
        handle: JobHandle,
        /// The whole 201 body.
        payload: serde_json::Value,
        /// When the answer arrived.
        time: Instant,
    },
    /// No job this time.
    NoJob {
        /// Request again at once: the 204 ended a held long poll (it came after [`HELD_POLL`]
        /// or more), or a long-polling GitLab (`Gitlab-Ci-Builds-Polling: yes`) said the
        /// runner's queue changed — Workhorse's bare 204 releasing a hold when the queue key
        /// changes, or Rails' 204 with an `X-GitLab-Last-Update` other than the one sent (the
        /// next request, carrying the new value, is held by Workhorse without reaching Rails).
        /// Any other 204 (no long polling, the value sent answered again, a proxy) waits for
        /// `check_interval`, as GitLab Runner does after every 204. The requester bounds the
        /// quick retries in a row (`runner_loop`), so it never becomes a loop of requests.
        retry_now: bool,
    },
    /// The runner looks unhealthy: 403 (token removed or invalid) or a transport error.
    Unhealthy(String),
}

impl std::fmt::Debug for RequestOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestOutcome::Job { handle, .. } => f
                .debug_struct("Job")
                .field("id", &handle.id)
                .finish_non_exhaustive(),
            RequestOutcome::NoJob { retry_now } => f
                .debug_struct("NoJob")
                .field("retry_now", retry_now)
                .finish(),
            RequestOutcome::Unhealthy(why) => f.debug_tuple("Unhealthy").field(why).finish(),
        }
    }
}

/// How long a 204 must have taken to count as the end of a held long poll.
pub const HELD_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// The `jobs/request` body.
#[derive(Serialize)]
struct JobRequestBody<'a> {
    info: &'a VersionInfo,
    token: &'a str,
    system_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_update: Option<&'a str>,
}

impl Coordinator {
    /// Asks `runner`'s coordinator for a job, echoing and updating `poll.last_update`. The HTTP
    /// wait is above the longest long-poll hold; 5xx and 429 are retried as GitLab Runner does.
    pub async fn request_job(
        &self,
        runner: &RunnerEndpoint,
        poll: &mut PollState,
    ) -> RequestOutcome {
        let base = match api_base(&runner.url) {
            Ok(base) => base,
            Err(e) => return RequestOutcome::Unhealthy(e.to_string()),
        };
        let url = match endpoint_url(&base, "jobs/request") {
            Ok(url) => url,
            Err(e) => return RequestOutcome::Unhealthy(e.to_string()),
        };
        let labels = runner.labels();
        let _in_flight = self.inner.metrics.request_started(&labels);
        let call = Call {
            endpoint: Endpoint::RequestJob,
            method: Method::POST,
            url: &url,
            labels: &labels,
            tls: &runner.tls,
        };
        let body = JobRequestBody {
            info: &self.inner.info,
            token: runner.token.expose(),
            system_id: &runner.system_id,
            last_update: poll.last_update(),
        };
        let started = Instant::now();
        let sent = self
            .send(&call, |req| {
                req.header(ACCEPT, "application/json").json(&body)
            })
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) => {
                // The whole cause chain: reqwest's own message is only "error sending request".
                let error = crate::error_chain::chain(&e);
                tracing::warn!(url = %crate::redact::url(&url), runner = %labels.runner, %error, "job request failed");
                return RequestOutcome::Unhealthy(error);
            }
        };
        let status = response.status().as_u16();
        let last_update = header_str(response.headers(), "X-GitLab-Last-Update").map(str::to_owned);
        let queue_changed = long_polling(response.headers())
            && last_update
                .as_deref()
                .is_none_or(|v| poll.last_update() != Some(v));
        if let Some(value) = &last_update {
            poll.last_update = Some(value.clone());
        }
        match status {
            201 => {
                let json = is_json(response.headers());
                let body = response.bytes().await;
                match (json, body) {
                    (true, Ok(bytes)) => match decode_job(&bytes) {
                        Some((handle, payload)) => {
                            tracing::info!(url = %crate::redact::url(&url), runner = %labels.runner, job_id = handle.id, "job received");
                            RequestOutcome::Job {
                                handle,
                                payload,
                                time: Instant::now(),
                            }
                        }
                        None => self.undecodable(&url, &labels, "the body has no job id and token"),
                    },
                    (false, _) => {
                        self.undecodable(&url, &labels, "the response is not application/json")
                    }
                    (true, Err(_)) => self.undecodable(&url, &labels, "the body could not be read"),
                }
            }
            204 => {
                tracing::debug!(url = %crate::redact::url(&url), runner = %labels.runner, "no job");
                RequestOutcome::NoJob {
                    retry_now: queue_changed || started.elapsed() >= HELD_POLL,
                }
            }
            403 => {
                tracing::warn!(url = %crate::redact::url(&url), runner = %labels.runner, status, "job request forbidden (runner token invalid or removed?)");
                RequestOutcome::Unhealthy(format!("POST {url}: 403 forbidden"))
            }
            503 => {
                tracing::warn!(url = %crate::redact::url(&url), runner = %labels.runner, status, "job request: coordinator unavailable");
                RequestOutcome::NoJob { retry_now: false }
            }
            _ => {
                tracing::warn!(url = %crate::redact::url(&url), runner = %labels.runner, status, "job request failed");
                RequestOutcome::NoJob { retry_now: false }
            }
        }
    }

    /// Logs and counts a 201 that is not a job (GitLab Runner treats it as "no job"; the job
    /// stays assigned on the server side until its ack times out).
    fn undecodable(
        &self,
        url: &reqwest::Url,
        labels: &super::metrics::RunnerLabels,
        why: &str,
    ) -> RequestOutcome {
        tracing::warn!(url = %crate::redact::url(&url), runner = %labels.runner, reason = why, "job request answered 201 without a usable job");
        self.inner.metrics.undecodable_job(labels);
        RequestOutcome::NoJob { retry_now: false }
    }
}

/// A header's value as text, if present and non-empty.
fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
}

/// Whether the answer passed through Workhorse with long polling on (it sets
/// `Gitlab-Ci-Builds-Polling: yes` on every `jobs/request` answer then, held or proxied).
fn long_polling(headers: &HeaderMap) -> bool {
    header_str(headers, "Gitlab-Ci-Builds-Polling").is_some_and(|v| v.eq_ignore_ascii_case("yes"))
}

/// Whether the response's media type is exactly `application/json` (parameters allowed).
fn is_json(headers: &HeaderMap) -> bool {
    header_str(headers, CONTENT_TYPE.as_str())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

/// The payload and its id/token, or `None` when the body is not a JSON job.
fn decode_job(bytes: &[u8]) -> Option<(JobHandle, serde_json::Value)> {
    let payload: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    // Read from the tree in place: a clone of the whole payload would cost a job its size again.
    let handle = JobHandle::deserialize(&payload).ok()?;
    Some((handle, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_needs_id_and_token() {
        assert!(decode_job(br#"{"id": 5, "token": "t", "x": 1}"#).is_some());
        assert!(decode_job(br#"{"id": 5}"#).is_none());
        assert!(decode_job(br#"{"token": "t"}"#).is_none());
        assert!(decode_job(b"<html>").is_none());
        assert!(decode_job(br#"{"id": "five", "token": "t"}"#).is_none());
    }

    #[test]
    fn json_media_type() {
        let mut h = HeaderMap::new();
        assert!(!is_json(&h));
        h.insert(
            CONTENT_TYPE,
            "application/json; charset=utf-8".parse().unwrap(),
        );
        assert!(is_json(&h));
        h.insert(CONTENT_TYPE, "text/html".parse().unwrap());
        assert!(!is_json(&h));
    }
}
