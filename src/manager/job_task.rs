//! One job from receipt to final update: record it in `jobs.json`, acknowledge it (two-phase
//! commit), start the trace upload, run it through the executor, map the outcome onto GitLab's
//! final state, send it, forget the job. A payload that cannot be run is acknowledged and failed
//! with `runner_system_failure` and a trace line saying why.

use super::Shared;
use crate::config::RunnerConfig;
use crate::coordinator::{AckOutcome, FinalState, JobCredentials, JobState, RunnerEndpoint};
use crate::executor::{self, ContainerLabels, JobOutcome, JobRun};
use crate::fleet::{FleetHandle, Lease, VmFate};
use crate::job::{FailureReason, JobHandle, JobPayload, RunnerEnvironment};
use crate::state::RunningJob;
use crate::trace::{JobTrace, TraceSettings};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// A job handed over by the coordinator, about to run.
pub(super) struct JobTask {
    pub shared: Arc<Shared>,
    pub runner: Arc<RunnerConfig>,
    pub endpoint: RunnerEndpoint,
    /// The runner's VM pool (docker+machine only).
    pub fleet: Option<FleetHandle>,
    /// The VM leased before the request (docker+machine with IdleCount > 0).
    pub lease: Option<Lease>,
    pub handle: JobHandle,
    pub payload: serde_json::Value,
    pub received_at: tokio::time::Instant,
    pub concurrent_id: u32,
}

/// Decrements the active-job count however the task ends.
struct ActiveGuard<'a>(&'a Shared);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.active_jobs.fetch_sub(1, Ordering::Relaxed);
    }
}

impl JobTask {
    /// Runs the job to its final update. Never panics on what the coordinator sent.
    pub async fn run(mut self) {
        let shared = self.shared.clone();
        shared.active_jobs.fetch_add(1, Ordering::Relaxed);
        let _active = ActiveGuard(&shared);
        let job_id = self.handle.id;
        let url = self.runner.url.clone();
        let tracked = shared.metrics.jobs.track(
            &crate::metrics::RunnerKey {
                runner: self.runner.short_token(),
                runner_name: self.runner.name.clone(),
            },
            job_id,
            &self.payload,
        );
        let record = RunningJob {
            id: job_id,
            url: url.clone(),
            token: self.handle.token.clone(),
            acknowledged: false,
        };
        if let Err(e) = shared.state.add_job(record) {
            tracing::error!(job = job_id, error = %e, "cannot record the job in the state directory");
        }
        let parsed = JobPayload::parse(std::mem::take(&mut self.payload));
        let trace = match JobTrace::new(self.trace_settings(parsed.as_ref().ok())) {
            Ok(trace) => trace,
            Err(e) => {
                tracing::error!(job = job_id, error = %e, "cannot create the job's trace buffer");
                return;
            }
        };
        if let Some(hook) = &shared.hooks.on_job_trace {
            hook(job_id, &trace);
        }
        let credentials = JobCredentials {
            id: job_id,
            token: self.handle.token.clone(),
        };
        let ack = match shared
            .coordinator
            .acknowledge(&self.endpoint, &credentials)
            .await
        {
            Ok(ack) => ack,
            Err(e) => {
                tracing::error!(job = job_id, error = %e, "acknowledgement failed; dropping the job (GitLab hands it out again after its acknowledgement timeout)");
                let _ = shared.state.remove_job(job_id, &url);
                return;
            }
        };
        match ack {
            AckOutcome::Accepted => {
                tracked.acknowledged();
                let _ = shared.state.mark_acknowledged(job_id, &url);
                tracing::info!(job = job_id, runner = %self.runner.short_token(), pickup_ms = self.received_at.elapsed().as_millis() as u64, "job received");
            }
            AckOutcome::Abort => {
                tracing::warn!(
                    job = job_id,
                    "coordinator refused the acknowledgement; dropping the job"
                );
                let _ = shared.state.remove_job(job_id, &url);
                return;
            }
            AckOutcome::Canceling => {
                tracing::info!(job = job_id, "job canceled before it started");
            }
        }
        let debug_trace = parsed
            .as_ref()
            .ok()
            .and_then(|j| j.variables.iter().rev().find(|v| v.key == "CI_DEBUG_TRACE"))
            .is_some_and(|v| v.value == "true");
        let session = match shared.coordinator.start_trace(
            &self.endpoint,
            credentials,
            trace.clone(),
            debug_trace,
            &shared.tracker,
        ) {
            Ok(session) => session,
            Err(e) => {
                tracing::error!(job = job_id, error = %e, "cannot start the trace upload");
                let _ = shared.state.remove_job(job_id, &url);
                return;
            }
        };
        let final_state = match (parsed, ack) {
            (Err(e), _) => {
                trace.runner_line(&format!(
                    "\x1b[31;1mERROR: Job failed (system failure): {e}\x1b[0;m"
                ));
                tracing::warn!(job = job_id, error = %e, "malformed or unsupported job payload");
                FinalState::failed(FailureReason::RunnerSystemFailure, None)
            }
            (Ok(job), AckOutcome::Canceling) => {
                trace.runner_line("\x1b[31;1mERROR: Job failed: canceled\x1b[0;m");
                FinalState::failed(
                    FailureReason::JobCanceled.for_job(&job.features.failure_reasons),
                    None,
                )
            }
            (Ok(job), _) => {
                let cancel = session.cancel_requested.clone();
                let coordinator_abort = session.abort.clone();
                self.execute(Arc::new(job), &trace, cancel, coordinator_abort)
                    .await
            }
        };
        trace.finish();
        if final_state.state == JobState::Failed {
            tracked.failed(final_state.failure_reason);
        }
        let result = session.finish(final_state.clone()).await;
        match result {
            Ok(()) => {
                tracing::info!(job = job_id, state = ?final_state.state, reason = ?final_state.failure_reason.map(|r| r.as_str()), "job finished")
            }
            Err(e) => tracing::error!(job = job_id, error = %e, "final job update failed"),
        }
        let _ = shared.state.remove_job(job_id, &url);
    }

    /// What the runner tells the job about itself (its `CI_*` variables come from it).
    fn runner_env(&self) -> RunnerEnvironment {
        RunnerEnvironment {
            short_token: self.runner.short_token(),
            environment: self.runner.environment.clone(),
            builds_dir: "/builds".into(),
            concurrent_id: self.concurrent_id,
            version: crate::VERSION.into(),
            revision: crate::coordinator::REVISION.into(),
        }
    }

    fn trace_settings(&self, job: Option<&JobPayload>) -> TraceSettings {
        let mut masked = vec![self.handle.token.clone()];
        let mut prefixes = Vec::new();
        if let Some(job) = job {
            // Each masked value as sent and as the job sees it: a `$` in a value is expanded
            // before it reaches the script (unless raw), so both forms are masked. The expansion
            // is capped; a value over the cap fails the job before it runs anyway.
            let variables = self.runner_env().job_variables(job);
            for v in job
                .variables
                .iter()
                .filter(|v| v.masked && !v.value.is_empty())
            {
                masked.push(v.value.clone());
                if !v.raw {
                    if let Ok(seen) =
                        variables.expand_capped(&v.value, crate::job::MAX_EXPANDED_VALUE)
                    {
                        masked.push(seen);
                    }
                }
            }
            prefixes = job.features.token_mask_prefixes.clone();
        }
        masked.retain(|m| !m.is_empty());
        TraceSettings {
            limit_bytes: self.runner.output_limit_kib.saturating_mul(1024),
            masked_phrases: masked,
            token_prefixes: prefixes,
            timestamps: true,
        }
    }

    /// Runs the job on its executor and maps the outcome onto the final state.
    async fn execute(
        &mut self,
        job: Arc<JobPayload>,
        trace: &JobTrace,
        cancel: CancellationToken,
        coordinator_abort: CancellationToken,
    ) -> FinalState {
        let shared = self.shared.clone();
        trace.runner_line(&format!(
            "\x1b[0KRunning with flotilla {} ({})\x1b[0;m",
            crate::VERSION,
            crate::coordinator::REVISION
        ));
        trace.runner_line(&format!(
            "\x1b[0K  on {} {}, system ID: {}\x1b[0;m",
            self.runner.name,
            self.runner.short_token(),
            shared.system_id
        ));
        let variables = self.runner_env().job_variables(&job);
        if let Err(e) = crate::job::check_expansion(&job, &variables) {
            trace.runner_line(&format!("\x1b[31;1mERROR: Job failed: {e}\x1b[0;m"));
            tracing::warn!(job = job.id, error = %e, "job refused: variable expansion too large");
            let reason = FailureReason::RunnerConfigurationError;
            return FinalState::failed(reason.for_job(&job.features.failure_reasons), None);
        }
        let abort = CancellationToken::new();
        let interrupted = shared.abort_jobs.clone();
        let abort_on = {
            let abort = abort.clone();
            let coordinator_abort = coordinator_abort.clone();
            let interrupted = interrupted.clone();
            async move {
                tokio::select! {
                    _ = coordinator_abort.cancelled() => {}
                    _ = interrupted.cancelled() => {}
                }
                abort.cancel();
            }
        };
        if let Err(refusal) = executor::check_allowed(&self.runner.docker, &job, &variables) {
            for line in &refusal.lines {
                trace.runner_line(line);
            }
            trace.runner_line(&format!(
                "\x1b[31;1mERROR: Job failed (system failure): {}\x1b[0;m",
                refusal.error
            ));
            tracing::warn!(job = job.id, error = %refusal.error, "job refused by allowed_images / allowed_pull_policies");
            return FinalState::failed(FailureReason::RunnerSystemFailure, None);
        }
        let (docker, vm) = match self.docker_host(trace, &coordinator_abort).await {
            Ok(host) => host,
            Err(message) => {
                trace.runner_line(&format!(
                    "\x1b[31;1mERROR: Job failed (system failure): {message}\x1b[0;m"
                ));
                let reason = if interrupted.is_cancelled() {
                    FailureReason::RunnerInterrupted
                } else {
                    FailureReason::RunnerSystemFailure
                };
                return FinalState::failed(reason.for_job(&job.features.failure_reasons), None);
            }
        };
        let cache = cache_plan(&job, &variables, &self.runner).await;
        let run = JobRun {
            cache,
            job: job.clone(),
            variables,
            trace: trace.clone(),
            labels: ContainerLabels {
                job_id: job.id,
                runner: self.runner.short_token(),
                vm: vm.clone(),
                manager: shared.system_id.clone(),
                run: shared.run_id.clone(),
            },
            cancel,
            abort: abort.clone(),
            coordinator_url: self.runner.url.clone(),
        };
        let outcome = tokio::select! {
            outcome = executor::run_job(&docker, &self.runner.docker, run) => outcome,
            never = never_after(abort_on) => match never {},
        };
        let supported = &job.features.failure_reasons;
        let host_lost = matches!(outcome, JobOutcome::HostLost(_));
        let final_state = match outcome {
            JobOutcome::Succeeded => FinalState::success(),
            JobOutcome::ScriptFailed(code) => {
                FinalState::failed(FailureReason::ScriptFailure, Some(code))
            }
            JobOutcome::TimedOut => FinalState::failed(FailureReason::JobExecutionTimeout, None),
            JobOutcome::Canceled if interrupted.is_cancelled() => {
                FinalState::failed(FailureReason::RunnerInterrupted.for_job(supported), None)
            }
            JobOutcome::Canceled => {
                FinalState::failed(FailureReason::JobCanceled.for_job(supported), None)
            }
            JobOutcome::HostLost(message) => {
                trace.runner_line(&format!(
                    "\x1b[31;1mERROR: the Docker host was lost: {message}\x1b[0;m"
                ));
                let fate = self.vm_fate(&vm).await;
                if let Some(fate) = fate {
                    trace.runner_line(&format!("VM {vm}: {}", fate_text(fate)));
                }
                let lost = matches!(
                    fate,
                    Some(VmFate::Gone | VmFate::Terminated | VmFate::Preempted)
                );
                let reason = if interrupted.is_cancelled() || lost {
                    FailureReason::RunnerInterrupted
                } else {
                    FailureReason::RunnerSystemFailure
                };
                FinalState::failed(reason.for_job(supported), None)
            }
            JobOutcome::SystemFailure { reason, message } => {
                tracing::warn!(job = job.id, %message, "job failed in the runner");
                FinalState::failed(reason.for_job(supported), None)
            }
        };
        trace.runner_line(&final_line(&final_state));
        if let (Some(fleet), Some(lease)) = (&self.fleet, self.lease.take()) {
            if host_lost {
                // Its dockerd stopped answering: never reuse it (dropping a lease removes its VM).
                tracing::warn!(job = job.id, vm = %lease.name, "removing the VM whose Docker connection was lost");
                drop(lease);
            } else {
                fleet.release(lease, true);
            }
        }
        final_state
    }

    /// The Docker engine the job runs on, and the VM name (empty for the local executor): the
    /// local or configured engine, the VM leased before the request, or one made on demand.
    async fn docker_host(
        &mut self,
        trace: &JobTrace,
        coordinator_abort: &CancellationToken,
    ) -> Result<(bollard::Docker, String), String> {
        let Some(fleet) = &self.fleet else {
            let docker = crate::docker::connect(self.runner.docker.host.as_deref())
                .await
                .map_err(|e| e.to_string())?;
            return Ok((docker, String::new()));
        };
        if self.lease.is_none() {
            trace.runner_line("Waiting for a VM to be created for this job ...");
            let interrupted = self.shared.abort_jobs.child_token();
            let lease = tokio::select! {
                lease = fleet.lease_on_demand(interrupted) => {
                    lease.map_err(|e| format!("no VM for the job: {e}"))?
                }
                _ = coordinator_abort.cancelled() => {
                    return Err("the job was canceled while its VM was being made".into());
                }
            };
            self.lease = Some(lease);
        }
        let lease = self.lease.as_ref().ok_or("no VM leased")?;
        trace.runner_line(&format!(
            "Running on VM {} in zone {} (docker+machine)",
            lease.name, lease.zone
        ));
        Ok((lease.docker.clone(), lease.name.clone()))
    }

    /// What became of the job's VM after its Docker connection was lost (waits up to 30 s).
    async fn vm_fate(&self, vm: &str) -> Option<VmFate> {
        let fleet = self.fleet.as_ref()?;
        if vm.is_empty() {
            return None;
        }
        Some(fleet.vm_fate(vm, std::time::Duration::from_secs(30)).await)
    }
}

/// Runs `f`, then waits forever: lets a side task live exactly as long as the `select!` it is in.
/// The job's cache plan. Signing GCS URLs may call the metadata server and IAM: each call is
/// bounded, and a failure is a warning in the plan, never a job failure.
async fn cache_plan(
    job: &JobPayload,
    variables: &crate::job::Variables,
    runner: &RunnerConfig,
) -> crate::cache::CachePlan {
    let short_token = runner.short_token();
    crate::cache::plan_job(crate::cache::PlanInput {
        job,
        variables,
        config: &runner.cache,
        short_token: &short_token,
    })
    .await
}

async fn never_after(f: impl std::future::Future<Output = ()>) -> std::convert::Infallible {
    f.await;
    std::future::pending().await
}

/// The last line GitLab Runner writes.
fn final_line(state: &FinalState) -> String {
    match (&state.state, state.failure_reason, state.exit_code) {
        (JobState::Success, _, _) => "\x1b[32;1mJob succeeded\x1b[0;m".to_string(),
        (_, Some(FailureReason::ScriptFailure), Some(code)) => {
            format!("\x1b[31;1mERROR: Job failed: exit code {code}\x1b[0;m")
        }
        (_, Some(reason), _) => format!("\x1b[31;1mERROR: Job failed: {reason}\x1b[0;m"),
        _ => "\x1b[31;1mERROR: Job failed\x1b[0;m".to_string(),
    }
}

/// How a lost VM's fate reads in the trace.
fn fate_text(fate: VmFate) -> &'static str {
    match fate {
        VmFate::Gone => "gone (deleted outside this job)",
        VmFate::Terminated => "stopped (TERMINATED)",
        VmFate::Preempted => "preempted",
        VmFate::Alive => "still running; its Docker connection failed",
    }
}
