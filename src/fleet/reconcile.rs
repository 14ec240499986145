//! Reconcile by label: compares a listing of this manager's VMs (the cloud's truth, e.g. after a
//! crash) with the table and returns the [`Fix`]es — leftovers and VMs of runners no pool holds
//! to delete, VMs that went away without us to forget, removals to restart, finished removals.
//! Pure: the actor carries the fixes out. Only VMs with this manager's label are considered; a VM
//! in a zone the listing could not reach is unknown, never vanished or deleted.

use super::table::Table;
use super::{RunnerRegistry, VmFate, VmState, MANAGER_LABEL, RUNNER_LABEL};
use crate::cloud::{InstanceStatus, Listing};
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::time::Instant;

/// When the pool lists its VMs: whether a listing runs, when the next is due, and how many
/// failed in a row. Owned by the actor.
pub(super) struct Listings {
    pub running: bool,
    pub next_at: Instant,
    failures: u32,
}

impl Listings {
    /// The first listing (the startup cleanup) is due at `now`.
    pub fn new(now: Instant) -> Listings {
        Listings {
            running: false,
            next_at: now,
            failures: 0,
        }
    }

    /// Whether a listing should start at `now`.
    pub fn due(&self, now: Instant) -> bool {
        !self.running && now >= self.next_at
    }

    /// A listing ended well: the next comes after `interval`.
    pub fn succeeded(&mut self, now: Instant, interval: Duration) {
        self.running = false;
        self.failures = 0;
        self.next_at = now + interval;
    }

    /// A listing failed: retried after `interval` once `started`, before that (the startup
    /// cleanup) from 10 s doubling to a minute. Returns the wait.
    pub fn failed(&mut self, now: Instant, interval: Duration, started: bool) -> Duration {
        self.running = false;
        self.failures = self.failures.saturating_add(1);
        let retry = if started {
            interval
        } else {
            (Duration::from_secs(5) * (1u32 << self.failures.min(4))).min(Duration::from_secs(60))
        };
        self.next_at = now + retry;
        retry
    }
}

/// Who this pool is, for reading a listing.
pub(super) struct Identity<'a> {
    /// The `flotilla-manager` label value.
    pub manager_id: &'a str,
    /// The `flotilla-runner` label value.
    pub runner_label: &'a str,
    /// Spot VMs: one that goes away was preempted.
    pub spot: bool,
}

/// One correction to the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Fix {
    /// Start (again) removing a held VM the listing still shows.
    Remove(String),
    /// A held VM went without us (`exists`: the cloud still has it, stopped).
    Lose {
        name: String,
        fate: VmFate,
        exists: bool,
    },
    /// Delete a VM this pool does not hold.
    DeleteOrphan { name: String, zone: String },
    /// A removal past its retries that the cloud no longer lists is done.
    Forget(String),
    /// An orphan no longer listed (and not being deleted) is forgotten.
    DropOrphan(String),
}

/// The fixes a `listing` begun at `started` calls for. `registry` tells VMs of other runners of
/// this process (left to their pool) from those of runners no pool holds (deleted by the
/// janitor pool only).
pub(super) fn reconcile(
    table: &Table,
    listing: Listing,
    me: &Identity<'_>,
    registry: &RunnerRegistry,
    started: Instant,
) -> Vec<Fix> {
    let unreachable: BTreeSet<String> = listing.unreachable_zones.into_iter().collect();
    let mut seen = BTreeSet::new();
    let mut fixes = Vec::new();
    let janitor = registry.is_janitor(me.runner_label);
    for inst in listing.instances {
        if unreachable.contains(&inst.zone)
            || inst.labels.get(MANAGER_LABEL).map(String::as_str) != Some(me.manager_id)
        {
            continue;
        }
        seen.insert(inst.name.clone());
        let label = inst.labels.get(RUNNER_LABEL);
        if label.map(String::as_str) == Some(me.runner_label) {
            let stopped = matches!(
                inst.status,
                InstanceStatus::Stopping | InstanceStatus::Terminated
            );
            match table.vms.get(&inst.name) {
                Some(vm) => {
                    let held = matches!(vm.state, VmState::Idle | VmState::Leased | VmState::Used);
                    if held && stopped && vm.ready_at.is_some_and(|r| r < started) {
                        let fate = if me.spot {
                            VmFate::Preempted
                        } else {
                            VmFate::Terminated
                        };
                        fixes.push(Fix::Lose {
                            name: inst.name,
                            fate,
                            exists: true,
                        });
                    } else if vm.state == VmState::Removing
                        && vm.worker.is_none()
                        && vm.retry_delete_at.is_none()
                    {
                        fixes.push(Fix::Remove(inst.name));
                    }
                }
                None => fixes.push(Fix::DeleteOrphan {
                    name: inst.name,
                    zone: inst.zone,
                }),
            }
        } else if janitor && !label.is_some_and(|l| registry.contains(l)) {
            fixes.push(Fix::DeleteOrphan {
                name: inst.name,
                zone: inst.zone,
            });
        }
    }
    let reachable = |zone: &String| !unreachable.contains(zone);
    for (name, vm) in &table.vms {
        if seen.contains(name) || !reachable(&vm.zone) {
            continue;
        }
        match vm.state {
            VmState::Idle | VmState::Leased | VmState::Used
                if vm.ready_at.is_some_and(|r| r < started) =>
            {
                let fate = if me.spot {
                    VmFate::Preempted
                } else {
                    VmFate::Gone
                };
                fixes.push(Fix::Lose {
                    name: name.clone(),
                    fate,
                    exists: false,
                });
            }
            VmState::Removing if vm.worker.is_none() => fixes.push(Fix::Forget(name.clone())),
            _ => {}
        }
    }
    for (name, o) in &table.orphans {
        if !o.deleting && !seen.contains(name) && reachable(&o.zone) {
            fixes.push(Fix::DropOrphan(name.clone()));
        }
    }
    fixes
}

#[cfg(test)]
mod tests;
