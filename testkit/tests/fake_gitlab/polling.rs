//! `jobs/request` (validation, long polling, the runner-feature check) and the runner endpoints.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use testkit::{FakeGitlabOptions, JobState};

use crate::{client, header, start, RUNNER, WAIT};

#[tokio::test]
async fn jobs_request_validates_token_and_content_type() {
    let (fake, runner) = start(FakeGitlabOptions::default()).await;
    let url = format!("{}/api/v4/jobs/request", fake.url());

    let resp = runner
        .http
        .post(&url)
        .header("RUNNER-TOKEN", RUNNER)
        .json(&json!({"info": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::BAD_REQUEST,
        "token only in the header"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "token is missing");

    let resp = runner
        .http
        .post(&url)
        .json(&json!({"token": "glrt-unknown"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    let resp = runner
        .http
        .post(&url)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("token={RUNNER}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let resp = runner.request(None).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let version = header(&resp, "x-gitlab-last-update").expect("queue version on 204");
    let resp = runner.request(Some(&version)).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&resp, "x-gitlab-last-update"), Some(version));
    assert_eq!(
        header(&resp, "gitlab-ci-builds-polling"),
        None,
        "no long polling, no polling header"
    );
}

#[tokio::test]
async fn long_poll_is_held_and_ended_by_a_bare_204_on_enqueue() {
    let hold = Duration::from_secs(30);
    let (fake, runner) = start(FakeGitlabOptions {
        long_poll: hold,
        ..FakeGitlabOptions::default()
    })
    .await;
    let first = runner.request(None).await;
    assert_eq!(first.status(), StatusCode::NO_CONTENT);
    let version = header(&first, "x-gitlab-last-update").expect("version");

    let held = {
        let version = version.clone();
        let http = runner.http.clone();
        let url = format!("{}/api/v4/jobs/request", fake.url());
        tokio::spawn(async move {
            http.post(url)
                .json(&json!({"token": RUNNER, "last_update": version}))
                .send()
                .await
        })
    };
    fake.wait_held_polls(1, WAIT).await.expect("poll is held");
    let enqueued = Instant::now();
    let id = fake.enqueue(RUNNER, json!({}));
    let resp = tokio::time::timeout(WAIT, held)
        .await
        .expect("held poll ends well before the hold time")
        .expect("task")
        .expect("response");
    assert!(enqueued.elapsed() < Duration::from_secs(2));
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&resp, "x-gitlab-last-update"), None, "bare 204");
    assert_eq!(
        header(&resp, "gitlab-ci-builds-polling").as_deref(),
        Some("yes")
    );
    assert_eq!(fake.held_polls(), 0);

    let resp = runner.request(Some(&version)).await;
    assert_eq!(
        resp.status(),
        StatusCode::CREATED,
        "the job comes with the next request"
    );
    assert_eq!(
        header(&resp, "gitlab-ci-builds-polling").as_deref(),
        Some("yes"),
        "Workhorse marks the answers it passes on from Rails too"
    );
    let job: Value = resp.json().await.unwrap();
    assert_eq!(job["id"], id);
}

#[tokio::test]
async fn long_poll_times_out_with_a_bare_204() {
    let hold = Duration::from_millis(300);
    let (_fake, runner) = start(FakeGitlabOptions {
        long_poll: hold,
        ..FakeGitlabOptions::default()
    })
    .await;
    let version = header(&runner.request(None).await, "x-gitlab-last-update").unwrap();
    let started = Instant::now();
    let resp = runner.request(Some(&version)).await;
    assert!(started.elapsed() >= hold, "held for the hold time");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&resp, "x-gitlab-last-update"), None);
    let resp = runner.request(Some("stale-version")).await;
    assert_eq!(
        resp.status(),
        StatusCode::NO_CONTENT,
        "a stale version is answered at once"
    );
    assert!(header(&resp, "x-gitlab-last-update").is_some());
}

#[tokio::test]
async fn unsupported_jobs_fail_and_the_next_one_is_handed_out() {
    let (fake, runner) = start(FakeGitlabOptions::default()).await;
    let needs_services = fake.enqueue(RUNNER, json!({"services": [{"name": "postgres:16"}]}));
    let plain = fake.enqueue(RUNNER, json!({}));
    let (got, _, job) = runner.take_job().await;
    assert_eq!(got, plain);
    assert_eq!(job["job_info"]["queue_size"], 2);
    assert_eq!(job["job_info"]["queue_depth"], 2);
    let rec = fake.job(needs_services).unwrap();
    assert_eq!(rec.state, JobState::Failed);
    assert_eq!(rec.failure_reason.as_deref(), Some("runner_unsupported"));
    assert!(rec.handed_out_at.is_none());

    let hinted = fake.enqueue(RUNNER, json!({"_requires": ["vault_secrets"]}));
    assert_eq!(runner.request(None).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        fake.job(hinted).unwrap().failure_reason.as_deref(),
        Some("runner_unsupported")
    );
}

#[tokio::test]
async fn verify_and_unregister_runner() {
    let (fake, runner) = start(FakeGitlabOptions::default()).await;
    let verify = format!("{}/api/v4/runners/verify", fake.url());
    let resp = runner
        .http
        .post(&verify)
        .json(&json!({"token": RUNNER}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["token"], RUNNER);
    assert!(body["id"].as_i64().is_some());
    assert!(body["token_expires_at"].is_null());
    let resp = runner
        .http
        .post(&verify)
        .json(&json!({"token": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    let runners = format!("{}/api/v4/runners", fake.url());
    let resp = runner
        .http
        .delete(&runners)
        .json(&json!({"token": RUNNER}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = runner
        .http
        .delete(&runners)
        .json(&json!({"token": RUNNER}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(runner.request(None).await.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn shutdown_ends_held_polls_and_stops_serving() {
    let (fake, runner) = start(FakeGitlabOptions {
        long_poll: Duration::from_secs(60),
        ..FakeGitlabOptions::default()
    })
    .await;
    let version = header(&runner.request(None).await, "x-gitlab-last-update").unwrap();
    let held = {
        let http = runner.http.clone();
        let url = format!("{}/api/v4/jobs/request", fake.url());
        tokio::spawn(async move {
            http.post(url)
                .json(&json!({"token": RUNNER, "last_update": version}))
                .send()
                .await
        })
    };
    fake.wait_held_polls(1, WAIT).await.unwrap();
    tokio::time::timeout(WAIT, fake.shutdown())
        .await
        .expect("shutdown does not wait for the hold time");
    let resp = held.await.unwrap().expect("held poll answered");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let fresh = client();
    let err = fresh
        .post(format!("{}/api/v4/jobs/request", fake.url()))
        .json(&json!({"token": RUNNER}))
        .send()
        .await;
    assert!(err.is_err(), "server stopped");
}
