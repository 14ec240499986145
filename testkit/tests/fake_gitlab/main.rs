//! The test kit's integration tests (one binary): the fake GitLab over real HTTP on loopback, as
//! a runner sees it (validation and authentication answers, long polling, the two-phase ack,
//! trace ranges and limits, the feature check, cancel, every fault, the admin API, shutdown, git
//! over smart HTTP) and the `testkit` binary. This file holds the shared runner helper.

mod admin;
mod artifacts;
mod binary;
mod faults;
mod git;
mod job_updates;
mod polling;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use testkit::{FakeGitlab, FakeGitlabOptions};

pub const RUNNER: &str = "glrt-test-runner-token";
pub const WAIT: Duration = Duration::from_secs(5);

pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::Client::builder().build().expect("reqwest client")
}

/// Features of a runner like Flotilla's: two-phase commit and graceful cancel, no services.
pub fn features() -> Value {
    json!({
        "variables": true, "image": true, "services": false, "artifacts": false, "cache": false,
        "masking": true, "multi_build_steps": true, "two_phase_job_commit": true,
        "cancel_gracefully": true, "return_exit_code": true
    })
}

/// A runner talking to the fake.
pub struct Runner {
    http: reqwest::Client,
    url: String,
    token: String,
    features: Value,
}

impl Runner {
    fn new(fake: &FakeGitlab) -> Self {
        fake.add_runner(RUNNER);
        Runner {
            http: client(),
            url: fake.url(),
            token: RUNNER.to_owned(),
            features: features(),
        }
    }

    async fn request(&self, last_update: Option<&str>) -> reqwest::Response {
        let mut body = json!({"token": self.token, "info": {"features": self.features}});
        if let Some(lu) = last_update {
            body["last_update"] = json!(lu);
        }
        self.http
            .post(format!("{}/api/v4/jobs/request", self.url))
            .header("RUNNER-TOKEN", &self.token)
            .json(&body)
            .send()
            .await
            .expect("jobs/request")
    }

    /// Requests and expects a job: returns (id, job token, payload).
    async fn take_job(&self) -> (i64, String, Value) {
        let resp = self.request(None).await;
        assert_eq!(resp.status(), StatusCode::CREATED);
        assert_eq!(
            header(&resp, "content-type").as_deref(),
            Some("application/json")
        );
        let job: Value = resp.json().await.expect("job json");
        let id = job["id"].as_i64().expect("id");
        let token = job["token"].as_str().expect("token").to_owned();
        (id, token, job)
    }

    async fn put(&self, id: i64, body: Value) -> reqwest::Response {
        self.http
            .put(format!("{}/api/v4/jobs/{id}", self.url))
            .json(&body)
            .send()
            .await
            .expect("PUT job")
    }

    async fn patch(
        &self,
        id: i64,
        token: &str,
        range: Option<&str>,
        data: &[u8],
    ) -> reqwest::Response {
        let mut req = self
            .http
            .patch(format!(
                "{}/api/v4/jobs/{id}/trace?debug_trace=false",
                self.url
            ))
            .header("JOB-TOKEN", token)
            .header("Content-Type", "text/plain")
            .body(data.to_vec());
        if let Some(range) = range {
            req = req.header("Content-Range", range);
        }
        req.send().await.expect("PATCH trace")
    }

    /// PATCHes `data` at `start` with a correct inclusive range.
    async fn append(&self, id: i64, token: &str, start: usize, data: &[u8]) -> reqwest::Response {
        let range = format!("{start}-{}", start + data.len() - 1);
        self.patch(id, token, Some(&range), data).await
    }
}

pub fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

pub async fn start(opts: FakeGitlabOptions) -> (FakeGitlab, Runner) {
    let fake = FakeGitlab::start(opts).await.expect("fake gitlab starts");
    let runner = Runner::new(&fake);
    (fake, runner)
}
