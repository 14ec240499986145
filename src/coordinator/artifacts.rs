//! Job artifacts on the coordinator (GitLab Runner's `UploadRawArtifacts` / `DownloadArtifacts`
//! in `network/gitlab.go`): `POST jobs/:id/artifacts` with the archive streamed from a file as
//! the multipart part `file`, and `GET jobs/:id/artifacts` into a file, following the redirect
//! to object storage. Used by the `flotilla helper artifacts-*` commands inside a job's helper
//! container; knows nothing of archives.
//!
//! Redirects are handled here, not by reqwest: an upload answered 307/308 is sent again, whole,
//! to the new location's origin (GitLab Runner switches its base URL the same way); a download
//! follows 301/302/303/307/308 and sends `JOB-TOKEN` only to the coordinator's own origin, never
//! to object storage. Retries use the client's policy (`is_retryable`, server waits, backoff).
//! Error messages carry URLs without their query (a signed URL's signature stays out).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt as _;
use reqwest::header::LOCATION;
use reqwest::multipart::{Form, Part};
use reqwest::{Response, Url};
use tokio::io::AsyncWriteExt as _;

use super::client::{
    api_base, endpoint_url, is_retryable, retry_backoff, retry_wait, JobCredentials, MAX_ATTEMPTS,
    RESPONSE_TIMEOUT,
};
use super::error::CoordinatorError;
use super::info::user_agent;

/// Most redirects followed for one request.
const MAX_REDIRECTS: u32 = 5;

/// What went wrong with an artifacts transfer. Messages never hold a token or a query string.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactsError {
    /// The coordinator URL cannot be used.
    #[error(transparent)]
    Url(#[from] CoordinatorError),
    /// The HTTP client could not be built.
    #[error("cannot build the artifacts HTTP client: {0}")]
    Build(#[source] reqwest::Error),
    /// A local file could not be read or written.
    #[error("{action} {path}: {source}")]
    File {
        /// What was being done (`reading`, `writing`).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The request did not complete (connection, TLS, timeout, broken body), after retries.
    #[error("{method} {url}: {source}")]
    Transport {
        /// HTTP method.
        method: &'static str,
        /// Request URL without its query.
        url: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// 413: the coordinator refuses an archive this large.
    #[error(
        "POST {url}: 413 Request Entity Too Large: the artifacts are too large for the \
         coordinator (reduce what `artifacts:paths` collects, or raise GitLab's maximum \
         artifacts size)"
    )]
    TooLarge {
        /// Request URL without its query.
        url: String,
    },
    /// 403: the token was refused, or the job is no longer running.
    #[error("{method} {url}: 403 Forbidden: the job token was refused (is the job still running?){detail}")]
    Forbidden {
        /// HTTP method.
        method: &'static str,
        /// Request URL without its query.
        url: String,
        /// What the server said, if it said something short (`: <message>`), else empty.
        detail: String,
    },
    /// 401: the token is not the token of a running job.
    #[error("{method} {url}: 401 Unauthorized: the token is not a running job's token")]
    Unauthorized {
        /// HTTP method.
        method: &'static str,
        /// Request URL without its query.
        url: String,
    },
    /// 404: the job or its artifacts do not exist (expired, or never uploaded).
    #[error(
        "GET {url}: 404 Not Found: the job has no artifacts (expired, erased or never uploaded)"
    )]
    NotFound {
        /// Request URL without its query.
        url: String,
    },
    /// A redirect without a usable `Location`, or too many of them.
    #[error("{method} {url}: {reason}")]
    Redirect {
        /// HTTP method.
        method: &'static str,
        /// Request URL without its query.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// Any other status, after retries.
    #[error("{method} {url}: unexpected status {status}")]
    Status {
        /// HTTP method.
        method: &'static str,
        /// Request URL without its query.
        url: String,
        /// The status received.
        status: u16,
    },
}

/// One upload: the file to send and how GitLab should file it.
#[derive(Debug, Clone)]
pub struct ArtifactUpload {
    /// The archive (or raw file) to stream.
    pub file: PathBuf,
    /// The multipart file name (`artifacts.zip`, `junit.gz`, …).
    pub filename: String,
    /// `artifact_type`, sent only when set.
    pub artifact_type: Option<String>,
    /// `artifact_format`, sent only when set.
    pub artifact_format: Option<String>,
    /// `expire_in`, sent only when set.
    pub expire_in: Option<String>,
}

/// The artifacts client of one coordinator. Made by the helper command for one transfer.
#[derive(Debug, Clone)]
pub struct ArtifactsClient {
    http: reqwest::Client,
    base: Url,
    /// Waits between attempts (GitLab Runner's backoff; tests shorten it).
    min_wait: Option<Duration>,
}

impl ArtifactsClient {
    /// A client for the coordinator at `url` (as configured: `https://gitlab.example.com/`).
    pub fn new(url: &str) -> Result<ArtifactsClient, ArtifactsError> {
        ArtifactsClient::with_tls(url, &crate::config::TlsFiles::default())
    }

    /// The same, trusting `tls`' CA and presenting its client pair (GitLab Runner's helper
    /// `--tls-ca-file`, `--tls-cert-file`, `--tls-key-file`).
    pub fn with_tls(
        url: &str,
        tls: &crate::config::TlsFiles,
    ) -> Result<ArtifactsClient, ArtifactsError> {
        let builder = reqwest::Client::builder()
            .user_agent(user_agent())
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(RESPONSE_TIMEOUT)
            .tcp_keepalive(Duration::from_secs(30))
            .min_tls_version(reqwest::tls::Version::TLS_1_2);
        let http = super::tls::with_files(builder, tls)?
            .build()
            .map_err(ArtifactsError::Build)?;
        Ok(ArtifactsClient {
            http,
            base: api_base(url)?,
            min_wait: None,
        })
    }

    /// Caps every wait between attempts at `wait` (tests).
    pub fn with_max_wait(mut self, wait: Duration) -> ArtifactsClient {
        self.min_wait = Some(wait);
        self
    }

    fn wait_for(
        &self,
        response: Option<&Response>,
        backoff: &mut impl Iterator<Item = Duration>,
    ) -> Duration {
        let wait = match response {
            Some(r) => retry_wait(r.headers(), SystemTime::now(), backoff),
            None => backoff.next().unwrap_or(Duration::from_secs(1)),
        };
        match self.min_wait {
            Some(cap) => wait.min(cap),
            None => wait,
        }
    }

    /// Uploads `upload.file` as job `job`'s artifacts. Succeeds on 201; 413, 403 and 401 fail at
    /// once; 307/308 send the whole body again to the new origin; retryable statuses and
    /// transport errors are retried up to [`MAX_ATTEMPTS`] attempts.
    pub async fn upload(
        &self,
        job: &JobCredentials,
        upload: &ArtifactUpload,
    ) -> Result<(), ArtifactsError> {
        let mut base = self.base.clone();
        let mut backoff = retry_backoff();
        let mut attempt = 1;
        let mut redirects = 0;
        loop {
            let url = upload_url(&base, job.id, upload)?;
            let shown = without_query(&url);
            let body = file_body(&upload.file).await?;
            let part = Part::stream(body)
                .file_name(upload.filename.clone())
                .mime_str("application/octet-stream")
                .map_err(ArtifactsError::Build)?;
            let sent = self
                .http
                .post(url.clone())
                .header("JOB-TOKEN", &job.token)
                .header("X-Request-Id", request_id())
                .multipart(Form::new().part("file", part))
                .send()
                .await
                .map_err(reqwest::Error::without_url);
            let response = match sent {
                Ok(r) => r,
                Err(source) if attempt < MAX_ATTEMPTS => {
                    tracing::info!(url = %shown, attempt, error = %source, "artifacts upload failed; retrying");
                    tokio::time::sleep(self.wait_for(None, &mut backoff)).await;
                    attempt += 1;
                    continue;
                }
                Err(source) => {
                    return Err(ArtifactsError::Transport {
                        method: "POST",
                        url: shown,
                        source,
                    })
                }
            };
            let status = response.status();
            match status.as_u16() {
                201 => return Ok(()),
                307 | 308 => {
                    redirects += 1;
                    base = redirected_base(&url, &response, redirects, "POST")?;
                    tracing::warn!(new_base = %without_query(&base), "artifacts upload redirected");
                }
                413 => return Err(ArtifactsError::TooLarge { url: shown }),
                403 => {
                    let detail = short_message(response).await;
                    return Err(ArtifactsError::Forbidden {
                        method: "POST",
                        url: shown,
                        detail,
                    });
                }
                401 => {
                    return Err(ArtifactsError::Unauthorized {
                        method: "POST",
                        url: shown,
                    })
                }
                code if is_retryable(code) && attempt < MAX_ATTEMPTS => {
                    let wait = self.wait_for(Some(&response), &mut backoff);
                    tracing::info!(url = %shown, status = code, attempt, "artifacts upload answered a retryable status; retrying");
                    let _ = response.bytes().await;
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                code => {
                    return Err(ArtifactsError::Status {
                        method: "POST",
                        url: shown,
                        status: code,
                    })
                }
            }
        }
    }

    /// Downloads job `job`'s artifacts archive into `dest` (created or truncated); the bytes
    /// written. With `direct`, the first attempt asks for `direct_download=true` (a redirect to
    /// object storage), as GitLab Runner does; retries ask GitLab to proxy. `JOB-TOKEN` goes only
    /// to the coordinator's origin.
    pub async fn download(
        &self,
        job: &JobCredentials,
        direct: bool,
        dest: &Path,
    ) -> Result<u64, ArtifactsError> {
        let mut backoff = retry_backoff();
        let mut attempt = 1;
        loop {
            let mut url = endpoint_url(&self.base, &format!("jobs/{}/artifacts", job.id))?;
            if direct && attempt == 1 {
                url.query_pairs_mut().append_pair("direct_download", "true");
            }
            match self.download_once(job, url, dest).await {
                Ok(size) => return Ok(size),
                Err(Failure::Retry(response, error)) if attempt < MAX_ATTEMPTS => {
                    let wait = self.wait_for(response.as_ref(), &mut backoff);
                    tracing::info!(attempt, error = %error, "artifacts download failed; retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(Failure::Retry(_, error) | Failure::Final(error)) => return Err(error),
            }
        }
    }

    /// One download attempt, following redirects.
    async fn download_once(
        &self,
        job: &JobCredentials,
        mut url: Url,
        dest: &Path,
    ) -> Result<u64, Failure> {
        let origin = self.base.origin();
        let mut redirects = 0;
        loop {
            let shown = without_query(&url);
            let mut request = self.http.get(url.clone());
            if url.origin() == origin {
                request = request
                    .header("JOB-TOKEN", &job.token)
                    .header("X-Request-Id", request_id());
            }
            let response = match request.send().await.map_err(reqwest::Error::without_url) {
                Ok(r) => r,
                Err(source) => {
                    return Err(Failure::Retry(
                        None,
                        ArtifactsError::Transport {
                            method: "GET",
                            url: shown,
                            source,
                        },
                    ))
                }
            };
            match response.status().as_u16() {
                200 => return write_body(response, dest, &shown).await,
                301 | 302 | 303 | 307 | 308 => {
                    redirects += 1;
                    url = location(&url, &response, redirects, "GET").map_err(Failure::Final)?;
                }
                401 => {
                    return Err(Failure::Final(ArtifactsError::Unauthorized {
                        method: "GET",
                        url: shown,
                    }))
                }
                403 => {
                    let detail = short_message(response).await;
                    return Err(Failure::Final(ArtifactsError::Forbidden {
                        method: "GET",
                        url: shown,
                        detail,
                    }));
                }
                404 => return Err(Failure::Final(ArtifactsError::NotFound { url: shown })),
                code => {
                    let error = ArtifactsError::Status {
                        method: "GET",
                        url: shown,
                        status: code,
                    };
                    // GitLab Runner retries any failed download; it is harmless for a GET.
                    return Err(if is_retryable(code) || code >= 500 {
                        Failure::Retry(Some(response), error)
                    } else {
                        Failure::Final(error)
                    });
                }
            }
        }
    }
}

/// How one download attempt failed.
enum Failure {
    /// Worth another attempt (the response, when there was one, may name a wait).
    Retry(Option<Response>, ArtifactsError),
    /// Not worth retrying.
    Final(ArtifactsError),
}

/// Streams `response`'s body into `dest`; the bytes written. A body broken midway is retried.
async fn write_body(response: Response, dest: &Path, shown: &str) -> Result<u64, Failure> {
    let file_error = |source| {
        Failure::Final(ArtifactsError::File {
            action: "writing",
            path: dest.to_path_buf(),
            source,
        })
    };
    let mut file = tokio::fs::File::create(dest).await.map_err(file_error)?;
    let mut written = 0u64;
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|source| {
            Failure::Retry(
                None,
                ArtifactsError::Transport {
                    method: "GET",
                    url: shown.to_string(),
                    source: source.without_url(),
                },
            )
        })?;
        file.write_all(&chunk).await.map_err(file_error)?;
        written += chunk.len() as u64;
    }
    file.flush().await.map_err(file_error)?;
    Ok(written)
}

/// The upload URL under `base`, with the query parameters that are set.
fn upload_url(base: &Url, id: i64, upload: &ArtifactUpload) -> Result<Url, ArtifactsError> {
    let mut url = endpoint_url(base, &format!("jobs/{id}/artifacts"))?;
    let params = [
        ("expire_in", &upload.expire_in),
        ("artifact_format", &upload.artifact_format),
        ("artifact_type", &upload.artifact_type),
    ];
    for (name, value) in params {
        if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
            url.query_pairs_mut().append_pair(name, value);
        }
    }
    Ok(url)
}

/// A body streaming `path` from disk (chunked, as GitLab Runner sends it).
async fn file_body(path: &Path) -> Result<reqwest::Body, ArtifactsError> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|source| ArtifactsError::File {
            action: "reading",
            path: path.to_path_buf(),
            source,
        })?;
    Ok(reqwest::Body::wrap_stream(
        tokio_util::io::ReaderStream::new(file),
    ))
}

/// The `Location` of a redirect, resolved against `url`.
fn location(
    url: &Url,
    response: &Response,
    redirects: u32,
    method: &'static str,
) -> Result<Url, ArtifactsError> {
    let error = |reason: String| ArtifactsError::Redirect {
        method,
        url: without_query(url),
        reason,
    };
    if redirects > MAX_REDIRECTS {
        return Err(error(format!("more than {MAX_REDIRECTS} redirects")));
    }
    let value = response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| error(format!("{} without a Location", response.status().as_u16())))?;
    let next = url
        .join(value)
        .map_err(|e| error(format!("unusable Location: {e}")))?;
    if !matches!(next.scheme(), "http" | "https") {
        return Err(error("the Location is not an http(s) URL".into()));
    }
    Ok(next)
}

/// The API base after an upload redirect: the Location's scheme and host (path and query
/// dropped, as GitLab Runner's `handleRedirect`), under `/api/v4/`.
fn redirected_base(
    url: &Url,
    response: &Response,
    redirects: u32,
    method: &'static str,
) -> Result<Url, ArtifactsError> {
    let next = location(url, response, redirects, method)?;
    Ok(api_base(&next.origin().ascii_serialization())?)
}

/// `url` without its query and fragment, for messages and logs.
fn without_query(url: &Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

/// A correlation id, as GitLab Runner sends with each request.
fn request_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// `: <message>` of a short JSON (`{"message": …}`) or storage XML (`<Message>…</Message>`)
/// error body, else empty.
async fn short_message(response: Response) -> String {
    let Ok(body) = response.bytes().await else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&body[..body.len().min(2048)]).into_owned();
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| {
            v.get("message")
                .map(|m| m.to_string().trim_matches('"').to_string())
        })
        .or_else(|| {
            let start = text.find("<Message>")? + "<Message>".len();
            let end = text[start..].find("</Message>")? + start;
            Some(text[start..end].to_string())
        });
    match message {
        Some(m) if !m.is_empty() && m.len() < 300 => format!(": {m}"),
        _ => String::new(),
    }
}
