//! SIGQUIT (drain) and SIGTERM (abort) of the real binary, and a drain while a job request is in
//! flight (in-process, where the request can be held at the fake).

use super::*;
use crate::process::Running;
use flotilla::lifecycle::Control;
use testkit::gitlab::Fault;
use testkit::JobState;
use tokio::time::Instant;

fn running(vms: &[&InstanceView]) -> usize {
    vms.iter().filter(|v| v.status == "RUNNING").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigquit_lets_three_running_jobs_finish_takes_no_new_job_deletes_idle_vms_and_exits_0() {
    let fleet = Fleet::start_with(fast_trace(), Duration::from_millis(300), Duration::ZERO).await;
    let gate = Gate::start().await;
    let config = fleet.write_config(&fleet.config_text(
        "",
        "",
        "IdleCount = 1\nIdleTime = 600\nMaxBuilds = 1",
    ));
    let mut manager = Running::start(&config, fleet.dir.path(), "drain");
    let wait = gate.wait_line();
    let jobs = [
        fleet.enqueue(&["echo started-1", &wait, "echo finished-1"]),
        fleet.enqueue(&["echo started-2", &wait, "echo finished-2"]),
        fleet.enqueue(&["echo started-3", &wait, "exit 3"]),
    ];
    for (i, id) in jobs.iter().enumerate() {
        trace_shows(&fleet.gitlab, *id, &format!("started-{}", i + 1)).await;
    }
    fleet
        .wait_ours("three busy VMs and one idle", DEADLINE, |vms| {
            running(vms) == 4
        })
        .await;

    manager.signal("QUIT");
    fleet
        .wait_ours("the idle VM deleted while the jobs run", DEADLINE, |vms| {
            vms.len() == 3
        })
        .await;
    for id in jobs {
        assert_eq!(fleet.gitlab.job(id).unwrap().state, JobState::Running);
    }
    let late = fleet.enqueue(&["echo must-not-run"]);
    manager.signal("QUIT");
    manager
        .log_shows("SIGQUIT again: already shutting down, ignored", DEADLINE)
        .await;
    gate.open();
    let status = manager.wait_exit(DEADLINE).await;
    assert!(status.success(), "{status:?}\n{}", manager.log());

    for id in &jobs[..2] {
        let record = fleet.gitlab.job(*id).unwrap();
        assert_eq!(record.state, JobState::Success, "{}", record.trace_text());
        assert!(record.trace_text().contains("finished-"));
    }
    let failed = fleet.gitlab.job(jobs[2]).unwrap();
    assert_eq!(failed.state, JobState::Failed);
    assert_eq!(failed.failure_reason.as_deref(), Some("script_failure"));
    assert_eq!(
        fleet.gitlab.job(late).unwrap().state,
        JobState::Pending,
        "no job is taken during a drain"
    );
    assert!(fleet.ours().is_empty(), "VMs left: {:#?}", fleet.ours());
    let log = manager.log();
    assert!(log.contains("graceful shutdown"), "{log}");
    assert!(log.contains("jobs_left=3"), "{log}");
    assert!(log.contains("vms_left="), "{log}");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_answered_to_a_request_in_flight_at_sigquit_runs_to_its_end() {
    let fleet = Fleet::start(Duration::from_millis(300), Duration::ZERO).await;
    let text = fleet.config_text("", "", "IdleCount = 0\nIdleTime = 600");
    let manager = InProcessManager::start_with(
        config(&text),
        tempfile::tempdir().unwrap(),
        Default::default(),
    );
    // The next job request is held at the fake for 4 s: the drain arrives while it is in flight.
    fleet.gitlab.inject(Fault::SlowRequest {
        delay: Duration::from_secs(4),
        times: 1,
    });
    fleet
        .gitlab
        .wait_held_polls(1, DEADLINE)
        .await
        .expect("a request in flight");
    let id = fleet.enqueue(&["echo ran-after-the-drain"]);
    manager.controls.send(Control::Drain).await.unwrap();
    let exited = tokio::time::timeout(DEADLINE, manager.task)
        .await
        .expect("the drain ends");
    exited.unwrap().expect("the manager ends without error");
    let record = fleet.gitlab.job(id).unwrap();
    assert_eq!(record.state, JobState::Success, "{}", record.trace_text());
    assert!(record.trace_text().contains("ran-after-the-drain"));
    assert!(
        record.trace_text().contains("Running on VM"),
        "its VM was made on demand during the drain"
    );
    assert!(fleet.ours().is_empty(), "VMs left: {:#?}", fleet.ours());
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_drain_aborts_reports_the_job_deletes_vms_within_shutdown_timeout() {
    let fleet = Fleet::start_with(fast_trace(), Duration::from_millis(300), Duration::ZERO).await;
    let gate = Gate::start().await;
    let config = fleet.write_config(&fleet.config_text(
        "shutdown_timeout = 15",
        "",
        "IdleCount = 1\nIdleTime = 600",
    ));
    let mut manager = Running::start(&config, fleet.dir.path(), "abort");
    let id = fleet.enqueue(&["echo started", &gate.wait_line()]);
    trace_shows(&fleet.gitlab, id, "started").await;
    manager.signal("QUIT");
    manager.log_shows("graceful shutdown", DEADLINE).await;
    let started = Instant::now();
    manager.signal("TERM");
    let status = manager.wait_exit(Duration::from_secs(20)).await;
    let took = started.elapsed();
    assert!(status.success(), "{status:?}\n{}", manager.log());
    assert!(
        took < Duration::from_secs(16),
        "exit within shutdown_timeout: {took:?}"
    );
    let record = fleet.gitlab.job(id).unwrap();
    assert_eq!(record.state, JobState::Failed, "{}", record.trace_text());
    assert_eq!(
        record.failure_reason.as_deref(),
        Some("runner_system_failure")
    );
    assert!(fleet.ours().is_empty(), "VMs left: {:#?}", fleet.ours());
    assert!(manager.log().contains("was_draining=true"));
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_names_the_vms_it_could_not_confirm_deleted_and_a_second_signal_exits_at_once() {
    // Deletions take a minute at the fake: longer than shutdown_timeout.
    let fleet = Fleet::start(Duration::from_millis(300), Duration::from_secs(60)).await;
    let config = fleet.write_config(&fleet.config_text(
        "shutdown_timeout = 3",
        "",
        "IdleCount = 1\nIdleTime = 600",
    ));
    let mut first = Running::start(&config, fleet.dir.path(), "timeout");
    fleet
        .wait_ours("an idle VM", DEADLINE, |vms| running(vms) == 1)
        .await;
    let vm = fleet.ours()[0].name.clone();
    let started = Instant::now();
    first.signal("TERM");
    let status = first.wait_exit(DEADLINE).await;
    assert!(status.success(), "{status:?}\n{}", first.log());
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "exit after shutdown_timeout: {:?}",
        started.elapsed()
    );
    let log = first.log();
    assert!(
        log.lines()
            .any(|l| l.contains("not confirmed") && l.contains(&vm)),
        "the unconfirmed VM is named: {log}"
    );

    // A second stop signal does not wait for shutdown_timeout (60 s here).
    let config = fleet.write_config(&fleet.config_text(
        "shutdown_timeout = 60",
        "",
        "IdleCount = 1\nIdleTime = 600",
    ));
    let mut second = Running::start(&config, fleet.dir.path(), "twice");
    fleet
        .wait_ours("a new idle VM", DEADLINE, |vms| {
            vms.iter().any(|v| v.status == "RUNNING" && v.name != vm)
        })
        .await;
    second.signal("TERM");
    second.log_shows("forceful shutdown", DEADLINE).await;
    let started = Instant::now();
    second.signal("INT");
    second.wait_exit(DEADLINE).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the second signal exits at once: {:?}",
        started.elapsed()
    );
    assert!(second.log().contains("second stop signal"));
    fleet.stop().await;
}
