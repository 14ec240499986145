//! GitLab Runner 19.x configuration files of both generations, loaded from `tests/fixtures/` and
//! run as they are against the fakes: a GitLab.com-style docker+machine file with
//! `MachineDriver = "google"`, and a docker-autoscaler file with the googlecloud fleeting plugin.
//! Only what points at the test environment is replaced (GitLab's URL and token, the job image
//! and its pull policy, the Compute endpoint, the state directory and manager id); the fake
//! Compute Engine knows the fixture's own project and zone.

use super::*;
use toml_edit::{value, Array, DocumentMut};

const MACHINE_FIXTURE: &str =
    include_str!("../../fixtures/config_gitlab_runner_docker_machine_google.toml");
const AUTOSCALER_FIXTURE: &str =
    include_str!("../../fixtures/config_gitlab_runner_docker_autoscaler_googlecloud.toml");

/// The fakes of one fixture: fake GitLab, a fake Compute Engine with the fixture's project and
/// zone, and this test's manager id.
struct Fixture {
    gitlab: FakeGitlab,
    token: String,
    gce: Arc<FakeGce>,
    manager_id: String,
    sampler: Sampler,
}

impl Fixture {
    async fn start(project: &str, zone: &str) -> Fixture {
        ensure_test_image();
        let (gitlab, token) = fake_gitlab(FakeGitlabOptions::default()).await;
        let opts = FakeGceOptions {
            project: project.to_string(),
            zones: vec![ZoneSpec::new(zone, BOOT)],
            wait_cap: Duration::from_secs(3),
            ..FakeGceOptions::default()
        };
        let gce = Arc::new(FakeGce::start(opts).await.expect("start the fake gce"));
        let sampler = Sampler::start(gce.clone());
        Fixture {
            gitlab,
            token,
            gce,
            manager_id: format!("it-cfg-{:08x}", rand::random::<u32>()),
            sampler,
        }
    }

    /// Loads `fixture` with the environment's values put in (`more` edits the runner table
    /// further) and starts the manager on it.
    fn manager(&self, fixture: &str, more: impl FnOnce(&mut toml_edit::Table)) -> InProcessManager {
        let state_dir = tempfile::tempdir().expect("tempdir");
        let text = self.text(fixture, state_dir.path(), more);
        InProcessManager::start_with(config(&text), state_dir, Default::default())
    }

    /// `fixture` with the environment's values put in; `more` edits the runner table further.
    fn text(
        &self,
        fixture: &str,
        state_dir: &std::path::Path,
        more: impl FnOnce(&mut toml_edit::Table),
    ) -> String {
        let mut doc: DocumentMut = fixture.parse().expect("the fixture is TOML");
        doc["state_dir"] = value(state_dir.display().to_string());
        doc["manager_id"] = value(self.manager_id.as_str());
        doc["check_interval"] = value(1);
        let runner = doc["runners"]
            .as_array_of_tables_mut()
            .and_then(|r| r.get_mut(0))
            .expect("one [[runners]] entry");
        runner["url"] = value(self.gitlab.url());
        runner["token"] = value(self.token.as_str());
        let docker = runner["docker"].as_table_mut().expect("[runners.docker]");
        docker["image"] = value(TEST_IMAGE);
        docker["pull_policy"] = value(Array::from_iter(["if-not-present"]));
        docker["network_mode"] = value("host");
        more(runner);
        doc.to_string()
    }

    /// Runs one job on the manager and returns its record, once finished.
    async fn run_job(&self, script: &[&str]) -> testkit::gitlab::JobRecord {
        let id = self.gitlab.enqueue(&self.token, job(script, &[]));
        self.gitlab
            .wait_job(id, DEADLINE, |j| j.state.is_finished())
            .await
            .expect("the job finishes")
    }

    fn ours(&self) -> Vec<InstanceView> {
        self.gce
            .instances()
            .into_iter()
            .filter(|v| v.labels.get(MANAGER_LABEL) == Some(&self.manager_id))
            .collect()
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

    /// Drains the manager, checks every VM it made is gone, stops the fake and returns every
    /// sample of this manager's instances.
    async fn finish(self, manager: InProcessManager) -> Vec<InstanceView> {
        manager.drain().await;
        let left = self.ours();
        assert!(left.is_empty(), "VMs left after the drain: {left:#?}");
        let samples = self.sampler.finish().await;
        if let Ok(gce) = Arc::try_unwrap(self.gce) {
            gce.shutdown().await;
        }
        samples
            .into_iter()
            .flatten()
            .filter(|v| v.labels.get(MANAGER_LABEL) == Some(&self.manager_id))
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gitlab_com_style_docker_machine_file_runs_a_job() {
    let env = Fixture::start("gitlab-ci-fake-155816", "us-east1-d").await;
    let endpoint = env.gce.endpoint();
    let manager = env.manager(MACHINE_FIXTURE, |runner| {
        // Its IdleCount of 50 (70 on weekends) is capped by `limit`, as in GitLab Runner.
        runner["limit"] = value(2);
        // Its second autoscaling period (03:30–04:30 in New York, IdleScaleFactor 1.5) keeps
        // max(IdleCountMin, 1.5 × in use) = 1 VM while no job runs: dropped, so the warm pool
        // below is `limit` whatever the time of day the test runs at.
        if let Some(periods) = runner["machine"]["autoscaling"].as_array_of_tables_mut() {
            periods.remove(1);
        }
        // This host's Docker cannot run privileged containers; the job does not need it.
        runner["docker"]["privileged"] = value(false);
        // The fixture's bind mount of a made-up host path would create it on this machine.
        runner["docker"]["volumes"] = value(Array::from_iter(["/certs/client"]));
        let mut gce = toml_edit::Table::new();
        gce["endpoint"] = value(endpoint);
        gce["create_timeout"] = value(30);
        runner["gce"] = toml_edit::Item::Table(gce);
    });
    let record = env.run_job(&["echo docker-machine-file"]).await;
    assert_success(&record);
    assert!(record.trace_text().contains("docker-machine-file"));
    let (vm, zone) = vm_of(&record);
    assert_eq!(zone, "us-east1-d");
    assert!(vm.starts_with("runner-") && vm.ends_with("-srm"), "{vm}");
    // MaxBuilds = 1: the VM is deleted after its one job.
    env.wait_gone(&vm).await;
    // The pool is back at `limit`, every insert answered: a drain now races no creation (a
    // creation cancelled while its insert is in flight can leave its VM behind: reported).
    wait_for_manager_vms(
        &env.gce,
        &env.manager_id,
        "two running VMs",
        DEADLINE,
        |vms| vms.len() == 2 && vms.iter().all(|v| v.status == "RUNNING"),
    )
    .await;
    let seen = env.finish(manager).await;
    let job_vm = seen.iter().find(|v| v.name == vm).expect("the job's VM");
    assert_eq!(job_vm.zone, "us-east1-d");
    for (key, want) in [("env", "prod"), ("gl_resource_type", "ci_ephemeral")] {
        assert_eq!(
            job_vm.labels.get(key).map(String::as_str),
            Some(want),
            "{job_vm:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_autoscaler_googlecloud_file_runs_a_job() {
    let env = Fixture::start("gitlab-ci-fake-420211", "europe-west1-c").await;
    let endpoint = env.gce.endpoint();
    let manager = env.manager(AUTOSCALER_FIXTURE, |runner| {
        runner["autoscaler"]["plugin_config"]["endpoint"] = value(endpoint);
    });
    let record = env.run_job(&["echo docker-autoscaler-file"]).await;
    assert_success(&record);
    assert!(record.trace_text().contains("docker-autoscaler-file"));
    let (vm, zone) = vm_of(&record);
    assert_eq!(zone, "europe-west1-c");
    assert!(vm.starts_with("ci-runners-group-"), "{vm}");
    // max_use_count = 1: the VM is deleted after its one job.
    env.wait_gone(&vm).await;
    // The policies' idle count now: 0 on weekends in Europe/Berlin, else 1. Waiting for it
    // (every insert answered) keeps the drain from racing a creation.
    let berlin = chrono::Utc::now().with_timezone(&chrono_tz::Europe::Berlin);
    let weekend = matches!(
        chrono::Datelike::weekday(&berlin),
        chrono::Weekday::Sat | chrono::Weekday::Sun
    );
    let idle = if weekend { 0 } else { 1 };
    wait_for_manager_vms(
        &env.gce,
        &env.manager_id,
        "the policy's idle VMs",
        DEADLINE,
        |vms| vms.len() == idle && vms.iter().all(|v| v.status == "RUNNING"),
    )
    .await;
    let seen = env.finish(manager).await;
    let job_vm = seen.iter().find(|v| v.name == vm).expect("the job's VM");
    assert_eq!(
        job_vm
            .labels
            .get(flotilla::config::INSTANCE_GROUP_LABEL)
            .map(String::as_str),
        Some("ci-runners-group"),
        "{job_vm:#?}"
    );
    assert!(
        seen.iter().any(|v| v.name == vm && v.nat_ip.is_some()),
        "use_external_addr = true asks for an external IP: {job_vm:#?}"
    );
    let most = seen
        .iter()
        .map(|v| v.name.as_str())
        .collect::<BTreeSet<_>>()
        .len();
    assert!(most <= 10, "max_instances = 10: {most} VMs made");
}
