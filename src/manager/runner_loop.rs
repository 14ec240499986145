//! One runner loop per `[[runners]]` entry: `request_concurrency` requesters, each taking a global
//! `concurrent` slot and a runner `limit` slot, then asking the coordinator for a job. A job found
//! is handed to its own task with the slots; the requester asks again at once (burst polling, as
//! GitLab Runner). Health: 403 and transport errors count; `unhealthy_requests_limit` in a row
//! pause the runner for `unhealthy_interval`.

use super::{job_task, Shared};
use crate::config::RunnerConfig;
use crate::coordinator::{PollState, RequestOutcome, RunnerEndpoint};
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
}

/// Starts the requesters of `runner` on the shared tracker.
pub(super) fn spawn(shared: &Arc<Shared>, runner: Arc<RunnerConfig>) {
    let endpoint = RunnerEndpoint {
        url: runner.url.clone(),
        token: runner.token.clone(),
        system_id: shared.system_id.clone(),
    };
    let state = Arc::new(RunnerState {
        limit: (runner.limit > 0).then(|| Arc::new(Semaphore::new(runner.limit))),
        endpoint,
        runner,
        unhealthy: AtomicU32::new(0),
        slots: Arc::default(),
    });
    tracing::info!(runner = %state.runner.short_token(), name = %state.runner.name, url = %state.runner.url, "runner started");
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
        let outcome = tokio::select! {
            _ = shared.abort_jobs.cancelled() => break,
            outcome = shared.coordinator.request_job(&state.endpoint, &mut poll) => outcome,
        };
        let pause = match outcome {
            RequestOutcome::Job {
                handle,
                payload,
                time,
            } => {
                state.unhealthy.store(0, Ordering::Relaxed);
                let concurrent_id = take_slot(&state.slots);
                let slots = state.slots.clone();
                let task = job_task::JobTask {
                    shared: shared.clone(),
                    runner: state.runner.clone(),
                    endpoint: state.endpoint.clone(),
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
                (!retry_now).then_some(check_interval)
            }
            RequestOutcome::Unhealthy(reason) => {
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

/// The lowest free CI_CONCURRENT_ID.
fn take_slot(slots: &std::sync::Mutex<std::collections::BTreeSet<u32>>) -> u32 {
    let mut taken = slots.lock().unwrap_or_else(|p| p.into_inner());
    let id = (0..).find(|i| !taken.contains(i)).unwrap_or(0);
    taken.insert(id);
    id
}
