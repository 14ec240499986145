//! The real `flotilla` binary as an operator runs it: crash recovery after `kill -9`, secrets
//! absent from its own log at debug level, and `flotilla config check`.

use crate::harness::*;
use std::io::Read;
use std::process::{Child, Command};
use std::time::Duration;
use testkit::{FakeGitlabOptions, JobState};

/// A `flotilla run` child process whose stderr (the log) is collected in a file.
pub(crate) struct Running {
    pub child: Child,
    log_path: std::path::PathBuf,
}

impl Running {
    pub(crate) fn start(
        config_path: &std::path::Path,
        dir: &std::path::Path,
        name: &str,
    ) -> Running {
        Running::start_with_env(config_path, dir, name, &[])
    }

    /// [`Running::start`] with extra environment variables; stdout and stderr both go to the
    /// log file.
    pub(crate) fn start_with_env(
        config_path: &std::path::Path,
        dir: &std::path::Path,
        name: &str,
        env: &[(&str, &str)],
    ) -> Running {
        let log_path = dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(flotilla_bin())
            .args(["run", "--config"])
            .arg(config_path)
            .envs(env.iter().copied())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start flotilla");
        Running { child, log_path }
    }

    /// The peak resident set size of the process so far (`VmHWM`), in KiB.
    pub(crate) fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read the manager's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/<pid>/status")
    }

    pub(crate) fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub(crate) async fn wait_exit(&mut self, deadline: Duration) -> std::process::ExitStatus {
        let end = tokio::time::Instant::now() + deadline;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < end,
                "flotilla did not exit in time"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(crate) fn log(&self) -> String {
        let mut text = String::new();
        std::fs::File::open(&self.log_path)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        text
    }
}

impl Running {
    /// Sends `signal` and asserts the process then exits successfully within the deadline.
    pub(crate) async fn stop(&mut self, signal: &str) {
        self.signal(signal);
        let status = self.wait_exit(DEADLINE).await;
        assert!(status.success(), "{status:?}\n{}", self.log());
    }

    /// Waits until the log contains `text`.
    pub(crate) async fn log_shows(&self, text: &str, deadline: Duration) {
        let end = tokio::time::Instant::now() + deadline;
        while !self.log().contains(text) {
            assert!(
                tokio::time::Instant::now() < end,
                "the log never showed {text:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- log of {} ----\n{}",
                self.log_path.display(),
                self.log()
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fake GitLab with one runner and a `config.toml` for it in a temporary directory.
struct Setup {
    gitlab: testkit::FakeGitlab,
    token: String,
    dir: tempfile::TempDir,
    state_dir: std::path::PathBuf,
    config_path: std::path::PathBuf,
}

impl Setup {
    async fn start(opts: FakeGitlabOptions) -> Setup {
        ensure_test_image();
        let (gitlab, token) = fake_gitlab(opts).await;
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        let config_path = dir.path().join("config.toml");
        std::fs::write(
            &config_path,
            config_text(&gitlab.url(), &token, &state_dir, "", ""),
        )
        .unwrap();
        Setup {
            gitlab,
            token,
            dir,
            state_dir,
            config_path,
        }
    }

    /// Starts `flotilla run` on the configuration, its log named after `name`.
    fn run(&self, name: &str) -> Running {
        Running::start(&self.config_path, self.dir.path(), name)
    }

    /// Waits until `jobs.json` no longer holds job `id`.
    async fn jobs_json_cleared(&self, id: i64) {
        eventually("jobs.json cleared", DEADLINE, || {
            recorded_ids(&self.state_dir).is_some_and(|ids| !ids.contains(&id))
        })
        .await;
    }
}

/// The job ids `state_dir/jobs.json` holds; `None` when it cannot be read or parsed.
fn recorded_ids(state_dir: &std::path::Path) -> Option<Vec<i64>> {
    let text = std::fs::read_to_string(state_dir.join("jobs.json")).ok()?;
    let list: Vec<serde_json::Value> = serde_json::from_str(&text).ok()?;
    list.iter().map(|j| j["id"].as_i64()).collect()
}

/// `flotilla config check PATH`: whether it passed, its stdout and its stderr.
fn config_check(path: &std::path::Path) -> (bool, String, String) {
    let out = Command::new(flotilla_bin())
        .args(["config", "check"])
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_left_by_a_killed_process_is_failed_at_the_next_start() {
    let setup = Setup::start(fast_trace()).await;
    let (gitlab, token, state_dir) = (&setup.gitlab, &setup.token, &setup.state_dir);

    let mut first = setup.run("first");
    let id = gitlab.enqueue(token, job(&["echo crash-marker", "sleep 300"], &[]));
    trace_shows(gitlab, id, "crash-marker").await;
    first.signal("KILL");
    first.wait_exit(DEADLINE).await;
    let recorded = std::fs::read_to_string(state_dir.join("jobs.json")).unwrap();
    assert!(
        recorded_ids(state_dir).is_some_and(|ids| ids.contains(&id)),
        "jobs.json: {recorded}"
    );
    assert_eq!(gitlab.job(id).unwrap().state, JobState::Running);

    let mut second = setup.run("second");
    let record = gitlab
        .wait_job(id, DEADLINE, |j| j.state == JobState::Failed)
        .await
        .unwrap();
    assert_eq!(
        record.failure_reason.as_deref(),
        Some("runner_system_failure")
    );
    setup.jobs_json_cleared(id).await;
    second.stop("TERM").await;
    for container in containers_of_job(token, id) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &container])
            .output();
    }
}

/// Issue 12 item 10: the coordinator refuses final updates, the manager is stopped (SIGTERM)
/// while it retries, and the next start, with the coordinator healthy, delivers the job's true
/// state and its whole trace (kept in the state directory meanwhile).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_state_refused_until_a_stop_is_delivered_by_the_next_start() {
    let setup = Setup::start(fast_trace()).await;
    let (gitlab, token, state_dir) = (&setup.gitlab, &setup.token, &setup.state_dir);
    gitlab.inject(testkit::Fault::FinalUpdateOutage {
        status: 503,
        duration: Duration::from_secs(3600),
    });
    let mut first = setup.run("outage-first");
    let id = gitlab.enqueue(
        token,
        job(
            &[
                "i=0; while [ $i -lt 3000 ]; do echo \"kept-line-$i\"; i=$((i+1)); done",
                "exit 3",
            ],
            &[],
        ),
    );
    first
        .log_shows(
            "its state and trace are kept in the state directory",
            DEADLINE,
        )
        .await;
    first.stop("TERM").await;
    let recorded = std::fs::read_to_string(state_dir.join("jobs.json")).unwrap();
    assert!(recorded.contains("pending_final"), "jobs.json: {recorded}");
    assert_eq!(gitlab.job(id).unwrap().state, JobState::Running);

    gitlab.clear_faults();
    let mut second = setup.run("outage-second");
    let record = gitlab
        .wait_job(id, DEADLINE, |j| j.state.is_finished())
        .await
        .unwrap();
    let trace = record.trace_text();
    assert_eq!(record.state, JobState::Failed, "{trace}");
    assert_eq!(record.failure_reason.as_deref(), Some("script_failure"));
    assert_eq!(record.exit_code, Some(3));
    assert!(!record.checksum_mismatch, "the trace is whole");
    assert!(trace.contains("kept-line-2999"), "{trace}");
    assert!(trace.contains("exit code 3"), "{trace}");
    setup.jobs_json_cleared(id).await;
    // The kept trace goes right after the job list no longer names it (in that order, so a
    // kept state always has its trace).
    let traces = state_dir.join("traces");
    eventually("the kept trace is removed once delivered", DEADLINE, || {
        std::fs::read_dir(&traces).map(|d| d.count()).unwrap_or(0) == 0
    })
    .await;
    second.stop("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_log_at_debug_level() {
    let setup = Setup::start(FakeGitlabOptions::default()).await;
    let (gitlab, token) = (&setup.gitlab, &setup.token);
    let mut manager = setup.run("debug");
    let secret = "masked-Value-9876zz";
    let id = gitlab.enqueue(
        token,
        with_variable(
            job(&["echo $MASKED_ONE", "echo $CI_JOB_TOKEN"], &[]),
            "MASKED_ONE",
            secret,
            true,
        ),
    );
    let record = gitlab
        .wait_job(id, DEADLINE, |j| {
            j.state == JobState::Success || j.state == JobState::Failed
        })
        .await
        .unwrap();
    assert_eq!(
        record.state,
        JobState::Success,
        "{}",
        String::from_utf8_lossy(&record.trace)
    );
    manager.stop("QUIT").await;
    let log = manager.log();
    assert!(log.contains("DEBUG"), "the log is at debug level:\n{log}");
    assert!(
        log.contains(&format!("{id}")),
        "the log mentions the job:\n{log}"
    );
    let job_token = gitlab.job(id).unwrap().token;
    for (what, value) in [
        ("runner token", token.as_str()),
        ("job token", job_token.as_str()),
        ("masked variable", secret),
    ] {
        assert!(!log.contains(value), "{what} found in the log:\n{log}");
    }
}

#[test]
fn config_check_rejects_a_bad_file_with_path_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "concurrent = 2\n\n[[runners]]\nname = \"r\"\nurl = \"https://gitlab.example.com\"\ntoken = \"x\"\nexecutor = \"docker\"\n[runners.docker]\nimagee = \"alpine\"\n",
    )
    .unwrap();
    let (ok, _, stderr) = config_check(&path);
    assert!(!ok);
    assert!(stderr.contains("imagee"), "{stderr}");
    assert!(stderr.contains(":9"), "line 9 named: {stderr}");
    assert!(stderr.contains("image"), "suggestion: {stderr}");
}

#[test]
fn config_check_accepts_a_gitlab_runner_register_file_without_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        fixture_with_token("config_gitlab_runner_register.toml"),
    )
    .unwrap();
    let (ok, stdout, stderr) = config_check(&path);
    assert!(ok, "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    assert!(stdout.contains("OK (0 warnings)"), "{stdout}");
}

#[test]
fn config_check_prints_how_a_docker_autoscaler_runner_is_carried_over() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config_gitlab_runner_docker_autoscaler_googlecloud.toml");
    let (ok, stdout, stderr) = config_check(&fixture);
    assert!(ok, "{stderr}");
    for expected in [
        "runners[0] \"docker-autoscaler-gcp\": executor docker-autoscaler: instance group \"ci-runners-group\"",
        "max_instances 10 → limit 10",
        "max_use_count 1 → MaxBuilds 1",
        "[\"* * * * sat,sun\"] (Europe/Berlin) → [[runners.machine.autoscaling]] Periods [\"* * * * * sat,sun *\"]",
    ] {
        assert!(stdout.contains(expected), "{expected:?} not in:\n{stdout}");
    }
    assert!(
        stderr.contains("runners[0].autoscaler.instance_ready_command: ignored"),
        "{stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("capacity.toml");
    let text = std::fs::read_to_string(&fixture)
        .unwrap()
        .replace("capacity_per_instance = 1", "capacity_per_instance = 4");
    std::fs::write(&path, text).unwrap();
    let (ok, _, stderr) = config_check(&path);
    assert!(!ok, "capacity_per_instance = 4 is refused");
    assert!(
        stderr.contains("capacity_per_instance = 4: Flotilla runs one job per VM"),
        "{stderr}"
    );
}
