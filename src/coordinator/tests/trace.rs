//! Trace PATCHes, keep-alives, the final update and log hygiene on the wire.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::task::TaskTracker;

use super::*;

#[tokio::test]
async fn small_trace_is_one_patch_then_the_final_state() {
    let stub = Stub::start(happy).await;
    let client = Coordinator::new(settings()).unwrap();
    let tracker = TaskTracker::new();
    let text = b"Running job 42..\n";
    let trace = trace_of(text);
    let session = client
        .start_trace(&runner(&stub), job(), trace.clone(), false, &tracker)
        .unwrap();
    let requests = stub
        .wait_for("a PATCH", |r| r.iter().any(Recorded::is_patch))
        .await;
    let patch = requests.iter().find(|r| r.is_patch()).unwrap();
    assert_eq!(patch.uri, "/api/v4/jobs/42/trace?debug_trace=false");
    assert_eq!(patch.header("content-range"), "0-16");
    assert_eq!(patch.header("content-type"), "text/plain");
    assert_eq!(patch.header("job-token"), JOB_TOKEN);
    assert_eq!(patch.body.as_ref(), text);

    session.finish(success(), async {}).await.unwrap();
    let requests = stub.requests();
    assert_eq!(
        requests.iter().filter(|r| r.is_patch()).count(),
        1,
        "nothing left to send"
    );
    let put = requests.last().unwrap();
    assert!(put.is_put());
    let body = put.json();
    let (checksum, size) = trace.checksum();
    assert_eq!(body["state"], "success");
    assert_eq!(body["token"], JOB_TOKEN);
    assert_eq!(body["checksum"], checksum.as_str());
    assert_eq!(
        body["output"],
        serde_json::json!({"checksum": checksum, "bytesize": size})
    );
    assert!(body.get("exit_code").is_none() && body.get("failure_reason").is_none());
    tracker.close();
    tracker.wait().await;
}

#[tokio::test]
async fn large_trace_goes_in_one_mebibyte_slices() {
    let stub = Stub::start(happy).await;
    let client = Coordinator::new(settings()).unwrap();
    let tracker = TaskTracker::new();
    let line = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n";
    let text: Vec<u8> = line.iter().copied().cycle().take(5 * 512 * 1024).collect();
    let session = client
        .start_trace(&runner(&stub), job(), trace_of(&text), true, &tracker)
        .unwrap();
    let requests = stub
        .wait_for("three PATCHes", |r| {
            r.iter().filter(|r| r.is_patch()).count() >= 3
        })
        .await;
    let patches: Vec<&Recorded> = requests.iter().filter(|r| r.is_patch()).collect();
    let ranges: Vec<&str> = patches.iter().map(|p| p.header("content-range")).collect();
    assert_eq!(ranges, ["0-1048575", "1048576-2097151", "2097152-2621439"]);
    assert!(patches[0].uri.ends_with("debug_trace=true"));
    let sent: Vec<u8> = patches
        .iter()
        .flat_map(|p| p.body.iter().copied())
        .collect();
    assert!(sent == text, "the slices add up to the trace");
    session.finish(success(), async {}).await.unwrap();
    assert_eq!(stub.requests().iter().filter(|r| r.is_patch()).count(), 3);
}

#[tokio::test]
async fn range_mismatch_resends_from_the_coordinators_offset() {
    let n = Arc::new(AtomicUsize::new(0));
    let stub = Stub::start({
        let n = n.clone();
        move |rec| {
            if rec.is_patch() && n.fetch_add(1, Ordering::SeqCst) == 0 {
                reply(416, &[("Range", "0-5")], "")
            } else {
                happy(rec)
            }
        }
    })
    .await;
    let client = Coordinator::new(settings()).unwrap();
    let tracker = TaskTracker::new();
    let text = b"Running job 42..\n";
    let session = client
        .start_trace(&runner(&stub), job(), trace_of(text), false, &tracker)
        .unwrap();
    let requests = stub
        .wait_for("two PATCHes", |r| {
            r.iter().filter(|r| r.is_patch()).count() >= 2
        })
        .await;
    let patches: Vec<&Recorded> = requests.iter().filter(|r| r.is_patch()).collect();
    assert_eq!(patches[0].header("content-range"), "0-16");
    assert_eq!(patches[1].header("content-range"), "5-16");
    assert_eq!(patches[1].body.as_ref(), &text[5..]);
    session.finish(success(), async {}).await.unwrap();
}

#[tokio::test]
async fn canceling_and_abort_from_trace_patches() {
    let stub = Stub::start(|rec: &Recorded| {
        if rec.is_patch() {
            reply(202, &[("Job-Status", "canceling")], "")
        } else {
            reply(200, &[], "")
        }
    })
    .await;
    let client = Coordinator::new(settings()).unwrap();
    let tracker = TaskTracker::new();
    let session = client
        .start_trace(&runner(&stub), job(), trace_of(b"hello\n"), false, &tracker)
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        session.cancel_requested.cancelled(),
    )
    .await
    .expect("cancel requested");
    assert!(!session.abort.is_cancelled());
    session.finish(success(), async {}).await.unwrap();

    let stub = Stub::start(|rec: &Recorded| {
        if rec.is_patch() {
            reply(403, &[], "")
        } else {
            reply(200, &[], "")
        }
    })
    .await;
    let session = client
        .start_trace(&runner(&stub), job(), trace_of(b"hello\n"), false, &tracker)
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), session.abort.cancelled())
        .await
        .expect("aborted");
    session.finish(success(), async {}).await.unwrap();
    let requests = stub.requests();
    assert_eq!(
        requests.iter().filter(|r| r.is_patch()).count(),
        1,
        "no PATCH after an abort"
    );
}

#[tokio::test]
async fn final_update_repeats_on_202_and_resends_the_trace_on_412() {
    let puts = Arc::new(AtomicUsize::new(0));
    let stub = Stub::start({
        let puts = puts.clone();
        move |rec| {
            if rec.is_patch() {
                return reply(202, &[], "");
            }
            match puts.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => reply(202, &[], ""),
                2 => reply(412, &[], ""),
                3 => reply(501, &[], ""),
                _ => reply(200, &[], ""),
            }
        }
    })
    .await;
    let client = Coordinator::new(settings()).unwrap();
    let tracker = TaskTracker::new();
    let text = b"Running job 42..\n";
    let session = client
        .start_trace(&runner(&stub), job(), trace_of(text), false, &tracker)
        .unwrap();
    stub.wait_for("a PATCH", |r| r.iter().any(Recorded::is_patch))
        .await;
    session
        .finish(
            FinalState {
                state: JobState::Failed,
                failure_reason: Some(crate::job::FailureReason::RunnerSystemFailure),
                exit_code: Some(3),
            },
            async {},
        )
        .await
        .unwrap();
    let requests = stub.requests();
    let kinds: Vec<String> = requests
        .iter()
        .map(|r| {
            if r.is_patch() {
                format!("PATCH {}", r.header("content-range"))
            } else {
                "PUT".to_string()
            }
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "PATCH 0-16",
            "PUT",
            "PUT",
            "PUT",
            "PATCH 0-16",
            "PUT",
            "PUT"
        ],
        "202, 202, 412 (resend from 0), 501 (retry), 200"
    );
    let last = requests.last().unwrap().json();
    assert_eq!(last["state"], "failed");
    assert_eq!(last["failure_reason"], "runner_system_failure");
    assert_eq!(last["exit_code"], 3);
    assert_eq!(last["output"]["bytesize"], 17);
}

#[tokio::test]
async fn a_silent_job_gets_keep_alives_and_learns_of_canceling() {
    let stub = Stub::start(|rec: &Recorded| {
        if rec.is_put() && rec.json()["state"] == "running" {
            reply(200, &[("Job-Status", "canceling")], "")
        } else {
            happy(rec)
        }
    })
    .await;
    let client = Coordinator::new(ClientSettings {
        keepalive_interval: Duration::from_millis(150),
        ..settings()
    })
    .unwrap();
    let tracker = TaskTracker::new();
    let trace = trace_of(b"");
    let session = client
        .start_trace(&runner(&stub), job(), trace, false, &tracker)
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        session.cancel_requested.cancelled(),
    )
    .await
    .expect("cancel requested through a keep-alive");
    let requests = stub.requests();
    assert!(
        requests.iter().all(|r| !r.is_patch()),
        "an empty trace sends no PATCH"
    );
    let keep_alive = requests.iter().find(|r| r.is_put()).unwrap().json();
    assert_eq!(keep_alive["state"], "running");
    assert_eq!(keep_alive["output"]["bytesize"], 0);
    assert_eq!(keep_alive["output"]["checksum"], "crc32:00000000");
    session.finish(success(), async {}).await.unwrap();
}

#[tokio::test]
async fn tokens_never_reach_the_logs() {
    use std::io::Write;
    #[derive(Clone, Default)]
    struct Sink(Arc<std::sync::Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let sink = Sink::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer({
            let sink = sink.clone();
            move || sink.clone()
        })
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let n = Arc::new(AtomicUsize::new(0));
    let stub = Stub::start({
        let n = n.clone();
        move |rec| match (rec.uri.as_str(), n.fetch_add(1, Ordering::SeqCst)) {
            ("/api/v4/jobs/request", 0) => reply(500, &[("Retry-After", "0")], ""),
            ("/api/v4/jobs/request", _) => reply(
                201,
                &[("Content-Type", "application/json")],
                format!(r#"{{"id": 42, "token": "{JOB_TOKEN}"}}"#),
            ),
            _ if rec.is_patch() => reply(416, &[("Range", "0-2")], ""),
            _ => reply(200, &[("Job-Status", "canceling")], ""),
        }
    })
    .await;
    let client = Coordinator::new(settings()).unwrap();
    let runner = runner(&stub);
    let outcome = client.request_job(&runner, &mut PollState::default()).await;
    assert!(matches!(outcome, RequestOutcome::Job { .. }));
    client.acknowledge(&runner, &job()).await.unwrap();
    let tracker = TaskTracker::new();
    let session = client
        .start_trace(&runner, job(), trace_of(b"x\n"), false, &tracker)
        .unwrap();
    stub.wait_for("a PATCH", |r| r.iter().any(Recorded::is_patch))
        .await;
    let _ = tokio::time::timeout(Duration::from_secs(5), session.finish(success(), async {})).await;

    let logs = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("job_id=42"), "the logs say which job: {logs}");
    assert!(
        !logs.contains("SECRET"),
        "the job token reached the logs: {logs}"
    );
    assert!(
        !logs.contains(RUNNER_TOKEN.as_str()),
        "the runner token reached the logs: {logs}"
    );
}
