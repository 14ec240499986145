//! Job caches end to end: the fake GitLab hands out jobs with `cache:`, the manager plans them,
//! the helper container (this build's `flotilla`) archives and extracts. Local storage (the
//! runner's cache volume) and GCS (the test kit's fake, which verifies every V4 signature
//! against the test service account's public key), with credentials from a key file and from
//! the metadata server through IAM signBlob.

use crate::harness::{
    config, config_text, fake_gitlab, finished, helper_image, InProcessManager, TEST_IMAGE,
};
use serde_json::{json, Value};
use testkit::{FakeGcs, FakeGitlab, JobState, TestServiceAccount};

const BUCKET: &str = "flotilla-it-cache";

/// A busybox job with no sources, `script`, and one cache entry (or an array of them).
fn cache_job(script: &[&str], cache: Value) -> Value {
    let caches = match cache {
        Value::Array(list) => list,
        one => vec![one],
    };
    json!({
        "image": {"name": TEST_IMAGE},
        "job_info": {"name": "build", "project_id": 77},
        "steps": [{"name": "script", "script": script, "timeout": 3600,
                   "when": "on_success", "allow_failure": false}],
        "variables": [{"key": "GIT_STRATEGY", "value": "none", "public": true},
                      {"key": "CI_COMMIT_REF_SLUG", "value": "main", "public": true}],
        "cache": caches,
    })
}

/// Whether the job printed `text` as a whole line (trace lines carry a timestamp and a stream
/// tag before the text).
fn printed(trace: &str, text: &str) -> bool {
    trace
        .lines()
        .filter_map(|l| l.splitn(3, ' ').nth(2))
        .any(|content| content == text)
}

/// Runs one job to its end; its trace. Fails the test unless it succeeded.
async fn run(gitlab: &FakeGitlab, token: &str, job: Value) -> String {
    let id = gitlab.enqueue(token, job);
    let (record, trace) = finished(gitlab, id).await;
    assert_eq!(record.state, JobState::Success, "job {id}:\n{trace}");
    trace
}

/// Starts the manager with this build's helper image and `cache` (a `[runners.cache]` table).
async fn manager(gitlab: &FakeGitlab, token: &str, cache: &str) -> InProcessManager {
    let state_dir = tempfile::tempdir().expect("tempdir");
    let mut text = config_text(&gitlab.url(), token, state_dir.path(), "", cache);
    text.push_str(&format!("helper_image = \"{}\"\n", helper_image().await));
    InProcessManager::start_with(
        config(&text),
        state_dir,
        flotilla::manager::Hooks::default(),
    )
}

/// Removes the runner's local cache volume when the test ends, however it ends.
struct VolumeGuard(String);

impl Drop for VolumeGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["volume", "rm", "-f", &self.0])
            .output();
    }
}

#[tokio::test]
async fn local_cache_restores_by_key_and_fallback_key_and_obeys_policy_and_when() {
    let (gitlab, token) = fake_gitlab(Default::default()).await;
    let short = flotilla::config::short_token(&token);
    let _volume = VolumeGuard(flotilla::cache::local_volume_name(&short));
    let mgr = manager(&gitlab, &token, "").await;

    // Job 1 writes the cache under a key made of variables.
    let key = json!({"key": "deps-$CI_COMMIT_REF_SLUG", "paths": ["vendor/"], "policy": "pull-push", "when": "on_success"});
    let trace = run(
        &gitlab,
        &token,
        cache_job(
            &["mkdir -p vendor", "echo v1 > vendor/dep.txt"],
            key.clone(),
        ),
    )
    .await;
    assert!(trace.contains("Checking cache for deps-main..."), "{trace}");
    assert!(trace.contains("No cache found for deps-main"), "{trace}");
    assert!(trace.contains("Creating cache deps-main..."), "{trace}");
    assert!(trace.contains("Created cache"), "{trace}");

    // Job 2, same key: restored before the script.
    let trace = run(
        &gitlab,
        &token,
        cache_job(
            &["cat vendor/dep.txt", "echo v2 > vendor/dep.txt"],
            key.clone(),
        ),
    )
    .await;
    assert!(trace.contains("Successfully extracted cache"), "{trace}");
    assert!(printed(&trace, "v1"), "the cached file was there:\n{trace}");

    // Job 3: a new key whose fallback is the first one (with a sanitized spelling).
    let fallback = json!({"key": "deps-feature", "paths": ["vendor"], "fallback_keys": ["./deps-$CI_COMMIT_REF_SLUG "],
                          "policy": "pull", "when": "on_success"});
    let trace = run(
        &gitlab,
        &token,
        cache_job(
            &["cat vendor/dep.txt", "echo v3 > vendor/new.txt"],
            fallback,
        ),
    )
    .await;
    assert!(trace.contains("No cache found for deps-feature"), "{trace}");
    assert!(
        trace.contains("Trying fallback cache key deps-main..."),
        "{trace}"
    );
    assert!(
        printed(&trace, "v2"),
        "job 2's cache came through the fallback:\n{trace}"
    );
    assert!(
        trace.contains("Not uploading cache deps-feature due to policy"),
        "{trace}"
    );

    // Job 4 proves policy pull uploaded nothing: deps-feature still has no cache.
    let probe = json!({"key": "deps-feature", "paths": ["vendor"], "policy": "pull"});
    let trace = run(
        &gitlab,
        &token,
        cache_job(&["test ! -e vendor/new.txt"], probe),
    )
    .await;
    assert!(trace.contains("No cache found for deps-feature"), "{trace}");

    // A failing job saves only its `when: on_failure` cache, in archive_cache_on_failure.
    let caches = json!([
        {"key": "ok-key", "paths": ["a"], "when": "on_success"},
        {"key": "fail-key", "paths": ["b"], "when": "on_failure"},
    ]);
    let id = gitlab.enqueue(
        &token,
        cache_job(
            &["mkdir -p a b", "echo fa > a/f", "echo fb > b/f", "exit 3"],
            caches,
        ),
    );
    let (record, trace) = finished(&gitlab, id).await;
    assert_eq!(record.state, JobState::Failed, "{trace}");
    assert!(trace.contains("Saving cache for failed job"), "{trace}");
    assert!(trace.contains("Creating cache fail-key..."), "{trace}");
    assert!(!trace.contains("Creating cache ok-key"), "{trace}");
    let both = json!([
        {"key": "ok-key", "paths": ["a"], "policy": "pull"},
        {"key": "fail-key", "paths": ["b"], "policy": "pull"},
    ]);
    let trace = run(
        &gitlab,
        &token,
        cache_job(&["cat b/f", "test ! -e a/f"], both),
    )
    .await;
    assert!(trace.contains("No cache found for ok-key"), "{trace}");
    assert!(printed(&trace, "fb"), "{trace}");
    mgr.drain().await;
}

/// Writes a key file for `account` into a temp dir (kept alive by the returned guard).
fn key_file(account: &TestServiceAccount) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cache-sa.json");
    std::fs::write(&path, account.key_file_json()).expect("key file");
    (dir, path.display().to_string())
}

#[tokio::test]
async fn gcs_cache_round_trips_with_a_key_file_and_with_sign_blob() {
    let instance = TestServiceAccount::generate("vm@flotilla-test.iam.gserviceaccount.com")
        .expect("instance key");
    let uploader = TestServiceAccount::generate("cache@flotilla-test.iam.gserviceaccount.com")
        .expect("cache key");
    let gcs = FakeGcs::start(Some(instance)).await.expect("fake GCS");
    gcs.create_bucket(BUCKET);
    gcs.allow(&uploader);
    let (_keys, key_path) = key_file(&uploader);
    let (gitlab, token) = fake_gitlab(Default::default()).await;
    let short = flotilla::config::short_token(&token);

    // Shared = false, Path = "ci": objects are ci/runner/<short>/project/77/<key>.
    let with_file = format!(
        "[runners.cache]\nType = \"gcs\"\nPath = \"ci\"\n[runners.cache.gcs]\n\
         BucketName = \"{BUCKET}\"\nCredentialsFile = \"{key_path}\"\nendpoint = \"{url}\"\n",
        url = gcs.url()
    );
    let mgr = manager(&gitlab, &token, &with_file).await;
    let cache =
        json!({"key": "gems", "paths": ["vendor"], "policy": "pull-push", "when": "on_success"});
    let trace = run(
        &gitlab,
        &token,
        cache_job(
            &["mkdir -p vendor", "echo from-gcs > vendor/gem.txt"],
            cache.clone(),
        ),
    )
    .await;
    assert!(trace.contains("No cache found for gems"), "{trace}");
    assert!(trace.contains("Created cache"), "{trace}");
    assert!(
        !trace.contains("X-Goog-Signature"),
        "no signed URL in the trace:\n{trace}"
    );
    let object = format!("ci/runner/{short}/project/77/gems");
    let stored = gcs.object(BUCKET, &object).unwrap_or_else(|| {
        panic!(
            "{object} uploaded; bucket has {:?}",
            gcs.object_names(BUCKET)
        )
    });
    assert_eq!(
        stored.content_type.as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(
        stored.metadata.get("cachekey").map(String::as_str),
        Some("gems")
    );
    let trace = run(
        &gitlab,
        &token,
        cache_job(&["cat vendor/gem.txt"], cache.clone()),
    )
    .await;
    assert!(trace.contains("Successfully extracted cache"), "{trace}");
    assert!(printed(&trace, "from-gcs"), "{trace}");
    mgr.drain().await;
    let refused: Vec<_> = gcs
        .requests()
        .into_iter()
        .filter(|r| r.code.as_deref().is_some_and(|c| c != "NoSuchKey"))
        .collect();
    assert!(refused.is_empty(), "every signature verified: {refused:?}");

    // The same bucket with no credentials configured: the metadata server's account signs
    // through IAM signBlob; job 3 restores what job 1 stored.
    let with_metadata = format!(
        "[runners.cache]\nType = \"gcs\"\nPath = \"ci\"\n[runners.cache.gcs]\n\
         BucketName = \"{BUCKET}\"\nendpoint = \"{url}\"\niam_endpoint = \"{url}\"\n\
         metadata_endpoint = \"{url}\"\n",
        url = gcs.url()
    );
    let mgr = manager(&gitlab, &token, &with_metadata).await;
    let trace = run(&gitlab, &token, cache_job(&["cat vendor/gem.txt"], cache)).await;
    assert!(printed(&trace, "from-gcs"), "{trace}");
    assert!(gcs.sign_blob_calls() > 0, "signBlob signed the URLs");
    mgr.drain().await;
}
