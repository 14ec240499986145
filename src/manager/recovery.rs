//! Crash recovery for jobs: the jobs a previous process recorded in `jobs.json` and never
//! finished are failed at once with `runner_system_failure` (so GitLab can retry them now rather
//! than after its stuck-job timeout), then forgotten.

use super::Shared;
use crate::coordinator::JobCredentials;
use crate::job::FailureReason;

/// Fails every job left in `jobs.json` by an earlier process. Errors are logged; a job whose
/// update could not be delivered stays recorded for the next start.
pub(super) async fn fail_leftover_jobs(shared: &Shared) {
    for job in shared.state.leftover_jobs() {
        let credentials = JobCredentials {
            id: job.id,
            token: job.token.clone(),
        };
        tracing::warn!(job = job.id, url = %job.url, acknowledged = job.acknowledged, "failing a job left running by an earlier process");
        match shared
            .coordinator
            .fail_job(&job.url, &credentials, FailureReason::RunnerSystemFailure)
            .await
        {
            Ok(()) => {
                let _ = shared.state.remove_job(job.id, &job.url);
            }
            Err(e) => {
                tracing::error!(job = job.id, error = %e, "could not fail the leftover job; will retry at the next start");
            }
        }
    }
}
