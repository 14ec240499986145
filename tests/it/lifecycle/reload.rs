//! Hot reload of the real binary: the file is replaced as Chef does (temp file + rename) and
//! watched; SIGHUP reloads too. An invalid file is rejected and the running config stays.

use super::*;
use crate::process::Running;
use testkit::JobState;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_raises_limit_and_idle_count_live_and_an_invalid_file_keeps_the_old_config() {
    let fleet = Fleet::start_with(fast_trace(), Duration::from_millis(300), Duration::ZERO).await;
    let gate = Gate::start().await;
    let machine = "IdleCount = 1\nIdleTime = 600";
    let path = fleet.write_config(&fleet.config_text("", "limit = 1", machine));
    let mut manager = Running::start(&path, fleet.dir.path(), "reload");
    let wait = gate.wait_line();
    let first = fleet.enqueue(&["echo started-1", &wait]);
    let second = fleet.enqueue(&["echo started-2", &wait]);
    trace_shows(&fleet.gitlab, first, "started-1").await;
    assert_eq!(fleet.gitlab.job(second).unwrap().state, JobState::Pending);
    assert_eq!(
        fleet.ours().len(),
        1,
        "limit = 1 holds: {:#?}",
        fleet.ours()
    );

    // Invalid: rejected with its error; the manager goes on with limit = 1.
    write_atomically(
        &path,
        &fleet.config_text("concurrent = \"many\"", "limit = 4", machine),
    );
    manager
        .log_shows("configuration reload rejected", DEADLINE)
        .await;
    assert!(
        manager.log().contains("concurrent"),
        "the error names the key"
    );
    assert!(manager.child.try_wait().unwrap().is_none(), "still running");
    assert_eq!(fleet.gitlab.job(second).unwrap().state, JobState::Pending);

    // Valid: limit 4 and IdleCount 2 apply to the running manager; state_dir needs a restart.
    let raised = fleet.config_text(
        &format!(
            "log_level = \"debug\"\nstate_dir = \"{}/elsewhere\"",
            fleet.dir.path().display()
        ),
        "limit = 4",
        "IdleCount = 2\nIdleTime = 600",
    );
    write_atomically(&path, &raised);
    // The diff is against the running config: limit was still 1 after the rejected file.
    manager.log_shows("limit: 1 → 4", DEADLINE).await;
    manager
        .log_shows("machine.IdleCount: 1 → 2", DEADLINE)
        .await;
    manager.log_shows("needs a restart", DEADLINE).await;
    assert!(manager.log().contains("state_dir"));
    trace_shows(&fleet.gitlab, second, "started-2").await;
    fleet
        .wait_ours(
            "two busy VMs and IdleCount = 2 idle ones",
            DEADLINE,
            |vms| vms.iter().filter(|v| v.status == "RUNNING").count() == 4,
        )
        .await;
    manager.log_shows("DEBUG", DEADLINE).await;

    // SIGHUP: the same file again — nothing to apply, in the JSON format it now asks for.
    write_atomically(
        &path,
        &raised.replace(
            "log_level = \"debug\"",
            "log_level = \"info\"\nlog_format = \"json\"",
        ),
    );
    manager.log_shows("log_format: Text → Json", DEADLINE).await;
    manager.signal("HUP");
    manager.log_shows("nothing to apply", DEADLINE).await;
    let log = manager.log();
    let line = log
        .lines()
        .find(|l| l.contains("nothing to apply"))
        .unwrap_or_default();
    assert!(line.starts_with('{'), "JSON after the reload: {line}");
    assert!(!log.contains(&fleet.token), "no runner token in the log");
    assert!(
        !fleet.dir.path().join("elsewhere").exists(),
        "state_dir is not changed by a reload"
    );

    gate.open();
    manager.signal("QUIT");
    let status = manager.wait_exit(DEADLINE).await;
    assert!(status.success(), "{status:?}\n{}", manager.log());
    for id in [first, second] {
        assert_eq!(fleet.gitlab.job(id).unwrap().state, JobState::Success);
    }
    assert!(fleet.ours().is_empty());
    fleet.stop().await;
}
