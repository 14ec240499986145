//! Test helper: a tiny programmable coordinator (axum on 127.0.0.1:0) that records every request
//! and answers through a closure, plus a deadline-bounded wait for conditions.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;

/// One request the stub received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    /// Path and query.
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    /// A header as text ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }

    /// Whether this is a trace PATCH.
    pub fn is_patch(&self) -> bool {
        self.method == Method::PATCH
    }

    /// Whether this is a job update PUT.
    pub fn is_put(&self) -> bool {
        self.method == Method::PUT
    }
}

type Responder = dyn Fn(&Recorded) -> Response + Send + Sync;

/// A running stub; stops when dropped.
pub struct Stub {
    pub url: String,
    log: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Stub {
    /// Starts a stub answering with `respond`.
    pub async fn start(respond: impl Fn(&Recorded) -> Response + Send + Sync + 'static) -> Stub {
        let log: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let respond: Arc<Responder> = Arc::new(respond);
        let app = axum::Router::new().fallback({
            let log = log.clone();
            move |req: Request| {
                let log = log.clone();
                let respond = respond.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let body = axum::body::to_bytes(body, 64 * 1024 * 1024)
                        .await
                        .unwrap_or_default();
                    let rec = Recorded {
                        method: parts.method,
                        uri: parts.uri.to_string(),
                        headers: parts.headers,
                        body,
                    };
                    let response = respond(&rec);
                    log.lock().unwrap().push(rec);
                    response
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Stub {
            url: format!("http://{addr}/"),
            log,
            task,
        }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }

    /// Waits (at most 10 s) until `cond` holds over the requests so far.
    pub async fn wait_for(&self, what: &str, cond: impl Fn(&[Recorded]) -> bool) -> Vec<Recorded> {
        wait_until(what, || {
            let requests = self.requests();
            cond(&requests).then_some(requests)
        })
        .await
    }
}

/// Polls `probe` until it returns `Some`, failing the test after 10 s.
pub async fn wait_until<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A response with `status`, `headers` and `body`.
pub fn reply(status: u16, headers: &[(&str, &str)], body: impl Into<Body>) -> Response {
    let mut builder = Response::builder().status(StatusCode::from_u16(status).unwrap());
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    builder.body(body.into()).unwrap()
}
