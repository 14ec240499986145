//! End-to-end job runs: the fake GitLab hands jobs to the in-process manager, which runs them on
//! the real Docker engine; assertions read what the fake received.

use crate::harness::*;
use std::time::Duration;
use testkit::{FakeGitlabOptions, Fault, JobState};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_succeeds_and_its_trace_arrives() {
    ensure_test_image();
    let (gitlab, token) = fake_gitlab(FakeGitlabOptions::default()).await;
    let manager = InProcessManager::start(&gitlab, &token, "", "");
    let id = gitlab.enqueue(
        &token,
        job(&["echo hello from the job", "echo second line"], &[]),
    );
    let (record, trace) = finished(&gitlab, id).await;
    assert_eq!(record.state, JobState::Success, "trace:\n{trace}");
    assert!(trace.contains("hello from the job"), "trace:\n{trace}");
    assert!(trace.contains("second line"), "trace:\n{trace}");
    assert!(trace.contains("Job succeeded"), "trace:\n{trace}");
    assert!(containers_of_job(&token, id).is_empty());
    manager.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_7_fails_with_script_failure_and_runs_after_script() {
    ensure_test_image();
    let (gitlab, token) = fake_gitlab(FakeGitlabOptions::default()).await;
    let manager = InProcessManager::start(&gitlab, &token, "", "");
    let id = gitlab.enqueue(
        &token,
        job(
            &["echo before the failure", "exit 7", "echo never printed"],
            &["echo after script ran with $CI_JOB_STATUS"],
        ),
    );
    let (record, trace) = finished(&gitlab, id).await;
    assert_eq!(record.state, JobState::Failed, "trace:\n{trace}");
    assert_eq!(record.failure_reason.as_deref(), Some("script_failure"));
    assert_eq!(record.exit_code, Some(7));
    assert!(trace.contains("before the failure"), "trace:\n{trace}");
    assert!(!trace.contains("\nnever printed"), "trace:\n{trace}");
    assert!(
        trace.contains("after script ran with failed"),
        "trace:\n{trace}"
    );
    manager.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_its_timeout_fails_and_leaves_no_container() {
    ensure_test_image();
    let (gitlab, token) = fake_gitlab(FakeGitlabOptions::default()).await;
    let manager = InProcessManager::start(&gitlab, &token, "", "");
    let mut payload = job(
        &["echo started", "sleep 60"],
        &["echo cleanup after $CI_JOB_STATUS"],
    );
    payload["runner_info"] = serde_json::json!({"timeout": 3});
    let id = gitlab.enqueue(&token, payload);
    let (record, trace) = finished(&gitlab, id).await;
    assert_eq!(record.state, JobState::Failed, "trace:\n{trace}");
    assert_eq!(
        record.failure_reason.as_deref(),
        Some("job_execution_timeout"),
        "trace:\n{trace}"
    );
    assert!(trace.contains("cleanup after timedout"), "trace:\n{trace}");
    assert!(
        containers_of_job(&token, id).is_empty(),
        "containers left: {:?}",
        containers_of_job(&token, id)
    );
    manager.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canceled_job_runs_after_script_and_leaves_no_container() {
    ensure_test_image();
    let (gitlab, token) = fake_gitlab(fast_trace()).await;
    let manager = InProcessManager::start(&gitlab, &token, "", "");
    let id = gitlab.enqueue(
        &token,
        job(
            &["echo waiting-for-cancel", "sleep 120"],
            &["echo after-cancel-$CI_JOB_STATUS"],
        ),
    );
    trace_shows(&gitlab, id, "waiting-for-cancel").await;
    gitlab.cancel(id);
    let (record, trace) = finished(&gitlab, id).await;
    assert!(trace.contains("after-cancel-canceled"), "trace:\n{trace}");
    assert_eq!(record.state, JobState::Canceled, "trace:\n{trace}");
    eventually("job containers removed", DEADLINE, || {
        containers_of_job(&token, id).is_empty()
    })
    .await;
    manager.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_mismatch_resyncs_the_trace() {
    ensure_test_image();
    let (gitlab, token) = fake_gitlab(fast_trace()).await;
    let manager = InProcessManager::start(&gitlab, &token, "", "");
    let id = gitlab.enqueue(
        &token,
        job(
            &["for i in 1 2 3 4 5 6; do echo line-$i; sleep 1; done"],
            &[],
        ),
    );
    gitlab.inject(Fault::TraceRangeMismatchAt {
        job: id,
        offset: 10,
    });
    let (record, trace) = finished(&gitlab, id).await;
    assert_eq!(record.state, JobState::Success, "trace:\n{trace}");
    for i in 1..=6 {
        assert_eq!(
            trace.matches(&format!("line-{i}\n")).count(),
            1,
            "line-{i} once in:\n{trace}"
        );
    }
    assert_eq!(record.reported_bytesize, Some(record.trace.len() as u64));
    manager.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_412_on_the_final_update_resends_the_trace() {
    ensure_test_image();
    let (gitlab, token) = fake_gitlab(FakeGitlabOptions::default()).await;
    let manager = InProcessManager::start(&gitlab, &token, "", "");
    let id = gitlab.enqueue(&token, job(&["echo resend-me"], &[]));
    gitlab.inject(Fault::FinalUpdate412 { job: id, times: 1 });
    let (record, trace) = finished(&gitlab, id).await;
    assert_eq!(record.state, JobState::Success, "trace:\n{trace}");
    assert_eq!(
        trace.lines().filter(|l| l.ends_with("O resend-me")).count(),
        1,
        "the output once:\n{trace}"
    );
    let path = format!("/api/v4/jobs/{id}");
    let requests = gitlab.requests();
    let rejected = requests
        .iter()
        .position(|r| r.method == "PUT" && r.path == path && r.status == 412)
        .expect("a final update answered 412");
    let resent = requests[rejected..].iter().any(|r| {
        r.method == "PATCH"
            && r.header("content-range")
                .is_some_and(|c| c.starts_with("0-"))
    });
    assert!(resent, "the trace was resent from offset 0 after the 412");
    manager.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masked_values_never_reach_the_trace() {
    ensure_test_image();
    let (gitlab, token) = fake_gitlab(FakeGitlabOptions::default()).await;
    let manager = InProcessManager::start(&gitlab, &token, "", "");
    let secret = "s3cr3t-Value-42x";
    let payload = with_variable(
        job(
            &[
                "echo whole:$MY_SECRET",
                "printf 's3cr3t-'; sleep 0.3; printf 'Value-42x\\n'",
                "echo $CI_JOB_TOKEN",
            ],
            &[],
        ),
        "MY_SECRET",
        secret,
        true,
    );
    let id = gitlab.enqueue(&token, payload);
    let (record, trace) = finished(&gitlab, id).await;
    assert_eq!(record.state, JobState::Success, "trace:\n{trace}");
    assert!(!trace.contains(secret), "secret leaked:\n{trace}");
    assert!(trace.contains("whole:[MASKED]"), "trace:\n{trace}");
    let job_token = gitlab.job(id).unwrap().token;
    assert!(!trace.contains(&job_token), "job token leaked:\n{trace}");
    assert!(trace.matches("[MASKED]").count() >= 3, "trace:\n{trace}");
    manager.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_on_request_and_trace_are_retried() {
    ensure_test_image();
    let (gitlab, token) = fake_gitlab(fast_trace()).await;
    gitlab.inject(Fault::RequestStatus {
        status: 500,
        times: 2,
    });
    gitlab.inject(Fault::TraceStatus {
        status: 502,
        times: 2,
    });
    let manager = InProcessManager::start(&gitlab, &token, "", "");
    let id = gitlab.enqueue(&token, job(&["echo survived-the-errors", "sleep 2"], &[]));
    let (record, trace) = finished(&gitlab, id).await;
    assert_eq!(record.state, JobState::Success, "trace:\n{trace}");
    assert!(trace.contains("survived-the-errors"));
    let statuses: Vec<u16> = gitlab.requests().iter().map(|r| r.status).collect();
    assert!(
        statuses.iter().filter(|s| **s == 500).count() >= 2,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().filter(|s| **s == 502).count() >= 2,
        "{statuses:?}"
    );
    manager.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_payload_fails_that_job_and_the_runner_goes_on() {
    ensure_test_image();
    let (gitlab, token) = fake_gitlab(FakeGitlabOptions::default()).await;
    let mut bad = job(&["echo unreachable"], &[]);
    bad["steps"] = serde_json::json!("not a list");
    let bad_id = gitlab.enqueue(&token, bad);
    let good_id = gitlab.enqueue(&token, job(&["echo the-next-job"], &[]));
    let manager = InProcessManager::start(&gitlab, &token, "", "");
    let bad = gitlab
        .wait_job(bad_id, DEADLINE, |j| j.state.is_finished())
        .await
        .unwrap();
    assert_eq!(bad.state, JobState::Failed);
    assert_eq!(bad.failure_reason.as_deref(), Some("runner_system_failure"));
    let bad_trace = String::from_utf8_lossy(&bad.trace).to_string();
    assert!(
        bad_trace.contains("could not be decoded"),
        "trace:\n{bad_trace}"
    );
    let good = gitlab
        .wait_job(good_id, DEADLINE, |j| j.state.is_finished())
        .await
        .unwrap();
    assert_eq!(good.state, JobState::Success);
    manager.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_reports_running_jobs_and_removes_their_containers() {
    ensure_test_image();
    let (gitlab, token) = fake_gitlab(fast_trace()).await;
    let manager = InProcessManager::start(&gitlab, &token, "", "");
    let id = gitlab.enqueue(&token, job(&["echo long-running", "sleep 300"], &[]));
    trace_shows(&gitlab, id, "long-running").await;
    manager
        .controls
        .send(flotilla::lifecycle::Control::Abort)
        .await
        .unwrap();
    let exited = tokio::time::timeout(Duration::from_secs(30), manager.task).await;
    assert!(
        exited.is_ok(),
        "manager did not exit within shutdown_timeout"
    );
    let record = gitlab.job(id).unwrap();
    assert_eq!(record.state, JobState::Failed);
    assert_eq!(
        record.failure_reason.as_deref(),
        Some("runner_system_failure"),
        "runner_interrupted is not listed by the job, so runner_system_failure"
    );
    assert!(
        containers_of_job(&token, id).is_empty(),
        "containers left: {:?}",
        containers_of_job(&token, id)
    );
}

/// Issue 16: a job whose trace cannot be made (its temp directory is missing) used to stay in
/// `jobs.json` forever; the task's `JobRecord` guard now removes it on that exit too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_trace_cannot_be_made_leaves_jobs_json() {
    let (gitlab, token) = fake_gitlab(FakeGitlabOptions::default()).await;
    let state_dir = tempfile::tempdir().expect("tempdir");
    // One slot: the next job request comes only after the job task has ended.
    let text = config_text(&gitlab.url(), &token, state_dir.path(), "", "")
        .replace("concurrent = 4", "concurrent = 1");
    let hooks = flotilla::manager::Hooks {
        trace_dir: Some(state_dir.path().join("no-such-directory")),
        ..Default::default()
    };
    let manager =
        InProcessManager::start_with(config(&text), tempfile::tempdir().expect("tempdir"), hooks);
    let id = gitlab.enqueue(&token, job(&["echo never runs"], &[]));
    eventually(
        "the job's task ended and the slot came back",
        DEADLINE,
        || {
            let Some(handed_out) = gitlab.job(id).and_then(|j| j.handed_out_at) else {
                return false;
            };
            gitlab
                .requests()
                .iter()
                .any(|r| r.path == "/api/v4/jobs/request" && r.at > handed_out)
        },
    )
    .await;
    let jobs_file = state_dir.path().join("jobs.json");
    eventually(
        "the job gone from jobs.json",
        Duration::from_secs(30),
        || {
            let text = std::fs::read_to_string(&jobs_file).unwrap_or_default();
            match serde_json::from_str::<Vec<serde_json::Value>>(&text) {
                Ok(jobs) => !jobs.iter().any(|j| j["id"] == id),
                Err(_) => false,
            }
        },
    )
    .await;
    manager.drain().await;
}
