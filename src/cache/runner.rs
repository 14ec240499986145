//! A runner's cache state that outlives its jobs: its `[runners.cache]` settings, the HTTP client
//! for the metadata server and IAM, and the GCS signer (credentials resolved: a key file read
//! and parsed, or the metadata server's account asked for). Made by the manager once per runner
//! and replaced when a reload changes `[runners.cache]`, so a job pays for neither the client nor
//! the credentials; a rotated key file is picked up by a reload (SIGHUP or the file watch).

use std::sync::Arc;
use std::time::Duration;

use crate::config::{CacheConfig, CacheStorage, GcsCacheConfig};

use super::gcs::{GcsError, GcsSigner};

/// How long one call to the metadata server or IAM may take while planning.
const SIGNING_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// One runner's cache settings and signer. Shared by its jobs (`Arc`); dropped with the
/// runner's settings when a reload replaces them.
pub struct RunnerCache {
    config: CacheConfig,
    /// The GCS signer once credentials resolved; a failure is not kept, so the next job tries
    /// again. Tokio's lock: held across the resolution, so concurrent first jobs resolve once.
    signer: tokio::sync::Mutex<Option<Arc<GcsSigner>>>,
}

impl RunnerCache {
    /// The cache state of a runner with `config`; nothing is resolved until a job needs it.
    pub fn new(config: &CacheConfig) -> Self {
        RunnerCache {
            config: config.clone(),
            signer: tokio::sync::Mutex::new(None),
        }
    }

    /// The runner's `[runners.cache]`.
    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// The GCS signer, resolved on first use and kept.
    pub(super) async fn gcs_signer(
        &self,
        gcs: &GcsCacheConfig,
    ) -> Result<Arc<GcsSigner>, GcsError> {
        let mut held = self.signer.lock().await;
        if let Some(signer) = held.as_ref() {
            return Ok(signer.clone());
        }
        let signer = Arc::new(GcsSigner::new(gcs, signing_client()).await?);
        *held = Some(signer.clone());
        Ok(signer)
    }

    /// Whether GCS credentials were resolved and kept (tests).
    pub async fn has_signer(&self) -> bool {
        self.signer.lock().await.is_some()
    }

    /// Whether `config` is what this state was made for (a reload keeps it then).
    pub fn made_for(&self, config: &CacheConfig) -> bool {
        &self.config == config
    }
}

impl std::fmt::Debug for RunnerCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let storage = match self.config.storage {
            CacheStorage::Local => "local",
            CacheStorage::Gcs(_) => "gcs",
        };
        write!(f, "RunnerCache({storage})")
    }
}

/// The HTTP client for the metadata server and IAM (one per runner, made with its signer).
fn signing_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(SIGNING_CALL_TIMEOUT)
        .build()
        .unwrap_or_default()
}
