//! Tests of the fake Compute Engine over raw HTTP (reqwest): the insert/wait/get/list/delete
//! lifecycle, request-id idempotency, validation, filters and paging, aggregated lists with an
//! unreachable zone, injected faults in Compute's shapes, preemption, and the per-VM Docker TLS
//! proxy with real certificates and the local Docker engine.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use testkit::gce::{FakeGce, FakeGceOptions, GceFault, ZoneSpec, META_CA, META_CERT, META_KEY, VM_LABEL};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ZA: &str = "us-central1-a";
const ZB: &str = "europe-west1-b";

async fn start() -> FakeGce {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let boot = Duration::from_millis(150);
    let opts = FakeGceOptions {
        zones: vec![ZoneSpec::new(ZA, boot), ZoneSpec::new(ZB, boot)],
        wait_cap: Duration::from_secs(5),
        ..FakeGceOptions::default()
    };
    FakeGce::start(opts).await.expect("fake gce starts")
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

fn zone_url(fake: &FakeGce, zone: &str) -> String {
    format!("{}/compute/v1/projects/{}/zones/{zone}", fake.endpoint(), fake.project())
}

fn vm_body(name: &str, zone: &str, labels: Value, metadata: &[(&str, String)]) -> Value {
    let items: Vec<Value> = metadata.iter().map(|(k, v)| json!({"key": k, "value": v})).collect();
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

async fn insert(fake: &FakeGce, zone: &str, body: &Value, request_id: Option<&str>) -> (StatusCode, Value) {
    let mut url = format!("{}/instances?$alt=json&$apiVersion=2026-09-01", zone_url(fake, zone));
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
        assert!(tokio::time::Instant::now() < deadline, "operation {op} not DONE: {body}");
    }
}

async fn create_running(fake: &FakeGce, zone: &str, name: &str, metadata: &[(&str, String)]) -> Value {
    let (status, op) = insert(fake, zone, &vm_body(name, zone, json!({"pool": "a"}), metadata), None).await;
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
    let (status, op) = insert(&fake, ZA, &vm_body("runner-1", ZA, json!({"pool": "a"}), &[]), None).await;
    assert_eq!(status, StatusCode::OK, "{op}");
    let name = op["name"].as_str().unwrap_or_default().to_owned();
    assert!(name.starts_with("operation-"), "{name}");
    assert!(op["id"].is_string() && op["targetId"].is_string(), "{op}");
    assert_eq!(op["operationType"], "insert");
    assert_ne!(op["status"], "DONE");
    let (_, early) = get(&fake, ZA, "instances/runner-1").await;
    assert!(early["status"] == "PROVISIONING" || early["status"] == "STAGING", "{early}");
    assert!(early["networkInterfaces"][0].get("networkIP").is_none());

    let done = wait_done(&fake, ZA, &name).await;
    assert_eq!(done["progress"], 100);
    let (_, vm) = get(&fake, ZA, "instances/runner-1").await;
    assert_eq!(vm["status"], "RUNNING");
    assert!(vm["id"].is_string());
    assert_eq!(vm["disks"][0]["diskSizeGb"], "50");
    assert_eq!(vm["scheduling"]["instanceTerminationAction"], "DELETE");
    assert_eq!(vm["scheduling"]["automaticRestart"], false);
    let ip = vm["networkInterfaces"][0]["networkIP"].as_str().unwrap_or_default();
    let nat = vm["networkInterfaces"][0]["accessConfigs"][0]["natIP"].as_str().unwrap_or_default();
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
    let (s3, err) = insert(&fake, ZA, &body, Some("0b7c7d5e-1111-4222-8333-944455556666")).await;
    assert_eq!(s3, StatusCode::CONFLICT);
    assert_eq!(err["error"]["errors"][0]["reason"], "alreadyExists");
    assert_eq!(fake.instances().len(), 1);
    fake.shutdown().await;
}

#[tokio::test]
async fn invalid_requests_are_rejected_like_compute() {
    let fake = start().await;
    let cases = [
        (ZA, vm_body("Bad_Name", ZA, json!({}), &[]), StatusCode::BAD_REQUEST),
        (ZA, vm_body("ok", ZA, json!({"Bad": "x"}), &[]), StatusCode::BAD_REQUEST),
        (ZA, vm_body("ok", ZA, json!({"k": "UPPER"}), &[]), StatusCode::BAD_REQUEST),
        (ZA, vm_body("ok", ZB, json!({}), &[]), StatusCode::BAD_REQUEST),
        ("mars-1-a", vm_body("ok", "mars-1-a", json!({}), &[]), StatusCode::BAD_REQUEST),
    ];
    for (zone, body, want) in cases {
        let (status, err) = insert(&fake, zone, &body, None).await;
        assert_eq!(status, want, "{body} → {err}");
        assert_eq!(err["error"]["code"], want.as_u16());
        assert_eq!(err["error"]["errors"][0]["reason"], "invalid", "{err}");
        assert!(err["error"].get("status").is_none());
    }
    let url = format!("{}/compute/v1/projects/other/zones/{ZA}/instances", fake.endpoint());
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
        fake.create_foreign_instance(ZA, &format!("a-{i}"), labels("a")).expect("foreign vm");
    }
    for i in 0..2 {
        fake.create_foreign_instance(ZA, &format!("b-{i}"), labels("b")).expect("foreign vm");
    }
    let client = reqwest::Client::new();
    let mut names = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let url = format!("{}/instances", zone_url(&fake, ZA));
        let query = [("filter", "labels.pool = \"a\""), ("maxResults", "2"), ("pageToken", token.as_str())];
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
    let (_, both) = send(client.get(&url).query(&[("filter", "(labels.pool=b) (status=RUNNING)")])).await;
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
    fake.create_foreign_instance(ZA, "in-a", BTreeMap::new()).expect("vm a");
    fake.create_foreign_instance(ZB, "in-b", BTreeMap::new()).expect("vm b");
    let url = format!("{}/compute/v1/projects/{}/aggregated/instances", fake.endpoint(), fake.project());
    let client = reqwest::Client::new();
    let (_, all) = send(client.get(&url)).await;
    assert!(all["items"][format!("zones/{ZA}")]["instances"][0]["name"] == "in-a");
    assert!(all["items"][format!("zones/{ZB}")]["instances"][0]["name"] == "in-b");
    assert!(all.get("unreachables").is_none());

    fake.inject(GceFault::ZoneUnreachable { zone: ZB.to_owned() });
    let (status, partial) = send(client.get(&url).query(&[("returnPartialSuccess", "true")])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(partial["unreachables"], json!([format!("zones/{ZB}")]));
    assert!(partial["items"].get(format!("zones/{ZB}")).is_none(), "{partial}");
    assert_eq!(partial["items"][format!("zones/{ZA}")]["instances"][0]["name"], "in-a");
    let (status, _) = send(client.get(&url)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
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
    let msg = format!("The resource 'projects/{}/zones/{ZA}/instances/runner-d' was not found", fake.project());
    assert_eq!(err["error"]["message"], msg);
    fake.shutdown().await;
}

#[tokio::test]
async fn capacity_and_quota_errors_arrive_in_the_operation() {
    let fake = start().await;
    fake.inject(GceFault::Stockout { zone: ZA.to_owned(), with_details: true });
    let (status, op) = insert(&fake, ZA, &vm_body("runner-s", ZA, json!({}), &[]), None).await;
    assert_eq!(status, StatusCode::OK);
    let done = wait_done(&fake, ZA, op["name"].as_str().unwrap_or_default()).await;
    assert_eq!(done["error"]["errors"][0]["code"], "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS");
    assert_eq!(done["httpErrorStatusCode"], 503);
    assert!(done["error"]["errors"][0]["errorDetails"].is_array());
    assert_eq!(get(&fake, ZA, "instances/runner-s").await.0, StatusCode::NOT_FOUND);

    fake.inject(GceFault::Clear);
    let quota = GceFault::QuotaExceeded { region: Some("europe-west1".into()), quota: None, limit: 24.0, sync: false };
    fake.inject(quota);
    let (_, op) = insert(&fake, ZB, &vm_body("runner-q", ZB, json!({}), &[]), None).await;
    let done = wait_done(&fake, ZB, op["name"].as_str().unwrap_or_default()).await;
    let e = &done["error"]["errors"][0];
    assert_eq!(e["code"], "QUOTA_EXCEEDED");
    assert_eq!(e["message"], "Quota 'CPUS' exceeded.  Limit: 24.0 in region europe-west1.");
    assert_eq!(e["errorDetails"][0]["quotaInfo"]["dimensions"], json!({"region": "europe-west1"}));
    assert_eq!(e["errorDetails"][0]["quotaInfo"]["limitName"], "CPUS-per-project-region");
    assert_eq!(done["httpErrorStatusCode"], 403);
    // Another region is not affected.
    create_running(&fake, ZA, "runner-ok", &[]).await;

    let sync = GceFault::QuotaExceeded { region: None, quota: None, limit: 32.0, sync: true };
    fake.inject(sync);
    let (status, err) = insert(&fake, ZA, &vm_body("runner-g", ZA, json!({}), &[]), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(err["error"]["errors"][0]["reason"], "quotaExceeded");
    assert_eq!(err["error"]["details"][1]["quotaInfo"]["dimensions"], json!({}));
    fake.shutdown().await;
}

#[tokio::test]
async fn rate_limits_and_outages_are_synchronous() {
    let fake = start().await;
    let admin = format!("{}/admin/faults", fake.endpoint());
    let (status, _) = send(reqwest::Client::new().post(&admin).json(&json!({"kind": "rate_limit_next", "calls": 1}))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, err) = get(&fake, ZA, "instances").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(err["error"]["errors"][0]["reason"], "rateLimitExceeded");
    assert_eq!(err["error"]["errors"][0]["domain"], "usageLimits");
    assert!(err["error"].get("status").is_none());

    fake.inject(GceFault::RateLimitNext { calls: 1, resource_exhausted: true });
    let (status, err) = get(&fake, ZA, "instances").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(err["error"]["status"], "RESOURCE_EXHAUSTED");
    assert_eq!(err["error"]["details"][0]["reason"], "RATE_LIMIT_EXCEEDED");

    fake.inject(GceFault::UnavailableNext { calls: 1 });
    assert_eq!(get(&fake, ZA, "instances").await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(get(&fake, ZA, "instances").await.0, StatusCode::OK);
    let statuses: Vec<u16> = fake.calls().iter().map(|c| c.status).collect();
    assert_eq!(statuses, [403, 429, 503, 200]);
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
        fake.try_inject(GceFault::Preempt { zone: ZA.into(), name: name.into() }).expect("preempt");
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
        assert!(op["name"].as_str().is_some_and(|n| n.starts_with("systemevent-")));
        assert_eq!(op["user"], "system");
        assert_eq!(op["status"], "DONE");
    }
    assert_eq!(get(&fake, ZA, "instances/spot-del").await.0, StatusCode::NOT_FOUND);
    fake.shutdown().await;
}

#[tokio::test]
async fn hanging_boot_and_vanishing_instances() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let opts = FakeGceOptions { wait_cap: Duration::from_millis(300), ..FakeGceOptions::default() };
    let fake = FakeGce::start(opts).await.expect("fake gce starts");
    fake.inject(GceFault::NeverRunning { zone: ZA.into() });
    let (_, op) = insert(&fake, ZA, &vm_body("stuck", ZA, json!({}), &[]), None).await;
    let op_name = op["name"].as_str().unwrap_or_default().to_owned();
    let url = format!("{}/operations/{op_name}/wait", zone_url(&fake, ZA));
    let (status, early) = send(reqwest::Client::new().post(&url)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(early["status"], "RUNNING", "wait returns at its cap, not DONE");
    assert!(fake.wait_until(Duration::from_secs(5), |v| v[0].status == "STAGING").await);

    let (_, del) = send(reqwest::Client::new().delete(format!("{}/instances/stuck", zone_url(&fake, ZA)))).await;
    wait_done(&fake, ZA, del["name"].as_str().unwrap_or_default()).await;
    let insert_op = wait_done(&fake, ZA, &op_name).await;
    assert_eq!(insert_op["httpErrorStatusCode"], 409);

    fake.create_foreign_instance(ZA, "leftover", BTreeMap::new()).expect("foreign vm");
    fake.try_inject(GceFault::Vanish { zone: ZA.into(), name: "leftover".into() }).expect("vanish");
    assert_eq!(get(&fake, ZA, "instances/leftover").await.0, StatusCode::NOT_FOUND);
    let unknown = fake.try_inject(GceFault::Vanish { zone: ZA.into(), name: "leftover".into() });
    assert!(unknown.is_err());
    fake.shutdown().await;
}

/// A CA, a server certificate for `vm` signed by it, and a client certificate; PEM strings.
struct Pki {
    ca: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

fn pki(vm: &str, tag: &str) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
    let named = |sans: Vec<String>, cn: String| {
        let mut p = CertificateParams::new(sans).expect("params");
        p.distinguished_name.push(DnType::CommonName, cn);
        p
    };
    let mut ca_params = named(vec![], format!("flotilla test ca {tag}"));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
    let server_key = KeyPair::generate().expect("key");
    let mut sp = named(vec![vm.to_owned()], format!("{vm} docker"));
    sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server = sp.signed_by(&server_key, &ca).expect("server cert");
    let client_key = KeyPair::generate().expect("key");
    let mut cp = named(vec![], format!("flotilla manager {tag}"));
    cp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client = cp.signed_by(&client_key, &ca).expect("client cert");
    Pki {
        ca: ca.pem(),
        server_cert: server.pem(),
        server_key: server_key.serialize_pem(),
        client_cert: client.pem(),
        client_key: client_key.serialize_pem(),
    }
}

/// Connects with `client` credentials (trusting `trust`'s CA), sends GET /_ping, returns the reply
/// or the error text.
async fn ping(addr: &str, vm: &str, trust: &Pki, client: Option<&Pki>) -> Result<String, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    let ca = CertificateDer::from_pem_slice(trust.ca.as_bytes()).map_err(|e| e.to_string())?;
    roots.add(ca).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match client {
        Some(c) => {
            let cert = CertificateDer::from_pem_slice(c.client_cert.as_bytes()).map_err(|e| e.to_string())?;
            let key = PrivateKeyDer::from_pem_slice(c.client_key.as_bytes()).map_err(|e| e.to_string())?;
            builder.with_client_auth_cert(vec![cert], key).map_err(|e| e.to_string())?
        }
        None => builder.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from(vm.to_owned()).map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let io = async {
        let mut tls = connector.connect(name, tcp).await?;
        tls.write_all(b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n").await?;
        let mut out = String::new();
        tls.read_to_string(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    tokio::time::timeout(Duration::from_secs(10), io)
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())
}

fn docker(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("docker").args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[tokio::test]
async fn docker_tls_proxy_requires_the_client_certificate() {
    if !std::path::Path::new("/var/run/docker.sock").exists() {
        println!("note: no /var/run/docker.sock; the docker proxy test is skipped");
        return;
    }
    let fake = start().await;
    let vm = unique("runner-tls");
    let good = pki(&vm, "good");
    let meta = [
        (META_CA, good.ca.clone()),
        (META_CERT, good.server_cert.clone()),
        (META_KEY, good.server_key.clone()),
    ];
    let view = create_running(&fake, ZA, &vm, &meta).await;
    let nic = &view["networkInterfaces"][0];
    let port = FakeGceOptions::default().docker_port;
    for ip in [&nic["networkIP"], &nic["accessConfigs"][0]["natIP"]] {
        let addr = format!("{}:{port}", ip.as_str().unwrap_or_default());
        let reply = ping(&addr, &vm, &good, Some(&good)).await.expect("ping through the proxy");
        assert!(reply.starts_with("HTTP/1.1 200") && reply.ends_with("OK"), "{reply}");
    }
    let addr = format!("{}:{port}", nic["networkIP"].as_str().unwrap_or_default());
    let other = pki(&vm, "other");
    let refused = ping(&addr, &vm, &good, Some(&other)).await;
    assert!(refused.is_err(), "a client cert from another CA must be refused: {refused:?}");
    let anonymous = ping(&addr, &vm, &good, None).await;
    assert!(anonymous.is_err(), "a client without a cert must be refused: {anonymous:?}");

    // Deleting the VM kills its containers and closes its proxy.
    let image = "flotilla-test/busybox:latest";
    let container = match docker(&["image", "inspect", image]) {
        Some(_) => docker(&["run", "-d", "--label", &format!("{VM_LABEL}={vm}"), image, "sleep", "300"]),
        None => {
            println!("note: image {image} not found (scripts/build-test-images.sh builds it); container kill not checked");
            None
        }
    };
    let (_, op) = send(reqwest::Client::new().delete(format!("{}/instances/{vm}", zone_url(&fake, ZA)))).await;
    wait_done(&fake, ZA, op["name"].as_str().unwrap_or_default()).await;
    if let Some(id) = container {
        let left = docker(&["ps", "-aq", "--filter", &format!("label={VM_LABEL}={vm}")]);
        assert_eq!(left.as_deref(), Some(""), "container {id} must be gone");
    }
    assert!(ping(&addr, &vm, &good, Some(&good)).await.is_err(), "proxy closed after delete");
    fake.shutdown().await;
}
