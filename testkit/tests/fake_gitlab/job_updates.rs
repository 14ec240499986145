//! `PUT jobs/:id` and `PATCH jobs/:id/trace`: two-phase ack, keep-alive, ranges, limits, cancel.

use reqwest::StatusCode;
use serde_json::json;
use testkit::{FakeGitlabOptions, JobState};

use crate::{header, start, RUNNER, WAIT};

#[tokio::test]
async fn two_phase_ack_keepalive_and_final_update() {
    let (fake, runner) = start(FakeGitlabOptions::default()).await;
    let mut acks = fake.subscribe_acks();
    let id = fake.enqueue(RUNNER, json!({"job_info": {"name": "build"}}));
    let (got, token, job) = runner.take_job().await;
    assert_eq!(got, id);
    assert_eq!(job["job_info"]["queue_size"], 1);
    assert_eq!(job["job_info"]["queue_depth"], 1);
    assert_eq!(job["runner_info"]["timeout"], 3600);
    assert_eq!(fake.job(id).unwrap().state, JobState::AwaitingAck);

    let resp = runner.put(id, json!({"state": "running"})).await;
    assert_eq!(
        resp.status(),
        StatusCode::BAD_REQUEST,
        "token must be in the body"
    );
    let resp = runner
        .put(id, json!({"token": "glcbt-wrong", "state": "running"}))
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = runner.patch(id, &token, Some("0-4"), b"hello").await;
    assert_eq!(
        resp.status(),
        StatusCode::FORBIDDEN,
        "no trace before the ack"
    );
    assert_eq!(header(&resp, "job-status").as_deref(), Some("pending"));
    let resp = runner
        .put(id, json!({"token": token, "state": "success"}))
        .await;
    assert_eq!(
        resp.status(),
        StatusCode::BAD_REQUEST,
        "final state before the ack"
    );
    let resp = runner
        .put(id, json!({"token": token, "state": "pending"}))
        .await;
    assert_eq!(resp.status(), StatusCode::OK, "two-phase keep-alive");

    let resp = runner
        .put(
            id,
            json!({"token": token, "state": "running", "output": {}}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "job-status").as_deref(), Some("running"));
    assert_eq!(acks.recv().await.unwrap(), id);
    let rec = fake.job(id).unwrap();
    assert_eq!(rec.state, JobState::Running);
    assert!(rec.acknowledged_at.unwrap() >= rec.handed_out_at.unwrap());

    let resp = runner.append(id, &token, 0, b"hello").await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&resp, "range").as_deref(), Some("0-5"));
    assert_eq!(header(&resp, "job-status").as_deref(), Some("running"));
    let checksum = format!("crc32:{:08x}", crc32fast::hash(b"hello"));
    let keepalive = json!({"token": token, "state": "running",
                           "output": {"checksum": checksum, "bytesize": 5}});
    assert_eq!(runner.put(id, keepalive).await.status(), StatusCode::OK);
    let resp = runner
        .put(id, json!({"token": token, "state": "bogus"}))
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "unknown state");

    let final_update = json!({"token": token, "state": "failed", "failure_reason": "script_failure",
                              "exit_code": 2, "output": {"checksum": checksum, "bytesize": 5}});
    let resp = runner.put(id, final_update.clone()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "job-status").as_deref(), Some("failed"));
    let rec = fake
        .wait_job(id, WAIT, |j| j.state.is_finished())
        .await
        .unwrap();
    assert_eq!(rec.failure_reason.as_deref(), Some("script_failure"));
    assert_eq!(rec.exit_code, Some(2));
    assert!(!rec.checksum_mismatch);
    assert_eq!(rec.trace, b"hello");
    assert_eq!(rec.put_calls, 8);
    let resp = runner.put(id, final_update).await;
    assert_eq!(
        resp.status(),
        StatusCode::FORBIDDEN,
        "a finished job refuses updates"
    );
    assert_eq!(header(&resp, "job-status").as_deref(), Some("failed"));
}

#[tokio::test]
async fn trace_patch_ranges_tokens_and_checksum_mismatch() {
    let (fake, mut runner) = start(FakeGitlabOptions {
        trace_update_interval_secs: Some(7),
        ..FakeGitlabOptions::default()
    })
    .await;
    runner.features["two_phase_job_commit"] = json!(false);
    let id = fake.enqueue(RUNNER, json!({}));
    let (_, token, _) = runner.take_job().await;
    assert_eq!(
        fake.job(id).unwrap().state,
        JobState::Running,
        "no ack without two-phase"
    );

    let resp = runner.append(id, "glcbt-wrong", 0, b"abc").await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = runner.patch(id, &token, None, b"abc").await;
    assert_eq!(
        resp.status(),
        StatusCode::BAD_REQUEST,
        "Content-Range is required"
    );
    let resp = runner.patch(id, &token, Some("0-3"), b"abc").await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "end is inclusive");
    let resp = runner.append(id, &token, 0, b"abc").await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(
        header(&resp, "x-gitlab-trace-update-interval").as_deref(),
        Some("7")
    );
    let resp = runner.append(id, &token, 5, b"def").await;
    assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&resp, "range").as_deref(), Some("0-3"));
    let resp = runner.append(id, &token, 3, b"def").await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&resp, "range").as_deref(), Some("0-6"));

    let resp = runner
        .put(
            id,
            json!({"token": token, "state": "success",
                        "output": {"checksum": "crc32:00000000", "bytesize": 6}}),
        )
        .await;
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "GitLab only logs a checksum mismatch"
    );
    let rec = fake.job(id).unwrap();
    assert_eq!(rec.state, JobState::Success);
    assert!(rec.checksum_mismatch);
    assert_eq!(rec.trace_text(), "abcdef");
    assert_eq!(rec.patch_calls, 6);

    let patches: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect();
    assert_eq!(patches.len(), 6);
    assert_eq!(patches[0].header("content-range"), Some("0-2"));
    assert_eq!(patches[0].query.as_deref(), Some("debug_trace=false"));
    let shown = format!("{:?}", patches[0]);
    assert!(
        !shown.contains("glcbt-wrong"),
        "Debug hides tokens: {shown}"
    );
}

#[tokio::test]
async fn trace_beyond_the_limit_fails_the_job() {
    let (fake, runner) = start(FakeGitlabOptions {
        trace_limit_bytes: 10,
        ..FakeGitlabOptions::default()
    })
    .await;
    let id = fake.enqueue(RUNNER, json!({}));
    let (_, token, _) = runner.take_job().await;
    runner
        .put(id, json!({"token": token, "state": "running"}))
        .await;
    assert_eq!(
        runner.append(id, &token, 0, b"0123456789").await.status(),
        StatusCode::ACCEPTED
    );
    let resp = runner.append(id, &token, 10, b"x").await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let rec = fake.job(id).unwrap();
    assert_eq!(rec.state, JobState::Failed);
    assert_eq!(rec.failure_reason.as_deref(), Some("trace_size_exceeded"));
    let resp = runner
        .put(id, json!({"token": token, "state": "success"}))
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(header(&resp, "job-status").as_deref(), Some("failed"));
}

#[tokio::test]
async fn cancel_pending_and_running_jobs() {
    let (fake, runner) = start(FakeGitlabOptions::default()).await;
    let pending = fake.enqueue(RUNNER, json!({}));
    fake.cancel(pending);
    assert_eq!(fake.job(pending).unwrap().state, JobState::Canceled);
    assert_eq!(runner.request(None).await.status(), StatusCode::NO_CONTENT);

    let id = fake.enqueue(RUNNER, json!({}));
    let (_, token, _) = runner.take_job().await;
    runner
        .put(id, json!({"token": token, "state": "running"}))
        .await;
    fake.cancel(id);
    let resp = runner
        .put(id, json!({"token": token, "state": "running"}))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "job-status").as_deref(), Some("canceling"));
    let resp = runner.append(id, &token, 0, b"bye").await;
    assert_eq!(
        resp.status(),
        StatusCode::ACCEPTED,
        "a canceling job still takes its trace"
    );
    assert_eq!(header(&resp, "job-status").as_deref(), Some("canceling"));
    let resp = runner
        .put(
            id,
            json!({"token": token, "state": "failed", "failure_reason": "script_failure"}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "job-status").as_deref(), Some("canceled"));
    let resp = runner.append(id, &token, 3, b"more").await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(header(&resp, "job-status").as_deref(), Some("canceled"));
}
