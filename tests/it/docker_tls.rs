//! A VM's dockerd over mutual TLS, end to end: a fake GCE instance is inserted over raw HTTP with
//! the server material of a [`DockerCa`] in its metadata; once RUNNING, its TLS proxy (standing in
//! for dockerd with `--tlsverify`) is reached by address and verified by VM name. Ping, version
//! negotiation and a container's create/attach (both directions)/start/wait go through it; a VM
//! refuses a client certificate of another CA, the client refuses a VM certificate of another CA,
//! and a wrong VM name fails verification.

use std::net::SocketAddr;
use std::time::Duration;

use bollard::container::{AttachContainerResults, LogOutput};
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder,
    StartContainerOptions, WaitContainerOptionsBuilder,
};
use bollard::Docker;
use flotilla::docker::{DockerCa, TlsError, VmTlsMaterial};
use futures_util::StreamExt;
use serde_json::json;
use testkit::gce::{FakeGce, FakeGceOptions, ZoneSpec, VM_LABEL};
use tokio::io::AsyncWriteExt;

use super::support::{ensure_test_images, BUSYBOX};

const ZONE: &str = "us-central1-a";

async fn start_fake() -> FakeGce {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let opts = FakeGceOptions {
        zones: vec![ZoneSpec::new(ZONE, Duration::from_millis(50))],
        wait_cap: Duration::from_secs(2),
        ..FakeGceOptions::default()
    };
    FakeGce::start(opts).await.expect("the fake gce starts")
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

/// Inserts VM `name` carrying `ca`'s server material, waits until it is RUNNING with an
/// address, and returns its Docker endpoint (networkIP:docker_port).
async fn boot_vm(fake: &FakeGce, ca: &DockerCa, name: &str) -> SocketAddr {
    let material = ca.server_material(name).expect("server material");
    boot_vm_with(fake, name, &material).await
}

/// Inserts VM `name` with `material` in its metadata; its Docker endpoint once RUNNING.
async fn boot_vm_with(fake: &FakeGce, name: &str, material: &VmTlsMaterial) -> SocketAddr {
    let items: Vec<_> = material
        .metadata_items()
        .iter()
        .map(|(k, v)| json!({"key": k, "value": v}))
        .collect();
    let body = json!({
        "name": name,
        "machineType": format!("zones/{ZONE}/machineTypes/e2-small"),
        "disks": [{"boot": true, "autoDelete": true, "initializeParams": {
            "sourceImage": "projects/debian-cloud/global/images/family/debian-12"}}],
        "networkInterfaces": [{"network": "global/networks/default"}],
        "metadata": {"items": items},
    });
    let url = format!(
        "{}/compute/v1/projects/{}/zones/{ZONE}/instances",
        fake.endpoint(),
        fake.project()
    );
    let resp = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("insert reaches the fake");
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    assert!(status.is_success(), "insert answered {status}: {text}");
    let running = fake
        .wait_until(Duration::from_secs(20), |vms| {
            vms.iter()
                .any(|v| v.name == name && v.status == "RUNNING" && v.network_ip.is_some())
        })
        .await;
    assert!(
        running,
        "{name} did not become RUNNING: {:?}",
        fake.instances()
    );
    let ip = fake
        .instances()
        .into_iter()
        .find(|v| v.name == name)
        .and_then(|v| v.network_ip)
        .expect("a RUNNING instance has a networkIP");
    SocketAddr::from((ip, FakeGceOptions::default().docker_port))
}

/// Runs a busybox container that reads a line from stdin and echoes it with a marker, through
/// attach; returns (output, exit code).
async fn run_echo(docker: &Docker, vm: &str, line: &str) -> (String, i64) {
    let name = unique("flotilla-tls-echo");
    let body = ContainerCreateBody {
        image: Some(BUSYBOX.to_owned()),
        cmd: Some(vec![
            "sh".into(),
            "-c".into(),
            "read l; echo \"marker:$l\"; echo oops >&2; exit 3".into(),
        ]),
        open_stdin: Some(true),
        stdin_once: Some(true),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        labels: Some([(VM_LABEL.to_owned(), vm.to_owned())].into()),
        ..Default::default()
    };
    let options = CreateContainerOptionsBuilder::new().name(&name).build();
    let id = docker
        .create_container(Some(options), body)
        .await
        .expect("create through the VM's dockerd")
        .id;
    let attach = AttachContainerOptionsBuilder::new()
        .stdin(true)
        .stdout(true)
        .stderr(true)
        .stream(true)
        .build();
    let AttachContainerResults {
        mut output,
        mut input,
    } = docker
        .attach_container(&id, Some(attach))
        .await
        .expect("attach (an HTTP upgrade) through TLS");
    docker
        .start_container(&id, None::<StartContainerOptions>)
        .await
        .expect("start");
    input
        .write_all(format!("{line}\n").as_bytes())
        .await
        .expect("write stdin");
    input.flush().await.expect("flush stdin");
    let mut out = String::new();
    let read = async {
        while let Some(item) = output.next().await {
            match item.expect("attach stream") {
                LogOutput::StdOut { message } | LogOutput::Console { message } => {
                    out.push_str(&String::from_utf8_lossy(&message))
                }
                LogOutput::StdErr { message } => {
                    out.push_str(&format!("[err]{}", String::from_utf8_lossy(&message)))
                }
                LogOutput::StdIn { .. } => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the attach stream ends when the container exits");
    let options = WaitContainerOptionsBuilder::new()
        .condition("not-running")
        .build();
    let code = match docker.wait_container(&id, Some(options)).next().await {
        Some(Ok(done)) => done.status_code,
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
        other => panic!("wait failed: {other:?}"),
    };
    let rm = RemoveContainerOptionsBuilder::new().force(true).build();
    docker
        .remove_container(&id, Some(rm))
        .await
        .expect("remove the container");
    (out, code)
}

#[tokio::test]
async fn a_vm_dockerd_is_reached_by_name_over_mtls_and_runs_a_container() {
    ensure_test_images();
    let fake = start_fake().await;
    let ca = DockerCa::new().expect("a CA");
    let vm = unique("runner-tls");
    let addr = boot_vm(&fake, &ca, &vm).await;

    let docker = ca.connect(&vm, addr).await.expect("connect over mTLS");
    docker.ping().await.expect("ping through the VM's dockerd");
    let server = docker.version().await.expect("version");
    let api = server
        .api_version
        .expect("the engine reports its API version");
    let client = docker.client_version();
    assert_eq!(
        format!("{}.{}", client.major_version, client.minor_version),
        api,
        "the API version is negotiated down to the engine's"
    );

    let (out, code) = run_echo(&docker, &vm, "hello-over-tls").await;
    assert!(out.contains("marker:hello-over-tls"), "output: {out:?}");
    assert!(
        out.contains("[err]oops"),
        "stderr is demultiplexed: {out:?}"
    );
    assert_eq!(code, 3, "the container's exit code comes back through wait");

    // A second client of the same CA shares nothing with the first yet works the same.
    let again = ca.connect(&vm, addr).await.expect("a second connection");
    again.ping().await.expect("second ping");
    fake.shutdown().await;
}

#[tokio::test]
async fn another_ca_is_refused_and_a_wrong_name_fails_verification() {
    let fake = start_fake().await;
    let ca = DockerCa::new().expect("a CA");
    let vm = unique("runner-tls");
    let addr = boot_vm(&fake, &ca, &vm).await;

    // Another manager's CA: it does not trust the VM's certificate, nor the VM its client cert.
    let stranger = DockerCa::new().expect("another CA");
    let err = stranger.connect(&vm, addr).await.unwrap_err();
    assert!(matches!(err, TlsError::Connect { .. }), "{err}");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");

    // The same CA but the VM's address under another VM's name: the certificate names `vm`.
    let other_name = format!("{vm}-other");
    let err = ca.connect(&other_name, addr).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("not valid for name"), "{text}");
    assert!(
        text.contains(&other_name) && text.contains(&addr.to_string()),
        "{text}"
    );

    // The right CA and name still work after the failures.
    let docker = ca.connect(&vm, addr).await.expect("connect");
    docker.ping().await.expect("ping");
    fake.shutdown().await;
}

#[tokio::test]
async fn a_vm_trusting_another_ca_refuses_our_client_certificate() {
    let fake = start_fake().await;
    let ca = DockerCa::new().expect("a CA");
    let stranger = DockerCa::new().expect("another CA");
    let vm = unique("runner-tls");
    // The VM proves itself with our CA's certificate but trusts only the stranger's clients.
    let material = VmTlsMaterial {
        ca_pem: stranger.ca_pem().to_owned(),
        ..ca.server_material(&vm).expect("server material")
    };
    let addr = boot_vm_with(&fake, &vm, &material).await;
    let err = ca.connect(&vm, addr).await.unwrap_err();
    assert!(matches!(err, TlsError::Connect { .. }), "{err}");
    // The server was trusted; the VM refused the client with a TLS alert.
    assert!(err.to_string().contains("UnknownCA"), "{err}");
    // The stranger's client passes the VM's check of clients but not ours of the server.
    let err = stranger.connect(&vm, addr).await.unwrap_err();
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    fake.shutdown().await;
}
