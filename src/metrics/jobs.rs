//! Job series with GitLab Runner's names and labels (`gitlab_runner_jobs`, `…_jobs_total`,
//! `…_failed_jobs_total`, `…_job_duration_seconds`, `…_job_queue_duration_seconds`) plus
//! `flotilla_job_pickup_seconds`, `…_job_stage_duration_seconds`), and the table of running jobs
//! the status page and `/debug/jobs/list` show. A job task calls [`JobMetrics::track`] when it
//! receives a job and holds the returned [`TrackedJob`]; its [`StageReporter`] follows the
//! job's stage and executor stage; dropping the guard ends the job in the table and observes
//! its duration.

use crate::job::{FailureReason, JobInfo};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// GitLab Runner's `mode` label: Flotilla runs jobs the traditional way (no step runner).
pub const MODE: &str = "traditional";
/// GitLab Runner's build stages (`common/build.go`) plus the user steps GitLab sends
/// (`step_script`, `step_release`): the `stage` label's closed set. Any other step is
/// `step_other`, so a job cannot add series.
const STAGES: [&str; 16] = [
    "resolve_secrets",
    "prepare_executor",
    "prepare_script",
    "get_sources",
    "clear_worktree",
    "restore_cache",
    "download_artifacts",
    "after_script",
    "archive_cache",
    "archive_cache_on_failure",
    "upload_artifacts_on_success",
    "upload_artifacts_on_failure",
    "cleanup_file_variables",
    "step_script",
    "step_release",
    "step_other",
];

/// `stage` as a label value from the closed set.
fn stage_label(stage: &str) -> &'static str {
    STAGES
        .into_iter()
        .find(|s| *s == stage)
        .unwrap_or("step_other")
}

/// One runner as the job series label it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RunnerKey {
    /// The short token (9 characters).
    pub runner: String,
    /// The runner's `name`.
    pub runner_name: String,
}

/// A running job as the status page and `/debug/jobs/list` show it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunningJobView {
    /// GitLab's job id.
    pub id: i64,
    /// The runner that took it.
    pub runner: RunnerKey,
    /// Time since it was received.
    pub duration: Duration,
    /// The job's page (`<project URL>/-/jobs/<id>`), without credentials; empty when unknown.
    pub url: String,
    /// The build stage now (GitLab Runner's names; empty before the first).
    pub stage: String,
    /// The executor's stage now (`docker_prepare`, `docker_run`, …; empty before the first).
    pub executor_stage: String,
}

struct Running {
    id: i64,
    runner: RunnerKey,
    received: Instant,
    url: String,
    stage: &'static str,
    executor_stage: &'static str,
    /// When each open stage started (stages do not nest today; a list keeps it simple).
    open: Vec<(&'static str, Instant)>,
}

type Table = Arc<Mutex<BTreeMap<u64, Running>>>;

/// `gitlab_runner_jobs`: for every runner an `idle` series at 0 (as GitLab Runner keeps one),
/// plus the count of running jobs.
#[derive(Clone)]
struct JobsCollector {
    template: IntGaugeVec,
    system_id: String,
    runners: Arc<Mutex<Vec<RunnerKey>>>,
    table: Table,
}

fn jobs_opts() -> Opts {
    Opts::new(
        "gitlab_runner_jobs",
        "The current number of running builds.",
    )
}

const JOBS_LABELS: [&str; 6] = [
    "runner",
    "runner_name",
    "system_id",
    "state",
    "stage",
    "executor_stage",
];

impl Collector for JobsCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.template.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Ok(gauge) = IntGaugeVec::new(jobs_opts(), &JOBS_LABELS) else {
            return Vec::new();
        };
        let runners = self
            .runners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let sid = self.system_id.as_str();
        for r in &runners {
            gauge.with_label_values(&[&r.runner, &r.runner_name, sid, "idle", "idle", "idle"]);
        }
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        for job in table.values() {
            let r = &job.runner;
            gauge
                .with_label_values(&[
                    &r.runner,
                    &r.runner_name,
                    sid,
                    "running",
                    job.stage,
                    job.executor_stage,
                ])
                .inc();
        }
        gauge.collect()
    }
}

/// The job series and the running-job table. Cheap to clone (shared handles).
#[derive(Clone)]
pub struct JobMetrics {
    system_id: String,
    jobs_total: IntCounterVec,
    failed: IntCounterVec,
    duration: HistogramVec,
    queue_duration: HistogramVec,
    queue_size: IntGaugeVec,
    queue_depth: IntGaugeVec,
    pickup: HistogramVec,
    stage_duration: HistogramVec,
    jobs: JobsCollector,
    next: Arc<AtomicU64>,
}

impl JobMetrics {
    /// Creates the series and registers them.
    pub fn register(registry: &Registry, system_id: &str) -> Result<JobMetrics, prometheus::Error> {
        let rl = ["runner", "runner_name", "system_id"];
        let mut queue_labels = rl.to_vec();
        queue_labels.push("project_jobs_running");
        let m = JobMetrics {
            system_id: system_id.to_string(),
            jobs_total: IntCounterVec::new(
                Opts::new("gitlab_runner_jobs_total", "Total number of handled jobs"),
                &rl,
            )?,
            failed: IntCounterVec::new(
                Opts::new("gitlab_runner_failed_jobs_total", "Total number of failed jobs"),
                &["runner", "runner_name", "failure_reason", "mode"],
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new("gitlab_runner_job_duration_seconds", "Histogram of job durations")
                    .buckets(vec![
                        30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 10800.0, 18000.0, 36000.0,
                    ]),
                &rl,
            )?,
            queue_duration: HistogramVec::new(
                HistogramOpts::new(
                    "gitlab_runner_job_queue_duration_seconds",
                    "A histogram representing job queue duration.",
                )
                .buckets(vec![1.0, 3.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 1800.0, 3600.0]),
                &queue_labels,
            )?,
            queue_size: IntGaugeVec::new(
                Opts::new(
                    "gitlab_runner_job_queue_size",
                    "A gauge representing the size of the queue for the runner",
                ),
                &rl,
            )?,
            queue_depth: IntGaugeVec::new(
                Opts::new(
                    "gitlab_runner_job_queue_depth",
                    "A gauge representing the search depth in the queue for the runner",
                ),
                &rl,
            )?,
            pickup: HistogramVec::new(
                HistogramOpts::new(
                    "flotilla_job_pickup_seconds",
                    "Time from the coordinator handing a job over to its acknowledgement (running).",
                )
                .buckets(vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
                &["runner", "runner_name"],
            )?,
            stage_duration: HistogramVec::new(
                HistogramOpts::new(
                    "gitlab_runner_job_stage_duration_seconds",
                    "Histogram of each job stage duration",
                )
                .buckets(vec![1.0, 3.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 1800.0, 3600.0]),
                &["runner", "runner_name", "system_id", "stage"],
            )?,
            jobs: JobsCollector {
                template: IntGaugeVec::new(jobs_opts(), &JOBS_LABELS)?,
                system_id: system_id.to_string(),
                runners: Arc::default(),
                table: Arc::default(),
            },
            next: Arc::default(),
        };
        registry.register(Box::new(m.jobs_total.clone()))?;
        registry.register(Box::new(m.failed.clone()))?;
        registry.register(Box::new(m.duration.clone()))?;
        registry.register(Box::new(m.queue_duration.clone()))?;
        registry.register(Box::new(m.queue_size.clone()))?;
        registry.register(Box::new(m.queue_depth.clone()))?;
        registry.register(Box::new(m.pickup.clone()))?;
        registry.register(Box::new(m.stage_duration.clone()))?;
        registry.register(Box::new(m.jobs.clone()))?;
        Ok(m)
    }

    /// Creates a runner's series with closed label sets at 0 (every failure reason); a runner
    /// already added is left as it is.
    pub fn add_runner(&self, runner: &RunnerKey) {
        {
            let mut runners = self.jobs.runners.lock().unwrap_or_else(|p| p.into_inner());
            if runners.contains(runner) {
                return;
            }
            runners.push(runner.clone());
        }
        let sid = self.system_id.as_str();
        self.jobs_total
            .with_label_values(&[&runner.runner, &runner.runner_name, sid]);
        for reason in FailureReason::ALL {
            self.failed.with_label_values(&[
                &runner.runner,
                &runner.runner_name,
                reason.as_str(),
                MODE,
            ]);
        }
        self.pickup
            .with_label_values(&[&runner.runner, &runner.runner_name]);
        self.queue_size
            .with_label_values(&[&runner.runner, &runner.runner_name, sid]);
        self.queue_depth
            .with_label_values(&[&runner.runner, &runner.runner_name, sid]);
    }

    /// A job was received: counts it, observes its time in GitLab's queue (from its
    /// `job_info`), and lists it as running until the returned guard is dropped.
    pub fn track(&self, runner: &RunnerKey, id: i64, info: &JobInfo) -> TrackedJob {
        let sid = self.system_id.as_str();
        self.jobs_total
            .with_label_values(&[&runner.runner, &runner.runner_name, sid])
            .inc();
        if let Some(queued) = info.time_in_queue_seconds {
            let running = project_jobs_running(info.project_jobs_running);
            self.queue_duration
                .with_label_values(&[&runner.runner, &runner.runner_name, sid, running])
                .observe(queued.max(0.0));
        }
        for (gauge, value) in [
            (&self.queue_size, info.queue_size),
            (&self.queue_depth, info.queue_depth),
        ] {
            if let Some(v) = value {
                gauge
                    .with_label_values(&[&runner.runner, &runner.runner_name, sid])
                    .set(v);
            }
        }
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let received = Instant::now();
        self.jobs
            .table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                key,
                Running {
                    id,
                    runner: runner.clone(),
                    received,
                    url: info.job_url.clone(),
                    stage: "",
                    executor_stage: "",
                    open: Vec::new(),
                },
            );
        TrackedJob {
            metrics: self.clone(),
            runner: runner.clone(),
            key,
            received,
        }
    }

    /// The jobs running now, oldest first.
    pub fn running(&self) -> Vec<RunningJobView> {
        let now = Instant::now();
        self.jobs
            .table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|r| RunningJobView {
                id: r.id,
                runner: r.runner.clone(),
                duration: now.duration_since(r.received),
                url: r.url.clone(),
                stage: r.stage.to_string(),
                executor_stage: r.executor_stage.to_string(),
            })
            .collect()
    }
}

/// GitLab's `project_jobs_running_on_instance_runners_count` ("0", "1", "2", "3+"), kept to
/// that closed set.
fn project_jobs_running(count: Option<u64>) -> &'static str {
    match count {
        Some(0) => "0",
        Some(1) => "1",
        Some(2) => "2",
        Some(_) => "3+",
        None => "unknown",
    }
}

/// A job in the running table; dropped when the job task ends.
pub struct TrackedJob {
    metrics: JobMetrics,
    runner: RunnerKey,
    key: u64,
    received: Instant,
}

impl TrackedJob {
    /// The coordinator accepted the acknowledgement: observes the pickup time.
    pub fn acknowledged(&self) {
        self.metrics
            .pickup
            .with_label_values(&[&self.runner.runner, &self.runner.runner_name])
            .observe(self.received.elapsed().as_secs_f64());
    }

    /// A handle the executor reports the job's stages through (lives as long as it is held;
    /// reports after the job ended are ignored).
    pub fn stages(&self) -> StageReporter {
        StageReporter {
            metrics: self.metrics.clone(),
            runner: self.runner.clone(),
            key: self.key,
        }
    }

    /// The job failed with `reason` (`script_failure` when none was given, as GitLab Runner).
    pub fn failed(&self, reason: Option<FailureReason>) {
        let reason = reason.unwrap_or(FailureReason::ScriptFailure);
        self.metrics
            .failed
            .with_label_values(&[
                &self.runner.runner,
                &self.runner.runner_name,
                reason.as_str(),
                MODE,
            ])
            .inc();
    }
}

/// Follows one tracked job's stages: sets the `stage` / `executor_stage` its
/// `gitlab_runner_jobs` series and `/debug/jobs/list` line show, and observes
/// `gitlab_runner_job_stage_duration_seconds` when a stage ends. Cheap to clone.
#[derive(Clone)]
pub struct StageReporter {
    metrics: JobMetrics,
    runner: RunnerKey,
    key: u64,
}

impl StageReporter {
    fn with_job(&self, f: impl FnOnce(&mut Running)) {
        let mut table = self
            .metrics
            .jobs
            .table
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(job) = table.get_mut(&self.key) {
            f(job);
        }
    }

    /// Build stage `stage` starts (GitLab Runner's `OnBuildStageStartFn`).
    pub fn stage_started(&self, stage: &str) {
        let stage = stage_label(stage);
        self.with_job(|job| {
            job.stage = stage;
            job.open.retain(|(s, _)| *s != stage);
            job.open.push((stage, Instant::now()));
        });
    }

    /// Build stage `stage` ended: observes its duration.
    pub fn stage_ended(&self, stage: &str) {
        let stage = stage_label(stage);
        let mut started = None;
        self.with_job(|job| {
            if let Some(i) = job.open.iter().position(|(s, _)| *s == stage) {
                started = Some(job.open.swap_remove(i).1);
            }
        });
        if let Some(started) = started {
            self.metrics
                .stage_duration
                .with_label_values(&[
                    &self.runner.runner,
                    &self.runner.runner_name,
                    &self.metrics.system_id,
                    stage,
                ])
                .observe(started.elapsed().as_secs_f64());
        }
    }

    /// The executor entered `stage` (a `&'static` name from the executor's closed set).
    pub fn executor_stage(&self, stage: &'static str) {
        self.with_job(|job| job.executor_stage = stage);
    }
}

impl Drop for TrackedJob {
    fn drop(&mut self) {
        self.metrics
            .jobs
            .table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
        self.metrics
            .duration
            .with_label_values(&[
                &self.runner.runner,
                &self.runner.runner_name,
                &self.metrics.system_id,
            ])
            .observe(self.received.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn running_jobs_counted_and_idle_series_kept() {
        let registry = Registry::new();
        let m = JobMetrics::register(&registry, "s_0123456789ab").expect("registers");
        let r = RunnerKey {
            runner: "abcdefghi".into(),
            runner_name: "r1".into(),
        };
        m.add_runner(&r);
        let text = || {
            prometheus::TextEncoder::new()
                .encode_to_string(&registry.gather())
                .expect("encodes")
        };
        assert!(text().contains("failure_reason=\"runner_system_failure\",mode=\"traditional\",runner=\"abcdefghi\",runner_name=\"r1\"} 0"));
        let payload = json!({"job_info": {"time_in_queue_seconds": 4.5, "project_jobs_running_on_instance_runners_count": "3+"}});
        let job = m.track(&r, 42, &crate::job::JobInfo::from_payload(&payload));
        let t = text();
        assert!(t.contains("gitlab_runner_jobs{executor_stage=\"\",runner=\"abcdefghi\",runner_name=\"r1\",stage=\"\",state=\"running\",system_id=\"s_0123456789ab\"} 1"), "{t}");
        let stages = job.stages();
        stages.executor_stage("docker_run");
        stages.stage_started("step_script");
        let t = text();
        assert!(t.contains("gitlab_runner_jobs{executor_stage=\"docker_run\",runner=\"abcdefghi\",runner_name=\"r1\",stage=\"step_script\",state=\"running\",system_id=\"s_0123456789ab\"} 1"), "{t}");
        assert_eq!(m.running()[0].stage, "step_script");
        stages.stage_ended("step_script");
        stages.stage_started("step_Weird name");
        stages.stage_ended("step_Weird name");
        let t = text();
        assert!(t.contains("gitlab_runner_job_stage_duration_seconds_count{runner=\"abcdefghi\",runner_name=\"r1\",stage=\"step_script\",system_id=\"s_0123456789ab\"} 1"), "{t}");
        assert!(t.contains("stage=\"step_other\""), "{t}");
        assert!(!t.contains("Weird"), "{t}");
        assert!(t.contains("gitlab_runner_jobs{executor_stage=\"idle\",runner=\"abcdefghi\",runner_name=\"r1\",stage=\"idle\",state=\"idle\",system_id=\"s_0123456789ab\"} 0"), "{t}");
        assert!(t.contains("project_jobs_running=\"3+\""), "{t}");
        assert_eq!(m.running().len(), 1);
        assert_eq!(m.running()[0].id, 42);
        job.failed(Some(FailureReason::RunnerSystemFailure));
        drop(job);
        let t = text();
        assert!(m.running().is_empty());
        assert!(!t.contains("state=\"running\""), "{t}");
        assert!(t.contains("failure_reason=\"runner_system_failure\",mode=\"traditional\",runner=\"abcdefghi\",runner_name=\"r1\"} 1"), "{t}");
        assert!(t.contains("gitlab_runner_job_duration_seconds_count{runner=\"abcdefghi\",runner_name=\"r1\",system_id=\"s_0123456789ab\"} 1"), "{t}");
    }
}
