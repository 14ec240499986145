//! The HTTP side of the coordinator client: settings, the shared [`Coordinator`] handle, URL
//! rules, headers common to every call, and GitLab Runner's retry policy
//! (`network/retry_requester.go`). Knows no endpoint's body or meaning; the endpoint files
//! (`request.rs`, `update.rs`, `patch.rs`) build on [`Coordinator::send`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backon::{BackoffBuilder, ExponentialBuilder};
use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder, Response, Url};

use super::error::CoordinatorError;
use super::info::VersionInfo;
use super::metrics::{ApiMetrics, Endpoint, RunnerLabels};
use super::tls::Clients;
use crate::config::{Secret, TlsFiles};
use crate::job::FeaturesInfo;

/// Attempts per request, the first included (`defaultRateLimitRetriesCount`).
pub const MAX_ATTEMPTS: u32 = 5;
/// First backoff delay between attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Largest backoff delay between attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Ceiling on a wait a server asks for (`RateLimit-ResetTime`, `Retry-After`), so that a bogus
/// header cannot park a runner loop for days. GitLab's own limits reset within a minute.
const SERVER_WAIT_MAX: Duration = Duration::from_secs(10 * 60);
pub(crate) use super::tls::RESPONSE_TIMEOUT;

/// What the client needs to know at construction. `Default` gives the docker executor, the
/// features Flotilla implements, a fresh registry and GitLab Runner's intervals.
#[derive(Clone)]
pub struct ClientSettings {
    /// `info.executor` (`docker`).
    pub executor: String,
    /// `info.features`.
    pub features: FeaturesInfo,
    /// Where the request-status counters are registered.
    pub registry: prometheus::Registry,
    /// Default trace update interval until the coordinator sets one (3 s).
    pub trace_interval: Duration,
    /// A keep-alive `PUT state=running` goes out when nothing succeeded for this long (30 s).
    pub keepalive_interval: Duration,
    /// First wait between attempts of a job's final update (1 s, doubling up to 60 min).
    pub final_update_backoff: Duration,
    /// Attempts of a job's final update (`job_status_final_update_retry_limit`, 10).
    pub final_update_attempts: u32,
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings {
            executor: "docker".to_string(),
            features: FeaturesInfo::implemented(),
            registry: prometheus::Registry::new(),
            trace_interval: Duration::from_secs(3),
            keepalive_interval: Duration::from_secs(30),
            final_update_backoff: Duration::from_secs(1),
            final_update_attempts: 10,
        }
    }
}

/// The client. Created once by the manager; cheap to clone (one shared connection pool), used
/// by every runner loop and every job's trace task.
#[derive(Clone)]
pub struct Coordinator {
    pub(crate) inner: Arc<Inner>,
}

/// What clones share.
pub(crate) struct Inner {
    pub(crate) http: Clients,
    pub(crate) info: VersionInfo,
    pub(crate) metrics: ApiMetrics,
    pub(crate) trace_interval: Duration,
    pub(crate) keepalive_interval: Duration,
    pub(crate) final_update_backoff: Duration,
    pub(crate) final_update_attempts: u32,
}

/// One `[[runners]]` entry as the client sees it. `Debug` hides the token (and the short
/// token, a part of it).
#[derive(Clone)]
pub struct RunnerEndpoint {
    /// The coordinator URL as configured (`https://gitlab.example.com/`).
    pub url: String,
    /// The runner authentication token.
    pub token: Secret,
    /// This manager's system id (`s_…`).
    pub system_id: String,
    /// The runner's short token for metric labels: the one it was started with, kept across
    /// token rotations so its series go on (`RunnerConfig::short_token`).
    pub short_token: String,
    /// The runner's `tls-ca-file` / `tls-cert-file` / `tls-key-file` (paths only).
    pub tls: TlsFiles,
}

impl std::fmt::Debug for RunnerEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunnerEndpoint")
            .field("url", &self.url)
            .field("token", &self.token)
            .field("system_id", &self.system_id)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl RunnerEndpoint {
    /// The metric labels of this runner (short token, never the token).
    pub fn labels(&self) -> RunnerLabels {
        RunnerLabels {
            runner: self.short_token.clone(),
            system_id: self.system_id.clone(),
        }
    }
}

/// A job's id and token, as the job endpoints need them. `Debug` hides the token.
#[derive(Clone, PartialEq, Eq)]
pub struct JobCredentials {
    /// The job id.
    pub id: i64,
    /// The job token (secret).
    pub token: String,
}

impl std::fmt::Debug for JobCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobCredentials")
            .field("id", &self.id)
            .field("token", &"[MASKED]")
            .finish()
    }
}

/// Everything a job endpoint call needs: where, for whom, which job.
#[derive(Debug, Clone)]
pub(crate) struct JobTarget {
    pub(crate) base: Url,
    pub(crate) labels: RunnerLabels,
    pub(crate) job: JobCredentials,
    pub(crate) tls: TlsFiles,
}

impl JobTarget {
    /// The target of `job` on `runner`'s coordinator.
    pub(crate) fn new(
        runner: &RunnerEndpoint,
        job: JobCredentials,
    ) -> Result<JobTarget, CoordinatorError> {
        Ok(JobTarget {
            base: api_base(&runner.url)?,
            labels: runner.labels(),
            job,
            tls: runner.tls.clone(),
        })
    }

    /// `jobs/:id` plus `suffix`, under the API base.
    pub(crate) fn job_url(&self, suffix: &str) -> Result<Url, CoordinatorError> {
        endpoint_url(&self.base, &format!("jobs/{}{suffix}", self.job.id))
    }
}

/// One call as [`Coordinator::send`] sees it.
pub(crate) struct Call<'a> {
    pub(crate) endpoint: Endpoint,
    pub(crate) method: Method,
    pub(crate) url: &'a Url,
    pub(crate) labels: &'a RunnerLabels,
    /// Which client: the runner's TLS files.
    pub(crate) tls: &'a TlsFiles,
}

impl Coordinator {
    /// Builds the HTTP client (rustls, TLS ≥ 1.2, GitLab Runner's timeouts; a runner's TLS
    /// files get their own client on first use, `tls.rs`) and registers the
    /// metrics on `settings.registry` (fails if a client was already registered there).
    pub fn new(settings: ClientSettings) -> Result<Coordinator, CoordinatorError> {
        let http = Clients::new()?;
        let metrics = ApiMetrics::register(&settings.registry)?;
        Ok(Coordinator {
            inner: Arc::new(Inner {
                http,
                info: VersionInfo::new(&settings.executor, settings.features),
                metrics,
                trace_interval: settings.trace_interval,
                keepalive_interval: settings.keepalive_interval,
                final_update_backoff: settings.final_update_backoff,
                final_update_attempts: settings.final_update_attempts.max(1),
            }),
        })
    }

    /// Whether the coordinator answered any call yet (with any HTTP status): readiness.
    pub fn has_answered(&self) -> bool {
        self.inner.metrics.has_answered()
    }

    /// Creates the per-runner series that must exist at 0 before the first event, and
    /// publishes the runner's `request_concurrency`.
    pub fn add_runner_metrics(&self, runner: &RunnerEndpoint, request_concurrency: usize) {
        self.inner
            .metrics
            .add_runner(&runner.labels(), request_concurrency);
    }

    /// Sends one call, retrying as GitLab Runner does: statuses 408, 429, 500, 502, 503, 504
    /// and ≥ 512, at most [`MAX_ATTEMPTS`] attempts; the wait is the server's
    /// (`RateLimit-ResetTime`, then `Retry-After`), else exponential backoff with jitter.
    /// `build` adds headers and body to a fresh request per attempt. After the last attempt the
    /// last response is returned whatever its status; a transport error is returned at once.
    pub(crate) async fn send<F>(
        &self,
        call: &Call<'_>,
        build: F,
    ) -> Result<Response, CoordinatorError>
    where
        F: Fn(RequestBuilder) -> RequestBuilder,
    {
        let mut backoff = retry_backoff();
        let mut attempt = 1;
        let http = self.inner.http.get(call.tls)?;
        loop {
            let request = http
                .request(call.method.clone(), call.url.clone())
                .header("X-Request-Id", uuid::Uuid::new_v4().simple().to_string());
            let started = tokio::time::Instant::now();
            let response =
                build(request)
                    .send()
                    .await
                    .map_err(|source| CoordinatorError::Transport {
                        method: method_name(&call.method),
                        url: crate::redact::url(&call.url).into_owned(),
                        source: source.without_url(),
                    })?;
            let status = response.status().as_u16();
            self.inner.metrics.response(
                call.labels,
                call.endpoint,
                call.method.as_str(),
                status,
                started.elapsed(),
            );
            if !is_retryable(status) || attempt >= MAX_ATTEMPTS {
                return Ok(response);
            }
            let wait = retry_wait(response.headers(), SystemTime::now(), &mut backoff);
            tracing::info!(
                method = call.method.as_str(),
                url = %crate::redact::url(&call.url),
                status,
                attempt,
                wait_ms = wait.as_millis() as u64,
                "coordinator asked to retry; waiting before the next attempt"
            );
            // Drain the body so the connection can be reused; its content does not matter.
            let _ = response.bytes().await;
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }
}

/// GitLab Runner's backoff between attempts: exponential from 100 ms to 60 s, factor 2, with
/// jitter, endless (the caller bounds the attempts).
pub(crate) fn retry_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::new()
        .with_min_delay(BACKOFF_MIN)
        .with_max_delay(BACKOFF_MAX)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

/// A `&'static` name for the methods this client uses (for error messages).
fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::GET => "GET",
        _ => "request",
    }
}

/// Whether GitLab Runner retries a response with this status.
pub(crate) fn is_retryable(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504) || status >= 512
}

/// The wait before the next attempt: `RateLimit-ResetTime` if it lies in the future, else a
/// positive `Retry-After`, else the next backoff step. Server waits are capped at 10 minutes.
pub(crate) fn retry_wait(
    headers: &HeaderMap,
    now: SystemTime,
    backoff: &mut impl Iterator<Item = Duration>,
) -> Duration {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let server = header("RateLimit-ResetTime")
        .and_then(|v| reset_time_wait(v, now))
        .or_else(|| header("Retry-After").and_then(retry_after_wait));
    match server {
        Some(wait) => wait.min(SERVER_WAIT_MAX),
        None => backoff.next().unwrap_or(BACKOFF_MAX),
    }
}

/// The time until an RFC 1123 `RateLimit-ResetTime`; `None` when unparsable or not in the future.
pub fn reset_time_wait(value: &str, now: SystemTime) -> Option<Duration> {
    let reset = chrono::DateTime::parse_from_rfc2822(value.trim()).ok()?;
    let reset = SystemTime::from(reset.with_timezone(&chrono::Utc));
    reset.duration_since(now).ok().filter(|d| !d.is_zero())
}

/// A `Retry-After` in integer seconds; `None` when unparsable or not positive.
pub fn retry_after_wait(value: &str) -> Option<Duration> {
    let seconds: i64 = value.trim().parse().ok()?;
    u64::try_from(seconds)
        .ok()
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
}

/// The API base of a coordinator URL: trailing `/` trimmed, a trailing `/ci` stripped,
/// `/api/v4/` appended. Only `http` and `https` are accepted.
pub fn api_base(url: &str) -> Result<Url, CoordinatorError> {
    let invalid = |reason: &str| CoordinatorError::InvalidUrl {
        url: crate::redact::url(url).into_owned(),
        reason: reason.to_string(),
    };
    let trimmed = url.trim().trim_end_matches('/');
    let trimmed = trimmed.strip_suffix("/ci").unwrap_or(trimmed);
    let parsed = Url::parse(&format!("{trimmed}/api/v4/")).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("the URL has no host"));
    }
    Ok(parsed)
}

/// `path` (relative, no leading `/`) under an API base.
pub(crate) fn endpoint_url(base: &Url, path: &str) -> Result<Url, CoordinatorError> {
    base.join(path).map_err(|e| CoordinatorError::InvalidUrl {
        url: format!("{base}{path}"),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn api_base_follows_gitlab_runner() {
        let cases = [
            (
                "https://gitlab.example.com",
                "https://gitlab.example.com/api/v4/",
            ),
            (
                "https://gitlab.example.com/",
                "https://gitlab.example.com/api/v4/",
            ),
            (
                "https://gitlab.example.com/ci",
                "https://gitlab.example.com/api/v4/",
            ),
            (
                "https://gitlab.example.com/ci/",
                "https://gitlab.example.com/api/v4/",
            ),
            (
                "http://127.0.0.1:8080/gitlab//",
                "http://127.0.0.1:8080/gitlab/api/v4/",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(api_base(input).unwrap().as_str(), want, "{input}");
        }
        for bad in [
            "ftp://gitlab.example.com",
            "gitlab.example.com",
            "",
            "unix:/x",
        ] {
            let err = api_base(bad).unwrap_err();
            assert_eq!(err.kind(), "invalid_url", "{bad}");
        }
    }

    #[test]
    fn retry_set_matches_gitlab_runner() {
        for status in [408, 429, 500, 502, 503, 504, 512, 599] {
            assert!(is_retryable(status), "{status}");
        }
        for status in [200, 201, 204, 400, 403, 404, 409, 412, 416, 501, 505, 511] {
            assert!(!is_retryable(status), "{status}");
        }
    }

    #[test]
    fn reset_time_is_an_rfc1123_date_in_the_future() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_470); // 07:27:50 GMT
        assert_eq!(
            reset_time_wait("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(reset_time_wait("Wed, 21 Oct 2015 07:27:00 GMT", now), None);
        assert_eq!(reset_time_wait("in a minute", now), None);
    }

    #[test]
    fn server_waits_win_over_backoff() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_470);
        let mut backoff = [Duration::from_millis(100)].into_iter();
        let mut headers = HeaderMap::new();
        headers.insert("Retry-After", HeaderValue::from_static("7"));
        assert_eq!(
            retry_wait(&headers, now, &mut backoff),
            Duration::from_secs(7)
        );
        headers.insert(
            "RateLimit-ResetTime",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(
            retry_wait(&headers, now, &mut backoff),
            Duration::from_secs(10)
        );
        headers.insert("Retry-After", HeaderValue::from_static("999999"));
        headers.remove("RateLimit-ResetTime");
        assert_eq!(retry_wait(&headers, now, &mut backoff), SERVER_WAIT_MAX);
        // Zero, negative or unparsable server waits fall back to the backoff.
        for value in ["0", "-3", "soon"] {
            headers.insert("Retry-After", HeaderValue::from_static(value));
            let mut backoff = [Duration::from_millis(250)].into_iter();
            assert_eq!(
                retry_wait(&headers, now, &mut backoff),
                Duration::from_millis(250),
                "{value}"
            );
        }
    }

    #[test]
    fn labels_carry_the_kept_short_token_not_the_rotated_one() {
        let rotated = RunnerEndpoint {
            url: "https://gitlab.example.com".into(),
            token: Secret(crate::testing::fake_runner_token()),
            system_id: "s_0123456789ab".into(),
            short_token: "t1_OLDSHORT".into(),
            tls: Default::default(),
        };
        let labels = rotated.labels();
        assert_eq!(labels.runner, "t1_OLDSHORT");
        assert_eq!(labels.system_id, "s_0123456789ab");
    }

    #[test]
    fn debug_hides_tokens() {
        let token = crate::testing::fake_runner_token();
        let short = crate::testing::expected_short_token(&token);
        let runner = RunnerEndpoint {
            url: "https://gitlab.example.com".into(),
            token: Secret(token.clone()),
            system_id: "s_0123456789ab".into(),
            short_token: crate::config::short_token(&token),
            tls: Default::default(),
        };
        let job = JobCredentials {
            id: 7,
            token: "glcbt-JOBSECRET".into(),
        };
        let text = format!("{runner:?} {job:?}");
        assert!(!text.contains("SECRET"), "{text}");
        assert!(
            !text.contains(&short),
            "no part of the runner token: {text}"
        );
        assert!(text.contains("s_0123456789ab") && text.contains('7'));
        assert_eq!(runner.labels().runner, short);
    }
}
