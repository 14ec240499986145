//! Token rotation while running, as GitLab Runner's `multi.go` (`nextRunnerToReset`): a
//! runner whose `token_expires_at` is set gets a new token at `token_obtained_at + 0.75 ×
//! (token_expires_at − token_obtained_at)` (at once if that is past, or when
//! `token_obtained_at` is unknown). The new token is applied in memory first (requesters pick
//! it up at their next request; running jobs keep using their own job tokens), then written to
//! the file under its lock. The runner keeps its identity (GitLab `id`, else its old short
//! token, which its labels, metric series and cache path keep too), so its pool and VMs stay.
//! The manager remembers what it wrote, and a reload that finds exactly that text is its own
//! write, not an operator's change.

use super::Supervisor;
use crate::config::{Config, RunnerConfig, RunnerIdentity};
use crate::register::api::RunnersApi;
use crate::register::file::{Edit, LockedFile};
use chrono::{DateTime, TimeDelta, Utc};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// GitLab Runner's `common.TokenResetIntervalFactor`.
const RESET_FACTOR: f64 = 0.75;

/// Wait before trying again a reset that failed.
const RETRY_AFTER: TimeDelta = TimeDelta::seconds(60);

/// The supervisor's rotation bookkeeping.
#[derive(Default)]
pub(super) struct Rotation {
    /// The text of the manager's last write of the file.
    own_write: Option<String>,
    /// Runners whose last reset failed: not before this time.
    retry_at: BTreeMap<RunnerIdentity, DateTime<Utc>>,
}

/// When `runner`'s token is to be reset (`None`: never, it does not expire).
pub(super) fn reset_at(runner: &RunnerConfig) -> Option<DateTime<Utc>> {
    let expires = runner.token_expires_at?;
    let Some(obtained) = runner.token_obtained_at else {
        return Some(DateTime::<Utc>::MIN_UTC);
    };
    let lifetime = (expires - obtained).num_milliseconds().max(0);
    // Whole milliseconds: a token lifetime is far below f64's exact range.
    let offset = (lifetime as f64 * RESET_FACTOR) as i64;
    Some(obtained + TimeDelta::milliseconds(offset))
}

impl Rotation {
    /// When the next reset is due among `config`'s runners.
    pub(super) fn next(&self, config: &Config) -> Option<tokio::time::Instant> {
        let at = config.runners.iter().filter_map(|r| self.due_at(r)).min()?;
        let wait = (at - Utc::now()).to_std().unwrap_or_default();
        Some(tokio::time::Instant::now() + wait)
    }

    fn due_at(&self, runner: &RunnerConfig) -> Option<DateTime<Utc>> {
        let at = reset_at(runner)?;
        Some(match self.retry_at.get(&runner.identity()) {
            Some(retry) => at.max(*retry),
            None => at,
        })
    }

    /// Whether `text` is what the manager itself last wrote.
    pub(super) fn is_own_write(&self, text: &str) -> bool {
        self.own_write.as_deref() == Some(text)
    }
}

impl Supervisor {
    /// Resets the tokens that are due, applies them, and saves them to the file.
    pub(super) async fn rotate(&mut self) {
        let config = self.shared.config();
        let now = Utc::now();
        let due: Vec<RunnerConfig> = config
            .runners
            .iter()
            .filter(|r| self.rotation.due_at(r).is_some_and(|at| at <= now))
            .cloned()
            .collect();
        let mut new = (*config).clone();
        let mut saved = Vec::new();
        for runner in due {
            let short = runner.short_token();
            // No request of this runner is in flight from here to the swap below.
            let state = self.runners.state(&runner.identity());
            let _gate = match &state {
                Some(state) => Some(state.token_gate.write().await),
                None => None,
            };
            let reset = match RunnersApi::new(&runner.url, runner.executor.as_str(), &runner.tls) {
                Ok(api) => api.reset_token(&runner.token).await,
                Err(e) => Err(e),
            };
            let credentials = match reset {
                Ok(credentials) => credentials,
                Err(e) => {
                    tracing::warn!(runner = %short, error = %e, retry_secs = RETRY_AFTER.num_seconds(), "runner token reset failed");
                    self.rotation
                        .retry_at
                        .insert(runner.identity(), now + RETRY_AFTER);
                    continue;
                }
            };
            self.rotation.retry_at.remove(&runner.identity());
            let updated = RunnerConfig {
                token: credentials.token,
                token_obtained_at: Some(now),
                token_expires_at: credentials.token_expires_at,
                kept_short_token: Some(short.clone()),
                ..runner.clone()
            };
            tracing::info!(runner = %short, name = %runner.name, expires_at = ?updated.token_expires_at, "runner token reset");
            if let Some(state) = &state {
                state.set_runner(Arc::new(updated.clone()));
            }
            if let Some(slot) = new
                .runners
                .iter_mut()
                .find(|r| r.identity() == runner.identity())
            {
                *slot = updated.clone();
            }
            saved.push((runner, updated));
        }
        if saved.is_empty() {
            return;
        }
        // In memory first: the old token stops working now.
        let new = Arc::new(new);
        self.shared.set_config(new.clone());
        self.runners
            .apply(&self.shared, &mut self.fleets, &new)
            .await;
        let Some(source) = &self.source else {
            tracing::warn!("no configuration file: the new runner token is kept in memory only");
            return;
        };
        let path = source.path.clone();
        match tokio::task::spawn_blocking(move || save(path, &saved)).await {
            Ok(Ok(text)) => {
                self.shared.metrics.process.config_saved(true);
                self.rotation.own_write = Some(text);
            }
            Ok(Err(e)) => {
                self.shared.metrics.process.config_saved(false);
                tracing::error!(error = %e, "cannot save the new runner token: the running manager uses it, but a restart will not")
            }
            Err(e) => {
                self.shared.metrics.process.config_saved(false);
                tracing::error!(error = %e, "saving the new runner token failed");
            }
        }
    }
}

/// Writes each runner's new token into its entry (found by `id` and URL, else by URL and old
/// token), under the file's lock; returns the text written.
fn save(
    path: PathBuf,
    saved: &[(RunnerConfig, RunnerConfig)],
) -> Result<String, crate::register::file::FileError> {
    let file = LockedFile::lock(&path)?;
    let text = file.read()?;
    let mut edit = Edit::parse(&path, text.as_deref())?;
    let entries = edit.entries();
    for (old, new) in saved {
        let url = old.url.trim_end_matches('/');
        let found = entries.iter().find(|e| {
            e.url.trim_end_matches('/') == url
                && if old.id > 0 {
                    e.id == old.id
                } else {
                    e.token == old.token
                }
        });
        match (found, new.token_obtained_at) {
            (Some(entry), Some(obtained)) => {
                edit.set_token(entry.index, &new.token, obtained, new.token_expires_at)
            }
            _ => {
                tracing::warn!(runner = %old.short_token(), "runner not found in the configuration file: its new token is kept in memory only")
            }
        }
    }
    let text = edit.render();
    file.write(&text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runner(obtained: Option<&str>, expires: Option<&str>) -> RunnerConfig {
        let text = "[[runners]]\nurl = \"https://gitlab.example.com\"\ntoken = \"glrt-t1_abcdefghijk\"\nexecutor = \"docker\"\n[runners.docker]\nimage = \"alpine\"\n";
        let mut r = Config::from_toml_str(text, "t")
            .unwrap()
            .config
            .runners
            .remove(0);
        let at = |t: &str| DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc);
        r.token_obtained_at = obtained.map(at);
        r.token_expires_at = expires.map(at);
        r
    }

    #[test]
    fn the_reset_is_at_three_quarters_of_the_lifetime() {
        let r = runner(Some("2026-01-01T00:00:00Z"), Some("2026-01-05T00:00:00Z"));
        assert_eq!(
            reset_at(&r).unwrap().to_rfc3339(),
            "2026-01-04T00:00:00+00:00"
        );
        assert_eq!(
            reset_at(&runner(Some("2026-01-01T00:00:00Z"), None)),
            None,
            "never expires"
        );
        assert_eq!(
            reset_at(&runner(None, Some("2026-01-05T00:00:00Z"))),
            Some(DateTime::<Utc>::MIN_UTC),
            "unknown start: now"
        );
    }

    #[tokio::test]
    async fn a_token_past_its_point_is_due_now_and_a_failure_waits() {
        let mut config = Config::from_toml_str("", "t").unwrap().config;
        let mut rotation = Rotation::default();
        assert!(rotation.next(&config).is_none());
        let r = runner(Some("2020-01-01T00:00:00Z"), Some("2020-01-05T00:00:00Z"));
        config.runners.push(r.clone());
        let next = rotation.next(&config).unwrap();
        assert!(next <= tokio::time::Instant::now());
        rotation
            .retry_at
            .insert(r.identity(), Utc::now() + RETRY_AFTER);
        let next = rotation.next(&config).unwrap();
        assert!(next > tokio::time::Instant::now() + std::time::Duration::from_secs(50));
    }
}
