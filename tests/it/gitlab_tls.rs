//! TLS toward GitLab (issue 15 item 7): the fake GitLab behind a TLS front with a private CA
//! made per test (rcgen). Without `tls-ca-file` the coordinator client fails with a TLS error
//! that names the certificate problem; with it jobs run, and the helper's git clones over
//! HTTPS trusting the same CA (`CI_SERVER_TLS_CA_FILE` + `http.<host>.sslCAInfo`). With a
//! client certificate required, `tls-cert-file`/`tls-key-file` are presented (and without
//! them the handshake fails).

use crate::harness::*;
use flotilla::config::{Secret, TlsFiles};
use flotilla::coordinator::{ClientSettings, Coordinator, JobCredentials, RunnerEndpoint};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use serde_json::json;
use std::path::{Path, PathBuf};
use testkit::{FakeGitlab, FakeGitlabOptions, JobState, TlsFront};

/// A CA and a leaf it signed, as PEM.
struct Pki {
    ca: String,
    cert: String,
    key: String,
}

fn pki(cn: &str, sans: Vec<String>, usage: ExtendedKeyUsagePurpose) -> Pki {
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.distinguished_name
        .push(DnType::CommonName, format!("{cn} test CA"));
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let issuer = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("key")).expect("ca");
    let key = KeyPair::generate().expect("key");
    let mut leaf = CertificateParams::new(sans).expect("leaf params");
    leaf.distinguished_name.push(DnType::CommonName, cn);
    leaf.extended_key_usages = vec![usage];
    let cert = leaf.signed_by(&key, &issuer).expect("leaf");
    Pki {
        ca: issuer.pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

fn server_pki() -> Pki {
    pki(
        "gitlab",
        vec!["127.0.0.1".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write PEM");
    path
}

/// Every message of an error's source chain, joined.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn endpoint(url: &str, token: &str, tls: TlsFiles) -> RunnerEndpoint {
    RunnerEndpoint {
        url: url.to_string(),
        token: Secret(token.to_string()),
        system_id: "s_0000000000aa".into(),
        short_token: flotilla::config::short_token(token),
        tls,
    }
}

/// An acknowledgement of a job that does not exist: any HTTP answer proves the TLS session.
async fn ack(coordinator: &Coordinator, endpoint: &RunnerEndpoint) -> Result<(), String> {
    let job = JobCredentials {
        id: 999_999,
        token: format!("glcbt-{}", "x".repeat(20)),
    };
    coordinator
        .acknowledge(endpoint, &job)
        .await
        .map(|_| ())
        .map_err(|e| chain(&e))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_ca_is_refused_without_tls_ca_file_and_trusted_with_it_for_jobs_and_git() {
    ensure_test_image();
    init_crypto();
    let image = helper_image().await;
    let server = server_pki();
    let front = TlsFront::start_deferred(&server.cert, &server.key, None)
        .await
        .expect("tls front");
    let (gitlab, repos) = FakeGitlab::start_with_git(FakeGitlabOptions {
        advertised_url: Some(front.url()),
        ..FakeGitlabOptions::default()
    })
    .await
    .expect("fake gitlab");
    front.set_backend(&gitlab.url()).expect("backend");
    let token = runner_token();
    gitlab.add_runner(&token);
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = write(dir.path(), "gitlab-ca.crt", &server.ca);

    // Without the CA: a TLS error that says what is wrong with the certificate.
    let coordinator = Coordinator::new(ClientSettings::default()).expect("client");
    let refused = ack(
        &coordinator,
        &endpoint(&front.url(), &token, TlsFiles::default()),
    )
    .await
    .expect_err("an untrusted server certificate must fail");
    assert!(
        refused.to_lowercase().contains("certificate"),
        "the error names the certificate problem: {refused}"
    );
    eventually("the front saw the refused handshake", DEADLINE, || {
        front.failed_handshakes() >= 1
    })
    .await;
    // With it, the same client (another runner's TLS files) gets an HTTP answer.
    let trusted = TlsFiles {
        ca_file: Some(ca_file.clone()),
        ..TlsFiles::default()
    };
    ack(&coordinator, &endpoint(&front.url(), &token, trusted))
        .await
        .expect("trusted with tls-ca-file");

    // A manager with tls-ca-file runs a job that clones over HTTPS through the front.
    let repo = repos
        .create(&format!("group/tls-{:08x}", rand::random::<u32>()))
        .expect("repo");
    let sha = repo
        .commit("main", &[("README.md", "over tls\n")], "first")
        .expect("commit");
    let state_dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "{}helper_image = \"{image}\"\n",
        config_text(
            &front.url(),
            &token,
            state_dir.path(),
            "",
            &format!("tls-ca-file = \"{}\"", ca_file.display()),
        )
    );
    let manager = InProcessManager::start_with(config(&text), state_dir, Default::default());
    let id = gitlab.enqueue(
        &token,
        json!({
            "image": {"name": TEST_IMAGE},
            "job_info": {"project_full_path": repo.path()},
            "git_info": {"ref": "main", "sha": sha, "depth": 5,
                "refspecs": ["+refs/heads/main:refs/remotes/origin/main"]},
            "steps": [{"name": "script", "script": [
                "cat README.md",
                "grep -q -- '-----BEGIN' \"$CI_SERVER_TLS_CA_FILE\" && echo CA-FILE-OK",
            ], "timeout": 3600, "when": "on_success", "allow_failure": false}],
            "variables": [{"key": "GIT_STRATEGY", "value": "clone", "public": true}],
        }),
    );
    let (record, trace) = finished(&gitlab, id).await;
    assert_eq!(record.state, JobState::Success, "trace:\n{trace}");
    assert!(trace.contains("over tls"), "cloned over https: {trace}");
    assert!(trace.contains("CA-FILE-OK"), "{trace}");
    assert!(!trace.contains("BEGIN CERTIFICATE-----"), "{trace}");
    manager.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_client_certificate_is_presented_from_tls_cert_and_key_files() {
    ensure_test_image();
    init_crypto();
    let server = server_pki();
    let client = pki("runner", Vec::new(), ExtendedKeyUsagePurpose::ClientAuth);
    let (gitlab, token) = fake_gitlab(fast_trace()).await;
    let front = TlsFront::start(&gitlab.url(), &server.cert, &server.key, Some(&client.ca))
        .await
        .expect("tls front");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = write(dir.path(), "ca.crt", &server.ca);
    let cert_file = write(dir.path(), "client.crt", &client.cert);
    let key_file = write(dir.path(), "client.key", &client.key);

    // Trusting the server is not enough: the front wants a client certificate.
    let coordinator = Coordinator::new(ClientSettings::default()).expect("client");
    let ca_only = TlsFiles {
        ca_file: Some(ca_file.clone()),
        ..TlsFiles::default()
    };
    ack(&coordinator, &endpoint(&front.url(), &token, ca_only))
        .await
        .expect_err("no client certificate: refused");
    assert_eq!(front.with_client_certificate(), 0);

    let state_dir = tempfile::tempdir().expect("tempdir");
    let runner_keys = format!(
        "tls-ca-file = \"{}\"\ntls-cert-file = \"{}\"\ntls-key-file = \"{}\"",
        ca_file.display(),
        cert_file.display(),
        key_file.display()
    );
    let text = config_text(&front.url(), &token, state_dir.path(), "", &runner_keys);
    let parsed = config(&text);
    let debug = format!("{parsed:?}");
    assert!(!debug.contains("PRIVATE KEY"), "no key material in Debug");
    let manager = InProcessManager::start_with(parsed, state_dir, Default::default());
    let id = gitlab.enqueue(&token, job(&["echo mutual-tls-ok"], &[]));
    let (record, trace) = finished(&gitlab, id).await;
    assert_eq!(record.state, JobState::Success, "trace:\n{trace}");
    assert!(trace.contains("mutual-tls-ok"), "{trace}");
    assert!(
        front.with_client_certificate() >= 1,
        "the client certificate was presented"
    );
    assert!(!trace.contains("PRIVATE KEY"), "{trace}");
    manager.drain().await;
}
