//! Token rotation during `run`: a job runs across the reset, finishes with its own job token;
//! the old runner token is never sent after the reset; new requests use the new token; the
//! file gets the new token (every other byte kept); jobs keep coming.

use super::flotilla;
use crate::harness::{finished, init_crypto, job, DEADLINE, TEST_IMAGE};
use chrono::{SecondsFormat, Utc};
use flotilla::config::Config;
use std::time::Duration;
use testkit::{FakeGitlab, FakeGitlabOptions, JobState};

#[tokio::test]
async fn rotation_during_run_keeps_the_running_job_and_never_sends_the_old_token_again() {
    crate::harness::ensure_test_image();
    init_crypto();
    let gitlab = FakeGitlab::start(FakeGitlabOptions::default())
        .await
        .unwrap();
    let old = crate::harness::runner_token();
    // The reset point (obtained + 0.75 × lifetime) is ~6 s from now; the token expires at +12 s.
    let now = Utc::now();
    let obtained = now - chrono::TimeDelta::seconds(12);
    let expires = now + chrono::TimeDelta::seconds(12);
    gitlab.add_runner_expiring(&old, expires);
    gitlab.set_token_ttl(Duration::from_secs(24 * 3600));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let text = format!(
        r#"# rotation test
concurrent = 2
check_interval = 1
state_dir = "{state}"

[[runners]]
  name = "rotating"   # keep this comment
  url = "{url}"
  token = "{old}"
  token_obtained_at = {obtained}
  token_expires_at = "{expires}"
  executor = "docker"
  [runners.docker]
    image = "{TEST_IMAGE}"
    pull_policy = ["if-not-present"]
"#,
        state = dir.path().join("state").display(),
        url = gitlab.url(),
        obtained = obtained.to_rfc3339_opts(SecondsFormat::Secs, true),
        expires = expires.to_rfc3339_opts(SecondsFormat::Secs, true),
    );
    std::fs::write(&path, &text).unwrap();
    let config = Config::load(&path).unwrap().config;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let tracker = tokio_util::task::TaskTracker::new();
    let stop = tokio_util::sync::CancellationToken::new();
    // The file watcher, as `main` runs it: the manager's own write must not count as a change.
    flotilla::lifecycle::watch_config_file(&tracker, stop.clone(), &path, tx.clone()).unwrap();
    let source = flotilla::manager::ConfigSource {
        path: path.clone(),
        logging: None,
    };
    let manager = tokio::spawn(flotilla::manager::run_reloadable(
        config,
        Some(source),
        rx,
        flotilla::manager::Hooks::default(),
    ));

    // A job that runs across the reset.
    let long = gitlab.enqueue(&old, job(&["echo started", "sleep 12", "echo done"], &[]));
    gitlab
        .wait_job(long, DEADLINE, |j| j.state == JobState::Running)
        .await
        .expect("the job starts");
    let reset_at =
        tokio::time::timeout(DEADLINE, async {
            loop {
                if let Some(r) = gitlab.requests().into_iter().find(|r| {
                    r.path == "/api/v4/runners/reset_authentication_token" && r.status == 201
                }) {
                    return r.at;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .expect("the token is reset during the run");
    let new = gitlab.current_runner_token(&old);
    assert_ne!(new, old);
    assert_eq!(
        gitlab.job(long).unwrap().state,
        JobState::Running,
        "the reset came while the job ran"
    );

    let (record, trace) = finished(&gitlab, long).await;
    assert_eq!(record.state, JobState::Success, "{trace}");
    assert!(trace.contains("done"));
    // A job enqueued after the reset is taken with the new token.
    let after = gitlab.enqueue(&new, job(&["echo after"], &[]));
    let (record, trace) = finished(&gitlab, after).await;
    assert_eq!(record.state, JobState::Success, "{trace}");

    let requests = gitlab.requests();
    let body_token = |r: &testkit::RecordedRequest| {
        r.json()
            .and_then(|b| b["token"].as_str().map(str::to_string))
    };
    let final_update = requests
        .iter()
        .rev()
        .find(|r| r.method == "PUT" && r.path == format!("/api/v4/jobs/{long}"))
        .expect("the final update");
    assert_eq!(
        body_token(final_update).as_deref(),
        Some(record_token(&gitlab, long).as_str()),
        "the final update uses the job's own token"
    );
    let old_after: Vec<String> = requests
        .iter()
        .filter(|r| r.at > reset_at && body_token(r).as_deref() == Some(old.as_str()))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(
        old_after.is_empty(),
        "the old token was sent after the reset: {old_after:?}"
    );
    assert!(
        requests.iter().any(|r| r.at > reset_at
            && r.path == "/api/v4/jobs/request"
            && body_token(r).as_deref() == Some(new.as_str())),
        "new requests use the new token"
    );

    // The file holds the new token; every other byte is kept.
    let written = std::fs::read_to_string(&path).unwrap();
    assert!(written.contains(&format!("token = \"{new}\"")), "{written}");
    assert!(!written.contains(&old));
    assert!(written.contains("name = \"rotating\"   # keep this comment"));
    assert!(written.starts_with("# rotation test\nconcurrent = 2\n"));
    let out = flotilla(&["config", "check", &path.display().to_string()], &[]).await;
    assert!(out.ok, "{}", out.all);

    // Drain: the manager exits.
    tx.send(flotilla::lifecycle::Control::Drain).await.unwrap();
    tokio::time::timeout(DEADLINE, manager)
        .await
        .expect("the manager exits after a drain")
        .expect("manager task")
        .expect("manager result");
    stop.cancel();
    tracker.close();
    tracker.wait().await;
}

fn record_token(gitlab: &FakeGitlab, id: i64) -> String {
    gitlab.job(id).expect("job").token
}
