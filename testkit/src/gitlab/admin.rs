//! The fake GitLab's admin HTTP API under `/admin/…`, for the demo and the benchmark binary
//! (which drive the fake from another process): register runners, enqueue and cancel jobs, read
//! a job's state and trace, inject faults. A thin JSON layer over [`GitlabHandle`]'s library API;
//! these calls are not recorded in the request log.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::http::{json_response, message};
use super::state::{JobRecord, JobState};
use super::{Fault, GitlabHandle};

/// `GET /admin/jobs/:id` body: a [`JobRecord`] with the trace as text and times in
/// milliseconds after `enqueued_at`.
#[derive(Debug, Serialize)]
pub struct AdminJob {
    /// Job id.
    pub id: i64,
    /// Current state.
    pub state: JobState,
    /// Failure reason of a failed job.
    pub failure_reason: Option<String>,
    /// Exit code sent with the final update.
    pub exit_code: Option<i64>,
    /// The trace as lossy UTF-8.
    pub trace: String,
    /// Stored trace length in bytes.
    pub trace_bytes: usize,
    /// Whether the trace was sent with `debug_trace=true`.
    pub debug_trace: bool,
    /// Last reported `output.checksum`.
    pub reported_checksum: Option<String>,
    /// Last reported `output.bytesize`.
    pub reported_bytesize: Option<u64>,
    /// Whether the final update disagreed with the stored trace.
    pub checksum_mismatch: bool,
    /// Hand-out time, ms after enqueue.
    pub handed_out_after_ms: Option<f64>,
    /// Start of running (ack), ms after enqueue.
    pub acknowledged_after_ms: Option<f64>,
    /// Finish time, ms after enqueue.
    pub finished_after_ms: Option<f64>,
    /// Trace PATCH requests received.
    pub patch_calls: u32,
    /// PUT requests received.
    pub put_calls: u32,
}

impl From<&JobRecord> for AdminJob {
    fn from(rec: &JobRecord) -> Self {
        let after = |t: Option<std::time::Instant>| {
            t.map(|t| t.duration_since(rec.enqueued_at).as_secs_f64() * 1000.0)
        };
        AdminJob {
            id: rec.id,
            state: rec.state,
            failure_reason: rec.failure_reason.clone(),
            exit_code: rec.exit_code,
            trace: rec.trace_text(),
            trace_bytes: rec.trace.len(),
            debug_trace: rec.debug_trace,
            reported_checksum: rec.reported_checksum.clone(),
            reported_bytesize: rec.reported_bytesize,
            checksum_mismatch: rec.checksum_mismatch,
            handed_out_after_ms: after(rec.handed_out_at),
            acknowledged_after_ms: after(rec.acknowledged_at),
            finished_after_ms: after(rec.finished_at),
            patch_calls: rec.patch_calls,
            put_calls: rec.put_calls,
        }
    }
}

#[derive(Deserialize)]
struct NewRunner {
    token: String,
}

#[derive(Deserialize)]
struct NewJob {
    runner_token: String,
    #[serde(default)]
    job: Value,
}

async fn add_runner(State(fake): State<GitlabHandle>, Json(body): Json<NewRunner>) -> Response {
    fake.add_runner(&body.token);
    StatusCode::CREATED.into_response()
}

async fn enqueue(State(fake): State<GitlabHandle>, Json(body): Json<NewJob>) -> Response {
    let id = fake.enqueue(&body.runner_token, body.job);
    json_response(StatusCode::CREATED, &json!({ "id": id }))
}

async fn get_job(State(fake): State<GitlabHandle>, Path(id): Path<i64>) -> Response {
    match fake.job(id) {
        Some(rec) => Json(AdminJob::from(&rec)).into_response(),
        None => message(StatusCode::NOT_FOUND, "404 Job Not Found"),
    }
}

async fn cancel(State(fake): State<GitlabHandle>, Path(id): Path<i64>) -> Response {
    if fake.job(id).is_none() {
        return message(StatusCode::NOT_FOUND, "404 Job Not Found");
    }
    fake.cancel(id);
    StatusCode::NO_CONTENT.into_response()
}

async fn inject(State(fake): State<GitlabHandle>, Json(fault): Json<Fault>) -> Response {
    fake.inject(fault);
    StatusCode::NO_CONTENT.into_response()
}

/// The `/admin` routes, over a [`GitlabHandle`] (which, unlike `FakeGitlab`, does not keep the
/// server alive: the router lives in the server task).
pub(crate) fn router(fake: GitlabHandle) -> Router {
    Router::new()
        .route("/admin/runners", post(add_runner))
        .route("/admin/jobs", post(enqueue))
        .route("/admin/jobs/{id}", get(get_job))
        .route("/admin/jobs/{id}/cancel", post(cancel))
        .route("/admin/faults", post(inject))
        .with_state(fake)
}
