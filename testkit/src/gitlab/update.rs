//! Job-token endpoints of the fake GitLab: `PUT jobs/:id` (two-phase ack, keep-alive, final
//! state; `Ci::UpdateBuildStateService`) and `PATCH jobs/:id/trace` (`Ci::AppendBuildTraceService`),
//! with GitLab's authentication order, status codes and `Job-Status`/`Range` headers, plus the
//! injectable faults that concern them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::faults::FinalUpdateFault;
use super::http::{
    forbidden, header_value, injected, job_status, message, parse_params, require_str, Params,
};
use super::state::{JobRecord, JobState, Shared};

/// 403 with `Job-Status`, as `job_forbidden!` answers for a job not processing on a runner.
fn job_forbidden(state: JobState) -> Response {
    let mut resp = message(
        StatusCode::FORBIDDEN,
        "403 Forbidden - Job is not processing on runner",
    );
    let (name, value) = job_status(state.gitlab_status());
    resp.headers_mut().insert(name, value);
    resp
}

/// A PUT answer: status, body `"<status>"`, `Job-Status`, optional update interval.
fn put_response(status: StatusCode, state: JobState, interval: Option<u64>) -> Response {
    let mut resp = (status, status.as_u16().to_string()).into_response();
    let (name, value) = job_status(state.gitlab_status());
    resp.headers_mut().insert(name, value);
    if let Some(secs) = interval {
        resp.headers_mut().insert(
            "x-gitlab-trace-update-interval",
            header_value(&secs.to_string()),
        );
    }
    resp
}

/// What a PUT body says, read once before the state lock is taken.
struct Update {
    state: String,
    checksum: Option<String>,
    bytesize: Option<u64>,
    failure_reason: Option<String>,
    exit_code: Option<i64>,
}

impl Update {
    fn from_params(params: &Params) -> Self {
        let output = params.get("output");
        let checksum = output
            .and_then(|o| o.get("checksum"))
            .or_else(|| params.get("checksum"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        Update {
            state: params
                .get("state")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            checksum,
            bytesize: output
                .and_then(|o| o.get("bytesize"))
                .and_then(Value::as_u64),
            failure_reason: params
                .get("failure_reason")
                .and_then(Value::as_str)
                .map(str::to_owned),
            exit_code: params.get("exit_code").and_then(Value::as_i64),
        }
    }

    fn store_output(&self, rec: &mut JobRecord) {
        if self.checksum.is_some() {
            rec.reported_checksum.clone_from(&self.checksum);
        }
        if self.bytesize.is_some() {
            rec.reported_bytesize = self.bytesize;
        }
    }

    /// The final update of a running or canceling job (GitLab only logs a trace checksum
    /// mismatch; the fake records it in `checksum_mismatch`).
    fn finish(&self, rec: &mut JobRecord) {
        self.store_output(rec);
        let checksum_bad = self
            .checksum
            .as_ref()
            .is_some_and(|c| !c.eq_ignore_ascii_case(&rec.trace_checksum()));
        let size_bad = self.bytesize.is_some_and(|b| b != rec.trace.len() as u64);
        rec.checksum_mismatch = checksum_bad || size_bad;
        rec.exit_code = self.exit_code;
        if self.state == "failed" {
            let known = rec.payload["features"]["failure_reasons"]
                .as_array()
                .is_some_and(|r| {
                    r.iter()
                        .any(|v| v.as_str() == self.failure_reason.as_deref())
                });
            rec.failure_reason = Some(match &self.failure_reason {
                Some(r) if known => r.clone(),
                _ => "unknown_failure".to_owned(),
            });
        }
        rec.state = match (rec.state, self.state.as_str()) {
            (JobState::Canceling, _) => JobState::Canceled,
            (_, "success") => JobState::Success,
            _ => JobState::Failed,
        };
        rec.finished_at = Some(Instant::now());
    }
}

/// Counts a call on the job (if it exists) and takes a counted fault for the endpoint.
fn count_call(app: &Shared, id: i64, patch: bool) -> Option<u16> {
    let mut st = app.state.lock();
    if let Some(entry) = st.jobs.get_mut(&id) {
        if patch {
            entry.record.patch_calls += 1;
        } else {
            entry.record.put_calls += 1;
        }
    }
    let fault = if patch {
        st.faults.trace_status()
    } else {
        st.faults.update_status()
    };
    drop(st);
    app.changed.notify_waiters();
    fault
}

/// `PUT /api/v4/jobs/:id`.
pub(crate) async fn update_job(
    State(app): State<Arc<Shared>>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(status) = count_call(&app, id, false) {
        return injected(status);
    }
    let params = match parse_params(&headers, &body) {
        Ok(p) => p,
        Err(resp) => return *resp,
    };
    let token = match require_str(&params, "token") {
        Ok(t) => t,
        Err(resp) => return *resp,
    };
    let update = Update::from_params(&params);
    let final_state = matches!(update.state.as_str(), "success" | "failed");
    let mut st = app.state.lock();
    let (state, valid) = match st.jobs.get(&id) {
        Some(entry) => (entry.record.state, entry.record.token == token),
        None => return forbidden(),
    };
    if !valid {
        return forbidden();
    }
    let fault = if final_state && state.processing_on_runner() {
        st.faults.final_update(id)
    } else {
        None
    };
    let Some(entry) = st.jobs.get_mut(&id) else {
        return forbidden();
    };
    let rec = &mut entry.record;
    let mut acked = false;
    let status = match (rec.state, update.state.as_str()) {
        (JobState::AwaitingAck, "pending") => StatusCode::OK,
        (JobState::AwaitingAck, "running") => {
            rec.state = JobState::Running;
            rec.acknowledged_at = Some(Instant::now());
            acked = true;
            update.store_output(rec);
            StatusCode::OK
        }
        (JobState::AwaitingAck, _) => StatusCode::BAD_REQUEST,
        (s, _) if !s.processing_on_runner() => return job_forbidden(s),
        (_, "running") => {
            update.store_output(rec);
            StatusCode::OK
        }
        (_, "success" | "failed") => match fault {
            Some(FinalUpdateFault::PreconditionFailed) => StatusCode::PRECONDITION_FAILED,
            Some(FinalUpdateFault::Accepted) => StatusCode::ACCEPTED,
            Some(FinalUpdateFault::Status(status)) => {
                drop(st);
                app.changed.notify_waiters();
                return injected(status);
            }
            None => {
                update.finish(rec);
                StatusCode::OK
            }
        },
        _ => StatusCode::BAD_REQUEST,
    };
    let state = rec.state;
    drop(st);
    app.changed.notify_waiters();
    if acked {
        let _ = app.acks.send(id);
    }
    let interval = (status == StatusCode::ACCEPTED).then_some(1);
    put_response(status, state, interval)
}

/// Parses `Content-Range: <start>-<end inclusive>` (no `bytes ` prefix, as GitLab Runner sends).
pub fn parse_range(value: &str) -> Option<(u64, u64)> {
    let (start, end) = value.trim().split_once('-')?;
    Some((start.parse().ok()?, end.parse().ok()?))
}

/// `PATCH /api/v4/jobs/:id/trace?debug_trace=…`.
pub(crate) async fn patch_trace(
    State(app): State<Arc<Shared>>,
    Path(id): Path<i64>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(status) = count_call(&app, id, true) {
        return injected(status);
    }
    let token = headers
        .get("job-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| query.get("token").cloned());
    let mut st = app.state.lock();
    let Some(entry) = st.jobs.get(&id) else {
        return forbidden();
    };
    if token.as_deref() != Some(entry.record.token.as_str()) {
        return forbidden();
    }
    if !entry.record.state.processing_on_runner() {
        return job_forbidden(entry.record.state);
    }
    let Some(range) = headers.get("content-range") else {
        return message(StatusCode::BAD_REQUEST, "400 Missing header Content-Range");
    };
    // Rails reads only the start (`to_i`); the fake also refuses a malformed header or an end
    // that is not start + length - 1, which GitLab Runner always sends.
    let len = body.len() as u64;
    let parsed = range.to_str().ok().and_then(parse_range);
    let start = match parsed {
        Some((start, end)) if len == 0 || end + 1 == start + len => start,
        _ => return message(StatusCode::BAD_REQUEST, "400 Invalid header Content-Range"),
    };
    let body_end = start + len;
    if body_end > app.opts.trace_limit_bytes {
        st.finish(id, JobState::Failed, Some("trace_size_exceeded".into()));
        drop(st);
        app.changed.notify_waiters();
        return forbidden();
    }
    let mismatch = st.faults.range_mismatch(id, start);
    let Some(entry) = st.jobs.get_mut(&id) else {
        return forbidden();
    };
    let rec = &mut entry.record;
    if let Some(offset) = mismatch {
        let keep = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(rec.trace.len());
        rec.trace.truncate(keep);
    }
    let stored = rec.trace.len() as u64;
    if mismatch.is_some() || start != stored {
        drop(st);
        app.changed.notify_waiters();
        let mut resp = message(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "416 Range Not Satisfiable",
        );
        resp.headers_mut()
            .insert("range", header_value(&format!("0-{stored}")));
        return resp;
    }
    if start == 0
        && query
            .get("debug_trace")
            .is_some_and(|v| v == "true" || v == "1")
    {
        rec.debug_trace = true;
    }
    rec.trace.extend_from_slice(&body);
    let new_len = rec.trace.len() as u64;
    if st.faults.cancel_at(id, new_len) {
        st.cancel(id);
    }
    let state = st
        .jobs
        .get(&id)
        .map_or(JobState::Canceled, |e| e.record.state);
    drop(st);
    app.changed.notify_waiters();
    let mut resp = StatusCode::ACCEPTED.into_response();
    let (name, value) = job_status(state.gitlab_status());
    let h = resp.headers_mut();
    h.insert(name, value);
    h.insert("range", header_value(&format!("0-{new_len}")));
    if let Some(secs) = app.opts.trace_update_interval_secs {
        h.insert(
            "x-gitlab-trace-update-interval",
            header_value(&secs.to_string()),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parsing() {
        assert_eq!(parse_range("0-16"), Some((0, 16)));
        assert_eq!(parse_range(" 17-20 "), Some((17, 20)));
        assert_eq!(parse_range("bytes 0-16"), None);
        assert_eq!(parse_range("0"), None);
        assert_eq!(parse_range("a-b"), None);
    }
}
