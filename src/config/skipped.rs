//! Runners left out because Flotilla does not run their executor (`shell`, `kubernetes`, …):
//! the file still loads, each such runner earns one warning (printed by `config check`, logged by
//! `run` at start and on every reload) and is never polled. Owns [`SkippedRunner`] and the
//! decision, which asks `runner::executor_kind` (the one place that sorts executors).

use toml_edit::Item;

use super::diag::Diagnostics;
use super::error::WarningKind;
use super::runner::{executor_kind, Unsupported};
use super::toml_read::Scope;

/// A `[[runners]]` entry that is not run (no token is kept: it is never used).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedRunner {
    /// Its `name`.
    pub name: String,
    /// Its `executor`.
    pub executor: String,
    /// Its key path (`runners[1]`).
    pub path: String,
}

/// The entry at `s` as a skipped runner, when its executor is one of GitLab Runner's that
/// Flotilla does not run; `None` when it is read as usual (run, or reported as an error).
pub(super) fn skipped(d: &mut Diagnostics, s: &Scope<'_>) -> Option<SkippedRunner> {
    let executor = s.table.get("executor").and_then(Item::as_str)?;
    if executor_kind(executor) != Err(Unsupported::NotRunByFlotilla) {
        return None;
    }
    let name = s
        .table
        .get("name")
        .and_then(Item::as_str)
        .unwrap_or_default()
        .to_string();
    let line = s.key_line(d, "executor");
    let kind = WarningKind::RunnerSkipped {
        name: name.clone(),
        executor: executor.to_string(),
    };
    d.warn(line, &s.path, kind);
    Some(SkippedRunner {
        name,
        executor: executor.to_string(),
        path: s.path.clone(),
    })
}
