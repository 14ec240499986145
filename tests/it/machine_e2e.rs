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
        let id = self.manager_id.clone();
        let held = self
            .gce
            .wait_until(within, |vms| {
                let ours: Vec<&InstanceView> = vms
                    .iter()
                    .filter(|v| v.labels.get(MANAGER_LABEL) == Some(&id))
                    .collect();
                pred(&ours)
            })
            .await;
        assert!(
            held,
            "timed out waiting for: {what}; instances: {:#?}",
            self.gce.instances()
        );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_warms_to_idle_count_and_no_further() {
    let env = Env::start().await;
    let manager = env.manager("", "IdleCount = 2\nIdleTime = 600", "");
    env.wait_ours("2 RUNNING VMs", DEADLINE, |vms| {
        vms.iter().filter(|v| v.status == "RUNNING").count() == 2
    })
    .await;
    let grew = env
        .gce
        .wait_until(Duration::from_secs(4), |vms| {
            vms.iter().filter(|v| env.is_ours(v)).count() != 2
        })
        .await;
    assert!(!grew, "the pool changed size while idle: {:#?}", env.ours());
    // Both VMs are ready by now; a warm pool waits without polling the cloud.
    let calls_before = env.gce.calls().len();
    let changed = env
        .gce
        .wait_until(Duration::from_secs(2), |vms| {
            vms.iter().filter(|v| env.is_ours(v)).count() != 2
        })
        .await;
    assert!(!changed);
    let idle_calls = &env.gce.calls()[calls_before..];
    assert!(
        idle_calls.is_empty(),
        "a warm pool does not poll the cloud: {idle_calls:#?}"
    );
    let samples = env.finish(manager).await;
    let most = samples.iter().map(Vec::len).max().unwrap_or(0);
    assert_eq!(most, 2, "at most IdleCount VMs at any time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_builds_1_runs_each_job_on_a_fresh_vm_deleted_after_it() {
    let env = Env::start().await;
    let manager = env.manager("", "IdleCount = 1\nIdleTime = 600\nMaxBuilds = 1", "");
    let mut seen = BTreeSet::new();
    for i in 0..3 {
        let record = env.run_job(&[&format!("echo job-{i}")]).await;
        assert_success(&record);
        let (vm, _) = vm_of(&record);
        assert!(seen.insert(vm.clone()), "VM {vm} ran a second job");
        env.wait_gone(&vm).await;
        assert!(containers_of_job(&env.token, record.id).is_empty());
    }
    assert_eq!(seen.len(), 3);
    env.finish(manager).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_builds_3_reuses_the_vm_then_deletes_it() {
    let env = Env::start().await;
    let manager = env.manager("", "IdleCount = 0\nIdleTime = 600\nMaxBuilds = 3", "");
    let mut vms = Vec::new();
    for i in 0..3 {
        let record = env.run_job(&[&format!("echo job-{i}")]).await;
        assert_success(&record);
        vms.push(vm_of(&record).0);
    }
    assert!(vms.iter().all(|v| *v == vms[0]), "jobs ran on {vms:?}");
    env.wait_gone(&vms[0]).await;
    let inserts: usize = inserts_by_zone(&env.gce).values().sum();
    assert_eq!(inserts, 1, "one VM made for three jobs");
    env.finish(manager).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_vm_is_deleted_after_idle_time() {
    let env = Env::start().await;
    let idle_time = Duration::from_secs(3);
    let manager = env.manager("", "IdleCount = 0\nIdleTime = 3", "");
    let record = env.run_job(&["echo on-demand"]).await;
    let finished = Instant::now();
    assert_success(&record);
    let (vm, _) = vm_of(&record);
    let alive = env
        .ours()
        .iter()
        .any(|v| v.name == vm && v.status == "RUNNING");
    assert!(alive, "the VM idles after its job: {:#?}", env.ours());
    env.wait_gone(&vm).await;
    let idled = finished.elapsed();
    assert!(
        idled + Duration::from_millis(500) >= idle_time,
        "deleted after {idled:?}, before IdleTime"
    );
    assert!(
        idled < idle_time + Duration::from_secs(15),
        "deleted only after {idled:?}"
    );
    env.finish(manager).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_never_exceeds_limit_or_max_growth_rate() {
    let env = Env::start().await;
    let manager = env.manager(
        "limit = 3",
        "IdleCount = 0\nIdleTime = 600\nMaxBuilds = 1\nMaxGrowthRate = 2",
        "",
    );
    let ids: Vec<i64> = (0..6)
        .map(|i| {
            env.gitlab.enqueue(
                &env.token,
                job(&[&format!("echo burst-{i}"), "sleep 1"], &[]),
            )
        })
        .collect();
    for id in ids {
        let record = env
            .gitlab
            .wait_job(id, DEADLINE, |j| j.state.is_finished())
            .await
            .expect("the job finishes");
        assert_success(&record);
    }
    let samples = env.finish(manager).await;
    let most = samples.iter().map(Vec::len).max().unwrap_or(0);
    let most_creating = samples
        .iter()
        .map(|s| count_in(s, &["PROVISIONING", "STAGING"]))
        .max()
        .unwrap_or(0);
    assert!(most <= 3, "more than limit = 3 VMs at once: {most}");
    assert!(
        most_creating <= 2,
        "more than MaxGrowthRate = 2 creating: {most_creating}"
    );
    assert_eq!(most, 3, "the burst reaches the limit");
    assert_eq!(most_creating, 2, "the burst reaches MaxGrowthRate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stockout_zone_falls_back_to_the_next_zone() {
    let env = Env::start().await;
    env.gce.inject(GceFault::Stockout {
        zone: ZONE_A.into(),
        with_details: false,
    });
    let manager = env.manager("", "IdleCount = 0\nIdleTime = 600\nMaxBuilds = 1", "");
    let ids: Vec<i64> = (0..2)
        .map(|i| {
            env.gitlab
                .enqueue(&env.token, job(&[&format!("echo stockout-{i}")], &[]))
        })
        .collect();
    for id in ids {
        let record = env
            .gitlab
            .wait_job(id, DEADLINE, |j| j.state.is_finished())
            .await
            .expect("the job finishes");
        assert_success(&record);
        assert_eq!(vm_of(&record).1, ZONE_B, "the job ran in the fallback zone");
    }
    assert!(!manager.task.is_finished(), "the manager is still running");
    let inserts = inserts_by_zone(&env.gce);
    let in_a = inserts.get(ZONE_A).copied().unwrap_or(0);
    let in_b = inserts.get(ZONE_B).copied().unwrap_or(0);
    assert!(
        (1..=2).contains(&in_a),
        "inserts in the stocked-out zone: {inserts:?}"
    );
    assert_eq!(
        in_b, 2,
        "one insert per job in the fallback zone: {inserts:?}"
    );
    env.finish(manager).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_is_waited_out_and_the_work_completes() {
    let env = Env::start().await;
    // A create_timeout shorter than the wait: waiting out the rate limit must not time the VM out.
    let manager = env.manager("", "IdleCount = 0\nIdleTime = 600", "create_timeout = 2");
    // The pool lists its leftovers first; the fault must hit the job's VM creation.
    eventually("the startup listing", DEADLINE, || {
        env.gce
            .calls()
            .iter()
            .any(|c| c.api.contains("aggregatedList") && c.status == 200)
    })
    .await;
    let injected = SystemTime::now();
    env.gce.inject(GceFault::RateLimitNext {
        calls: 1,
        resource_exhausted: false,
    });
    let record = env.run_job(&["echo after-the-rate-limit"]).await;
    assert_success(&record);
    let calls = env.gce.calls();
    let limited: Vec<_> = calls.iter().filter(|c| c.status == 403).collect();
    assert_eq!(limited.len(), 1, "{calls:#?}");
    let inserts: Vec<_> = calls
        .iter()
        .filter(|c| c.api == "instances.insert")
        .collect();
    assert_eq!(
        inserts.len(),
        2,
        "the refused insert retried once: {calls:#?}"
    );
    // Compute's rate quotas refill at the minute boundary: the retry waited for it.
    let minute = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() / 60;
    let finished = minute(SystemTime::now());
    assert!(
        finished > minute(injected),
        "the job completed within the rate-limited minute"
    );
    // The VM is the one planned before the refusal (names carry the unix time they were made
    // at), not a replacement made after a creation timed out while waiting.
    let (vm, _) = vm_of(&record);
    let named_at: u64 = vm
        .rsplit('-')
        .nth(1)
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no unix time in {vm}"));
    assert!(
        named_at / 60 < finished,
        "{vm} was made after the rate-limit pause"
    );
    env.finish(manager).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preempted_spot_vm_fails_its_job_and_is_gone() {
    let env = Env::start().await;
    let manager = env.manager("", "IdleCount = 0\nIdleTime = 600", "spot = true");
    let id = env
        .gitlab
        .enqueue(&env.token, job(&["echo preempt-me", "sleep 120"], &[]));
    let running = env
        .gitlab
        .wait_job(id, DEADLINE, |j| j.trace_text().contains("preempt-me"))
        .await
        .expect("the job starts");
    let (vm, zone) = vm_of(&running);
    assert!(env
        .ours()
        .iter()
        .any(|v| v.name == vm && v.scheduling.provisioning_model == "SPOT"));
    env.gce
        .try_inject(GceFault::Preempt {
            zone,
            name: vm.clone(),
        })
        .expect("preempt the VM");
    let record = env
        .gitlab
        .wait_job(id, DEADLINE, |j| j.state.is_finished())
        .await
        .expect("the job finishes");
    let trace = record.trace_text();
    assert_eq!(record.state, JobState::Failed, "trace:\n{trace}");
    let listed = record.payload["features"]["failure_reasons"]
        .as_array()
        .is_some_and(|r| r.iter().any(|v| v == "runner_interrupted"));
    let expected = if listed {
        "runner_interrupted"
    } else {
        "runner_system_failure"
    };
    assert_eq!(
        record.failure_reason.as_deref(),
        Some(expected),
        "trace:\n{trace}"
    );
    assert!(
        trace.contains("Preempted"),
        "the VM's fate in the trace:\n{trace}"
    );
    env.wait_gone(&vm).await;
    eventually("the job's containers removed", DEADLINE, || {
        containers_of_job(&env.token, id).is_empty()
    })
    .await;
    env.finish(manager).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftovers_of_this_manager_are_deleted_at_start_and_others_kept() {
    let env = Env::start().await;
    let label = runner_label(&env.token);
    let labels = |manager: &str, runner: &str| {
        BTreeMap::from([
            (MANAGER_LABEL.to_string(), manager.to_string()),
            (RUNNER_LABEL.to_string(), runner.to_string()),
        ])
    };
    let leftover = format!("it-leftover-{:08x}", rand::random::<u32>());
    let stray = format!("it-stray-{:08x}", rand::random::<u32>());
    let foreign = format!("it-foreign-{:08x}", rand::random::<u32>());
    env.gce
        .create_foreign_instance(ZONE_A, &leftover, labels(&env.manager_id, &label))
        .expect("leftover");
    env.gce
        .create_foreign_instance(ZONE_B, &stray, labels(&env.manager_id, "r000000000000"))
        .expect("stray of a removed runner");
    env.gce
        .create_foreign_instance(ZONE_A, &foreign, labels("another-manager", &label))
        .expect("another manager's VM");
    let manager = env.manager("", "IdleCount = 1\nIdleTime = 600", "");
    env.wait_gone(&leftover).await;
    env.wait_gone(&stray).await;
    env.wait_ours("the pool warmed after the clean-up", DEADLINE, |vms| {
        vms.iter().any(|v| v.status == "RUNNING")
    })
    .await;
    let deletes: Vec<_> = env
        .gce
        .calls()
        .into_iter()
        .filter(|c| c.api == "instances.delete")
        .collect();
    assert!(
        deletes.iter().all(|c| !c.path.ends_with(&foreign)),
        "{deletes:#?}"
    );
    env.drain(manager).await;
    assert!(
        env.gce.instances().iter().any(|v| v.name == foreign),
        "another manager's VM survives this manager's start and drain"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gitlab_runner_google_machine_config_runs_unchanged() {
    let env = Env::start().await;
    let state_dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        r#"
concurrent = 4
check_interval = 1
log_level = "info"
state_dir = "{state}"
manager_id = "{manager}"

[[runners]]
  name = "shared-runners-manager-1.gitlab.example.com"
  url = "{url}"
  token = "{token}"
  executor = "docker+machine"
  limit = 20
  output_limit = 16384
  environment = ["DOCKER_DRIVER=overlay2", "DOCKER_TLS_CERTDIR="]
  [runners.docker]
    image = "{TEST_IMAGE}"
    pull_policy = ["if-not-present"]
    network_mode = "host"
    tls_verify = false
    shm_size = 0
  [runners.machine]
    IdleCount = 1
    IdleTime = 3600
    MaxBuilds = 1
    MachineName = "runner-%s-srm"
    MachineDriver = "google"
    MachineOptions = [
      "google-project={project}",
      "google-zone={ZONE_B}",
      "google-machine-type=n1-standard-1",
      "google-disk-size=25",
      "google-disk-type=pd-ssd",
      "google-tags=gitlab-com,srm",
      "google-machine-image=cos-cloud/global/images/family/cos-stable",
      "google-label=gl_resource_type:ci_ephemeral",
      "google-username=core",
      "google-open-port=2376/tcp",
      "engine-registry-mirror=https://mirror.gcr.io",
    ]
  [runners.gce]
    endpoint = "{endpoint}"
    create_timeout = 30
"#,
        state = state_dir.path().display(),
        manager = env.manager_id,
        url = env.gitlab.url(),
        token = env.token,
        project = env.gce.project(),
        endpoint = env.gce.endpoint(),
    );
    let manager = InProcessManager::start_with(config(&text), state_dir, Default::default());
    let record = env.run_job(&["echo carried-over"]).await;
    assert_success(&record);
    let (vm, zone) = vm_of(&record);
    assert_eq!(zone, ZONE_B);
    assert!(vm.starts_with("runner-") && vm.ends_with("-srm"), "{vm}");
    env.wait_gone(&vm).await;
    env.wait_ours("a fresh idle VM", DEADLINE, |vms| {
        vms.iter().any(|v| v.status == "RUNNING")
    })
    .await;
    let idle = env.ours();
    let fresh = idle
        .iter()
        .find(|v| v.status == "RUNNING")
        .expect("a running VM");
    assert!(
        fresh.nat_ip.is_some(),
        "an external IP (no google-use-internal-ip): {fresh:#?}"
    );
    assert_eq!(
        fresh.labels.get("gl_resource_type").map(String::as_str),
        Some("ci_ephemeral")
    );
    env.finish(manager).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_reports_the_job_deletes_the_vms_and_exits_in_time() {
    let env = Env::start().await;
    let manager = env.manager("", "IdleCount = 1\nIdleTime = 600", "");
    let id = env
        .gitlab
        .enqueue(&env.token, job(&["echo long-running", "sleep 300"], &[]));
    let running = env
        .gitlab
        .wait_job(id, DEADLINE, |j| j.trace_text().contains("long-running"))
        .await
        .expect("the job starts");
    let (vm, _) = vm_of(&running);
    env.wait_ours("a spare idle VM beside the job's", DEADLINE, |vms| {
        vms.iter().filter(|v| v.status == "RUNNING").count() == 2
    })
    .await;
    let started = Instant::now();
    manager.controls.send(Control::Abort).await.unwrap();
    let exited = tokio::time::timeout(Duration::from_secs(25), manager.task).await;
    assert!(
        exited.is_ok(),
        "the manager did not exit within shutdown_timeout"
    );
    assert!(started.elapsed() < Duration::from_secs(25));
    let record = env.gitlab.job(id).expect("the job");
    assert_eq!(
        record.state,
        JobState::Failed,
        "trace:\n{}",
        record.trace_text()
    );
    assert_eq!(
        record.failure_reason.as_deref(),
        Some("runner_system_failure")
    );
    let left = env.ours();
    assert!(
        left.is_empty(),
        "VMs left after the abort ({vm} ran the job): {left:#?}"
    );
    assert!(containers_of_job(&env.token, id).is_empty());
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_deletes_idle_vms_and_exits() {
    let env = Env::start().await;
    let manager = env.manager("", "IdleCount = 2\nIdleTime = 600", "");
    env.wait_ours("2 idle VMs", DEADLINE, |vms| {
        vms.iter().filter(|v| v.status == "RUNNING").count() == 2
    })
    .await;
    let samples = env.finish(manager).await;
    assert!(samples.iter().any(|s| s.len() == 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_while_the_jobs_vm_is_being_made_fails_the_job_and_deletes_it() {
    let env = Env::start().await;
    for zone in [ZONE_A, ZONE_B] {
        env.gce.inject(GceFault::NeverRunning { zone: zone.into() });
    }
    let manager = env.manager("", "IdleCount = 0\nIdleTime = 600", "");
    let id = env
        .gitlab
        .enqueue(&env.token, job(&["echo never-runs"], &[]));
    env.wait_ours("the job's VM stuck in STAGING", DEADLINE, |vms| {
        vms.iter().any(|v| v.status == "STAGING")
    })
    .await;
    let started = Instant::now();
    manager.controls.send(Control::Abort).await.unwrap();
    let exited = tokio::time::timeout(Duration::from_secs(25), manager.task).await;
    assert!(
        exited.is_ok(),
        "the manager did not exit within shutdown_timeout"
    );
    assert!(started.elapsed() < Duration::from_secs(25));
    let record = env.gitlab.job(id).expect("the job");
    assert_eq!(
        record.state,
        JobState::Failed,
        "trace:\n{}",
        record.trace_text()
    );
    assert_eq!(
        record.failure_reason.as_deref(),
        Some("runner_system_failure")
    );
    let left = env.ours();
    assert!(left.is_empty(), "VMs left after the abort: {left:#?}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_lets_the_running_job_finish_then_deletes_every_vm() {
    let env = Env::start().await;
    let manager = env.manager("", "IdleCount = 1\nIdleTime = 600", "");
    let id = env.gitlab.enqueue(
        &env.token,
        job(&["echo draining", "sleep 3", "echo done"], &[]),
    );
    env.gitlab
        .wait_job(id, DEADLINE, |j| j.trace_text().contains("draining"))
        .await
        .expect("the job starts");
    env.drain(manager).await;
    let record = env.gitlab.job(id).expect("the job");
    assert_success(&record);
    assert!(record.trace_text().contains("done"));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vms_never_ready_time_out_are_deleted_and_the_zone_is_left() {
    let env = Env::start().await;
    env.gce.inject(GceFault::NeverRunning {
        zone: ZONE_A.into(),
    });
    let manager = env.manager("", "IdleCount = 0\nIdleTime = 600", "create_timeout = 2");
    let record = env.run_job(&["echo made-it"]).await;
    assert_success(&record);
    assert_eq!(
        vm_of(&record).1,
        ZONE_B,
        "the job ran in the zone that works"
    );
    let inserts = inserts_by_zone(&env.gce);
    let in_a = inserts.get(ZONE_A).copied().unwrap_or(0);
    assert!(
        (1..=2).contains(&in_a),
        "zone A cools after its create timeouts: {inserts:?}"
    );
    env.wait_ours("the timed-out VMs deleted", DEADLINE, |vms| {
        vms.iter().all(|v| v.zone == ZONE_B)
    })
    .await;
    env.finish(manager).await;
}
