//! A job's trace upload (GitLab Runner's `network/trace.go` `clientJobTrace`): a task that sends
//! one ≤ 1 MiB PATCH per update interval, keep-alive PUTs when nothing succeeded for a while,
//! and the final update that flushes the rest and reports the job's state. Owns the sent offset
//! and the interval; reads the trace only through `JobTrace::len/read_at/checksum`.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::Bytes;
use tokio::task::JoinHandle;
use tokio::time::{sleep, Instant};
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use super::client::{Coordinator, JobCredentials, JobTarget, RunnerEndpoint};
use super::error::CoordinatorError;
use super::patch::{PatchResult, TRACE_PATCH_LIMIT};
use super::remote::RemoteState;
use super::update::{UpdateResult, WireState};
use crate::job::FinalState;
use crate::trace::JobTrace;

/// Rounds of one final-update attempt (flush, PUT, 202/412/416 → again) before giving up on it.
const MAX_FINAL_ROUNDS: u32 = 100;
/// Longest wait between final-update attempts (GitLab Runner's backoff ceiling).
const FINAL_BACKOFF_MAX: Duration = Duration::from_secs(60 * 60);

/// A running trace upload. Created by [`Coordinator::start_trace`] when a job is acknowledged;
/// ended by [`TraceSession::finish`] (dropping it stops the upload task without a final update).
pub struct TraceSession {
    /// Cancelled when the coordinator says `Job-Status: canceling`: cancel the script gracefully.
    pub cancel_requested: CancellationToken,
    /// Cancelled on 403 or `Job-Status: canceled|failed` from a PATCH or PUT: stop the job now.
    pub abort: CancellationToken,
    /// Stops the upload task (also when the session is dropped).
    stop: DropGuard,
    task: JoinHandle<Uploader>,
    /// To rebuild the uploader if its task panicked.
    spare: Uploader,
}

impl std::fmt::Debug for TraceSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceSession")
            .field("job_id", &self.spare.target.job.id)
            .finish_non_exhaustive()
    }
}

impl Coordinator {
    /// Starts uploading `trace` for `job` on `tracker`. `debug_trace` is `CI_DEBUG_TRACE`.
    /// The first PATCH goes out one update interval after the start, as in GitLab Runner.
    pub fn start_trace(
        &self,
        runner: &RunnerEndpoint,
        job: JobCredentials,
        trace: JobTrace,
        debug_trace: bool,
        tracker: &TaskTracker,
    ) -> Result<TraceSession, CoordinatorError> {
        let target = JobTarget::new(runner, job)?;
        let uploader = Uploader {
            client: self.clone(),
            target,
            trace,
            debug_trace,
            sent: 0,
            interval: self.inner.trace_interval,
            last_contact: Instant::now(),
            not_found: false,
            cancel_requested: CancellationToken::new(),
            abort: CancellationToken::new(),
            finishing: false,
        };
        let stop = CancellationToken::new();
        let spare = uploader.clone();
        let task = tracker.spawn(uploader.watch(stop.clone()));
        Ok(TraceSession {
            cancel_requested: spare.cancel_requested.clone(),
            abort: spare.abort.clone(),
            stop: stop.drop_guard(),
            task,
            spare,
        })
    }
}

impl TraceSession {
    /// Stops the upload loop, sends the rest of the trace and then the final state, repeating
    /// on 202 (trace chunks pending) and on 412 (resend the whole trace); the whole exchange is
    /// retried with GitLab Runner's budget (`final_update_attempts` tries, waits from
    /// `final_update_backoff` doubling up to 60 min). `on_first_failure` is awaited once, when
    /// the first attempt failed (the caller keeps the state for a later start there). Call it
    /// after the trace is complete (`JobTrace::finish`). Returns once the coordinator took the
    /// state, or dropped the job.
    pub async fn finish<F: std::future::Future<Output = ()>>(
        self,
        fin: FinalState,
        on_first_failure: F,
    ) -> Result<(), CoordinatorError> {
        let TraceSession {
            stop, task, spare, ..
        } = self;
        stop.disarm().cancel();
        let mut uploader = match task.await {
            Ok(uploader) => uploader,
            Err(e) => {
                tracing::error!(job_id = spare.target.job.id, error = %e, "trace upload task failed; resending the trace from the start");
                spare
            }
        };
        uploader.final_update(&fin, on_first_failure).await
    }
}

/// The upload state. Moved into the upload task and handed back to `finish` when it stops.
#[derive(Clone)]
struct Uploader {
    client: Coordinator,
    target: JobTarget,
    trace: JobTrace,
    debug_trace: bool,
    /// Bytes the coordinator holds.
    sent: u64,
    interval: Duration,
    /// When a PATCH or PUT last succeeded (keep-alive clock).
    last_contact: Instant,
    /// A PATCH got 404: send no more trace.
    not_found: bool,
    cancel_requested: CancellationToken,
    abort: CancellationToken,
    /// The final state is being sent: a `Job-Status: failed|canceled` now only confirms it.
    finishing: bool,
}

impl Uploader {
    /// The upload loop: each interval, one PATCH if there is something new, then a keep-alive
    /// if due. Ends when `stop` is cancelled, between requests (a request in flight completes,
    /// so the sent offset stays exact).
    async fn watch(mut self, stop: CancellationToken) -> Uploader {
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return self,
                _ = sleep(self.interval) => {}
            }
            self.tick().await;
        }
    }

    async fn tick(&mut self) {
        if self.abort.is_cancelled() {
            return;
        }
        if let Some(PatchResult::Failed(e)) = self.patch_next().await {
            tracing::warn!(job_id = self.target.job.id, error = %e, "trace upload failed; will retry");
        }
        self.keep_alive().await;
    }

    /// Sends the next ≤ 1 MiB from the sent offset; `None` when there is nothing to send.
    async fn patch_next(&mut self) -> Option<PatchResult> {
        if self.not_found || self.trace.len() <= self.sent {
            return None;
        }
        let chunk = match self.trace.read_at(self.sent, TRACE_PATCH_LIMIT) {
            Ok(chunk) if chunk.is_empty() => return None,
            Ok(chunk) => Bytes::from(chunk),
            Err(source) => {
                return Some(PatchResult::Failed(CoordinatorError::TraceRead {
                    offset: self.sent,
                    source,
                }))
            }
        };
        let response = self
            .client
            .patch_trace(&self.target, chunk, self.sent, self.debug_trace)
            .await;
        self.apply(&response.remote);
        match &response.result {
            PatchResult::Succeeded { sent } => {
                self.sent = *sent;
                self.last_contact = Instant::now();
            }
            PatchResult::RangeMismatch { offset } => {
                tracing::info!(
                    job_id = self.target.job.id,
                    from = self.sent,
                    to = offset,
                    "trace range mismatch; resending"
                );
                self.sent = *offset;
            }
            PatchResult::NotFound => {
                tracing::warn!(
                    job_id = self.target.job.id,
                    "trace upload answered 404; no more trace will be sent"
                );
                self.not_found = true;
            }
            PatchResult::Abort | PatchResult::Failed(_) => {}
        }
        Some(response.result)
    }

    /// Keep-alive `PUT state=running` when nothing succeeded for `keepalive_interval`.
    async fn keep_alive(&mut self) {
        if self.last_contact.elapsed() < self.client.inner.keepalive_interval {
            return;
        }
        let response = self
            .client
            .update_job(
                &self.target,
                WireState::Running,
                Some(self.trace.checksum()),
                None,
            )
            .await;
        self.apply(&response.remote);
        match response.result {
            UpdateResult::Succeeded | UpdateResult::Accepted => {
                self.last_contact = Instant::now();
            }
            UpdateResult::Abort => self.abort.cancel(),
            UpdateResult::TraceValidationFailed => {}
            UpdateResult::Failed(e) => {
                tracing::warn!(job_id = self.target.job.id, error = %e, "keep-alive update failed; will retry")
            }
        }
    }

    /// Applies what a response's headers said.
    fn apply(&mut self, remote: &RemoteState) {
        if remote.abort && !self.abort.is_cancelled() {
            if self.finishing {
                tracing::debug!(
                    job_id = self.target.job.id,
                    "coordinator confirmed the job's end"
                );
            } else {
                tracing::warn!(job_id = self.target.job.id, "coordinator aborted the job");
            }
            self.abort.cancel();
        }
        if remote.cancel_requested && !self.cancel_requested.is_cancelled() {
            tracing::info!(
                job_id = self.target.job.id,
                "coordinator requested cancellation"
            );
            self.cancel_requested.cancel();
        }
        if let Some(interval) = remote.interval {
            self.interval = interval;
        }
    }

    /// The final update with its retries.
    async fn final_update<F: std::future::Future<Output = ()>>(
        &mut self,
        fin: &FinalState,
        on_first_failure: F,
    ) -> Result<(), CoordinatorError> {
        let mut on_first_failure = Some(on_first_failure);
        self.finishing = true;
        self.interval = self.client.inner.trace_interval;
        let attempts = self.client.inner.final_update_attempts;
        let mut backoff = ExponentialBuilder::new()
            .with_min_delay(self.client.inner.final_update_backoff)
            .with_max_delay(FINAL_BACKOFF_MAX)
            .with_factor(2.0)
            .without_max_times()
            .build();
        let mut attempt = 1;
        loop {
            match self.final_round(fin).await {
                Ok(()) => {
                    tracing::info!(job_id = self.target.job.id, state = ?fin.state, "final job state sent");
                    return Ok(());
                }
                Err(last) if attempt >= attempts => {
                    if let Some(first) = on_first_failure.take() {
                        first.await;
                    }
                    return Err(CoordinatorError::FinalUpdate {
                        job_id: self.target.job.id,
                        attempts,
                        last: Box::new(last),
                    });
                }
                Err(e) => {
                    if let Some(first) = on_first_failure.take() {
                        first.await;
                    }
                    let wait = backoff.next().unwrap_or(FINAL_BACKOFF_MAX);
                    tracing::warn!(job_id = self.target.job.id, attempt, error = %e, wait_ms = wait.as_millis() as u64, "final update failed; retrying");
                    sleep(wait).await;
                    attempt += 1;
                }
            }
        }
    }

    /// One attempt: flush the trace, PUT the state; repeat on 202 and 412.
    async fn final_round(&mut self, fin: &FinalState) -> Result<(), CoordinatorError> {
        for _ in 0..MAX_FINAL_ROUNDS {
            if !self.flush().await? {
                sleep(self.interval).await;
                continue;
            }
            let response = self
                .client
                .update_job(
                    &self.target,
                    WireState::Final(fin.state),
                    Some(self.trace.checksum()),
                    Some(fin),
                )
                .await;
            self.apply(&response.remote);
            match response.result {
                UpdateResult::Succeeded | UpdateResult::Abort => return Ok(()),
                UpdateResult::Accepted => sleep(self.interval).await,
                UpdateResult::TraceValidationFailed => {
                    tracing::info!(
                        job_id = self.target.job.id,
                        "trace checksum rejected; resending the whole trace"
                    );
                    self.sent = 0;
                    self.not_found = false;
                    sleep(self.interval).await;
                }
                UpdateResult::Failed(e) => return Err(e),
            }
        }
        Err(CoordinatorError::FinalUpdateStuck {
            job_id: self.target.job.id,
            rounds: MAX_FINAL_ROUNDS,
        })
    }

    /// Sends all remaining trace. `Ok(false)` after a range mismatch (wait, then call again);
    /// `Ok(true)` when done or when no more trace is wanted (404, abort).
    async fn flush(&mut self) -> Result<bool, CoordinatorError> {
        loop {
            if self.abort.is_cancelled() {
                return Ok(true);
            }
            match self.patch_next().await {
                None | Some(PatchResult::NotFound) | Some(PatchResult::Abort) => return Ok(true),
                Some(PatchResult::Succeeded { .. }) => {}
                Some(PatchResult::RangeMismatch { .. }) => return Ok(false),
                Some(PatchResult::Failed(e)) => {
                    sleep(self.interval).await;
                    return Err(e);
                }
            }
        }
    }
}
