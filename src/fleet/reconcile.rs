//! Reconcile by label: compares a listing of this manager's VMs (the cloud's truth, e.g. after a
//! crash) with the table and returns the [`Fix`]es — leftovers and VMs of runners no pool holds
//! to delete, VMs that went away without us to forget, removals to restart, finished removals.
//! Pure: the actor carries the fixes out. Only VMs with this manager's label are considered; a VM
//! in a zone the listing could not reach is unknown, never vanished or deleted. A deletion
//! Compute accepted is confirmed by a listing begun after it that no longer shows the VM; a held
//! VM missing from one listing is checked with a get before it is lost (a listing can miss one).

use super::table::Table;
use super::{
    FleetSettings, RunnerRegistry, VmFate, VmState, HOST_LABEL, MANAGER_LABEL, RUNNER_LABEL,
};
use crate::cloud::{Instance, InstanceStatus, Listing};
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::time::Instant;

/// How long after Compute accepted a delete a listing that still shows the VM leaves it be
/// (it is STOPPING); after that the delete is sent again.
pub(super) const CONFIRM_TIMEOUT: Duration = Duration::from_secs(300);
/// While deletions wait for confirmation, a listing at most this often.
pub(super) const CONFIRM_SPACING: Duration = Duration::from_secs(2);

/// A listing wanted for addresses waits this many times the last listing's duration after it
/// (a long listing of a big fleet is not repeated back to back: listings take at most a fifth
/// of the pool's time)…
const ADDRESS_SPACING_FACTOR: u32 = 4;
/// …but never longer than this.
pub(super) const ADDRESS_SPACING_MAX: Duration = Duration::from_secs(1);

/// Why a listing is wanted before `reconcile_interval` is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Want {
    /// Nothing waits on one.
    Nothing,
    /// Deletions wait for confirmation: one every [`CONFIRM_SPACING`].
    Confirmations,
    /// Creation workers wait for their VM's address: one soon (see [`ADDRESS_SPACING_MAX`]).
    Addresses,
}

/// When the pool lists its VMs: whether a listing runs, when the next is due, and how many
/// failed in a row. Owned by the actor.
pub(super) struct Listings {
    pub running: bool,
    pub next_at: Instant,
    /// When the last listing ended (the spacing of wanted listings runs from it).
    last_end: Instant,
    /// How long the last listing that succeeded took.
    last_took: Duration,
    failures: u32,
}

impl Listings {
    /// The first listing (the startup cleanup) is due at `now`.
    pub fn new(now: Instant) -> Listings {
        Listings {
            running: false,
            next_at: now,
            last_end: now,
            last_took: Duration::ZERO,
            failures: 0,
        }
    }

    /// When the next listing is due given what waits on one (`None` while one runs). After a
    /// failure, wanted listings wait for the retry like the rest.
    pub fn due_at(&self, want: Want) -> Option<Instant> {
        if self.running {
            return None;
        }
        let wanted = match want {
            _ if self.failures > 0 => self.next_at,
            Want::Nothing => self.next_at,
            Want::Confirmations => self.last_end + CONFIRM_SPACING,
            Want::Addresses => {
                let spacing = (self.last_took * ADDRESS_SPACING_FACTOR).min(ADDRESS_SPACING_MAX);
                self.last_end + spacing
            }
        };
        Some(wanted.min(self.next_at))
    }

    /// Whether a listing should start at `now`.
    pub fn due(&self, now: Instant, want: Want) -> bool {
        self.due_at(want).is_some_and(|t| now >= t)
    }

    /// A listing begun at `started` ended well at `now`: the next comes after `interval`.
    pub fn succeeded(&mut self, started: Instant, now: Instant, interval: Duration) {
        self.running = false;
        self.last_end = now;
        self.last_took = now.saturating_duration_since(started);
        self.failures = 0;
        self.next_at = now + interval;
    }

    /// A listing failed: retried after `interval` once `started`, before that (the startup
    /// cleanup) from 10 s doubling to a minute. Returns the wait.
    pub fn failed(&mut self, now: Instant, interval: Duration, started: bool) -> Duration {
        self.running = false;
        self.last_end = now;
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
    /// The `flotilla-host` label value (empty: none checked).
    pub host_id: &'a str,
    /// The `flotilla-runner` label value.
    pub runner_label: &'a str,
    /// Spot VMs: one that goes away was preempted.
    pub spot: bool,
}

impl<'a> Identity<'a> {
    /// The identity of the pool with settings `s`.
    pub fn of(s: &'a FleetSettings) -> Identity<'a> {
        Identity {
            manager_id: &s.manager_id,
            host_id: &s.host_id,
            runner_label: &s.runner_label,
            spot: s.gce.spot,
        }
    }
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
    /// A held VM the listing did not show: check it with a get before losing it.
    Check { name: String, zone: String },
    /// Delete a VM this pool does not hold.
    DeleteOrphan { name: String, zone: String },
    /// A removal (accepted, or past its retries) that the cloud no longer lists is done.
    Forget(String),
    /// An orphan no longer listed (and not being deleted) is gone.
    DropOrphan(String),
    /// VM `name` has this manager id but host label `host`: another host runs with the same
    /// `manager_id`. Alone in its listing's fixes: nothing else is done on it.
    Conflict { name: String, host: String },
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
    if let Some(fix) = conflict(&listing, me) {
        return vec![fix];
    }
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
                        && !stopping(vm.delete_accepted_at, started)
                    {
                        fixes.push(Fix::Remove(inst.name));
                    }
                }
                None if orphan_stopping(table, &inst.name, started) => {}
                None => fixes.push(Fix::DeleteOrphan {
                    name: inst.name,
                    zone: inst.zone,
                }),
            }
        } else if janitor
            && !label.is_some_and(|l| registry.contains(l))
            && !orphan_stopping(table, &inst.name, started)
        {
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
                fixes.push(Fix::Check {
                    name: name.clone(),
                    zone: vm.zone.clone(),
                });
            }
            VmState::Removing
                if vm.worker.is_none() && vm.delete_accepted_at.is_none_or(|t| started > t) =>
            {
                fixes.push(Fix::Forget(name.clone()))
            }
            _ => {}
        }
    }
    for (name, o) in &table.orphans {
        let listed_after = o.accepted_at.is_none_or(|t| started > t);
        if !o.deleting && listed_after && !seen.contains(name) && reachable(&o.zone) {
            fixes.push(Fix::DropOrphan(name.clone()));
        }
    }
    fixes
}

/// The first VM with this manager id and another host's label, if any.
fn conflict(listing: &Listing, me: &Identity<'_>) -> Option<Fix> {
    if me.host_id.is_empty() {
        return None;
    }
    listing.instances.iter().find_map(|i| {
        let host = i.labels.get(HOST_LABEL)?;
        let mine = i.labels.get(MANAGER_LABEL).map(String::as_str) == Some(me.manager_id);
        (mine && host != me.host_id).then(|| Fix::Conflict {
            name: i.name.clone(),
            host: host.clone(),
        })
    })
}

/// Whether a VM whose delete was accepted at `accepted` may still be listed (STOPPING) in a
/// listing begun at `started`.
fn stopping(accepted: Option<Instant>, started: Instant) -> bool {
    accepted.is_some_and(|t| started < t + CONFIRM_TIMEOUT)
}

/// Whether `name` is an orphan whose accepted deletion may still show in the listing.
fn orphan_stopping(table: &Table, name: &str, started: Instant) -> bool {
    table
        .orphans
        .get(name)
        .is_some_and(|o| stopping(o.accepted_at, started))
}

/// What a get of a held VM a listing missed says: its fate and whether it still exists, or
/// `None` when it runs (the listing missed it).
pub(super) fn checked_fate(found: Option<&Instance>, spot: bool) -> Option<(VmFate, bool)> {
    let stopped = |i: &Instance| {
        matches!(
            i.status,
            InstanceStatus::Stopping | InstanceStatus::Terminated
        )
    };
    match found {
        None if spot => Some((VmFate::Preempted, false)),
        None => Some((VmFate::Gone, false)),
        Some(i) if stopped(i) && spot => Some((VmFate::Preempted, true)),
        Some(i) if stopped(i) => Some((VmFate::Terminated, true)),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests;
