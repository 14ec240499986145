//! The pool's table: every VM a runner's pool holds ([`Vm`], by name), the VMs it deletes without
//! holding them ([`Orphan`]s) and the VMs it saw go (for `vm_fate`), with the state changes
//! (creating → idle → leased → used → removing) as methods. Owned by the actor alone; `plan`
//! reads it. Knows no cloud, no worker, no metrics: callers act on what the methods return.

use super::policy::{Counts, RemoveReason};
use super::protocol::Lookup;
use super::worker::DeleteOutcome;
use super::{VmFate, VmInfo, VmState, STUCK_AFTER_ATTEMPTS};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long the table remembers a VM the pool saw go.
const LOST_TTL: Duration = Duration::from_secs(600);

/// One VM the pool holds.
pub(super) struct Vm {
    pub zone: String,
    pub state: VmState,
    pub created_at: Instant,
    pub ready_at: Option<Instant>,
    pub idle_since: Instant,
    pub used_count: u32,
    pub docker: Option<bollard::Docker>,
    pub removal_attempts: u32,
    /// When its removal started (the removal-duration histogram).
    pub removing_since: Option<Instant>,
    /// The worker acting on this VM (creating or deleting), if any: at most one at a time.
    pub worker: Option<CancellationToken>,
    pub retry_delete_at: Option<Instant>,
    /// When Compute accepted its delete: a listing begun later without it confirms it gone.
    pub delete_accepted_at: Option<Instant>,
    /// In a zone a reload dropped: removed when its job ends, never leased again.
    pub retire: bool,
}

impl Vm {
    /// A VM whose creation `worker` starts now in `zone`.
    pub fn creating(zone: String, now: Instant, worker: CancellationToken) -> Vm {
        Vm {
            zone,
            state: VmState::Creating,
            created_at: now,
            ready_at: None,
            idle_since: now,
            used_count: 0,
            docker: None,
            removal_attempts: 0,
            removing_since: None,
            worker: Some(worker),
            retry_delete_at: None,
            delete_accepted_at: None,
            retire: false,
        }
    }

    /// GitLab Runner's state name (see [`VmState::name_after`]).
    pub fn state_name(&self) -> &'static str {
        self.state.name_after(self.removal_attempts)
    }

    /// Leased or used: a job (request) holds it.
    pub fn is_held_by_job(&self) -> bool {
        matches!(self.state, VmState::Leased | VmState::Used)
    }
}

/// A VM this pool deletes but does not hold (a leftover, or of a runner no pool holds): not
/// counted against `limit`.
pub(super) struct Orphan {
    pub zone: String,
    pub deleting: bool,
    /// When Compute accepted its delete (see [`Vm::delete_accepted_at`]).
    pub accepted_at: Option<Instant>,
    pub attempts: u32,
    pub retry_at: Option<Instant>,
}

/// What a finished deletion attempt changed.
#[derive(Debug, PartialEq)]
pub(super) enum Deletion {
    /// A held VM is gone from the table (`took`: since its removal started).
    Removed {
        zone: String,
        took: Option<Duration>,
    },
    /// A held VM's attempt failed; past the bounded retries it is stuck on removing.
    Failed { attempts: u32, stuck: bool },
    /// An orphan is gone.
    OrphanRemoved { zone: String },
    /// Compute accepted the delete: a later listing confirms it.
    Accepted,
    /// An orphan's attempt failed (retried later), or the name is not in the table.
    Nothing,
}

/// What a give-back does with a VM.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum GiveBack {
    /// Now idle.
    Idle,
    /// To remove, for this reason.
    Remove(&'static str),
}

/// The VMs of one pool. Made empty by the actor; dropped with it.
#[derive(Default)]
pub(super) struct Table {
    pub vms: BTreeMap<String, Vm>,
    pub orphans: BTreeMap<String, Orphan>,
    /// VMs a job held that the pool saw go, with when (kept [`LOST_TTL`]).
    pub lost: BTreeMap<String, (VmFate, Instant)>,
}

/// When to try a failed deletion again: backing off, none past [`STUCK_AFTER_ATTEMPTS`] (then
/// only a listing that still shows the VM retries).
fn retry_after(attempts: u32, now: Instant) -> Option<Instant> {
    (attempts < STUCK_AFTER_ATTEMPTS)
        .then(|| now + Duration::from_secs(5) * (1u32 << attempts.min(6)))
}

impl Table {
    /// VMs per state. Orphans (this manager's VMs the pool does not hold, e.g. those of a killed
    /// earlier process) count as removing until their deletion is confirmed: they still exist,
    /// so `limit` must cap them (else a restart briefly runs more than `limit` VMs).
    pub fn counts(&self) -> Counts {
        let mut c = Counts {
            removing: u32::try_from(self.orphans.len()).unwrap_or(u32::MAX),
            ..Counts::default()
        };
        for vm in self.vms.values() {
            match vm.state {
                VmState::Creating => c.creating += 1,
                VmState::Idle => c.idle += 1,
                VmState::Leased => c.leased += 1,
                VmState::Used => c.used += 1,
                VmState::Removing => c.removing += 1,
            }
        }
        c
    }

    /// The names of the VMs in `state`, in name order.
    pub fn names_in(&self, state: VmState) -> Vec<String> {
        self.vms
            .iter()
            .filter(|(_, v)| v.state == state)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// The idle VM to lease next: the most recently idle one with a Docker client, not retiring.
    pub fn newest_idle(&self) -> Option<String> {
        self.vms
            .iter()
            .filter(|(_, v)| v.state == VmState::Idle && v.docker.is_some() && !v.retire)
            .max_by_key(|(_, v)| v.idle_since)
            .map(|(n, _)| n.clone())
    }

    /// Every held VM, for a snapshot.
    pub fn infos(&self, now: Instant) -> Vec<VmInfo> {
        self.vms
            .iter()
            .map(|(n, v)| VmInfo {
                name: n.clone(),
                zone: v.zone.clone(),
                state: v.state,
                age: now.duration_since(v.created_at),
                used_count: v.used_count,
                removal_attempts: v.removal_attempts,
            })
            .collect()
    }

    /// Every name held or being deleted (what a shutdown reports as not confirmed deleted).
    pub fn all_names(&self) -> Vec<String> {
        self.vms
            .keys()
            .chain(self.orphans.keys())
            .cloned()
            .collect()
    }

    /// Nothing held and nothing being deleted.
    pub fn is_empty(&self) -> bool {
        self.vms.is_empty() && self.orphans.is_empty()
    }

    /// Forgets lost VMs older than [`LOST_TTL`].
    pub fn expire_lost(&mut self, now: Instant) {
        self.lost
            .retain(|_, (_, at)| now.duration_since(*at) < LOST_TTL);
    }

    /// Idle VM `name` becomes `state` (leased or used); its zone and Docker client for the lease.
    pub fn lease(&mut self, name: &str, state: VmState) -> Option<(String, bollard::Docker)> {
        let vm = self.vms.get_mut(name)?;
        let docker = vm.docker.clone()?;
        vm.state = state;
        Some((vm.zone.clone(), docker))
    }

    /// A lease its asker no longer wanted: back to idle, keeping its idle time.
    pub fn take_back(&mut self, name: &str) {
        if let Some(vm) = self.vms.get_mut(name) {
            vm.state = VmState::Idle;
        }
    }

    /// A leased VM found a job: now used. Its zone when it changed.
    pub fn mark_used(&mut self, name: &str) -> Option<String> {
        let vm = self.vms.get_mut(name)?;
        (vm.state == VmState::Leased).then(|| {
            vm.state = VmState::Used;
            vm.zone.clone()
        })
    }

    /// Starts removing `name`: its zone when a deletion worker (with the token `worker` makes)
    /// must start now. None when not held or a worker already acts on it (a creation worker is
    /// canceled first: deletion starts from its event).
    pub fn begin_removal(
        &mut self,
        name: &str,
        now: Instant,
        worker: impl FnOnce() -> CancellationToken,
    ) -> Option<(String, CancellationToken)> {
        let vm = self.vms.get_mut(name)?;
        if let Some(t) = &vm.worker {
            if vm.state == VmState::Creating {
                t.cancel();
            }
            return None;
        }
        vm.state = VmState::Removing;
        vm.removing_since.get_or_insert(now);
        vm.docker = None;
        vm.retry_delete_at = None;
        vm.delete_accepted_at = None;
        let token = worker();
        vm.worker = Some(token.clone());
        Some((vm.zone.clone(), token))
    }

    /// Starts deleting orphan `name` in `zone` (added if new): its failed attempts so far when a
    /// deletion worker must start now, None when one already runs.
    pub fn begin_orphan_deletion(&mut self, name: &str, zone: &str) -> Option<u32> {
        let o = self.orphans.entry(name.to_string()).or_insert(Orphan {
            zone: zone.to_string(),
            deleting: false,
            accepted_at: None,
            attempts: 0,
            retry_at: None,
        });
        if o.deleting {
            return None;
        }
        o.deleting = true;
        o.accepted_at = None;
        o.retry_at = None;
        Some(o.attempts)
    }

    /// Whether a deletion Compute accepted still waits for a listing to confirm it.
    pub fn confirming(&self) -> bool {
        self.vms.values().any(|v| v.delete_accepted_at.is_some())
            || self.orphans.values().any(|o| o.accepted_at.is_some())
    }

    /// Records a deletion attempt that ended: `Gone` (also a listing confirming an accepted
    /// deletion) removes the VM from the table, `Accepted` waits for that listing.
    pub fn deleted(&mut self, name: &str, outcome: DeleteOutcome, now: Instant) -> Deletion {
        if let Some(vm) = self.vms.get_mut(name) {
            vm.worker = None;
            match outcome {
                DeleteOutcome::Gone => {
                    let took = vm.removing_since.map(|t| now.duration_since(t));
                    let zone = vm.zone.clone();
                    self.vms.remove(name);
                    return Deletion::Removed { zone, took };
                }
                DeleteOutcome::Accepted => {
                    vm.delete_accepted_at = Some(now);
                    return Deletion::Accepted;
                }
                DeleteOutcome::Failed => {}
            }
            vm.removal_attempts = vm.removal_attempts.saturating_add(1);
            vm.retry_delete_at = retry_after(vm.removal_attempts, now);
            Deletion::Failed {
                attempts: vm.removal_attempts,
                stuck: vm.retry_delete_at.is_none(),
            }
        } else if let Some(o) = self.orphans.get_mut(name) {
            o.deleting = false;
            match outcome {
                DeleteOutcome::Gone => {
                    let zone = o.zone.clone();
                    self.orphans.remove(name);
                    return Deletion::OrphanRemoved { zone };
                }
                DeleteOutcome::Accepted => {
                    o.accepted_at = Some(now);
                    return Deletion::Accepted;
                }
                DeleteOutcome::Failed => {}
            }
            o.attempts = o.attempts.saturating_add(1);
            o.retry_at = retry_after(o.attempts, now);
            Deletion::Nothing
        } else {
            Deletion::Nothing
        }
    }

    /// What becomes of leased or used VM `name` when it is given back: after its job
    /// (`after_job = Some(used)`; a job that ran counts towards `max_builds`) or unused
    /// (`None`). Retiring, `MaxBuilds` reached after a job, or `leaving` (shutdown, drain)
    /// remove it; else it is idle from `now`. None when no job holds it.
    pub fn give_back(
        &mut self,
        name: &str,
        after_job: Option<bool>,
        max_builds: u32,
        leaving: bool,
        now: Instant,
    ) -> Option<GiveBack> {
        let vm = self.vms.get_mut(name).filter(|v| v.is_held_by_job())?;
        if after_job == Some(true) {
            vm.used_count = vm.used_count.saturating_add(1);
        }
        Some(if vm.retire {
            GiveBack::Remove("zone_dropped")
        } else if after_job.is_some() && max_builds > 0 && vm.used_count >= max_builds {
            GiveBack::Remove(RemoveReason::TooManyBuilds.as_str())
        } else if leaving {
            GiveBack::Remove("leaving")
        } else {
            vm.state = VmState::Idle;
            vm.idle_since = now;
            GiveBack::Idle
        })
    }

    /// After a reload left only `zones`: the idle and creating VMs elsewhere, to remove now;
    /// busy ones elsewhere are marked to retire after their job.
    pub fn outside_zones(&mut self, zones: &[String]) -> Vec<String> {
        let mut remove = Vec::new();
        for (name, vm) in &mut self.vms {
            if zones.contains(&vm.zone) || vm.state == VmState::Removing {
                continue;
            }
            match vm.state {
                VmState::Idle | VmState::Creating => remove.push(name.clone()),
                _ => vm.retire = true,
            }
        }
        remove
    }

    /// What the pool knows of VM `name` for `vm_fate` (`spot`: the runner's VMs are Spot).
    pub fn lookup(&self, name: &str, spot: bool) -> Lookup {
        if let Some((fate, _)) = self.lost.get(name) {
            Lookup::Lost(*fate)
        } else if let Some(vm) = self.vms.get(name) {
            Lookup::Held {
                zone: vm.zone.clone(),
                spot,
            }
        } else {
            Lookup::Unknown
        }
    }

    /// Remembers that `name`, held by a job, went (`fate`) at `now`.
    pub fn remember_lost(&mut self, name: &str, fate: VmFate, now: Instant) {
        self.lost.insert(name.to_string(), (fate, now));
    }
}
