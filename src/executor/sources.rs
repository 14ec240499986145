//! The `get_sources` stage: what `GIT_STRATEGY` asks for, and running it in the helper
//! container. `none` starts no container at all (the build container's script makes the project
//! directory); `empty` and the git strategies run a script from [`super::git`] in the helper.
//! `GIT_CLONE_PATH` moves the project directory before any stage runs.

use super::ctx::{Ended, JobCtx};
use super::error::ExecError;
use super::git::{self, GitStrategy};
use super::script::quote;
use crate::job::{JobVariable, Variables};

/// The `get_sources` stage with GitLab Runner's retries: up to `GET_SOURCES_ATTEMPTS` (1 to
/// 10, default 1) attempts, each in its own section; after the first failed one,
/// `clear_worktree` deletes the tracked and untracked files (a half-updated submodule can
/// otherwise fail every fetch).
pub(super) async fn get_sources_stage(ctx: &JobCtx<'_>) -> Result<(), Ended> {
    let attempts = attempts(&ctx.run.variables).map_err(Ended::Error)?;
    let mut attempt = 1;
    loop {
        match ctx.helper_section("get_sources", get_sources(ctx)).await {
            Err(Ended::Failed(_)) if attempt < attempts => {
                if attempt == 1 {
                    ctx.helper_section("clear_worktree", clear_worktree(ctx))
                        .await?;
                }
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// `GET_SOURCES_ATTEMPTS`: unset or not a number → 1; outside 1..=10 → an error.
fn attempts(vars: &Variables) -> Result<u32, ExecError> {
    let Some(Ok(n)) = vars
        .expanded("GET_SOURCES_ATTEMPTS")
        .map(|v| v.trim().parse::<i64>())
    else {
        return Ok(1);
    };
    u32::try_from(n)
        .ok()
        .filter(|n| (1..=10).contains(n))
        .ok_or_else(|| {
            ExecError::Job(format!(
                "number of attempts out of the range [1, 10] for stage: get_sources                  (GET_SOURCES_ATTEMPTS={n})"
            ))
        })
}

/// `clear_worktree`: `git rm -rf` and `git clean -ffdx` in the project directory, if it exists.
async fn clear_worktree(ctx: &JobCtx<'_>) -> Result<i64, ExecError> {
    let dir = quote(&ctx.project_dir());
    let lines = vec![
        format!(
            "printf '%s\\n' {}",
            quote(&git::notice("Deleting tracked and untracked files..."))
        ),
        format!("if [ -d {dir} ]; then"),
        format!("cd {dir}"),
        "git rm -rf --ignore-unmatch . >/dev/null".into(),
        "git clean -ffdx".into(),
        "fi".into(),
    ];
    ctx.run_helper_stage("clear_worktree", &lines, &ctx.run.variables)
        .await
}

/// Runs `get_sources` for the job; the helper script's exit code (0 when nothing ran).
async fn get_sources(ctx: &JobCtx<'_>) -> Result<i64, ExecError> {
    let vars = &ctx.run.variables;
    let strategy = GitStrategy::of(&ctx.run.job, vars);
    if strategy == GitStrategy::None {
        for line in git::skipped_lines(strategy) {
            ctx.log.line(&line);
        }
        return Ok(0);
    }
    let lines = git::get_sources_script(&git::Sources {
        job: &ctx.run.job,
        vars,
        strategy,
        project_dir: &ctx.project_dir(),
        tmp_dir: &ctx.tmp_dir(),
    })
    .map_err(|e| ExecError::Job(e.to_string()))?;
    ctx.run_helper_stage("get_sources", &lines, vars).await
}

/// `GIT_CLONE_PATH`: where the project goes instead of `CI_PROJECT_DIR` (GitLab Runner's
/// `custom_build_dir`, on by default for the docker executors). Pushes `CI_PROJECT_DIR` and
/// `RUNNER_TEMP_PROJECT_DIR` overrides onto `vars` (later wins); an error when the path leaves
/// the builds directory, as GitLab Runner refuses it.
pub(super) fn apply_clone_path(vars: &mut Variables, builds_dir: &str) -> Result<(), ExecError> {
    let Some(raw) = vars
        .expanded("GIT_CLONE_PATH")
        .filter(|p| !p.trim().is_empty())
    else {
        return Ok(());
    };
    let builds = clean_path(builds_dir);
    let path = clean_path(raw.trim());
    let inside = path
        .strip_prefix(&builds)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
    if !raw.trim().starts_with('/') || !inside || path == builds {
        return Err(ExecError::Job(format!(
            "the GIT_CLONE_PATH={raw:?} has to be within {builds_dir:?}"
        )));
    }
    vars.push(JobVariable::plain("CI_PROJECT_DIR", &path));
    vars.push(JobVariable::plain(
        "RUNNER_TEMP_PROJECT_DIR",
        format!("{path}.tmp"),
    ));
    Ok(())
}

/// `path.Clean` for absolute slash paths: no `.`, no `..`, no doubled or trailing `/`.
fn clean_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(path: &str) -> Variables {
        Variables::new(vec![
            JobVariable::plain("CI_BUILDS_DIR", "/builds"),
            JobVariable::plain("CI_PROJECT_DIR", "/builds/g/p"),
            JobVariable::plain("GIT_CLONE_PATH", path),
        ])
    }

    #[test]
    fn get_sources_attempts_default_to_one_and_stay_within_ten() {
        let v = |s: &str| Variables::new(vec![JobVariable::plain("GET_SOURCES_ATTEMPTS", s)]);
        assert_eq!(attempts(&Variables::default()).unwrap(), 1);
        assert_eq!(attempts(&v("x")).unwrap(), 1);
        assert_eq!(attempts(&v("3")).unwrap(), 3);
        assert_eq!(attempts(&v("10")).unwrap(), 10);
        for bad in ["0", "11", "-1"] {
            let e = attempts(&v(bad)).unwrap_err();
            assert!(e.to_string().contains("out of the range [1, 10]"), "{e}");
        }
    }

    #[test]
    fn a_clone_path_inside_the_builds_dir_moves_the_project() {
        let mut vars = with("$CI_BUILDS_DIR/custom//./dir/");
        apply_clone_path(&mut vars, "/builds").unwrap();
        assert_eq!(vars.get("CI_PROJECT_DIR"), Some("/builds/custom/dir"));
        assert_eq!(
            vars.get("RUNNER_TEMP_PROJECT_DIR"),
            Some("/builds/custom/dir.tmp")
        );
    }

    #[test]
    fn a_clone_path_outside_the_builds_dir_is_refused() {
        for path in [
            "/tmp/x",
            "/builds/../etc",
            "relative/x",
            "/builds",
            "/buildsx/y",
        ] {
            let mut vars = with(path);
            let e = apply_clone_path(&mut vars, "/builds").unwrap_err();
            assert!(
                e.to_string().contains("has to be within \"/builds\""),
                "{path}: {e}"
            );
            assert_eq!(vars.get("CI_PROJECT_DIR"), Some("/builds/g/p"));
        }
        let mut none = Variables::new(vec![JobVariable::plain("CI_PROJECT_DIR", "/p")]);
        apply_clone_path(&mut none, "/builds").unwrap();
        assert_eq!(none.get("CI_PROJECT_DIR"), Some("/p"));
    }
}
