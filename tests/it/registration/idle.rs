//! A file with no `[[runners]]` (what `unregister --all-runners` leaves): `run` starts, idles,
//! and picks a runner up on reload.

use crate::harness::{config_text, fake_gitlab, finished, job, DEADLINE};
use flotilla::config::Config;
use flotilla::lifecycle::Control;
use testkit::{FakeGitlabOptions, JobState};

#[tokio::test]
async fn run_idles_without_runners_and_picks_one_up_on_reload() {
    crate::harness::ensure_test_image();
    let (gitlab, token) = fake_gitlab(FakeGitlabOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let state = dir.path().join("state");
    std::fs::write(
        &path,
        format!("concurrent = 1\nstate_dir = \"{}\"\n", state.display()),
    )
    .unwrap();
    let loaded = Config::load(&path).expect("no runners is valid");
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let source = flotilla::manager::ConfigSource {
        path: path.clone(),
        logging: None,
    };
    let manager = tokio::spawn(flotilla::manager::run_reloadable(
        loaded.config,
        Some(source),
        rx,
        flotilla::manager::Hooks::default(),
    ));
    // Idle: still running a while later (no runner, nothing to wait for, but not exited).
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        !manager.is_finished(),
        "the manager idles instead of exiting"
    );
    let id = gitlab.enqueue(&token, job(&["echo picked up"], &[]));
    std::fs::write(&path, config_text(&gitlab.url(), &token, &state, "", "")).unwrap();
    // Had the manager exited with no runner, its control channel would be closed.
    tx.send(Control::Reload)
        .await
        .expect("the manager idles instead of exiting");
    let (record, trace) = finished(&gitlab, id).await;
    assert_eq!(record.state, JobState::Success, "{trace}");
    tx.send(Control::Drain).await.unwrap();
    tokio::time::timeout(DEADLINE, manager)
        .await
        .expect("drains")
        .expect("task")
        .expect("result");
}
