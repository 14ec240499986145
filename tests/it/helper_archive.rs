//! `[runners.docker] helper_image_archive`: an engine that lacks the helper image gets it over
//! the Docker API from a `docker save` tarball on its first job (as a new VM does), on the real
//! local engine. Each test tags and saves its own image name and removes only that tag.

use crate::executor::{host_settings, job, run_to_end};
use crate::harness::{helper_image, TEST_IMAGE};
use flotilla::config::DockerConfig;
use flotilla::executor::JobOutcome;
use flotilla::job::FailureReason;
use serde_json::json;
use std::path::Path;
use std::process::Command;

fn docker_cli(args: &[&str]) {
    let out = Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("docker {args:?}: {e}"));
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A helper image name of this test's own, absent from the engine, and a tarball at `archive`
/// holding `source` under that name.
fn save_as_absent(source: &str, archive: &Path) -> String {
    let name = format!("flotilla-helper:archive-{:08x}", rand::random::<u32>());
    docker_cli(&["tag", source, &name]);
    docker_cli(&["save", "-o", archive.to_str().expect("utf-8 path"), &name]);
    // Only the tag this test made: the layers stay, shared with `source`.
    docker_cli(&["rmi", &name]);
    name
}

fn empty_strategy() -> serde_json::Value {
    json!({"variables": [{"key": "GIT_STRATEGY", "value": "empty", "public": true}]})
}

#[tokio::test]
async fn an_engine_without_the_helper_image_loads_it_from_the_archive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("helper.tar");
    let name = save_as_absent(&helper_image().await, &archive);
    let settings = DockerConfig {
        helper_image: Some(name.clone()),
        helper_image_archive: Some(archive.clone()),
        ..host_settings()
    };
    let (outcome, text, _) = run_to_end(
        job(&["echo built"], None, empty_strategy()),
        settings.clone(),
    )
    .await;
    assert_eq!(outcome, JobOutcome::Succeeded, "{text}");
    assert!(
        text.contains(&format!("Loading helper image {name} from")),
        "{text}"
    );
    let loaded = text
        .lines()
        .find(|l| l.contains("Loaded helper image"))
        .unwrap_or_else(|| panic!("no load line: {text}"));
    println!("first job: {loaded}");

    // The second job finds it present: no second load.
    let (outcome, text, _) =
        run_to_end(job(&["echo again"], None, empty_strategy()), settings).await;
    assert_eq!(outcome, JobOutcome::Succeeded, "{text}");
    assert!(!text.contains("Loading helper image"), "{text}");
    docker_cli(&["rmi", &name]);
}

#[tokio::test]
async fn an_archive_without_the_helper_image_fails_the_job_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("other.tar");
    // A tarball of another image (the small test image under a name of this test's own).
    let other = save_as_absent(TEST_IMAGE, &archive);
    let wanted = format!(
        "flotilla-helper:archive-missing-{:08x}",
        rand::random::<u32>()
    );
    let settings = DockerConfig {
        helper_image: Some(wanted.clone()),
        helper_image_archive: Some(archive),
        ..host_settings()
    };
    let (outcome, text, _) =
        run_to_end(job(&["echo never"], None, empty_strategy()), settings).await;
    match outcome {
        JobOutcome::SystemFailure { reason, message } => {
            assert_eq!(reason, FailureReason::RunnerConfigurationError);
            assert!(message.contains("does not hold"), "{message}");
            assert!(message.contains(&wanted), "{message}");
        }
        other => panic!("expected a configuration failure, got {other:?}\n{text}"),
    }
    // The load tagged the other image under its saved name: remove that tag (ours).
    docker_cli(&["rmi", &other]);
}
