//! Private images against a real registry: Debian's `docker-registry` on 127.0.0.1 (a random
//! port) with htpasswd basic auth, holding `flotilla-test/busybox` pushed under a private name.
//! A job whose image (and service) is that private image is pulled with the payload's
//! `credentials`; without credentials the pull fails as an image pull failure; the job variable
//! `DOCKER_AUTH_CONFIG` wins over the payload's credentials, as in GitLab Runner. Loopback
//! registries need no TLS: the engine treats 127.0.0.0/8 as insecure by default.
//!
//! Needs `docker-registry` and `htpasswd` (Debian's `docker-registry` and `apache2-utils`;
//! `scripts/prepare.sh` installs them). Without them each test prints why and returns early: it is then not a pass.

use crate::support::{assert_nothing_left, docker, ensure_test_images, trace_text, BUSYBOX};
use base64::Engine;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{
    PushImageOptionsBuilder, RemoveImageOptions, TagImageOptionsBuilder,
};
use flotilla::config::{DockerConfig, PullPolicy};
use flotilla::executor::{run_job, JobOutcome};
use flotilla::job::{FailureReason, JobPayload};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const USER: &str = "flotilla-ci";

/// A `docker-registry` process with basic auth on 127.0.0.1, holding one private image; killed
/// (and its image tags removed from the engine) when dropped.
struct Registry {
    child: Child,
    /// `127.0.0.1:<port>`.
    host: String,
    /// The pushed image, `127.0.0.1:<port>/private/busybox:<tag>`.
    image: String,
    password: String,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("docker")
            .args(["image", "rm", "-f", &self.image])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Whether the registry and htpasswd are installed; prints why not.
fn tools_present() -> bool {
    for tool in ["docker-registry", "htpasswd"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            eprintln!(
                "SKIPPED (not a pass): `{tool}` is not installed; install Debian's \
                 docker-registry and apache2-utils to run the private registry tests"
            );
            return false;
        }
    }
    true
}

impl Registry {
    /// Starts a registry with a fresh user and password and pushes the test image into it.
    async fn start() -> Registry {
        ensure_test_images();
        let dir = tempfile::tempdir().expect("tempdir");
        let password = format!("pw-{:016x}", rand::random::<u64>());
        let htpasswd = Command::new("htpasswd")
            .args(["-Bbn", USER, &password])
            .output()
            .expect("running htpasswd");
        assert!(htpasswd.status.success(), "htpasswd failed: {htpasswd:?}");
        std::fs::write(dir.path().join("htpasswd"), &htpasswd.stdout).expect("writing htpasswd");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().expect("local address").port();
        drop(listener);
        let host = format!("127.0.0.1:{port}");
        let config = format!(
            "version: 0.1\n\
             log:\n  level: warn\n\
             storage:\n  filesystem:\n    rootdirectory: {root}/data\n\
             http:\n  addr: {host}\n\
             auth:\n  htpasswd:\n    realm: flotilla-test\n    path: {root}/htpasswd\n",
            root = dir.path().display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("writing the registry config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting docker-registry");
        let image = format!("{host}/private/busybox:t{:08x}", rand::random::<u32>());
        let registry = Registry {
            child,
            host,
            image,
            password,
            _dir: dir,
        };
        registry.wait_ready().await;
        registry.push().await;
        registry
    }

    /// Waits until the registry answers `/v2/` (401 without credentials).
    async fn wait_ready(&self) {
        let url = format!("http://{}/v2/", self.host);
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(answer) = client.get(&url).send().await {
                assert_eq!(
                    answer.status().as_u16(),
                    401,
                    "the registry must ask for auth"
                );
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "docker-registry did not answer on {url} within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Tags the test image under the private name, pushes it, and drops the local tag so jobs
    /// must pull it.
    async fn push(&self) {
        let docker = docker().await;
        let (repo, tag) = self.image.rsplit_once(':').expect("a tag");
        let tag_options = TagImageOptionsBuilder::new().repo(repo).tag(tag).build();
        docker
            .tag_image(BUSYBOX, Some(tag_options))
            .await
            .expect("tagging the test image");
        let push_options = PushImageOptionsBuilder::new().tag(tag).build();
        let mut progress = docker.push_image(repo, Some(push_options), Some(self.credentials()));
        while let Some(item) = progress.next().await {
            let info = item.expect("pushing to the test registry");
            if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                panic!("push failed: {detail}");
            }
        }
        docker
            .remove_image(&self.image, None::<RemoveImageOptions>, None)
            .await
            .expect("removing the local tag");
    }

    fn credentials(&self) -> DockerCredentials {
        DockerCredentials {
            username: Some(USER.into()),
            password: Some(self.password.clone()),
            serveraddress: Some(self.host.clone()),
            ..Default::default()
        }
    }

    /// A `DOCKER_AUTH_CONFIG` value for this registry.
    fn auth_config(&self, password: &str) -> String {
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{password}"));
        json!({"auths": {self.host.clone(): {"auth": auth}}}).to_string()
    }

    /// A payload `credentials` entry for this registry.
    fn payload_credentials(&self, password: &str) -> Value {
        json!([{"type": "registry", "url": self.host, "username": USER, "password": password}])
    }
}

/// A job in `image` (with `extra` merged into the payload) printing a marker.
fn job(image: &str, extra: Value) -> JobPayload {
    let mut payload = json!({
        "id": 3_000_000_000i64 + i64::from(rand::random::<u32>() >> 4),
        "token": "job-token-not-used",
        "job_info": {"project_id": 11, "project_full_path": "group/private"},
        "runner_info": {"timeout": 120},
        "image": {"name": image},
        "steps": [{"name": "script", "script": ["echo private-image-ran"], "when": "on_success"}],
        "variables": [{"key": "GIT_STRATEGY", "value": "none", "public": true}],
    });
    if let (Some(base), Value::Object(extra)) = (payload.as_object_mut(), extra) {
        for (key, value) in extra {
            if key == "variables" {
                if let Some(list) = base["variables"].as_array_mut() {
                    list.extend(value.as_array().cloned().unwrap_or_default());
                }
            } else {
                base.insert(key, value);
            }
        }
    }
    serde_json::from_value(payload).expect("a valid job payload")
}

/// Runs `job` pulling every image (`always`); its outcome and trace.
async fn run(job: JobPayload) -> (JobOutcome, String) {
    let docker = docker().await;
    let settings = DockerConfig {
        network_mode: Some("host".into()),
        pull_policy: vec![PullPolicy::Always],
        wait_for_services_timeout: None,
        ..DockerConfig::default()
    };
    let crate::executor::Started {
        run, trace, job_id, ..
    } = crate::executor::start(job);
    let outcome = run_job(&docker, &settings, run).await;
    let text = trace_text(&trace);
    assert_nothing_left(&docker, job_id).await;
    (outcome, text)
}

#[tokio::test]
async fn a_private_image_and_service_are_pulled_with_the_jobs_credentials() {
    if !tools_present() {
        return;
    }
    let registry = Registry::start().await;
    let job = job(
        &registry.image,
        json!({
            "credentials": registry.payload_credentials(&registry.password),
            "services": [{"name": registry.image, "alias": "private-svc", "command": ["sleep", "300"]}],
        }),
    );
    let (outcome, text) = run(job).await;
    assert_eq!(outcome, JobOutcome::Succeeded, "{text}");
    assert!(text.contains("private-image-ran"), "{text}");
    assert_eq!(
        text.matches("Authenticating with credentials from job payload (GitLab Registry)")
            .count(),
        2,
        "job image and service:\n{text}"
    );
    assert!(
        text.contains(&format!("Pulling docker image {} ...", registry.image)),
        "{text}"
    );
    assert!(!text.contains(&registry.password), "{text}");
}

#[tokio::test]
async fn without_credentials_a_private_image_is_an_image_pull_failure() {
    if !tools_present() {
        return;
    }
    let registry = Registry::start().await;
    let (outcome, text) = run(job(&registry.image, json!({}))).await;
    match &outcome {
        JobOutcome::SystemFailure { reason, message } => {
            assert_eq!(*reason, FailureReason::ImagePullFailure, "{message}");
            assert!(message.contains(&registry.image), "{message}");
            assert!(
                message.contains("no basic auth credentials")
                    || message.to_lowercase().contains("unauthorized"),
                "{message}"
            );
        }
        other => panic!("expected an image pull failure, got {other:?}\n{text}"),
    }
    assert!(!text.contains("private-image-ran"), "{text}");
    assert!(!text.contains("Authenticating with credentials"), "{text}");
}

#[tokio::test]
async fn docker_auth_config_wins_over_the_payload_credentials() {
    if !tools_present() {
        return;
    }
    let registry = Registry::start().await;
    let auth_config = registry.auth_config(&registry.password);
    let job = job(
        &registry.image,
        json!({
            "credentials": registry.payload_credentials("a-wrong-password"),
            "variables": [{
                "key": "DOCKER_AUTH_CONFIG", "value": auth_config, "public": false, "masked": false,
            }],
        }),
    );
    let (outcome, text) = run(job).await;
    assert_eq!(outcome, JobOutcome::Succeeded, "{text}");
    assert!(
        text.contains("Authenticating with credentials from $DOCKER_AUTH_CONFIG"),
        "{text}"
    );
    assert!(!text.contains("job payload (GitLab Registry)"), "{text}");

    // The same variable with a wrong password is what is used, so the pull fails.
    let job = job_with_wrong_auth_config(&registry);
    let (outcome, text) = run(job).await;
    assert!(
        matches!(&outcome, JobOutcome::SystemFailure { reason, .. }
            if *reason == FailureReason::ImagePullFailure),
        "{outcome:?}\n{text}"
    );
}

fn job_with_wrong_auth_config(registry: &Registry) -> JobPayload {
    job(
        &registry.image,
        json!({
            "credentials": registry.payload_credentials(&registry.password),
            "variables": [{
                "key": "DOCKER_AUTH_CONFIG", "value": registry.auth_config("wrong"),
                "public": false, "masked": false,
            }],
        }),
    )
}
