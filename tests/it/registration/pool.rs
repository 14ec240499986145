//! Rotation of a docker+machine runner in the real binary: the runner keeps its pool (its idle
//! VM is neither deleted nor replaced), the manager's own rewrite of the file is not taken for
//! an operator's change, and jobs go on with the new token.

use crate::harness::{finished, DEADLINE};
use crate::lifecycle::Fleet;
use crate::process::Running;
use chrono::{SecondsFormat, Utc};
use std::time::Duration;
use testkit::JobState;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_keeps_the_runners_pool_and_is_not_a_reload() {
    let fleet = Fleet::start(Duration::from_millis(300), Duration::ZERO).await;
    // The reset point (3/4 of the lifetime) is ~8 s from now.
    let now = Utc::now();
    let obtained = now - chrono::TimeDelta::seconds(16);
    let expires = now + chrono::TimeDelta::seconds(16);
    fleet.gitlab.add_runner_expiring(&fleet.token, expires);
    fleet.gitlab.set_token_ttl(Duration::from_secs(24 * 3600));
    let runner_keys = format!(
        "token_obtained_at = {}\ntoken_expires_at = {}",
        obtained.to_rfc3339_opts(SecondsFormat::Secs, true),
        expires.to_rfc3339_opts(SecondsFormat::Secs, true)
    );
    let path =
        fleet.write_config(&fleet.config_text("", &runner_keys, "IdleCount = 1\nIdleTime = 600"));
    let mut manager = Running::start(&path, fleet.dir.path(), "rotation-pool");
    fleet
        .wait_ours("one idle VM", DEADLINE, |vms| {
            vms.len() == 1 && vms[0].status == "RUNNING"
        })
        .await;
    let idle = fleet.ours()[0].name.clone();
    let labels = fleet.ours()[0].labels.clone();

    manager.log_shows("runner token reset", DEADLINE).await;
    let new = fleet.gitlab.current_runner_token(&fleet.token);
    assert_ne!(new, fleet.token);
    // The file watcher saw the write; the manager knew it as its own.
    manager
        .log_shows("configuration file changed", DEADLINE)
        .await;
    let id = fleet
        .gitlab
        .enqueue(&new, crate::harness::job(&["echo after rotation"], &[]));
    let (record, trace) = finished(&fleet.gitlab, id).await;
    assert_eq!(record.state, JobState::Success, "{trace}");

    let log = manager.log();
    for absent in [
        "configuration reload applied",
        "runner removed",
        "runner added",
        "new one starts",
    ] {
        assert!(!log.contains(absent), "{absent:?} in the log:\n{log}");
    }
    assert!(
        !log.contains(&fleet.token) && !log.contains(&new),
        "no token in the log"
    );
    let deleted: Vec<String> = fleet
        .gce
        .calls()
        .into_iter()
        .filter(|c| c.method == "DELETE")
        .map(|c| c.path)
        .collect();
    assert!(
        deleted.iter().all(|p| !p.ends_with(&idle)),
        "the pool's VM was kept until its job: {deleted:?}"
    );
    let vm_after = fleet.gce.instances().into_iter().find(|v| v.name == idle);
    if let Some(vm) = vm_after {
        assert_eq!(vm.labels, labels, "the VM's labels are unchanged");
    }
    assert!(
        trace.contains(&idle) || fleet.ours().iter().any(|v| v.name == idle),
        "the idle VM made before the rotation still serves the runner"
    );

    manager.signal("QUIT");
    let status = manager.wait_exit(DEADLINE).await;
    assert!(status.success(), "{status}");
    fleet.stop().await;
}
