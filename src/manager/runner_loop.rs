//! One runner loop per `[[runners]]` entry: `request_concurrency` requesters, each taking a global
//! `concurrent` slot and a runner `limit` slot (and, for docker+machine with IdleCount > 0, an
//! idle VM), then asking the coordinator for a job. A job found is handed to its own task with
//! the slots and the VM; the requester asks again at once (burst polling, as GitLab Runner).
//! Health: 403 and transport errors count; `unhealthy_requests_limit` in a row pause the runner
//! for `unhealthy_interval`.

use super::concurrent_ids::ConcurrentIds;
use super::slots::{SlotGuard, Slots};
use super::{job_task, Shared};
use crate::cache::RunnerCache;
use crate::config::{IdleCountPolicy, RunnerConfig};
use crate::coordinator::{PollState, RequestOutcome, RunnerEndpoint, HELD_POLL};
use crate::docker::SharedEngine;
use crate::fleet::{FleetHandle, Lease};
use crate::job::JobInfo;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// One runner as started by the manager (at start, or added by a reload): its requesters and
/// the jobs they took. A reload updates it in place ([`RunnerState::update`]); a runner removed
/// by a reload, or replaced because its VMs must come from another project, is retired
/// ([`RunnerState::retire`]): its requesters stop, its jobs run to their end.
pub(super) struct RunnerState {
    /// The settings new jobs get; a reload replaces them. A std `RwLock`: read once per request.
    runner: RwLock<Arc<RunnerConfig>>,
    /// The runner's cache signer and client, made once and replaced when a reload changes
    /// `[runners.cache]` (std `RwLock`: read once per job).
    cache: RwLock<Arc<RunnerCache>>,
    /// The `docker` executor's engine client, made at the first job and shared by the rest
    /// (remade when a reload changes `[runners.docker] host`).
    engine: Arc<SharedEngine>,
    /// The runner's `limit` slots (unbounded for `limit = 0`).
    limit: Arc<Slots>,
    /// Consecutive unhealthy answers.
    unhealthy: AtomicU32,
    /// The `CI_CONCURRENT_ID`s of this runner's running jobs (not a limit: `limit` is).
    concurrent_ids: Arc<ConcurrentIds>,
    /// The runner's VM pool (docker+machine only).
    pub(super) fleet: Option<FleetHandle>,
    /// Stops this runner's requesters (a child of the manager's `stop_requesting`).
    pub(super) stop: CancellationToken,
    /// This runner's requesters and jobs (each also on the manager's tracker).
    pub(super) tracker: TaskTracker,
    /// Requesters running; above `request_concurrency` (after a reload) one stops.
    requesters: Mutex<usize>,
    /// Held shared by a requester from reading the token to the request's answer, and
    /// exclusively by a token rotation from the reset to the new token's swap-in, so no request
    /// carries the old token after GitLab replaced it (tokio's lock: held across awaits).
    pub(super) token_gate: tokio::sync::RwLock<()>,
}

/// Starts the requesters of `runner`; `fleet` is its VM pool when the runner is docker+machine.
pub(super) fn start(
    shared: &Arc<Shared>,
    runner: Arc<RunnerConfig>,
    fleet: Option<FleetHandle>,
) -> Arc<RunnerState> {
    let state = Arc::new(RunnerState {
        limit: Slots::new(limit_size(&runner)),
        unhealthy: AtomicU32::new(0),
        concurrent_ids: Arc::default(),
        fleet,
        stop: shared.stop_requesting.child_token(),
        tracker: TaskTracker::new(),
        requesters: Mutex::new(0),
        token_gate: tokio::sync::RwLock::new(()),
        cache: RwLock::new(Arc::new(RunnerCache::new(&runner.cache))),
        engine: Arc::default(),
        runner: RwLock::new(runner),
    });
    let runner = state.runner();
    tracing::info!(runner = %runner.short_token(), name = %runner.name, url = %crate::redact::url(&runner.url), executor = runner.executor.as_str(), "runner started");
    state.spawn_requesters(shared);
    state
}

fn limit_size(runner: &RunnerConfig) -> Option<usize> {
    (runner.limit > 0).then_some(runner.limit)
}

impl RunnerState {
    /// The settings in force now.
    pub(super) fn runner(&self) -> Arc<RunnerConfig> {
        self.runner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The cache signer new jobs use.
    pub(super) fn cache(&self) -> Arc<RunnerCache> {
        self.cache.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Applies reloaded settings: new jobs get them, `limit` and `request_concurrency` change
    /// now (jobs running keep their slots).
    pub(super) fn update(self: &Arc<Self>, shared: &Arc<Shared>, runner: Arc<RunnerConfig>) {
        self.limit.resize(limit_size(&runner));
        if !self.cache().made_for(&runner.cache) {
            *self.cache.write().unwrap_or_else(|p| p.into_inner()) =
                Arc::new(RunnerCache::new(&runner.cache));
        }
        *self.runner.write().unwrap_or_else(|p| p.into_inner()) = runner;
        self.spawn_requesters(shared);
    }

    /// Swaps in `runner` (a rotated token) for the next requests; the caller holds the gate.
    pub(super) fn set_runner(&self, runner: Arc<RunnerConfig>) {
        *self.runner.write().unwrap_or_else(|p| p.into_inner()) = runner;
    }

    /// Stops taking jobs for this runner; its running jobs go on. The caller drains its pool.
    pub(super) fn retire(&self) {
        self.stop.cancel();
        self.tracker.close();
    }

    fn spawn_requesters(self: &Arc<Self>, shared: &Arc<Shared>) {
        if self.stop.is_cancelled() {
            return;
        }
        let runner = self.runner();
        let wanted = runner.request_concurrency.max(1);
        // The runner's series at 0 and its request_concurrency (again after a reload).
        let endpoint = RunnerEndpoint {
            url: runner.url.clone(),
            token: runner.token.clone(),
            system_id: shared.system_id.clone(),
            short_token: runner.short_token(),
            tls: runner.tls.clone(),
        };
        shared.coordinator.add_runner_metrics(&endpoint, wanted);
        let mut running = self.requesters.lock().unwrap_or_else(|p| p.into_inner());
        while *running < wanted {
            *running += 1;
            let (shared2, state) = (shared.clone(), self.clone());
            shared
                .tracker
                .spawn(self.tracker.track_future(requester(shared2, state)));
        }
    }

    /// Whether this requester should stop because `request_concurrency` was lowered (it then
    /// counts itself out).
    fn one_too_many(&self) -> bool {
        let wanted = self.runner().request_concurrency.max(1);
        let mut running = self.requesters.lock().unwrap_or_else(|p| p.into_inner());
        if *running > wanted {
            *running -= 1;
            true
        } else {
            false
        }
    }
}

/// Requests jobs until the runner stops taking them. A request in flight when a drain starts is
/// allowed to finish (its job runs); an abort cancels it.
async fn requester(shared: Arc<Shared>, state: Arc<RunnerState>) {
    let mut poll = PollState::default();
    let stop = state.stop.clone();
    // What a "request again at once" keeps for the next request: its slots and leased VM.
    let mut kept: Option<Held> = None;
    // Answers without a job in a row that came back in under HELD_POLL (see QUICK_RETRIES).
    let mut quick = 0u32;
    loop {
        if state.one_too_many() || stop.is_cancelled() {
            if let Some(held) = kept.take() {
                give_back(&state, held.lease, false);
            }
            break;
        }
        let held = match kept.take() {
            Some(held) => held,
            None => match hold_slots_and_vm(&shared, &state, &stop).await {
                Some(held) => held,
                None => break,
            },
        };
        let Held {
            global,
            local,
            lease,
        } = held;
        let check_interval = shared.config().check_interval;
        // The token is read under the gate and the request answered before a rotation swaps it.
        let gate = state.token_gate.read().await;
        let runner = state.runner();
        let endpoint = RunnerEndpoint {
            url: runner.url.clone(),
            token: runner.token.clone(),
            system_id: shared.system_id.clone(),
            short_token: runner.short_token(),
            tls: runner.tls.clone(),
        };
        let asked = tokio::time::Instant::now();
        let outcome = tokio::select! {
            _ = shared.abort_jobs.cancelled() => {
                if let (Some(fleet), Some(lease)) = (&state.fleet, lease) {
                    fleet.unlease(lease);
                }
                break;
            }
            outcome = shared.coordinator.request_job(&endpoint, &mut poll) => outcome,
        };
        drop(gate);
        let pause = match outcome {
            RequestOutcome::Job {
                handle,
                payload,
                time,
            } => {
                quick = 0;
                state.unhealthy.store(0, Ordering::Relaxed);
                // The payload's `job_info`, read once for the backlog and the job's metrics.
                let info = JobInfo::from_payload(&payload);
                if let Some(fleet) = &state.fleet {
                    if let Some(lease) = &lease {
                        fleet.mark_used(lease);
                    }
                    fleet.observe_backlog(info.backlog());
                }
                let concurrent_id = state.concurrent_ids.take();
                let task = job_task::JobTask {
                    shared: shared.clone(),
                    runner,
                    cache: state.cache(),
                    engine: state.engine.clone(),
                    endpoint,
                    fleet: state.fleet.clone(),
                    lease,
                    handle,
                    payload,
                    info,
                    received_at: time,
                    concurrent_id,
                };
                spawn_job(&shared, &state, task, concurrent_id, (global, local));
                None
            }
            RequestOutcome::NoJob { retry_now } => {
                state.unhealthy.store(0, Ordering::Relaxed);
                quick = if asked.elapsed() < HELD_POLL {
                    quick + 1
                } else {
                    0
                };
                if retry_now && quick <= QUICK_RETRIES {
                    // Asked again at once with the same slots and VM: no lease round trip.
                    if let Some(fleet) = &state.fleet {
                        fleet.observe_backlog(0);
                    }
                    kept = Some(Held {
                        global,
                        local,
                        lease,
                    });
                    None
                } else {
                    quick = 0;
                    give_back(&state, lease, true);
                    Some(check_interval)
                }
            }
            RequestOutcome::Unhealthy(reason) => {
                give_back(&state, lease, false);
                let count = state.unhealthy.fetch_add(1, Ordering::Relaxed) + 1;
                let limit = runner.unhealthy_requests_limit.max(1);
                if count >= limit {
                    tracing::warn!(runner = %runner.short_token(), %reason, count, pause_secs = runner.unhealthy_interval.as_secs(), "runner unhealthy: pausing job requests");
                    state.unhealthy.store(0, Ordering::Relaxed);
                    Some(runner.unhealthy_interval)
                } else {
                    tracing::warn!(runner = %runner.short_token(), %reason, count, "job request failed");
                    Some(check_interval)
                }
            }
        };
        if let Some(pause) = pause {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
    tracing::debug!(runner = %state.runner().short_token(), "requester stopped");
}

/// Quick answers without a job in a row (each under [`HELD_POLL`]) a requester may follow with
/// another request at once; the next waits `check_interval`. A queue change takes two (the
/// held poll's release, then Rails' answer) before the job or the next hold; the cap keeps a
/// server that says "changed" at once every time from becoming a loop of requests.
const QUICK_RETRIES: u32 = 3;

/// What a requester holds while it asks for a job: its `concurrent` and `limit` slots and, for
/// docker+machine with IdleCount > 0, the idle VM the job would run on.
struct Held {
    global: SlotGuard,
    local: SlotGuard,
    lease: Option<Lease>,
}

/// Takes a `concurrent` slot, a `limit` slot and (docker+machine, static IdleCount > 0) an idle
/// VM; `None` when the runner stops taking jobs meanwhile.
async fn hold_slots_and_vm(
    shared: &Shared,
    state: &RunnerState,
    stop: &CancellationToken,
) -> Option<Held> {
    let global = tokio::select! {
        _ = stop.cancelled() => return None,
        slot = shared.concurrent.acquire() => slot,
    };
    let local = tokio::select! {
        _ = stop.cancelled() => return None,
        slot = state.limit.acquire() => slot,
    };
    // Read after the slots: a reload while waiting for them applies to this request.
    let runner = state.runner();
    // The adaptive policy takes jobs first: its pool sees them arrive (and may keep no idle VM
    // at all), and a job gets a warm VM or one made on demand.
    let idle_count = runner
        .machine
        .as_ref()
        .filter(|m| m.idle_count_policy == IdleCountPolicy::Static)
        .map_or(0, |m| m.idle_count);
    let lease = match &state.fleet {
        // With IdleCount > 0 (static) a job is requested only with an idle VM leased (VMs being
        // created do not count); with IdleCount = 0 or the adaptive policy the job is taken and
        // its VM leased from the pool or made on demand.
        Some(fleet) if idle_count > 0 => Some(lease_idle_vm(fleet, stop).await?),
        _ => None,
    };
    Some(Held {
        global,
        local,
        lease,
    })
}

/// Runs a job in its own task (on the manager's tracker and the runner's), holding its slots
/// and its CI_CONCURRENT_ID until the final update.
fn spawn_job(
    shared: &Shared,
    state: &RunnerState,
    task: job_task::JobTask,
    concurrent_id: u32,
    held: (SlotGuard, SlotGuard),
) {
    let concurrent_ids = state.concurrent_ids.clone();
    shared.tracker.spawn(state.tracker.track_future(async move {
        task.run().await;
        concurrent_ids.release(concurrent_id);
        drop(held);
    }));
}

/// How long an idle VM's dockerd may take to answer before the VM is given up.
const IDLE_PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits for an idle VM of `fleet` and leases it; `None` when the manager stops taking jobs.
async fn lease_idle_vm(fleet: &FleetHandle, stop: &CancellationToken) -> Option<Lease> {
    loop {
        if let Some(lease) = fleet.try_lease().await {
            // As GitLab Runner checks it can connect before using an idle machine: a VM whose
            // dockerd stopped answering is dropped (the pool removes a dropped lease's VM).
            let ping = tokio::time::timeout(IDLE_PING_TIMEOUT, lease.docker.ping()).await;
            if matches!(ping, Ok(Ok(_))) {
                return Some(lease);
            }
            tracing::warn!(vm = %lease.name, "idle VM's dockerd does not answer; removing it");
            drop(lease);
            continue;
        }
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = fleet.idle_available() => {}
        }
    }
}

/// Returns an unused lease to the pool; `no_backlog` tells the pool the coordinator had no job.
fn give_back(state: &RunnerState, lease: Option<Lease>, no_backlog: bool) {
    if let Some(fleet) = &state.fleet {
        if let Some(lease) = lease {
            fleet.unlease(lease);
        }
        if no_backlog {
            fleet.observe_backlog(0);
        }
    }
}
