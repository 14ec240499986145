//! The manager's life as an operator sees it (issue 5): drains (SIGQUIT) and aborts
//! (SIGTERM/SIGINT) of the real binary, hot reload, `kill -9` at random moments, and the upgrade
//! script with its systemd unit. docker+machine on the fake Compute Engine, jobs on the local
//! Docker engine.
//!
//! Jobs that must stay running until the test says so wait on a [`Gate`]: a loopback HTTP
//! server the job polls with busybox `wget` (containers use the host network), answered 200 once
//! the test opens it. No test sleeps a fixed time; every wait has a deadline.

mod crash;
mod drain;
mod reload;
mod upgrade;

use crate::harness::*;
use flotilla::fleet::MANAGER_LABEL;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use testkit::gce::InstanceView;
use testkit::{FakeGce, FakeGceOptions, FakeGitlab, FakeGitlabOptions, ZoneSpec};
use tokio::io::AsyncWriteExt;

/// The fake's zone.
const ZONE: &str = "us-central1-a";

/// A loopback HTTP endpoint jobs wait on: connections are closed unanswered until
/// [`Gate::open`], then answered `200 OK`.
pub(crate) struct Gate {
    port: u16,
    open: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Gate {
    pub(crate) async fn start() -> Gate {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the gate");
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let open = open.clone();
            async move {
                while let Ok((mut socket, _)) = listener.accept().await {
                    if open.load(Ordering::SeqCst) {
                        let _ = socket
                            .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
                            .await;
                        let _ = socket.shutdown().await;
                    }
                }
            }
        });
        Gate { port, open, task }
    }

    /// The script line that waits until the gate opens.
    pub(crate) fn wait_line(&self) -> String {
        format!(
            "until wget -q -O /dev/null http://127.0.0.1:{}/; do sleep 0.2; done",
            self.port
        )
    }

    pub(crate) fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Both fakes, a manager id, and a directory for the config file, state and logs.
pub(crate) struct Fleet {
    pub gitlab: FakeGitlab,
    pub token: String,
    pub gce: Arc<FakeGce>,
    pub manager_id: String,
    pub dir: tempfile::TempDir,
}

impl Fleet {
    /// Starts the fakes; VMs boot in `boot`, deletions take `delete`.
    pub(crate) async fn start(boot: Duration, delete: Duration) -> Fleet {
        Fleet::start_with(FakeGitlabOptions::default(), boot, delete).await
    }

    pub(crate) async fn start_with(
        gitlab_opts: FakeGitlabOptions,
        boot: Duration,
        delete: Duration,
    ) -> Fleet {
        ensure_test_image();
        let (gitlab, token) = fake_gitlab(gitlab_opts).await;
        let opts = FakeGceOptions {
            zones: vec![ZoneSpec::new(ZONE, boot)],
            wait_cap: Duration::from_secs(2),
            delete_latency: delete,
            ..FakeGceOptions::default()
        };
        let gce = Arc::new(FakeGce::start(opts).await.expect("start the fake gce"));
        Fleet {
            gitlab,
            token,
            gce,
            manager_id: format!("it-life-{:08x}", rand::random::<u32>()),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub(crate) fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// A config with one docker+machine runner on the fake: `global` keys (replacing the
    /// defaults of the same name), `runner` keys and `[runners.machine]` keys.
    pub(crate) fn config_text(&self, global: &str, runner: &str, machine: &str) -> String {
        let defaults = [
            "concurrent = 6".to_string(),
            "check_interval = 1".to_string(),
            "shutdown_timeout = 20".to_string(),
            "log_level = \"info\"".to_string(),
            format!("state_dir = \"{}\"", self.state_dir().display()),
            format!("manager_id = \"{}\"", self.manager_id),
            "reconcile_interval = 3600".to_string(),
        ];
        let key = |line: &str| {
            line.split('=')
                .next()
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        let overridden: Vec<String> = global.lines().map(key).collect();
        let mut globals: Vec<String> = defaults
            .into_iter()
            .filter(|line| !overridden.contains(&key(line)))
            .collect();
        globals.extend(global.lines().map(str::to_string));
        format!(
            r#"
{globals}

[[runners]]
name = "it-lifecycle"
url = "{url}"
token = "{token}"
executor = "docker+machine"
{runner}
[runners.machine]
MachineName = "life-%s"
{machine}
[runners.gce]
project = "{project}"
zones = ["{ZONE}"]
endpoint = "{endpoint}"
create_timeout = 30
[runners.docker]
image = "{TEST_IMAGE}"
pull_policy = ["if-not-present"]
network_mode = "host"
"#,
            globals = globals.join("\n"),
            url = self.gitlab.url(),
            token = self.token,
            project = self.gce.project(),
            endpoint = self.gce.endpoint(),
        )
    }

    /// Writes `text` as the config file (atomically: temp file + rename) and returns its path.
    pub(crate) fn write_config(&self, text: &str) -> PathBuf {
        let path = self.dir.path().join("config.toml");
        write_atomically(&path, text);
        path
    }

    /// This manager's instances now.
    pub(crate) fn ours(&self) -> Vec<InstanceView> {
        self.gce
            .instances()
            .into_iter()
            .filter(|v| v.labels.get(MANAGER_LABEL) == Some(&self.manager_id))
            .collect()
    }

    /// Waits until `pred` holds for this manager's instances.
    pub(crate) async fn wait_ours(
        &self,
        what: &str,
        within: Duration,
        pred: impl Fn(&[&InstanceView]) -> bool,
    ) {
        crate::machine_e2e::wait_for_manager_vms(&self.gce, &self.manager_id, what, within, pred)
            .await;
    }

    /// Enqueues a job running `script`.
    pub(crate) fn enqueue(&self, script: &[&str]) -> i64 {
        self.gitlab.enqueue(&self.token, job(script, &[]))
    }

    /// Stops the fake GCE (removing containers of VMs still alive).
    pub(crate) async fn stop(self) {
        if let Ok(gce) = Arc::try_unwrap(self.gce) {
            gce.shutdown().await;
        }
    }
}

/// Writes `text` to `path` the way Chef does: a temp file in the same directory, renamed over.
pub(crate) fn write_atomically(path: &Path, text: &str) {
    let temp = path.with_extension(format!("tmp{:08x}", rand::random::<u32>()));
    std::fs::write(&temp, text).expect("write the temp file");
    std::fs::rename(&temp, path).expect("rename over the file");
}
