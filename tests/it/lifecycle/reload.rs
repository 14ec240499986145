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

/// A config with the fleet's runner only, and the block of a second runner (its own token,
/// registered with the fake GitLab, and name) to add to it.
struct TwoRunners {
    token_b: String,
    /// The config with runner A only.
    only_a: String,
    /// The global part of that config (before the first `[[runners]]`).
    header: String,
    /// Runner B's `[[runners]]` block.
    block_b: String,
}

fn two_runners(fleet: &Fleet, machine: &str) -> TwoRunners {
    let token_b = runner_token();
    fleet.gitlab.add_runner(&token_b);
    let only_a = fleet.config_text("", "", machine);
    let at = only_a.find("[[runners]]").expect("a [[runners]] block");
    let (header, block_a) = only_a.split_at(at);
    let block_b = block_a
        .replace(&fleet.token, &token_b)
        .replace("name = \"it-lifecycle\"", "name = \"it-second\"");
    TwoRunners {
        token_b,
        header: header.to_string(),
        block_b,
        only_a,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runners_added_renamed_and_removed_by_a_reload() {
    use flotilla::fleet::{names::runner_label, RUNNER_LABEL};
    use flotilla::lifecycle::Control;
    let fleet = Fleet::start_with(fast_trace(), Duration::from_millis(300), Duration::ZERO).await;
    let gate = Gate::start().await;
    let TwoRunners {
        token_b,
        only_a,
        header,
        block_b,
    } = two_runners(&fleet, "IdleCount = 1\nIdleTime = 600");
    let path = fleet.write_config(&only_a);
    let (controls, rx) = tokio::sync::mpsc::channel(4);
    let source = flotilla::manager::ConfigSource {
        path: path.clone(),
        logging: None,
    };
    let task = tokio::spawn(flotilla::manager::run_reloadable(
        config(&only_a),
        Some(source),
        rx,
        Default::default(),
    ));
    let (label_a, label_b) = (runner_label(&fleet.token), runner_label(&token_b));
    let of = |vms: &[&InstanceView], label: &str, status: &str| {
        vms.iter()
            .filter(|v| v.labels.get(RUNNER_LABEL).map(String::as_str) == Some(label))
            .filter(|v| v.status == status)
            .count()
    };
    let job_a = fleet.enqueue(&["echo job-a", &gate.wait_line()]);
    trace_shows(&fleet.gitlab, job_a, "job-a").await;
    fleet
        .wait_ours("A: one busy VM and one idle", DEADLINE, |vms| {
            of(vms, &label_a, "RUNNING") == 2
        })
        .await;

    // Added: B's pool warms and B takes jobs.
    write_atomically(&path, &format!("{only_a}{block_b}"));
    controls.send(Control::Reload).await.unwrap();
    fleet
        .wait_ours("B's idle VM", DEADLINE, |vms| {
            of(vms, &label_b, "RUNNING") == 1
        })
        .await;
    let job_b = fleet.gitlab.enqueue(&token_b, job(&["echo job-b"], &[]));
    let (record, _) = finished(&fleet.gitlab, job_b).await;
    assert_eq!(record.state, JobState::Success);
    // B's VMs after its job: the job's back to idle beside the one made meanwhile.
    fleet
        .wait_ours("B's VMs idle", DEADLINE, |vms| {
            vms.iter()
                .filter(|v| v.labels.get(RUNNER_LABEL) == Some(&label_b))
                .all(|v| v.status == "RUNNING")
        })
        .await;
    let b_idle: Vec<String> = fleet
        .ours()
        .into_iter()
        .filter(|v| v.labels.get(RUNNER_LABEL) == Some(&label_b))
        .map(|v| v.name)
        .collect();

    // Removed A, renamed B: A's idle VM goes at once, its busy one after the job; A takes no
    // new job; B keeps its pool (a rename is not a new runner).
    let renamed_b = block_b.replace("name = \"it-second\"", "name = \"it-second-renamed\"");
    write_atomically(&path, &format!("{header}{renamed_b}"));
    controls.send(Control::Reload).await.unwrap();
    fleet
        .wait_ours("A's idle VM deleted, its busy one kept", DEADLINE, |vms| {
            vms.iter()
                .filter(|v| v.labels.get(RUNNER_LABEL) == Some(&label_a))
                .count()
                == 1
        })
        .await;
    let late_a = fleet.enqueue(&["echo must-not-run"]);
    assert_eq!(fleet.gitlab.job(job_a).unwrap().state, JobState::Running);
    gate.open();
    let (record, _) = finished(&fleet.gitlab, job_a).await;
    assert_eq!(
        record.state,
        JobState::Success,
        "the removed runner's job finishes"
    );
    fleet
        .wait_ours("every VM of A deleted after its job", DEADLINE, |vms| {
            vms.iter()
                .all(|v| v.labels.get(RUNNER_LABEL) != Some(&label_a))
        })
        .await;
    assert_eq!(fleet.gitlab.job(late_a).unwrap().state, JobState::Pending);
    let b_now: Vec<String> = fleet
        .ours()
        .into_iter()
        .filter(|v| v.labels.get(RUNNER_LABEL) == Some(&label_b))
        .map(|v| v.name)
        .collect();
    assert_eq!(b_now, b_idle, "B's pool kept across the rename");

    controls.send(Control::Drain).await.unwrap();
    tokio::time::timeout(DEADLINE, task)
        .await
        .expect("the drain ends")
        .unwrap()
        .expect("no error");
    assert!(fleet.ours().is_empty());
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_raises_concurrent_for_jobs_waiting_on_a_slot() {
    use flotilla::lifecycle::Control;
    ensure_test_image();
    let (gitlab, token) = fake_gitlab(fast_trace()).await;
    let gate = Gate::start().await;
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(&gitlab.url(), &token, &dir.path().join("state"), "", "");
    let one = text.replace("concurrent = 4", "concurrent = 1");
    let path = dir.path().join("config.toml");
    write_atomically(&path, &one);
    let (controls, rx) = tokio::sync::mpsc::channel(4);
    let source = flotilla::manager::ConfigSource {
        path: path.clone(),
        logging: None,
    };
    let task = tokio::spawn(flotilla::manager::run_reloadable(
        config(&one),
        Some(source),
        rx,
        Default::default(),
    ));
    let wait = gate.wait_line();
    let first = gitlab.enqueue(&token, job(&["echo first", &wait], &[]));
    let second = gitlab.enqueue(&token, job(&["echo second", &wait], &[]));
    trace_shows(&gitlab, first, "first").await;
    assert_eq!(gitlab.job(second).unwrap().state, JobState::Pending);
    write_atomically(&path, &text.replace("concurrent = 4", "concurrent = 2"));
    controls.send(Control::Reload).await.unwrap();
    trace_shows(&gitlab, second, "second").await;
    gate.open();
    for id in [first, second] {
        let (record, _) = finished(&gitlab, id).await;
        assert_eq!(record.state, JobState::Success);
    }
    controls.send(Control::Drain).await.unwrap();
    tokio::time::timeout(DEADLINE, task)
        .await
        .expect("the drain ends")
        .unwrap()
        .expect("no error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_added_back_while_it_drains_gets_its_pool_back() {
    use flotilla::fleet::{names::runner_label, RUNNER_LABEL};
    use flotilla::lifecycle::Control;
    let fleet = Fleet::start_with(fast_trace(), Duration::from_millis(300), Duration::ZERO).await;
    let gate = Gate::start().await;
    let TwoRunners {
        token_b: _,
        only_a,
        header,
        block_b,
    } = two_runners(&fleet, "IdleCount = 0\nIdleTime = 600");
    let both = format!("{only_a}{block_b}");
    let path = fleet.write_config(&both);
    let (controls, rx) = tokio::sync::mpsc::channel(4);
    let source = flotilla::manager::ConfigSource {
        path: path.clone(),
        logging: None,
    };
    let task = tokio::spawn(flotilla::manager::run_reloadable(
        config(&both),
        Some(source),
        rx,
        Default::default(),
    ));
    let label_a = runner_label(&fleet.token);
    let job_a = fleet.enqueue(&["echo job-a", &gate.wait_line()]);
    let running = fleet
        .gitlab
        .wait_job(job_a, DEADLINE, |j| j.trace_text().contains("job-a"))
        .await
        .expect("A's job runs");
    let vm_of_a = running
        .trace_text()
        .split("Running on VM ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_default()
        .to_string();
    assert!(!vm_of_a.is_empty());

    write_atomically(&path, &format!("{header}{block_b}"));
    controls.send(Control::Reload).await.unwrap();
    write_atomically(&path, &both);
    controls.send(Control::Reload).await.unwrap();
    let again = fleet.enqueue(&["echo a-again"]);
    let (record, _) = finished(&fleet.gitlab, again).await;
    assert_eq!(record.state, JobState::Success, "A takes jobs again");
    assert!(
        fleet.ours().iter().any(|v| v.name == vm_of_a),
        "the busy VM of A survives its runner's removal and return"
    );
    gate.open();
    let (record, _) = finished(&fleet.gitlab, job_a).await;
    assert_eq!(record.state, JobState::Success);
    controls.send(Control::Drain).await.unwrap();
    tokio::time::timeout(DEADLINE, task)
        .await
        .expect("the drain ends")
        .unwrap()
        .expect("no error");
    assert!(fleet
        .ours()
        .iter()
        .all(|v| v.labels.get(RUNNER_LABEL) != Some(&label_a)));
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_shutdown_timeout_bounds_the_next_abort() {
    // Deletions take a minute at the fake, so the abort lasts exactly shutdown_timeout.
    let fleet = Fleet::start(Duration::from_millis(300), Duration::from_secs(60)).await;
    let machine = "IdleCount = 1\nIdleTime = 600";
    let path = fleet.write_config(&fleet.config_text("shutdown_timeout = 60", "", machine));
    let mut manager = Running::start(&path, fleet.dir.path(), "timeout-reload");
    fleet
        .wait_ours("an idle VM", DEADLINE, |vms| {
            vms.iter().any(|v| v.status == "RUNNING")
        })
        .await;
    write_atomically(
        &path,
        &fleet.config_text("shutdown_timeout = 2", "", machine),
    );
    manager
        .log_shows("shutdown_timeout: 1m → 2s", DEADLINE)
        .await;
    let started = tokio::time::Instant::now();
    manager.signal("TERM");
    manager.wait_exit(DEADLINE).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "the abort waited the reloaded shutdown_timeout: {took:?}"
    );
    fleet.stop().await;
}
