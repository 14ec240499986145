//! GitLab Runner API v4 client: job requests (long polling), acknowledgement, trace upload and
//! job state updates. Owns retries, backoff, the wire format and the request-status metrics;
//! never runs jobs itself and never logs a token or a payload.
//!
//! Files: `client.rs` (HTTP client, URL rules, retries), `request.rs` (`jobs/request`),
//! `update.rs` (`PUT jobs/:id`), `patch.rs` (`PATCH jobs/:id/trace`), `trace_upload.rs` (the
//! upload loop, keep-alive and final update), `remote.rs` (`Job-Status` and interval headers),
//! `info.rs` (the `info` block), `error.rs`, `metrics.rs`, `artifacts.rs` (job artifacts upload
//! and download, used by the helper commands).

mod artifacts;
mod client;
mod error;
mod info;
mod metrics;
mod patch;
mod remote;
mod request;
mod tls;
mod trace_upload;
mod update;

#[cfg(test)]
mod stub;
#[cfg(test)]
mod tests;

pub use crate::job::{FinalState, JobState};
pub use artifacts::{ArtifactUpload, ArtifactsClient, ArtifactsError};
pub use client::{
    api_base, ClientSettings, Coordinator, JobCredentials, RunnerEndpoint, MAX_ATTEMPTS,
};
pub use error::CoordinatorError;
pub use info::{user_agent, VersionInfo, REVISION};
pub use metrics::{Endpoint, RunnerLabels};
pub use patch::TRACE_PATCH_LIMIT;
pub use request::{PollState, RequestOutcome, HELD_POLL};
pub use tls::with_files as with_tls_files;
pub use trace_upload::TraceSession;
pub use update::AckOutcome;

/// The response-header parsers, public only for the fuzz targets in `fuzz/`.
#[doc(hidden)]
pub mod parsers {
    pub use super::client::{reset_time_wait, retry_after_wait};
    pub use super::patch::range_end;
}
