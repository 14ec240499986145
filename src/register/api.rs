//! GitLab's runner-management calls, as GitLab Runner's `network/gitlab.go` makes them:
//! `POST runners` (legacy registration), `POST runners/verify`, `DELETE runners`,
//! `DELETE runners/managers` and `POST runners/reset_authentication_token`. Every call sends a
//! JSON body with `Content-Type: application/json` (the DELETEs too) and the token only in that
//! body, never in the URL. Owns the wire format of these calls; knows nothing of config files.

use crate::config::Secret;
use crate::coordinator::{api_base, user_agent, VersionInfo};
use crate::job::FeaturesInfo;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Why a runner-management call failed. Messages name the URL and status, never a token.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The URL is not a GitLab URL Flotilla can use.
    #[error("invalid GitLab URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP client cannot be built.
    #[error("cannot build the HTTP client: {0}")]
    Build(reqwest::Error),
    /// A TLS file (`--tls-ca-file`, …) cannot be used: its key and path, never its content.
    #[error("{0}")]
    Tls(String),
    /// No answer (connection refused, TLS, timeout).
    #[error("{call} to {url} failed: {reason}")]
    Transport {
        /// The call (`POST runners/verify`).
        call: &'static str,
        /// The API URL.
        url: String,
        /// The transport error (its URL stripped).
        reason: String,
    },
    /// 403: the token is not valid (or the runner was deleted).
    #[error("{call} to {url}: 403 Forbidden{}: check the token", detail(.message))]
    Forbidden {
        /// The call.
        call: &'static str,
        /// The API URL.
        url: String,
        /// GitLab's `message`, if any.
        message: String,
    },
    /// 410: runner registration with a registration token is disallowed on this instance.
    #[error("{call} to {url}: 410 Gone{}: create the runner in GitLab and register it with its authentication token (--token glrt-…)", detail(.message))]
    Gone {
        /// The call.
        call: &'static str,
        /// The API URL.
        url: String,
        /// GitLab's `message`, if any.
        message: String,
    },
    /// Any other status.
    #[error("{call} to {url}: unexpected status {status}{}", detail(.message))]
    Status {
        /// The call.
        call: &'static str,
        /// The API URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// GitLab's `message` or `error`, if any.
        message: String,
    },
    /// A 2xx whose body is not what GitLab sends.
    #[error("{call} to {url}: unexpected answer: {reason}")]
    Decode {
        /// The call.
        call: &'static str,
        /// The API URL.
        url: String,
        /// What was wrong.
        reason: String,
    },
}

fn detail(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(" ({message})")
    }
}

impl ApiError {
    /// Whether GitLab answered 403 (the token is not valid, or the runner is gone).
    pub fn is_forbidden(&self) -> bool {
        matches!(self, ApiError::Forbidden { .. })
    }
}

/// What GitLab gives back for a runner (`POST runners`, `runners/verify`): its id and token.
#[derive(Clone, PartialEq, Eq)]
pub struct RunnerCredentials {
    /// GitLab's runner id (0 if not sent).
    pub id: i64,
    /// The authentication token.
    pub token: Secret,
    /// When the token expires (`None`: never).
    pub token_expires_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for RunnerCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunnerCredentials")
            .field("id", &self.id)
            .field("token", &self.token)
            .field("token_expires_at", &self.token_expires_at)
            .finish()
    }
}

/// The server-side settings of a runner registered with a registration token (GitLab Runner's
/// `RegisterRunnerParameters`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegisterParameters {
    /// `description`: the runner's name.
    pub description: String,
    /// `maintenance_note`.
    pub maintenance_note: String,
    /// `tag_list`: tags, sent comma-separated.
    pub tag_list: Vec<String>,
    /// `run_untagged`.
    pub run_untagged: bool,
    /// `locked`.
    pub locked: bool,
    /// `access_level` (`not_protected`, `ref_protected`; empty: GitLab's default).
    pub access_level: String,
    /// `maximum_timeout` in seconds (0: none).
    pub maximum_timeout: i64,
    /// `paused`.
    pub paused: bool,
}

#[derive(Serialize)]
struct RegisterBody<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    description: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    maintenance_note: &'a str,
    #[serde(skip_serializing_if = "String::is_empty")]
    tag_list: String,
    run_untagged: bool,
    locked: bool,
    #[serde(skip_serializing_if = "str::is_empty")]
    access_level: &'a str,
    #[serde(skip_serializing_if = "is_zero")]
    maximum_timeout: i64,
    paused: bool,
    info: &'a VersionInfo,
    token: &'a str,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

#[derive(Serialize)]
struct TokenBody<'a> {
    token: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    info: Option<&'a VersionInfo>,
}

#[derive(Deserialize)]
struct CredentialsBody {
    #[serde(default)]
    id: i64,
    token: String,
    #[serde(default)]
    token_expires_at: Option<String>,
}

/// GitLab's error body: `{"message": …}` (a string or an object) or `{"error": …}`.
#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    message: Option<serde_json::Value>,
    #[serde(default)]
    error: Option<String>,
}

/// Time allowed for one call.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A client for the runner-management calls of one GitLab instance. Made per command, or per
/// rotation by the manager; cheap.
pub struct RunnersApi {
    http: reqwest::Client,
    base: reqwest::Url,
    info: VersionInfo,
}

impl RunnersApi {
    /// A client for the GitLab at `url` (trailing `/` trimmed); `executor` goes in `info`;
    /// `tls` are the runner's `tls-ca-file` / `tls-cert-file` / `tls-key-file`.
    pub fn new(
        url: &str,
        executor: &str,
        tls: &crate::config::TlsFiles,
    ) -> Result<RunnersApi, ApiError> {
        let base = api_base(url).map_err(|e| ApiError::InvalidUrl {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        let http = reqwest::Client::builder()
            .user_agent(user_agent())
            .connect_timeout(Duration::from_secs(30))
            .timeout(CALL_TIMEOUT)
            .min_tls_version(reqwest::tls::Version::TLS_1_2);
        let http = crate::coordinator::with_tls_files(http, tls)
            .map_err(|e| ApiError::Tls(e.to_string()))?
            .build()
            .map_err(ApiError::Build)?;
        Ok(RunnersApi {
            http,
            base,
            info: VersionInfo::new(executor, FeaturesInfo::implemented()),
        })
    }

    /// `POST runners`: registers a runner with a (legacy) registration token.
    pub async fn register(
        &self,
        registration_token: &Secret,
        params: &RegisterParameters,
    ) -> Result<RunnerCredentials, ApiError> {
        let body = RegisterBody {
            description: &params.description,
            maintenance_note: &params.maintenance_note,
            tag_list: params.tag_list.join(","),
            run_untagged: params.run_untagged,
            locked: params.locked,
            access_level: &params.access_level,
            maximum_timeout: params.maximum_timeout,
            paused: params.paused,
            info: &self.info,
            token: registration_token.expose(),
        };
        let text = self
            .call(reqwest::Method::POST, "runners", "POST runners", &body, 201)
            .await?;
        self.credentials("POST runners", &text)
    }

    /// `POST runners/verify`: checks an authentication token and gets the runner's id and
    /// expiry. A 403 means the token is not valid (or the runner was deleted).
    pub async fn verify(
        &self,
        token: &Secret,
        system_id: &str,
    ) -> Result<RunnerCredentials, ApiError> {
        let body = TokenBody {
            token: token.expose(),
            system_id: Some(system_id),
            info: Some(&self.info),
        };
        let call = "POST runners/verify";
        let text = self
            .call(reqwest::Method::POST, "runners/verify", call, &body, 200)
            .await?;
        // Servers before GitLab 15.x answer a plain `200`: the token is valid, nothing more.
        if serde_json::from_str::<serde_json::Value>(&text).is_ok_and(|v| !v.is_object()) {
            return Ok(RunnerCredentials {
                id: 0,
                token: token.clone(),
                token_expires_at: None,
            });
        }
        self.credentials(call, &text)
    }

    /// `DELETE runners`: deletes a runner registered with a registration token (any token but
    /// `glrt-`).
    pub async fn unregister_runner(&self, token: &Secret) -> Result<(), ApiError> {
        let body = TokenBody {
            token: token.expose(),
            system_id: None,
            info: None,
        };
        self.call(
            reqwest::Method::DELETE,
            "runners",
            "DELETE runners",
            &body,
            204,
        )
        .await
        .map(drop)
    }

    /// `DELETE runners/managers`: deletes this host's runner manager of a runner created in
    /// GitLab (`glrt-` tokens); the runner itself stays in GitLab.
    pub async fn unregister_manager(
        &self,
        token: &Secret,
        system_id: &str,
    ) -> Result<(), ApiError> {
        let body = TokenBody {
            token: token.expose(),
            system_id: Some(system_id),
            info: None,
        };
        let call = "DELETE runners/managers";
        self.call(
            reqwest::Method::DELETE,
            "runners/managers",
            call,
            &body,
            204,
        )
        .await
        .map(drop)
    }

    /// `POST runners/reset_authentication_token`: a new token for the runner; the old one stops
    /// working at once.
    pub async fn reset_token(&self, token: &Secret) -> Result<RunnerCredentials, ApiError> {
        let body = TokenBody {
            token: token.expose(),
            system_id: None,
            info: None,
        };
        let call = "POST runners/reset_authentication_token";
        let path = "runners/reset_authentication_token";
        let text = self
            .call(reqwest::Method::POST, path, call, &body, 201)
            .await?;
        self.credentials(call, &text)
    }

    /// Sends one call and returns the body of an answer with status `expected` (or any 2xx).
    async fn call<B: Serialize>(
        &self,
        method: reqwest::Method,
        path: &str,
        call: &'static str,
        body: &B,
        expected: u16,
    ) -> Result<String, ApiError> {
        let url = self.base.join(path).map_err(|e| ApiError::InvalidUrl {
            url: self.base.to_string(),
            reason: e.to_string(),
        })?;
        let shown = url.to_string();
        let response = self
            .http
            .request(method, url)
            .json(body)
            .send()
            .await
            .map_err(|e| ApiError::Transport {
                call,
                url: shown.clone(),
                reason: e.without_url().to_string(),
            })?;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        if status == expected || (200..300).contains(&status) {
            return Ok(text);
        }
        let message = error_message(&text);
        Err(match status {
            403 => ApiError::Forbidden {
                call,
                url: shown,
                message,
            },
            410 => ApiError::Gone {
                call,
                url: shown,
                message,
            },
            status => ApiError::Status {
                call,
                url: shown,
                status,
                message,
            },
        })
    }

    fn credentials(&self, call: &'static str, text: &str) -> Result<RunnerCredentials, ApiError> {
        let decode = |reason: String| ApiError::Decode {
            call,
            url: self.base.to_string(),
            reason,
        };
        let body: CredentialsBody = serde_json::from_str(text)
            .map_err(|e| decode(format!("not the JSON expected: {e}")))?;
        if body.token.is_empty() {
            return Err(decode("no token in the answer".to_string()));
        }
        Ok(RunnerCredentials {
            id: body.id,
            token: Secret(body.token),
            token_expires_at: parse_expiry(body.token_expires_at.as_deref())
                .map_err(|e| decode(format!("token_expires_at: {e}")))?,
        })
    }
}

/// `token_expires_at` as GitLab sends it: RFC 3339, or null/absent/empty/Go's zero time (never).
pub fn parse_expiry(text: Option<&str>) -> Result<Option<DateTime<Utc>>, chrono::ParseError> {
    match text.map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => {
            let t = DateTime::parse_from_rfc3339(text)?.with_timezone(&Utc);
            Ok((t.timestamp() > GO_ZERO_TIME_SECS).then_some(t))
        }
    }
}

/// Go's zero `time.Time` in Unix seconds (year 1).
const GO_ZERO_TIME_SECS: i64 = -62_135_596_800;

/// GitLab's error text from a body (`message` as a string or an object, or `error`), without
/// anything that looks like a token.
fn error_message(text: &str) -> String {
    let body: ErrorBody = serde_json::from_str(text).unwrap_or_default();
    let message = match (body.message, body.error) {
        (Some(serde_json::Value::String(s)), _) => s,
        (Some(other), _) => other.to_string(),
        (None, Some(error)) => error,
        (None, None) => String::new(),
    };
    message
        .split_whitespace()
        .map(|word| {
            if word.starts_with("glrt") || word.starts_with("GR1348941") {
                "[MASKED]"
            } else {
                word
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(200)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_accepts_what_gitlab_sends() {
        assert_eq!(parse_expiry(None).unwrap(), None);
        assert_eq!(parse_expiry(Some("")).unwrap(), None);
        assert_eq!(parse_expiry(Some("0001-01-01T00:00:00Z")).unwrap(), None);
        let t = parse_expiry(Some("2026-03-01T10:00:00.000Z"))
            .unwrap()
            .unwrap();
        assert_eq!(t.to_rfc3339(), "2026-03-01T10:00:00+00:00");
        assert!(parse_expiry(Some("tomorrow")).is_err());
    }

    #[test]
    fn error_messages_are_read_and_tokens_hidden() {
        assert_eq!(
            error_message(r#"{"message":"403 Forbidden - invalid token supplied"}"#),
            "403 Forbidden - invalid token supplied"
        );
        assert_eq!(
            error_message(r#"{"error":"token is missing"}"#),
            "token is missing"
        );
        assert_eq!(
            error_message(r#"{"message":"bad glrt-abc"}"#),
            "bad [MASKED]"
        );
        assert_eq!(error_message("<html>"), "");
    }

    #[test]
    fn debug_hides_the_token() {
        let c = RunnerCredentials {
            id: 1,
            token: Secret("glrt-secret".into()),
            token_expires_at: None,
        };
        assert!(!format!("{c:?}").contains("secret"));
    }
}
