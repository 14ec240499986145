//! Injected faults seen through the API: capacity and quota errors in operations, synchronous
//! rate limits and outages, spot preemption, a boot that never finishes, and a vanishing VM.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use testkit::gce::{FakeGce, FakeGceOptions, GceFault};

use super::{create_running, get, insert, send, start, vm_body, wait_done, zone_url, ZA, ZB};

#[tokio::test]
async fn capacity_and_quota_errors_arrive_in_the_operation() {
    let fake = start().await;
    fake.inject(GceFault::Stockout {
        zone: ZA.to_owned(),
        with_details: true,
    });
    let (status, op) = insert(&fake, ZA, &vm_body("runner-s", ZA, json!({}), &[]), None).await;
    assert_eq!(status, StatusCode::OK);
    let done = wait_done(&fake, ZA, op["name"].as_str().unwrap_or_default()).await;
    assert_eq!(
        done["error"]["errors"][0]["code"],
        "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS"
    );
    assert_eq!(done["httpErrorStatusCode"], 503);
    assert!(done["error"]["errors"][0]["errorDetails"].is_array());
    assert_eq!(
        get(&fake, ZA, "instances/runner-s").await.0,
        StatusCode::NOT_FOUND
    );

    fake.inject(GceFault::Clear);
    let quota = GceFault::QuotaExceeded {
        region: Some("europe-west1".into()),
        quota: None,
        limit: 24.0,
        sync: false,
    };
    fake.inject(quota);
    let (_, op) = insert(&fake, ZB, &vm_body("runner-q", ZB, json!({}), &[]), None).await;
    let done = wait_done(&fake, ZB, op["name"].as_str().unwrap_or_default()).await;
    let e = &done["error"]["errors"][0];
    assert_eq!(e["code"], "QUOTA_EXCEEDED");
    assert_eq!(
        e["message"],
        "Quota 'CPUS' exceeded.  Limit: 24.0 in region europe-west1."
    );
    assert_eq!(
        e["errorDetails"][0]["quotaInfo"]["dimensions"],
        json!({"region": "europe-west1"})
    );
    assert_eq!(
        e["errorDetails"][0]["quotaInfo"]["limitName"],
        "CPUS-per-project-region"
    );
    assert_eq!(done["httpErrorStatusCode"], 403);
    // Another region is not affected.
    create_running(&fake, ZA, "runner-ok", &[]).await;

    let sync = GceFault::QuotaExceeded {
        region: None,
        quota: None,
        limit: 32.0,
        sync: true,
    };
    fake.inject(sync);
    let (status, err) = insert(&fake, ZA, &vm_body("runner-g", ZA, json!({}), &[]), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(err["error"]["errors"][0]["reason"], "quotaExceeded");
    assert_eq!(
        err["error"]["details"][1]["quotaInfo"]["dimensions"],
        json!({})
    );
    fake.shutdown().await;
}

#[tokio::test]
async fn rate_limits_and_outages_are_synchronous() {
    let fake = start().await;
    let admin = format!("{}/admin/faults", fake.endpoint());
    let (status, _) = send(
        reqwest::Client::new()
            .post(&admin)
            .json(&json!({"kind": "rate_limit_next", "calls": 1})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, err) = get(&fake, ZA, "instances").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(err["error"]["errors"][0]["reason"], "rateLimitExceeded");
    assert_eq!(err["error"]["errors"][0]["domain"], "usageLimits");
    assert!(err["error"].get("status").is_none());

    fake.inject(GceFault::RateLimitNext {
        calls: 1,
        resource_exhausted: true,
    });
    let (status, err) = get(&fake, ZA, "instances").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(err["error"]["status"], "RESOURCE_EXHAUSTED");
    assert_eq!(err["error"]["details"][0]["reason"], "RATE_LIMIT_EXCEEDED");

    fake.inject(GceFault::UnavailableNext { calls: 1 });
    assert_eq!(
        get(&fake, ZA, "instances").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(get(&fake, ZA, "instances").await.0, StatusCode::OK);
    let statuses: Vec<u16> = fake.calls().iter().map(|c| c.status).collect();
    assert_eq!(statuses, [403, 429, 503, 200]);

    fake.inject(GceFault::Latency { millis: 200 });
    let before = tokio::time::Instant::now();
    assert_eq!(get(&fake, ZA, "instances").await.0, StatusCode::OK);
    assert!(before.elapsed() >= Duration::from_millis(200));
    fake.shutdown().await;
}

#[tokio::test]
async fn preemption_leaves_a_system_operation() {
    let fake = start().await;
    create_running(&fake, ZA, "spot-del", &[]).await;
    let mut stop_body = vm_body("spot-stop", ZA, json!({}), &[]);
    stop_body["scheduling"] = json!({"provisioningModel": "SPOT"});
    let (_, op) = insert(&fake, ZA, &stop_body, None).await;
    wait_done(&fake, ZA, op["name"].as_str().unwrap_or_default()).await;

    for name in ["spot-del", "spot-stop"] {
        fake.try_inject(GceFault::Preempt {
            zone: ZA.into(),
            name: name.into(),
        })
        .expect("preempt");
    }
    let settled = fake
        .wait_until(Duration::from_secs(10), |vms| {
            vms.len() == 1 && vms[0].name == "spot-stop" && vms[0].status == "TERMINATED"
        })
        .await;
    assert!(settled, "{:?}", fake.instances());
    let url = format!("{}/operations", zone_url(&fake, ZA));
    let query = [("filter", "operationType=\"compute.instances.preempted\"")];
    let (_, ops) = send(reqwest::Client::new().get(url).query(&query)).await;
    let ops = ops["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(ops.len(), 2, "{ops:?}");
    for op in &ops {
        assert!(op["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("systemevent-")));
        assert_eq!(op["user"], "system");
        assert_eq!(op["status"], "DONE");
    }
    assert_eq!(
        get(&fake, ZA, "instances/spot-del").await.0,
        StatusCode::NOT_FOUND
    );
    fake.shutdown().await;
}

#[tokio::test]
async fn hanging_boot_and_vanishing_instances() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let opts = FakeGceOptions {
        wait_cap: Duration::from_millis(300),
        ..FakeGceOptions::default()
    };
    let fake = FakeGce::start(opts).await.expect("fake gce starts");
    fake.inject(GceFault::NeverRunning { zone: ZA.into() });
    let (_, op) = insert(&fake, ZA, &vm_body("stuck", ZA, json!({}), &[]), None).await;
    let op_name = op["name"].as_str().unwrap_or_default().to_owned();
    let url = format!("{}/operations/{op_name}/wait", zone_url(&fake, ZA));
    let (status, early) = send(reqwest::Client::new().post(&url)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        early["status"], "RUNNING",
        "wait returns at its cap, not DONE"
    );
    assert!(
        fake.wait_until(Duration::from_secs(5), |v| v[0].status == "STAGING")
            .await
    );

    let (_, del) =
        send(reqwest::Client::new().delete(format!("{}/instances/stuck", zone_url(&fake, ZA))))
            .await;
    wait_done(&fake, ZA, del["name"].as_str().unwrap_or_default()).await;
    let insert_op = wait_done(&fake, ZA, &op_name).await;
    assert_eq!(insert_op["httpErrorStatusCode"], 409);

    fake.create_foreign_instance(ZA, "leftover", BTreeMap::new())
        .expect("foreign vm");
    fake.try_inject(GceFault::Vanish {
        zone: ZA.into(),
        name: "leftover".into(),
    })
    .expect("vanish");
    assert_eq!(
        get(&fake, ZA, "instances/leftover").await.0,
        StatusCode::NOT_FOUND
    );
    let unknown = fake.try_inject(GceFault::Vanish {
        zone: ZA.into(),
        name: "leftover".into(),
    });
    assert!(unknown.is_err());
    fake.shutdown().await;
}
