//! The VM startup script (`scripts/vm-startup.sh`) run with bash against a fake metadata server
//! (axum on 127.0.0.1, answering 403 without `Metadata-Flavor: Google` as the real one does) in
//! a scratch root, in dry-run mode: the TLS files and their modes, daemon.json, the systemd
//! drop-in, the logged system commands (Docker install, firewall, the DOCKER-USER metadata block),
//! idempotence across runs, failure without TLS material, and shellcheck cleanliness; and, with
//! stub `iptables`/`systemctl`/`docker` commands on PATH recording their calls, the order of the
//! steps: the metadata block before dockerd starts, the readiness marker last, and a failing
//! iptables ends the script with dockerd never started and no marker.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::Router;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/vm-startup.sh");
/// A stand-in PEM block, built at run time so that no PEM armour is a literal in the tree:
/// `label` around `body` as its only line.
fn pem(label: &str, body: &str) -> String {
    let dashes = "-".repeat(5);
    format!("{dashes}BEGIN {label}{dashes}\n{body}\n{dashes}END {label}{dashes}")
}

static CA: LazyLock<String> = LazyLock::new(|| pem("CERTIFICATE", "CA-PEM"));
static CERT: LazyLock<String> = LazyLock::new(|| pem("CERTIFICATE", "SERVER-PEM"));
/// A stand-in, not a key.
static KEY: LazyLock<String> = LazyLock::new(|| pem("PRIVATE KEY", "SECRET-KEY-MATERIAL"));
const BLOCK_METADATA: &str = "iptables -w -I DOCKER-USER -d 169.254.169.254 -j DROP";

/// A fake metadata server's state: the attributes, and how many requests lacked the header.
struct Metadata {
    attributes: HashMap<String, String>,
    without_header: AtomicUsize,
}

async fn attribute(
    State(meta): State<Arc<Metadata>>,
    UrlPath(key): UrlPath<String>,
    headers: HeaderMap,
) -> (StatusCode, String) {
    if headers.get("metadata-flavor").and_then(|v| v.to_str().ok()) != Some("Google") {
        meta.without_header.fetch_add(1, Ordering::SeqCst);
        return (
            StatusCode::FORBIDDEN,
            "Missing Metadata-Flavor:Google header.".into(),
        );
    }
    match meta.attributes.get(&key) {
        Some(v) => (StatusCode::OK, v.clone()),
        None => (StatusCode::NOT_FOUND, "not found".into()),
    }
}

/// Serves `attributes`; the attributes base URL and the shared state.
async fn metadata_server(attributes: &[(&str, &str)]) -> (String, Arc<Metadata>) {
    let meta = Arc::new(Metadata {
        attributes: attributes
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        without_header: AtomicUsize::new(0),
    });
    let app = Router::new()
        .route(
            "/computeMetadata/v1/instance/attributes/{key}",
            get(attribute),
        )
        .with_state(meta.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind the fake metadata server");
    let addr = listener.local_addr().expect("its address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (
        format!("http://{addr}/computeMetadata/v1/instance/attributes"),
        meta,
    )
}

fn tls_attributes() -> Vec<(&'static str, &'static str)> {
    vec![
        ("flotilla-docker-ca", CA.as_str()),
        ("flotilla-docker-cert", CERT.as_str()),
        ("flotilla-docker-key", KEY.as_str()),
    ]
}

/// A scratch root with an os-release of `os_id`.
fn scratch_root(os_id: &str) -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("a scratch root");
    write(
        root.path(),
        "etc/os-release",
        &format!("NAME=test\nID={os_id}\n"),
    );
    root
}

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    std::fs::write(&path, text).expect("write");
}

fn read(root: &Path, rel: &str) -> String {
    std::fs::read_to_string(root.join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

fn mode(root: &Path, rel: &str) -> u32 {
    std::fs::metadata(root.join(rel))
        .unwrap_or_else(|e| panic!("stat {rel}: {e}"))
        .permissions()
        .mode()
        & 0o777
}

/// Runs the script in dry-run mode; (success, stderr).
async fn run(root: &Path, url: &str) -> (bool, String) {
    let out = tokio::process::Command::new("bash")
        .arg(SCRIPT)
        .env("FLOTILLA_METADATA_URL", url)
        .env("FLOTILLA_ROOT", root)
        .env("FLOTILLA_DRY_RUN", "1")
        .output()
        .await
        .expect("bash runs the startup script");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn commands(root: &Path) -> Vec<String> {
    std::fs::read_to_string(root.join("var/log/flotilla-startup-dry-run.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn count(commands: &[String], line: &str) -> usize {
    commands.iter().filter(|c| *c == line).count()
}

#[tokio::test]
async fn cos_gets_tls_files_dockerd_config_firewall_and_metadata_block_once() {
    let mut attrs = tls_attributes();
    attrs.push(("flotilla-docker-port", "2377\n"));
    let root = scratch_root("cos");
    let r = root.path();
    write(r, "usr/bin/dockerd", "#!/bin/sh\n");
    std::fs::set_permissions(r.join("usr/bin/dockerd"), PermissionsExt::from_mode(0o755))
        .expect("chmod dockerd");
    write(
        r,
        "usr/lib/systemd/system/docker.service",
        "[Service]\nExecStart=/usr/bin/dockerd --registry-mirror=https://mirror.gcr.io \\\n  --host=fd:// --containerd=/var/run/containerd/containerd.sock\n",
    );

    attrs.push(("flotilla-ready-volume", "flotilla-ready-vm1"));
    let (url, meta) = metadata_server(&attrs).await;
    for round in 1..=2 {
        let (ok, stderr) = run(r, &url).await;
        assert!(ok, "run {round} failed:\n{stderr}");
        assert!(!stderr.contains("SECRET-KEY-MATERIAL"), "{stderr}");
    }
    assert_eq!(meta.without_header.load(Ordering::SeqCst), 0);

    let tls = "etc/docker/flotilla";
    assert_eq!(read(r, &format!("{tls}/ca.pem")).trim_end(), *CA);
    assert_eq!(read(r, &format!("{tls}/cert.pem")).trim_end(), *CERT);
    assert_eq!(read(r, &format!("{tls}/key.pem")).trim_end(), *KEY);
    assert_eq!(mode(r, &format!("{tls}/key.pem")), 0o600);
    assert_eq!(mode(r, &format!("{tls}/cert.pem")), 0o644);
    assert_eq!(mode(r, tls), 0o700);
    let leftovers: Vec<_> = std::fs::read_dir(r.join(tls))
        .expect("list the tls dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let daemon: serde_json::Value =
        serde_json::from_str(&read(r, "etc/docker/daemon.json")).expect("daemon.json is JSON");
    assert_eq!(
        daemon["hosts"],
        serde_json::json!(["unix:///var/run/docker.sock", "tcp://0.0.0.0:2377"])
    );
    assert_eq!(daemon["tlsverify"], true);
    assert_eq!(daemon["tlscacert"], "/etc/docker/flotilla/ca.pem");
    assert_eq!(daemon["tlscert"], "/etc/docker/flotilla/cert.pem");
    assert_eq!(daemon["tlskey"], "/etc/docker/flotilla/key.pem");

    let drop_in = read(r, "etc/systemd/system/docker.service.d/flotilla.conf");
    assert!(drop_in.contains("[Service]\nExecStart=\nExecStart=/usr/bin/dockerd --registry-mirror=https://mirror.gcr.io --containerd=/var/run/containerd/containerd.sock\n"), "{drop_in}");
    assert!(!drop_in.contains("fd://"), "{drop_in}");

    let cmds = commands(r);
    assert_eq!(count(&cmds, BLOCK_METADATA), 1, "{cmds:#?}");
    assert_eq!(
        count(&cmds, "iptables -w -A INPUT -p tcp --dport 2377 -j ACCEPT"),
        1,
        "{cmds:#?}"
    );
    assert_eq!(
        count(&cmds, "systemctl restart docker.service"),
        2,
        "{cmds:#?}"
    );
    assert!(!cmds.iter().any(|c| c.contains("apt-get")), "{cmds:#?}");
    let restart = cmds
        .iter()
        .position(|c| c == "systemctl restart docker.service")
        .expect("a restart");
    let block = cmds
        .iter()
        .position(|c| c == BLOCK_METADATA)
        .expect("the block");
    assert!(
        block < restart,
        "the block precedes dockerd's restart: {cmds:#?}"
    );
    assert_eq!(
        cmds.last().map(String::as_str),
        Some("docker volume create --label com.flotilla.ready=true flotilla-ready-vm1"),
        "the readiness marker is the last step: {cmds:#?}"
    );
}

/// Makes `dir/<name>` an executable stub that appends `<name> <args>` to `dir/calls.log` and
/// exits with `$STUB_<NAME>_EXIT` (default 0); `iptables -C` (does a rule exist?) answers no.
fn stub(dir: &Path, name: &str) {
    let var = format!("STUB_{}_EXIT", name.to_uppercase());
    let absent = if name == "iptables" {
        "case \" $* \" in *\" -C \"*) exit 1 ;; esac\n"
    } else {
        ""
    };
    let text = format!(
        "#!/bin/sh\necho \"{name} $*\" >> \"{log}\"\n{absent}exit \"${{{var}:-0}}\"\n",
        log = dir.join("calls.log").display()
    );
    std::fs::write(dir.join(name), text).expect("write a stub");
    std::fs::set_permissions(dir.join(name), PermissionsExt::from_mode(0o755))
        .expect("chmod a stub");
}

/// Runs the script for real (no dry run) with stub system commands first on PATH; (success,
/// stderr, the stubs' calls in order).
async fn run_with_stubs(iptables_exit: i32) -> (bool, String, Vec<String>) {
    let mut attrs = tls_attributes();
    attrs.push(("flotilla-ready-volume", "flotilla-ready-vm2"));
    let (url, _meta) = metadata_server(&attrs).await;
    let root = scratch_root("debian");
    write(root.path(), "usr/bin/dockerd", "#!/bin/sh\n");
    std::fs::set_permissions(
        root.path().join("usr/bin/dockerd"),
        PermissionsExt::from_mode(0o755),
    )
    .expect("chmod dockerd");
    let stubs = tempfile::tempdir().expect("a stub dir");
    for name in ["iptables", "systemctl", "docker", "apt-get"] {
        stub(stubs.path(), name);
    }
    let path = format!(
        "{}:{}",
        stubs.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = tokio::process::Command::new("bash")
        .arg(SCRIPT)
        .env("PATH", path)
        .env("FLOTILLA_METADATA_URL", &url)
        .env("FLOTILLA_ROOT", root.path())
        .env("FLOTILLA_DRY_RUN", "0")
        .env("STUB_IPTABLES_EXIT", iptables_exit.to_string())
        .output()
        .await
        .expect("bash runs the startup script");
    let calls = std::fs::read_to_string(stubs.path().join("calls.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        calls,
    )
}

#[tokio::test]
async fn the_metadata_block_precedes_dockerd_and_the_marker_comes_last() {
    let (ok, stderr, calls) = run_with_stubs(0).await;
    assert!(ok, "{stderr}");
    let first_systemctl = calls
        .iter()
        .position(|c| c.starts_with("systemctl"))
        .expect("systemctl is called");
    let block = calls
        .iter()
        .position(|c| c.starts_with("iptables -w -I DOCKER-USER -d 169.254.169.254 -j DROP"))
        .expect("the block is installed");
    assert!(block < first_systemctl, "{calls:#?}");
    assert!(
        calls
            .iter()
            .any(|c| c == "systemctl restart docker.service"),
        "{calls:#?}"
    );
    assert_eq!(
        calls.last().map(String::as_str),
        Some("docker volume create --label com.flotilla.ready=true flotilla-ready-vm2"),
        "{calls:#?}"
    );
}

#[tokio::test]
async fn a_failing_iptables_stops_the_bootstrap_before_dockerd() {
    let (ok, stderr, calls) = run_with_stubs(1).await;
    assert!(!ok, "the script must fail:\n{stderr}");
    assert!(
        calls.iter().any(|c| c.starts_with("iptables")),
        "{calls:#?}"
    );
    assert!(
        !calls.iter().any(|c| c.starts_with("systemctl")
            || c.starts_with("docker")
            || c.starts_with("apt-get")),
        "nothing may start dockerd or set the marker: {calls:#?}"
    );
}

#[tokio::test]
async fn debian_without_docker_installs_it_and_uses_the_default_port() {
    let (url, _meta) = metadata_server(&tls_attributes()).await;
    let root = scratch_root("debian");
    let r = root.path();
    let (ok, stderr) = run(r, &url).await;
    assert!(ok, "{stderr}");
    let cmds = commands(r);
    assert!(
        cmds.iter()
            .any(|c| c.ends_with("apt-get -o DPkg::Lock::Timeout=300 install -y docker.io")),
        "{cmds:#?}"
    );
    assert!(!cmds.iter().any(|c| c.contains("INPUT")), "{cmds:#?}");
    assert_eq!(count(&cmds, BLOCK_METADATA), 1, "{cmds:#?}");
    let daemon: serde_json::Value =
        serde_json::from_str(&read(r, "etc/docker/daemon.json")).expect("daemon.json is JSON");
    assert_eq!(daemon["hosts"][1], "tcp://0.0.0.0:2376");
    let drop_in = read(r, "etc/systemd/system/docker.service.d/flotilla.conf");
    assert!(
        drop_in.ends_with("ExecStart=\nExecStart=/usr/bin/dockerd\n"),
        "{drop_in}"
    );
}

#[tokio::test]
async fn missing_tls_material_fails_before_touching_the_system() {
    let attrs: Vec<_> = tls_attributes()
        .into_iter()
        .filter(|(k, _)| *k != "flotilla-docker-key")
        .collect();
    let (url, _meta) = metadata_server(&attrs).await;
    let root = scratch_root("cos");
    let (ok, stderr) = run(root.path(), &url).await;
    assert!(!ok, "must fail without the key:\n{stderr}");
    assert!(stderr.contains("flotilla-docker-key"), "{stderr}");
    assert!(commands(root.path()).is_empty());
    assert!(!root.path().join("etc/docker/daemon.json").exists());
}

#[tokio::test]
async fn a_bad_port_is_refused() {
    let mut attrs = tls_attributes();
    attrs.push(("flotilla-docker-port", "23x"));
    let (url, _meta) = metadata_server(&attrs).await;
    let root = scratch_root("cos");
    let (ok, stderr) = run(root.path(), &url).await;
    assert!(!ok && stderr.contains("not a port"), "{stderr}");
}

#[test]
fn the_script_is_shellcheck_clean() {
    match std::process::Command::new("shellcheck")
        .arg(SCRIPT)
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "shellcheck:\n{}",
            String::from_utf8_lossy(&out.stdout)
        ),
        Err(e) => panic!("shellcheck is needed (scripts/prepare.sh installs it): {e}"),
    }
}
