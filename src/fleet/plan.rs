//! The pool's decisions, as one pure function: [`plan`] reads the [`Table`] and the [`Policy`]
//! in force and returns the [`Action`]s to take now (list, retry deletions, remove idle VMs,
//! create VMs, and on shutdown fail waiters and cancel creations). No clock, no I/O, no
//! mutation: the actor builds the policy, calls `plan` after every command and event, and carries
//! the actions out. The counting rules themselves are `policy`'s.

use super::policy::{self, Caps, Demand, IdleVm};
use super::schedule::IdleSettings;
use super::table::Table;
use super::VmState;
use tokio::time::Instant;

/// What the pool wants now, besides the table. Built by the actor from its settings, schedule,
/// waiters, backlog and pauses.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Policy {
    /// The idle settings in force (all zero while draining).
    pub idle: IdleSettings,
    /// `limit` and `MaxGrowthRate`.
    pub caps: Caps,
    /// `MaxBuilds` (0 = none).
    pub max_builds: u32,
    /// The backlog hint (0 when off, stale or draining).
    pub backlog: u32,
    /// Idle VMs kept from removal beyond the IdleCount in force (the adaptive policy's
    /// allowance for jobs soon to come; 0 for a static pool).
    pub drain_keep: u32,
    /// Jobs waiting for an on-demand VM that no idle VM could serve.
    pub waiting: u32,
    /// The startup cleanup finished (nothing is created or judged before).
    pub started: bool,
    /// Draining: no idle VM is kept.
    pub draining: bool,
    /// Shutting down: every VM goes.
    pub shutting_down: bool,
    /// A rate-limit pause or failure backoff holds new creations.
    pub creation_paused: bool,
    /// A listing (reconcile) is due and none runs.
    pub list_due: bool,
}

/// One thing to do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Action {
    /// Start a listing by the manager label (startup cleanup, reconcile).
    List,
    /// Delete held VM `0` again (its retry time came).
    RetryRemoval(String),
    /// Delete orphan `name` again.
    RetryOrphan { name: String, zone: String },
    /// Tell every waiting job the pool is shutting down.
    FailWaiters,
    /// Cancel the creation worker of VM `0`.
    CancelCreation(String),
    /// Remove VM `name` (idle) for `reason`.
    Remove { name: String, reason: &'static str },
    /// Create one VM (the actor picks its zone; if none can be picked, the rest wait too).
    Create,
}

/// The actions to take now, in order: listing and due retries first; then, shutting down, fail
/// waiters, remove every idle VM and cancel every creation; else (once started) remove the idle
/// VMs the rules say go (all of them while draining) and create what the rules ask for (unless
/// paused).
pub(super) fn plan(table: &Table, policy: &Policy, now: Instant) -> Vec<Action> {
    let mut out = Vec::new();
    if policy.list_due {
        out.push(Action::List);
    }
    for (name, vm) in &table.vms {
        if vm.worker.is_none() && vm.retry_delete_at.is_some_and(|t| t <= now) {
            out.push(Action::RetryRemoval(name.clone()));
        }
    }
    for (name, o) in &table.orphans {
        if !o.deleting && o.retry_at.is_some_and(|t| t <= now) {
            out.push(Action::RetryOrphan {
                name: name.clone(),
                zone: o.zone.clone(),
            });
        }
    }
    if policy.shutting_down {
        out.push(Action::FailWaiters);
        for name in table.names_in(VmState::Idle) {
            out.push(Action::Remove {
                name,
                reason: "shutdown",
            });
        }
        for (name, vm) in &table.vms {
            if vm.state == VmState::Creating && vm.worker.is_some() {
                out.push(Action::CancelCreation(name.clone()));
            }
        }
        return out;
    }
    if !policy.started {
        return out;
    }
    let mut counts = table.counts();
    let removals: Vec<(String, &'static str)> = if policy.draining {
        table
            .names_in(VmState::Idle)
            .into_iter()
            .map(|n| (n, "draining"))
            .collect()
    } else {
        idle_removals(table, policy, now)
    };
    // An idle VM being removed counts as removing from here on (still under `limit`).
    let gone = u32::try_from(removals.len()).unwrap_or(u32::MAX);
    counts.idle = counts.idle.saturating_sub(gone);
    counts.removing = counts.removing.saturating_add(gone);
    out.extend(
        removals
            .into_iter()
            .map(|(name, reason)| Action::Remove { name, reason }),
    );
    if policy.creation_paused {
        return out;
    }
    let demand = Demand {
        on_demand: policy.waiting,
        backlog: policy.backlog,
    };
    let n = policy::creations(counts, &policy.idle, policy.caps, demand);
    out.extend((0..n).map(|_| Action::Create));
    out
}

/// The idle VMs `policy::removals` says go, by name.
fn idle_removals(table: &Table, policy: &Policy, now: Instant) -> Vec<(String, &'static str)> {
    let idle_names = table.names_in(VmState::Idle);
    let idle_vms: Vec<IdleVm> = idle_names
        .iter()
        .enumerate()
        .filter_map(|(key, n)| {
            let v = table.vms.get(n)?;
            Some(IdleVm {
                key,
                idle_for: now.duration_since(v.idle_since),
                used_count: v.used_count,
            })
        })
        .collect();
    let mut busy = table.counts();
    busy.idle = 0;
    let idle = IdleSettings {
        idle_count: policy.idle.idle_count.saturating_add(policy.drain_keep),
        ..policy.idle
    };
    policy::removals(
        busy,
        &idle_vms,
        &idle,
        policy.caps,
        policy.max_builds,
        policy.backlog,
    )
    .into_iter()
    .filter_map(|(k, r)| Some((idle_names.get(k)?.clone(), r.as_str())))
    .collect()
}

#[cfg(test)]
mod tests;
