//! The docker+machine executor end to end: the in-process manager takes jobs from the fake
//! GitLab and runs them on VMs of the fake Compute Engine (each VM a loopback address whose
//! mutual-TLS proxy leads to the local Docker engine). These are the "must show" behaviours of the
//! GCE fleet: warming to IdleCount, MaxBuilds, IdleTime, `limit` and MaxGrowthRate over every
//! state, zone stockouts, rate limits, spot preemption, leftovers of an earlier process, a
//! carried-over GitLab Runner `MachineDriver = "google"` file, and both shutdowns.
//!
//! Conditions are waited on with deadlines (`FakeGce::wait_until`, `FakeGitlab::wait_job`); where
//! a bound must hold throughout, a sampler records the fake's instances on every change (and at
//! least every 50 ms) and the bound is checked over every sample.

mod faults;
mod gitlab_configs;
mod lifecycle;
mod scaling;

use crate::harness::*;
use flotilla::fleet::{names::runner_label, MANAGER_LABEL, RUNNER_LABEL};
use flotilla::lifecycle::Control;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use testkit::gce::InstanceView;
use testkit::{
    FakeGce, FakeGceOptions, FakeGitlab, FakeGitlabOptions, GceFault, JobState, ZoneSpec,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The fake's first zone (the configured order makes it the preferred one).
const ZONE_A: &str = "us-central1-a";
/// The fallback zone.
const ZONE_B: &str = "us-central1-b";
/// Insert → RUNNING in the fake.
const BOOT: Duration = Duration::from_millis(500);

/// The instances of the fake, recorded on every change and at least every 50 ms.
struct Sampler {
    samples: Arc<Mutex<Vec<Vec<InstanceView>>>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(gce: Arc<FakeGce>) -> Sampler {
        let samples: Arc<Mutex<Vec<Vec<InstanceView>>>> = Arc::default();
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (samples, stop) = (samples.clone(), stop.clone());
            async move {
                while !stop.is_cancelled() {
                    let record = |vms: &[InstanceView]| {
                        samples.lock().unwrap().push(vms.to_vec());
                        false
                    };
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = gce.wait_until(Duration::from_millis(50), record) => {}
                    }
                }
            }
        });
        Sampler {
            samples,
            stop,
            task,
        }
    }

    /// Stops sampling and returns every sample.
    async fn finish(self) -> Vec<Vec<InstanceView>> {
        self.stop.cancel();
        let _ = self.task.await;
        std::mem::take(&mut *self.samples.lock().unwrap())
    }
}

/// The fakes of one test, the manager id its config sets, and the sampler.
struct Env {
    gitlab: FakeGitlab,
    token: String,
    gce: Arc<FakeGce>,
    manager_id: String,
    sampler: Sampler,
}

impl Env {
    /// Starts both fakes (zones A and B booting in [`BOOT`]) and the sampler.
    async fn start() -> Env {
        ensure_test_image();
        let (gitlab, token) = fake_gitlab(FakeGitlabOptions::default()).await;
        let opts = FakeGceOptions {
            zones: vec![ZoneSpec::new(ZONE_A, BOOT), ZoneSpec::new(ZONE_B, BOOT)],
            wait_cap: Duration::from_secs(3),
            ..FakeGceOptions::default()
        };
        let gce = Arc::new(FakeGce::start(opts).await.expect("start the fake gce"));
        let sampler = Sampler::start(gce.clone());
        Env {
            gitlab,
            token,
            gce,
            manager_id: format!("it-mgr-{:08x}", rand::random::<u32>()),
            sampler,
        }
    }

    /// A config with one docker+machine runner: `runner` keys (e.g. `limit = 3`), the
    /// `[runners.machine]` keys and extra `[runners.gce]` keys (`create_timeout` is 30 s unless
    /// they set it).
    fn config_text(
        &self,
        state_dir: &std::path::Path,
        runner: &str,
        machine: &str,
        gce: &str,
    ) -> String {
        format!(
            r#"
concurrent = 6
check_interval = 1
shutdown_timeout = 20
log_level = "debug"
state_dir = "{state}"
manager_id = "{manager}"
reconcile_interval = 3600

[[runners]]
name = "it-machine"
url = "{url}"
token = "{token}"
executor = "docker+machine"
{runner}
[runners.machine]
MachineName = "it-%s"
{machine}
[runners.gce]
project = "{project}"
zones = ["{ZONE_A}", "{ZONE_B}"]
endpoint = "{endpoint}"
zone_cooldown = 120
{gce}
[runners.docker]
image = "{TEST_IMAGE}"
pull_policy = ["if-not-present"]
network_mode = "host"
"#,
            state = state_dir.display(),
            manager = self.manager_id,
            url = self.gitlab.url(),
            token = self.token,
            project = self.gce.project(),
            endpoint = self.gce.endpoint(),
            gce = if gce.contains("create_timeout") {
                gce.to_string()
            } else {
                format!("create_timeout = 30\n{gce}")
            },
        )
    }

    /// Starts the manager with [`Env::config_text`].
    fn manager(&self, runner: &str, machine: &str, gce: &str) -> InProcessManager {
        let state_dir = tempfile::tempdir().expect("tempdir");
        let text = self.config_text(state_dir.path(), runner, machine, gce);
        InProcessManager::start_with(config(&text), state_dir, Default::default())
    }

    /// Whether `vm` carries this test's manager label.
    fn is_ours(&self, vm: &InstanceView) -> bool {
        vm.labels.get(MANAGER_LABEL) == Some(&self.manager_id)
    }

    /// This manager's instances now.
    fn ours(&self) -> Vec<InstanceView> {
        self.gce
            .instances()
            .into_iter()
            .filter(|v| self.is_ours(v))
            .collect()
    }

    /// Waits until `pred` holds for this manager's instances.
    async fn wait_ours(
        &self,
        what: &str,
        within: Duration,
        pred: impl Fn(&[&InstanceView]) -> bool,
    ) {
        wait_for_manager_vms(&self.gce, &self.manager_id, what, within, pred).await;
    }

    /// Waits until VM `name` is gone from the fake.
    async fn wait_gone(&self, name: &str) {
        let held = self
            .gce
            .wait_until(DEADLINE, |vms| vms.iter().all(|v| v.name != name))
            .await;
        assert!(
            held,
            "VM {name} was never deleted: {:#?}",
            self.gce.instances()
        );
    }

    /// Runs job `script`, waits for it to finish, and returns its record.
    async fn run_job(&self, script: &[&str]) -> testkit::gitlab::JobRecord {
        let id = self.gitlab.enqueue(&self.token, job(script, &[]));
        self.gitlab
            .wait_job(id, DEADLINE, |j| j.state.is_finished())
            .await
            .expect("the job finishes")
    }

    /// Drains the manager, checks it deleted every VM it made, and returns every sample of this
    /// manager's instances taken during the test.
    async fn finish(self, manager: InProcessManager) -> Vec<Vec<InstanceView>> {
        self.drain(manager).await;
        self.stop().await
    }

    /// Drains the manager and checks it deleted every VM it made.
    async fn drain(&self, manager: InProcessManager) {
        manager.drain().await;
        let left = self.ours();
        assert!(left.is_empty(), "VMs left after the drain: {left:#?}");
    }

    /// Stops the sampler and the fake GCE (removing containers of VMs still alive); returns every
    /// sample of this manager's instances.
    async fn stop(self) -> Vec<Vec<InstanceView>> {
        let id = self.manager_id.clone();
        let samples = self.sampler.finish().await;
        if let Ok(gce) = Arc::try_unwrap(self.gce) {
            gce.shutdown().await;
        }
        samples
            .into_iter()
            .map(|s| {
                s.into_iter()
                    .filter(|v| v.labels.get(MANAGER_LABEL) == Some(&id))
                    .collect()
            })
            .collect()
    }
}

/// The VM a job ran on and its zone, from the trace's "Running on VM <name> in zone <zone>".
fn vm_of(record: &testkit::gitlab::JobRecord) -> (String, String) {
    let trace = record.trace_text();
    let rest = trace
        .split("Running on VM ")
        .nth(1)
        .unwrap_or_else(|| panic!("no VM line in the trace:\n{trace}"));
    let mut words = rest.split_whitespace();
    let name = words.next().unwrap_or_default().to_string();
    let zone = words.nth(2).unwrap_or_default().to_string();
    (name, zone)
}

/// Asserts the job succeeded, showing its trace if not.
fn assert_success(record: &testkit::gitlab::JobRecord) {
    assert_eq!(
        record.state,
        JobState::Success,
        "job {} failed ({:?}):\n{}",
        record.id,
        record.failure_reason,
        record.trace_text()
    );
}

/// How many instances of a sample are in one of `statuses`.
fn count_in(sample: &[InstanceView], statuses: &[&str]) -> usize {
    sample
        .iter()
        .filter(|v| statuses.contains(&v.status.as_str()))
        .count()
}

/// `instances.insert` calls answered per zone (any status).
/// Waits until `pred` holds for the instances labelled with `manager_id`; fails the test with
/// every instance listed if it does not within `within`.
pub(crate) async fn wait_for_manager_vms(
    gce: &FakeGce,
    manager_id: &str,
    what: &str,
    within: Duration,
    pred: impl Fn(&[&InstanceView]) -> bool,
) {
    let held = gce
        .wait_until(within, |vms| {
            let ours: Vec<&InstanceView> = vms
                .iter()
                .filter(|v| v.labels.get(MANAGER_LABEL).map(String::as_str) == Some(manager_id))
                .collect();
            pred(&ours)
        })
        .await;
    assert!(
        held,
        "timed out waiting for: {what}; instances: {:#?}",
        gce.instances()
    );
}

fn inserts_by_zone(gce: &FakeGce) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for c in gce.calls().iter().filter(|c| c.api == "instances.insert") {
        let zone = c
            .path
            .split("/zones/")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .unwrap_or_default()
            .to_string();
        *out.entry(zone).or_default() += 1;
    }
    out
}
