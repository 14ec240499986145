//! GitLab Runner's `gcs` cache adapter: the manager signs V4 URLs (GET, HEAD, PUT) for an
//! object, valid for the job timeout, and hands them to the helper, which holds no credentials.
//!
//! Credentials in GitLab Runner's order (`cache/gcs/credentials_resolver.go`): `CredentialsFile`
//! (a service account key file), `AccessID` + `PrivateKey`, or else the metadata server's
//! service account, whose email comes from the metadata server and whose signatures come from
//! IAM Credentials `signBlob` with the metadata server's access token. Credentials are resolved
//! once per runner (`cache::RunnerCache`; GitLab Runner reads them per job), so a rotated key
//! file is picked up at the next reload.

mod credentials;
pub mod v4;

use std::time::Duration;

use crate::config::GcsCacheConfig;

pub use credentials::SigningKey;

/// Why a URL could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum GcsError {
    /// The key file could not be read or parsed.
    #[error("GCS credentials file {path}: {message}")]
    CredentialsFile {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The private key is not a PEM RSA key.
    #[error("GCS private key: {0}")]
    PrivateKey(String),
    /// The metadata server or IAM Credentials failed.
    #[error("{what}: {message}")]
    Remote {
        /// Which call.
        what: &'static str,
        /// What went wrong (no secrets).
        message: String,
    },
}

/// The content type GitLab Runner's gcs adapter signs for uploads.
pub const UPLOAD_CONTENT_TYPE: &str = "application/octet-stream";

/// Signs URLs for a runner's cache objects in one bucket. Made once per runner
/// (`cache::RunnerCache`), on its first job with a cache.
pub struct GcsSigner {
    config: GcsCacheConfig,
    key: SigningKey,
    http: reqwest::Client,
}

impl GcsSigner {
    /// Resolves the credentials (reads the key file, or asks the metadata server who it is).
    pub async fn new(config: &GcsCacheConfig, http: reqwest::Client) -> Result<Self, GcsError> {
        let key = credentials::resolve(config, &http).await?;
        Ok(GcsSigner {
            config: config.clone(),
            key,
            http,
        })
    }

    /// A signed `GET` URL for `object`.
    pub async fn get_url(&self, object: &str, valid_for: Duration) -> Result<String, GcsError> {
        self.sign("GET", object, &[], valid_for).await
    }

    /// A signed `HEAD` URL for `object`.
    pub async fn head_url(&self, object: &str, valid_for: Duration) -> Result<String, GcsError> {
        self.sign("HEAD", object, &[], valid_for).await
    }

    /// A signed `PUT` URL for `object` and the headers the upload must send (signed too):
    /// `Content-Type: application/octet-stream`, `x-goog-meta-cachekey: <key>`, and GitLab
    /// Runner's `x-goog-content-length-range` when `max_size` is set.
    pub async fn put_url(
        &self,
        object: &str,
        human_key: &str,
        max_size: u64,
        valid_for: Duration,
    ) -> Result<(String, Vec<(String, String)>), GcsError> {
        let mut headers = vec![
            ("Content-Type".to_string(), UPLOAD_CONTENT_TYPE.to_string()),
            ("x-goog-meta-cachekey".to_string(), human_key.to_string()),
        ];
        if max_size > 0 {
            headers.push((
                "x-goog-content-length-range".to_string(),
                format!("0,{max_size}"),
            ));
        }
        let url = self.sign("PUT", object, &headers, valid_for).await?;
        Ok((url, headers))
    }

    async fn sign(
        &self,
        method: &str,
        object: &str,
        headers: &[(String, String)],
        valid_for: Duration,
    ) -> Result<String, GcsError> {
        let prepared = v4::prepare(&v4::Request {
            method,
            endpoint: &self.config.endpoint,
            bucket: &self.config.bucket_name,
            object,
            headers,
            access_id: self.key.access_id(),
            now: chrono::Utc::now(),
            expires_secs: valid_for.as_secs(),
        });
        let signature = self
            .key
            .sign(prepared.string_to_sign.as_bytes(), &self.config, &self.http)
            .await?;
        Ok(prepared.url(&signature))
    }
}
