//! The happy path against a second, independent coordinator: the `gitlab-runner-mock` crate
//! (written by others, from their reading of the same API). It hands jobs only to runners that
//! advertise `refspecs`; Flotilla does not clone yet, so this test (and only it) advertises that
//! feature through the test hook, for a job that needs no sources.

use crate::harness::*;
use flotilla::job::FeaturesInfo;
use gitlab_runner_mock::{GitlabRunnerMock, MockJobState, MockJobStepName, MockJobStepWhen};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_from_gitlab_runner_mock_runs_to_success() {
    ensure_test_image();
    init_crypto();
    let mock = GitlabRunnerMock::start().await;
    let mut builder = mock.job_builder("mock-job".to_string());
    builder.add_variable("GIT_STRATEGY".into(), "none".into(), true, false);
    builder.add_step(
        MockJobStepName::Script,
        vec!["echo hello from the mock".into()],
        3600,
        MockJobStepWhen::OnSuccess,
        false,
    );
    let job = builder.build();
    mock.enqueue_job(job.clone());

    let state_dir = tempfile::tempdir().unwrap();
    let url = mock.uri().to_string();
    let text = config_text(
        url.trim_end_matches('/'),
        mock.runner_token(),
        state_dir.path(),
        "",
        "",
    );
    let hooks = flotilla::manager::Hooks {
        features_override: Some(FeaturesInfo {
            refspecs: true,
            ..FeaturesInfo::implemented()
        }),
        ..Default::default()
    };
    let manager = InProcessManager::start_with(config(&text), state_dir, hooks);
    eventually("the mock job finishes", DEADLINE, || job.finished()).await;
    let log = String::from_utf8_lossy(&job.log()).to_string();
    assert_eq!(job.state(), MockJobState::Success, "trace:\n{log}");
    assert!(log.contains("hello from the mock"), "trace:\n{log}");
    manager.drain().await;
}
