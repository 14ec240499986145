//! `[global]`: the document's top-level keys (`concurrent`, `check_interval`, `log_level`, …, and
//! the ignored `[session_server]` table) and the list of `[[runners]]` entries. Owns the section
//! whole: its validated type ([`Config`], [`LogFormat`]), its raw struct, its reading from the
//! document's root table and its building; each entry is read and built by `runner`.

use std::path::PathBuf;
use std::time::Duration;

use toml_edit::{Item, TableLike, Value};

use super::diag::Diagnostics;
use super::error::WarningKind;
use super::known_keys;
use super::runner::{self, RawRunner, RunnerConfig};
use super::skipped::{skipped, SkippedRunner};
use super::toml_read::{check_keys, integer, string, Field, Scope};
use super::units::{self, to_usize};

/// Default `state_dir`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/flotilla";

/// `log_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines (GitLab Runner's `text` and `runner`).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Jobs running at once across all runners.
    pub concurrent: usize,
    /// Pause between job requests of one runner when no job came.
    pub check_interval: Duration,
    /// How long a forceful shutdown may take.
    pub shutdown_timeout: Duration,
    /// Where `/metrics` and the status page listen (`host:port`).
    pub listen_address: Option<String>,
    /// `log_level` (tracing filter directive: error, warn, info, debug, trace).
    pub log_level: String,
    /// `log_format`.
    pub log_format: LogFormat,
    /// Where `manager-id` and `jobs.json` are kept.
    pub state_dir: PathBuf,
    /// Overrides the persisted manager id.
    pub manager_id: Option<String>,
    /// How often the fleet reconciles with the cloud.
    pub reconcile_interval: Duration,
    /// The `[[runners]]` entries (none is valid: `run` idles until a reload adds one).
    pub runners: Vec<RunnerConfig>,
    /// The `[[runners]]` entries whose executor Flotilla does not run (never polled).
    pub skipped: Vec<SkippedRunner>,
}

/// The top-level keys as written (no `Debug`, as every raw struct).
#[derive(Default)]
pub(super) struct RawConfig {
    pub concurrent: Option<Field<i64>>,
    pub check_interval: Option<Field<i64>>,
    pub shutdown_timeout: Option<Field<i64>>,
    pub listen_address: Option<Field<String>>,
    pub log_level: Option<Field<String>>,
    pub log_format: Option<Field<String>>,
    pub state_dir: Option<Field<String>>,
    pub manager_id: Option<Field<String>>,
    pub reconcile_interval: Option<Field<i64>>,
    /// The `[[runners]]` entries found (possibly none).
    pub runners: Vec<RawRunner>,
    /// The entries left out for their executor.
    pub skipped: Vec<SkippedRunner>,
}

/// Reads the document's root table and its `[[runners]]` entries.
pub(super) fn read(d: &mut Diagnostics, root: &dyn TableLike) -> RawConfig {
    let s = Scope {
        table: root,
        path: String::new(),
        line: 1,
    };
    check_keys(d, &s, &known_keys::GLOBAL);
    let (mut runners, mut skipped_runners) = (Vec::new(), Vec::new());
    for r in runner_scopes(d, &s) {
        match skipped(d, &r) {
            Some(skip) => skipped_runners.push(skip),
            None => runners.push(runner::read(d, r)),
        }
    }
    RawConfig {
        concurrent: integer(d, &s, "concurrent"),
        check_interval: integer(d, &s, "check_interval"),
        shutdown_timeout: integer(d, &s, "shutdown_timeout"),
        listen_address: string(d, &s, "listen_address"),
        log_level: string(d, &s, "log_level"),
        log_format: string(d, &s, "log_format"),
        state_dir: string(d, &s, "state_dir"),
        manager_id: string(d, &s, "manager_id"),
        reconcile_interval: integer(d, &s, "reconcile_interval"),
        runners,
        skipped: skipped_runners,
    }
}

/// The `[[runners]]` tables (also accepted: an inline array of inline tables).
fn runner_scopes<'t>(d: &mut Diagnostics, s: &Scope<'t>) -> Vec<Scope<'t>> {
    let Some(item) = s.table.get("runners") else {
        return Vec::new();
    };
    let line = s.key_line(d, "runners");
    let scope = |table: &'t dyn TableLike, i: usize, line: usize| Scope {
        table,
        path: format!("runners[{i}]"),
        line,
    };
    match item {
        Item::ArrayOfTables(entries) => entries
            .iter()
            .enumerate()
            .map(|(i, t)| scope(t, i, d.line_of(t.span(), line)))
            .collect(),
        Item::Value(Value::Array(entries)) => {
            let mut out = Vec::new();
            for (i, v) in entries.iter().enumerate() {
                match v.as_inline_table() {
                    Some(t) => out.push(scope(t, i, d.line_of(t.span(), line))),
                    None => d.error(
                        d.line_of(v.span(), line),
                        &format!("runners[{i}]"),
                        format!("expected a table, found {}", v.type_name()),
                    ),
                }
            }
            out
        }
        other => {
            let found = other.type_name();
            d.error(
                line,
                "runners",
                format!("expected [[runners]] entries (an array of tables), found {found}"),
            );
            Vec::new()
        }
    }
}

/// Builds the configuration; problems go to `d`.
pub(super) fn build(d: &mut Diagnostics, raw: RawConfig) -> Config {
    let concurrent = match raw.concurrent {
        None => 1,
        Some(f) if f.value >= 1 => to_usize(f.value),
        Some(f) => {
            d.error(f.line, "concurrent", "must be at least 1");
            1
        }
    };
    if raw.runners.is_empty() {
        d.warn(1, "runners", WarningKind::NoRunners);
    }
    Config {
        concurrent,
        check_interval: positive_secs(raw.check_interval, 3),
        shutdown_timeout: positive_secs(raw.shutdown_timeout, 30),
        listen_address: raw
            .listen_address
            .map(|f| f.value.trim().to_string())
            .filter(|a| !a.is_empty())
            .map(|a| units::with_default_port(&a)),
        log_level: log_level(d, raw.log_level),
        log_format: log_format(d, raw.log_format),
        state_dir: state_dir(d, raw.state_dir),
        manager_id: manager_id(d, raw.manager_id),
        reconcile_interval: match raw.reconcile_interval {
            None => Duration::from_secs(60),
            Some(f) if f.value >= 1 => crate::time::secs(f.value.unsigned_abs()),
            Some(f) => {
                d.error(f.line, "reconcile_interval", "must be at least 1 (seconds)");
                Duration::from_secs(60)
            }
        },
        runners: raw
            .runners
            .into_iter()
            .map(|r| runner::build(d, r))
            .collect(),
        skipped: raw.skipped,
    }
}

fn log_level(d: &mut Diagnostics, f: Option<Field<String>>) -> String {
    let Some(f) = f else {
        return "info".to_string();
    };
    let level = match f.value.to_ascii_lowercase().as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warn" | "warning" => "warn",
        "error" | "fatal" | "panic" => "error",
        _ => {
            let message = format!(
                "unknown log level {:?}: use debug, info, warn, error, fatal or panic",
                f.value
            );
            d.error(f.line, "log_level", message);
            "info"
        }
    };
    level.to_string()
}

fn log_format(d: &mut Diagnostics, f: Option<Field<String>>) -> LogFormat {
    let Some(f) = f else { return LogFormat::Text };
    match f.value.as_str() {
        "runner" | "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            let message = format!("unknown log format {other:?}: use runner, text or json");
            d.error(f.line, "log_format", message);
            LogFormat::Text
        }
    }
}

fn state_dir(d: &mut Diagnostics, f: Option<Field<String>>) -> PathBuf {
    match f {
        None => PathBuf::from(DEFAULT_STATE_DIR),
        Some(f) if f.value.trim().is_empty() => {
            d.error(f.line, "state_dir", "must not be empty");
            PathBuf::from(DEFAULT_STATE_DIR)
        }
        Some(f) => PathBuf::from(f.value),
    }
}

/// The manager id ends up in GCE label values: lowercase letters, digits, `-` and `_`, ≤ 63.
fn manager_id(d: &mut Diagnostics, f: Option<Field<String>>) -> Option<String> {
    let f = f?;
    let valid = !f.value.is_empty()
        && f.value.len() <= 63
        && f.value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        let message = format!(
            "invalid manager id {:?}: use 1 to 63 lowercase letters, digits, '-' or '_'",
            f.value
        );
        d.error(f.line, "manager_id", message);
    }
    Some(f.value)
}

fn positive_secs(f: Option<Field<i64>>, default: u64) -> Duration {
    match f {
        Some(f) if f.value > 0 => crate::time::secs(f.value.unsigned_abs()),
        _ => Duration::from_secs(default),
    }
}
