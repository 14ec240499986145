//! Table tests of `reconcile`: a table, a listing, and the fixes expected.

use super::*;
use crate::cloud::Instance;
use crate::fleet::table::{Orphan, Vm};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const ME: &str = "mgr-1";
const RUNNER: &str = "runner-a";

/// A listed instance: name, zone, status, manager label, runner label.
fn inst(
    name: &str,
    zone: &str,
    status: InstanceStatus,
    manager: &str,
    runner: Option<&str>,
) -> Instance {
    let mut labels = BTreeMap::from([(MANAGER_LABEL.to_string(), manager.to_string())]);
    if let Some(r) = runner {
        labels.insert(RUNNER_LABEL.to_string(), r.to_string());
    }
    Instance {
        name: name.into(),
        zone: zone.into(),
        status,
        internal_ip: None,
        external_ip: None,
        labels,
    }
}

/// A held VM: state, ready before the listing started, a worker acting on it.
fn vm(state: VmState, ready_before: bool, worker: bool, t0: Instant) -> Vm {
    let mut v = Vm::creating("zone-a".into(), t0, CancellationToken::new());
    v.state = state;
    v.ready_at = ready_before.then_some(t0);
    if !worker {
        v.worker = None;
    }
    v
}

#[test]
fn reconcile_fixes_case_by_case() {
    use InstanceStatus::{Running, Terminated};
    use VmState::{Creating, Idle, Removing, Used};
    let t0 = Instant::now();
    let started = t0 + Duration::from_secs(1);
    let registry = RunnerRegistry::new();
    registry.register(RUNNER);
    registry.register("runner-b");
    type Case = (
        &'static str,
        Vec<(&'static str, Vm)>,
        Vec<Instance>,
        Vec<&'static str>,
        bool,
        Vec<Fix>,
    );
    let orphan = |n: &str| Fix::DeleteOrphan {
        name: n.into(),
        zone: "zone-a".into(),
    };
    let cases: Vec<Case> = vec![
        (
            "a leftover of this runner is deleted; another manager's VM is untouched",
            vec![],
            vec![
                inst("left", "zone-a", Running, ME, Some(RUNNER)),
                inst("theirs", "zone-a", Running, "mgr-2", Some(RUNNER)),
            ],
            vec![],
            false,
            vec![orphan("left")],
        ),
        (
            "a held VM that stopped was preempted (spot) and still exists",
            vec![("a", vm(Used, true, false, t0))],
            vec![inst("a", "zone-a", Terminated, ME, Some(RUNNER))],
            vec![],
            true,
            vec![Fix::Lose {
                name: "a".into(),
                fate: VmFate::Preempted,
                exists: true,
            }],
        ),
        (
            "a held VM missing from the listing is checked with a get; one creating is not",
            vec![
                ("a", vm(Idle, true, false, t0)),
                ("b", vm(Creating, false, true, t0)),
            ],
            vec![],
            vec![],
            false,
            vec![Fix::Check {
                name: "a".into(),
                zone: "zone-a".into(),
            }],
        ),
        (
            "a VM in an unreachable zone is unknown: nothing happens",
            vec![("a", vm(Idle, true, false, t0))],
            vec![inst("x", "zone-a", Running, ME, Some(RUNNER))],
            vec!["zone-a"],
            false,
            vec![],
        ),
        (
            "a stuck removal still listed is restarted; one no longer listed is done",
            vec![
                ("r1", vm(Removing, true, false, t0)),
                ("r2", vm(Removing, true, false, t0)),
            ],
            vec![inst("r1", "zone-a", Running, ME, Some(RUNNER))],
            vec![],
            false,
            vec![Fix::Remove("r1".into()), Fix::Forget("r2".into())],
        ),
        (
            "VMs of runners no pool holds go (this pool is the janitor); another pool's stay",
            vec![],
            vec![
                inst("gone-runner", "zone-a", Running, ME, Some("runner-0")),
                inst("no-label", "zone-a", Running, ME, None),
                inst("sibling", "zone-a", Running, ME, Some("runner-b")),
            ],
            vec![],
            false,
            vec![orphan("gone-runner"), orphan("no-label")],
        ),
    ];
    for (name, vms, instances, unreachable, spot, want) in cases {
        let mut table = Table::default();
        for (n, v) in vms {
            table.vms.insert(n.into(), v);
        }
        let listing = Listing {
            instances,
            unreachable_zones: unreachable.into_iter().map(String::from).collect(),
        };
        let me = Identity {
            manager_id: ME,
            host_id: "h-me",
            runner_label: RUNNER,
            spot,
        };
        assert_eq!(
            reconcile(&table, listing, &me, &registry, started),
            want,
            "case: {name}"
        );
    }
}

#[test]
fn orphans_no_longer_listed_are_dropped_unless_being_deleted_or_unreachable() {
    let t0 = Instant::now();
    let mut table = Table::default();
    for (name, zone, deleting) in [
        ("idle-orphan", "zone-a", false),
        ("deleting", "zone-a", true),
        ("far", "zone-b", false),
    ] {
        table.orphans.insert(
            name.into(),
            Orphan {
                zone: zone.into(),
                deleting,
                accepted_at: None,
                attempts: 1,
                retry_at: None,
            },
        );
    }
    let listing = Listing {
        instances: vec![],
        unreachable_zones: vec!["zone-b".into()],
    };
    let me = Identity {
        manager_id: ME,
        host_id: "h-me",
        runner_label: RUNNER,
        spot: false,
    };
    let fixes = reconcile(&table, listing, &me, &RunnerRegistry::new(), t0);
    assert_eq!(fixes, vec![Fix::DropOrphan("idle-orphan".into())]);
}

#[test]
fn accepted_deletions_are_confirmed_only_by_a_later_listing_without_the_vm() {
    use InstanceStatus::Stopping;
    let t0 = Instant::now();
    let me = Identity {
        manager_id: ME,
        host_id: "h-me",
        runner_label: RUNNER,
        spot: false,
    };
    let registry = RunnerRegistry::new();
    registry.register(RUNNER);
    let mut table = Table::default();
    let mut v = vm(VmState::Removing, true, false, t0);
    v.delete_accepted_at = Some(t0);
    table.vms.insert("held".into(), v);
    table.orphans.insert(
        "orphan".into(),
        Orphan {
            zone: "zone-a".into(),
            deleting: false,
            accepted_at: Some(t0),
            attempts: 0,
            retry_at: None,
        },
    );
    let stopping = || Listing {
        instances: vec![
            inst("held", "zone-a", Stopping, ME, Some(RUNNER)),
            inst("orphan", "zone-a", Stopping, ME, Some(RUNNER)),
        ],
        unreachable_zones: vec![],
    };
    let later = t0 + Duration::from_secs(1);
    // Still listed (STOPPING) soon after: left alone, no second delete.
    assert_eq!(reconcile(&table, stopping(), &me, &registry, later), vec![]);
    // A listing begun before the delete was accepted proves nothing.
    let before = t0.checked_sub(Duration::from_millis(1)).unwrap_or(t0);
    if before < t0 {
        assert_eq!(
            reconcile(&table, Listing::default(), &me, &registry, before),
            vec![]
        );
    }
    // Gone from a listing begun after: confirmed.
    assert_eq!(
        reconcile(&table, Listing::default(), &me, &registry, later),
        vec![Fix::Forget("held".into()), Fix::DropOrphan("orphan".into())]
    );
    // Still listed long after: the delete is sent again.
    let late = t0 + CONFIRM_TIMEOUT + Duration::from_secs(1);
    assert_eq!(
        reconcile(&table, stopping(), &me, &registry, late),
        vec![
            Fix::Remove("held".into()),
            Fix::DeleteOrphan {
                name: "orphan".into(),
                zone: "zone-a".into()
            }
        ]
    );
}

#[test]
fn a_get_decides_the_fate_of_a_vm_a_listing_missed() {
    let i = |status| inst("a", "zone-a", status, ME, Some(RUNNER));
    assert_eq!(checked_fate(None, false), Some((VmFate::Gone, false)));
    assert_eq!(checked_fate(None, true), Some((VmFate::Preempted, false)));
    assert_eq!(
        checked_fate(Some(&i(InstanceStatus::Terminated)), false),
        Some((VmFate::Terminated, true))
    );
    assert_eq!(checked_fate(Some(&i(InstanceStatus::Running)), false), None);
}

#[test]
fn a_vm_of_another_host_with_this_manager_id_is_a_conflict_and_nothing_is_deleted() {
    let t0 = Instant::now();
    let registry = RunnerRegistry::new();
    registry.register(RUNNER);
    let mut theirs = inst(
        "theirs",
        "zone-a",
        InstanceStatus::Running,
        ME,
        Some(RUNNER),
    );
    theirs.labels.insert(HOST_LABEL.into(), "h-other".into());
    let mut mine = inst("mine", "zone-a", InstanceStatus::Running, ME, Some(RUNNER));
    mine.labels.insert(HOST_LABEL.into(), "h-me".into());
    // An older VM without a host label is this host's (a leftover): deleted as before.
    let old = inst("old", "zone-a", InstanceStatus::Running, ME, Some(RUNNER));
    let listing = |v: Vec<Instance>| Listing {
        instances: v,
        unreachable_zones: vec![],
    };
    let me = Identity {
        manager_id: ME,
        host_id: "h-me",
        runner_label: RUNNER,
        spot: false,
    };
    let table = Table::default();
    assert_eq!(
        reconcile(
            &table,
            listing(vec![mine.clone(), old.clone(), theirs.clone()]),
            &me,
            &registry,
            t0
        ),
        vec![Fix::Conflict {
            name: "theirs".into(),
            host: "h-other".into()
        }]
    );
    assert_eq!(
        reconcile(&table, listing(vec![mine, old]), &me, &registry, t0),
        vec![
            Fix::DeleteOrphan {
                name: "mine".into(),
                zone: "zone-a".into()
            },
            Fix::DeleteOrphan {
                name: "old".into(),
                zone: "zone-a".into()
            }
        ]
    );
    // Another manager id's VMs are never a conflict.
    let mut other = inst(
        "x",
        "zone-a",
        InstanceStatus::Running,
        "mgr-2",
        Some(RUNNER),
    );
    other.labels.insert(HOST_LABEL.into(), "h-other".into());
    assert_eq!(
        reconcile(&table, listing(vec![other]), &me, &registry, t0),
        vec![]
    );
}

#[test]
fn listings_wanted_for_addresses_are_spaced_by_the_last_ones_duration() {
    let t0 = Instant::now();
    let interval = Duration::from_secs(60);
    let mut l = Listings::new(t0);
    // A quick listing (a small fleet): the next one wanted for addresses follows at once.
    l.running = true;
    l.succeeded(t0, t0 + Duration::from_millis(5), interval);
    let end = t0 + Duration::from_millis(5);
    assert_eq!(
        l.due_at(Want::Addresses),
        Some(end + Duration::from_millis(20))
    );
    assert_eq!(l.due_at(Want::Nothing), Some(end + interval));
    assert_eq!(l.due_at(Want::Confirmations), Some(end + CONFIRM_SPACING));
    // A listing of 200 ms waits 800 ms; one of 2 s, the cap.
    l.succeeded(end, end + Duration::from_millis(200), interval);
    let end = end + Duration::from_millis(200);
    assert_eq!(
        l.due_at(Want::Addresses),
        Some(end + Duration::from_millis(800))
    );
    assert!(!l.due(end + Duration::from_millis(799), Want::Addresses));
    assert!(l.due(end + Duration::from_millis(800), Want::Addresses));
    l.succeeded(end, end + Duration::from_secs(2), interval);
    let end = end + Duration::from_secs(2);
    assert_eq!(l.due_at(Want::Addresses), Some(end + ADDRESS_SPACING_MAX));
    // None while one runs.
    l.running = true;
    assert_eq!(l.due_at(Want::Addresses), None);
}
