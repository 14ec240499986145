//! Crash recovery for jobs: the jobs a previous process recorded in `jobs.json` and never
//! finished are failed at once with `runner_system_failure` (so GitLab can retry them now rather
//! than after its stuck-job timeout), then forgotten.

use super::Shared;
use crate::coordinator::{CoordinatorError, JobCredentials, RunnerEndpoint};
use crate::job::FailureReason;

/// Fails every job left in `jobs.json` by an earlier process. Errors are logged; a job whose
/// update could not be delivered stays recorded for the next start.
pub(super) async fn fail_leftover_jobs(shared: &Shared) {
    for job in shared.state.leftover_jobs() {
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
                let _ = shared.state.remove_job(job.id, &job.url);
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
                let _ = shared.state.remove_job(job.id, &job.url);
            }
            Err(e) => {
                tracing::error!(job = job.id, error = %e, "could not fail the leftover job; will retry at the next start");
            }
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
