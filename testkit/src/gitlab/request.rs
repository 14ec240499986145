//! Runner-token endpoints of the fake GitLab: `POST jobs/request` (Workhorse's long poll, then
//! Rails' queue version check, feature check and hand-out) and the minimal runner endpoints
//! `POST runners/verify`, `DELETE runners`, `DELETE runners/managers`. Job-token endpoints are
//! in `update.rs`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::Notify;

use super::http::{forbidden, header_value, injected, parse_params, require_str};
use super::jobs::{first_unsupported, required_features};
use super::state::{JobState, Shared};

/// 204 without `X-GitLab-Last-Update`: how Workhorse ends a held long poll (its
/// `Gitlab-Ci-Builds-Polling` header is added by [`request_job`]).
fn bare_no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// 204 with the queue version, as Rails answers "no job".
fn no_content(version: &str) -> Response {
    (
        StatusCode::NO_CONTENT,
        [("x-gitlab-last-update", header_value(version))],
    )
        .into_response()
}

/// `POST /api/v4/jobs/request`. With long polling on, every answer carries
/// `Gitlab-Ci-Builds-Polling: yes`, held or passed on to "Rails", as Workhorse sets it before
/// it reads the request (`workhorse/internal/builds/register.go`).
pub(crate) async fn request_job(
    State(app): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let polling = !app.opts.long_poll.is_zero();
    let mut response = request_job_inner(&app, &headers, &body).await;
    if polling {
        response
            .headers_mut()
            .insert("gitlab-ci-builds-polling", HeaderValue::from_static("yes"));
    }
    response
}

async fn request_job_inner(app: &Arc<Shared>, headers: &HeaderMap, body: &Bytes) -> Response {
    let delay = app.state.lock().faults.slow_request();
    if let Some(delay) = delay {
        // A delayed request counts as held, so a test can act while it is in flight.
        let _held = HeldPoll::new(app);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = app.cancel.cancelled() => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
        }
    }
    let fault = app.state.lock().faults.request_status();
    if let Some(status) = fault {
        return injected(status);
    }
    let params = match parse_params(headers, body) {
        Ok(p) => p,
        Err(resp) => return *resp,
    };
    let token = match require_str(&params, "token") {
        Ok(t) => t,
        Err(resp) => return *resp,
    };
    {
        let mut st = app.state.lock();
        let Some(id) = st.valid_runner(&token) else {
            return forbidden();
        };
        // GitLab records the runner manager of every system_id that asks for jobs.
        if let Some(system_id) = params.get("system_id").and_then(Value::as_str) {
            let managers = st.registration.managers.entry(id).or_default();
            managers.insert(system_id.to_owned());
        }
    }
    let last_update = params
        .get("last_update")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let features = params
        .get("info")
        .and_then(|i| i.get("features"))
        .cloned()
        .unwrap_or(Value::Null);
    if let Some(last_update) = &last_update {
        if !app.opts.long_poll.is_zero() {
            if let Some(resp) = hold(app, &token, last_update).await {
                return resp;
            }
        }
    }
    let system_id = params.get("system_id").and_then(Value::as_str);
    assign(app, &token, last_update.as_deref(), &features, system_id)
}

/// The runner queue's notifier if a poll with `last_update` should be held: the version is
/// current and nothing is pending.
fn should_hold(app: &Shared, token: &str, last_update: &str) -> Option<Arc<Notify>> {
    let mut st = app.state.lock();
    let queue = st.queue(token);
    (queue.version == last_update && queue.pending.is_empty()).then(|| queue.notify.clone())
}

/// Workhorse's long poll: hold up to `long_poll` while the queue version is unchanged; end with a
/// bare 204 on a change, on timeout or on shutdown. `None`: not held, ask "Rails".
async fn hold(app: &Shared, token: &str, last_update: &str) -> Option<Response> {
    let notify = should_hold(app, token, last_update)?;
    // Registered before the re-check, so an enqueue between the two is not missed.
    let notified = notify.notified();
    should_hold(app, token, last_update)?;
    let _held = HeldPoll::new(app);
    tokio::select! {
        () = notified => {}
        () = tokio::time::sleep(app.opts.long_poll) => {}
        () = app.cancel.cancelled() => {}
    }
    Some(bare_no_content())
}

/// Counts a held poll in `Shared::held_polls` for as long as it lives.
struct HeldPoll<'a>(&'a Shared);

impl<'a> HeldPoll<'a> {
    fn new(app: &'a Shared) -> Self {
        app.held_polls.fetch_add(1, Ordering::SeqCst);
        app.changed.notify_waiters();
        HeldPoll(app)
    }
}

impl Drop for HeldPoll<'_> {
    fn drop(&mut self) {
        self.0.held_polls.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

/// Rails' part: queue version check, then the first pending job the runner supports (jobs it
/// does not support are failed as `runner_unsupported`, as `Ci::RegisterJobService` does).
///
/// `job_info.queue_size` and `queue_depth` follow `Ci::RegisterJobService#process_queue` (via
/// `BuildRunnerPresenter#set_queue_metrics`): the size is the number of candidate jobs for this
/// runner when the request was processed, the handed-out one included; the depth is the 1-based
/// position of the handed-out job among them (jobs failed as unsupported before it count).
fn assign(
    app: &Shared,
    token: &str,
    last_update: Option<&str>,
    features: &Value,
    system_id: Option<&str>,
) -> Response {
    let check = app.opts.feature_check;
    let mut st = app.state.lock();
    let queue = st.queue(token);
    let version = queue.version.clone();
    if last_update == Some(version.as_str()) && queue.pending.is_empty() {
        return no_content(&version);
    }
    let candidates: Vec<i64> = queue.pending.iter().copied().collect();
    let queue_size = candidates.len();
    let mut dropped = false;
    for (depth, id) in candidates.into_iter().enumerate() {
        let needed = match st.jobs.get(&id) {
            Some(entry) => required_features(&entry.record.payload, &entry.requires, check),
            None => continue,
        };
        if let Some(missing) = first_unsupported(&needed, features) {
            tracing::info!(job = id, feature = %missing, "job failed: runner_unsupported");
            st.finish(id, JobState::Failed, Some("runner_unsupported".into()));
            dropped = true;
            continue;
        }
        st.queue(token).pending.retain(|j| *j != id);
        let two_phase = features["two_phase_job_commit"] == Value::Bool(true);
        let malformed = st.faults.malformed_next();
        let Some(entry) = st.jobs.get_mut(&id) else {
            continue;
        };
        let rec = &mut entry.record;
        let now = Instant::now();
        rec.state = if two_phase {
            JobState::AwaitingAck
        } else {
            JobState::Running
        };
        rec.two_phase = two_phase;
        rec.cancel_gracefully = features["cancel_gracefully"] == Value::Bool(true);
        rec.handed_out_at = Some(now);
        rec.runner_manager = system_id.map(str::to_owned);
        if !two_phase {
            rec.acknowledged_at = Some(now);
        }
        if let Some(info) = rec
            .payload
            .get_mut("job_info")
            .and_then(Value::as_object_mut)
        {
            info.insert("queue_size".into(), json!(queue_size));
            info.insert("queue_depth".into(), json!(depth + 1));
            let waited = now.duration_since(rec.enqueued_at).as_secs_f64();
            info.insert("time_in_queue_seconds".into(), json!(waited));
        }
        let body = serde_json::to_vec(&rec.payload).unwrap_or_default();
        drop(st);
        app.changed.notify_waiters();
        if !two_phase {
            let _ = app.acks.send(id);
        }
        let (status, body) = match malformed {
            Some((raw, status)) => (
                StatusCode::from_u16(status).unwrap_or(StatusCode::CREATED),
                raw.into_bytes(),
            ),
            None => (StatusCode::CREATED, body),
        };
        return (
            status,
            [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            body,
        )
            .into_response();
    }
    drop(st);
    if dropped {
        app.changed.notify_waiters();
    }
    no_content(&version)
}
