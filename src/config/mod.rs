//! The configuration: `config.toml` in GitLab Runner's spelling, parsed into an immutable snapshot
//! ([`Config`]) that the manager swaps on reload. Owns parsing, validation and the compatibility
//! policy; knows nothing of what the rest of the program does with the values.
//!
//! One principle: a shared kit at the bottom (`toml_read` for reading a table with each key's
//! line and checking keys against the compatibility table in `known_keys`, generated in part into
//! `known_keys_gitlab`; `diag`/`error` for problems; `units`; `gce_names`; `secret`; `zone`, the
//! host's time zone), and above it one file per section, owning its validated type, its raw
//! struct, its reading and its building: `global` (the top-level keys and the list of runners),
//! `runner` (`[[runners]]`), `skipped` (entries whose executor Flotilla does not run), `docker`
//! (`[runners.docker]`), `cache` (`[runners.cache]`), `machine` (`[runners.machine]`), `gce`
//! with `gce_checks` (`[runners.gce]`, merged with a carried-over `MachineOptions` that
//! `machine_options` maps). A section calls the sections of its sub-tables; this file only
//! parses the document and runs the two stages on `global`, reading then building. Both record
//! every problem and go on, so one run reports them all. `notes` says what `config check` prints
//! about a file that loaded.

mod autoscaler;
mod autoscaler_policy;
mod cache;
mod diag;
mod diff;
mod docker;
mod error;
mod gce;
mod gce_checks;
mod gce_names;
mod global;
mod known_keys;
mod known_keys_autoscaler;
mod known_keys_gitlab;
mod machine;
mod machine_options;
mod notes;
mod runner;
mod secret;
mod skipped;
mod subnet;
mod tls;
mod toml_read;
mod units;
mod zone;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_autoscaler;
#[cfg(test)]
mod tests_compat;
#[cfg(test)]
mod tests_machine;

use std::path::Path;

pub use autoscaler::{AutoscalerMapping, INSTANCE_GROUP_LABEL};
pub use cache::{CacheConfig, CacheStorage, GcsCacheConfig, GcsCredentials};
pub use diff::{diff, restart_required};
pub use docker::{DockerConfig, PullPolicy, DEFAULT_WAIT_FOR_SERVICES};
pub use error::{ConfigError, ConfigWarning, Problem, WarningKind};
pub use gce::GceConfig;
pub use global::{Config, LogFormat, DEFAULT_STATE_DIR};
pub use machine::{AutoscalingPeriod, IdleCountPolicy, MachineConfig};
pub use notes::check_notes;
pub use runner::{short_token, ExecutorKind, RunnerConfig, RunnerIdentity};
pub use secret::Secret;
pub use skipped::SkippedRunner;
pub use subnet::SubnetPool;
pub use tls::TlsFiles;
pub use units::with_default_port as listen_address_with_port;
pub use zone::{host_zone, host_zone_from, HostZone};

/// A configuration that loaded, and the warnings about keys it ignored.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The validated configuration.
    pub config: Config,
    /// Keys accepted without effect (GitLab Runner keys Flotilla does not implement, …).
    pub warnings: Vec<ConfigWarning>,
}

impl Config {
    /// Parses and validates `text`; `origin` names it in messages (usually the file path).
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Loaded, ConfigError> {
        let mut d = diag::Diagnostics::new(origin, text);
        let doc = match toml_edit::Document::parse(text) {
            Ok(doc) => doc,
            Err(e) => {
                let line = d.line_of(e.span(), 1);
                d.error(
                    line,
                    "",
                    format!("invalid TOML: {}", e.message().trim_end()),
                );
                return Err(ConfigError::Invalid(d.problems));
            }
        };
        let raw = global::read(&mut d, doc.as_table());
        let config = global::build(&mut d, raw);
        if d.problems.is_empty() {
            d.warnings.sort_by_key(|w| w.line);
            Ok(Loaded {
                config,
                warnings: d.warnings,
            })
        } else {
            d.problems.sort_by_key(|p| p.line);
            Err(ConfigError::Invalid(d.problems))
        }
    }

    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml_str(&text, &path.display().to_string())
    }
}

/// Validates a file for `flotilla config check FILE`: its warnings, or every problem found.
pub fn check_file(path: &Path) -> Result<Vec<ConfigWarning>, ConfigError> {
    Config::load(path).map(|loaded| loaded.warnings)
}
