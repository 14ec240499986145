//! `flotilla register`, then `flotilla run`, then `flotilla unregister`, as a new user would
//! (the README's "Registering runners" steps), through the real binary.

use super::{flotilla, no_token};
use crate::harness::{finished, flotilla_bin, init_crypto, job, DEADLINE, TEST_IMAGE};
use testkit::{FakeGitlab, FakeGitlabOptions, JobState};

#[tokio::test]
async fn register_then_run_then_unregister_as_a_new_user_would() {
    crate::harness::ensure_test_image();
    init_crypto();
    let gitlab = FakeGitlab::start(FakeGitlabOptions::default())
        .await
        .unwrap();
    // The runner as created in GitLab's UI: its authentication token.
    let token = crate::harness::runner_token();
    gitlab.add_runner(&token);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    // Where the manager keeps its state (the default, /var/lib/flotilla, is the machine's).
    std::fs::write(
        &path,
        format!("state_dir = \"{}\"\n", dir.path().join("state").display()),
    )
    .unwrap();
    let c = path.display().to_string();

    let out = flotilla(
        &[
            "register",
            "--non-interactive",
            "--config",
            &c,
            "--url",
            &gitlab.url(),
            "--executor",
            "docker",
            "--docker-image",
            TEST_IMAGE,
            "--docker-pull-policy",
            "if-not-present",
            "--name",
            "my-runner",
        ],
        &[("CI_SERVER_TOKEN", token.as_str())],
    )
    .await;
    assert!(out.ok, "{}", out.all);
    no_token(&out.all, &[&token]);

    let log = dir.path().join("run.log");
    let mut run = tokio::process::Command::new(flotilla_bin())
        .args(["run", "--config", &c])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.path().join("run.err")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("start flotilla run");
    let id = gitlab.enqueue(&token, job(&["echo hello from my-runner"], &[]));
    let (record, trace) = finished(&gitlab, id).await;
    assert_eq!(record.state, JobState::Success, "{trace}");
    assert!(trace.contains("hello from my-runner"));
    let pid = run.id().expect("pid").to_string();
    let signal = std::process::Command::new("kill")
        .args(["-QUIT", &pid])
        .status()
        .unwrap();
    assert!(signal.success());
    let status = tokio::time::timeout(DEADLINE, run.wait())
        .await
        .expect("run drains")
        .unwrap();
    assert!(status.success(), "run exited {status}");
    let logs = format!(
        "{}{}",
        std::fs::read_to_string(&log).unwrap_or_default(),
        std::fs::read_to_string(dir.path().join("run.err")).unwrap_or_default()
    );
    no_token(&logs, &[&token, &record.token]);

    let runner_id = gitlab.runner_id(&token).unwrap();
    assert_eq!(
        gitlab.runner_managers(runner_id).len(),
        1,
        "one manager: this host's"
    );
    let out = flotilla(&["unregister", "--config", &c, "--name", "my-runner"], &[]).await;
    assert!(out.ok, "{}", out.all);
    no_token(&out.all, &[&token]);
    assert!(
        gitlab.runner_managers(runner_id).is_empty(),
        "this host's manager is gone from GitLab"
    );
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("[[runners]]"), "{text}");
    let out = flotilla(&["config", "check", &c], &[]).await;
    assert!(
        out.ok,
        "what unregister leaves is a valid file: {}",
        out.all
    );
}
