//! Scaling end to end: warming to IdleCount, MaxBuilds (fresh VM per job, or reuse), IdleTime
//! expiry, and `limit` / MaxGrowthRate over every state during a burst.

use super::*;

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
