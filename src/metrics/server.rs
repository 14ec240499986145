//! The admin HTTP server on `listen_address` (axum): `/metrics` (Prometheus text format),
//! `/health/live`, `/health/ready`, `/status` (HTML), `/status.json` and GitLab Runner's
//! `/debug/jobs/list`. Started once by the
//! manager before it polls, stopped after the last VM is gone, so the shutdown phases stay
//! visible. It only reads; no endpoint changes anything.

use super::html;
use super::status::StatusSource;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::get;
use axum::Router;
use prometheus::Encoder;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why the admin server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The address cannot be bound (in use, not local, bad syntax).
    #[error("cannot listen on listen_address {address:?}: {source}")]
    Bind {
        /// `listen_address` as configured.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// `listen_address` as a bindable address: Go's `:9252` form (every interface) becomes
/// `0.0.0.0:9252`.
fn bind_address(configured: &str) -> String {
    if configured.starts_with(':') {
        format!("0.0.0.0{configured}")
    } else {
        configured.to_string()
    }
}

/// Binds `listen_address`.
pub async fn bind(listen_address: &str) -> Result<TcpListener, ServerError> {
    TcpListener::bind(bind_address(listen_address))
        .await
        .map_err(|source| ServerError::Bind {
            address: listen_address.to_string(),
            source,
        })
}

/// The routes over `source`.
pub fn router(source: Arc<StatusSource>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/status", get(status_html))
        .route("/status.json", get(status_json))
        .route("/debug/jobs/list", get(jobs_list))
        .with_state(source)
}

/// Serves `listener` on a task of `tracker` until `cancel` fires. Returns the bound address.
pub fn serve(
    listener: TcpListener,
    source: Arc<StatusSource>,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> Option<SocketAddr> {
    let addr = listener.local_addr().ok();
    let app = router(source);
    tracker.spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "admin server stopped");
        }
    });
    if let Some(addr) = addr {
        tracing::info!(%addr, "serving /metrics, /health/live, /health/ready, /status");
    }
    addr
}

async fn metrics(State(source): State<Arc<StatusSource>>) -> Response {
    source.metrics.process.sample_runtime();
    let families = source.metrics.registry.gather();
    let encoder = prometheus::TextEncoder::new();
    let mut body = Vec::new();
    match encoder.encode(&families, &mut body) {
        Ok(()) => (
            [(header::CONTENT_TYPE, encoder.format_type().to_string())],
            body,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {e}\n"),
        )
            .into_response(),
    }
}

async fn jobs_list(State(source): State<Arc<StatusSource>>) -> Response {
    let body = super::debug_jobs::render(&source.metrics.jobs.running());
    (
        [
            (header::CONTENT_TYPE, "text/plain"),
            (
                header::HeaderName::from_static("x-list-version"),
                super::debug_jobs::LIST_VERSION,
            ),
        ],
        body,
    )
        .into_response()
}

async fn live() -> &'static str {
    "live\n"
}

async fn ready(State(source): State<Arc<StatusSource>>) -> Response {
    if (source.ready)() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the coordinator has not answered yet\n",
        )
            .into_response()
    }
}

async fn status_html(State(source): State<Arc<StatusSource>>) -> Html<String> {
    Html(html::render(&source.report().await))
}

async fn status_json(State(source): State<Arc<StatusSource>>) -> Json<super::status::StatusReport> {
    Json(source.report().await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use std::sync::atomic::{AtomicBool, Ordering};

    const CONFIG: &str = r#"
concurrent = 3
[[runners]]
name = "<b>evil</b> & co"
url = "https://user:hunter2@gitlab.example.com/"
token = "TOKEN"
executor = "docker"
"#;

    async fn start(ready: Arc<AtomicBool>) -> (String, CancellationToken, TaskTracker) {
        // Made at runtime so no token-shaped literal sits in the source.
        let token = format!("{}-t1_abcdefghi{}", "glrt", "jklmnopqrstu");
        let text = CONFIG.replace("TOKEN", &token);
        let config = crate::config::Config::from_toml_str(&text, "test.toml")
            .expect("config")
            .config;
        let metrics = Metrics::new(prometheus::Registry::new(), &config, "s_000000000001", None)
            .expect("metrics");
        let source = Arc::new(StatusSource {
            metrics: Arc::new(metrics),
            config: {
                let config = Arc::new(config);
                Arc::new(move || config.clone())
            },
            system_id: "s_000000000001".into(),
            fleets: Default::default(),
            ready: Arc::new(move || ready.load(Ordering::Relaxed)),
        });
        let listener = bind("127.0.0.1:0").await.expect("bind");
        let (tracker, cancel) = (TaskTracker::new(), CancellationToken::new());
        let addr = serve(listener, source, &tracker, cancel.clone()).expect("address");
        (format!("http://{addr}"), cancel, tracker)
    }

    async fn get(url: String) -> (u16, String, String) {
        let r = reqwest::get(url).await.expect("GET");
        let status = r.status().as_u16();
        let kind = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        (status, kind, r.text().await.expect("body"))
    }

    #[tokio::test]
    async fn endpoints_answer_and_hide_secrets() {
        let ready = Arc::new(AtomicBool::new(false));
        let (base, cancel, tracker) = start(ready.clone()).await;
        assert_eq!(get(format!("{base}/health/live")).await.0, 200);
        let (status, _, body) = get(format!("{base}/health/ready")).await;
        assert_eq!(
            (status, body.as_str()),
            (503, "not ready: the coordinator has not answered yet\n")
        );
        ready.store(true, Ordering::Relaxed);
        let (status, _, body) = get(format!("{base}/health/ready")).await;
        assert_eq!((status, body.as_str()), (200, "ready\n"));
        let (status, kind, body) = get(format!("{base}/metrics")).await;
        assert_eq!(status, 200);
        assert!(kind.starts_with("text/plain"), "{kind}");
        assert!(body.contains("gitlab_runner_concurrent 3"), "{body}");
        assert!(body.contains("\nprocess_open_fds "), "{body}");
        assert!(
            body.contains("\ngitlab_runner_configuration_loaded_total 1\n"),
            "{body}"
        );
        let tasks: i64 = body
            .lines()
            .find_map(|l| l.strip_prefix("flotilla_tokio_alive_tasks "))
            .and_then(|v| v.trim().parse().ok())
            .expect("the alive task gauge");
        assert!(tasks >= 1, "the server itself runs in a task: {body}");
        assert!(body.contains("runner=\"abcdefghi\""), "{body}");
        let (status, kind, html) = get(format!("{base}/status")).await;
        assert_eq!(status, 200);
        assert!(kind.starts_with("text/html"), "{kind}");
        assert!(html.contains("&lt;b&gt;evil&lt;/b&gt; &amp; co"), "{html}");
        let (status, kind, list) = get(format!("{base}/debug/jobs/list")).await;
        assert_eq!(
            (status, kind.as_str(), list.as_str()),
            (200, "text/plain", "")
        );
        let (_, kind, json) = get(format!("{base}/status.json")).await;
        assert!(kind.starts_with("application/json"), "{kind}");
        for page in [&body, &html, &json] {
            assert!(
                !page.contains("hunter2") && !page.contains("glrt-"),
                "{page}"
            );
        }
        let report: super::super::StatusReport = serde_json::from_str(&json).expect("json");
        assert_eq!(report.runners[0].url, "https://gitlab.example.com/");
        assert_eq!(report.process_state, "starting");
        cancel.cancel();
        tracker.close();
        tracker.wait().await;
    }

    #[test]
    fn go_style_addresses_listen_everywhere() {
        assert_eq!(bind_address(":9252"), "0.0.0.0:9252");
        assert_eq!(bind_address("127.0.0.1:9252"), "127.0.0.1:9252");
    }
}
