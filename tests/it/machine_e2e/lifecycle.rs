//! The manager's life end to end: leftovers of an earlier process at start, a carried-over GitLab
//! Runner `MachineDriver = "google"` file, and both shutdowns (abort and drain).

use super::*;

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
