//! The state directory's typed error.

use std::path::PathBuf;

/// Why the state directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file could not be read, written or created.
    #[error("state directory {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// `jobs.json` is not what this program writes.
    #[error("{path} is corrupt ({source}); move it away to start")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The decode error.
        #[source]
        source: serde_json::Error,
    },
    /// Another process holds the directory's lock (`flotilla run` on the same `state_dir`).
    #[error(
        "{path} is locked by another `flotilla run` on this state_dir; stop it, or give this \
         one its own state_dir (two managers on one state_dir overwrite each other's jobs and \
         delete each other's VMs)"
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// A blocking write task failed (panicked or was cancelled).
    #[error("the state directory writer failed: {0}")]
    Writer(String),
    /// `manager-id` (or `host-id`) holds something that cannot be an id.
    #[error("{path} holds an invalid id {value:?}: use [a-z0-9_-], at most 63 characters")]
    InvalidManagerId {
        /// The file.
        path: PathBuf,
        /// What it holds.
        value: String,
    },
}
