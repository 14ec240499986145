//! `PUT /api/v4/jobs/:id`: the acknowledgement (`state=running`, empty output), keep-alives and
//! the final state. Owns the update body and the classification of answers
//! (`createUpdateJobResult`); the trace loop (`trace_upload.rs`) decides when to send.

use reqwest::Method;
use serde::Serialize;

use super::client::{Call, Coordinator, JobCredentials, JobTarget, RunnerEndpoint};
use super::error::CoordinatorError;
use super::info::VersionInfo;
use super::metrics::Endpoint;
use super::remote::RemoteState;
use crate::job::{FailureReason, FinalState, JobState};

/// What the acknowledgement came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// The job is ours: run it.
    Accepted,
    /// The coordinator does not want it run (403, 404, `Job-Status: canceled|failed`, another
    /// client error): drop it silently.
    Abort,
    /// The job was canceled meanwhile (`Job-Status: canceling`): fail it as `job_canceled`.
    Canceling,
}

/// The state a body reports.
#[derive(Debug, Clone, Copy)]
pub(crate) enum WireState {
    Running,
    Final(JobState),
}

/// The `output` object, always sent.
#[derive(Debug, Default, Serialize)]
struct Output {
    #[serde(skip_serializing_if = "Option::is_none")]
    checksum: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytesize: Option<u64>,
}

/// The `PUT jobs/:id` body.
#[derive(Serialize)]
struct UpdateBody<'a> {
    info: &'a VersionInfo,
    token: &'a str,
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    checksum: Option<String>,
    output: Output,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_code: Option<i32>,
}

/// How an update was answered.
#[derive(Debug)]
pub(crate) enum UpdateResult {
    /// 200.
    Succeeded,
    /// 202: accepted, not completed (trace chunks still pending): wait and repeat.
    Accepted,
    /// 412: the trace did not validate: resend it from 0 and repeat.
    TraceValidationFailed,
    /// 403, 404, another client error, or `Job-Status: canceled|failed`.
    Abort,
    /// A server error after retries, or a transport error: retryable.
    Failed(CoordinatorError),
}

/// An update's result with what its headers said.
#[derive(Debug)]
pub(crate) struct UpdateResponse {
    pub(crate) result: UpdateResult,
    pub(crate) remote: RemoteState,
}

/// `createUpdateJobResult`: the result of a status (after `remote` is known).
pub(crate) fn classify_update(status: u16, remote: &RemoteState) -> Option<UpdateResult> {
    Some(match status {
        _ if remote.abort => UpdateResult::Abort,
        200 => UpdateResult::Succeeded,
        202 => UpdateResult::Accepted,
        412 => UpdateResult::TraceValidationFailed,
        400..=499 => UpdateResult::Abort,
        _ => return None,
    })
}

impl Coordinator {
    /// Acknowledges a received job (two-phase commit): `PUT state=running` with an empty output.
    /// A server error after retries or a transport error is returned as `Err`.
    pub async fn acknowledge(
        &self,
        runner: &RunnerEndpoint,
        job: &JobCredentials,
    ) -> Result<AckOutcome, CoordinatorError> {
        let target = JobTarget::new(runner, job.clone())?;
        let response = self
            .update_job(&target, WireState::Running, None, None)
            .await;
        match response.result {
            UpdateResult::Abort => Ok(AckOutcome::Abort),
            UpdateResult::Failed(e) => Err(e),
            _ if response.remote.cancel_requested => Ok(AckOutcome::Canceling),
            _ => Ok(AckOutcome::Accepted),
        }
    }

    /// Fails a job whose trace this process does not hold (a job left running by an earlier
    /// process): a final `PUT state=failed` without a checksum, so GitLab keeps the trace it has.
    /// Done when the coordinator accepted it or no longer wants it (403, 404, canceled); a
    /// server or transport error is returned so the job can be tried again at the next start.
    pub async fn fail_job(
        &self,
        runner: &RunnerEndpoint,
        job: &JobCredentials,
        reason: FailureReason,
    ) -> Result<(), CoordinatorError> {
        let target = JobTarget::new(runner, job.clone())?;
        let fin = FinalState {
            state: JobState::Failed,
            failure_reason: Some(reason),
            exit_code: None,
        };
        let mut attempts = 0;
        loop {
            let response = self
                .update_job(
                    &target,
                    WireState::Final(JobState::Failed),
                    None,
                    Some(&fin),
                )
                .await;
            match response.result {
                UpdateResult::Succeeded | UpdateResult::Abort => return Ok(()),
                UpdateResult::Failed(e) => return Err(e),
                UpdateResult::Accepted | UpdateResult::TraceValidationFailed if attempts < 10 => {
                    attempts += 1;
                    tokio::time::sleep(
                        response
                            .remote
                            .interval
                            .unwrap_or(std::time::Duration::from_secs(1)),
                    )
                    .await;
                }
                UpdateResult::Accepted | UpdateResult::TraceValidationFailed => return Ok(()),
            }
        }
    }

    /// Sends one `PUT jobs/:id`. `trace` is the `(checksum, bytesize)` to report (none on the
    /// acknowledgement); `fin` adds failure reason and exit code to a final state.
    pub(crate) async fn update_job(
        &self,
        target: &JobTarget,
        state: WireState,
        trace: Option<(String, u64)>,
        fin: Option<&FinalState>,
    ) -> UpdateResponse {
        let url = match target.job_url("") {
            Ok(url) => url,
            Err(e) => {
                return UpdateResponse {
                    result: UpdateResult::Failed(e),
                    remote: RemoteState::default(),
                }
            }
        };
        let (state_name, failure_reason) = match state {
            WireState::Running => ("running", None),
            WireState::Final(JobState::Success) => ("success", None),
            WireState::Final(JobState::Failed) => (
                "failed",
                Some(
                    fin.and_then(|f| f.failure_reason)
                        .unwrap_or(FailureReason::ScriptFailure)
                        .as_str(),
                ),
            ),
        };
        let (checksum, bytesize) = match trace {
            Some((checksum, bytesize)) => (Some(checksum), Some(bytesize)),
            None => (None, None),
        };
        let body = UpdateBody {
            info: &self.inner.info,
            token: &target.job.token,
            state: state_name,
            failure_reason,
            checksum: checksum.clone(),
            output: Output { checksum, bytesize },
            exit_code: fin.and_then(|f| f.exit_code).filter(|code| *code != 0),
        };
        let call = Call {
            endpoint: Endpoint::UpdateJob,
            method: Method::PUT,
            url: &url,
            labels: &target.labels,
            tls: &target.tls,
        };
        let sent = self
            .send(&call, |req| {
                req.header("JOB-TOKEN", target.job.token.as_str())
                    .json(&body)
            })
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) => {
                tracing::warn!(job_id = target.job.id, url = %crate::redact::url(&url), state = state_name, error = %e, "job update failed");
                return UpdateResponse {
                    result: UpdateResult::Failed(e),
                    remote: RemoteState::default(),
                };
            }
        };
        let status = response.status().as_u16();
        let remote = RemoteState::from_response(status, response.headers());
        tracing::debug!(job_id = target.job.id, url = %crate::redact::url(&url), state = state_name, status, "job updated");
        let result = classify_update(status, &remote).unwrap_or_else(|| {
            UpdateResult::Failed(CoordinatorError::Status {
                method: "PUT",
                url: crate::redact::url(&url).into_owned(),
                status,
            })
        });
        UpdateResponse { result, remote }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(status: u16, abort: bool) -> &'static str {
        let remote = RemoteState {
            abort,
            ..Default::default()
        };
        match classify_update(status, &remote) {
            Some(UpdateResult::Succeeded) => "ok",
            Some(UpdateResult::Accepted) => "accepted",
            Some(UpdateResult::TraceValidationFailed) => "412",
            Some(UpdateResult::Abort) => "abort",
            Some(UpdateResult::Failed(_)) | None => "failed",
        }
    }

    #[test]
    fn update_results_follow_gitlab_runner() {
        let cases = [
            (200, false, "ok"),
            (200, true, "abort"),
            (202, false, "accepted"),
            (412, false, "412"),
            (403, false, "abort"),
            (404, false, "abort"),
            (400, false, "abort"),
            (409, false, "abort"),
            (500, false, "failed"),
            (503, false, "failed"),
            (301, false, "failed"),
        ];
        for (status, abort, want) in cases {
            assert_eq!(classify(status, abort), want, "{status} {abort}");
        }
    }

    #[test]
    fn bodies_match_the_fixtures_shape() {
        let info = VersionInfo::new("docker", crate::job::FeaturesInfo::implemented());
        let body = UpdateBody {
            info: &info,
            token: "job-token",
            state: "failed",
            failure_reason: Some("script_failure"),
            checksum: Some("crc32:4a3b2c1d".into()),
            output: Output {
                checksum: Some("crc32:4a3b2c1d".into()),
                bytesize: Some(2048),
            },
            exit_code: Some(1),
        };
        let ours = serde_json::to_value(&body).unwrap();
        let path = format!(
            "{}/tests/fixtures/update_job_request_failed_SYNTHESIZED.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let theirs: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let keys = |v: &serde_json::Value| -> Vec<String> {
            v.as_object().unwrap().keys().cloned().collect()
        };
        assert_eq!(keys(&ours), keys(&theirs));
        for key in [
            "token",
            "state",
            "failure_reason",
            "checksum",
            "output",
            "exit_code",
        ] {
            assert_eq!(ours[key], theirs[key], "{key}");
        }
        let ack = UpdateBody {
            info: &info,
            token: "job-token",
            state: "running",
            failure_reason: None,
            checksum: None,
            output: Output::default(),
            exit_code: None,
        };
        let ack = serde_json::to_value(&ack).unwrap();
        assert_eq!(ack["output"], serde_json::json!({}));
        assert!(ack.get("exit_code").is_none() && ack.get("checksum").is_none());
    }
}
