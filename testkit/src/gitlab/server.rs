//! Assembly of the fake GitLab's HTTP server: the Runner API v4 routes, the `/admin` routes and
//! any extension routes merged into one axum router, wrapped by the request recorder; and the
//! serving task with graceful shutdown on the fake's cancellation token.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, patch, post, put};
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use super::state::{RecordedRequest, Shared, MAX_RECORDED_REQUESTS};
use super::{admin, artifacts, request, runners, update, GitlabHandle};

/// Recorded bodies are cut at this many bytes.
const RECORDED_BODY_LIMIT: usize = 64 * 1024;

/// Records every non-admin request (method, path, query, headers, body) before handling it.
async fn record(State(app): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    if req.uri().path().starts_with("/admin") {
        return next.run(req).await;
    }
    let at = Instant::now();
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let cut = bytes.len().min(RECORDED_BODY_LIMIT);
    let recorded = RecordedRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
                (n.as_str().to_owned(), value)
            })
            .collect(),
        body: bytes[..cut].to_vec(),
        body_truncated: cut < bytes.len(),
        at,
        status: 0,
    };
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let mut recorded = recorded;
    recorded.status = response.status().as_u16();
    {
        let mut st = app.state.lock();
        if st.requests.len() >= MAX_RECORDED_REQUESTS {
            st.requests.pop_front();
        }
        st.requests.push_back(recorded);
    }
    response
}

/// The whole router: runner API, admin API and `extra` (extension routes, e.g. git smart HTTP
/// or artifacts), all recorded.
pub(crate) fn router(handle: GitlabHandle, extra: Router) -> Router {
    let shared = handle.shared.clone();
    let api = Router::new()
        .route("/api/v4/jobs/request", post(request::request_job))
        .route("/api/v4/jobs/{id}", put(update::update_job))
        .route("/api/v4/jobs/{id}/trace", patch(update::patch_trace))
        .route(
            "/api/v4/jobs/{id}/artifacts",
            post(artifacts::upload).get(artifacts::download),
        )
        .route("/api/v4/runners/verify", post(runners::verify))
        .route(
            "/api/v4/runners",
            post(runners::register).delete(runners::delete_runner),
        )
        .route("/api/v4/runners/managers", delete(runners::delete_manager))
        .route(
            "/api/v4/runners/reset_authentication_token",
            post(runners::reset_token),
        )
        .with_state(shared.clone());
    api.merge(admin::router(handle))
        .merge(extra)
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(shared, record))
}

/// The fake object storage's router, recorded like the rest.
pub(crate) fn object_store_router(shared: Arc<Shared>) -> Router {
    artifacts::object_store_router(shared.clone())
        .layer(middleware::from_fn_with_state(shared, record))
}

/// Serves `app` on `listener` in a task of `tracker` until `shared.cancel` fires; held polls end
/// on the same token, so graceful shutdown does not wait for them.
pub(crate) fn serve(tracker: &TaskTracker, listener: TcpListener, app: Router, shared: &Shared) {
    let stop = shared.cancel.clone();
    tracker.spawn(async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "fake gitlab server ended with an error");
        }
    });
}
