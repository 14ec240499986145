//! Request-status metrics of the coordinator client, on the injected registry. Labels come from
//! closed sets (endpoint, method, HTTP status) plus the runner's short token and system id, as in
//! GitLab Runner, so its dashboards work unchanged.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// GitLab Runner's `status_class` label.
fn status_class(status: u16) -> &'static str {
    match status {
        500.. => "5xx",
        400.. => "4xx",
        300.. => "3xx",
        200.. => "2xx",
        100.. => "1xx",
        _ => "unknown",
    }
}

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
    durations: HistogramVec,
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
                "The total number of API requests made by GitLab Runner, partitioned by runner, system_id, endpoint, status and method.",
            ),
            &["runner", "system_id", "endpoint", "status", "method"],
        )?;
        let durations = HistogramVec::new(
            HistogramOpts::new(
                "gitlab_runner_api_request_duration_seconds",
                "Latency histogram of API requests made by GitLab Runner, partitioned by runner, system_id, endpoint, status_class and method.",
            )
            .buckets(vec![0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]),
            &["runner", "system_id", "endpoint", "status_class", "method"],
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
        registry.register(Box::new(durations.clone()))?;
        registry.register(Box::new(undecodable_jobs.clone()))?;
        registry.register(Box::new(trace_bytes.clone()))?;
        Ok(ApiMetrics {
            statuses,
            durations,
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
    pub fn response(
        &self,
        labels: &RunnerLabels,
        endpoint: Endpoint,
        method: &str,
        status: u16,
        took: Duration,
    ) {
        self.answered.store(true, Ordering::Relaxed);
        let class = status_class(status);
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
        self.durations
            .with_label_values(&[
                labels.runner.as_str(),
                labels.system_id.as_str(),
                endpoint.as_str(),
                class,
                method.as_str(),
            ])
            .observe(took.as_secs_f64());
    }

    /// Counts a 201 that was not a usable job.
    pub fn undecodable_job(&self, labels: &RunnerLabels) {
        self.undecodable_jobs
            .with_label_values(&[labels.runner.as_str(), labels.system_id.as_str()])
            .inc();
    }
}
