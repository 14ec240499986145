//! Errors of the coordinator client. Messages name the method, the URL (which never holds a
//! token) and the status; never a token or a request body.

/// What went wrong talking to the coordinator.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// A runner's `url` cannot be used as a coordinator URL.
    #[error("invalid coordinator url {url:?}: {reason} (use an http:// or https:// GitLab URL)")]
    InvalidUrl {
        /// The URL as configured.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// The HTTP client could not be built (TLS setup).
    #[error("cannot build the coordinator HTTP client: {0}")]
    Build(#[source] reqwest::Error),
    /// A runner's TLS file cannot be read or holds no usable PEM (the path, never the content).
    #[error("{key} {path}: {reason}")]
    TlsFile {
        /// `tls-ca-file`, `tls-cert-file` or `tls-key-file`.
        key: &'static str,
        /// The file as configured.
        path: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// The metrics could not be registered (a second client on the same registry?).
    #[error("cannot register coordinator metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The request did not complete (connection, TLS, timeout).
    #[error("{method} {url}: {source}")]
    Transport {
        /// HTTP method.
        method: &'static str,
        /// Request URL.
        url: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// The coordinator answered with a status this call cannot use (after retries).
    #[error("{method} {url}: unexpected status {status}")]
    Status {
        /// HTTP method.
        method: &'static str,
        /// Request URL.
        url: String,
        /// The status received.
        status: u16,
    },
    /// The job's trace could not be read from its store.
    #[error("cannot read the job trace at offset {offset}: {source}")]
    TraceRead {
        /// Where the read started.
        offset: u64,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The final update kept failing.
    #[error("final update of job {job_id} failed after {attempts} attempts: {last}")]
    FinalUpdate {
        /// The job.
        job_id: i64,
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        last: Box<CoordinatorError>,
    },
    /// The coordinator kept answering 202/412/416 to the final update.
    #[error("job {job_id}: the coordinator did not accept the final state after {rounds} rounds")]
    FinalUpdateStuck {
        /// The job.
        job_id: i64,
        /// Rounds made in one attempt.
        rounds: u32,
    },
}

impl CoordinatorError {
    /// A short, closed-set name for metric labels and log fields.
    pub fn kind(&self) -> &'static str {
        match self {
            CoordinatorError::InvalidUrl { .. } => "invalid_url",
            CoordinatorError::Build(_) => "build",
            CoordinatorError::TlsFile { .. } => "tls_file",
            CoordinatorError::Metrics(_) => "metrics",
            CoordinatorError::Transport { .. } => "transport",
            CoordinatorError::Status { .. } => "status",
            CoordinatorError::TraceRead { .. } => "trace_read",
            CoordinatorError::FinalUpdate { .. } => "final_update",
            CoordinatorError::FinalUpdateStuck { .. } => "final_update_stuck",
        }
    }
}
