//! `PATCH /api/v4/jobs/:id/trace`: one incremental trace upload (GitLab Runner's
//! `PatchTrace` and `patch_response.go`). Owns the request shape (`Content-Range` without a
//! `bytes ` prefix, `text/plain`, `debug_trace`) and the classification of answers; the loop
//! that paces uploads is `trace_upload.rs`.

use bytes::Bytes;
use reqwest::header::{CONTENT_RANGE, CONTENT_TYPE};
use reqwest::Method;

use super::client::{Call, Coordinator, JobTarget};
use super::error::CoordinatorError;
use super::metrics::Endpoint;
use super::remote::RemoteState;

/// Largest slice sent in one PATCH (`common.DefaultTracePatchLimit`).
pub const TRACE_PATCH_LIMIT: usize = 1024 * 1024;

/// How a PATCH was answered.
#[derive(Debug)]
pub(crate) enum PatchResult {
    /// 202: everything up to `sent` is stored.
    Succeeded { sent: u64 },
    /// 416: the coordinator holds `offset` bytes; resend from there.
    RangeMismatch { offset: u64 },
    /// 404: stop sending trace.
    NotFound,
    /// 403, another client error, or `Job-Status: canceled|failed`: kill the job.
    Abort,
    /// A server error after retries, or a transport error.
    Failed(CoordinatorError),
}

/// A PATCH's result with what its headers said.
#[derive(Debug)]
pub(crate) struct PatchResponse {
    pub(crate) result: PatchResult,
    pub(crate) remote: RemoteState,
}

/// The result of a PATCH of `len` bytes from `start` answered with `status`.
pub(crate) fn classify_patch(
    status: u16,
    remote: &RemoteState,
    range: Option<&str>,
    start: u64,
    len: u64,
) -> Option<PatchResult> {
    Some(match status {
        _ if remote.abort => PatchResult::Abort,
        202 => PatchResult::Succeeded { sent: start + len },
        404 => PatchResult::NotFound,
        416 => PatchResult::RangeMismatch {
            offset: range.map(range_end).unwrap_or(0),
        },
        400..=499 => PatchResult::Abort,
        _ => return None,
    })
}

/// The second number of a `Range: 0-<N>` header (what the coordinator holds); 0 if unparsable.
pub fn range_end(value: &str) -> u64 {
    let mut parts = value.trim().split('-');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(end), None) => end.trim().parse().unwrap_or(0),
        _ => 0,
    }
}

impl Coordinator {
    /// Sends `chunk`, which starts at byte `start` of the job's trace. `chunk` must not be empty.
    pub(crate) async fn patch_trace(
        &self,
        target: &JobTarget,
        chunk: Bytes,
        start: u64,
        debug_trace: bool,
    ) -> PatchResponse {
        let len = chunk.len() as u64;
        let failed = |e| PatchResponse {
            result: PatchResult::Failed(e),
            remote: RemoteState::default(),
        };
        let mut url = match target.job_url("/trace") {
            Ok(url) => url,
            Err(e) => return failed(e),
        };
        url.query_pairs_mut()
            .append_pair("debug_trace", if debug_trace { "true" } else { "false" });
        let content_range = format!("{start}-{}", start + len.saturating_sub(1));
        let call = Call {
            endpoint: Endpoint::PatchTrace,
            method: Method::PATCH,
            url: &url,
            labels: &target.labels,
            tls: &target.tls,
        };
        let sent = self
            .send(&call, |req| {
                req.header("JOB-TOKEN", target.job.token.as_str())
                    .header(CONTENT_TYPE, "text/plain")
                    .header(CONTENT_RANGE, content_range.as_str())
                    .body(chunk.clone())
            })
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) => {
                tracing::warn!(job_id = target.job.id, url = %crate::redact::url(&url), range = %content_range, error = %e, "trace upload failed");
                return failed(e);
            }
        };
        let status = response.status().as_u16();
        let remote = RemoteState::from_response(status, response.headers());
        let range = response
            .headers()
            .get("Range")
            .and_then(|v| v.to_str().ok());
        tracing::debug!(job_id = target.job.id, url = %crate::redact::url(&url), range = %content_range, status, "trace patched");
        let result = classify_patch(status, &remote, range, start, len).unwrap_or_else(|| {
            PatchResult::Failed(CoordinatorError::Status {
                method: "PATCH",
                url: crate::redact::url(&url).into_owned(),
                status,
            })
        });
        if matches!(result, PatchResult::Succeeded { .. }) {
            self.inner.metrics.trace_bytes_sent(&target.labels, len);
        }
        PatchResponse { result, remote }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_end_is_the_second_number() {
        assert_eq!(range_end("0-42"), 42);
        assert_eq!(range_end(" 0-7 "), 7);
        assert_eq!(range_end("bytes"), 0);
        assert_eq!(range_end("0-x"), 0);
        assert_eq!(range_end("0-1-2"), 0);
    }

    #[test]
    fn patch_results_follow_gitlab_runner() {
        let ok = RemoteState::default();
        let abort = RemoteState {
            abort: true,
            ..Default::default()
        };
        let show = |r: Option<PatchResult>| format!("{r:?}");
        assert_eq!(
            show(classify_patch(202, &ok, None, 10, 5)),
            "Some(Succeeded { sent: 15 })"
        );
        assert_eq!(
            show(classify_patch(416, &ok, Some("0-12"), 10, 5)),
            "Some(RangeMismatch { offset: 12 })"
        );
        assert_eq!(
            show(classify_patch(416, &ok, None, 10, 5)),
            "Some(RangeMismatch { offset: 0 })"
        );
        assert_eq!(show(classify_patch(404, &ok, None, 0, 1)), "Some(NotFound)");
        assert_eq!(show(classify_patch(403, &ok, None, 0, 1)), "Some(Abort)");
        assert_eq!(show(classify_patch(400, &ok, None, 0, 1)), "Some(Abort)");
        assert_eq!(show(classify_patch(202, &abort, None, 0, 1)), "Some(Abort)");
        assert_eq!(show(classify_patch(500, &ok, None, 0, 1)), "None");
    }
}
