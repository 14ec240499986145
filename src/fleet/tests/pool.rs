//! The pool actor against the fake cloud, on the paused clock: warming, leases, MaxBuilds,
//! IdleTime, caps, zones, rate limits, queue-aware scale-out, reconfiguration.

use super::env::{with, Env, MIN};
use super::fake_cloud::FakeCloud;
use crate::cloud::QuotaScope;
use crate::fleet::VmState;
use std::time::Duration;
use tokio::time::{sleep, Instant};
use tokio_util::sync::CancellationToken;

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
async fn reconfigure_applies_idle_count_and_a_lower_limit() {
    let env = Env::start(with(|s| s.machine.idle_count = 1), FakeCloud::new());
    env.until("one idle", 2 * MIN, |s| s.counts.idle == 1).await;
    env.handle
        .reconfigure(with(|s| s.machine.idle_count = 3))
        .expect("valid");
    env.until("three idle", 2 * MIN, |s| s.counts.idle == 3)
        .await;
    env.handle
        .reconfigure(with(|s| {
            s.machine.idle_count = 3;
            s.limit = 1;
        }))
        .expect("valid");
    env.until("down to the limit", 2 * MIN, |s| s.counts.total() == 1)
        .await;
    let bad = env
        .handle
        .reconfigure(with(|s| s.machine.machine_name = "no-placeholder".into()));
    assert!(bad.is_err());
    env.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_drain_deletes_idle_vms_serves_waiting_jobs_and_removes_released_ones() {
    let env = Env::start(with(|s| s.machine.idle_count = 2), FakeCloud::new());
    env.until("two idle", 2 * MIN, |s| s.counts.idle == 2).await;
    let busy = env.handle.try_lease().await.expect("an idle VM");
    env.handle.mark_used(&busy);
    env.handle.set_draining(true);
    env.until("the idle VM deleted, the busy one kept", 2 * MIN, |s| {
        s.counts.idle == 0 && s.counts.total() == 1
    })
    .await;
    assert!(
        env.handle.try_lease().await.is_none(),
        "no idle lease while draining"
    );
    // A job taken before the drain (the long poll in flight) still gets a VM.
    let on_demand = env
        .handle
        .lease_on_demand(CancellationToken::new())
        .await
        .expect("a VM for a job already taken");
    sleep(5 * MIN).await;
    assert_eq!(
        env.handle.snapshot().await.counts.idle,
        0,
        "no warming while draining"
    );
    let names = [busy.name.clone(), on_demand.name.clone()];
    env.handle.release(busy, true);
    env.handle.release(on_demand, true);
    env.until_cloud("every VM deleted", 2 * MIN, |c| {
        names.iter().all(|n| !c.exists(n))
    })
    .await;
    env.until("an empty pool", 2 * MIN, |s| s.counts.total() == 0)
        .await;
    env.handle.set_draining(false);
    env.until("warm again after the drain ends", 2 * MIN, |s| {
        s.counts.idle == 2
    })
    .await;
    env.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_dropped_zone_loses_its_idle_vms_now_and_busy_ones_after_their_job() {
    let only_a = |s: &mut crate::fleet::FleetSettings| {
        s.machine.idle_count = 2;
        s.gce.zones = vec!["us-central1-a".into()];
    };
    let env = Env::start(with(only_a), FakeCloud::new());
    env.until("two idle in zone a", 2 * MIN, |s| s.counts.idle == 2)
        .await;
    let busy = env.handle.try_lease().await.expect("an idle VM");
    env.handle.mark_used(&busy);
    env.handle
        .reconfigure(with(|s| {
            s.machine.idle_count = 2;
            s.gce.zones = vec!["us-central1-b".into()];
        }))
        .expect("valid");
    let snap = env
        .until("two idle VMs in zone b", 2 * MIN, |s| {
            s.counts.idle == 2
                && s.vms
                    .iter()
                    .filter(|v| v.state == VmState::Idle)
                    .all(|v| v.zone == "us-central1-b")
        })
        .await;
    assert!(
        snap.vms.iter().any(|v| v.name == busy.name),
        "the busy VM stays until its job ends: {snap:#?}"
    );
    let name = busy.name.clone();
    env.handle.release(busy, true);
    env.until_cloud("the busy VM deleted after its job", 2 * MIN, |c| {
        !c.exists(&name)
    })
    .await;
    env.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_vm_lifetime_costs_three_calls_besides_shared_lists() {
    let env = Env::start(
        with(|s| {
            s.machine.idle_count = 4;
            s.machine.max_builds = 1;
        }),
        FakeCloud::new(),
    );
    env.until("four idle", 5 * MIN, |s| s.counts.idle == 4)
        .await;
    for _ in 0..4 {
        let lease = env.handle.try_lease().await.expect("idle");
        env.handle.mark_used(&lease);
        env.handle.release(lease, true);
    }
    // Four used VMs deleted (confirmed by a listing), four new ones made.
    env.until("four replaced", 5 * MIN, |s| {
        s.counts.idle == 4 && s.counts.removing == 0
    })
    .await;
    let lists = env.cloud.calls("list");
    let others: u32 = env
        .cloud
        .lock()
        .calls
        .iter()
        .filter(|(m, _)| **m != "list")
        .map(|(_, n)| *n)
        .sum();
    let inserts = env.cloud.calls("insert");
    let deletes = env.cloud.calls("delete");
    assert_eq!((inserts, deletes), (8, 4));
    // Per VM: insert, wait, delete (the four alive are not deleted yet).
    assert_eq!(
        others,
        inserts * 2 + deletes,
        "{:?}",
        env.cloud.lock().calls
    );
    assert!(lists > 0);
    env.stop().await;
}

/// A shutdown while an insert request is on its way (sent, not yet answered): the VM may
/// exist, so the pool deletes it before it reports the shutdown done; never a leaked VM.
#[tokio::test(start_paused = true)]
async fn a_shutdown_during_an_unanswered_insert_deletes_the_vm_it_made() {
    let cloud = FakeCloud::new();
    cloud.lock().insert_latency = Duration::from_secs(20);
    let env = Env::start(with(|s| s.machine.idle_count = 1), cloud);
    env.until_cloud("the insert taken by Compute", 2 * MIN, |c| {
        !c.names().is_empty()
    })
    .await;
    assert_eq!(
        env.handle.snapshot().await.counts.idle,
        0,
        "not answered yet"
    );
    let left = env.handle.shutdown(Instant::now() + 10 * MIN).await;
    assert!(left.is_empty(), "every VM confirmed deleted: {left:?}");
    assert!(
        env.cloud.names().is_empty(),
        "the VM whose insert was in flight is deleted: {:?}",
        env.cloud.names()
    );
    env.stop().await;
}
