//! Issue 13 item 2: the pace of job intake. Against the fake GitLab with long polling (as
//! Workhorse: a held `jobs/request` is released with a bare 204 when the runner's queue
//! changes) and a `check_interval` of 20 s, a requester must never sit out the interval while
//! jobs wait: it asks again at once after a job, after a held poll's release, and after
//! Rails' 204 naming a new queue version (the next request is then held). Jobs run on the
//! test kit's fake Docker Engine, so no real engine is needed.

use crate::harness::{config, config_text, fake_gitlab, job, InProcessManager, TEST_IMAGE};
use std::collections::HashMap;
use std::time::Duration;
use testkit::{Behaviour, FakeDocker, FakeDockerOptions, FakeGitlab, FakeGitlabOptions};
use tokio::time::Instant;

/// Far above anything the requester should wait while jobs are queued.
const CHECK_INTERVAL_SECS: u64 = 20;
/// How soon a queued job must be handed out: well under `check_interval`.
const PROMPT: Duration = Duration::from_secs(5);

/// Waits until job `id` is handed out and returns how long that took from `since`.
async fn handed_out_after(gitlab: &FakeGitlab, id: i64, since: Instant) -> Duration {
    let wait = Duration::from_secs(CHECK_INTERVAL_SECS * 2);
    gitlab
        .wait_job(id, wait, |j| j.handed_out_at.is_some())
        .await
        .unwrap_or_else(|e| panic!("job {id} never handed out: {e}"));
    since.elapsed()
}

#[tokio::test]
async fn jobs_are_taken_without_waiting_for_check_interval() {
    let fake = FakeDocker::start(FakeDockerOptions {
        images: vec![TEST_IMAGE.to_owned()],
        behaviours: HashMap::from([(
            TEST_IMAGE.to_owned(),
            Behaviour {
                run_time: Duration::from_secs(1),
                line_every: None,
                line: String::new(),
                exit_code: 0,
            },
        )]),
        default: Behaviour::default(),
        start_latency: Duration::ZERO,
    })
    .await
    .expect("fake docker");
    let (gitlab, token) = fake_gitlab(FakeGitlabOptions {
        long_poll: Duration::from_secs(50),
        ..FakeGitlabOptions::default()
    })
    .await;
    let state_dir = tempfile::tempdir().expect("tempdir");
    let text = config_text(
        &gitlab.url(),
        &token,
        state_dir.path(),
        "",
        "request_concurrency = 1\n",
    )
    .replace(
        "check_interval = 1\n",
        &format!("check_interval = {CHECK_INTERVAL_SECS}\n"),
    )
    .replace(
        "[runners.docker]\n",
        &format!("[runners.docker]\nhost = \"{}\"\n", fake.host()),
    );
    assert!(text.contains("check_interval = 20"), "{text}");
    let started = Instant::now();
    let manager = InProcessManager::start_with(config(&text), state_dir, Default::default());

    // The first answer (Rails' 204 with the queue version) is followed by a held poll at once.
    gitlab
        .wait_held_polls(1, Duration::from_secs(CHECK_INTERVAL_SECS * 2))
        .await
        .expect("a held poll");
    let took = started.elapsed();
    assert!(took < PROMPT, "the first held poll came after {took:?}");

    // Released at once by an enqueue: asked again at once, and the job comes.
    let enqueued = Instant::now();
    let a = gitlab.enqueue(&token, job(&["echo a"], &[]));
    let took = handed_out_after(&gitlab, a, enqueued).await;
    assert!(took < PROMPT, "a held poll released by job a: {took:?}");

    // Two queued at once with one request at a time: the second is asked for right after the
    // first, then the queue is empty (Rails' 204 with a new version) and the next is held.
    let enqueued = Instant::now();
    let b = gitlab.enqueue(&token, job(&["echo b"], &[]));
    let c = gitlab.enqueue(&token, job(&["echo c"], &[]));
    for id in [b, c] {
        let took = handed_out_after(&gitlab, id, enqueued).await;
        assert!(took < PROMPT, "job {id} of two queued at once: {took:?}");
    }
    gitlab
        .wait_held_polls(1, PROMPT)
        .await
        .expect("held again right after the queue emptied");
    let enqueued = Instant::now();
    let d = gitlab.enqueue(&token, job(&["echo d"], &[]));
    let took = handed_out_after(&gitlab, d, enqueued).await;
    assert!(took < PROMPT, "job d after the queue emptied: {took:?}");

    for id in [a, b, c, d] {
        let (record, trace) = crate::harness::finished(&gitlab, id).await;
        assert_eq!(record.state, testkit::JobState::Success, "{trace}");
    }
    manager.drain().await;
}
