//! Job artifacts in the fake GitLab: `POST jobs/:id/artifacts` (Workhorse + Rails'
//! `Ci::JobArtifacts::CreateService`), `GET jobs/:id/artifacts` (`authenticate_job_via_dependent_job!`
//! then `present_artifacts_file!`), and a fake object storage on its own loopback port that the
//! download redirects to when the runner asks for `direct_download=true`.
//!
//! Fidelity notes, from GitLab's source:
//! - Upload: the job named in the URL must exist, its token must match (`JOB-TOKEN` header or
//!   `token` parameter) and it must be processing on its runner (`running` or `canceling`), else
//!   403 (`authenticate_job!`; such a job also gets `Job-Status`). The body is `multipart/form-data` with the file in part
//!   `file`; `artifact_type` (default `archive`), `artifact_format` (default `zip`) and
//!   `expire_in` come as query parameters. Over the size limit: 413. A second artifact of the
//!   same type: 400. Success: 201 with body `201`.
//! - The fake is stricter than GitLab where a runner bug would otherwise pass silently: an
//!   `archive` must be a readable zip, and the format must be the one GitLab pairs with the type
//!   (junit, dotenv… gzip; archive zip).
//! - Download: the token must be a running (or canceling) job's (`authenticate!`: 401 otherwise); the job in the
//!   URL must exist (403); it must have an `archive` artifact (404). With `direct_download=true`
//!   the answer is 302 to the object storage, whose GET refuses a request carrying `JOB-TOKEN`
//!   (a token must never leave for another host) and serves the bytes otherwise.

use std::collections::{BTreeMap, HashMap};
use std::io::Read as _;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::header::{CONTENT_TYPE, LOCATION};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use rand::distr::{Alphanumeric, SampleString};

use super::faults::UploadFault;
use super::http::{forbidden, grape_error, header_value, injected, job_status, message};
use super::state::{JobState, Shared};

/// GitLab's default maximum artifacts size (`max_artifacts_size`, 100 MB).
pub const DEFAULT_MAX_ARTIFACTS_BYTES: u64 = 100 * 1024 * 1024;

/// Artifact types and the format GitLab accepts for each (`Ci::JobArtifact::TYPE_AND_FORMAT_PAIRS`,
/// the subset a runner sends).
const TYPE_FORMATS: [(&str, &str); 21] = [
    ("archive", "zip"),
    ("metadata", "gzip"),
    ("trace", "raw"),
    ("junit", "gzip"),
    ("metrics", "gzip"),
    ("metrics_referee", "gzip"),
    ("network_referee", "gzip"),
    ("dotenv", "gzip"),
    ("cobertura", "gzip"),
    ("jacoco", "gzip"),
    ("cluster_applications", "gzip"),
    ("lsif", "zip"),
    ("cyclonedx", "gzip"),
    ("annotations", "gzip"),
    ("repository_xray", "gzip"),
    ("sast", "raw"),
    ("secret_detection", "raw"),
    ("dependency_scanning", "raw"),
    ("container_scanning", "raw"),
    ("codequality", "raw"),
    ("terraform", "raw"),
];

/// One uploaded artifact, as the fake stored it. Read with
/// [`GitlabHandle::artifacts`](super::GitlabHandle::artifacts).
#[derive(Clone)]
pub struct StoredArtifact {
    /// `artifact_type` (`archive` when the runner sent none).
    pub artifact_type: String,
    /// `artifact_format` (`zip` when the runner sent none).
    pub artifact_format: String,
    /// `expire_in` as sent, if sent.
    pub expire_in: Option<String>,
    /// The file name of the multipart part (`artifacts.zip`, `junit.gz`, …).
    pub filename: String,
    /// The bytes received.
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for StoredArtifact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredArtifact")
            .field("artifact_type", &self.artifact_type)
            .field("artifact_format", &self.artifact_format)
            .field("expire_in", &self.expire_in)
            .field("filename", &self.filename)
            .field("len", &self.bytes.len())
            .finish()
    }
}

impl StoredArtifact {
    /// The entry names of a zip artifact, in archive order (directories end in `/`).
    pub fn zip_entries(&self) -> anyhow::Result<Vec<String>> {
        let archive = zip::ZipArchive::new(std::io::Cursor::new(&self.bytes))?;
        let names = archive
            .file_names()
            .map(|name| name.map(|name| name.into_owned()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(names)
    }

    /// The content of entry `name` of a zip artifact.
    pub fn zip_file(&self, name: &str) -> anyhow::Result<Vec<u8>> {
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(&self.bytes))?;
        let mut file = archive.by_name(name)?;
        let mut out = Vec::new();
        file.read_to_end(&mut out)?;
        Ok(out)
    }

    /// The decompressed content of a gzip artifact (every member, concatenated).
    pub fn gunzip(&self) -> anyhow::Result<Vec<u8>> {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(self.bytes.as_slice()).read_to_end(&mut out)?;
        Ok(out)
    }
}

/// The artifacts of every job, and the object-storage keys handed out by direct downloads.
/// Lives in the fake's [`State`](super::state::State), behind its mutex.
#[derive(Default)]
pub(crate) struct ArtifactStore {
    by_job: BTreeMap<i64, Vec<StoredArtifact>>,
    /// Object key → job id whose archive it serves.
    objects: HashMap<String, i64>,
}

impl ArtifactStore {
    /// The artifacts of `job`, in upload order.
    pub(crate) fn of_job(&self, job: i64) -> Vec<StoredArtifact> {
        self.by_job.get(&job).cloned().unwrap_or_default()
    }

    /// Stores `artifact` for `job` (test set-up of a dependency that never ran).
    pub(crate) fn put(&mut self, job: i64, artifact: StoredArtifact) {
        self.by_job.entry(job).or_default().push(artifact);
    }

    fn archive_of(&self, job: i64) -> Option<&StoredArtifact> {
        self.by_job
            .get(&job)?
            .iter()
            .find(|a| a.artifact_type == "archive")
    }
}

/// The token of a request: `JOB-TOKEN` header, else the `token` parameter.
fn request_token(headers: &HeaderMap, query: &HashMap<String, String>) -> Option<String> {
    headers
        .get("job-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| query.get("token").cloned())
}

/// 403 with `Job-Status`, as `job_forbidden!(job, 'Job is not processing on runner')` answers.
fn not_running(state: JobState) -> Response {
    let mut resp = message(
        StatusCode::FORBIDDEN,
        "403 Forbidden - Job is not processing on runner",
    );
    let (name, value) = job_status(state.gitlab_status());
    resp.headers_mut().insert(name, value);
    resp
}

/// Checks type and format as Rails does; the values to store.
fn check_type_and_format(
    query: &HashMap<String, String>,
) -> Result<(String, String), Box<Response>> {
    let artifact_type = query
        .get("artifact_type")
        .filter(|t| !t.is_empty())
        .cloned()
        .unwrap_or_else(|| "archive".into());
    let format = query
        .get("artifact_format")
        .filter(|f| !f.is_empty())
        .cloned()
        .unwrap_or_else(|| "zip".into());
    let Some((_, expected)) = TYPE_FORMATS.iter().find(|(t, _)| *t == artifact_type) else {
        return Err(Box::new(grape_error(
            "artifact_type does not have a valid value",
        )));
    };
    if !matches!(format.as_str(), "zip" | "gzip" | "raw") {
        return Err(Box::new(grape_error(
            "artifact_format does not have a valid value",
        )));
    }
    if format != *expected {
        return Err(Box::new(message(
            StatusCode::BAD_REQUEST,
            &format!("400 Bad request - {artifact_type} artifacts must be in the {expected} format, not {format}"),
        )));
    }
    Ok((artifact_type, format))
}

/// `POST /api/v4/jobs/:id/artifacts?artifact_type=&artifact_format=&expire_in=`.
pub(crate) async fn upload(
    State(app): State<Arc<Shared>>,
    Path(id): Path<i64>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let fault = app.state.lock().faults.upload_artifacts();
    match fault {
        Some(UploadFault::Status(status)) => return injected(status),
        Some(UploadFault::Redirect) => {
            // As a GitLab moved behind another URL would: 307 to the same path, full URL.
            let target = format!(
                "{}{}",
                app.url,
                request
                    .uri()
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/")
            );
            return (
                StatusCode::TEMPORARY_REDIRECT,
                [(LOCATION, header_value(&target))],
            )
                .into_response();
        }
        None => {}
    }
    let token = request_token(&headers, &query);
    {
        let st = app.state.lock();
        let Some(entry) = st.jobs.get(&id) else {
            return forbidden();
        };
        if token.as_deref() != Some(entry.record.token.as_str()) {
            return forbidden();
        }
        if !entry.record.state.processing_on_runner() {
            return not_running(entry.record.state);
        }
    }
    let (artifact_type, artifact_format) = match check_type_and_format(&query) {
        Ok(pair) => pair,
        Err(resp) => return *resp,
    };
    let (filename, bytes) = match read_file_part(request).await {
        Ok(part) => part,
        Err(resp) => return *resp,
    };
    if bytes.len() as u64 > app.opts.max_artifacts_bytes {
        return message(
            StatusCode::PAYLOAD_TOO_LARGE,
            "413 Request Entity Too Large - file size has reached maximum size limit",
        );
    }
    if artifact_type == "archive" && zip::ZipArchive::new(std::io::Cursor::new(&bytes)).is_err() {
        return message(
            StatusCode::BAD_REQUEST,
            "400 Bad request - the archive is not a valid zip file",
        );
    }
    let mut st = app.state.lock();
    if st
        .artifacts
        .of_job(id)
        .iter()
        .any(|a| a.artifact_type == artifact_type)
    {
        return message(
            StatusCode::BAD_REQUEST,
            "400 Bad request - another artifact of the same type already exists",
        );
    }
    st.artifacts.put(
        id,
        StoredArtifact {
            artifact_type,
            artifact_format,
            expire_in: query.get("expire_in").filter(|e| !e.is_empty()).cloned(),
            filename,
            bytes,
        },
    );
    drop(st);
    app.changed.notify_waiters();
    (StatusCode::CREATED, "201").into_response()
}

/// The `file` part of a multipart body: its file name and bytes. Other parts are ignored, as
/// Workhorse passes only `file` (and `metadata`, which a runner never sends) on to Rails.
async fn read_file_part(request: Request) -> Result<(String, Vec<u8>), Box<Response>> {
    let bad = |msg: &str| Box::new(message(StatusCode::BAD_REQUEST, msg));
    let mut multipart = axum::extract::Multipart::from_request(request, &())
        .await
        .map_err(|e| bad(&format!("400 Bad request - not a multipart body: {e}")))?;
    loop {
        let field = multipart
            .next_field()
            .await
            .map_err(|e| bad(&format!("400 Bad request - broken multipart body: {e}")))?;
        let Some(field) = field else {
            return Err(Box::new(grape_error("file is missing")));
        };
        if field.name() != Some("file") {
            continue;
        }
        let filename = field.file_name().unwrap_or("").to_owned();
        let bytes = field
            .bytes()
            .await
            .map_err(|e| bad(&format!("400 Bad request - broken multipart body: {e}")))?;
        if filename.is_empty() {
            return Err(Box::new(grape_error("file is invalid")));
        }
        return Ok((filename, bytes.to_vec()));
    }
}

/// `GET /api/v4/jobs/:id/artifacts?direct_download=`.
pub(crate) async fn download(
    State(app): State<Arc<Shared>>,
    Path(id): Path<i64>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut st = app.state.lock();
    if let Some(status) = st.faults.download_artifacts() {
        return injected(status);
    }
    let token = request_token(&headers, &query);
    let authenticated = token.as_deref().and_then(|t| {
        st.jobs
            .values()
            .find(|e| e.record.token == t && e.record.state.processing_on_runner())
    });
    if authenticated.is_none() {
        return message(StatusCode::UNAUTHORIZED, "401 Unauthorized");
    }
    if !st.jobs.contains_key(&id) {
        return forbidden();
    }
    let Some(archive) = st.artifacts.archive_of(id) else {
        return message(StatusCode::NOT_FOUND, "404 Not Found");
    };
    let direct = query.get("direct_download").is_some_and(|v| v == "true");
    if direct {
        let key = Alphanumeric.sample_string(&mut rand::rng(), 32);
        st.artifacts.objects.insert(key.clone(), id);
        let location = format!("{}/objects/{key}?X-Goog-Signature=fake", app.objstore_url);
        return (StatusCode::FOUND, [(LOCATION, header_value(&location))]).into_response();
    }
    let response = file_response(&archive.filename, archive.bytes.clone());
    drop(st);
    response
}

/// 200 with the file as an attachment.
fn file_response(filename: &str, bytes: Vec<u8>) -> Response {
    let disposition = format!("attachment; filename=\"{filename}\"");
    (
        StatusCode::OK,
        [
            (
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (
                axum::http::header::CONTENT_DISPOSITION,
                header_value(&disposition),
            ),
        ],
        Body::from(bytes),
    )
        .into_response()
}

/// `GET /objects/:key` on the object-storage port: the bytes of the archive the key was handed
/// out for. A request carrying `JOB-TOKEN` is refused with an XML error, as a storage service
/// refuses what it does not expect: a GitLab token must never travel to another host.
async fn object(
    State(app): State<Arc<Shared>>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Response {
    let xml = |status: StatusCode, code: &str, msg: &str| {
        (
            status,
            [(CONTENT_TYPE, HeaderValue::from_static("application/xml"))],
            format!("<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{msg}</Message></Error>"),
        )
            .into_response()
    };
    if headers.contains_key("job-token") {
        return xml(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            "A GitLab JOB-TOKEN header reached the object storage.",
        );
    }
    let st = app.state.lock();
    let Some(archive) = st
        .artifacts
        .objects
        .get(&key)
        .and_then(|job| st.artifacts.archive_of(*job))
    else {
        return xml(
            StatusCode::NOT_FOUND,
            "NoSuchKey",
            "The specified key does not exist.",
        );
    };
    file_response(&archive.filename, archive.bytes.clone())
}

/// The object storage's router (served on its own port, see [`super::FakeGitlab::start_with`]).
pub(crate) fn object_store_router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/objects/{key}", get(object))
        .with_state(shared)
}
