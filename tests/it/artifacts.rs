//! Artifacts end to end: the in-process manager runs jobs from the fake GitLab on the real
//! engine, with this build's helper image and host networking (the helper container reaches
//! the fake on 127.0.0.1). Job A uploads a zip of its listed paths with the exclusions left out
//! and a junit report as its own artifact type; job B, depending on A, finds A's files before its
//! script runs (through the object-storage redirect); `when: on_failure` artifacts go up only
//! when the job fails; a missing dependency archive and an oversized upload fail their jobs with
//! a clear message; a job canceled from GitLab still uploads its `on_failure` artifacts.

use crate::harness::*;
use serde_json::{json, Value};
use testkit::{FakeGitlab, FakeGitlabOptions, JobState};

/// The manager with this build's helper image, on the fake.
async fn manager(gitlab: &FakeGitlab, token: &str) -> InProcessManager {
    ensure_test_image();
    let image = helper_image().await;
    let state_dir = tempfile::tempdir().expect("tempdir");
    let mut text = config_text(&gitlab.url(), token, state_dir.path(), "", "");
    // The docker section comes last in the text: this key lands in it.
    text.push_str(&format!("helper_image = \"{image}\"\n"));
    InProcessManager::start_with(
        config(&text),
        state_dir,
        flotilla::manager::Hooks::default(),
    )
}

/// `job(script)` with `artifacts` set.
fn job_with_artifacts(script: &[&str], artifacts: Value) -> Value {
    let mut payload = job(script, &[]);
    payload["artifacts"] = artifacts;
    payload
}

fn archive(when: &str, paths: &[&str], exclude: &[&str]) -> Value {
    json!({
        "name": "artifacts", "untracked": false, "paths": paths, "exclude": exclude,
        "when": when, "artifact_type": "archive", "artifact_format": "zip", "expire_in": "1 day"
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_b_sees_the_files_job_a_uploaded_without_the_excluded_ones() {
    let (gitlab, token) = fake_gitlab(FakeGitlabOptions::default()).await;
    let manager = manager(&gitlab, &token).await;
    let mut a_job = job_with_artifacts(
        &[
            "mkdir -p dist/sub",
            "echo built-app > dist/app.txt",
            "echo noise > dist/debug.log",
            "echo deep-file > dist/sub/deep.txt",
            "echo not-listed > other.txt",
            "echo '<testsuites/>' > rspec.xml",
        ],
        json!([
            archive("on_success", &["dist/"], &["dist/*.log"]),
            {"name": "junit", "paths": ["rspec.xml"], "when": "always",
             "artifact_type": "junit", "artifact_format": "gzip", "expire_in": "1 week"}
        ]),
    );
    // GitLab's external URL, as jobs see it, is not reachable from this runner: the helper
    // uploads to the runner's configured url, as GitLab Runner's `--url`.
    a_job["variables"]
        .as_array_mut()
        .expect("variables")
        .push(json!({"key": "CI_SERVER_URL", "value": "http://127.0.0.1:9", "public": true}));
    let a = gitlab.enqueue(&token, a_job);
    let (record, trace) = finished(&gitlab, a).await;
    assert_eq!(record.state, JobState::Success, "trace:\n{trace}");
    assert!(
        trace.contains("Uploading artifacts for successful job"),
        "{trace}"
    );
    assert!(
        trace.contains("dist/: found 4 matching artifact files and directories"),
        "{trace}"
    );
    assert!(trace.contains("dist/*.log: excluded 1 files"), "{trace}");
    assert!(
        !trace.contains(&record.token),
        "the job token is not in the trace"
    );

    let stored = gitlab.artifacts(a);
    assert_eq!(stored.len(), 2, "{stored:?}");
    let zip = &stored[0];
    assert_eq!(
        (zip.artifact_type.as_str(), zip.artifact_format.as_str()),
        ("archive", "zip")
    );
    assert_eq!(zip.filename, "artifacts.zip");
    assert_eq!(zip.expire_in.as_deref(), Some("1 day"));
    assert_eq!(
        zip.zip_entries().unwrap(),
        vec!["dist/", "dist/app.txt", "dist/sub/", "dist/sub/deep.txt"]
    );
    assert_eq!(zip.zip_file("dist/app.txt").unwrap(), b"built-app\n");
    let junit = &stored[1];
    assert_eq!(junit.artifact_type, "junit");
    assert_eq!(junit.artifact_format, "gzip");
    assert_eq!(junit.filename, "junit.gz");
    assert_eq!(junit.gunzip().unwrap(), b"<testsuites/>\n");

    let mut b_job = job(
        &[
            "cat dist/app.txt dist/sub/deep.txt",
            "test ! -e dist/debug.log && echo no-debug-log",
            "test ! -e other.txt && echo no-other",
        ],
        &[],
    );
    b_job["dependencies"] = json!([{
        "id": a, "name": "build",
        "artifacts_file": {"filename": "artifacts.zip", "size": zip.bytes.len()}
    }]);
    let b = gitlab.enqueue(&token, b_job);
    let (record, trace) = finished(&gitlab, b).await;
    assert_eq!(record.state, JobState::Success, "trace:\n{trace}");
    assert!(
        trace.contains(&format!("Downloading artifacts for build ({a})...")),
        "{trace}"
    );
    for want in ["built-app", "deep-file", "no-debug-log", "no-other"] {
        assert!(trace.contains(want), "{want}: {trace}");
    }
    let object_gets: Vec<_> = gitlab
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/objects/"))
        .collect();
    assert_eq!(
        object_gets.len(),
        1,
        "direct download through object storage"
    );
    assert_eq!(object_gets[0].status, 200);
    assert_eq!(object_gets[0].header("job-token"), None);
    manager.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_failure_artifacts_are_uploaded_only_when_the_job_fails() {
    let (gitlab, token) = fake_gitlab(FakeGitlabOptions::default()).await;
    let manager = manager(&gitlab, &token).await;
    let artifacts = json!([
        archive("on_failure", &["failure.log"], &[]),
        {"name": "success", "paths": ["success.txt"], "when": "on_success",
         "artifact_type": "archive", "artifact_format": "zip"}
    ]);
    let ok = gitlab.enqueue(
        &token,
        job_with_artifacts(
            &["echo details > failure.log", "echo fine > success.txt"],
            artifacts.clone(),
        ),
    );
    let failing = gitlab.enqueue(
        &token,
        job_with_artifacts(
            &[
                "echo details > failure.log",
                "echo fine > success.txt",
                "exit 3",
            ],
            artifacts,
        ),
    );
    let (record, trace) = finished(&gitlab, ok).await;
    assert_eq!(record.state, JobState::Success, "trace:\n{trace}");
    let stored = gitlab.artifacts(ok);
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].zip_entries().unwrap(), vec!["success.txt"]);

    let (record, trace) = finished(&gitlab, failing).await;
    assert_eq!(record.state, JobState::Failed, "trace:\n{trace}");
    assert_eq!(record.failure_reason.as_deref(), Some("script_failure"));
    assert_eq!(record.exit_code, Some(3), "the script's failure wins");
    assert!(
        trace.contains("Uploading artifacts for failed job"),
        "{trace}"
    );
    let stored = gitlab.artifacts(failing);
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].zip_entries().unwrap(), vec!["failure.log"]);
    manager.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_dependency_archive_or_an_oversized_upload_fails_the_job_clearly() {
    let (gitlab, token) = fake_gitlab(FakeGitlabOptions {
        max_artifacts_bytes: 512,
        ..FakeGitlabOptions::default()
    })
    .await;
    let manager = manager(&gitlab, &token).await;
    // A dependency that never uploaded anything (expired, say).
    let gone = gitlab.enqueue("runner-token-nobody", job(&["true"], &[]));
    let mut consumer = job_with_artifacts(
        &["echo must-not-run"],
        json!([archive("on_failure", &["*.log"], &[])]),
    );
    consumer["dependencies"] = json!([{
        "id": gone, "name": "expired",
        "artifacts_file": {"filename": "artifacts.zip", "size": 10}
    }]);
    let consumer = gitlab.enqueue(&token, consumer);
    let big = gitlab.enqueue(
        &token,
        job_with_artifacts(
            &["head -c 65536 /dev/urandom > big.bin"],
            json!([archive("on_success", &["big.bin"], &[])]),
        ),
    );

    let (record, trace) = finished(&gitlab, consumer).await;
    assert_eq!(record.state, JobState::Failed, "trace:\n{trace}");
    assert!(trace.contains("404 Not Found"), "{trace}");
    assert!(
        !trace.contains("$ echo must-not-run"),
        "the script did not run: {trace}"
    );
    assert!(
        trace.contains("Uploading artifacts for failed job"),
        "a failed download_artifacts still runs the on_failure uploads: {trace}"
    );
    assert!(!trace.contains(&record.token), "{trace}");

    let (record, trace) = finished(&gitlab, big).await;
    assert_eq!(record.state, JobState::Failed, "trace:\n{trace}");
    assert!(trace.contains("413 Request Entity Too Large"), "{trace}");
    assert!(trace.contains("too large"), "{trace}");
    assert!(gitlab.artifacts(big).is_empty());
    manager.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canceled_job_still_uploads_its_on_failure_artifacts() {
    let (gitlab, token) = fake_gitlab(fast_trace()).await;
    let manager = manager(&gitlab, &token).await;
    let id = gitlab.enqueue(
        &token,
        job_with_artifacts(
            &[
                "echo partial-results > partial.log",
                "echo waiting-for-cancel",
                "sleep 120",
            ],
            json!([
                archive("on_failure", &["partial.log"], &[]),
                archive("on_success", &["never.txt"], &[])
            ]),
        ),
    );
    trace_shows(&gitlab, id, "waiting-for-cancel").await;
    gitlab.cancel(id);
    let (record, trace) = finished(&gitlab, id).await;
    assert_eq!(record.state, JobState::Canceled, "trace:\n{trace}");
    assert!(
        trace.contains("Uploading artifacts for failed job"),
        "{trace}"
    );
    let stored = gitlab.artifacts(id);
    assert_eq!(stored.len(), 1, "{stored:?}\n{trace}");
    assert_eq!(
        stored[0].zip_file("partial.log").unwrap(),
        b"partial-results\n"
    );
    manager.drain().await;
}
