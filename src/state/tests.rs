//! Tests of the state directory: `jobs.json` across restarts, the job record guard, the
//! coalescing writer, the lock and the ids.

use super::*;
use std::os::unix::fs::PermissionsExt;

fn job(id: i64) -> RunningJob {
    RunningJob {
        id,
        url: "http://gitlab".into(),
        token: format!("tok{id}"),
        acknowledged: false,
        pending_final: None,
    }
}

#[tokio::test]
async fn jobs_survive_a_restart_until_removed() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::open(dir.path()).unwrap();
    state.add_job(job(1)).await.unwrap();
    state.add_job(job(2)).await.unwrap();
    state.mark_acknowledged(2, "http://gitlab");
    state.remove_job(1, "http://gitlab").await.unwrap();
    let again = StateDir::open(dir.path()).unwrap();
    let left = again.leftover_jobs();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, 2);
    assert!(left[0].acknowledged);
    let mode = std::fs::metadata(dir.path().join("jobs.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn only_one_manager_holds_a_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    let first = StateDir::open_exclusive(dir.path()).unwrap();
    let second = StateDir::open_exclusive(dir.path()).err().unwrap();
    assert!(matches!(second, StateError::Locked { .. }), "{second}");
    assert!(second.to_string().contains("another `flotilla run`"));
    // Other commands read beside it.
    assert!(StateDir::open(dir.path()).is_ok());
    let clone = first.clone();
    drop(first);
    assert!(
        StateDir::open_exclusive(dir.path()).is_err(),
        "a clone keeps the lock"
    );
    drop(clone);
    StateDir::open_exclusive(dir.path()).unwrap();
}

#[test]
fn the_manager_id_is_made_once() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::open(dir.path()).unwrap();
    let id = state.manager_id(None).unwrap();
    assert!(id.starts_with("s_") && id.len() == 14, "{id}");
    assert_eq!(
        StateDir::open(dir.path())
            .unwrap()
            .manager_id(None)
            .unwrap(),
        id
    );
    assert_eq!(state.manager_id(Some("fixed")).unwrap(), "fixed");
}

#[test]
fn a_corrupt_jobs_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jobs.json"), "{not json").unwrap();
    let err = StateDir::open(dir.path()).err().unwrap();
    assert!(err.to_string().contains("corrupt"), "{err}");
}

#[test]
fn a_record_forgets_its_job_when_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::open(dir.path()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (record, written) = rt.block_on(state.record_job(job(1)));
    written.unwrap();
    let (other, written) = rt.block_on(state.record_job(job(2)));
    written.unwrap();
    record.acknowledged();
    rt.block_on(state.record_job(job(9))).1.unwrap();
    drop(rt);
    assert!(StateDir::open(dir.path()).unwrap().leftover_jobs()[0].acknowledged);
    drop(record);
    let left = StateDir::open(dir.path()).unwrap().leftover_jobs();
    assert_eq!(left.iter().map(|j| j.id).collect::<Vec<_>>(), [2]);
    drop(other);
    assert!(StateDir::open(dir.path())
        .unwrap()
        .leftover_jobs()
        .is_empty());
}

#[tokio::test]
async fn keep_pending_leaves_the_job_with_its_final_state_and_trace_until_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::open(dir.path()).unwrap();
    let (record, written) = state.record_job(job(3)).await;
    written.unwrap();
    let trace = JobTrace::new(crate::trace::TraceSettings::default()).unwrap();
    trace.runner_line("the whole trace");
    trace.finish();
    let final_state = FinalState::failed(crate::job::FailureReason::ScriptFailure, Some(2));
    record
        .keep_pending(final_state.clone(), &trace)
        .await
        .unwrap();
    drop(record);
    let left = StateDir::open(dir.path()).unwrap().leftover_jobs();
    assert_eq!(left.len(), 1, "a kept job outlives its guard");
    assert_eq!(left[0].id, 3);
    assert_eq!(left[0].pending_final, Some(final_state.clone()));
    let kept = state.kept_trace_path(3, "http://gitlab");
    assert_eq!(
        std::fs::read(&kept).unwrap(),
        trace.read_at(0, 1 << 20).unwrap()
    );

    let (record, _) = state.record_job(job(3)).await;
    record.keep_pending(final_state, &trace).await.unwrap();
    record.delivered().await.unwrap();
    drop(record);
    assert!(StateDir::open(dir.path())
        .unwrap()
        .leftover_jobs()
        .is_empty());
    assert!(!kept.exists());
}

#[tokio::test]
async fn a_failed_write_is_reported_and_the_next_write_carries_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::open(dir.path()).unwrap();
    std::fs::create_dir(dir.path().join("jobs.tmp")).unwrap();
    let (_record, written) = state.record_job(job(4)).await;
    assert!(written.is_err(), "a write into a directory must fail");
    assert!(written.unwrap_err().to_string().contains("jobs.json"));
    std::fs::remove_dir(dir.path().join("jobs.tmp")).unwrap();
    state.add_job(job(5)).await.unwrap();
    let ids: Vec<_> = StateDir::open(dir.path())
        .unwrap()
        .leftover_jobs()
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(ids, [4, 5]);
}

// The gate is held across awaits on purpose: the writer, on a blocking thread, waits on it.
#[allow(clippy::await_holding_lock)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_during_a_write_share_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::open(dir.path()).unwrap();
    let writes = {
        // The writer stops before its first write: every job below is recorded meanwhile.
        let gate = state.jobs.gate.lock().unwrap();
        let mut waiting = Vec::new();
        for id in 0..50 {
            let state = state.clone();
            waiting.push(tokio::spawn(async move { state.add_job(job(id)).await }));
        }
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while state.leftover_jobs().len() < 50 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the jobs were not added"
            );
            tokio::task::yield_now().await;
        }
        drop(gate);
        for w in waiting {
            w.await.unwrap().unwrap();
        }
        state.jobs_file_writes()
    };
    // The writer snapshots the list before it waits at the gate: the first change alone, or
    // (when its thread starts late, on a loaded machine) all fifty. Either way at most two
    // writes carry fifty changes.
    assert!(
        (1..=2).contains(&writes),
        "fifty changes made during a write cost {writes} writes, expected at most 2"
    );
    assert_eq!(
        StateDir::open(dir.path()).unwrap().leftover_jobs().len(),
        50
    );
}

#[test]
fn acknowledging_costs_no_write_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::open(dir.path()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (record, written) = rt.block_on(state.record_job(job(1)));
    written.unwrap();
    let before = state.jobs_file_writes();
    record.acknowledged();
    assert_eq!(state.jobs_file_writes(), before);
    assert!(!StateDir::open(dir.path()).unwrap().leftover_jobs()[0].acknowledged);
    rt.block_on(state.add_job(job(2))).unwrap();
    assert!(StateDir::open(dir.path()).unwrap().leftover_jobs()[0].acknowledged);
    drop(rt);
    drop(record);
}

#[test]
fn debug_hides_the_job_token() {
    assert!(!format!("{:?}", job(7)).contains("tok7"));
}

#[test]
fn writes_of_a_long_list_are_spaced_and_a_short_one_is_written_at_once() {
    use std::time::Duration;
    assert_eq!(super::jobs_file::spacing(0), Duration::ZERO);
    assert_eq!(super::jobs_file::spacing(20), Duration::from_millis(2));
    assert_eq!(super::jobs_file::spacing(2_000), Duration::from_millis(200));
    assert_eq!(
        super::jobs_file::spacing(usize::MAX),
        Duration::from_millis(250)
    );
}

#[tokio::test(start_paused = true)]
async fn a_delivered_job_rides_the_next_write_or_goes_soon_after() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::open(dir.path()).unwrap();
    let on_disk = || -> Vec<i64> {
        StateDir::open(dir.path())
            .unwrap()
            .leftover_jobs()
            .iter()
            .map(|j| j.id)
            .collect()
    };
    let (first, written) = state.record_job(job(1)).await;
    written.unwrap();
    // A writer still in its loop would carry the next change itself: wait until it stopped.
    wait_until("the writer never stopped", || !state.jobs.writing()).await;
    let writes = state.jobs_file_writes();
    first.delivered().await.unwrap();
    drop(first);
    assert_eq!(on_disk(), [1], "the end of a job waits for the next write");
    // The next job's receipt carries it: one write for both changes.
    let (second, written) = state.record_job(job(2)).await;
    written.unwrap();
    assert_eq!(on_disk(), [2]);
    assert_eq!(state.jobs_file_writes(), writes + 1);
    // With no other write, the end of a job is written within SOON.
    second.delivered().await.unwrap();
    drop(second);
    tokio::time::sleep(jobs_file::SOON).await;
    wait_until("never written", || on_disk().is_empty()).await;
    assert_eq!(state.jobs_file_writes(), writes + 2);
}

/// Polls `done` until it holds, failing with `what` after 10 s (of paused time, which does not
/// run ahead while the writer's blocking task runs).
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

#[tokio::test]
async fn a_flush_writes_what_waits_to_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::open(dir.path()).unwrap();
    let (record, written) = state.record_job(job(7)).await;
    written.unwrap();
    record.delivered().await.unwrap();
    drop(record);
    state.flush().await.unwrap();
    assert!(StateDir::open(dir.path())
        .unwrap()
        .leftover_jobs()
        .is_empty());
    // Nothing left to write: a flush writes nothing.
    let writes = state.jobs_file_writes();
    state.flush().await.unwrap();
    assert_eq!(state.jobs_file_writes(), writes);
}
