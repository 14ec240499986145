//! Issue 13: many `docker`-executor jobs at once on the real local engine, as a new user runs
//! them (`network_mode` unset). Without `FF_NETWORK_PER_BUILD` no job makes a network, so the
//! engine's address pools (about thirty default networks) never limit how many jobs run; with it,
//! each job's network is a /28 from `network_per_build_pool`, and more jobs than the default
//! pools could hold still run at once. Each job waits until every job of the test is running
//! (a file the test writes into a shared bind-mounted directory), so all are provably running at
//! the same time; no timing is asserted. The 150-job run is `#[ignore]`d (over two minutes on a
//! 2-core CI machine): `cargo test --test it many_jobs -- --ignored`.
//!
//! Gentle on a loaded engine: the tests here run one at a time, the jobs look for the go file
//! once a second, the test counts containers once a second, and a test that fails removes its
//! runner's containers and says what the engine and the fake GitLab held, so a burst that the
//! engine could not take does not leave it busy for the tests that follow.

use crate::harness::{config, fake_gitlab, InProcessManager, TEST_IMAGE};
use serde_json::json;
use std::time::Duration;
use testkit::{FakeGitlabOptions, JobState};

/// One burst of jobs at a time: two at once put twice the containers on a 2-core engine.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `n` jobs that each wait for a go file the test writes once all `n` build containers run.
async fn jobs_at_once(n: usize, network_per_build: bool) {
    let _turn = ONE_AT_A_TIME.lock().await;
    crate::harness::ensure_test_image();
    let (gitlab, token) = fake_gitlab(FakeGitlabOptions {
        long_poll: Duration::from_secs(5),
        ..Default::default()
    })
    .await;
    let state_dir = tempfile::tempdir().expect("tempdir");
    let shared = tempfile::tempdir().expect("tempdir");
    let text = format!(
        r#"
concurrent = {n}
check_interval = 1
shutdown_timeout = 30
log_level = "info"
state_dir = "{state}"

[[runners]]
name = "many-jobs"
url = "{url}"
token = "{token}"
executor = "docker"
request_concurrency = 4
[runners.docker]
image = "{TEST_IMAGE}"
pull_policy = ["if-not-present"]
volumes = ["{shared}:/gate:ro"]
"#,
        state = state_dir.path().display(),
        url = gitlab.url(),
        shared = shared.path().display(),
    );
    let manager = InProcessManager::start_with(
        config(&text),
        state_dir,
        flotilla::manager::Hooks::default(),
    );
    let script = "i=0; while [ ! -e /gate/go ] && [ $i -lt 600 ]; do sleep 1; i=$((i+1)); done; \
                  test -e /gate/go && echo all-running";
    let ids: Vec<i64> = (0..n)
        .map(|_| {
            gitlab.enqueue(
                &token,
                json!({
                    "image": {"name": TEST_IMAGE},
                    "steps": [{"name": "script", "script": [script], "timeout": 3600,
                               "when": "on_success", "allow_failure": false}],
                    "variables": [
                        {"key": "GIT_STRATEGY", "value": "none", "public": true},
                        {"key": "FF_NETWORK_PER_BUILD", "value": network_per_build.to_string(),
                         "public": true},
                    ],
                }),
            )
        })
        .collect();
    let runner = flotilla::config::short_token(&token);
    let _cleanup = RemoveContainersOnDrop(runner.clone());
    let deadline = Duration::from_secs(60 + 2 * n as u64);
    let end = tokio::time::Instant::now() + deadline;
    loop {
        let running = running_build_containers(&runner);
        if running >= n {
            break;
        }
        if tokio::time::Instant::now() >= end {
            let states: Vec<String> = ids
                .iter()
                .filter_map(|id| gitlab.job(*id))
                .map(|job| format!("{:?}", job.state))
                .collect();
            panic!(
                "{running} of {n} jobs running after {deadline:?}; the runner's containers by \
                 state: {}; the jobs' states at the fake GitLab: {}",
                containers_by_state(&runner),
                tally(states)
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    std::fs::write(shared.path().join("go"), b"go").expect("write the go file");
    let mut failed = Vec::new();
    for id in &ids {
        let record = gitlab
            .wait_job(*id, deadline, |j| j.state.is_finished())
            .await
            .unwrap_or_else(|e| panic!("job {id} did not finish: {e}"));
        if record.state != JobState::Success || !record.trace_text().contains("all-running") {
            failed.push((*id, record.state, record.trace_text()));
        }
    }
    assert!(
        failed.is_empty(),
        "{} jobs failed, first: {:?}",
        failed.len(),
        failed.first()
    );
    manager.drain().await;
    let left = std::process::Command::new("docker")
        .args(["network", "ls", "-q", "--filter"])
        .arg(format!("label=com.flotilla.runner={runner}"))
        .output()
        .expect("docker network ls");
    assert!(left.stdout.is_empty(), "networks left behind");
}

/// What `docker ps <args>` prints for the runner's containers, a word per entry.
fn runner_containers(runner: &str, args: &[&str]) -> std::io::Result<Vec<String>> {
    let out = std::process::Command::new("docker")
        .arg("ps")
        .args(args)
        .arg("--filter")
        .arg(format!("label=com.flotilla.runner={runner}"))
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect())
}

/// Removes the runner's containers when the test ends, passed or not (a failed burst must not
/// keep the engine busy for the tests after it).
struct RemoveContainersOnDrop(String);

impl Drop for RemoveContainersOnDrop {
    fn drop(&mut self) {
        let Ok(ids) = runner_containers(&self.0, &["-aq"]) else {
            return;
        };
        if !ids.is_empty() {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f"])
                .args(&ids)
                .stdout(std::process::Stdio::null())
                .status();
        }
    }
}

/// The runner's containers counted by state, e.g. `running: 38, created: 2`.
fn containers_by_state(runner: &str) -> String {
    match runner_containers(runner, &["-a", "--format", "{{.State}}"]) {
        Ok(states) => tally(states),
        Err(e) => format!("docker ps failed: {e}"),
    }
}

/// `items` counted, e.g. `Running: 3, Pending: 1`.
fn tally(items: impl IntoIterator<Item = String>) -> String {
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for item in items {
        *counts.entry(item).or_default() += 1;
    }
    let parts: Vec<String> = counts.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(", ")
    }
}

/// How many of the runner's build containers are running (one per job: no helper without sources).
fn running_build_containers(runner: &str) -> usize {
    runner_containers(runner, &["-q", "--filter", "status=running"])
        .expect("docker ps")
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_jobs_run_at_once_without_a_network_each() {
    jobs_at_once(40, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_jobs_run_at_once_each_on_its_own_small_network() {
    jobs_at_once(40, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "over two minutes on a 2-core machine: cargo test --test it many_jobs -- --ignored"]
async fn one_hundred_fifty_jobs_run_at_once_on_the_default_engine() {
    jobs_at_once(150, false).await;
}
