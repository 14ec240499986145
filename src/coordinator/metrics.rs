//! Request-status metrics of the coordinator client, on the injected registry. Labels come from
//! closed sets (endpoint, method, HTTP status) plus the runner's short token and system id, as in
//! GitLab Runner, so its dashboards work unchanged.

use prometheus::{IntCounterVec, Opts, Registry};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Which API call a request was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST jobs/request`.
    RequestJob,
    /// `PUT jobs/:id`.
    UpdateJob,
    /// `PATCH jobs/:id/trace`.
    PatchTrace,
}

impl Endpoint {
    /// The `endpoint` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::RequestJob => "request_job",
            Endpoint::UpdateJob => "update_job",
            Endpoint::PatchTrace => "patch_trace",
        }
    }
}

/// The labels that say which runner a request was for. Holds the short token only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerLabels {
    /// [`crate::config::short_token`] of the runner token.
    pub runner: String,
    /// The runner manager's system id.
    pub system_id: String,
}

/// The counters. Created once per [`super::Coordinator`]; cloned cheaply (prometheus vectors
/// are shared handles).
#[derive(Clone)]
pub struct ApiMetrics {
    statuses: IntCounterVec,
    undecodable_jobs: IntCounterVec,
    trace_bytes: IntCounterVec,
    /// Set by the first HTTP response of any kind (readiness: the coordinator answered).
    answered: Arc<AtomicBool>,
}

impl ApiMetrics {
    /// Creates and registers the counters.
    pub fn register(registry: &Registry) -> Result<ApiMetrics, prometheus::Error> {
        let statuses = IntCounterVec::new(
            Opts::new(
                "gitlab_runner_api_request_statuses_total",
                "The total number of API responses by runner, system_id, endpoint, status and method.",
            ),
            &["runner", "system_id", "endpoint", "status", "method"],
        )?;
        let undecodable_jobs = IntCounterVec::new(
            Opts::new(
                "flotilla_undecodable_job_responses_total",
                "Job request answers with status 201 that were not a job (not JSON, or no id/token).",
            ),
            &["runner", "system_id"],
        )?;
        let trace_bytes = IntCounterVec::new(
            Opts::new(
                "flotilla_trace_bytes_sent_total",
                "Job trace bytes the coordinator accepted (PATCH answered 202).",
            ),
            &["runner", "system_id"],
        )?;
        registry.register(Box::new(statuses.clone()))?;
        registry.register(Box::new(undecodable_jobs.clone()))?;
        registry.register(Box::new(trace_bytes.clone()))?;
        Ok(ApiMetrics {
            statuses,
            undecodable_jobs,
            trace_bytes,
            answered: Arc::default(),
        })
    }

    /// Creates a runner's series that must exist before its first event (at 0).
    pub fn add_runner(&self, labels: &RunnerLabels) {
        let l = [labels.runner.as_str(), labels.system_id.as_str()];
        self.undecodable_jobs.with_label_values(&l);
        self.trace_bytes.with_label_values(&l);
    }

    /// Whether any coordinator call got an HTTP answer yet.
    pub fn has_answered(&self) -> bool {
        self.answered.load(Ordering::Relaxed)
    }

    /// Counts trace bytes the coordinator stored.
    pub fn trace_bytes_sent(&self, labels: &RunnerLabels, bytes: u64) {
        self.trace_bytes
            .with_label_values(&[labels.runner.as_str(), labels.system_id.as_str()])
            .inc_by(bytes);
    }

    /// Counts one HTTP response (every attempt, retried ones included).
    pub fn response(&self, labels: &RunnerLabels, endpoint: Endpoint, method: &str, status: u16) {
        self.answered.store(true, Ordering::Relaxed);
        let status = status.to_string();
        let method = method.to_ascii_lowercase();
        self.statuses
            .with_label_values(&[
                labels.runner.as_str(),
                labels.system_id.as_str(),
                endpoint.as_str(),
                status.as_str(),
                method.as_str(),
            ])
            .inc();
    }

    /// Counts a 201 that was not a usable job.
    pub fn undecodable_job(&self, labels: &RunnerLabels) {
        self.undecodable_jobs
            .with_label_values(&[labels.runner.as_str(), labels.system_id.as_str()])
            .inc();
    }
}
