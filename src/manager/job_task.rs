//! One job from receipt to final update: record it in `jobs.json`, acknowledge it (two-phase
//! commit), start the trace upload, run it through the executor, map the outcome onto GitLab's
//! final state ([`crate::job::final_state`]), send it (`final_update.rs`), forget the job. A
//! payload that cannot be run, or a job that could not be recorded in `jobs.json` (a full disk:
//! nothing runs unrecorded), is acknowledged and failed with `runner_system_failure` and a trace
//! line saying why.
//!
//! The `jobs.json` entry is a [`JobRecord`] guard held for the whole of [`JobTask::run`]: every
//! exit, early or not, forgets the job when the guard drops. The VM lease is settled in one
//! place, [`JobTask::return_lease`].

use super::Shared;
use crate::config::RunnerConfig;
use crate::coordinator::{AckOutcome, FinalState, JobCredentials, JobState, RunnerEndpoint};
use crate::executor::{self, ContainerLabels, JobOutcome, JobRun};
use crate::fleet::{FleetHandle, Lease, VmFate};
use crate::job::{EndContext, FailureReason, JobHandle, JobInfo, JobPayload, RunnerEnvironment};
use crate::state::{JobRecord, RunningJob};
use crate::trace::{JobTrace, RunnerBanner, TraceSettings};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// A job handed over by the coordinator, about to run.
pub(super) struct JobTask {
    pub shared: Arc<Shared>,
    pub runner: Arc<RunnerConfig>,
    /// The runner's cache signer (made once per runner, not per job).
    pub cache: Arc<crate::cache::RunnerCache>,
    /// The runner's engine client (`docker` executor; unused by docker+machine).
    pub engine: Arc<crate::docker::SharedEngine>,
    pub endpoint: RunnerEndpoint,
    /// The runner's VM pool (docker+machine only).
    pub fleet: Option<FleetHandle>,
    /// The VM leased before the request (docker+machine with IdleCount > 0).
    pub lease: Option<Lease>,
    pub handle: JobHandle,
    pub payload: serde_json::Value,
    /// The payload's `job_info`, read once on receipt (leniently: it never fails).
    pub info: JobInfo,
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

/// The executor's stage reports, onto the job's metrics (`gitlab_runner_jobs` labels, the stage
/// histogram, `/debug/jobs/list`).
struct Stages(crate::metrics::StageReporter);

impl executor::StageObserver for Stages {
    fn stage_started(&self, stage: &str) {
        self.0.stage_started(stage);
    }
    fn stage_ended(&self, stage: &str) {
        self.0.stage_ended(stage);
    }
    fn executor_stage(&self, stage: &'static str) {
        self.0.executor_stage(stage);
    }
}

impl JobTask {
    /// Runs the job to its final update. Never panics on what the coordinator sent.
    pub async fn run(self) {
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
            &self.info,
        );
        // Dropped on every exit below: the job leaves `jobs.json` however the task ends.
        let (record, written) = shared
            .state
            .record_job(RunningJob {
                id: job_id,
                url,
                token: self.handle.token.clone(),
                acknowledged: false,
                pending_final: None,
            })
            .await;
        if let Err(e) = &written {
            tracing::error!(job = job_id, error = %e, "cannot record the job in the state directory; failing it without running it");
        }
        self.run_recorded(&record, written.err(), tracked).await;
    }

    /// [`JobTask::run`] once the job is recorded: `record` outlives every return. With
    /// `unrecorded` (writing `jobs.json` failed), the job is failed without running.
    async fn run_recorded(
        mut self,
        record: &JobRecord,
        unrecorded: Option<crate::state::StateError>,
        tracked: crate::metrics::TrackedJob,
    ) {
        let shared = self.shared.clone();
        let job_id = self.handle.id;
        let parsed = JobPayload::parse(std::mem::take(&mut self.payload));
        let settings = self.trace_settings(parsed.as_ref().ok());
        let trace = match JobTrace::new_in(settings, shared.hooks.trace_dir.as_deref()) {
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
                return;
            }
        };
        match ack {
            AckOutcome::Accepted => {
                tracked.acknowledged();
                record.acknowledged();
                tracing::info!(job = job_id, runner = %self.runner.short_token(), pickup_ms = self.received_at.elapsed().as_millis() as u64, "job received");
            }
            AckOutcome::Abort => {
                tracing::warn!(
                    job = job_id,
                    "coordinator refused the acknowledgement; dropping the job"
                );
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
                return;
            }
        };
        let final_state = match (parsed, ack) {
            _ if unrecorded.is_some() => {
                let e = unrecorded.map(|e| e.to_string()).unwrap_or_default();
                trace.system_failure(&format!(
                    "cannot record the job in the state directory, so it is not run: {e}"
                ));
                FinalState::failed(FailureReason::RunnerSystemFailure, None)
            }
            (Err(e), _) => {
                trace.system_failure(&e.to_string());
                tracing::warn!(job = job_id, error = %e, "malformed or unsupported job payload");
                FinalState::failed(FailureReason::RunnerSystemFailure, None)
            }
            (Ok(job), AckOutcome::Canceling) => {
                trace.error("Job failed: canceled");
                FinalState::failed(
                    FailureReason::JobCanceled.for_job(&job.features.failure_reasons),
                    None,
                )
            }
            (Ok(job), _) => {
                let cancel = session.cancel_requested.clone();
                let coordinator_abort = session.abort.clone();
                let stages = Arc::new(Stages(tracked.stages()));
                self.execute(Arc::new(job), &trace, cancel, coordinator_abort, stages)
                    .await
            }
        };
        trace.finish();
        if final_state.state == JobState::Failed {
            tracked.failed(final_state.failure_reason);
        }
        super::final_update::send_final(&shared, session, record, &trace, final_state).await;
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
            tls: super::tls_vars::tls_variables(&self.runner.tls),
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
        stages: Arc<Stages>,
    ) -> FinalState {
        let shared = self.shared.clone();
        let short_token = self.runner.short_token();
        let banner = RunnerBanner {
            name: &self.runner.name,
            short_token: &short_token,
            system_id: &shared.system_id,
        };
        trace.header(banner, crate::VERSION, crate::coordinator::REVISION);
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
            Err(e) => {
                trace.system_failure(&e.to_string());
                let reason = if interrupted.is_cancelled() {
                    FailureReason::RunnerInterrupted
                } else {
                    FailureReason::RunnerSystemFailure
                };
                return FinalState::failed(reason.for_job(&job.features.failure_reasons), None);
            }
        };
        let cache = cache_plan(&job, &variables, &self.runner, &self.cache).await;
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
            stages: Some(stages),
            start_slots: self
                .fleet
                .is_none()
                .then(|| executor::start_slots(self.runner.docker.host.as_deref())),
        };
        let outcome = tokio::select! {
            outcome = executor::run_job(&docker, &self.runner.docker, run) => outcome,
            never = never_after(abort_on) => match never {},
        };
        let host_lost = matches!(outcome, JobOutcome::HostLost(_));
        let mut vm_lost = false;
        match &outcome {
            JobOutcome::HostLost(message) => {
                trace.error(&format!("the Docker host was lost: {message}"));
                let fate = self.vm_fate(&vm).await;
                if let Some(fate) = fate {
                    trace.runner_line(&format!("VM {vm}: {}", fate_text(fate)));
                }
                vm_lost = matches!(
                    fate,
                    Some(VmFate::Gone | VmFate::Terminated | VmFate::Preempted)
                );
            }
            JobOutcome::SystemFailure { message, .. } => {
                tracing::warn!(job = job.id, %message, "job failed in the runner");
            }
            _ => {}
        }
        let end = EndContext {
            supported: &job.features.failure_reasons,
            interrupted: interrupted.is_cancelled(),
            vm_lost,
        };
        let final_state = crate::job::final_state(&outcome, end);
        trace.final_line(&final_state);
        self.return_lease(job.id, host_lost);
        final_state
    }

    /// Settles the VM lease, if the job had one: a VM whose Docker connection was lost is
    /// removed (dropping a lease removes its VM), any other goes back to the pool. The one place
    /// a lease ends on purpose; a lease still held when the task ends (the job never reached its
    /// VM) is dropped with it, which removes the VM.
    fn return_lease(&mut self, job_id: i64, host_lost: bool) {
        let (Some(fleet), Some(lease)) = (&self.fleet, self.lease.take()) else {
            return;
        };
        if host_lost {
            tracing::warn!(job = job_id, vm = %lease.name, "removing the VM whose Docker connection was lost");
            drop(lease);
        } else {
            fleet.release(lease, true);
        }
    }

    /// The Docker engine the job runs on, and the VM name (empty for the local executor): the
    /// local or configured engine, the VM leased before the request, or one made on demand.
    async fn docker_host(
        &mut self,
        trace: &JobTrace,
        coordinator_abort: &CancellationToken,
    ) -> Result<(bollard::Docker, String), HostError> {
        let Some(fleet) = &self.fleet else {
            let docker = self
                .engine
                .client(self.runner.docker.host.as_deref())
                .await?;
            return Ok((docker, String::new()));
        };
        if self.lease.is_none() {
            trace.runner_line("Waiting for a VM to be created for this job ...");
            let interrupted = self.shared.abort_jobs.child_token();
            let lease = tokio::select! {
                lease = fleet.lease_on_demand(interrupted) => lease?,
                _ = coordinator_abort.cancelled() => return Err(HostError::CanceledWhileMaking),
            };
            self.lease = Some(lease);
        }
        let lease = self.lease.as_ref().ok_or(HostError::NoLease)?;
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

/// Why a job got no Docker engine to run on (written to its trace as a system failure).
#[derive(Debug, thiserror::Error)]
enum HostError {
    /// The local or configured engine did not answer.
    #[error(transparent)]
    Connect(#[from] crate::docker::ConnectError),
    /// The pool could not make a VM for the job.
    #[error("no VM for the job: {0}")]
    NoVm(#[from] crate::fleet::FleetError),
    /// The coordinator canceled the job while its VM was being made.
    #[error("the job was canceled while its VM was being made")]
    CanceledWhileMaking,
    /// No lease where one was just made (not expected).
    #[error("no VM leased")]
    NoLease,
}

/// Runs `f`, then waits forever: lets a side task live exactly as long as the `select!` it is in.
/// The job's cache plan. Signing GCS URLs may call the metadata server and IAM: each call is
/// bounded, and a failure is a warning in the plan, never a job failure.
async fn cache_plan(
    job: &JobPayload,
    variables: &crate::job::Variables,
    runner: &RunnerConfig,
    cache: &crate::cache::RunnerCache,
) -> crate::cache::CachePlan {
    let short_token = runner.short_token();
    crate::cache::plan_job(crate::cache::PlanInput {
        job,
        variables,
        cache,
        short_token: &short_token,
    })
    .await
}

async fn never_after(f: impl std::future::Future<Output = ()>) -> std::convert::Infallible {
    f.await;
    std::future::pending().await
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
