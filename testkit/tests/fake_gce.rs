//! Tests of the fake Compute Engine over raw HTTP (reqwest): the insert/wait/get/list/delete
//! lifecycle, request-id idempotency, validation, filters and paging, aggregated lists with an
//! unreachable zone, injected faults in Compute's shapes, preemption, and the per-VM Docker TLS
//! proxy with real certificates and the local Docker engine.

#[path = "fake_gce/docker_tls.rs"]
mod docker_tls;
#[path = "fake_gce/faults.rs"]
mod faults;

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use testkit::gce::{FakeGce, FakeGceOptions, GceFault, ZoneSpec};

const ZA: &str = "us-central1-a";
const ZB: &str = "europe-west1-b";

async fn start() -> FakeGce {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    // Long enough that a test sees PROVISIONING/STAGING and STOPPING on a loaded machine.
    let boot = Duration::from_millis(400);
    let opts = FakeGceOptions {
        zones: vec![ZoneSpec::new(ZA, boot), ZoneSpec::new(ZB, boot)],
        wait_cap: Duration::from_secs(5),
        delete_latency: Duration::from_millis(400),
        ..FakeGceOptions::default()
    };
    FakeGce::start(opts).await.expect("fake gce starts")
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

fn zone_url(fake: &FakeGce, zone: &str) -> String {
    format!(
        "{}/compute/v1/projects/{}/zones/{zone}",
        fake.endpoint(),
        fake.project()
    )
}

fn vm_body(name: &str, zone: &str, labels: Value, metadata: &[(&str, String)]) -> Value {
    let items: Vec<Value> = metadata
        .iter()
        .map(|(k, v)| json!({"key": k, "value": v}))
        .collect();
    json!({
        "name": name,
        "machineType": format!("zones/{zone}/machineTypes/e2-standard-4"),
        "disks": [{"boot": true, "autoDelete": true,
                   "initializeParams": {"sourceImage": "projects/debian-cloud/global/images/family/debian-12", "diskSizeGb": "50"}}],
        "networkInterfaces": [{"network": "global/networks/default",
                               "accessConfigs": [{"name": "External NAT", "type": "ONE_TO_ONE_NAT"}]}],
        "metadata": {"items": items},
        "labels": labels,
        "scheduling": {"provisioningModel": "SPOT", "instanceTerminationAction": "DELETE"},
        "unknownField": {"ignored": true},
    })
}

async fn send(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let resp = req.send().await.expect("request reaches the fake");
    let status = resp.status();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

async fn insert(
    fake: &FakeGce,
    zone: &str,
    body: &Value,
    request_id: Option<&str>,
) -> (StatusCode, Value) {
    let mut url = format!(
        "{}/instances?$alt=json&$apiVersion=2026-09-01",
        zone_url(fake, zone)
    );
    if let Some(r) = request_id {
        url.push_str(&format!("&requestId={r}"));
    }
    send(reqwest::Client::new().post(url).json(body)).await
}

async fn get(fake: &FakeGce, zone: &str, tail: &str) -> (StatusCode, Value) {
    send(reqwest::Client::new().get(format!("{}/{tail}", zone_url(fake, zone)))).await
}

/// Loops on zoneOperations.wait until the operation is DONE (each call may return early).
async fn wait_done(fake: &FakeGce, zone: &str, op: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let url = format!("{}/operations/{op}/wait", zone_url(fake, zone));
        let (status, body) = send(reqwest::Client::new().post(url)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body["status"] == "DONE" {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "operation {op} not DONE: {body}"
        );
    }
}

async fn create_running(
    fake: &FakeGce,
    zone: &str,
    name: &str,
    metadata: &[(&str, String)],
) -> Value {
    let (status, op) = insert(
        fake,
        zone,
        &vm_body(name, zone, json!({"pool": "a"}), metadata),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{op}");
    let done = wait_done(fake, zone, op["name"].as_str().unwrap_or_default()).await;
    assert!(done.get("error").is_none(), "{done}");
    let (status, vm) = get(fake, zone, &format!("instances/{name}")).await;
    assert_eq!(status, StatusCode::OK);
    vm
}

#[tokio::test]
async fn insert_boots_to_running_with_loopback_addresses() {
    let fake = start().await;
    let (status, op) = insert(
        &fake,
        ZA,
        &vm_body("runner-1", ZA, json!({"pool": "a"}), &[]),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{op}");
    let name = op["name"].as_str().unwrap_or_default().to_owned();
    assert!(name.starts_with("operation-"), "{name}");
    assert!(op["id"].is_string() && op["targetId"].is_string(), "{op}");
    assert_eq!(op["operationType"], "insert");
    assert_ne!(op["status"], "DONE");
    let (_, early) = get(&fake, ZA, "instances/runner-1").await;
    assert!(
        early["status"] == "PROVISIONING" || early["status"] == "STAGING",
        "{early}"
    );
    assert!(early["networkInterfaces"][0].get("networkIP").is_none());

    let done = wait_done(&fake, ZA, &name).await;
    assert_eq!(done["progress"], 100);
    let (_, vm) = get(&fake, ZA, "instances/runner-1").await;
    assert_eq!(vm["status"], "RUNNING");
    assert!(vm["id"].is_string());
    assert_eq!(vm["disks"][0]["diskSizeGb"], "50");
    assert_eq!(vm["scheduling"]["instanceTerminationAction"], "DELETE");
    assert_eq!(vm["scheduling"]["automaticRestart"], false);
    let ip = vm["networkInterfaces"][0]["networkIP"]
        .as_str()
        .unwrap_or_default();
    let nat = vm["networkInterfaces"][0]["accessConfigs"][0]["natIP"]
        .as_str()
        .unwrap_or_default();
    for addr in [ip, nat] {
        let parsed: std::net::Ipv4Addr = addr.parse().expect("an IPv4 address");
        assert!(parsed.is_loopback() && parsed.octets()[1] >= 16, "{addr}");
    }
    assert_ne!(ip, nat);
    assert_eq!(fake.count_by_status().get("RUNNING"), Some(&1));
    let counts = fake.call_counts();
    assert_eq!(counts.get("instances.insert"), Some(&1));
    assert!(counts.get("zoneOperations.wait").is_some_and(|n| *n >= 1));
    fake.shutdown().await;
}

#[tokio::test]
async fn request_id_retry_returns_the_same_operation() {
    let fake = start().await;
    let body = vm_body("runner-r", ZA, json!({}), &[]);
    let rid = "5f1c8f0e-3b1a-4a7e-9a59-0d6f3f1f2a11";
    let (s1, op1) = insert(&fake, ZA, &body, Some(rid)).await;
    let (s2, op2) = insert(&fake, ZA, &body, Some(rid)).await;
    assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK));
    assert_eq!(op1["name"], op2["name"]);
    assert_eq!(fake.instances().len(), 1);
    let (s3, err) = insert(
        &fake,
        ZA,
        &body,
        Some("0b7c7d5e-1111-4222-8333-944455556666"),
    )
    .await;
    assert_eq!(s3, StatusCode::CONFLICT);
    assert_eq!(err["error"]["errors"][0]["reason"], "alreadyExists");
    assert_eq!(fake.instances().len(), 1);
    fake.shutdown().await;
}

#[tokio::test]
async fn invalid_requests_are_rejected_like_compute() {
    let fake = start().await;
    let cases = [
        (
            ZA,
            vm_body("Bad_Name", ZA, json!({}), &[]),
            StatusCode::BAD_REQUEST,
        ),
        (
            ZA,
            vm_body("ok", ZA, json!({"Bad": "x"}), &[]),
            StatusCode::BAD_REQUEST,
        ),
        (
            ZA,
            vm_body("ok", ZA, json!({"k": "UPPER"}), &[]),
            StatusCode::BAD_REQUEST,
        ),
        (
            ZA,
            vm_body("ok", ZB, json!({}), &[]),
            StatusCode::BAD_REQUEST,
        ),
        (
            "mars-1-a",
            vm_body("ok", "mars-1-a", json!({}), &[]),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (zone, body, want) in cases {
        let (status, err) = insert(&fake, zone, &body, None).await;
        assert_eq!(status, want, "{body} → {err}");
        assert_eq!(err["error"]["code"], want.as_u16());
        assert_eq!(err["error"]["errors"][0]["reason"], "invalid", "{err}");
        assert!(err["error"].get("status").is_none());
    }
    let url = format!(
        "{}/compute/v1/projects/other/zones/{ZA}/instances",
        fake.endpoint()
    );
    let (status, err) = send(reqwest::Client::new().get(url)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(err["error"]["errors"][0]["reason"], "notFound");
    assert!(fake.instances().is_empty());
    fake.shutdown().await;
}

#[tokio::test]
async fn list_filters_by_label_and_pages() {
    let fake = start().await;
    let labels = |pool: &str| BTreeMap::from([("pool".to_owned(), pool.to_owned())]);
    for i in 0..5 {
        fake.create_foreign_instance(ZA, &format!("a-{i}"), labels("a"))
            .expect("foreign vm");
    }
    for i in 0..2 {
        fake.create_foreign_instance(ZA, &format!("b-{i}"), labels("b"))
            .expect("foreign vm");
    }
    let client = reqwest::Client::new();
    let mut names = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let url = format!("{}/instances", zone_url(&fake, ZA));
        let query = [
            ("filter", "labels.pool = \"a\""),
            ("maxResults", "2"),
            ("pageToken", token.as_str()),
        ];
        let (status, page) = send(client.get(url).query(&query)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        pages += 1;
        for item in page["items"].as_array().into_iter().flatten() {
            names.push(item["name"].as_str().unwrap_or_default().to_owned());
        }
        match page["nextPageToken"].as_str() {
            Some(t) if !t.is_empty() => token = t.to_owned(),
            _ => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names, ["a-0", "a-1", "a-2", "a-3", "a-4"]);

    let url = format!("{}/instances", zone_url(&fake, ZA));
    let (_, both) = send(
        client
            .get(&url)
            .query(&[("filter", "(labels.pool=b) (status=RUNNING)")]),
    )
    .await;
    assert_eq!(both["items"].as_array().map(Vec::len), Some(2));
    let (_, none) = send(client.get(&url).query(&[("filter", "labels.pool=c")])).await;
    assert!(none.get("items").is_none(), "{none}");
    let (status, _) = send(client.get(&url).query(&[("filter", "labels.pool=(")])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    fake.shutdown().await;
}

#[tokio::test]
async fn aggregated_list_reports_unreachable_zones() {
    let fake = start().await;
    fake.create_foreign_instance(ZA, "in-a", BTreeMap::new())
        .expect("vm a");
    fake.create_foreign_instance(ZB, "in-b", BTreeMap::new())
        .expect("vm b");
    let url = format!(
        "{}/compute/v1/projects/{}/aggregated/instances",
        fake.endpoint(),
        fake.project()
    );
    let client = reqwest::Client::new();
    let (_, all) = send(client.get(&url)).await;
    assert!(all["items"][format!("zones/{ZA}")]["instances"][0]["name"] == "in-a");
    assert!(all["items"][format!("zones/{ZB}")]["instances"][0]["name"] == "in-b");
    assert!(all.get("unreachables").is_none());

    fake.inject(GceFault::ZoneUnreachable {
        zone: ZB.to_owned(),
    });
    let (status, partial) = send(client.get(&url).query(&[("returnPartialSuccess", "true")])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(partial["unreachables"], json!([format!("zones/{ZB}")]));
    assert!(
        partial["items"].get(format!("zones/{ZB}")).is_none(),
        "{partial}"
    );
    assert_eq!(
        partial["items"][format!("zones/{ZA}")]["instances"][0]["name"],
        "in-a"
    );
    let (status, _) = send(client.get(&url)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    fake.shutdown().await;
}

#[tokio::test]
async fn list_routes_answer_the_fields_asked_for() {
    let fake = start().await;
    let script = "x".repeat(10_000);
    create_running(&fake, ZA, "vm-fields", &[("startup-script", script)]).await;
    let url = format!(
        "{}/compute/v1/projects/{}/aggregated/instances",
        fake.endpoint(),
        fake.project()
    );
    let client = reqwest::Client::new();
    let mask =
        "nextPageToken,items/*/warning,items/*/instances(name,status,networkInterfaces(networkIP))";
    let (status, page) = send(client.get(&url).query(&[("fields", mask)])).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let vm = &page["items"][format!("zones/{ZA}")]["instances"][0];
    assert_eq!(vm["name"], "vm-fields");
    assert_eq!(vm["status"], "RUNNING");
    assert!(vm["networkInterfaces"][0]["networkIP"].is_string(), "{vm}");
    assert!(vm["networkInterfaces"][0].get("network").is_none(), "{vm}");
    assert!(
        vm.get("metadata").is_none() && page.get("kind").is_none(),
        "{page}"
    );
    // The zonal list too; a mask that does not parse is refused.
    let zonal = format!("{}/instances", zone_url(&fake, ZA));
    let (status, list) = send(client.get(&zonal).query(&[("fields", "items(name)")])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list, json!({"items": [{"name": "vm-fields"}]}));
    let (status, err) = send(client.get(&url).query(&[("fields", "items(name")])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    fake.shutdown().await;
}

#[tokio::test]
async fn delete_stops_then_removes_the_instance() {
    let fake = start().await;
    create_running(&fake, ZA, "runner-d", &[]).await;
    let url = format!("{}/instances/runner-d", zone_url(&fake, ZA));
    let (status, op) = send(reqwest::Client::new().delete(url)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(op["operationType"], "delete");
    let (_, vm) = get(&fake, ZA, "instances/runner-d").await;
    assert_eq!(vm["status"], "STOPPING");
    wait_done(&fake, ZA, op["name"].as_str().unwrap_or_default()).await;
    let (status, err) = get(&fake, ZA, "instances/runner-d").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let msg = format!(
        "The resource 'projects/{}/zones/{ZA}/instances/runner-d' was not found",
        fake.project()
    );
    assert_eq!(err["error"]["message"], msg);
    fake.shutdown().await;
}
