//! Configuration reload (SIGHUP, or the file changed): read, parse and validate the file first —
//! an invalid file is rejected with its error and the running configuration stays — then log
//! what changed (no secrets: `config::diff`), keep the keys that need a restart at their running
//! values (logged as such), and apply the rest: `concurrent`, `check_interval`, logging,
//! `shutdown_timeout` (read when shutting down), runners added, removed and changed, pools.

use super::runners::Runners;
use super::Supervisor;
use crate::config::{self, Config, LogFormat};
use std::path::PathBuf;
use std::sync::Arc;

/// Applies a new `log_level` and `log_format` to the process's logging (set up by `main`).
/// Returns an error text when the level is not a valid filter.
pub type LogReload = Arc<dyn Fn(&str, LogFormat) -> Result<(), LogReloadError> + Send + Sync>;

/// Why new log settings were not applied (the running ones stay).
#[derive(Debug, thiserror::Error)]
pub enum LogReloadError {
    /// `log_level` is not a level or filter tracing understands.
    #[error("log_level {level:?}: {source}")]
    Level {
        /// The level as configured.
        level: String,
        /// The filter parser's reason.
        source: tracing_subscriber::filter::ParseError,
    },
    /// The logging layer could not be swapped.
    #[error("cannot change the log {what}: {source}")]
    Swap {
        /// `level` or `format`.
        what: &'static str,
        /// The reload handle's reason.
        source: tracing_subscriber::reload::Error,
    },
}

/// Where a reload reads the configuration, and how it changes the logging.
#[derive(Clone)]
pub struct ConfigSource {
    /// The configuration file `flotilla run` was started with.
    pub path: PathBuf,
    /// Applies `log_level`/`log_format`; `None` where logging is not the process's (tests).
    pub logging: Option<LogReload>,
}

impl std::fmt::Debug for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigSource")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Supervisor {
    /// Reloads the configuration file; never stops the manager whatever the file holds.
    pub(super) async fn reload(&mut self) {
        let Some(source) = self.source.clone() else {
            tracing::warn!("configuration reload asked, but the manager was started without a configuration file");
            return;
        };
        let text = match std::fs::read_to_string(&source.path) {
            Ok(text) => text,
            Err(e) => {
                self.shared.metrics.process.config_loading_failed();
                tracing::error!(file = %source.path.display(), error = %e, "configuration reload rejected: keeping the running configuration");
                return;
            }
        };
        if self.rotation.is_own_write(&text) {
            tracing::debug!(file = %source.path.display(), "configuration file changed by the manager's own token rotation: nothing to reload");
            return;
        }
        let loaded = match Config::from_toml_str(&text, &source.path.display().to_string()) {
            Ok(loaded) => loaded,
            Err(e) => {
                self.shared.metrics.process.config_loading_failed();
                tracing::error!(file = %source.path.display(), error = %e, "configuration reload rejected: keeping the running configuration");
                return;
            }
        };
        let old = self.shared.config();
        let mut new = loaded.config;
        // A runner whose token the manager rotated keeps its labels and series (same token).
        for runner in &mut new.runners {
            if let Some(kept) = old.runners.iter().find(|o| o.token == runner.token) {
                runner.kept_short_token.clone_from(&kept.kept_short_token);
            }
        }
        if let Err(e) = Runners::check(&new, &self.shared.system_id) {
            self.shared.metrics.process.config_loading_failed();
            tracing::error!(file = %source.path.display(), error = %e, "configuration reload rejected: keeping the running configuration");
            return;
        }
        self.shared.metrics.process.config_loaded();
        for warning in &loaded.warnings {
            tracing::warn!(%warning, "configuration");
        }
        let restart = config::restart_required(&old, &new);
        // Kept at their running values, so the diff below shows only what applies now.
        new.listen_address.clone_from(&old.listen_address);
        new.state_dir.clone_from(&old.state_dir);
        new.manager_id.clone_from(&old.manager_id);
        for key in &restart {
            tracing::warn!(
                key,
                "configuration key changed but needs a restart: the running value stays"
            );
        }
        let changes = config::diff(&old, &new);
        if changes.is_empty() {
            tracing::info!(file = %source.path.display(), "configuration reloaded: nothing to apply");
            return;
        }
        if old.log_level != new.log_level || old.log_format != new.log_format {
            if let Some(logging) = &source.logging {
                if let Err(e) = logging(&new.log_level, new.log_format) {
                    tracing::error!(error = %e, "log settings not applied");
                }
            }
        }
        let new = Arc::new(new);
        self.shared.concurrent.resize(Some(new.concurrent.max(1)));
        self.shared.set_config(new.clone());
        self.shared
            .metrics
            .observe_config(&new, &self.shared.system_id);
        self.runners
            .apply(&self.shared, &mut self.fleets, &new)
            .await;
        for change in &changes {
            tracing::info!(%change, "configuration reloaded");
        }
        tracing::info!(file = %source.path.display(), changes = changes.len(), "configuration reload applied");
    }
}
