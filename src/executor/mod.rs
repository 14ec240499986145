//! Runs one job's stages in containers through the Docker API (bollard) and says how it ended.
//! Knows nothing of clouds or of the coordinator: it is handed a Docker connection, the job, its
//! variables and a trace to write into, and returns a [`JobOutcome`].
//!
//! Files: `stages` (only the order of the stages, their timeouts and cancel), `ctx` (the run
//! context every stage borrows, below them all), `prepare` (`prepare_executor`), `container`
//! (volume, build and helper containers, running a script), `pump` (their output into the trace,
//! in batches), `helper_container` (the
//! helper container and the sections of the stages it runs), `helper_load` (loading the helper
//! image from `helper_image_archive`), `network` (the per-job network of `FF_NETWORK_PER_BUILD`), `sources` (`get_sources`) with
//! `git` (its script), `cache` and `artifacts` (their stages' scripts), `script` (the shell
//! text), `pull` (image and pull policies), `section` (trace sections and runner lines),
//! `timeouts`, `cleanup` (names, labels, removal), `error`, `services` (service containers,
//! aliases, waiting for their ports), `auth` (registry credentials for pulls).
//!
//! Invariants: variables reach the build container only inside the script written to stdin
//! (never as `Env`; service containers get their variables as `Env`, as in GitLab Runner, and
//! the `bollard`/`hyper` log targets stay at warn so request bodies are never logged); every
//! container, volume and network a job makes carries the `com.flotilla.*` labels
//! and is removed when the job ends, however it ends.

mod allowed;
mod artifacts;
mod auth;
mod cache;
mod cleanup;
mod container;
mod ctx;
mod error;
mod git;
mod gitlab_labels;
mod helper_container;
mod helper_load;
mod image_glob;
mod leftovers;
mod network;
mod observer;
mod prepare;
mod pull;
mod pump;
mod script;
mod section;
mod services;
mod sources;
mod stages;
mod start_slots;
mod timeouts;

pub use allowed::{check_job as check_allowed, Refusal};
pub use cleanup::{LABEL_JOB_ID, LABEL_MANAGED, LABEL_MANAGER, LABEL_RUN, LABEL_RUNNER, LABEL_VM};
pub use gitlab_labels::PREFIX as GITLAB_LABEL_PREFIX;
pub use leftovers::{remove_leftovers, Leftovers};
pub use observer::StageObserver;
pub use services::{LABEL_SERVICE, LABEL_TYPE};
pub use start_slots::{start_slots, STARTS_IN_FLIGHT};

use crate::config::DockerConfig;
pub use crate::job::JobOutcome;

use crate::job::{JobPayload, Variables};
use crate::trace::JobTrace;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long the removal of a job's objects may take before the rest is left to the drop guard's
/// detached cleanup (an engine that stopped answering would otherwise hold the job's slot).
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Labels every container of a job carries (`com.flotilla.*`).
#[derive(Debug, Clone, Default)]
pub struct ContainerLabels {
    /// The job id.
    pub job_id: i64,
    /// The runner's short token.
    pub runner: String,
    /// The VM name, empty on the local docker executor.
    pub vm: String,
    /// The manager id (`system_id`); empty: no leftover cleanup will ever find the objects.
    pub manager: String,
    /// The id of this process run.
    pub run: String,
}

/// One job handed to the executor.
pub struct JobRun {
    /// The job.
    pub job: Arc<JobPayload>,
    /// Every variable the job sees, in order (runner's and payload's).
    pub variables: Variables,
    /// Where output goes.
    pub trace: JobTrace,
    /// Labels for the job's containers.
    pub labels: ContainerLabels,
    /// Graceful cancel (`Job-Status: canceling`): stop the script, still run `after_script`.
    pub cancel: CancellationToken,
    /// Abort: stop everything at once and clean up.
    pub abort: CancellationToken,
    /// What the cache stages do (keys, paths, signed URLs), computed by the manager.
    pub cache: crate::cache::CachePlan,
    /// The runner's configured `url`: where helper commands reach GitLab (GitLab Runner's
    /// `--url`). Empty: the job's `CI_SERVER_URL`.
    pub coordinator_url: String,
    /// Told of the job's stage changes (the job's metrics); `None`: nobody listens.
    pub stages: Option<Arc<dyn StageObserver>>,
    /// The shared engine's container start slots ([`start_slots`]); `None`: the engine is the
    /// job's own (a docker+machine VM), starts are not bounded.
    pub start_slots: Option<Arc<tokio::sync::Semaphore>>,
}

/// Runs the job to its end and removes every container, volume and network it made.
///
/// `abort` stops the job at once (no `after_script`) and still cleans up before returning. If
/// this future is dropped instead, a guard starts the same cleanup on the current runtime.
pub async fn run_job(
    docker: &bollard::Docker,
    settings: &DockerConfig,
    mut run: JobRun,
) -> JobOutcome {
    let builds_dir = run
        .variables
        .expanded("CI_BUILDS_DIR")
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| container::BUILDS_DIR.to_string());
    if let Err(e) = sources::apply_clone_path(&mut run.variables, &builds_dir) {
        let log = section::RunnerLog::new(run.trace.clone(), run.job.features.trace_sections);
        log.error(&e.to_string());
        return e.outcome(error::Phase::Prepare);
    }
    let names = cleanup::Names::new(&run.labels, network::per_build(settings, &run.variables));
    let guard = cleanup::CleanupGuard::new(docker.clone(), names.clone(), run.labels.clone());
    let ctx = ctx::JobCtx::new(docker, settings, &run, &names);
    let outcome = tokio::select! {
        biased;
        _ = run.abort.cancelled() => {
            ctx.log.warning("job aborted: stopping its containers at once");
            JobOutcome::Canceled
        }
        outcome = stages::run(&ctx) => outcome,
    };
    ctx.log.executor_stage(observer::EXECUTOR_CLEANUP);
    if tokio::time::timeout(CLEANUP_TIMEOUT, guard.run())
        .await
        .is_err()
    {
        tracing::warn!(
            job_id = run.labels.job_id,
            "cleanup of the job's containers did not finish in time; continuing in the background"
        );
    }
    outcome
}
