//! One runner loop per `[[runners]]` entry: `request_concurrency` requesters, each taking a global
//! `concurrent` slot and a runner `limit` slot (and, for docker+machine with IdleCount > 0, an
//! idle VM), then asking the coordinator for a job. A job found is handed to its own task with
//! the slots and the VM; the requester asks again at once (burst polling, as GitLab Runner).
//! Health: 403 and transport errors count; `unhealthy_requests_limit` in a row pause the runner
//! for `unhealthy_interval`.

use super::{job_task, Shared};
use crate::config::RunnerConfig;
use crate::coordinator::{PollState, RequestOutcome, RunnerEndpoint};
use crate::fleet::{FleetHandle, Lease};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// What the requesters of one runner share.
struct RunnerState {
    runner: Arc<RunnerConfig>,
    endpoint: RunnerEndpoint,
    /// The runner's `limit` slots (None: only `concurrent` applies).
    limit: Option<Arc<Semaphore>>,
    /// Consecutive unhealthy answers.
    unhealthy: AtomicU32,
    /// Which CI_CONCURRENT_ID values are taken.
    slots: Arc<std::sync::Mutex<std::collections::BTreeSet<u32>>>,
    /// The runner's VM pool (docker+machine only).
    fleet: Option<FleetHandle>,
    /// With IdleCount > 0 a job is requested only with an idle VM leased (VMs being created do
    /// not count); with IdleCount = 0 the job is taken and its VM made on demand.
    lease_before_request: bool,
}

/// Starts the requesters of `runner` on the shared tracker; `fleet` is its VM pool when the
/// runner is docker+machine.
pub(super) fn spawn(shared: &Arc<Shared>, runner: Arc<RunnerConfig>, fleet: Option<FleetHandle>) {
    let endpoint = RunnerEndpoint {
        url: runner.url.clone(),
        token: runner.token.clone(),
        system_id: shared.system_id.clone(),
    };
    shared
        .coordinator
        .add_runner_metrics(&endpoint, runner.request_concurrency.max(1));
    let idle_count = runner.machine.as_ref().map_or(0, |m| m.idle_count);
    let state = Arc::new(RunnerState {
        limit: (runner.limit > 0).then(|| Arc::new(Semaphore::new(runner.limit))),
        endpoint,
        unhealthy: AtomicU32::new(0),
        slots: Arc::default(),
        lease_before_request: fleet.is_some() && idle_count > 0,
        fleet,
        runner,
    });
    tracing::info!(runner = %state.runner.short_token(), name = %state.runner.name, url = %state.runner.url, executor = state.runner.executor.as_str(), "runner started");
    for _ in 0..state.runner.request_concurrency.max(1) {
        let shared = shared.clone();
        let state = state.clone();
        shared
            .tracker
            .clone()
            .spawn(async move { requester(shared, state).await });
    }
}

/// Requests jobs until the manager stops taking them. A request in flight when a drain starts is
/// allowed to finish (its job runs); an abort cancels it.
async fn requester(shared: Arc<Shared>, state: Arc<RunnerState>) {
    let mut poll = PollState::default();
    let stop = shared.stop_requesting.clone();
    let check_interval = shared.config.check_interval;
    loop {
        let slot = tokio::select! {
            _ = stop.cancelled() => break,
            permit = shared.concurrent.clone().acquire_owned() => permit,
        };
        let Ok(global) = slot else { break };
        let local = match &state.limit {
            None => None,
            Some(limit) => tokio::select! {
                _ = stop.cancelled() => break,
                permit = limit.clone().acquire_owned() => match permit {
                    Ok(p) => Some(p),
                    Err(_) => break,
                },
            },
        };
        let lease = match (&state.fleet, state.lease_before_request) {
            (Some(fleet), true) => match lease_idle_vm(fleet, &stop).await {
                Some(lease) => Some(lease),
                None => break,
            },
            _ => None,
        };
        let outcome = tokio::select! {
            _ = shared.abort_jobs.cancelled() => {
                if let (Some(fleet), Some(lease)) = (&state.fleet, lease) {
                    fleet.unlease(lease);
                }
                break;
            }
            outcome = shared.coordinator.request_job(&state.endpoint, &mut poll) => outcome,
        };
        let pause = match outcome {
            RequestOutcome::Job {
                handle,
                payload,
                time,
            } => {
                state.unhealthy.store(0, Ordering::Relaxed);
                if let Some(fleet) = &state.fleet {
                    if let Some(lease) = &lease {
                        fleet.mark_used(lease);
                    }
                    fleet.observe_backlog(backlog(&payload));
                }
                let concurrent_id = take_slot(&state.slots);
                let slots = state.slots.clone();
                let task = job_task::JobTask {
                    shared: shared.clone(),
                    runner: state.runner.clone(),
                    endpoint: state.endpoint.clone(),
                    fleet: state.fleet.clone(),
                    lease,
                    handle,
                    payload,
                    received_at: time,
                    concurrent_id,
                };
                shared.tracker.spawn(async move {
                    task.run().await;
                    slots
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&concurrent_id);
                    drop((global, local));
                });
                None
            }
            RequestOutcome::NoJob { retry_now } => {
                state.unhealthy.store(0, Ordering::Relaxed);
                give_back(&state, lease, true);
                (!retry_now).then_some(check_interval)
            }
            RequestOutcome::Unhealthy(reason) => {
                give_back(&state, lease, false);
                let count = state.unhealthy.fetch_add(1, Ordering::Relaxed) + 1;
                let limit = state.runner.unhealthy_requests_limit.max(1);
                if count >= limit {
                    tracing::warn!(runner = %state.runner.short_token(), %reason, count, pause_secs = state.runner.unhealthy_interval.as_secs(), "runner unhealthy: pausing job requests");
                    state.unhealthy.store(0, Ordering::Relaxed);
                    Some(state.runner.unhealthy_interval)
                } else {
                    tracing::warn!(runner = %state.runner.short_token(), %reason, count, "job request failed");
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
    tracing::debug!(runner = %state.runner.short_token(), "requester stopped");
}

/// How long an idle VM's dockerd may take to answer before the VM is given up.
const IDLE_PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits for an idle VM of `fleet` and leases it; `None` when the manager stops taking jobs.
async fn lease_idle_vm(
    fleet: &FleetHandle,
    stop: &tokio_util::sync::CancellationToken,
) -> Option<Lease> {
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

/// The backlog GitLab reported with a job: `job_info.queue_size` (pending jobs this runner could
/// take when the job was handed out, this one included), less the job itself.
fn backlog(payload: &serde_json::Value) -> u64 {
    payload
        .pointer("/job_info/queue_size")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0)
        .saturating_sub(1)
}

/// The lowest free CI_CONCURRENT_ID.
fn take_slot(slots: &std::sync::Mutex<std::collections::BTreeSet<u32>>) -> u32 {
    let mut taken = slots.lock().unwrap_or_else(|p| p.into_inner());
    let id = (0..).find(|i| !taken.contains(i)).unwrap_or(0);
    taken.insert(id);
    id
}
