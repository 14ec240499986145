//! A job's last step: send its final state and settle its `jobs.json` entry. When the first
//! attempt fails, the state and the trace (already bounded by `output_limit`) are kept in the
//! state directory before the retries, so a stop — or the end of GitLab Runner's retry budget —
//! leaves them for the next start to deliver (`recovery.rs`); an abort does not wait for a
//! final update whose state is already kept.

use super::Shared;
use crate::coordinator::{FinalState, TraceSession};
use crate::state::JobRecord;
use crate::trace::JobTrace;
use tokio_util::sync::CancellationToken;

/// Sends `fin` through `session`, then forgets the job; keeps it when the coordinator does not
/// take it.
pub(super) async fn send_final(
    shared: &Shared,
    session: TraceSession,
    record: &JobRecord,
    trace: &JobTrace,
    fin: FinalState,
) {
    let job_id = record.id();
    let kept = CancellationToken::new();
    let keep = async {
        match record.keep_pending(fin.clone(), trace).await {
            Ok(()) => {
                tracing::warn!(
                    job = job_id,
                    "final update failed; its state and trace are kept in the state directory while it is retried"
                );
                kept.cancel();
            }
            Err(e) => {
                tracing::error!(job = job_id, error = %e, "cannot keep the final state in the state directory")
            }
        }
    };
    let abort = shared.abort_jobs.clone();
    let stopping = async {
        kept.cancelled().await;
        abort.cancelled().await;
    };
    tokio::select! {
        result = session.finish(fin.clone(), keep) => match result {
            Ok(()) => {
                tracing::info!(job = job_id, state = ?fin.state, reason = ?fin.failure_reason.map(|r| r.as_str()), "job finished");
                if let Err(e) = record.delivered().await {
                    tracing::error!(job = job_id, error = %e, "cannot remove the job from the state directory");
                }
            }
            Err(e) if kept.is_cancelled() => {
                tracing::error!(job = job_id, error = %e, "final job update failed; its state is kept for the next start")
            }
            Err(e) => tracing::error!(job = job_id, error = %e, "final job update failed"),
        },
        _ = stopping => {
            tracing::warn!(job = job_id, "stopping: the job's final state is kept in the state directory for the next start");
        }
    }
}
