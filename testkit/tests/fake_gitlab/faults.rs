//! Every injectable fault, as a runner sees it.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use testkit::{FakeGitlabOptions, Fault, JobState};

use crate::{header, start, RUNNER, WAIT};

#[tokio::test]
async fn request_faults_status_slow_and_malformed() {
    let (fake, runner) = start(FakeGitlabOptions::default()).await;
    fake.inject(Fault::RequestStatus {
        status: 502,
        times: 2,
    });
    assert_eq!(runner.request(None).await.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(runner.request(None).await.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(runner.request(None).await.status(), StatusCode::NO_CONTENT);

    let delay = Duration::from_millis(300);
    fake.inject(Fault::SlowRequest { delay, times: 1 });
    let started = Instant::now();
    assert_eq!(runner.request(None).await.status(), StatusCode::NO_CONTENT);
    assert!(started.elapsed() >= delay);

    let id = fake.enqueue(RUNNER, json!({}));
    fake.inject(Fault::MalformedNext {
        body: "{not json".into(),
        status: 201,
    });
    let resp = runner.request(None).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.text().await.unwrap(), "{not json");
    assert_eq!(
        fake.job(id).unwrap().state,
        JobState::AwaitingAck,
        "assigned server-side"
    );
}

#[tokio::test]
async fn trace_and_update_faults() {
    let (fake, runner) = start(FakeGitlabOptions::default()).await;
    let id = fake.enqueue(RUNNER, json!({}));
    let (_, token, _) = runner.take_job().await;

    fake.inject(Fault::UpdateStatus {
        status: 503,
        times: 1,
    });
    let ack = json!({"token": token, "state": "running"});
    assert_eq!(
        runner.put(id, ack.clone()).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        fake.job(id).unwrap().state,
        JobState::AwaitingAck,
        "not applied"
    );
    assert_eq!(runner.put(id, ack).await.status(), StatusCode::OK);

    fake.inject(Fault::TraceStatus {
        status: 500,
        times: 1,
    });
    assert_eq!(
        runner.append(id, &token, 0, b"aaaa").await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert!(fake.job(id).unwrap().trace.is_empty());
    assert_eq!(
        runner.append(id, &token, 0, b"aaaa").await.status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        runner.append(id, &token, 4, b"bbbb").await.status(),
        StatusCode::ACCEPTED
    );

    fake.inject(Fault::TraceRangeMismatchAt { job: id, offset: 6 });
    let resp = runner.append(id, &token, 8, b"cccc").await;
    assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&resp, "range").as_deref(), Some("0-6"));
    assert_eq!(fake.job(id).unwrap().trace_text(), "aaaabb");
    assert_eq!(
        runner.append(id, &token, 6, b"bbcccc").await.status(),
        StatusCode::ACCEPTED
    );

    fake.inject(Fault::FinalUpdate412 { job: id, times: 1 });
    fake.inject(Fault::FinalUpdate202 { job: id, times: 1 });
    let done = json!({"token": token, "state": "success", "output": {"bytesize": 12}});
    let resp = runner.put(id, done.clone()).await;
    assert_eq!(resp.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(header(&resp, "job-status").as_deref(), Some("running"));
    let resp = runner.put(id, done.clone()).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert!(header(&resp, "x-gitlab-trace-update-interval").is_some());
    assert_eq!(fake.job(id).unwrap().state, JobState::Running);
    assert_eq!(runner.put(id, done).await.status(), StatusCode::OK);
    let rec = fake.job(id).unwrap();
    assert_eq!(rec.state, JobState::Success);
    assert_eq!(rec.trace_text(), "aaaabbbbcccc");
}

#[tokio::test]
async fn cancel_at_byte_answers_canceling_on_that_patch() {
    let (fake, runner) = start(FakeGitlabOptions::default()).await;
    let id = fake.enqueue(RUNNER, json!({}));
    let (_, token, _) = runner.take_job().await;
    runner
        .put(id, json!({"token": token, "state": "running"}))
        .await;
    fake.inject(Fault::CancelAtByte { job: id, offset: 8 });
    let resp = runner.append(id, &token, 0, b"1234").await;
    assert_eq!(header(&resp, "job-status").as_deref(), Some("running"));
    let resp = runner.append(id, &token, 4, b"5678").await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&resp, "job-status").as_deref(), Some("canceling"));
    let rec = fake
        .wait_job(id, WAIT, |j| j.state == JobState::Canceling)
        .await
        .unwrap();
    assert_eq!(rec.trace.len(), 8);
}
