//! Errors and warnings of loading `config.toml`. Every problem carries the file it came from, its
//! line and the key path (`runners[0].docker.image`), so `flotilla config check` and a failed
//! reload can print them all at once, one per line.

use std::fmt;
use std::path::PathBuf;

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where the text came from (a file path or a label such as `config.toml`).
    pub origin: String,
    /// 1-based line of the offending key or value.
    pub line: usize,
    /// Key path such as `runners[0].docker.image`; empty for a TOML syntax error.
    pub path: String,
    /// What is wrong, and what to do about it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}:{}: {}", self.origin, self.line, self.message)
        } else {
            write!(
                f,
                "{}:{}: {}: {}",
                self.origin, self.line, self.path, self.message
            )
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read the configuration file: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file was read but is not a valid configuration; every problem found is listed.
    #[error("{}", ProblemList(.0))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    /// A short label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ConfigError::Read { .. } => "read",
            ConfigError::Invalid(_) => "invalid",
        }
    }

    /// The problems found (empty for a read error).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid(problems) => problems,
        }
    }
}

/// Displays problems one per line.
struct ProblemList<'a>(&'a [Problem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// What a warning is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WarningKind {
    /// A key GitLab Runner documents that Flotilla does not implement.
    NotSupported,
    /// `helper_image` names GitLab's helper image, which has no Flotilla inside.
    GitlabHelperImage,
    /// A `[runners.gce]` key replaces a different value carried over in `MachineOptions`.
    GceOverridesMachineOption {
        /// The docker-machine option (`google-zone`).
        option: String,
        /// Its value in `MachineOptions`, as shown to people.
        machine: String,
        /// The value of `[runners.gce]` that is used, as shown to people.
        gce: String,
    },
    /// `network_mode = "host"` with docker+machine: job containers bypass the metadata-server block.
    HostNetworkOnVm,
    /// `[runners.cache] Type` names a storage Flotilla does not implement (s3, azure).
    CacheTypeNotSupported,
    /// `google-scopes` without `google-service-account`: Flotilla attaches no service account.
    ScopesWithoutServiceAccount,
    /// No `[[runners]]` entry: `run` idles until a reload adds one.
    NoRunners,
    /// A runner whose executor Flotilla does not run: left out, the others run.
    RunnerSkipped {
        /// Its `name`.
        name: String,
        /// Its `executor`.
        executor: String,
    },
}

/// A key that was accepted but has no effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// Where the text came from.
    pub origin: String,
    /// 1-based line of the key.
    pub line: usize,
    /// Key path such as `runners[0].docker.tls_verify`.
    pub path: String,
    /// What the warning is about.
    pub kind: WarningKind,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}: ", self.origin, self.line, self.path)?;
        match &self.kind {
            WarningKind::NotSupported => f.write_str("ignored: not supported"),
            WarningKind::GitlabHelperImage => f.write_str(
                "ignored: GitLab Runner's helper image has no Flotilla inside; \
                 Flotilla uses its own helper",
            ),
            WarningKind::GceOverridesMachineOption {
                option,
                machine,
                gce,
            } => write!(
                f,
                "overrides MachineOptions {option}: {gce} is used, not {machine}"
            ),
            WarningKind::HostNetworkOnVm => f.write_str(
                "network_mode \"host\" bypasses the block of the metadata server \
                 (169.254.169.254) on the VMs: job containers can reach it",
            ),
            WarningKind::CacheTypeNotSupported => f.write_str(
                "not supported (Flotilla stores caches in GCS or the local cache volume): \
                 the local cache volume is used instead",
            ),
            WarningKind::ScopesWithoutServiceAccount => f.write_str(
                "ignored: scopes without a service account (Flotilla attaches none unless \
                 google-service-account or [runners.gce] service_account names one)",
            ),
            WarningKind::NoRunners => f.write_str(
                "no [[runners]] entry: `flotilla run` takes no jobs until one is added \
                 (`flotilla register`)",
            ),
            WarningKind::RunnerSkipped { name, executor } => write!(
                f,
                "runner {name:?} (executor {executor:?}) skipped: executor not supported \
                 (it is never polled; the other runners run)"
            ),
        }
    }
}
