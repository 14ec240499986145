//! What the status page shows: runners, VMs with state, zone and age, running jobs with their
//! duration. Gathered on each request from the configuration, the pools' snapshots and the
//! running-job table. Read-only; holds no token (runners appear by short token, coordinator
//! URLs without user info).

use super::Metrics;
use crate::config::Config;
use crate::fleet::FleetHandle;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Whether the manager is ready: the coordinator answered at least once.
pub type ReadyCheck = Arc<dyn Fn() -> bool + Send + Sync>;

/// Everything the admin server reads. Made once by the manager.
pub struct StatusSource {
    /// The manager's metrics (registry, job table, process state).
    pub metrics: Arc<Metrics>,
    /// The configuration in force now (a reload replaces it).
    pub config: Arc<dyn Fn() -> Arc<Config> + Send + Sync>,
    /// This manager's system id.
    pub system_id: String,
    /// The pools, by runner short token (a reload adds some).
    pub fleets: LivePools,
    /// Readiness beyond a loaded configuration.
    pub ready: ReadyCheck,
}

/// Every VM pool of the process by runner short token, shared between the manager (which adds
/// pools, also on a reload) and the status page (which reads them on each request).
pub type LivePools = Arc<std::sync::RwLock<Vec<(String, FleetHandle)>>>;

/// The whole page, also served as `/status.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StatusReport {
    /// Flotilla's version.
    pub version: String,
    /// Source revision.
    pub revision: String,
    /// This manager's system id.
    pub system_id: String,
    /// `starting`, `running`, `graceful-shutdown` or `forceful-shutdown`.
    pub process_state: String,
    /// The global `concurrent`.
    pub concurrent: usize,
    /// One entry per `[[runners]]`.
    pub runners: Vec<RunnerStatus>,
    /// Every VM the pools hold.
    pub vms: Vec<VmStatus>,
    /// Every job running now, oldest first.
    pub jobs: Vec<JobStatus>,
}

/// One runner.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunnerStatus {
    /// `name`.
    pub name: String,
    /// Short token (what GitLab shows).
    pub runner: String,
    /// Coordinator URL without user info.
    pub url: String,
    /// `docker` or `docker+machine`.
    pub executor: String,
    /// `limit` (0: none).
    pub limit: usize,
    /// Jobs it runs now.
    pub running_jobs: usize,
}

/// One VM.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VmStatus {
    /// The runner (short token) whose pool holds it.
    pub runner: String,
    /// Instance name.
    pub name: String,
    /// Zone.
    pub zone: String,
    /// GitLab Runner's state name (`creating`, `idle`, `acquired`, `used`, `removing`,
    /// `stuck-on-removing`).
    pub state: String,
    /// Seconds since its creation started.
    pub age_seconds: u64,
    /// Jobs it ran.
    pub jobs_run: u32,
}

/// One running job.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobStatus {
    /// GitLab's job id.
    pub id: i64,
    /// Runner short token.
    pub runner: String,
    /// Runner name.
    pub runner_name: String,
    /// Seconds since it was received.
    pub duration_seconds: u64,
}

/// `url` without user name and password (an operator may have put them there).
fn public_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => "(unparsable URL)".to_string(),
    }
}

impl StatusSource {
    /// Gathers the page now (asks every pool for a snapshot).
    pub async fn report(&self) -> StatusReport {
        let jobs: Vec<JobStatus> = self
            .metrics
            .jobs
            .running()
            .into_iter()
            .map(|j| JobStatus {
                id: j.id,
                runner: j.runner.runner,
                runner_name: j.runner.runner_name,
                duration_seconds: j.duration.as_secs(),
            })
            .collect();
        let config = (self.config)();
        let runners = config
            .runners
            .iter()
            .map(|r| {
                let short = r.short_token();
                RunnerStatus {
                    running_jobs: jobs.iter().filter(|j| j.runner == short).count(),
                    name: r.name.clone(),
                    runner: short,
                    url: public_url(&r.url),
                    executor: r.executor.as_str().to_string(),
                    limit: r.limit,
                }
            })
            .collect();
        let mut vms = Vec::new();
        let fleets = self
            .fleets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (runner, fleet) in &fleets {
            let snapshot = fleet.snapshot().await;
            vms.extend(snapshot.vms.iter().map(|v| VmStatus {
                runner: runner.clone(),
                name: v.name.clone(),
                zone: v.zone.clone(),
                state: v.state_name().to_string(),
                age_seconds: v.age.as_secs(),
                jobs_run: v.used_count,
            }));
        }
        StatusReport {
            version: crate::VERSION.to_string(),
            revision: crate::coordinator::REVISION.to_string(),
            system_id: self.system_id.clone(),
            process_state: self.metrics.process.state().as_str().to_string(),
            concurrent: config.concurrent,
            runners,
            vms,
            jobs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            public_url("https://user:secret@gitlab.example.com/"),
            "https://gitlab.example.com/"
        );
        assert_eq!(public_url("not a url"), "(unparsable URL)");
    }
}
