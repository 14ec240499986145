//! `GceCloud` against the test kit's fake Compute Engine over real HTTP: insert/wait/get, requestId
//! idempotency, label listings (zonal, aggregated, paged, with an unreachable zone), operation
//! failures (stockout, regional quota), synchronous refusals (global quota, rate limits), 503
//! retries, delete, and the instance body as the fake received it.

use std::collections::BTreeMap;
use std::time::Duration;

use flotilla::cloud::{
    Cloud, CloudError, GceCloud, GceCloudSettings, InstanceSpec, InstanceStatus, ListScope,
    OperationFailure, OperationRef, OperationStatus, QuotaScope,
};
use testkit::{FakeGce, FakeGceOptions, GceFault};
use tokio::time::Instant;

const ZONE_A: &str = "us-central1-a";
const ZONE_B: &str = "us-central1-b";
const DEADLINE: Duration = Duration::from_secs(30);

async fn fake() -> FakeGce {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    FakeGce::start(FakeGceOptions {
        wait_cap: Duration::from_millis(500),
        ..FakeGceOptions::default()
    })
    .await
    .expect("fake gce starts")
}

fn settings(fake: &FakeGce, registry: &prometheus::Registry) -> GceCloudSettings {
    GceCloudSettings {
        endpoint: Some(fake.endpoint()),
        api_rate_per_minute: 60_000,
        wait_timeout: Duration::from_secs(10),
        retry_backoff: Duration::from_millis(20),
        ..GceCloudSettings::new(fake.project(), registry.clone())
    }
}

async fn cloud(fake: &FakeGce) -> (GceCloud, prometheus::Registry) {
    let registry = prometheus::Registry::new();
    let cloud = GceCloud::new(settings(fake, &registry))
        .await
        .expect("cloud builds");
    (cloud, registry)
}

fn spec(name: &str, zone: &str, pool: &str) -> InstanceSpec {
    InstanceSpec {
        name: name.to_owned(),
        zone: zone.to_owned(),
        machine_type: "e2-standard-2".to_owned(),
        image: "projects/cos-cloud/global/images/family/cos-stable".to_owned(),
        disk_size_gb: 20,
        disk_type: "pd-balanced".to_owned(),
        network: "default".to_owned(),
        subnetwork: None,
        external_ip: false,
        tags: vec!["flotilla-runner".to_owned()],
        labels: BTreeMap::from([("flotilla-pool".to_owned(), pool.to_owned())]),
        metadata: vec![("startup-script".to_owned(), "#!/bin/sh\ntrue\n".to_owned())],
        service_account: None,
        spot: false,
    }
}

fn request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Loops on `wait` until the operation is no longer pending.
async fn settle(cloud: &GceCloud, op: &OperationRef) -> OperationStatus {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match cloud.wait(op).await.expect("wait call") {
            OperationStatus::Pending if Instant::now() < deadline => continue,
            other => return other,
        }
    }
}

async fn create(cloud: &GceCloud, spec: &InstanceSpec) {
    let op = cloud.insert(spec, &request_id()).await.expect("insert");
    assert_eq!(
        settle(cloud, &op).await,
        OperationStatus::Done,
        "{}",
        spec.name
    );
}

fn counter(registry: &prometheus::Registry, name: &str, labels: &[(&str, &str)]) -> u64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| {
            labels.iter().all(|(k, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == *k && l.value() == *v)
            })
        })
        .map(|m| m.get_counter().value() as u64)
        .sum()
}

fn pool(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("flotilla-pool".to_owned(), name.to_owned())])
}

#[tokio::test]
async fn insert_wait_get_running_with_address_and_body_as_sent() {
    let fake = fake().await;
    let (cloud, registry) = cloud(&fake).await;
    let mut s = spec("runner-1", ZONE_A, "a");
    s.spot = true;
    s.external_ip = true;
    create(&cloud, &s).await;

    let vm = cloud
        .get(ZONE_A, "runner-1")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(vm.status, InstanceStatus::Running);
    assert_eq!(vm.zone, ZONE_A);
    assert!(vm.internal_ip.is_some(), "{vm:?}");
    assert!(vm.external_ip.is_some(), "{vm:?}");
    assert_eq!(vm.labels, pool("a"));

    // What the fake understood from the body.
    let views = fake.instances();
    assert_eq!(views.len(), 1);
    let sched = &views[0].scheduling;
    assert!(!sched.automatic_restart);
    assert_eq!(sched.provisioning_model, "SPOT");
    assert_eq!(sched.instance_termination_action.as_deref(), Some("DELETE"));
    assert_eq!(views[0].metadata_keys, ["startup-script"]);

    // The tag, as echoed on a raw GET.
    let url = format!(
        "{}/compute/v1/projects/{}/zones/{ZONE_A}/instances/runner-1",
        fake.endpoint(),
        fake.project()
    );
    let raw: serde_json::Value = reqwest::get(url)
        .await
        .expect("raw get")
        .json()
        .await
        .expect("json");
    assert_eq!(raw["tags"]["items"], serde_json::json!(["flotilla-runner"]));
    assert_eq!(
        raw["scheduling"]["automaticRestart"],
        serde_json::json!(false)
    );

    assert_eq!(
        counter(
            &registry,
            "flotilla_gce_api_calls_total",
            &[("method", "instances.insert"), ("result", "ok")]
        ),
        1
    );
    assert!(
        counter(
            &registry,
            "flotilla_gce_api_calls_total",
            &[("method", "zoneOperations.wait")]
        ) >= 1
    );
    assert_eq!(fake.call_counts().get("zoneOperations.get"), None);
    assert_eq!(cloud.get(ZONE_A, "nope").await.expect("get"), None);
    fake.shutdown().await;
}

#[tokio::test]
async fn retried_insert_with_same_request_id_makes_one_vm() {
    let fake = fake().await;
    let (cloud, registry) = cloud(&fake).await;
    let s = spec("runner-2", ZONE_A, "a");
    let id = request_id();
    // The first attempt meets a 503 and is retried inside the client.
    fake.inject(GceFault::UnavailableNext { calls: 1 });
    let first = cloud.insert(&s, &id).await.expect("insert after a 503");
    let second = cloud.insert(&s, &id).await.expect("same request id again");
    assert_eq!(first, second);
    assert_eq!(settle(&cloud, &first).await, OperationStatus::Done);
    assert_eq!(fake.instances().len(), 1);
    let unavailable = &[("method", "instances.insert"), ("result", "unavailable")];
    assert_eq!(
        counter(&registry, "flotilla_gce_api_calls_total", unavailable),
        1
    );
    // A different request id for the same name is a conflict.
    let err = cloud
        .insert(&s, &request_id())
        .await
        .expect_err("duplicate name");
    assert!(matches!(err, CloudError::Conflict { .. }), "{err:?}");
    fake.shutdown().await;
}

#[tokio::test]
async fn lists_by_label_zonal_and_aggregated_across_pages() {
    let fake = fake().await;
    let registry = prometheus::Registry::new();
    let cloud = GceCloud::new(GceCloudSettings {
        page_size: 2,
        ..settings(&fake, &registry)
    })
    .await
    .expect("cloud builds");
    let mut ops = Vec::new();
    for i in 0..5 {
        let zone = if i < 3 { ZONE_A } else { ZONE_B };
        let s = spec(&format!("pool-a-{i}"), zone, "a");
        ops.push(cloud.insert(&s, &request_id()).await.expect("insert"));
    }
    for op in &ops {
        assert_eq!(settle(&cloud, op).await, OperationStatus::Done);
    }
    fake.create_foreign_instance(ZONE_A, "other-1", pool("b"))
        .expect("foreign vm");

    let zonal = cloud
        .list(&ListScope::Zone(ZONE_A.into()), &pool("a"))
        .await
        .expect("zonal list");
    let mut names: Vec<_> = zonal.instances.iter().map(|i| i.name.clone()).collect();
    names.sort();
    assert_eq!(names, ["pool-a-0", "pool-a-1", "pool-a-2"]);
    assert!(zonal.unreachable_zones.is_empty());
    assert!(
        fake.call_counts()
            .get("instances.list")
            .copied()
            .unwrap_or(0)
            >= 2
    );

    let all = cloud
        .list(&ListScope::Aggregated, &pool("a"))
        .await
        .expect("aggregated list");
    assert_eq!(all.instances.len(), 5, "{all:?}");
    assert!(all.instances.iter().all(|i| i.labels == pool("a")));
    assert_eq!(all.instances.iter().filter(|i| i.zone == ZONE_B).count(), 2);
    assert!(
        fake.call_counts()
            .get("instances.aggregatedList")
            .copied()
            .unwrap_or(0)
            >= 3,
        "5 results at 2 a page"
    );

    // One zone cannot be read: the others still come back and it is named.
    fake.inject(GceFault::ZoneUnreachable {
        zone: ZONE_B.into(),
    });
    let partial = cloud
        .list(&ListScope::Aggregated, &pool("a"))
        .await
        .expect("partial aggregated list");
    assert_eq!(partial.instances.len(), 3);
    assert_eq!(partial.unreachable_zones, [ZONE_B]);
    fake.shutdown().await;
}

#[tokio::test]
async fn stockout_and_regional_quota_fail_the_operation() {
    let fake = fake().await;
    let (cloud, _) = cloud(&fake).await;
    fake.inject(GceFault::Stockout {
        zone: ZONE_A.into(),
        with_details: true,
    });
    let op = cloud
        .insert(&spec("stock-1", ZONE_A, "a"), &request_id())
        .await
        .expect("insert accepted");
    match settle(&cloud, &op).await {
        OperationStatus::Failed(OperationFailure::Stockout { code, .. }) => {
            assert_eq!(code, "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS")
        }
        other => panic!("{other:?}"),
    }

    fake.inject(GceFault::Clear);
    fake.inject(GceFault::QuotaExceeded {
        region: Some("us-central1".into()),
        quota: None,
        limit: 24.0,
        sync: false,
    });
    let op = cloud
        .insert(&spec("quota-1", ZONE_B, "a"), &request_id())
        .await
        .expect("insert accepted");
    match settle(&cloud, &op).await {
        OperationStatus::Failed(OperationFailure::Quota { scope, message }) => {
            assert_eq!(scope, QuotaScope::Region("us-central1".into()));
            assert!(message.contains("CPUS"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    fake.shutdown().await;
}

#[tokio::test]
async fn global_quota_and_rate_limits_are_synchronous_errors() {
    let fake = fake().await;
    let (cloud, registry) = cloud(&fake).await;
    fake.inject(GceFault::QuotaExceeded {
        region: None,
        quota: None,
        limit: 32.0,
        sync: true,
    });
    let err = cloud
        .insert(&spec("gq-1", ZONE_A, "a"), &request_id())
        .await
        .expect_err("sync quota");
    assert!(
        matches!(
            err,
            CloudError::QuotaExceeded {
                scope: QuotaScope::Global,
                ..
            }
        ),
        "{err:?}"
    );
    fake.inject(GceFault::Clear);

    for resource_exhausted in [false, true] {
        fake.inject(GceFault::RateLimitNext {
            calls: 1,
            resource_exhausted,
        });
        let err = cloud.get(ZONE_A, "x").await.expect_err("rate limited");
        match err {
            CloudError::RateLimited { retry_after, .. } => {
                assert!(retry_after <= Duration::from_secs(60), "{retry_after:?}")
            }
            other => panic!("429={resource_exhausted}: {other:?}"),
        }
    }
    // Rate limits are not retried inside the client: one attempt each.
    let limited = &[("method", "instances.get"), ("result", "rate_limited")];
    assert_eq!(
        counter(&registry, "flotilla_gce_api_calls_total", limited),
        2
    );
    fake.shutdown().await;
}

#[tokio::test]
async fn delete_then_not_found() {
    let fake = fake().await;
    let (cloud, _) = cloud(&fake).await;
    create(&cloud, &spec("del-1", ZONE_A, "a")).await;
    let op = cloud.delete(ZONE_A, "del-1").await.expect("delete");
    assert_eq!(settle(&cloud, &op).await, OperationStatus::Done);
    assert_eq!(cloud.get(ZONE_A, "del-1").await.expect("get"), None);
    let err = cloud.delete(ZONE_A, "del-1").await.expect_err("gone");
    assert!(matches!(err, CloudError::NotFound { .. }), "{err:?}");
    fake.shutdown().await;
}

#[tokio::test]
async fn wait_returns_pending_at_the_cap_and_on_our_timeout() {
    let fake = fake().await;
    let registry = prometheus::Registry::new();
    let cloud = GceCloud::new(GceCloudSettings {
        wait_timeout: Duration::from_millis(200),
        ..settings(&fake, &registry)
    })
    .await
    .expect("cloud builds");
    fake.inject(GceFault::NeverRunning {
        zone: ZONE_A.into(),
    });
    let op = cloud
        .insert(&spec("hang-1", ZONE_A, "a"), &request_id())
        .await
        .expect("insert");
    // The fake holds a wait 500 ms; our timeout is 200 ms.
    assert_eq!(
        cloud.wait(&op).await.expect("wait"),
        OperationStatus::Pending
    );
    let timeouts = &[("method", "zoneOperations.wait"), ("result", "timeout")];
    assert_eq!(
        counter(&registry, "flotilla_gce_api_calls_total", timeouts),
        1
    );

    let (patient, _) = self::cloud(&fake).await;
    let start = Instant::now();
    assert_eq!(
        patient.wait(&op).await.expect("wait"),
        OperationStatus::Pending
    );
    assert!(
        start.elapsed() >= Duration::from_millis(400),
        "the fake held the call"
    );
    fake.shutdown().await;
}

#[tokio::test]
async fn client_side_rate_limit_delays_calls() {
    let fake = fake().await;
    let registry = prometheus::Registry::new();
    // 60 a minute: a burst of 10, then one a second.
    let cloud = GceCloud::new(GceCloudSettings {
        api_rate_per_minute: 60,
        ..settings(&fake, &registry)
    })
    .await
    .expect("cloud builds");
    let start = Instant::now();
    for _ in 0..11 {
        assert_eq!(cloud.get(ZONE_A, "none").await.expect("get"), None);
    }
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(
        counter(&registry, "flotilla_gce_rate_limit_waits_total", &[]),
        1
    );
    fake.shutdown().await;
}
