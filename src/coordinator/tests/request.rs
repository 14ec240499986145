//! Job requests and acknowledgements on the wire.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::*;

#[tokio::test]
async fn job_request_body_headers_and_last_update_echo() {
    let n = Arc::new(AtomicUsize::new(0));
    let stub = Stub::start({
        let n = n.clone();
        move |_| match n.fetch_add(1, Ordering::SeqCst) {
            0 => reply(204, &[("X-GitLab-Last-Update", "v1")], ""),
            1 => reply(204, &[], ""),
            _ => reply(204, &[("X-GitLab-Last-Update", "v2")], ""),
        }
    })
    .await;
    let client = Coordinator::new(settings()).unwrap();
    let runner = runner(&stub);
    let mut poll = PollState::default();

    let first = client.request_job(&runner, &mut poll).await;
    assert!(
        matches!(first, RequestOutcome::NoJob { retry_now: false }),
        "{first:?}"
    );
    assert_eq!(poll.last_update(), Some("v1"));
    let second = client.request_job(&runner, &mut poll).await;
    assert!(
        matches!(second, RequestOutcome::NoJob { retry_now: false }),
        "a 204 at once, bare or not, waits for check_interval: {second:?}"
    );
    assert_eq!(
        poll.last_update(),
        Some("v1"),
        "a bare 204 keeps the old value"
    );
    client.request_job(&runner, &mut poll).await;
    assert_eq!(poll.last_update(), Some("v2"));

    let requests = stub.requests();
    assert_eq!(requests.len(), 3);
    let req = &requests[0];
    assert_eq!(req.method, axum::http::Method::POST);
    assert_eq!(req.uri, "/api/v4/jobs/request");
    assert_eq!(req.header("content-type"), "application/json");
    assert_eq!(req.header("accept"), "application/json");
    assert!(req
        .header("user-agent")
        .starts_with(&format!("flotilla {} (linux/", crate::VERSION)));
    let id = req.header("x-request-id");
    assert!(
        id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()),
        "{id}"
    );
    assert_ne!(id, requests[1].header("x-request-id"));
    let body = req.json();
    assert_eq!(body["token"], RUNNER_TOKEN.as_str());
    assert_eq!(body["system_id"], "s_0123456789ab");
    assert!(body.get("last_update").is_none());
    assert_eq!(body["info"]["name"], "flotilla");
    assert_eq!(body["info"]["executor"], "docker");
    assert_eq!(body["info"]["config"], serde_json::json!({"gpus": ""}));
    let fixture: serde_json::Value = serde_json::from_str(include_str!(
        "../../../tests/fixtures/request_info_features_all_enabled.json"
    ))
    .unwrap();
    let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&body["info"]["features"]), keys(&fixture));
    assert_eq!(requests[1].json()["last_update"], "v1");
    assert_eq!(requests[2].json()["last_update"], "v1");
}

#[tokio::test]
async fn job_request_outcomes() {
    let n = Arc::new(AtomicUsize::new(0));
    let stub = Stub::start({
        let n = n.clone();
        move |_| match n.fetch_add(1, Ordering::SeqCst) {
            0 => reply(
                201,
                &[("Content-Type", "application/json")],
                r#"{"id": 7, "token": "glcbt-JOBSECRETabc", "job_info": {"name": "build"}}"#,
            ),
            1 => reply(
                201,
                &[("Content-Type", "text/html")],
                "<html>gateway</html>",
            ),
            2 => reply(201, &[("Content-Type", "application/json")], r#"{"id": 8}"#),
            3 => reply(403, &[], r#"{"message": "403 Forbidden"}"#),
            4 => reply(409, &[], ""),
            _ => reply(204, &[("X-GitLab-Last-Update", "x")], ""),
        }
    })
    .await;
    let settings = settings();
    let registry = settings.registry.clone();
    let client = Coordinator::new(settings).unwrap();
    let runner = runner(&stub);
    let mut poll = PollState::default();

    match client.request_job(&runner, &mut poll).await {
        RequestOutcome::Job {
            handle, payload, ..
        } => {
            assert_eq!(handle.id, 7);
            assert_eq!(handle.token, JOB_TOKEN);
            assert_eq!(payload["job_info"]["name"], "build");
        }
        other => panic!("expected a job, got {other:?}"),
    }
    for _ in 0..2 {
        let outcome = client.request_job(&runner, &mut poll).await;
        assert!(
            matches!(outcome, RequestOutcome::NoJob { retry_now: false }),
            "{outcome:?}"
        );
    }
    let outcome = client.request_job(&runner, &mut poll).await;
    assert!(
        matches!(outcome, RequestOutcome::Unhealthy(_)),
        "{outcome:?}"
    );
    let outcome = client.request_job(&runner, &mut poll).await;
    assert!(
        matches!(outcome, RequestOutcome::NoJob { retry_now: false }),
        "{outcome:?}"
    );

    let short = crate::config::short_token(&RUNNER_TOKEN);
    assert_eq!(
        counter(
            &registry,
            "flotilla_undecodable_job_responses_total",
            &[("runner", &short)]
        ),
        2
    );
    let labels = [
        ("runner", short.as_str()),
        ("system_id", "s_0123456789ab"),
        ("endpoint", "request_job"),
        ("method", "post"),
    ];
    let with = |status: &'static str| {
        let mut l = labels.to_vec();
        l.push(("status", status));
        counter(&registry, "gitlab_runner_api_request_statuses_total", &l)
    };
    assert_eq!(with("201"), 3);
    assert_eq!(with("403"), 1);
    assert_eq!(with("409"), 1);

    // A transport error is unhealthy too.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let gone = RunnerEndpoint {
        url: format!("http://{addr}"),
        ..runner.clone()
    };
    let outcome = client.request_job(&gone, &mut poll).await;
    assert!(
        matches!(outcome, RequestOutcome::Unhealthy(_)),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn job_request_retries_server_errors() {
    let n = Arc::new(AtomicUsize::new(0));
    let stub = Stub::start({
        let n = n.clone();
        move |_| match n.fetch_add(1, Ordering::SeqCst) {
            0 | 1 => reply(500, &[("Retry-After", "0")], ""),
            2 => reply(
                201,
                &[("Content-Type", "application/json")],
                r#"{"id": 9, "token": "t"}"#,
            ),
            _ => reply(503, &[], ""),
        }
    })
    .await;
    let client = Coordinator::new(settings()).unwrap();
    let runner = runner(&stub);
    let mut poll = PollState::default();
    let outcome = client.request_job(&runner, &mut poll).await;
    assert!(
        matches!(outcome, RequestOutcome::Job { ref handle, .. } if handle.id == 9),
        "{outcome:?}"
    );
    let requests = stub.requests();
    assert_eq!(requests.len(), 3);
    assert!(
        requests
            .iter()
            .all(|r| r.json()["token"] == RUNNER_TOKEN.as_str()),
        "body regenerated per attempt"
    );

    // 503 on every attempt: five attempts, then "no job".
    let outcome = client.request_job(&runner, &mut poll).await;
    assert!(
        matches!(outcome, RequestOutcome::NoJob { retry_now: false }),
        "{outcome:?}"
    );
    assert_eq!(stub.requests().len(), 3 + MAX_ATTEMPTS as usize);
}

#[tokio::test]
async fn acknowledgement_outcomes() {
    let n = Arc::new(AtomicUsize::new(0));
    let stub = Stub::start({
        let n = n.clone();
        move |_| match n.fetch_add(1, Ordering::SeqCst) {
            0 => reply(200, &[], ""),
            1 => reply(200, &[("Job-Status", "canceling")], ""),
            2 => reply(200, &[("Job-Status", "canceled")], ""),
            3 => reply(403, &[], ""),
            4 => reply(404, &[], ""),
            _ => reply(501, &[], ""),
        }
    })
    .await;
    let client = Coordinator::new(settings()).unwrap();
    let runner = runner(&stub);
    let want = [
        AckOutcome::Accepted,
        AckOutcome::Canceling,
        AckOutcome::Abort,
        AckOutcome::Abort,
        AckOutcome::Abort,
    ];
    for expected in want {
        assert_eq!(client.acknowledge(&runner, &job()).await.unwrap(), expected);
    }
    let err = client.acknowledge(&runner, &job()).await.unwrap_err();
    assert_eq!(err.kind(), "status");

    let put = &stub.requests()[0];
    assert_eq!(put.method, axum::http::Method::PUT);
    assert_eq!(put.uri, "/api/v4/jobs/42");
    assert_eq!(put.header("job-token"), JOB_TOKEN);
    assert_eq!(put.header("content-type"), "application/json");
    let body = put.json();
    assert_eq!(body["token"], JOB_TOKEN);
    assert_eq!(body["state"], "running");
    assert_eq!(body["output"], serde_json::json!({}));
    assert!(body.get("exit_code").is_none() && body.get("failure_reason").is_none());
    assert_eq!(body["info"]["features"]["two_phase_job_commit"], true);
}

/// Answers every connection with a 204 after `hold` (a long poll Workhorse held).
async fn held_204_server(hold: std::time::Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = sock.read(&mut buf).await;
                tokio::time::sleep(hold).await;
                let _ = sock
                    .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    format!("http://{addr}/")
}

#[tokio::test]
async fn only_a_held_204_asks_again_at_once() {
    let client = Coordinator::new(settings()).unwrap();
    let mut poll = PollState::default();
    let held =
        held_204_server(crate::coordinator::request::HELD_POLL + Duration::from_millis(200)).await;
    let mut endpoint = runner_at(&held);
    let outcome = client.request_job(&endpoint, &mut poll).await;
    assert!(
        matches!(outcome, RequestOutcome::NoJob { retry_now: true }),
        "{outcome:?}"
    );
    endpoint = runner_at(&held_204_server(Duration::ZERO).await);
    let outcome = client.request_job(&endpoint, &mut poll).await;
    assert!(
        matches!(outcome, RequestOutcome::NoJob { retry_now: false }),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_long_polling_gitlab_saying_the_queue_changed_is_asked_again_at_once() {
    let n = Arc::new(AtomicUsize::new(0));
    let polling = ("Gitlab-Ci-Builds-Polling", "yes");
    let stub = Stub::start({
        let n = n.clone();
        move |_| match n.fetch_add(1, Ordering::SeqCst) {
            // Rails: a first version (nothing was sent).
            0 => reply(204, &[("X-GitLab-Last-Update", "v1"), polling], ""),
            // Rails: the version sent, unchanged.
            1 => reply(204, &[("X-GitLab-Last-Update", "v1"), polling], ""),
            // Workhorse releasing a hold at once (the queue key changed).
            2 => reply(204, &[polling], ""),
            // Rails: a new version (another runner took the job).
            3 => reply(204, &[("X-GitLab-Last-Update", "v2"), polling], ""),
            // No long polling: a new version waits for check_interval as every 204 does.
            _ => reply(204, &[("X-GitLab-Last-Update", "v3")], ""),
        }
    })
    .await;
    let client = Coordinator::new(settings()).unwrap();
    let runner = runner(&stub);
    let mut poll = PollState::default();
    for (i, want) in [true, false, true, true, false].into_iter().enumerate() {
        let outcome = client.request_job(&runner, &mut poll).await;
        assert!(
            matches!(outcome, RequestOutcome::NoJob { retry_now } if retry_now == want),
            "answer {i}: {outcome:?}"
        );
    }
    assert_eq!(poll.last_update(), Some("v3"));
}
