//! The pool actor against the fake cloud, on the paused clock: warming, leases, MaxBuilds,
//! IdleTime, caps, zones, rate limits, ownership and lost VMs.

use super::fake_cloud::{FakeCloud, FakeConnector};
use super::settings;
use crate::cloud::QuotaScope;
use crate::fleet::{
    start, FleetHandle, FleetSettings, FleetSnapshot, RunnerRegistry, VmFate, VmState,
    MANAGER_LABEL, RUNNER_LABEL,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{sleep, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

struct Env {
    cloud: FakeCloud,
    conn: FakeConnector,
    handle: FleetHandle,
    tracker: TaskTracker,
    cancel: CancellationToken,
    s: FleetSettings,
}

impl Env {
    fn start(s: FleetSettings, cloud: FakeCloud) -> Env {
        let conn = FakeConnector::new(&cloud);
        let tracker = TaskTracker::new();
        let cancel = CancellationToken::new();
        let handle = start(
            s.clone(),
            Arc::new(cloud.clone()),
            Arc::new(conn.clone()),
            RunnerRegistry::new(),
            &tracker,
            cancel.clone(),
        )
        .expect("pool starts");
        Env {
            cloud,
            conn,
            handle,
            tracker,
            cancel,
            s,
        }
    }

    /// Waits (virtual time) until `cond` holds on a snapshot, failing after `limit`.
    async fn until(
        &self,
        what: &str,
        limit: Duration,
        cond: impl Fn(&FleetSnapshot) -> bool,
    ) -> FleetSnapshot {
        let deadline = Instant::now() + limit;
        loop {
            let snap = self.handle.snapshot().await;
            if cond(&snap) {
                return snap;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {snap:#?}"
            );
            sleep(Duration::from_millis(500)).await;
        }
    }

    /// Waits until `cond` holds on the fake cloud.
    async fn until_cloud(&self, what: &str, limit: Duration, cond: impl Fn(&FakeCloud) -> bool) {
        let deadline = Instant::now() + limit;
        while !cond(&self.cloud) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {:?}",
                self.cloud.names()
            );
            sleep(Duration::from_millis(500)).await;
        }
    }

    async fn stop(self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

fn with(f: impl FnOnce(&mut FleetSettings)) -> FleetSettings {
    let mut s = settings();
    f(&mut s);
    s
}

const MIN: Duration = Duration::from_secs(60);

#[tokio::test(start_paused = true)]
async fn warms_to_idle_count_and_no_further() {
    let env = Env::start(with(|s| s.machine.idle_count = 2), FakeCloud::new());
    env.until("two idle VMs", 2 * MIN, |s| s.counts.idle == 2)
        .await;
    sleep(30 * MIN).await;
    let snap = env.handle.snapshot().await;
    assert_eq!(snap.counts.idle, 2);
    assert_eq!(snap.peak_total, 2);
    assert_eq!(env.cloud.calls("insert"), 2);
    let name = &snap.vms[0].name;
    assert!(name.starts_with("runner-testtoken-auto-"), "{name}");
    let md = env.cloud.metadata(name);
    assert!(md
        .iter()
        .any(|(k, v)| k == "flotilla-docker-ca" && v.contains(name.as_str())));
    assert!(md.iter().any(|(k, _)| k == "startup-script"));
    env.stop().await;
}

#[tokio::test(start_paused = true)]
async fn max_builds_one_removes_the_vm_after_its_job() {
    let env = Env::start(
        with(|s| {
            s.machine.idle_count = 1;
            s.machine.max_builds = 1;
        }),
        FakeCloud::new(),
    );
    env.until("one idle VM", 2 * MIN, |s| s.counts.idle == 1)
        .await;
    let lease = env.handle.try_lease().await.expect("an idle VM");
    assert!(env.handle.try_lease().await.is_none(), "only one idle VM");
    env.handle.mark_used(&lease);
    let name = lease.name.clone();
    assert!(!format!("{lease:?}").contains("docker"), "{lease:?}");
    env.handle.release(lease, true);
    env.until_cloud("the used VM deleted", 2 * MIN, |c| !c.exists(&name))
        .await;
    let snap = env
        .until("a fresh idle VM", 2 * MIN, |s| s.counts.idle == 1)
        .await;
    assert_ne!(snap.vms[0].name, name);
    env.stop().await;
}

#[tokio::test(start_paused = true)]
async fn max_builds_three_reuses_then_removes() {
    let env = Env::start(
        with(|s| {
            s.machine.idle_count = 1;
            s.machine.max_builds = 3;
        }),
        FakeCloud::new(),
    );
    env.until("one idle VM", 2 * MIN, |s| s.counts.idle == 1)
        .await;
    let mut names = vec![];
    for _ in 0..3 {
        let lease = env.handle.try_lease().await.expect("an idle VM");
        names.push(lease.name.clone());
        env.handle.mark_used(&lease);
        env.handle.release(lease, true);
    }
    assert_eq!(names[0], names[1]);
    assert_eq!(names[1], names[2]);
    env.until_cloud("the VM deleted after 3 jobs", 2 * MIN, |c| {
        !c.exists(&names[0])
    })
    .await;
    // An unused lease (no job found) does not count.
    let snap = env
        .until("a fresh idle VM", 2 * MIN, |s| s.counts.idle == 1)
        .await;
    let lease = env.handle.try_lease().await.expect("idle VM");
    assert_eq!(lease.name, snap.vms[0].name);
    env.handle.unlease(lease);
    let snap = env.until("back to idle", MIN, |s| s.counts.idle == 1).await;
    assert_eq!(snap.vms[0].used_count, 0);
    env.stop().await;
}

#[tokio::test(start_paused = true)]
async fn idle_vms_expire_after_idle_time_only_above_idle_count() {
    let env = Env::start(
        with(|s| {
            s.machine.idle_count = 1;
            s.machine.idle_time = Duration::from_secs(300);
        }),
        FakeCloud::new(),
    );
    env.until("one idle VM", 2 * MIN, |s| s.counts.idle == 1)
        .await;
    // A job on demand beside it: afterwards two idle VMs, one above IdleCount.
    let first = env.handle.try_lease().await.expect("idle");
    env.handle.mark_used(&first);
    env.until("IdleCount restored", 2 * MIN, |s| s.counts.idle == 1)
        .await;
    env.handle.release(first, true);
    env.until("two idle", MIN, |s| s.counts.idle == 2).await;
    sleep(Duration::from_secs(200)).await;
    assert_eq!(
        env.handle.snapshot().await.counts.idle,
        2,
        "not expired before IdleTime"
    );
    let snap = env
        .until("one expired", 5 * MIN, |s| s.counts.total() == 1)
        .await;
    assert_eq!(snap.counts.idle, 1);
    sleep(30 * MIN).await;
    assert_eq!(
        env.handle.snapshot().await.counts.idle,
        1,
        "IdleCount is kept past IdleTime"
    );
    env.stop().await;
}

#[tokio::test(start_paused = true)]
async fn limit_and_growth_rate_hold_over_every_state() {
    let env = Env::start(
        with(|s| {
            s.machine.idle_count = 10;
            s.machine.max_growth_rate = 2;
            s.limit = 4;
        }),
        FakeCloud::new(),
    );
    env.until("four VMs", 5 * MIN, |s| s.counts.idle == 4).await;
    // Churn: jobs come and go, VMs are removed after each (MaxBuilds reached via removal).
    for _ in 0..6 {
        let lease = env.handle.try_lease().await;
        if let Some(l) = lease {
            env.handle.mark_used(&l);
            // A dropped lease removes its VM: the removing one still counts.
            drop(l);
        }
        sleep(Duration::from_secs(7)).await;
        let snap = env.handle.snapshot().await;
        assert!(snap.counts.total() <= 4, "{snap:#?}");
    }
    sleep(10 * MIN).await;
    let snap = env.handle.snapshot().await;
    assert!(snap.peak_total <= 4, "peak total {}", snap.peak_total);
    assert!(
        snap.peak_creating <= 2,
        "peak creating {}",
        snap.peak_creating
    );
    assert_eq!(snap.peak_total, 4);
    assert_eq!(snap.peak_creating, 2);
    let peak_cloud = env
        .cloud
        .lock()
        .peak_per_runner
        .get(&env.s.runner_label)
        .copied();
    assert!(peak_cloud.unwrap_or(0) <= 4, "cloud saw {peak_cloud:?}");
    env.stop().await;
}

#[tokio::test(start_paused = true)]
async fn on_demand_waits_for_the_limit_and_serves_every_job() {
    let env = Env::start(with(|s| s.limit = 2), FakeCloud::new());
    let mut waiting = vec![];
    for _ in 0..4 {
        let h = env.handle.clone();
        waiting.push(tokio::spawn(async move {
            h.lease_on_demand(CancellationToken::new()).await
        }));
    }
    let mut served = 0;
    for w in waiting {
        let lease = w.await.unwrap().expect("a VM");
        served += 1;
        let snap = env.handle.snapshot().await;
        assert!(snap.counts.total() <= 2, "{snap:#?}");
        env.handle.release(lease, true);
    }
    assert_eq!(served, 4);
    let snap = env.handle.snapshot().await;
    assert!(snap.peak_total <= 2);
    // A canceled wait gives up and leaves no waiter behind.
    let cancel = CancellationToken::new();
    cancel.cancel();
    let r = env.handle.lease_on_demand(cancel).await;
    assert!(r.is_err());
    env.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_stockout_moves_creation_to_the_next_zone() {
    let cloud = FakeCloud::new();
    cloud.lock().stockout.insert("us-central1-a".into());
    let env = Env::start(with(|s| s.machine.idle_count = 2), cloud);
    let snap = env.until("two idle", 5 * MIN, |s| s.counts.idle == 2).await;
    assert!(
        snap.vms.iter().all(|v| v.zone == "us-central1-b"),
        "{snap:#?}"
    );
    assert!(snap.cooling_zones.iter().any(|(z, _)| z == "us-central1-a"));
    // Only the first burst hit the exhausted zone (two creations started at once).
    assert!(env.cloud.lock().inserts_per_zone["us-central1-a"] <= 2);
    env.stop().await;
}

#[tokio::test(start_paused = true)]
async fn all_zones_exhausted_waits_without_a_busy_loop() {
    let cloud = FakeCloud::new();
    {
        let mut c = cloud.lock();
        c.stockout.insert("us-central1-a".into());
        c.quota.insert(
            "us-central1-b".into(),
            QuotaScope::Region("us-central1".into()),
        );
    }
    let env = Env::start(with(|s| s.machine.idle_count = 1), cloud);
    sleep(20 * MIN).await;
    // Cool-downs 300 s, 600 s, 1200 s…: a handful of inserts in 20 minutes, not hundreds.
    let inserts = env.cloud.calls("insert");
    assert!((2..=8).contains(&inserts), "{inserts} inserts");
    let waits = env.cloud.calls("wait");
    assert!(waits <= inserts * 2, "{waits} waits");
    let pings = *env.conn.pings.lock().unwrap();
    assert_eq!(pings, 0);
    // Capacity comes back: the pool recovers once a cool-down ends.
    env.cloud.lock().stockout.clear();
    env.cloud.lock().quota.clear();
    env.until("one idle", 70 * MIN, |s| s.counts.idle == 1)
        .await;
    env.stop().await;
}

#[tokio::test(start_paused = true)]
async fn rate_limits_back_off_then_creation_completes() {
    let cloud = FakeCloud::new();
    {
        let mut c = cloud.lock();
        c.rate_limited_calls = 3; // the startup list and the first inserts
        c.retry_after = Duration::from_secs(60);
    }
    let t0 = Instant::now();
    let env = Env::start(with(|s| s.machine.idle_count = 1), cloud);
    env.until("one idle", 10 * MIN, |s| s.counts.idle == 1)
        .await;
    assert!(
        t0.elapsed() >= Duration::from_secs(60),
        "waited {:?}",
        t0.elapsed()
    );
    assert!(
        env.cloud.calls("insert") <= 3,
        "{} inserts",
        env.cloud.calls("insert")
    );
    assert_eq!(env.handle.snapshot().await.peak_total, 1);
    env.stop().await;
}

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
async fn a_vm_not_ready_in_time_is_deleted_and_strikes_its_zone() {
    let env = Env::start(
        with(|s| {
            s.machine.idle_count = 1;
            s.gce.create_timeout = Duration::from_secs(120);
        }),
        FakeCloud::new(),
    );
    *env.conn.never_ready.lock().unwrap() = true;
    env.until("two failed creations", 10 * MIN, |s| {
        s.creation_failures >= 2
    })
    .await;
    let snap = env
        .until("zone a cooling", MIN, |s| !s.cooling_zones.is_empty())
        .await;
    assert_eq!(snap.cooling_zones[0].0, "us-central1-a");
    env.until_cloud("timed-out VMs deleted", 2 * MIN, |c| c.names().len() <= 1)
        .await;
    *env.conn.never_ready.lock().unwrap() = false;
    let snap = env
        .until("one idle in zone b", 10 * MIN, |s| s.counts.idle == 1)
        .await;
    assert!(snap
        .vms
        .iter()
        .any(|v| v.zone == "us-central1-b" && v.state == VmState::Idle));
    env.stop().await;
}

#[tokio::test(start_paused = true)]
async fn queue_aware_scale_out_creates_for_the_backlog_and_can_be_off() {
    for (queue_aware, want) in [(true, 5u32), (false, 0)] {
        let env = Env::start(
            with(|s| {
                s.queue_aware = queue_aware;
                s.limit = 10;
            }),
            FakeCloud::new(),
        );
        env.until("started", MIN, |s| s.started).await;
        env.handle.observe_backlog(5);
        sleep(2 * MIN).await;
        let snap = env.handle.snapshot().await;
        assert_eq!(snap.counts.idle, want, "queue_aware={queue_aware}");
        env.stop().await;
    }
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
