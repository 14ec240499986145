//! Ownership and loss: leftovers deleted at start, reconcile by label, other managers and
//! other runners untouched, unreachable zones, vanished and terminated VMs, stuck deletions,
//! shutdown.

use super::env::{with, Env, MIN};
use super::fake_cloud::FakeCloud;
use crate::fleet::{RunnerRegistry, VmFate, VmState, MANAGER_LABEL, RUNNER_LABEL};
use std::time::Duration;
use tokio::time::{sleep, Instant};
use tokio_util::sync::CancellationToken;

#[tokio::test(start_paused = true)]
async fn leftovers_are_deleted_before_warming_and_other_managers_are_untouched() {
    let cloud = FakeCloud::new();
    let s = with(|s| s.machine.idle_count = 1);
    cloud.add(
        "leftover-1",
        "us-central1-a",
        &[(MANAGER_LABEL, "mgr1"), (RUNNER_LABEL, &s.runner_label)],
    );
    cloud.add(
        "leftover-2",
        "us-central1-b",
        &[(MANAGER_LABEL, "mgr1"), (RUNNER_LABEL, "rgone")],
    );
    cloud.add(
        "other-mgr",
        "us-central1-a",
        &[(MANAGER_LABEL, "mgr2"), (RUNNER_LABEL, &s.runner_label)],
    );
    cloud.add("unlabelled", "us-central1-a", &[]);
    // The first listing is rate-limited: nothing may be created until a listing succeeded.
    cloud.lock().rate_limited_calls = 1;
    let env = Env::start(s, cloud);
    env.until_cloud("leftovers deleted", 2 * MIN, |c| {
        !c.exists("leftover-1") && !c.exists("leftover-2")
    })
    .await;
    env.until("one idle", 2 * MIN, |s| s.counts.idle == 1).await;
    let log = env.cloud.lock().log.clone();
    let lists: Vec<usize> = log
        .iter()
        .enumerate()
        .filter(|(_, (m, _, _))| *m == "list")
        .map(|(i, _)| i)
        .collect();
    let first_insert = log
        .iter()
        .position(|(m, _, _)| *m == "insert")
        .expect("inserted");
    assert!(lists.len() >= 2 && lists[1] < first_insert, "{log:?}");
    // Later reconciles find a new stray VM of this manager and delete it; never the others.
    env.cloud.add(
        "stray",
        "us-central1-b",
        &[(MANAGER_LABEL, "mgr1"), (RUNNER_LABEL, &env.s.runner_label)],
    );
    env.until_cloud("stray deleted", 3 * MIN, |c| !c.exists("stray"))
        .await;
    sleep(10 * MIN).await;
    assert!(env.cloud.exists("other-mgr"));
    assert!(env.cloud.exists("unlabelled"));
    let deleted: Vec<String> = env
        .cloud
        .lock()
        .log
        .iter()
        .filter(|(m, _, _)| *m == "delete")
        .map(|(_, n, _)| n.clone())
        .collect();
    assert!(
        !deleted
            .iter()
            .any(|n| n == "other-mgr" || n == "unlabelled"),
        "{deleted:?}"
    );
    env.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_zone_deletes_nothing_and_loses_nothing() {
    let cloud = FakeCloud::new();
    let s = with(|s| s.machine.idle_count = 1);
    cloud.add(
        "leftover-b",
        "us-central1-b",
        &[(MANAGER_LABEL, "mgr1"), (RUNNER_LABEL, &s.runner_label)],
    );
    cloud.lock().unreachable.insert("us-central1-b".into());
    let env = Env::start(s, cloud);
    let snap = env.until("one idle", 2 * MIN, |s| s.counts.idle == 1).await;
    let held = snap.vms[0].name.clone();
    assert_eq!(snap.vms[0].zone, "us-central1-a");
    // Now zone a is unreachable too: the held VM there is unknown, not lost.
    env.cloud.lock().unreachable.insert("us-central1-a".into());
    sleep(5 * MIN).await;
    assert!(
        env.cloud.exists("leftover-b"),
        "deleted in an unreachable zone"
    );
    let snap = env.handle.snapshot().await;
    assert!(
        snap.vms
            .iter()
            .any(|v| v.name == held && v.state == VmState::Idle),
        "{snap:#?}"
    );
    // Reachable again: the leftover goes.
    env.cloud.lock().unreachable.clear();
    env.until_cloud("leftover deleted", 3 * MIN, |c| !c.exists("leftover-b"))
        .await;
    env.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_vanished_vm_is_lost_and_its_fate_is_gone() {
    let env = Env::start(with(|s| s.machine.idle_count = 1), FakeCloud::new());
    env.until("one idle", 2 * MIN, |s| s.counts.idle == 1).await;
    let lease = env.handle.try_lease().await.expect("idle");
    env.handle.mark_used(&lease);
    env.cloud.vanish(&lease.name);
    assert_eq!(
        env.handle
            .vm_fate(&lease.name, Duration::from_secs(30))
            .await,
        VmFate::Gone
    );
    // The reconcile notices too: the VM leaves the table and the fate is remembered.
    let name = lease.name.clone();
    env.until("lost VM dropped", 3 * MIN, |s| {
        !s.vms.iter().any(|v| v.name == name)
    })
    .await;
    assert_eq!(
        env.handle.vm_fate(&name, Duration::from_secs(30)).await,
        VmFate::Gone
    );
    env.handle.release(lease, true); // a no-op now
    env.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_terminated_vm_is_terminated_and_a_live_one_alive() {
    let env = Env::start(with(|s| s.machine.idle_count = 2), FakeCloud::new());
    env.until("two idle", 2 * MIN, |s| s.counts.idle == 2).await;
    let a = env.handle.try_lease().await.expect("idle");
    let b = env.handle.try_lease().await.expect("idle");
    env.cloud.terminate(&a.name);
    assert_eq!(
        env.handle.vm_fate(&a.name, Duration::from_secs(30)).await,
        VmFate::Terminated
    );
    let t0 = Instant::now();
    assert_eq!(
        env.handle.vm_fate(&b.name, Duration::from_secs(30)).await,
        VmFate::Alive
    );
    assert!(t0.elapsed() >= Duration::from_secs(30));
    // The reconcile deletes the terminated VM.
    let name = a.name.clone();
    env.until_cloud("terminated VM deleted", 3 * MIN, |c| !c.exists(&name))
        .await;
    env.handle.release(a, true);
    env.handle.release(b, true);
    env.stop().await;
}

#[tokio::test(start_paused = true)]
async fn failed_deletions_retry_and_show_stuck_on_removing() {
    let env = Env::start(
        with(|s| {
            s.machine.idle_count = 1;
            s.machine.max_builds = 1;
        }),
        FakeCloud::new(),
    );
    env.until("one idle", 2 * MIN, |s| s.counts.idle == 1).await;
    env.cloud.lock().failing_deletes = 100;
    let lease = env.handle.try_lease().await.expect("idle");
    let name = lease.name.clone();
    env.handle.release(lease, true);
    env.until("stuck on removing", 5 * MIN, |s| s.stuck_on_removing == 1)
        .await;
    let deletes = env.cloud.calls("delete");
    assert_eq!(deletes, 3, "bounded retries");
    // The cloud recovers: the next reconcile still lists the VM and deletes it.
    env.cloud.lock().failing_deletes = 0;
    env.until_cloud("deleted at last", 3 * MIN, |c| !c.exists(&name))
        .await;
    env.until("forgotten", MIN, |s| s.stuck_on_removing == 0)
        .await;
    env.stop().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_deletes_idle_at_once_and_leased_after_release() {
    let env = Env::start(with(|s| s.machine.idle_count = 2), FakeCloud::new());
    env.until("two idle", 2 * MIN, |s| s.counts.idle == 2).await;
    let lease = env.handle.try_lease().await.expect("idle");
    env.handle.mark_used(&lease);
    let h = env.handle.clone();
    let shut = tokio::spawn(async move { h.shutdown(Instant::now() + 10 * MIN).await });
    env.until("idle one removing", MIN, |s| {
        s.counts.idle == 0 && s.counts.used == 1
    })
    .await;
    assert!(env.handle.try_lease().await.is_none());
    assert!(env
        .handle
        .lease_on_demand(CancellationToken::new())
        .await
        .is_err());
    env.handle.release(lease, true);
    let left = shut.await.unwrap();
    assert!(left.is_empty(), "{left:?}");
    assert!(env.cloud.names().is_empty(), "{:?}", env.cloud.names());
    env.tracker.close();
    tokio::time::timeout(MIN, env.tracker.wait())
        .await
        .expect("every task ended");
}

#[tokio::test(start_paused = true)]
async fn shutdown_reports_what_it_could_not_delete_by_the_deadline() {
    let env = Env::start(with(|s| s.machine.idle_count = 1), FakeCloud::new());
    env.until("one idle", 2 * MIN, |s| s.counts.idle == 1).await;
    let lease = env.handle.try_lease().await.expect("idle");
    let left = env.handle.shutdown(Instant::now() + MIN).await;
    assert_eq!(left, vec![lease.name.clone()]);
    env.tracker.close();
    tokio::time::timeout(MIN, env.tracker.wait())
        .await
        .expect("every task ended");
}

#[tokio::test(start_paused = true)]
async fn pools_of_one_process_leave_each_other_alone_and_one_deletes_unknown_runners() {
    let cloud = FakeCloud::new();
    let registry = RunnerRegistry::new();
    let a = Env::start_in(
        with(|s| {
            s.machine.idle_count = 1;
            s.runner_label = "raaaa".into();
            s.short_token = "tokena".into();
        }),
        cloud.clone(),
        registry.clone(),
    );
    let b = Env::start_in(
        with(|s| {
            s.machine.idle_count = 1;
            s.runner_label = "rbbbb".into();
            s.short_token = "tokenb".into();
        }),
        cloud.clone(),
        registry.clone(),
    );
    let va = a.until("a warm", 2 * MIN, |s| s.counts.idle == 1).await.vms[0]
        .name
        .clone();
    let vb = b.until("b warm", 2 * MIN, |s| s.counts.idle == 1).await.vms[0]
        .name
        .clone();
    cloud.add(
        "removed-runner-vm",
        "us-central1-a",
        &[(MANAGER_LABEL, "mgr1"), (RUNNER_LABEL, "rgone")],
    );
    a.until_cloud("unknown runner's VM deleted", 3 * MIN, |c| {
        !c.exists("removed-runner-vm")
    })
    .await;
    sleep(10 * MIN).await;
    assert!(cloud.exists(&va) && cloud.exists(&vb));
    assert_eq!(a.handle.snapshot().await.vms[0].name, va);
    assert_eq!(b.handle.snapshot().await.vms[0].name, vb);
    let deletes: Vec<String> = cloud
        .lock()
        .log
        .iter()
        .filter(|(m, _, _)| *m == "delete")
        .map(|(_, n, _)| n.clone())
        .collect();
    assert_eq!(
        deletes,
        vec!["removed-runner-vm".to_string()],
        "one pool deletes it, once"
    );
    b.stop().await;
    assert!(
        !registry.contains("rbbbb"),
        "a stopped pool leaves the registry"
    );
    a.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_vm_one_listing_missed_is_checked_with_a_get_and_kept() {
    let env = Env::start(with(|s| s.machine.idle_count = 1), FakeCloud::new());
    env.until("one idle", 2 * MIN, |s| s.counts.idle == 1).await;
    let lease = env.handle.try_lease().await.expect("idle");
    env.handle.mark_used(&lease);
    let gets = env.cloud.calls("get");
    let lists = env.cloud.calls("list");
    env.cloud
        .lock()
        .omit_from_next_list
        .insert(lease.name.clone());
    // The next reconcile (60 s) misses it; the get that follows finds it running.
    env.until_cloud("the listing that missed it", 3 * MIN, |c| {
        c.lock().omit_from_next_list.is_empty() && c.calls("list") > lists
    })
    .await;
    env.until_cloud("the get", MIN, |c| c.calls("get") > gets)
        .await;
    sleep(2 * MIN).await;
    let snap = env.handle.snapshot().await;
    assert!(
        snap.vms
            .iter()
            .any(|v| v.name == lease.name && v.state == VmState::Used),
        "{:?}",
        snap.vms
    );
    assert!(env.cloud.exists(&lease.name));
    assert_eq!(env.cloud.calls("delete"), 0);
    env.handle.release(lease, true);
    env.stop().await;
}
