//! The order of a job's stages and what ends them (GitLab Runner's `common/build.go`):
//! `prepare_executor` (image, volume, network, services, build container) → `get_sources` →
//! the user steps
//! (`step_script`, `step_release`, …) → `after_script`. User steps are bounded by the job timeout
//! (and `RUNNER_SCRIPT_TIMEOUT`) and stopped by a graceful cancel; `after_script` then still runs
//! with `CI_JOB_STATUS` telling why, under its own timeout. Abort is the caller's business: it
//! drops this future.

use super::auth::{self, RegistryAuths};
use super::cleanup::{self, Names};
use super::container::{self, BuildContainer, BUILDS_DIR};
use super::error::{ExecError, Phase};
use super::script::StepScript;
use super::section::{stage_description, RunnerLog};
use super::services::{self, Networking, Services};
use super::{pull, timeouts, JobOutcome, JobRun};
use crate::config::DockerConfig;
use crate::job::{JobVariable, Step, StepWhen, Variables};
use bollard::Docker;
use std::collections::HashMap;
use std::future::Future;
use tokio::time::Instant;

/// Which container a stage runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Runs {
    /// The helper image (git, cache, artifacts). None of today's stages needs it: a stage with
    /// nothing to do starts no container.
    Helper,
    /// The build container from the job image (user steps and `after_script`).
    Build,
}

/// A stage that runs a script, in GitLab Runner's order.
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

    /// The container the stage runs in.
    pub(super) fn runs(&self) -> Runs {
        match self {
            Stage::User(_) | Stage::AfterScript(_) => Runs::Build,
        }
    }

    fn lines(&self) -> &[String] {
        match self {
            Stage::User(step) | Stage::AfterScript(step) => &step.script,
        }
    }
}

/// Why user steps stopped before their end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interrupt {
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
            deadline: Instant::now() + timeout,
        }
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

    fn project_dir(&self) -> String {
        self.run
            .variables
            .expanded("CI_PROJECT_DIR")
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| format!("{BUILDS_DIR}/project-{}", self.run.job.job_info.project_id))
    }

    fn tmp_dir(&self) -> String {
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
        let network_mode = match &self.settings.network_mode {
            Some(mode) => mode.clone(),
            None => {
                container::create_network(self.docker, &self.names.network, &self.labels).await?;
                self.names.network.clone()
            }
        };
        let networking = Networking::from_mode(&network_mode);
        let extra_hosts = self.start_services(&networking).await?;
        let entrypoint = job_image
            .map(|i| i.entrypoint.clone())
            .filter(|e| !e.is_empty());
        BuildContainer {
            name: &self.names.build_container,
            image: &image,
            entrypoint,
            user: job_image.and_then(|i| i.docker_user()),
            settings: self.settings,
            builds_volume: &self.names.builds_volume,
            network_mode: Some(network_mode),
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
            let helper = services::helper_image(self.settings);
            services.wait_all(&started, timeout, &helper).await;
        }
        Ok(started
            .iter()
            .flat_map(|s| s.extra_hosts(networking))
            .collect())
    }

    /// `get_sources`: only `GIT_STRATEGY=none` for now, which needs no container (the project
    /// directory is made by the first step's script).
    fn get_sources(&self) -> Result<(), ExecError> {
        let strategy = self
            .run
            .variables
            .expanded("GIT_STRATEGY")
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| {
                if self.run.job.allow_git_fetch {
                    "fetch".into()
                } else {
                    "clone".into()
                }
            });
        if strategy == "none" {
            self.log.line("Skipping Git repository setup");
            self.log.line("Skipping Git checkout");
            self.log.line("Skipping Git submodules setup");
            return Ok(());
        }
        Err(ExecError::Unsupported(format!(
            "Fetching sources with GIT_STRATEGY={strategy} is not supported yet \
             (only GIT_STRATEGY=none)"
        )))
    }

    /// Runs one stage's script in its container; the exit code.
    async fn run_stage(
        &self,
        stage: Stage<'_>,
        container_id: &str,
        vars: &Variables,
    ) -> Result<i64, ExecError> {
        if stage.runs() == Runs::Helper {
            return Err(ExecError::Unsupported(format!(
                "stage {} needs the helper image, which this executor does not run yet",
                stage.name()
            )));
        }
        let project_dir = self.project_dir();
        let tmp_dir = self.tmp_dir();
        let script = StepScript {
            variables: vars,
            project_dir: &project_dir,
            tmp_dir: &tmp_dir,
            lines: stage.lines(),
        }
        .render();
        container::run_script(self.docker, container_id, &script, &self.run.trace).await
    }
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

    log.start("get_sources", &stage_description("get_sources"));
    let sources = ctx.get_sources();
    log.end("get_sources");
    if let Err(e) = sources {
        return fail(log, e, Phase::Run);
    }

    let script_deadline = match timeouts::script_timeout(&ctx.run.variables) {
        Some(limit) => ctx.deadline.min(Instant::now() + limit),
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
                match interrupt {
                    Interrupt::TimedOut => log.warning(&format!(
                        "{} could not run to completion because the timeout was exceeded.",
                        stage.name()
                    )),
                    Interrupt::Canceled => log.warning("script canceled externally (UI, API)"),
                }
                if let Err(e) = container::kill(ctx.docker, &container_id).await {
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
    match (interrupted, exit_code) {
        (Some(interrupt), _) => interrupt.outcome(),
        (None, 0) => JobOutcome::Succeeded,
        (None, code) => JobOutcome::ScriptFailed(code),
    }
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
            container::kill(ctx.docker, container_id).await
        }
    }
}

/// Writes why the job stops and returns its outcome.
fn fail(log: &RunnerLog, e: ExecError, phase: Phase) -> JobOutcome {
    log.error(&e.to_string());
    e.outcome(phase)
}
