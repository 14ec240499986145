//! The helper container and `get_sources`: stages that run in the helper image (this build's
//! `flotilla` on the Debian base, from `harness::helper_image`), on the real local engine.

use crate::executor::{host_settings, job, run_to_end};
use crate::harness::helper_image;
use flotilla::config::DockerConfig;
use flotilla::executor::JobOutcome;
use flotilla::job::FailureReason;
use serde_json::json;

/// Host networking with this build's helper image.
async fn helper_settings() -> DockerConfig {
    DockerConfig {
        helper_image: Some(helper_image().await),
        ..host_settings()
    }
}

fn strategy(value: &str) -> serde_json::Value {
    json!({"variables": [{"key": "GIT_STRATEGY", "value": value, "public": true}]})
}

#[tokio::test]
async fn git_strategy_empty_runs_in_the_helper_container() {
    let settings = helper_settings().await;
    let image = settings.helper_image.clone().unwrap_or_default();
    let job = job(
        &["ls -A \"$CI_PROJECT_DIR\" | wc -l", "echo in $(pwd)"],
        None,
        strategy("empty"),
    );
    let (outcome, text, _) = run_to_end(job, settings).await;
    assert_eq!(outcome, JobOutcome::Succeeded, "{text}");
    assert!(
        text.contains(&format!("for {image}")),
        "the helper image was used: {text}"
    );
    assert!(
        text.contains("Skipping Git repository setup and creating an empty build directory"),
        "{text}"
    );
    assert!(text.contains("Skipping Git submodules setup"), "{text}");
    assert!(text.contains("in /builds/group/app"), "{text}");
}

#[tokio::test]
async fn git_strategy_none_starts_no_helper_container() {
    let settings = DockerConfig {
        helper_image: Some("flotilla-helper:does-not-exist".into()),
        ..host_settings()
    };
    let job = job(&["echo ran"], None, strategy("none"));
    let (outcome, text, _) = run_to_end(job, settings).await;
    assert_eq!(outcome, JobOutcome::Succeeded, "{text}");
    assert!(text.contains("Skipping Git repository setup"), "{text}");
    assert!(!text.contains("flotilla-helper"), "{text}");
}

#[tokio::test]
async fn a_missing_helper_image_fails_the_job_clearly() {
    let missing = format!("flotilla-helper:missing-{:08x}", rand::random::<u32>());
    let settings = DockerConfig {
        helper_image: Some(missing.clone()),
        ..host_settings()
    };
    let job = job(&["echo never"], None, strategy("empty"));
    let (outcome, text, _) = run_to_end(job, settings).await;
    match outcome {
        JobOutcome::SystemFailure { reason, message } => {
            assert_eq!(reason, FailureReason::RunnerConfigurationError);
            assert!(message.contains(&missing), "{message}");
            assert!(message.contains("build-helper-image.sh"), "{message}");
        }
        other => panic!("expected a configuration failure, got {other:?}\n{text}"),
    }
    assert!(!text.contains("never\n"), "{text}");
}
