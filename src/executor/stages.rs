//! The order of a job's stages and what ends them (GitLab Runner's `common/build.go`):
//! `prepare_executor` (image, volume, network, services, build container) → the stages before the user
//! steps (`get_sources`, …, in the helper container) → the user steps (`step_script`,
//! `step_release`, …) → `after_script`. Every stage is bounded by the job timeout and stopped by
//! a graceful cancel; user steps also by `RUNNER_SCRIPT_TIMEOUT`. When a stage before the user
//! steps fails, the user steps and `after_script` are skipped (as GitLab Runner does); otherwise
//! `after_script` runs with `CI_JOB_STATUS` telling how the steps ended, under its own timeout.
//! Abort is the caller's business: it drops this future.
//!
//! Each non-user stage is one call in [`before_user_steps`] (or after the user steps), wrapped by
//! [`JobCtx::helper_section`]; its logic lives in its own file.

use super::artifacts;
use super::auth::{self, RegistryAuths};
use super::cleanup::{self, Names};
use super::container::{self, BuildContainer, Role, BUILDS_DIR};
use super::error::{ExecError, Phase};
use super::script::StepScript;
use super::section::{stage_description, RunnerLog};
use super::services::{Networking, Services};
use super::{helper, pull, sources, timeouts, JobOutcome, JobRun};
use crate::config::DockerConfig;
use crate::job::{JobVariable, Step, StepWhen, Variables};
use bollard::Docker;
use std::collections::HashMap;
use std::future::Future;
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

/// Why stages stopped before their end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Interrupt {
    TimedOut,
    Canceled,
}

impl Interrupt {
    fn outcome(self) -> JobOutcome {
        match self {
            Interrupt::TimedOut => JobOutcome::TimedOut,
            Interrupt::Canceled => JobOutcome::Canceled,
        }
    }

    /// The trace's warning for stage `stage` being stopped.
    fn warn(self, log: &RunnerLog, stage: &str) {
        match self {
            Interrupt::TimedOut => log.warning(&format!(
                "{stage} could not run to completion because the timeout was exceeded."
            )),
            Interrupt::Canceled => log.warning("script canceled externally (UI, API)"),
        }
    }
}

/// One job's run: what it needs from the caller, borrowed for the run's length.
pub(super) struct JobCtx<'a> {
    pub docker: &'a Docker,
    pub settings: &'a DockerConfig,
    pub run: &'a JobRun,
    pub names: &'a Names,
    pub log: RunnerLog,
    /// Registry credentials for every image the job pulls (job, services, helper).
    pub auths: RegistryAuths,
    labels: HashMap<String, String>,
    deadline: Instant,
    /// The helper container's id once a stage made it (see `helper.rs`).
    pub(super) helper: tokio::sync::OnceCell<String>,
}

impl<'a> JobCtx<'a> {
    /// A run starting now: the job timeout counts from here.
    pub(super) fn new(
        docker: &'a Docker,
        settings: &'a DockerConfig,
        run: &'a JobRun,
        names: &'a Names,
    ) -> Self {
        let timeout = std::time::Duration::from_secs(run.job.timeout_secs());
        let host_config = auth::host_config_path(|key| std::env::var(key).ok());
        let auths =
            RegistryAuths::resolve(&run.variables, host_config.as_deref(), &run.job.credentials);
        JobCtx {
            auths,
            docker,
            settings,
            run,
            names,
            log: RunnerLog::new(run.trace.clone(), run.job.features.trace_sections),
            labels: cleanup::labels(&run.labels),
            deadline: crate::time::deadline_after(timeout),
            helper: tokio::sync::OnceCell::new(),
        }
    }

    /// The labels every object of the job carries.
    pub(super) fn labels(&self) -> &HashMap<String, String> {
        &self.labels
    }

    /// The network mode of every container of the job: `[runners.docker] network_mode`, else
    /// the per-job network `prepare` made.
    pub(super) fn network_mode(&self) -> String {
        self.settings
            .network_mode
            .clone()
            .unwrap_or_else(|| self.names.network.clone())
    }

    /// Runs `fut` unless the graceful cancel or `deadline` comes first (then `fut` is dropped).
    async fn bounded<F: Future>(&self, deadline: Instant, fut: F) -> Result<F::Output, Interrupt> {
        tokio::select! {
            biased;
            _ = self.run.cancel.cancelled() => Err(Interrupt::Canceled),
            _ = tokio::time::sleep_until(deadline) => Err(Interrupt::TimedOut),
            out = fut => Ok(out),
        }
    }

    /// GitLab Runner's executor name, for the `Preparing the "…" executor` header.
    fn executor_name(&self) -> &'static str {
        if self.run.labels.vm.is_empty() {
            "docker"
        } else {
            "docker+machine"
        }
    }

    /// `CI_PROJECT_DIR`, where the sources go and the scripts run.
    pub(super) fn project_dir(&self) -> String {
        self.run
            .variables
            .expanded("CI_PROJECT_DIR")
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| format!("{BUILDS_DIR}/project-{}", self.run.job.job_info.project_id))
    }

    /// `RUNNER_TEMP_PROJECT_DIR`, where `file: true` variables are written.
    pub(super) fn tmp_dir(&self) -> String {
        self.run
            .variables
            .expanded("RUNNER_TEMP_PROJECT_DIR")
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| format!("{}.tmp", self.project_dir()))
    }

    /// Image, volume, network and build container; the container's id.
    async fn prepare(&self) -> Result<String, ExecError> {
        let job = &self.run.job;
        let image = pull::resolve_image(job, self.settings, &self.run.variables)?;
        self.log
            .line(&format!("Using Docker executor with image {image} ..."));
        for warning in self.auths.warnings() {
            self.log.warning(warning);
        }
        let policies = pull::pull_policies(job, self.settings)?;
        let job_image = job.image.as_ref();
        let platform = job_image.and_then(|i| i.docker_platform());
        pull::ensure_image(
            self.docker,
            &self.log,
            &image,
            &policies,
            platform.as_deref(),
            &self.auths,
        )
        .await?;
        container::create_volume(self.docker, &self.names.builds_volume, &self.labels).await?;
        if self.settings.network_mode.is_none() {
            container::create_network(self.docker, &self.names.network, &self.labels).await?;
        }
        let networking = Networking::from_mode(&self.network_mode());
        let extra_hosts = self.start_services(&networking).await?;
        let entrypoint = job_image
            .map(|i| i.entrypoint.clone())
            .filter(|e| !e.is_empty());
        BuildContainer {
            role: Role::Build,
            name: &self.names.build_container,
            image: &image,
            entrypoint,
            user: job_image.and_then(|i| i.docker_user()),
            settings: self.settings,
            builds_volume: &self.names.builds_volume,
            cache_volume: None,
            network_mode: Some(self.network_mode()),
            network_endpoint: networking
                .endpoint(&["build".to_string(), self.names.build_container.clone()]),
            extra_hosts,
            labels: &self.labels,
        }
        .create(self.docker)
        .await
    }

    /// Starts the job's services and waits for them; the build container's `/etc/hosts`
    /// entries for them (host and built-in network modes).
    async fn start_services(&self, networking: &Networking) -> Result<Vec<String>, ExecError> {
        if self.run.job.services.is_empty() {
            return Ok(Vec::new());
        }
        let services = Services {
            docker: self.docker,
            settings: self.settings,
            log: &self.log,
            variables: &self.run.variables,
            auths: &self.auths,
            labels: &self.labels,
            name_prefix: &self.names.prefix,
            builds_volume: &self.names.builds_volume,
            networking,
        };
        let started = services.start_all(&self.run.job.services).await?;
        if let Some(timeout) = self.settings.wait_for_services_timeout {
            let helper = helper::helper_image(self.settings);
            services.wait_all(&started, timeout, &helper).await;
        }
        Ok(started
            .iter()
            .flat_map(|s| s.extra_hosts(networking))
            .collect())
    }

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
            Role::Build,
            container_id,
            &script,
            &self.run.trace,
        )
        .await
    }

    /// Runs a non-user stage in its trace section (`name`, with GitLab Runner's header),
    /// bounded by the job timeout and the graceful cancel. `stage` says how it ended: an exit
    /// code (0 = on to the next stage), or an error. An interrupted stage's helper container
    /// is killed.
    pub(super) async fn helper_section<F>(&self, name: &str, stage: F) -> Result<(), Ended>
    where
        F: Future<Output = Result<i64, ExecError>>,
    {
        self.log.start(name, &stage_description(name));
        let result = self.bounded(self.deadline, stage).await;
        self.log.end(name);
        match result {
            Ok(Ok(0)) => Ok(()),
            Ok(Ok(code)) => Err(Ended::Failed(i32::try_from(code).unwrap_or(i32::MAX))),
            Ok(Err(e)) => Err(Ended::Error(e)),
            Err(interrupt) => {
                interrupt.warn(&self.log, name);
                match self.kill_helper().await {
                    Ok(()) => Err(Ended::Interrupted(interrupt)),
                    Err(e) => Err(Ended::Error(e)),
                }
            }
        }
    }
}

impl JobCtx<'_> {
    /// Runs a stage after `after_script` (cache archive, artifacts upload) in its section,
    /// bounded by the job's timeout only: a graceful cancel does not cut it short.
    pub(super) async fn after_job_section<F>(&self, name: &str, stage: F) -> Result<(), Ended>
    where
        F: Future<Output = Result<i64, ExecError>>,
    {
        self.log.start(name, &stage_description(name));
        let result = tokio::time::timeout_at(self.deadline, stage).await;
        self.log.end(name);
        match result {
            Ok(Ok(0)) => Ok(()),
            Ok(Ok(code)) => Err(Ended::Failed(i32::try_from(code).unwrap_or(i32::MAX))),
            Ok(Err(e)) => Err(Ended::Error(e)),
            Err(_elapsed) => {
                Interrupt::TimedOut.warn(&self.log, name);
                match self.kill_helper().await {
                    Ok(()) => Err(Ended::Interrupted(Interrupt::TimedOut)),
                    Err(e) => Err(Ended::Error(e)),
                }
            }
        }
    }
}

/// How the stages up to `after_script` ended, short of success.
pub(super) enum Ended {
    /// A stage exited non-zero (the job fails as a script failure with this code).
    Failed(i32),
    /// The job timed out or was canceled.
    Interrupted(Interrupt),
    /// The executor could not run a stage.
    Error(ExecError),
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
pub(super) async fn run(ctx: &JobCtx<'_>) -> JobOutcome {
    let log = &ctx.log;
    log.start(
        "prepare_executor",
        &format!("Preparing the \"{}\" executor", ctx.executor_name()),
    );
    let prepared = ctx.bounded(ctx.deadline, ctx.prepare()).await;
    log.end("prepare_executor");
    let container_id = match prepared {
        Ok(Ok(id)) => id,
        Ok(Err(e)) => return fail(log, e, Phase::Prepare),
        Err(interrupt) => return interrupt.outcome(),
    };

    match before_user_steps(ctx).await {
        Ok(()) => {}
        Err(Ended::Failed(code)) => {
            // As GitLab Runner: no user step and no after_script, but the job's on_failure
            // cache and artifacts are still saved. The stage's own failure is what the job
            // reports, so theirs is only written to the trace.
            let _ = after_job_uploads(ctx, false).await;
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
        if let Err(e) = after_script(ctx, step, &container_id, status).await {
            return fail(log, e, Phase::Run);
        }
    }
    let uploaded = after_job_uploads(ctx, interrupted.is_none() && exit_code == 0).await;
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
