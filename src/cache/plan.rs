//! The cache plan of one job: plain data the manager computes (keys, object names, signed URLs)
//! and hands to the executor in `JobRun`, which turns it into the `restore_cache` and
//! `archive_cache*` stage scripts. The helper command reads one [`RestoreSpec`] or
//! [`ArchiveSpec`] from an environment variable as JSON, so these types are also its wire format.
//!
//! Signed URLs are secrets (anyone holding one reads or writes the object): `Debug` never shows
//! them, and the helper never prints them.

use serde::{Deserialize, Serialize};

use super::key::When;

/// Where the local cache volume is mounted in the helper container.
pub const LOCAL_CACHE_DIR: &str = "/cache";

pub use crate::helper_commands::contract::SPEC_ENV;

/// What the cache stages of one job do. Made by `crate::cache::plan_job`, read by the executor.
#[derive(Debug, Clone, Default)]
pub struct CachePlan {
    /// Lines for the `restore_cache` section before any download (sanitized keys, policy notes).
    pub restore_messages: Vec<Message>,
    /// One entry per cache whose policy pulls, in the job's order.
    pub restores: Vec<RestoreSpec>,
    /// Lines for the `archive_cache*` sections.
    pub archive_messages: Vec<Message>,
    /// One entry per cache whose policy pushes, in the job's order.
    pub archives: Vec<ArchiveSpec>,
    /// The Docker volume to mount at [`LOCAL_CACHE_DIR`] in the helper container (local storage).
    pub local_volume: Option<String>,
    /// Whether `restore_cache` runs at all (some cache lists paths or untracked files).
    pub restore_stage: bool,
}

impl CachePlan {
    /// The archives to save after a job that `succeeded` (or not).
    pub fn archives_for(&self, succeeded: bool) -> Vec<&ArchiveSpec> {
        self.archives
            .iter()
            .filter(|a| a.when.saves(succeeded))
            .collect()
    }
}

/// A line for the trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A plain notice.
    Notice(String),
    /// A warning (yellow).
    Warning(String),
}

/// Restores one cache entry: the first source that has an archive wins.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreSpec {
    /// The key as shown to people.
    pub key: String,
    /// The key first, then `fallback_keys`, then `CACHE_FALLBACK_KEY`.
    pub sources: Vec<Source>,
    /// Seconds each download may take.
    pub timeout_secs: u64,
}

/// One place an archive may be.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Source {
    /// The key (sanitized) as shown to people.
    pub key: String,
    /// Where its archive is.
    pub location: Location,
}

/// A cache archive's place: a file on the local cache volume, or a signed URL.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Location {
    /// A path in the helper container (on the cache volume).
    File(String),
    /// A signed URL (GET for a restore).
    Url(String),
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::File(path) => f.debug_tuple("File").field(path).finish(),
            Location::Url(_) => f.write_str("Url([signed URL])"),
        }
    }
}

/// Saves one cache entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArchiveSpec {
    /// The key as shown to people.
    pub key: String,
    /// After which job results it is saved.
    pub when: When,
    /// Paths and globs relative to the project directory (variables expanded).
    pub paths: Vec<String>,
    /// Also every file git does not track.
    pub untracked: bool,
    /// Where the archive goes.
    pub target: Target,
    /// Seconds the upload may take.
    pub timeout_secs: u64,
    /// Archives larger than this are not uploaded (0 = no limit).
    pub max_size: u64,
}

/// Where an archive is written.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// A path in the helper container (on the cache volume).
    File(String),
    /// A signed PUT URL and the headers signed with it (sent exactly so).
    Url {
        /// The signed URL.
        url: String,
        /// Headers the signature covers (`Content-Type`, `x-goog-meta-cachekey`, …).
        headers: Vec<(String, String)>,
    },
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::File(path) => f.debug_tuple("File").field(path).finish(),
            Target::Url { headers, .. } => f
                .debug_struct("Url")
                .field("url", &"[signed URL]")
                .field("headers", headers)
                .finish(),
        }
    }
}

/// The archive's path on the local cache volume for an object name.
pub fn local_archive_path(object_name: &str) -> String {
    format!("{LOCAL_CACHE_DIR}/{object_name}/cache.zip")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_signed_urls() {
        let spec = ArchiveSpec {
            key: "k".into(),
            when: When::OnSuccess,
            paths: vec!["a".into()],
            untracked: false,
            target: Target::Url {
                url: "https://storage.example/b/o?X-Goog-Signature=abcdef".into(),
                headers: vec![("Content-Type".into(), "application/octet-stream".into())],
            },
            timeout_secs: 600,
            max_size: 0,
        };
        let text = format!("{spec:?}");
        assert!(!text.contains("X-Goog-Signature"), "{text}");
        let source = Source {
            key: "k".into(),
            location: Location::Url("https://x/?X-Goog-Signature=abc".into()),
        };
        assert!(!format!("{source:?}").contains("abc"));
        let json = serde_json::to_string(&spec).unwrap();
        let back: ArchiveSpec = serde_json::from_str(&json).unwrap();
        assert!(matches!(back.target, Target::Url { url, .. } if url.contains("abcdef")));
    }
}
