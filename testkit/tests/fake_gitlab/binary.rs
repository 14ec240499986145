//! The `testkit fake-gitlab` binary: prints its URL as the first stdout line and serves the
//! runner and admin APIs with the runner tokens given on the command line.

use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

#[tokio::test]
async fn fake_gitlab_binary_prints_its_url_and_serves() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut child = Command::new(env!("CARGO_BIN_EXE_testkit"))
        .args([
            "fake-gitlab",
            "--listen",
            "127.0.0.1:0",
            "--runner-token",
            "glrt-bin",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn testkit");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("first line in time")
        .expect("read")
        .expect("a line");
    let url = first
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {first}"));
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{url}/api/v4/runners/verify"))
        .json(&json!({"token": "glrt-bin"}))
        .send()
        .await
        .expect("verify");
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    let resp = http
        .post(format!("{url}/admin/jobs"))
        .json(&json!({"runner_token": "glrt-bin", "job": {}}))
        .send()
        .await
        .expect("enqueue");
    assert_eq!(resp.status(), reqwest::StatusCode::CREATED);
    let resp = http
        .post(format!("{url}/api/v4/jobs/request"))
        .json(&json!({"token": "glrt-bin",
                     "info": {"features": {"variables": true, "masking": true}}}))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), reqwest::StatusCode::CREATED);
    child.kill().await.expect("kill");
}
