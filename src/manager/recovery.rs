//! Crash recovery for jobs: a job a previous process recorded in `jobs.json` with the final state
//! it could not send (`pending_final`, its trace kept beside) gets that state and trace now, in
//! the background; every other job it never finished is failed at once with
//! `runner_system_failure` (so GitLab can retry it now rather than after its stuck-job timeout).
//! Either way the job is then forgotten.

use super::Shared;
use crate::coordinator::{CoordinatorError, FinalState, JobCredentials, RunnerEndpoint};
use crate::job::FailureReason;
use crate::state::RunningJob;
use crate::trace::JobTrace;
use std::sync::Arc;

/// Delivers the kept final states and fails every other job left in `jobs.json` by an earlier
/// process. Errors are logged; a job whose update could not be delivered stays recorded for the
/// next start.
pub(super) async fn fail_leftover_jobs(shared: &Arc<Shared>) {
    for job in shared.state.leftover_jobs() {
        if let Some(fin) = job.pending_final.clone() {
            let shared_for_task = shared.clone();
            shared
                .tracker
                .spawn(async move { deliver_kept(&shared_for_task, job, fin).await });
            continue;
        }
        let credentials = JobCredentials {
            id: job.id,
            token: job.token.clone(),
        };
        let endpoint = endpoint_for(shared, &job.url);
        tracing::warn!(job = job.id, url = %crate::redact::url(&job.url), acknowledged = job.acknowledged, "failing a job left running by an earlier process");
        match shared
            .coordinator
            .fail_job(&endpoint, &credentials, FailureReason::RunnerSystemFailure)
            .await
        {
            Ok(()) => {
                let _ = shared.state.remove_job(job.id, &job.url).await;
            }
            // A final refusal (e.g. 400 for a job never acknowledged, 403/404 for one GitLab
            // no longer has running): there is nothing more to tell; GitLab re-assigns or has
            // already ended it.
            Err(CoordinatorError::Status { status, .. }) if is_final_refusal(status) => {
                tracing::warn!(
                    job = job.id,
                    status,
                    "the coordinator refused the failure of the leftover job; forgetting it"
                );
                let _ = shared.state.remove_job(job.id, &job.url).await;
            }
            Err(e) => {
                tracing::error!(job = job.id, error = %e, "could not fail the leftover job; will retry at the next start");
            }
        }
    }
}

/// Sends a kept final state with its kept trace (the coordinator's 416 tells how much of it it
/// already holds), with the final update's whole retry budget; forgets the job once delivered.
/// An abort stops it: the state stays kept for the start after.
async fn deliver_kept(shared: &Shared, job: RunningJob, fin: FinalState) {
    let credentials = JobCredentials {
        id: job.id,
        token: job.token.clone(),
    };
    let endpoint = endpoint_for(shared, &job.url);
    let path = shared.state.kept_trace_path(job.id, &job.url);
    let dir = shared.hooks.trace_dir.clone();
    let restored = tokio::task::spawn_blocking(move || JobTrace::restore(&path, dir.as_deref()))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
    let trace = match restored {
        Ok(trace) => trace,
        Err(e) => {
            tracing::warn!(job = job.id, error = %e, "the kept trace cannot be read; sending the final state alone");
            match JobTrace::new_in(Default::default(), shared.hooks.trace_dir.as_deref()) {
                Ok(trace) => {
                    trace.finish();
                    trace
                }
                Err(e) => {
                    tracing::error!(job = job.id, error = %e, "cannot make a trace buffer; will retry at the next start");
                    return;
                }
            }
        }
    };
    tracing::info!(job = job.id, url = %crate::redact::url(&job.url), state = ?fin.state, "sending the final state an earlier process kept");
    let session = match shared.coordinator.start_trace(
        &endpoint,
        credentials,
        trace,
        false,
        &shared.tracker,
    ) {
        Ok(session) => session,
        Err(e) => {
            tracing::error!(job = job.id, error = %e, "cannot send the kept final state; will retry at the next start");
            return;
        }
    };
    tokio::select! {
        result = session.finish(fin, async {}) => match result {
            Ok(()) => {
                tracing::info!(job = job.id, "kept final state delivered");
                if let Err(e) = shared.state.remove_job(job.id, &job.url).await {
                    tracing::error!(job = job.id, error = %e, "cannot remove the job from the state directory");
                }
            }
            Err(e) => tracing::error!(job = job.id, error = %e, "the kept final state was not taken; will retry at the next start"),
        },
        _ = shared.abort_jobs.cancelled() => {
            tracing::warn!(job = job.id, "stopping: the kept final state stays for the next start");
        }
    }
}

/// Removes, in the background (polling does not wait), what a killed earlier process of this
/// manager left on the Docker engines of the `docker` runners: its job containers, volumes and
/// networks, found by label. VMs of docker+machine runners are deleted with their objects by the
/// fleet's start-up reconcile.
pub(super) fn spawn_container_cleanup(
    shared: &std::sync::Arc<Shared>,
    config: &crate::config::Config,
) {
    let mut hosts: Vec<Option<String>> = config
        .runners
        .iter()
        .filter(|r| r.executor == crate::config::ExecutorKind::Docker)
        .map(|r| r.docker.host.clone())
        .collect();
    hosts.sort();
    hosts.dedup();
    for host in hosts {
        let manager = shared.system_id.clone();
        let run = shared.run_id.clone();
        shared.tracker.spawn(async move {
            let endpoint = host.clone().unwrap_or_else(|| "the local engine".into());
            let docker = match crate::docker::connect(host.as_deref()).await {
                Ok(docker) => docker,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reach the Docker engine to remove an earlier process's containers");
                    return;
                }
            };
            match crate::executor::remove_leftovers(&docker, &manager, &run).await {
                Ok(done) if done == crate::executor::Leftovers::default() => {}
                Ok(done) => tracing::info!(
                    engine = %endpoint,
                    containers = done.containers,
                    volumes = done.volumes,
                    networks = done.networks,
                    "removed what an earlier process of this manager left on the Docker engine"
                ),
                Err(e) => tracing::warn!(engine = %endpoint, error = %e, "removing an earlier process's containers failed"),
            }
        });
    }
}

/// A 4xx other than the retryable ones (408, 429).
fn is_final_refusal(status: u16) -> bool {
    (400..500).contains(&status) && status != 408 && status != 429
}

/// The endpoint to report a leftover job through: the configured runner of that URL when there is
/// one (for the metric labels), else the URL alone (a runner removed from the config since).
fn endpoint_for(shared: &Shared, url: &str) -> RunnerEndpoint {
    let config = shared.config();
    let runner = config
        .runners
        .iter()
        .find(|r| r.url.trim_end_matches('/') == url.trim_end_matches('/'));
    let token = runner.map(|r| r.token.clone()).unwrap_or_default();
    RunnerEndpoint {
        url: url.to_string(),
        short_token: runner
            .map(|r| r.short_token())
            .unwrap_or_else(|| crate::config::short_token(token.expose())),
        tls: runner.map(|r| r.tls.clone()).unwrap_or_default(),
        token,
        system_id: shared.system_id.clone(),
    }
}
