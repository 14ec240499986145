//! The cache stages: `restore_cache` (before `download_artifacts`) and `archive_cache` /
//! `archive_cache_on_failure` (after `after_script`), run in the helper container from the
//! [`CachePlan`](crate::cache::CachePlan) the manager computed. The executor signs nothing: each
//! spec (paths, keys, signed URLs) goes to `flotilla helper cache-extractor` / `cache-archiver`
//! as a raw (unexpanded) variable exported by the stage script, never as argv or trace text.
//!
//! Cache problems never fail the job (GitLab Runner's stage script guards the helper call the
//! same way): a failing helper command leaves a warning; only losing the host is an error.

use super::ctx::JobCtx;
use super::error::ExecError;
use crate::cache::{ArchiveSpec, CachePlan, Message, RestoreSpec};
use crate::helper_commands::contract::{HELPER_BIN, SPEC_ENV};
use crate::job::{JobVariable, Variables};

/// A variable holding a spec: raw (no `$` expansion of JSON), not public.
fn spec_variable(key: String, json: String) -> JobVariable {
    JobVariable {
        key,
        value: json,
        raw: true,
        ..JobVariable::default()
    }
}

/// The lines and variables of a stage running `command` once per spec.
fn helper_script<T: serde::Serialize>(
    base: &Variables,
    command: &str,
    failure: &str,
    specs: &[&T],
) -> Result<(Vec<String>, Variables), ExecError> {
    let mut vars = base.clone();
    let mut lines = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let key = format!("{SPEC_ENV}_{i}");
        let json = serde_json::to_string(spec)
            .map_err(|e| ExecError::Configuration(format!("encoding the cache spec: {e}")))?;
        vars.push(spec_variable(key.clone(), json));
        lines.push(format!(
            "{HELPER_BIN} helper {command} --spec-env {key} || echo 'WARNING: {failure}'"
        ));
    }
    Ok((lines, vars))
}

/// The restore script: one `cache-extractor` per cache that pulls.
pub(super) fn restore_script(
    plan: &CachePlan,
    base: &Variables,
) -> Result<(Vec<String>, Variables), ExecError> {
    let specs: Vec<&RestoreSpec> = plan.restores.iter().collect();
    helper_script(base, "cache-extractor", "Failed to extract cache", &specs)
}

/// The archive script: one `cache-archiver` per cache saved after this result.
pub(super) fn archive_script(
    specs: &[&ArchiveSpec],
    base: &Variables,
) -> Result<(Vec<String>, Variables), ExecError> {
    helper_script(base, "cache-archiver", "Failed to create cache", specs)
}

impl JobCtx<'_> {
    fn print(&self, messages: &[Message]) {
        for m in messages {
            match m {
                Message::Notice(text) => self.log.line(text),
                Message::Warning(text) => self.log.warning(text),
            }
        }
    }

    /// Whether the job has a `restore_cache` stage at all.
    pub(super) fn has_cache(&self) -> bool {
        self.run.cache.restore_stage
    }

    /// `restore_cache`: the exit code is always 0 unless the helper container could not run.
    pub(super) async fn restore_cache(&self) -> Result<i64, ExecError> {
        let plan = &self.run.cache;
        self.print(&plan.restore_messages);
        let (lines, vars) = restore_script(plan, &self.run.variables)?;
        self.run_helper_stage("restore_cache", &lines, &vars)
            .await
            .map(|_| 0)
    }

    /// `archive_cache` (`succeeded`) or `archive_cache_on_failure`: the caches whose `when`
    /// matches the job's result. The exit code is always 0 unless the helper could not run.
    pub(super) async fn archive_cache(&self, succeeded: bool) -> Result<i64, ExecError> {
        let plan = &self.run.cache;
        self.print(&plan.archive_messages);
        let specs = plan.archives_for(succeeded);
        let (lines, vars) = archive_script(&specs, &self.run.variables)?;
        self.run_helper_stage(archive_stage_name(succeeded), &lines, &vars)
            .await
            .map(|_| 0)
    }
}

/// The stage name GitLab Runner gives the archive stage after a job that `succeeded` (or not).
pub(super) fn archive_stage_name(succeeded: bool) -> &'static str {
    if succeeded {
        "archive_cache"
    } else {
        "archive_cache_on_failure"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::key::When;
    use crate::cache::{Location, Source, Target};

    #[test]
    fn specs_travel_as_raw_variables_never_in_the_lines() {
        let plan = CachePlan {
            restores: vec![RestoreSpec {
                key: "k".into(),
                sources: vec![Source {
                    key: "k".into(),
                    location: Location::Url("https://x/o?X-Goog-Signature=secret$HOME".into()),
                }],
                timeout_secs: 600,
            }],
            restore_stage: true,
            ..CachePlan::default()
        };
        let base = Variables::new(vec![JobVariable::plain("A", "1")]);
        let (lines, vars) = restore_script(&plan, &base).unwrap();
        assert_eq!(
            lines,
            vec![
                "flotilla helper cache-extractor --spec-env FLOTILLA_CACHE_SPEC_0 \
                 || echo 'WARNING: Failed to extract cache'"
            ]
        );
        assert!(!lines[0].contains("secret"));
        let spec = vars
            .iter()
            .find(|v| v.key == "FLOTILLA_CACHE_SPEC_0")
            .unwrap();
        assert!(spec.raw && !spec.public);
        assert!(spec.value.contains("secret$HOME"));
        assert_eq!(vars.get("A"), Some("1"));

        let archive = ArchiveSpec {
            key: "k".into(),
            when: When::Always,
            paths: vec!["p".into()],
            untracked: false,
            target: Target::File("/cache/x/cache.zip".into()),
            timeout_secs: 600,
            max_size: 0,
        };
        let (lines, _) = archive_script(&[&archive, &archive], &base).unwrap();
        assert_eq!(lines.len(), 2);
        assert!(lines[1].contains("cache-archiver --spec-env FLOTILLA_CACHE_SPEC_1"));
        assert_eq!(archive_stage_name(false), "archive_cache_on_failure");
    }

    #[test]
    fn nothing_to_do_means_no_lines() {
        let (lines, _) = restore_script(&CachePlan::default(), &Variables::default()).unwrap();
        assert!(lines.is_empty());
    }
}
