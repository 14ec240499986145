//! Table tests of `plan`: each case is a table of VMs, a policy, and the actions expected.

use super::*;
use crate::fleet::table::{Orphan, Vm};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const IDLE_TIME: Duration = Duration::from_secs(600);

/// One VM of a case: name, state, seconds idle, jobs run.
type Row = (&'static str, VmState, u64, u32);

fn table(rows: &[Row], now: Instant) -> Table {
    let mut t = Table::default();
    for &(name, state, idle_secs, used) in rows {
        let mut vm = Vm::creating("us-central1-a".into(), now, CancellationToken::new());
        vm.state = state;
        vm.idle_since = now - Duration::from_secs(idle_secs);
        vm.used_count = used;
        if state != VmState::Creating {
            vm.worker = None;
        }
        t.vms.insert(name.to_string(), vm);
    }
    t
}

fn policy(idle_count: u32) -> Policy {
    Policy {
        idle: IdleSettings {
            idle_count,
            idle_count_min: 0,
            idle_scale_factor: 0.0,
            idle_time: IDLE_TIME,
        },
        caps: Caps::default(),
        max_builds: 0,
        backlog: 0,
        drain_keep: 0,
        waiting: 0,
        started: true,
        draining: false,
        shutting_down: false,
        creation_paused: false,
        list_due: false,
    }
}

fn remove(name: &str, reason: &'static str) -> Action {
    Action::Remove {
        name: name.to_string(),
        reason,
    }
}

#[test]
fn plan_follows_the_rules_case_by_case() {
    use Action::Create;
    use VmState::{Creating, Idle, Leased, Removing, Used};
    let cases: Vec<(&str, Vec<Row>, Policy, Vec<Action>)> = vec![
        (
            "empty pool fills to IdleCount",
            vec![],
            policy(2),
            vec![Create, Create],
        ),
        (
            "nothing before the startup cleanup",
            vec![],
            Policy {
                started: false,
                ..policy(2)
            },
            vec![],
        ),
        (
            "a due listing comes first, even before the startup cleanup",
            vec![],
            Policy {
                started: false,
                list_due: true,
                ..policy(2)
            },
            vec![Action::List],
        ),
        (
            "creating and idle VMs count as available",
            vec![("a", Creating, 0, 0), ("b", Idle, 5, 0)],
            policy(3),
            vec![Create],
        ),
        (
            "limit counts every state, removing included",
            vec![("a", Used, 0, 0), ("b", Removing, 0, 0)],
            Policy {
                caps: Caps {
                    limit: 3,
                    max_growth_rate: 0,
                },
                ..policy(5)
            },
            vec![Create],
        ),
        (
            "MaxGrowthRate caps creations at once",
            vec![("a", Creating, 0, 0)],
            Policy {
                caps: Caps {
                    limit: 0,
                    max_growth_rate: 2,
                },
                ..policy(5)
            },
            vec![Create],
        ),
        (
            "an idle VM past IdleTime goes when idle capacity is exceeded",
            vec![("old", Idle, 900, 0), ("new", Idle, 10, 0)],
            policy(1),
            vec![remove("old", "too_many_idle")],
        ),
        (
            "an idle VM within IdleTime stays",
            vec![("a", Idle, 10, 0), ("b", Idle, 20, 0)],
            policy(1),
            vec![],
        ),
        (
            "the adaptive drain allowance keeps idle VMs past IdleTime beyond IdleCount",
            vec![
                ("old", Idle, 900, 0),
                ("older", Idle, 950, 0),
                ("new", Idle, 10, 0),
            ],
            Policy {
                drain_keep: 1,
                ..policy(1)
            },
            vec![remove("older", "too_many_idle")],
        ),
        (
            "MaxBuilds reached: the idle VM goes and is replaced",
            vec![("a", Idle, 1, 3)],
            Policy {
                max_builds: 3,
                ..policy(1)
            },
            vec![remove("a", "too_many_builds"), Create],
        ),
        (
            "over limit after a reload: idle VMs go",
            vec![("a", Used, 0, 0), ("b", Used, 0, 0), ("c", Idle, 1, 0)],
            Policy {
                caps: Caps {
                    limit: 2,
                    max_growth_rate: 0,
                },
                ..policy(1)
            },
            vec![remove("c", "too_many_machines")],
        ),
        (
            "draining removes every idle VM and creates only for waiting jobs",
            vec![("a", Idle, 1, 0), ("b", Idle, 2, 0), ("c", Used, 0, 0)],
            Policy {
                draining: true,
                waiting: 1,
                idle: IdleSettings {
                    idle_count: 0,
                    ..policy(0).idle
                },
                ..policy(0)
            },
            vec![remove("a", "draining"), remove("b", "draining"), Create],
        ),
        (
            "waiting jobs get VMs created for them",
            vec![("a", Leased, 0, 0)],
            Policy {
                waiting: 2,
                ..policy(0)
            },
            vec![Create, Create],
        ),
        (
            "the backlog is served by idle and creating VMs first",
            vec![("a", Idle, 1, 0), ("b", Creating, 0, 0)],
            Policy {
                backlog: 3,
                ..policy(0)
            },
            vec![Create],
        ),
        (
            "a pause holds creations but not removals",
            vec![("old", Idle, 900, 0)],
            Policy {
                creation_paused: true,
                ..policy(0)
            },
            vec![remove("old", "too_many_idle")],
        ),
        (
            "shutdown fails waiters, removes idle VMs, cancels creations, creates nothing",
            vec![("a", Idle, 1, 0), ("b", Creating, 0, 0), ("c", Used, 0, 0)],
            Policy {
                shutting_down: true,
                waiting: 2,
                ..policy(3)
            },
            vec![
                Action::FailWaiters,
                remove("a", "shutdown"),
                Action::CancelCreation("b".into()),
            ],
        ),
    ];
    let now = Instant::now() + Duration::from_secs(3600);
    for (name, rows, policy, want) in cases {
        let got = plan(&table(&rows, now), &policy, now);
        assert_eq!(got, want, "case: {name}");
    }
}

#[test]
fn due_deletion_retries_are_planned_and_future_ones_wait() {
    let now = Instant::now() + Duration::from_secs(3600);
    let mut t = table(
        &[
            ("due", VmState::Removing, 0, 0),
            ("later", VmState::Removing, 0, 0),
            ("busy", VmState::Removing, 0, 0),
        ],
        now,
    );
    t.vms.get_mut("due").unwrap().retry_delete_at = Some(now);
    t.vms.get_mut("later").unwrap().retry_delete_at = Some(now + Duration::from_secs(1));
    let busy = t.vms.get_mut("busy").unwrap();
    busy.retry_delete_at = Some(now);
    busy.worker = Some(CancellationToken::new());
    for (name, deleting, retry_at) in [
        ("o-due", false, Some(now)),
        ("o-deleting", true, Some(now)),
        ("o-never", false, None),
    ] {
        t.orphans.insert(
            name.into(),
            Orphan {
                zone: "us-east1-b".into(),
                deleting,
                accepted_at: None,
                attempts: 1,
                retry_at,
            },
        );
    }
    let got = plan(
        &t,
        &Policy {
            started: false,
            ..policy(0)
        },
        now,
    );
    assert_eq!(
        got,
        vec![
            Action::RetryRemoval("due".into()),
            Action::RetryOrphan {
                name: "o-due".into(),
                zone: "us-east1-b".into()
            },
        ]
    );
}

#[test]
fn orphans_being_deleted_count_toward_limit() {
    let now = Instant::now() + Duration::from_secs(3600);
    let mut t = table(&[], now);
    for name in ["killed-1", "killed-2"] {
        t.orphans.insert(
            name.into(),
            Orphan {
                zone: "us-east1-b".into(),
                deleting: true,
                accepted_at: None,
                attempts: 0,
                retry_at: None,
            },
        );
    }
    let capped = Policy {
        caps: Caps {
            limit: 3,
            max_growth_rate: 0,
        },
        ..policy(3)
    };
    assert_eq!(
        plan(&t, &capped, now),
        vec![Action::Create],
        "2 orphans + 1 new = limit 3"
    );
    t.orphans.remove("killed-1");
    assert_eq!(
        plan(&t, &capped, now),
        vec![Action::Create, Action::Create],
        "a confirmed deletion frees its place"
    );
}
