//! The `get_sources` stage: what `GIT_STRATEGY` asks for, and running it in the helper
//! container. `none` starts no container at all (the build container's script makes the project
//! directory); `empty` and the git strategies run a script from [`super::git`] in the helper.

use super::error::ExecError;
use super::git::{self, GitStrategy};
use super::stages::JobCtx;

/// Runs `get_sources` for the job; the helper script's exit code (0 when nothing ran).
pub(super) async fn get_sources(ctx: &JobCtx<'_>) -> Result<i64, ExecError> {
    let vars = &ctx.run.variables;
    let strategy = GitStrategy::of(&ctx.run.job, vars);
    if strategy == GitStrategy::None {
        for line in git::skipped_lines(strategy) {
            ctx.log.line(&line);
        }
        return Ok(0);
    }
    let lines = git::get_sources_script(&git::Sources {
        strategy,
        project_dir: &ctx.project_dir(),
    })
    .map_err(|e| match e {
        git::GitError::Unsupported(m) => ExecError::Unsupported(m),
    })?;
    ctx.run_helper_stage("get_sources", &lines, vars).await
}
