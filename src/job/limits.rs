//! Caps on what a job's `$VAR` expansion may produce inside the manager. A pipeline author
//! controls both a variable's value and the texts it is expanded into, so `B = "$A$A…"` with a
//! large `A` would otherwise grow to gigabytes in the one process that runs every tenant's jobs.
//! GitLab Runner has no such cap (Go's `os.Expand` is unbounded); these are Flotilla's own. The
//! check runs before the job's first container, and fails only that job. Pure; no I/O.

use super::payload::JobPayload;
use super::variables::{TooLarge, Variables};

/// The most one expanded text may hold: a variable's value, a cache key or path, an artifact
/// path or name, an image or service name (1 MiB), unless the text is itself longer.
pub const MAX_EXPANDED_VALUE: usize = 1 << 20;

/// The most one step's script may hold: every variable exported with its expanded value, plus
/// the step's lines (16 MiB).
pub const MAX_EXPANDED_SCRIPT: usize = 16 << 20;

/// A text of the job expands past its cap.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {cause} (Flotilla's limit); the job is not run")]
pub struct ExpansionError {
    /// What was expanded, e.g. "variable `B`" or "cache key" (never a value).
    pub what: String,
    /// How far it went.
    pub cause: TooLarge,
}

/// Expands, with the caps above, every text of `job` the manager expands with `vars` (the job's
/// variables in GitLab Runner's order): each variable, the script of each step, cache keys,
/// paths and policy, artifact paths and names, image and service names, aliases and service
/// variables.
pub fn check_expansion(job: &JobPayload, vars: &Variables) -> Result<(), ExpansionError> {
    let mut exported = 0usize;
    for var in vars.effective() {
        let len = if var.raw {
            var.value.len()
        } else {
            let value = capped(vars, &var.value, || format!("variable `{}`", var.key))?;
            value.len()
        };
        exported = exported.saturating_add(len + var.key.len() + 16);
    }
    let lines = |script: &[String]| script.iter().map(|l| l.len() + 8).sum::<usize>();
    let longest_step = job
        .steps
        .iter()
        .map(|s| lines(&s.script))
        .chain(job.hooks.iter().map(|h| lines(&h.script)))
        .max()
        .unwrap_or(0);
    if exported.saturating_add(longest_step) > MAX_EXPANDED_SCRIPT {
        return Err(ExpansionError {
            what: "the step script (its exported variables and lines)".into(),
            cause: TooLarge {
                limit: MAX_EXPANDED_SCRIPT,
            },
        });
    }
    for cache in &job.cache {
        capped(vars, &cache.key, || "cache key".into())?;
        capped(vars, &cache.policy, || "cache policy".into())?;
        for path in cache.paths.iter().chain(&cache.fallback_keys) {
            capped(vars, path, || "cache path or fallback key".into())?;
        }
    }
    for artifact in &job.artifacts {
        capped(vars, &artifact.name, || "artifacts name".into())?;
        for path in artifact.paths.iter().chain(&artifact.exclude) {
            capped(vars, path, || "artifacts path".into())?;
        }
    }
    for image in job.image.iter().chain(&job.services) {
        capped(vars, &image.name, || {
            format!("image name `{}`", short(&image.name))
        })?;
        capped(vars, &image.alias, || "service alias".into())?;
        let mut combined = vars.clone();
        for v in &image.variables {
            combined.push(v.clone());
        }
        for v in &image.variables {
            capped(&combined, &v.value, || {
                format!("service variable `{}`", short(&v.key))
            })?;
        }
    }
    Ok(())
}

/// Expands `text` with a cap of [`MAX_EXPANDED_VALUE`] or its own length, whichever is larger.
fn capped(
    vars: &Variables,
    text: &str,
    what: impl FnOnce() -> String,
) -> Result<String, ExpansionError> {
    let limit = MAX_EXPANDED_VALUE.max(text.len());
    vars.expand_capped(text, limit)
        .map_err(|cause| ExpansionError {
            what: what(),
            cause,
        })
}

/// A name cut to 64 characters (on a character boundary) for an error message.
fn short(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobVariable;

    fn job_with(vars: &[(&str, &str)]) -> (JobPayload, Variables) {
        let job = JobPayload {
            steps: vec![crate::job::Step {
                name: "script".into(),
                script: vec!["echo $B".into()],
                ..Default::default()
            }],
            ..Default::default()
        };
        let list = vars
            .iter()
            .map(|(k, v)| JobVariable::plain(*k, *v))
            .collect();
        (job, Variables::new(list))
    }

    #[test]
    fn a_doubling_bomb_is_refused_without_growing_past_the_cap() {
        let a = "x".repeat(64 * 1024);
        let b = "$A".repeat(100_000); // 6.4 GB if expanded
        let (job, vars) = job_with(&[("A", &a), ("B", &b)]);
        let err = check_expansion(&job, &vars).unwrap_err();
        assert_eq!(err.what, "variable `B`");
        assert!(err.to_string().contains("more than 1048576 bytes"), "{err}");
        // The capped expansion itself stops early.
        assert!(vars.expand_capped(&b, MAX_EXPANDED_VALUE).is_err());
    }

    #[test]
    fn a_cache_key_bomb_is_refused() {
        let (mut job, vars) = job_with(&[("A", &"y".repeat(4096))]);
        job.cache.push(crate::job::Cache {
            key: "$A".repeat(1000),
            ..Default::default()
        });
        let err = check_expansion(&job, &vars).unwrap_err();
        assert_eq!(err.what, "cache key");
    }

    #[test]
    fn many_large_values_exceed_the_script_cap() {
        let big = "z".repeat(900 * 1024);
        let names: Vec<String> = (0..20).map(|i| format!("V{i}")).collect();
        let pairs: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), big.as_str())).collect();
        let (job, vars) = job_with(&pairs);
        let err = check_expansion(&job, &vars).unwrap_err();
        assert!(err.what.starts_with("the step script"), "{err}");
    }

    #[test]
    fn ordinary_and_large_literal_values_pass() {
        let literal = "l".repeat(2 * MAX_EXPANDED_VALUE); // long, but expands to itself
        let (mut job, vars) = job_with(&[("A", "hello"), ("B", "$A-$A-${A}"), ("CERT", &literal)]);
        job.cache.push(crate::job::Cache {
            key: "$B".into(),
            ..Default::default()
        });
        check_expansion(&job, &vars).unwrap();
        assert_eq!(vars.expanded("B").as_deref(), Some("hello-hello-hello"));
    }
}
