//! The `/admin` HTTP API.

use reqwest::StatusCode;
use serde_json::{json, Value};
use testkit::{FakeGitlab, FakeGitlabOptions};

use crate::{client, Runner, RUNNER};

#[tokio::test]
async fn admin_api_drives_the_fake() {
    let fake = FakeGitlab::start(FakeGitlabOptions::default())
        .await
        .unwrap();
    let http = client();
    let base = fake.url();
    let resp = http
        .post(format!("{base}/admin/runners"))
        .json(&json!({"token": RUNNER}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let resp = http
        .post(format!("{base}/admin/jobs"))
        .json(&json!({"runner_token": RUNNER, "job": {"job_info": {"name": "lint"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let id = resp.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let fault = json!({"kind": "request_status", "status": 500, "times": 1});
    let resp = http
        .post(format!("{base}/admin/faults"))
        .json(&fault)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);

    let runner = Runner::new(&fake);
    assert_eq!(
        runner.request(None).await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let (got, token, job) = runner.take_job().await;
    assert_eq!(got, id);
    assert_eq!(job["job_info"]["name"], "lint");
    runner
        .put(id, json!({"token": token, "state": "running"}))
        .await;
    runner.append(id, &token, 0, b"ok\n").await;

    let resp = http
        .post(format!("{base}/admin/jobs/{id}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let view: Value = http
        .get(format!("{base}/admin/jobs/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["state"], "canceling");
    assert_eq!(view["trace"], "ok\n");
    assert_eq!(view["patch_calls"], 1);
    let resp = http
        .get(format!("{base}/admin/jobs/999"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(fake
        .requests()
        .iter()
        .all(|r| !r.path.starts_with("/admin")));
}
