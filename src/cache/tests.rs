//! Plans for local and GCS storage; GCS URLs are checked end to end against the test kit's fake,
//! which verifies V4 signatures with the test service account's public key.

use super::*;
use crate::config::{CacheConfig, GcsCacheConfig, GcsCredentials, Secret};
use crate::job::{Cache, JobVariable};
use testkit::{FakeGcs, TestServiceAccount};

const BUCKET: &str = "flotilla-cache";

fn job(caches: Vec<Cache>) -> JobPayload {
    let mut job: JobPayload = serde_json::from_value(serde_json::json!({
        "id": 7,
        "token": "job-token",
        "job_info": {"name": "build", "project_id": 42},
        "git_info": {"ref": "main"},
        "runner_info": {"timeout": 3600},
    }))
    .unwrap();
    job.cache = caches;
    job
}

fn cache(key: &str, policy: &str, fallback: &[&str]) -> Cache {
    Cache {
        key: key.into(),
        policy: policy.into(),
        paths: vec!["vendor/$SUB".into()],
        when: String::new(),
        untracked: false,
        fallback_keys: fallback.iter().map(|s| s.to_string()).collect(),
    }
}

fn vars(extra: &[(&str, &str)]) -> Variables {
    let mut v = Variables::new(vec![
        JobVariable::plain("CI_COMMIT_REF_SLUG", "main"),
        JobVariable::plain("SUB", "gems"),
    ]);
    for (k, val) in extra {
        v.push(JobVariable::plain(*k, *val));
    }
    v
}

async fn plan(job: &JobPayload, vars: &Variables, config: &CacheConfig) -> CachePlan {
    plan_job(PlanInput {
        job,
        variables: vars,
        cache: &RunnerCache::new(config),
        short_token: "abcdefghi",
    })
    .await
}

fn files(spec: &RestoreSpec) -> Vec<String> {
    spec.sources
        .iter()
        .map(|s| match &s.location {
            Location::File(f) => f.clone(),
            Location::Url(_) => panic!("url"),
        })
        .collect()
}

#[tokio::test]
async fn local_plan_has_keys_fallbacks_and_object_paths() {
    let job = job(vec![cache(
        "deps-$CI_COMMIT_REF_SLUG",
        "",
        &["deps-$MISSING", "deps-default"],
    )]);
    let vars = vars(&[("CACHE_FALLBACK_KEY", "global")]);
    let p = plan(&job, &vars, &CacheConfig::default()).await;
    assert!(p.restore_stage);
    assert_eq!(
        p.local_volume.as_deref(),
        Some("flotilla-runner-abcdefghi-cache")
    );
    assert_eq!(p.restores.len(), 1);
    assert_eq!(p.restores[0].key, "deps-main");
    assert_eq!(p.restores[0].timeout_secs, 600);
    assert_eq!(
        files(&p.restores[0]),
        vec![
            "/cache/runner/abcdefghi/project/42/deps-main/cache.zip",
            "/cache/runner/abcdefghi/project/42/deps-/cache.zip",
            "/cache/runner/abcdefghi/project/42/deps-default/cache.zip",
            "/cache/runner/abcdefghi/project/42/global/cache.zip",
        ]
    );
    assert_eq!(p.archives.len(), 1);
    assert_eq!(p.archives[0].paths, vec!["vendor/gems"]);
    assert!(matches!(&p.archives[0].target,
        Target::File(f) if f == "/cache/runner/abcdefghi/project/42/deps-main/cache.zip"));
    assert_eq!(p.archives_for(true).len(), 1);
    assert!(p.archives_for(false).is_empty());
}

#[tokio::test]
async fn default_key_policy_protected_fallback_and_shared_path() {
    let job = job(vec![
        cache("", "pull", &[]),
        cache("k2", "$POLICY", &[]),
        cache("k3", "bogus", &[]),
    ]);
    let vars = vars(&[
        ("CACHE_FALLBACK_KEY", "main-protected"),
        ("POLICY", "push"),
        ("CACHE_REQUEST_TIMEOUT", "2"),
    ]);
    let config = CacheConfig {
        path: "ci".into(),
        shared: true,
        ..CacheConfig::default()
    };
    let p = plan(&job, &vars, &config).await;
    assert_eq!(p.restores.len(), 1, "{p:?}");
    assert_eq!(p.restores[0].key, "build/main");
    assert_eq!(p.restores[0].timeout_secs, 120);
    assert_eq!(
        files(&p.restores[0]),
        vec!["/cache/ci/project/42/build/main/cache.zip"]
    );
    assert!(p.restore_messages.contains(&Message::Warning(
        "CACHE_FALLBACK_KEY \"main-protected\" not allowed to end in \"-protected\"".into()
    )));
    assert!(p.restore_messages.contains(&Message::Notice(
        "Not downloading cache k2 due to policy".into()
    )));
    assert!(p
        .restore_messages
        .iter()
        .any(|m| matches!(m, Message::Warning(w) if w.contains("unknown cache policy \"bogus\""))));
    assert_eq!(p.archives.len(), 1);
    assert_eq!(p.archives[0].key, "k2");
    assert!(p.archive_messages.contains(&Message::Notice(
        "Not uploading cache build/main due to policy".into()
    )));
}

#[tokio::test]
async fn no_paths_means_no_stage() {
    let mut c = cache("k", "", &[]);
    c.paths.clear();
    let p = plan(&job(vec![c]), &vars(&[]), &CacheConfig::default()).await;
    assert!(!p.restore_stage);
    assert!(p.local_volume.is_none());
    assert!(p.restores.is_empty() && p.archives.is_empty());
}

fn gcs_config(fake: &FakeGcs, credentials: GcsCredentials) -> CacheConfig {
    CacheConfig {
        storage: CacheStorage::Gcs(GcsCacheConfig {
            bucket_name: BUCKET.into(),
            credentials,
            endpoint: fake.url(),
            iam_endpoint: fake.url(),
            metadata_endpoint: fake.url(),
        }),
        max_uploaded_archive_size: 1000,
        ..CacheConfig::default()
    }
}

/// PUTs through the plan's upload URL, then GETs and HEADs through its download URL.
async fn round_trip(p: &CachePlan, fake: &FakeGcs) {
    let http = reqwest::Client::new();
    let Target::Url { url, headers } = &p.archives[0].target else {
        panic!("not a url");
    };
    let mut put = http.put(url).body("zip-bytes");
    for (k, v) in headers {
        put = put.header(k, v);
    }
    let answer = put.send().await.unwrap();
    assert_eq!(answer.status(), 200, "{}", answer.text().await.unwrap());
    let object = "runner/abcdefghi/project/42/deps-main";
    let stored = fake.object(BUCKET, object).expect("stored");
    assert_eq!(stored.data, "zip-bytes");
    assert_eq!(
        stored.content_type.as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(stored.metadata["cachekey"], "deps-main");

    let Location::Url(get) = &p.restores[0].sources[0].location else {
        panic!("not a url");
    };
    let answer = http.get(get).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().await.unwrap(), "zip-bytes");
    // The fallback's object does not exist: GCS's 404 NoSuchKey.
    let Location::Url(fallback) = &p.restores[0].sources[1].location else {
        panic!("not a url");
    };
    let answer = http.get(fallback).send().await.unwrap();
    assert_eq!(answer.status(), 404);
    assert!(answer
        .text()
        .await
        .unwrap()
        .contains("<Code>NoSuchKey</Code>"));
}

#[tokio::test]
async fn gcs_urls_from_a_key_file_verify_and_round_trip() {
    let account =
        TestServiceAccount::generate("cache@flotilla-test.iam.gserviceaccount.com").unwrap();
    let fake = FakeGcs::start(None).await.unwrap();
    fake.create_bucket(BUCKET);
    fake.allow(&account);
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key.json");
    std::fs::write(&key_file, account.key_file_json()).unwrap();
    let config = gcs_config(&fake, GcsCredentials::File(key_file));
    let job = job(vec![cache("deps-$CI_COMMIT_REF_SLUG", "", &["other"])]);
    let p = plan(&job, &vars(&[]), &config).await;
    assert!(p.local_volume.is_none());
    assert!(p.restore_messages.is_empty(), "{:?}", p.restore_messages);
    round_trip(&p, &fake).await;

    // Tampering with what was signed is refused; so is a URL past its expiry.
    let Target::Url { url, headers } = &p.archives[0].target else {
        panic!();
    };
    let http = reqwest::Client::new();
    let mut put = http.put(url).body("x");
    for (k, v) in headers {
        let v = if k == "x-goog-meta-cachekey" {
            "other"
        } else {
            v.as_str()
        };
        put = put.header(k, v);
    }
    let answer = put.send().await.unwrap();
    assert_eq!(answer.status(), 403);
    assert!(answer
        .text()
        .await
        .unwrap()
        .contains("SignatureDoesNotMatch"));
    // Larger than MaxUploadedArchiveSize (signed x-goog-content-length-range).
    let mut put = http.put(url).body(vec![0u8; 2000]);
    for (k, v) in headers {
        put = put.header(k, v);
    }
    let answer = put.send().await.unwrap();
    assert_eq!(answer.status(), 400);
    assert!(answer.text().await.unwrap().contains("EntityTooLarge"));
    fake.skew_clock(3601);
    let Location::Url(get) = &p.restores[0].sources[0].location else {
        panic!();
    };
    let answer = http.get(get).send().await.unwrap();
    assert_eq!(answer.status(), 400);
    assert!(answer.text().await.unwrap().contains("ExpiredToken"));
}

#[tokio::test]
async fn gcs_urls_signed_by_iam_sign_blob_with_the_metadata_servers_account() {
    let account = TestServiceAccount::generate("vm@flotilla-test.iam.gserviceaccount.com").unwrap();
    let fake = FakeGcs::start(Some(account)).await.unwrap();
    fake.create_bucket(BUCKET);
    let config = gcs_config(&fake, GcsCredentials::MetadataServer);
    let job = job(vec![cache("deps-main", "", &["other"])]);
    let p = plan(&job, &vars(&[]), &config).await;
    assert!(p.restore_messages.is_empty(), "{:?}", p.restore_messages);
    assert!(
        fake.sign_blob_calls() >= 3,
        "GET ×2 and PUT were signed by signBlob"
    );
    round_trip(&p, &fake).await;
}

#[tokio::test]
async fn bad_credentials_are_a_warning_not_a_failure() {
    let fake = FakeGcs::start(None).await.unwrap();
    let config = gcs_config(
        &fake,
        GcsCredentials::Key {
            access_id: "a@b".into(),
            private_key: Secret("not a key".into()),
        },
    );
    let p = plan(&job(vec![cache("k", "", &[])]), &vars(&[]), &config).await;
    assert!(p.restores.is_empty() && p.archives.is_empty());
    assert!(matches!(&p.restore_messages[0],
        Message::Warning(w) if w.contains("Failed to obtain GCS credentials")));
    let missing = gcs_config(&fake, GcsCredentials::File("/nonexistent/key.json".into()));
    let p = plan(&job(vec![cache("k", "", &[])]), &vars(&[]), &missing).await;
    assert!(matches!(&p.archive_messages[0],
        Message::Warning(w) if w.contains("/nonexistent/key.json")));
}

#[tokio::test]
async fn head_urls_answer_without_a_body_and_404_when_missing() {
    let account =
        TestServiceAccount::generate("head@flotilla-test.iam.gserviceaccount.com").unwrap();
    let fake = FakeGcs::start(None).await.unwrap();
    fake.create_bucket(BUCKET);
    fake.allow(&account);
    fake.put_object(BUCKET, "p/o", "12345");
    let CacheStorage::Gcs(config) = gcs_config(
        &fake,
        GcsCredentials::Key {
            access_id: account.email.clone(),
            private_key: Secret(account.private_key_pem()),
        },
    )
    .storage
    else {
        unreachable!()
    };
    let signer = gcs::GcsSigner::new(&config, reqwest::Client::new())
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let valid = std::time::Duration::from_secs(60);
    let answer = http
        .head(signer.head_url("p/o", valid).await.unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["content-length"], "5");
    let missing = http
        .head(signer.head_url("p/missing", valid).await.unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    // A GET URL is not a HEAD URL: the method is signed.
    let get = signer.get_url("p/o", valid).await.unwrap();
    let answer = http.head(get).send().await.unwrap();
    assert_eq!(answer.status(), 403);
}

/// Issue 13: credentials are resolved once per runner, not per job. The key file is read for
/// the first job only: removed afterwards, later jobs still sign; a new `RunnerCache` (what a
/// reload makes) reads it again and fails without it.
#[tokio::test]
async fn credentials_are_resolved_once_per_runner_and_again_after_a_reload() {
    let account =
        TestServiceAccount::generate("once@flotilla-test.iam.gserviceaccount.com").unwrap();
    let fake = FakeGcs::start(None).await.unwrap();
    fake.create_bucket(BUCKET);
    fake.allow(&account);
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key.json");
    std::fs::write(&key_file, account.key_file_json()).unwrap();
    let config = gcs_config(&fake, GcsCredentials::File(key_file.clone()));
    let runner = RunnerCache::new(&config);
    assert!(!runner.has_signer().await, "nothing resolved before a job");
    let job = job(vec![cache("k", "", &[])]);
    let no_vars = Variables::new(Vec::new());
    let input = || PlanInput {
        job: &job,
        variables: &no_vars,
        cache: &runner,
        short_token: "abcdefghi",
    };
    let first = plan_job(input()).await;
    assert!(matches!(first.archives[0].target, Target::Url { .. }));
    assert!(runner.has_signer().await);
    std::fs::remove_file(&key_file).unwrap();
    for _ in 0..3 {
        let later = plan_job(input()).await;
        assert!(
            matches!(later.archives[0].target, Target::Url { .. }),
            "{:?}",
            later.archive_messages
        );
    }
    let reloaded = RunnerCache::new(&config);
    let after_reload = plan_job(PlanInput {
        cache: &reloaded,
        ..input()
    })
    .await;
    assert!(after_reload.archives.is_empty());
    assert!(!reloaded.has_signer().await, "a failure is not kept");
}
