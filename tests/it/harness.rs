//! Shared set-up for the integration tests: the test image, a fake GitLab, a configuration
//! pointing at it, and the manager run in-process (through `flotilla::manager::run_with`, the
//! same function `main` calls) or as the real binary.

use flotilla::config::Config;
use flotilla::lifecycle::Control;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;
use testkit::{FakeGitlab, FakeGitlabOptions};
use tokio::sync::mpsc;

/// The image every test job runs in (built by `scripts/build-test-images.sh`).
pub const TEST_IMAGE: &str = "flotilla-test/busybox:latest";

/// A generous bound for anything a test waits on (CI is a noisy 2-core machine).
pub const DEADLINE: Duration = Duration::from_secs(90);

pub use crate::support::ensure_test_images as ensure_test_image;

/// Installs the rustls provider the way `main` does, and logs to the test's captured output (shown
/// when a test fails).
pub fn init_crypto() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("info,flotilla=debug")
        .try_init();
}

/// A unique fake runner token (generated, not a real one); its short token (9 characters after
/// `glrt-t1_`) is random, so tests running at once never share container names or labels.
pub fn runner_token() -> String {
    token_with_prefix("glrt-t1_")
}

/// A fake token: `prefix` then 24 random hexadecimal digits (made at run time, never a literal).
pub fn token_with_prefix(prefix: &str) -> String {
    format!(
        "{prefix}{:016x}{:08x}",
        rand::random::<u64>(),
        rand::random::<u32>()
    )
}

/// The text of `tests/fixtures/NAME` with a [`runner_token`] for its `@TOKEN@` (fixtures hold
/// no token-looking literal).
pub fn fixture_with_token(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .replace("@TOKEN@", &runner_token())
}

/// Starts a fake GitLab with one runner token registered.
pub async fn fake_gitlab(opts: FakeGitlabOptions) -> (FakeGitlab, String) {
    init_crypto();
    let gitlab = FakeGitlab::start(opts)
        .await
        .expect("start the fake GitLab");
    let token = runner_token();
    gitlab.add_runner(&token);
    (gitlab, token)
}

/// The text of a config.toml for one docker runner against `url`, plus `extra` runner keys.
pub fn config_text(
    url: &str,
    token: &str,
    state_dir: &Path,
    extra_global: &str,
    extra_runner: &str,
) -> String {
    format!(
        r#"
concurrent = 4
check_interval = 1
shutdown_timeout = 20
log_level = "debug"
state_dir = "{state}"
{extra_global}

[[runners]]
name = "it-runner"
url = "{url}"
token = "{token}"
executor = "docker"
{extra_runner}
[runners.docker]
image = "{TEST_IMAGE}"
pull_policy = ["if-not-present"]
network_mode = "host"
"#,
        state = state_dir.display()
    )
}

/// Parses a config text as `flotilla run` would.
pub fn config(text: &str) -> Config {
    Config::from_toml_str(text, "test-config.toml")
        .unwrap_or_else(|e| panic!("test config invalid:\n{e}"))
        .config
}

/// A job payload for the fake: busybox image, no sources, the given script and after_script.
pub fn job(script: &[&str], after_script: &[&str]) -> Value {
    let mut steps = vec![
        json!({"name": "script", "script": script, "timeout": 3600, "when": "on_success", "allow_failure": false}),
    ];
    if !after_script.is_empty() {
        steps.push(json!({"name": "after_script", "script": after_script, "timeout": 3600, "when": "always", "allow_failure": true}));
    }
    json!({
        "image": {"name": TEST_IMAGE},
        "steps": steps,
        "variables": [{"key": "GIT_STRATEGY", "value": "none", "public": true}],
    })
}

/// Waits until job `id` reached a final state; returns its record and its trace as text.
pub async fn finished(gitlab: &FakeGitlab, id: i64) -> (testkit::JobRecord, String) {
    let record = gitlab
        .wait_job(id, DEADLINE, |j| j.state.is_finished())
        .await
        .unwrap_or_else(|e| panic!("job {id} did not finish: {e}"));
    let trace = record.trace_text();
    (record, trace)
}

/// Waits until job `id`'s trace at the fake contains `text`.
pub async fn trace_shows(gitlab: &FakeGitlab, id: i64, text: &str) {
    gitlab
        .wait_job(id, DEADLINE, |j| {
            String::from_utf8_lossy(&j.trace).contains(text)
        })
        .await
        .unwrap_or_else(|e| panic!("job {id} never printed {text:?}: {e}"));
}

/// Fake GitLab options that ask for a trace update every second (tests that watch a trace).
pub fn fast_trace() -> FakeGitlabOptions {
    FakeGitlabOptions {
        trace_update_interval_secs: Some(1),
        ..Default::default()
    }
}

/// Adds a variable to a job payload.
pub fn with_variable(mut job: Value, key: &str, value: &str, masked: bool) -> Value {
    if let Some(vars) = job["variables"].as_array_mut() {
        vars.push(json!({"key": key, "value": value, "public": !masked, "masked": masked}));
    }
    job
}

/// The manager running in-process; aborted (SIGTERM-equivalent) when dropped.
pub struct InProcessManager {
    /// Sends operator controls, as signals would.
    pub controls: mpsc::Sender<Control>,
    /// The manager task.
    pub task: tokio::task::JoinHandle<Result<(), flotilla::manager::RunError>>,
    /// Keeps the state directory alive.
    pub _state_dir: tempfile::TempDir,
}

impl InProcessManager {
    /// Starts the manager with `config_text(…)` built from the fake.
    pub fn start(gitlab: &FakeGitlab, token: &str, extra_global: &str, extra_runner: &str) -> Self {
        let state_dir = tempfile::tempdir().expect("tempdir");
        let text = config_text(
            &gitlab.url(),
            token,
            state_dir.path(),
            extra_global,
            extra_runner,
        );
        Self::start_with(
            config(&text),
            state_dir,
            flotilla::manager::Hooks::default(),
        )
    }

    /// Starts the manager with a ready configuration.
    pub fn start_with(
        config: Config,
        state_dir: tempfile::TempDir,
        hooks: flotilla::manager::Hooks,
    ) -> Self {
        let (controls, rx) = mpsc::channel(4);
        let task = tokio::spawn(flotilla::manager::run_with(config, rx, hooks));
        InProcessManager {
            controls,
            task,
            _state_dir: state_dir,
        }
    }

    /// Sends a drain and waits for the manager to exit.
    pub async fn drain(self) {
        let _ = self.controls.send(Control::Drain).await;
        let result = tokio::time::timeout(DEADLINE, self.task).await;
        let joined = result.expect("manager did not exit after a drain in time");
        joined
            .expect("manager task panicked")
            .expect("manager returned an error");
    }
}

/// Containers on the local engine of job `job_id` of the runner with token `token`.
pub fn containers_of_job(token: &str, job_id: i64) -> Vec<String> {
    let runner = flotilla::config::short_token(token);
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=com.flotilla.job-id={job_id}"),
            "--filter",
            &format!("label=com.flotilla.runner={runner}"),
        ])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Waits until `check` holds or the deadline passes (polling a cheap local check every 100 ms).
pub async fn eventually(what: &str, deadline: Duration, mut check: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + deadline;
    while !check() {
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The path of the built `flotilla` binary (`FLOTILLA_TEST_BIN` overrides it: a copy taken
/// right after the build, where several worktrees share one target directory).
pub fn flotilla_bin() -> PathBuf {
    std::env::var_os("FLOTILLA_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_flotilla")))
}

/// The helper image holding this test build's `flotilla` binary, built once per test process on
/// top of `flotilla-helper-base:bookworm` by `scripts/build-helper-image.sh` and tagged by the
/// binary's hash, so parallel test processes of the same build share it (the script takes a
/// lock and skips a tag that already holds the same binary) and other builds never clash.
pub async fn helper_image() -> String {
    // A std OnceLock inside spawn_blocking: tests run on separate runtimes, and a blocked thread
    // waiting for another test's build is fine off the async workers.
    static IMAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    tokio::task::spawn_blocking(|| IMAGE.get_or_init(build_helper_image).clone())
        .await
        .expect("building the helper image panicked")
}

fn build_helper_image() -> String {
    ensure_test_image();
    let binary = flotilla_bin();
    let sum = std::process::Command::new("sha256sum")
        .arg(&binary)
        .output()
        .unwrap_or_else(|e| panic!("sha256sum {}: {e}", binary.display()));
    assert!(sum.status.success(), "sha256sum {}", binary.display());
    let sum = String::from_utf8_lossy(&sum.stdout);
    let hash = sum.get(..16).expect("sha256sum prints a hash");
    let tag = format!("flotilla-helper:test-{hash}");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/build-helper-image.sh");
    let status = std::process::Command::new(script)
        .arg("--binary")
        .arg(&binary)
        .args(["--tag", &tag])
        .args(["--label", TEST_HELPER_LABEL])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("running {script}: {e}"));
    assert!(status.success(), "{script} failed: {status}");
    prune_unused_test_helpers(hash);
    tag
}

/// The label marking helper images built by the tests (and only those) for pruning.
const TEST_HELPER_LABEL: &str = "com.flotilla.test-helper=true";

/// How long a test helper image is kept after a test process last took it.
const TEST_HELPER_KEEP: Duration = Duration::from_secs(2 * 3600);

/// Each build of the binary makes a new helper image. Marks `hash`'s as used now (a file per
/// image under the temporary directory, its mtime the last use), then removes the labelled test
/// helper images whose mark is older than [`TEST_HELPER_KEEP`] (no test process runs that
/// long). Images without a mark are kept. Best effort: `docker rmi` without force leaves an
/// image a container still uses.
fn prune_unused_test_helpers(hash: &str) {
    let marks = std::env::temp_dir().join("flotilla-test-helpers");
    if std::fs::create_dir_all(&marks).is_err() {
        return;
    }
    let _ = std::fs::write(marks.join(hash), b"");
    let Ok(out) = std::process::Command::new("docker")
        .args(["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"])
        .args(["--filter", &format!("label={TEST_HELPER_LABEL}")])
        .output()
    else {
        return;
    };
    for image in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(other) = image.strip_prefix("flotilla-helper:test-") else {
            continue;
        };
        let stale = std::fs::metadata(marks.join(other))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > TEST_HELPER_KEEP);
        if other != hash && stale {
            let _ = std::process::Command::new("docker")
                .args(["rmi", image])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
            let _ = std::fs::remove_file(marks.join(other));
        }
    }
}
