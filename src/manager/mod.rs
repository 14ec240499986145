//! The manager wires everything together: one runner loop per `[[runners]]` entry requests jobs
//! from the coordinator, each job runs in its own task through the executor, and one `select!`
//! loop turns operator controls into the shutdown phases. This is the only module that joins the
//! coordinator, the executor and the persisted state.
//!
//! Invariant: every task is spawned on the one `TaskTracker`; shutdown is decide (a control
//! arrives), tell (cancel the request token, and for an abort the jobs' token), wait (the
//! tracker, bounded by `shutdown_timeout` for an abort).

mod concurrent_ids;
mod final_update;
mod job_task;
mod machines;
mod recovery;
mod reload;
mod rotation;
mod runner_loop;
mod runners;
mod slots;
mod tls_vars;

pub use reload::{ConfigSource, LogReload, LogReloadError};

use crate::config::Config;
use crate::coordinator::{ClientSettings, Coordinator, CoordinatorError};
use crate::job::FeaturesInfo;
use crate::lifecycle::Control;
use crate::state::{StateDir, StateError};
use crate::trace::JobTrace;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why the manager could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The state directory cannot be used.
    #[error(transparent)]
    State(#[from] StateError),
    /// The coordinator client cannot be built.
    #[error(transparent)]
    Coordinator(#[from] CoordinatorError),
    /// The VM fleets cannot be started.
    #[error(transparent)]
    Machines(#[from] machines::MachinesError),
    /// The metrics cannot be registered.
    #[error("cannot register the metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The admin server (`/metrics`, status page) cannot listen.
    #[error(transparent)]
    Admin(#[from] crate::metrics::ServerError),
    /// Another host runs with this `manager_id` (its VMs carry another `flotilla-host` label):
    /// this manager stopped without touching them.
    #[error("another host runs with manager_id {manager_id:?} ({seen}): this manager stopped without touching its VMs; give each host its own manager_id (or leave it unset)")]
    ManagerIdConflict { manager_id: String, seen: String },
}

/// Called with each job's id and trace as soon as the job is received.
pub type TraceHook = Arc<dyn Fn(i64, &JobTrace) + Send + Sync>;

/// Observation points for tests and benchmarks; production passes `Hooks::default()`.
#[derive(Clone, Default)]
pub struct Hooks {
    /// Called with each job's trace as soon as the job is received (before the ack).
    pub on_job_trace: Option<TraceHook>,
    /// Replaces the advertised features. Only for coordinators that refuse honest runners (the
    /// `gitlab-runner-mock` stub serves only runners advertising `refspecs`).
    pub features_override: Option<FeaturesInfo>,
    /// The counter `main`'s tracing layer feeds (`gitlab_runner_errors_total`); `None`: a
    /// counter nothing feeds (tests without that layer).
    pub errors: Option<crate::metrics::ErrorCounter>,
    /// Called with the admin server's address once it listens (tests bind port 0).
    pub on_admin_listening: Option<Arc<dyn Fn(std::net::SocketAddr) + Send + Sync>>,
    /// Where job traces keep their temp files; `None`: the system temp directory. Tests point
    /// it at a missing directory to make trace creation fail.
    pub trace_dir: Option<std::path::PathBuf>,
    /// The first wait between final-update attempts; `None`: GitLab Runner's 1 s. Tests shorten
    /// it so an outage of seconds stands for one of minutes (the waits keep doubling).
    pub final_update_backoff: Option<Duration>,
}

/// What every runner loop and job task shares. Created once by [`run_with`].
pub(crate) struct Shared {
    pub coordinator: Coordinator,
    pub state: StateDir,
    pub system_id: String,
    /// This process run's id (random): labels its Docker objects so that its own start-up
    /// cleanup of a killed predecessor's objects never touches them.
    pub run_id: String,
    pub hooks: Hooks,
    /// The configuration in force; a reload swaps it (a std `RwLock`: read for a clone of the
    /// `Arc`, never held across an await).
    config: RwLock<Arc<Config>>,
    /// The global `concurrent` slots: a job holds one from its request to its final update.
    pub concurrent: Arc<slots::Slots>,
    /// Cancelled when the operator asks to stop taking jobs (drain or abort).
    pub stop_requesting: CancellationToken,
    /// Cancelled on abort: running jobs stop and are reported interrupted.
    pub abort_jobs: CancellationToken,
    pub tracker: TaskTracker,
    /// Jobs between receipt and final update, for progress logs.
    pub active_jobs: AtomicUsize,
    /// The metrics (process state, job series) on the run's one registry.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl Shared {
    /// The configuration in force now.
    pub(crate) fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_config(&self, config: Arc<Config>) {
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = config;
    }
}

/// Runs the manager until a drain completes or an abort ends it, with observation hooks and no
/// configuration file (a reload is refused): what the integration tests call.
pub async fn run_with(
    config: Config,
    controls: mpsc::Receiver<Control>,
    hooks: Hooks,
) -> Result<(), RunError> {
    run_reloadable(config, None, controls, hooks).await
}

/// [`run_with`], reloading the configuration from `source` on [`Control::Reload`].
pub async fn run_reloadable(
    config: Config,
    source: Option<ConfigSource>,
    mut controls: mpsc::Receiver<Control>,
    hooks: Hooks,
) -> Result<(), RunError> {
    let state = StateDir::open_exclusive(&config.state_dir)?;
    let system_id = state.manager_id(config.manager_id.as_deref())?;
    let registry = prometheus::Registry::new();
    let metrics = Arc::new(crate::metrics::Metrics::new(
        registry.clone(),
        &config,
        &system_id,
        hooks.errors.as_ref(),
    )?);
    let executor = if config
        .runners
        .iter()
        .any(|r| r.executor == crate::config::ExecutorKind::DockerMachine)
    {
        "docker+machine"
    } else {
        "docker"
    };
    let coordinator = Coordinator::new(ClientSettings {
        executor: executor.into(),
        features: hooks
            .features_override
            .unwrap_or_else(FeaturesInfo::implemented),
        registry: registry.clone(),
        final_update_backoff: hooks
            .final_update_backoff
            .unwrap_or(ClientSettings::default().final_update_backoff),
        ..ClientSettings::default()
    })?;
    let shared = Arc::new(Shared {
        coordinator,
        state,
        system_id,
        run_id: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
        hooks,
        concurrent: slots::Slots::new(Some(config.concurrent.max(1))),
        config: RwLock::new(Arc::new(config)),
        stop_requesting: CancellationToken::new(),
        abort_jobs: CancellationToken::new(),
        tracker: TaskTracker::new(),
        active_jobs: AtomicUsize::new(0),
        metrics,
    });
    let config = shared.config();
    let live_pools = crate::metrics::LivePools::default();
    let admin = AdminTasks::default();
    if let Some(address) = &config.listen_address {
        let listener = crate::metrics::bind(address).await?;
        let source = Arc::new(crate::metrics::StatusSource {
            metrics: shared.metrics.clone(),
            config: {
                let shared = shared.clone();
                Arc::new(move || shared.config())
            },
            system_id: shared.system_id.clone(),
            fleets: live_pools.clone(),
            ready: {
                let coordinator = shared.coordinator.clone();
                Arc::new(move || coordinator.has_answered())
            },
        });
        let addr = crate::metrics::serve(listener, source, &admin.tracker, admin.cancel.clone());
        if let (Some(addr), Some(hook)) = (addr, &shared.hooks.on_admin_listening) {
            hook(addr);
        }
    }
    tracing::info!(
        version = crate::VERSION,
        system_id = %shared.system_id,
        runners = config.runners.len(),
        concurrent = config.concurrent,
        "flotilla starting"
    );
    let host_id = shared.state.host_id()?;
    let mut fleets = machines::Fleets::new(
        &shared.system_id,
        &host_id,
        &registry,
        &shared.metrics.fleet,
        live_pools,
    );
    recovery::fail_leftover_jobs(&shared).await;
    recovery::spawn_container_cleanup(&shared, &config);
    let runners = match runners::Runners::start(&shared, &mut fleets, &config).await {
        Ok(runners) => runners,
        Err(e) => {
            shared.stop_requesting.cancel();
            shared.abort_jobs.cancel();
            fleets.shutdown(tokio::time::Instant::now()).await;
            admin.stop().await;
            return Err(e.into());
        }
    };
    // Keeps the tracker busy until the manager stops taking jobs: with no runner (an empty
    // `[[runners]]` list, or a reload that removed them all) the manager idles, not exits.
    {
        let stop = shared.stop_requesting.clone();
        shared.tracker.spawn(async move { stop.cancelled().await });
    }
    shared.tracker.close();
    shared
        .metrics
        .process
        .set_state(crate::metrics::ProcessState::Running);
    let mut supervisor = Supervisor {
        shared: shared.clone(),
        fleets,
        runners,
        source,
        rotation: rotation::Rotation::default(),
        conflict: None,
    };
    let deadline = supervisor.supervise(&mut controls).await;
    supervisor.delete_every_vm(&mut controls, deadline).await;
    if let Err(e) = shared.state.flush().await {
        tracing::error!(error = %e, "cannot update the state directory's job list");
    }
    admin.stop().await;
    tracing::info!("flotilla stopped");
    match supervisor.conflict {
        Some(seen) => Err(RunError::ManagerIdConflict {
            manager_id: shared.system_id.clone(),
            seen,
        }),
        None => Ok(()),
    }
}

/// The admin server's task, kept apart from job tasks (the supervisor waits for those) so it
/// serves until the very end.
#[derive(Default)]
struct AdminTasks {
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl AdminTasks {
    async fn stop(self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// How long a drain waits for its VM deletions to be confirmed.
const DRAIN_DELETE_TIMEOUT: Duration = Duration::from_secs(600);

/// How often a drain logs what it still waits for.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// The main loop's state: the runners and pools a reload changes.
struct Supervisor {
    shared: Arc<Shared>,
    fleets: machines::Fleets,
    runners: runners::Runners,
    source: Option<ConfigSource>,
    /// Token rotation: what is due, and the manager's own last write of the file.
    rotation: rotation::Rotation,
    /// What a pool saw when it found another host with this manager id (the run then aborts
    /// and ends with [`RunError::ManagerIdConflict`]).
    conflict: Option<String>,
}

impl Supervisor {
    /// The one `select!` loop: waits for every job task to end, acting on controls meanwhile.
    /// Returns the abort deadline when the run ended by an abort (what is left of it bounds the
    /// VM deletions), `None` after a drain.
    async fn supervise(
        &mut self,
        controls: &mut mpsc::Receiver<Control>,
    ) -> Option<tokio::time::Instant> {
        let shared = self.shared.clone();
        let mut draining = false;
        let mut abort_deadline: Option<tokio::time::Instant> = None;
        let mut controls_open = true;
        let mut progress = tokio::time::interval(PROGRESS_EVERY);
        progress.tick().await;
        loop {
            tokio::select! {
                _ = shared.tracker.wait() => {
                    tracing::info!(phase = if abort_deadline.is_some() { "abort" } else { "drain" }, "all jobs finished");
                    return abort_deadline;
                }
                control = controls.recv(), if controls_open => match control {
                    None => controls_open = false,
                    Some(Control::Drain) if draining || abort_deadline.is_some() => {
                        tracing::warn!("SIGQUIT again: already shutting down, ignored");
                    }
                    Some(Control::Drain) => {
                        draining = true;
                        shared.metrics.process.set_state(crate::metrics::ProcessState::GracefulShutdown);
                        // The ticks missed while not draining would otherwise all fire at once.
                        progress.reset();
                        let vms_left = self.fleets.vms_held().await;
                        tracing::info!(jobs_left = running_jobs(&shared), vms_left, "graceful shutdown: no new jobs; waiting for running ones; idle VMs are deleted");
                        shared.stop_requesting.cancel();
                        self.runners.drain_pools(&self.fleets);
                    }
                    Some(Control::Abort) if abort_deadline.is_some() => {
                        tracing::warn!("second stop signal: exiting at once");
                        return Some(tokio::time::Instant::now());
                    }
                    Some(Control::Abort) => {
                        // Read when shutting down, so a reloaded value applies.
                        let timeout = shared.config().shutdown_timeout;
                        tracing::warn!(jobs_left = running_jobs(&shared), timeout_secs = timeout.as_secs(), was_draining = draining, "forceful shutdown: stopping running jobs");
                        abort_deadline = Some(crate::time::deadline_after(timeout));
                        shared.metrics.process.set_state(crate::metrics::ProcessState::ForcefulShutdown);
                        shared.stop_requesting.cancel();
                        shared.abort_jobs.cancel();
                    }
                    Some(Control::Reload) if draining || abort_deadline.is_some() => {
                        tracing::warn!("configuration reload ignored: shutting down");
                    }
                    Some(Control::Reload) => self.reload().await,
                },
                seen = self.fleets.conflict(), if self.conflict.is_none() => {
                    tracing::error!(%seen, "another host runs with this manager_id: stopping (its VMs are left alone)");
                    self.conflict = Some(seen);
                    if abort_deadline.is_none() {
                        let timeout = shared.config().shutdown_timeout;
                        abort_deadline = Some(crate::time::deadline_after(timeout));
                        shared.metrics.process.set_state(crate::metrics::ProcessState::ForcefulShutdown);
                        shared.stop_requesting.cancel();
                        shared.abort_jobs.cancel();
                    }
                }
                _ = sleep_until_opt(abort_deadline) => {
                    tracing::error!(jobs_left = running_jobs(&shared), "shutdown_timeout reached: exiting with jobs unconfirmed");
                    return abort_deadline;
                }
                _ = sleep_until_opt(self.rotation.next(&shared.config())), if !draining && abort_deadline.is_none() => {
                    self.rotate().await;
                }
                _ = progress.tick(), if draining => {
                    let vms_left = self.fleets.vms_held().await;
                    tracing::info!(jobs_left = running_jobs(&shared), vms_left, "draining");
                }
            }
        }
    }
}

impl Supervisor {
    /// The last phase: every VM deleted, by the abort deadline (`Some`) or within
    /// [`DRAIN_DELETE_TIMEOUT`] after a drain. Controls still count: an abort during a drain's
    /// deletions bounds them by `shutdown_timeout`, a second stop signal exits at once.
    async fn delete_every_vm(
        &self,
        controls: &mut mpsc::Receiver<Control>,
        abort_deadline: Option<tokio::time::Instant>,
    ) {
        let fleets = &self.fleets;
        if fleets.is_empty() {
            return;
        }
        let mut aborting = abort_deadline.is_some();
        let deadline =
            abort_deadline.unwrap_or_else(|| tokio::time::Instant::now() + DRAIN_DELETE_TIMEOUT);
        tracing::info!(pools = fleets.handles().len(), "deleting every VM");
        let shutdown = fleets.shutdown(deadline);
        tokio::pin!(shutdown);
        let mut controls_open = true;
        let unconfirmed = loop {
            tokio::select! {
                unconfirmed = &mut shutdown => break unconfirmed,
                control = controls.recv(), if controls_open => match control {
                    None => controls_open = false,
                    Some(Control::Abort) if aborting => {
                        tracing::warn!("second stop signal: exiting at once; VMs not confirmed deleted are left to the next start");
                        return;
                    }
                    Some(Control::Abort) => {
                        aborting = true;
                        self.shared.metrics.process.set_state(crate::metrics::ProcessState::ForcefulShutdown);
                        let timeout = self.shared.config().shutdown_timeout;
                        tracing::warn!(timeout_secs = timeout.as_secs(), "forceful shutdown during the drain's VM deletions");
                        fleets.hasten_shutdown(crate::time::deadline_after(timeout));
                    }
                    Some(Control::Drain | Control::Reload) => {
                        tracing::warn!("already shutting down: ignored");
                    }
                },
            }
        };
        if unconfirmed.is_empty() {
            tracing::info!("every VM deleted");
        } else {
            for vm in &unconfirmed {
                tracing::warn!(%vm, "VM deletion not confirmed in time; the next start deletes it");
            }
        }
    }
}

fn running_jobs(shared: &Shared) -> usize {
    shared.active_jobs.load(Ordering::Relaxed)
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
