//! The manager's telemetry and its admin server. [`Metrics`] holds the ONE injected prometheus
//! registry of a manager run and the process- and job-level series; the coordinator
//! (`coordinator/metrics.rs`), the Compute client (`cloud/gce/rate.rs`) and the pools
//! (`fleet/metrics.rs`) register their own series on the same registry. `server.rs` serves it
//! on `listen_address` with health checks and the status page (`status.rs`, `html.rs`).
//!
//! Invariant: label values come from closed sets or the configuration (short token, runner
//! name, zones, project, machine type); never a token, a job id or a VM name. Every counter
//! with a closed label set exists at 0 before its first event.

mod debug_jobs;
mod errors;
mod html;
mod jobs;
mod proc_self;
mod process;
mod server;
mod status;

pub use errors::{ErrorCounter, ErrorLayer};
pub use jobs::{JobMetrics, RunnerKey, RunningJobView, StageReporter, TrackedJob};
pub use process::{ProcessMetrics, ProcessState};
pub use server::{bind, router, serve, ServerError};
pub use status::{
    JobStatus, LivePools, ReadyCheck, RunnerStatus, StatusReport, StatusSource, VmStatus,
};

use crate::config::Config;
use crate::fleet::FleetMetrics;
use prometheus::Registry;

/// The series of one manager run, on its registry. Created by the manager at start.
pub struct Metrics {
    /// The one registry every subsystem registers on; `/metrics` gathers it.
    pub registry: Registry,
    /// Process state, version, `concurrent`, `limit`.
    pub process: ProcessMetrics,
    /// Job series and the running-job table.
    pub jobs: JobMetrics,
    /// The pools' series.
    pub fleet: FleetMetrics,
}

impl Metrics {
    /// Registers every manager-level series on `registry`: the process series (state
    /// `starting`), `errors` (fed by `main`'s tracing layer; a fresh counter nothing feeds
    /// when `None`), the job series with each runner's closed-set series at 0, and the pools'.
    pub fn new(
        registry: Registry,
        config: &Config,
        system_id: &str,
        errors: Option<&ErrorCounter>,
    ) -> Result<Metrics, prometheus::Error> {
        let process = ProcessMetrics::register(&registry)?;
        // The manager runs with a configuration that loaded: GitLab Runner counts that load.
        process.config_loaded();
        match errors {
            Some(e) => e.register(&registry)?,
            None => ErrorCounter::new().register(&registry)?,
        }
        let jobs = JobMetrics::register(&registry, system_id)?;
        let fleet = FleetMetrics::register(&registry)?;
        let metrics = Metrics {
            registry,
            process,
            jobs,
            fleet,
        };
        metrics.observe_config(config, system_id);
        Ok(metrics)
    }

    /// Sets `concurrent` and each runner's `limit`, and creates the closed-set series of runners
    /// not seen before (at start and after each configuration reload).
    pub fn observe_config(&self, config: &Config, system_id: &str) {
        self.process.set_concurrent(config.concurrent);
        for r in &config.runners {
            let key = RunnerKey {
                runner: r.short_token(),
                runner_name: r.name.clone(),
            };
            self.process
                .set_limit(&key.runner, &key.runner_name, system_id, r.limit);
            self.jobs.add_runner(&key);
        }
    }

    /// The registry in Prometheus' text format.
    pub fn text(&self) -> String {
        prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# cannot encode metrics: {e}\n"))
    }
}
