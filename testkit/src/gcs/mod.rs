//! A fake Google Cloud Storage for cache tests, on loopback: the XML API's object `GET`, `HEAD`
//! and `PUT` on V4 signed URLs (verified against the test service accounts' public keys, see
//! `verify`), plus a fake IAM Credentials `signBlob` endpoint and a fake metadata server (email
//! and access token of the "instance" service account). One port serves all three, so a config
//! points `endpoint`, `iam_endpoint` and `metadata_endpoint` at [`FakeGcs::url`].
//!
//! Errors carry GCS's XML bodies (`NoSuchKey`, `NoSuchBucket`, `SignatureDoesNotMatch`,
//! `ExpiredToken`, `EntityTooLarge`, …). Keys are generated at run time ([`TestServiceAccount`]).

mod account;
mod verify;

pub use account::TestServiceAccount;
pub use verify::{Refusal, Verified};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use base64::Engine as _;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

/// The access token the fake metadata server hands out and the fake IAM accepts.
const ACCESS_TOKEN: &str = "ya29.fake-metadata-token";

/// One stored object.
#[derive(Debug, Clone)]
pub struct StoredObject {
    /// Its bytes.
    pub data: Bytes,
    /// `Content-Type` it was uploaded with.
    pub content_type: Option<String>,
    /// `x-goog-meta-*` headers it was uploaded with (names without the prefix).
    pub metadata: HashMap<String, String>,
}

/// One request the fake answered (no query: it holds signatures).
#[derive(Debug, Clone)]
pub struct GcsRequest {
    /// The method.
    pub method: String,
    /// The path.
    pub path: String,
    /// The status answered.
    pub status: u16,
    /// The GCS error code, if refused.
    pub code: Option<String>,
}

#[derive(Default)]
struct GcsState {
    buckets: HashMap<String, HashMap<String, StoredObject>>,
    public_keys: HashMap<String, Vec<u8>>,
    requests: Vec<GcsRequest>,
    clock_skew_secs: i64,
    sign_blob_calls: usize,
}

struct Shared {
    url: String,
    state: Mutex<GcsState>,
    /// The metadata server's service account (its key signs `signBlob` requests).
    instance_account: Option<TestServiceAccount>,
    cancel: CancellationToken,
}

/// A running fake; dropping the last clone stops the server.
#[derive(Clone)]
pub struct FakeGcs {
    shared: Arc<Shared>,
    _guard: Arc<Guard>,
}

struct Guard(CancellationToken);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

impl FakeGcs {
    /// Starts the fake on `127.0.0.1:0`. `instance_account`, if given, is the metadata server's
    /// service account: its email is served, and `signBlob` signs with its key.
    pub async fn start(instance_account: Option<TestServiceAccount>) -> anyhow::Result<FakeGcs> {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .context("binding the fake GCS")?;
        let addr = listener.local_addr().context("fake GCS address")?;
        let cancel = CancellationToken::new();
        let mut state = GcsState::default();
        if let Some(a) = &instance_account {
            state
                .public_keys
                .insert(a.email.clone(), a.public_key_der());
        }
        let shared = Arc::new(Shared {
            url: format!("http://{addr}"),
            state: Mutex::new(state),
            instance_account,
            cancel: cancel.clone(),
        });
        let app = Router::new()
            .route(
                "/computeMetadata/v1/instance/service-accounts/default/{what}",
                get(metadata),
            )
            .route("/v1/projects/-/serviceAccounts/{name}", post(sign_blob))
            .route("/{bucket}/{*object}", any(object))
            .with_state(shared.clone());
        let stop = cancel.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
        });
        Ok(FakeGcs {
            shared,
            _guard: Arc::new(Guard(cancel)),
        })
    }

    /// The base URL (`http://127.0.0.1:<port>`) of all three APIs.
    pub fn url(&self) -> String {
        self.shared.url.clone()
    }

    /// Creates an empty bucket.
    pub fn create_bucket(&self, name: &str) {
        self.shared
            .state
            .lock()
            .buckets
            .entry(name.to_string())
            .or_default();
    }

    /// Lets `account`'s key sign URLs (as a service account with access to every bucket).
    pub fn allow(&self, account: &TestServiceAccount) {
        self.shared
            .state
            .lock()
            .public_keys
            .insert(account.email.clone(), account.public_key_der());
    }

    /// Stores an object directly.
    pub fn put_object(&self, bucket: &str, name: &str, data: impl Into<Bytes>) {
        self.shared
            .state
            .lock()
            .buckets
            .entry(bucket.to_string())
            .or_default()
            .insert(
                name.to_string(),
                StoredObject {
                    data: data.into(),
                    content_type: None,
                    metadata: HashMap::new(),
                },
            );
    }

    /// An object, if stored.
    pub fn object(&self, bucket: &str, name: &str) -> Option<StoredObject> {
        self.shared
            .state
            .lock()
            .buckets
            .get(bucket)
            .and_then(|b| b.get(name))
            .cloned()
    }

    /// The names of a bucket's objects, sorted.
    pub fn object_names(&self, bucket: &str) -> Vec<String> {
        let st = self.shared.state.lock();
        let mut names: Vec<String> = st
            .buckets
            .get(bucket)
            .map(|b| b.keys().cloned().collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Every object request answered so far.
    pub fn requests(&self) -> Vec<GcsRequest> {
        self.shared.state.lock().requests.clone()
    }

    /// How many `signBlob` calls were answered successfully.
    pub fn sign_blob_calls(&self) -> usize {
        self.shared.state.lock().sign_blob_calls
    }

    /// Moves the fake's clock (for expiry tests): positive = later.
    pub fn skew_clock(&self, secs: i64) {
        self.shared.state.lock().clock_skew_secs = secs;
    }

    /// Stops the server.
    pub fn stop(&self) {
        self.shared.cancel.cancel();
    }
}

/// GCS's XML error body.
fn xml_error(status: StatusCode, code: &str, message: &str, with_body: bool) -> Response {
    let body = if with_body {
        format!(
            "<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>\
             <Message>{}</Message></Error>",
            message.replace('&', "&amp;").replace('<', "&lt;")
        )
    } else {
        String::new()
    };
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/xml; charset=UTF-8"),
        )],
        body,
    )
        .into_response()
}

async fn object(
    State(app): State<Arc<Shared>>,
    Path((bucket, name)): Path<(String, String)>,
    req: Request,
) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let headers = req.headers().clone();
    let body = axum::body::to_bytes(req.into_body(), 512 * 1024 * 1024).await;
    let (response, code) =
        handle_object(&app, &method, &path, &query, &headers, &bucket, &name, body);
    app.state.lock().requests.push(GcsRequest {
        method: method.to_string(),
        path,
        status: response.status().as_u16(),
        code,
    });
    response
}

#[allow(clippy::too_many_arguments)]
fn handle_object(
    app: &Shared,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    bucket: &str,
    name: &str,
    body: Result<Bytes, axum::Error>,
) -> (Response, Option<String>) {
    let with_body = method != Method::HEAD;
    let refuse = |status: StatusCode, code: &'static str, message: &str| {
        (
            xml_error(status, code, message, with_body),
            Some(code.to_string()),
        )
    };
    let now = {
        let skew = app.state.lock().clock_skew_secs;
        chrono::Utc::now() + chrono::Duration::seconds(skew)
    };
    let verified = verify::verify(method, path, query, headers, now, |account| {
        app.state.lock().public_keys.get(account).cloned()
    });
    let verified = match verified {
        Ok(v) => v,
        Err(r) => return refuse(r.status, r.code, &r.message),
    };
    let mut st = app.state.lock();
    let Some(objects) = st.buckets.get_mut(bucket) else {
        return refuse(
            StatusCode::NOT_FOUND,
            "NoSuchBucket",
            "The specified bucket does not exist.",
        );
    };
    match *method {
        Method::GET | Method::HEAD => {
            let Some(obj) = objects.get(name) else {
                return refuse(
                    StatusCode::NOT_FOUND,
                    "NoSuchKey",
                    "The specified key does not exist.",
                );
            };
            let mut response = if with_body {
                Response::new(Body::from(obj.data.clone()))
            } else {
                Response::new(Body::empty())
            };
            let h = response.headers_mut();
            if let Some(ct) = obj
                .content_type
                .as_deref()
                .and_then(|c| HeaderValue::from_str(c).ok())
            {
                h.insert(header::CONTENT_TYPE, ct);
            }
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(obj.data.len()));
            for (k, v) in &obj.metadata {
                if let (Ok(name), Ok(value)) = (
                    header::HeaderName::from_bytes(format!("x-goog-meta-{k}").as_bytes()),
                    HeaderValue::from_str(v),
                ) {
                    h.insert(name, value);
                }
            }
            (response, None)
        }
        Method::PUT => {
            let Ok(data) = body else {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "InvalidArgument",
                    "Unreadable body.",
                );
            };
            if let Some(range) = headers
                .get("x-goog-content-length-range")
                .and_then(|v| v.to_str().ok())
            {
                let max = range
                    .split_once(',')
                    .and_then(|(_, max)| max.trim().parse::<usize>().ok());
                if max.is_some_and(|max| data.len() > max) {
                    return refuse(
                        StatusCode::BAD_REQUEST,
                        "EntityTooLarge",
                        "Your proposed upload is larger than the maximum object size specified in your Policy Document.",
                    );
                }
            }
            let metadata = headers
                .iter()
                .filter_map(|(k, v)| {
                    let key = k.as_str().strip_prefix("x-goog-meta-")?;
                    Some((key.to_string(), v.to_str().ok()?.to_string()))
                })
                .collect();
            let content_type = verified
                .signed_headers
                .iter()
                .any(|h| h == "content-type")
                .then(|| headers.get(header::CONTENT_TYPE))
                .flatten()
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            objects.insert(
                name.to_string(),
                StoredObject {
                    data,
                    content_type,
                    metadata,
                },
            );
            (StatusCode::OK.into_response(), None)
        }
        _ => refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "The specified method is not allowed against this resource.",
        ),
    }
}

async fn metadata(
    State(app): State<Arc<Shared>>,
    Path(what): Path<String>,
    headers: HeaderMap,
) -> Response {
    if headers.get("metadata-flavor").and_then(|v| v.to_str().ok()) != Some("Google") {
        return (
            StatusCode::FORBIDDEN,
            "Missing Metadata-Flavor:Google header.",
        )
            .into_response();
    }
    let Some(account) = &app.instance_account else {
        return (StatusCode::NOT_FOUND, "no service account").into_response();
    };
    match what.as_str() {
        "email" => account.email.clone().into_response(),
        "token" => axum::Json(serde_json::json!({
            "access_token": ACCESS_TOKEN,
            "expires_in": 3599,
            "token_type": "Bearer",
        }))
        .into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn sign_blob(
    State(app): State<Arc<Shared>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let error = |status: StatusCode, text: &str| {
        (
            status,
            axum::Json(serde_json::json!({
                "error": { "code": status.as_u16(), "message": text, "status": status.canonical_reason() }
            })),
        )
            .into_response()
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer != Some(ACCESS_TOKEN) {
        return error(
            StatusCode::UNAUTHORIZED,
            "Request had invalid authentication credentials.",
        );
    }
    let Some(email) = name.strip_suffix(":signBlob") else {
        return error(StatusCode::NOT_FOUND, "unknown method");
    };
    let Some(account) = app.instance_account.as_ref().filter(|a| a.email == email) else {
        return error(
            StatusCode::FORBIDDEN,
            "Permission 'iam.serviceAccounts.signBlob' denied.",
        );
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("payload")?.as_str().map(str::to_string))
        .and_then(|p| b64.decode(p).ok());
    let Some(payload) = payload else {
        return error(StatusCode::BAD_REQUEST, "payload must be base64 bytes");
    };
    match account.sign(&payload) {
        Ok(signature) => {
            app.state.lock().sign_blob_calls += 1;
            axum::Json(serde_json::json!({
                "keyId": "0123456789abcdef",
                "signedBlob": b64.encode(signature),
            }))
            .into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}
