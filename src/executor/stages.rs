//! The order of a job's stages and what ends them (GitLab Runner's `common/build.go`):
//! `prepare_executor` (image, volume, network, services, build container) → the stages before the user
//! steps (`get_sources`, …, in the helper container) → the user steps (`step_script`,
//! `step_release`, …) → `after_script`. Every stage is bounded by the job timeout and stopped by
//! a graceful cancel; user steps also by `RUNNER_SCRIPT_TIMEOUT`. When a stage before the user
//! steps fails, the user steps and `after_script` are skipped (as GitLab Runner does); otherwise
//! `after_script` runs with `CI_JOB_STATUS` telling how the steps ended, under its own timeout.
//! Abort is the caller's business: it drops this future.
//!
//! This file only puts the stages in order. Each non-user stage is one call in
//! [`before_user_steps`] (or after the user steps), wrapped by [`JobCtx::helper_section`]; its
//! logic lives in its own file (`prepare.rs`, `sources.rs`, `cache.rs`, `artifacts.rs`), on the
//! run context of `ctx.rs`.

use super::container::{self, Role};
use super::ctx::{Ended, Interrupt, JobCtx};
use super::error::{ExecError, Phase};
use super::script::StepScript;
use super::section::{stage_description, RunnerLog};
use super::{artifacts, sources, timeouts, JobOutcome};
use crate::job::{JobVariable, Step, StepWhen, Variables};
use tokio::time::Instant;

/// A stage that runs in the build container, in GitLab Runner's order (stages in the helper
/// container go through [`JobCtx::run_helper_stage`]).
#[derive(Debug, Clone, Copy)]
pub(super) enum Stage<'j> {
    /// A user step (`script`, `release`, …): `step_<name>`.
    User(&'j Step),
    /// The job's `after_script`.
    AfterScript(&'j Step),
}

impl Stage<'_> {
    /// The section name (`step_script`, `after_script`).
    pub(super) fn name(&self) -> String {
        match self {
            Stage::User(step) => format!("step_{}", step.name.to_lowercase()),
            Stage::AfterScript(_) => "after_script".into(),
        }
    }

    fn lines(&self) -> &[String] {
        match self {
            Stage::User(step) | Stage::AfterScript(step) => &step.script,
        }
    }
}

impl JobCtx<'_> {
    /// Runs one stage's script in the build container; the exit code.
    async fn run_stage(
        &self,
        stage: Stage<'_>,
        container_id: &str,
        vars: &Variables,
    ) -> Result<i64, ExecError> {
        let project_dir = self.project_dir();
        let tmp_dir = self.tmp_dir();
        let script = StepScript {
            variables: vars,
            project_dir: &project_dir,
            tmp_dir: &tmp_dir,
            lines: stage.lines(),
            echo: true,
        }
        .render();
        container::run_script(
            self.docker,
            self.run.start_slots.as_deref(),
            Role::Build,
            container_id,
            &script,
            &self.run.trace,
        )
        .await
    }
}

/// The stages between `prepare_executor` and the user steps, in GitLab Runner's order: the
/// first that does not succeed ends the job's way to the user steps.
async fn before_user_steps(ctx: &JobCtx<'_>) -> Result<(), Ended> {
    sources::get_sources_stage(ctx).await?;
    if ctx.has_cache() {
        ctx.helper_section("restore_cache", ctx.restore_cache())
            .await?;
    }
    artifacts::download_stage(ctx).await?;
    Ok(())
}

/// Runs every stage of the job and says how it ended. Leaves cleanup to the caller.
///
/// The phases before and after the user's steps (preparation, sources, caches, artifacts,
/// `after_script`) run boxed: their futures are the biggest of a job (≈ 13 KB inline), and a
/// running job spends its time in the user's steps, so inline they would make every running
/// job's task hold that much for nothing (at 2,000 jobs at once, ≈ 9 KB of each job's ≈ 84).
pub(super) async fn run(ctx: &JobCtx<'_>) -> JobOutcome {
    let log = &ctx.log;
    log.executor_stage(super::observer::EXECUTOR_PREPARE);
    log.start(
        "prepare_executor",
        &format!("Preparing the \"{}\" executor", ctx.executor_name()),
    );
    let prepared = Box::pin(ctx.bounded(ctx.deadline, ctx.prepare())).await;
    log.end("prepare_executor");
    let container_id = match prepared {
        Ok(Ok(id)) => id,
        Ok(Err(e)) => return fail(log, e, Phase::Prepare),
        Err(interrupt) => return interrupt.outcome(),
    };
    log.executor_stage(super::observer::EXECUTOR_RUN);

    match Box::pin(before_user_steps(ctx)).await {
        Ok(()) => {}
        Err(Ended::Failed(code)) => {
            // As GitLab Runner: no user step and no after_script, but the job's on_failure
            // cache and artifacts are still saved. The stage's own failure is what the job
            // reports, so theirs is only written to the trace.
            let _ = Box::pin(after_job_uploads(ctx, false)).await;
            return JobOutcome::ScriptFailed(code);
        }
        Err(Ended::Interrupted(interrupt)) => return interrupt.outcome(),
        Err(Ended::Error(e)) => return fail(log, e, Phase::Run),
    }

    let script_deadline = match timeouts::script_timeout(&ctx.run.variables) {
        Some(limit) => ctx.deadline.min(crate::time::deadline_after(limit)),
        None => ctx.deadline,
    };
    let mut exit_code = 0;
    let mut interrupted = None;
    for step in ctx.run.job.user_steps() {
        let runs = match step.when {
            StepWhen::OnSuccess => exit_code == 0,
            StepWhen::OnFailure => exit_code != 0,
            StepWhen::Always => true,
        };
        if !runs || step.script.is_empty() {
            continue;
        }
        let stage = Stage::User(step);
        log.start(&stage.name(), &stage_description(&stage.name()));
        let result = ctx
            .bounded(
                script_deadline,
                ctx.run_stage(stage, &container_id, &ctx.run.variables),
            )
            .await;
        log.end(&stage.name());
        match result {
            Ok(Ok(0)) => {}
            Ok(Ok(code)) => exit_code = i32::try_from(code).unwrap_or(i32::MAX),
            Ok(Err(e)) => return fail(log, e, Phase::Run),
            Err(interrupt) => {
                interrupt.warn(log, &stage.name());
                if let Err(e) = container::kill(ctx.docker, Role::Build, &container_id).await {
                    return fail(log, e, Phase::Run);
                }
                interrupted = Some(interrupt);
                break;
            }
        }
    }

    let status = match (interrupted, exit_code) {
        (Some(Interrupt::TimedOut), _) => "timedout",
        (Some(Interrupt::Canceled), _) => "canceled",
        (None, 0) => "success",
        (None, _) => "failed",
    };
    if let Some(step) = ctx.run.job.after_script() {
        if let Err(e) = Box::pin(after_script(ctx, step, &container_id, status)).await {
            return fail(log, e, Phase::Run);
        }
    }
    let uploaded = Box::pin(after_job_uploads(
        ctx,
        interrupted.is_none() && exit_code == 0,
    ))
    .await;
    match (interrupted, exit_code, uploaded) {
        (Some(interrupt), _, _) => interrupt.outcome(),
        (None, 0, Ok(())) => JobOutcome::Succeeded,
        // The job's own failure comes first; an upload's failure fails a job that succeeded.
        (None, 0, Err(Ended::Failed(code))) => JobOutcome::ScriptFailed(code),
        (None, 0, Err(Ended::Interrupted(interrupt))) => interrupt.outcome(),
        (None, 0, Err(Ended::Error(e))) => fail(log, e, Phase::Run),
        (None, code, _) => JobOutcome::ScriptFailed(code),
    }
}

/// The stages after `after_script` (cache archive, then artifacts upload), run unless the job's
/// own deadline has passed (as GitLab Runner, whose job context is then done); after a graceful
/// cancel too (GitLab Runner runs them with the job's context, not the script's).
async fn after_job_uploads(ctx: &JobCtx<'_>, job_succeeded: bool) -> Result<(), Ended> {
    if Instant::now() >= ctx.deadline {
        return Ok(());
    }
    if ctx.has_cache() {
        let name = super::cache::archive_stage_name(job_succeeded);
        match ctx
            .after_job_section(name, ctx.archive_cache(job_succeeded))
            .await
        {
            // A cache that could not be saved fails no job (GitLab Runner warns and goes on).
            Ok(()) | Err(Ended::Failed(_)) => {}
            Err(other) => return Err(other),
        }
    }
    artifacts::upload_stage(ctx, job_succeeded).await
}

/// Runs `after_script` with `CI_JOB_STATUS=status` under its own timeout. Its failure or timeout
/// is written to the trace and otherwise ignored; only losing the host is an error.
async fn after_script(
    ctx: &JobCtx<'_>,
    step: &Step,
    container_id: &str,
    status: &str,
) -> Result<(), ExecError> {
    let mut vars = ctx.run.variables.clone();
    vars.push(JobVariable::plain("CI_JOB_STATUS", status));
    let limit = timeouts::after_script_timeout(&vars);
    let stage = Stage::AfterScript(step);
    ctx.log
        .start(&stage.name(), &stage_description(&stage.name()));
    let result = tokio::time::timeout(limit, ctx.run_stage(stage, container_id, &vars)).await;
    ctx.log.end(&stage.name());
    match result {
        Ok(Ok(0)) => Ok(()),
        Ok(Ok(code)) => {
            ctx.log.warning(&format!(
                "after_script failed, but job will continue unaffected: exit code {code}"
            ));
            Ok(())
        }
        Ok(Err(e)) => Err(e),
        Err(_) => {
            ctx.log.warning(&format!(
                "after_script failed, but job will continue unaffected: \
                 it ran longer than {}s",
                limit.as_secs()
            ));
            container::kill(ctx.docker, Role::Build, container_id).await
        }
    }
}

/// Writes why the job stops and returns its outcome.
fn fail(log: &RunnerLog, e: ExecError, phase: Phase) -> JobOutcome {
    log.error(&e.to_string());
    e.outcome(phase)
}
