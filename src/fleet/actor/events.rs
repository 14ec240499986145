//! The pool actor's handling of its workers' events: a VM created or not, deleted or not, a
//! listing come back (reconcile), a missing VM checked, and a held VM lost.

use super::Actor;
use crate::cloud::{CloudError, Instance, Listing};
use crate::fleet::reconcile::{self, Fix, Identity};
use crate::fleet::table::Deletion;
use crate::fleet::worker::{self, CreateFailure, DeleteOutcome, Event, Ready};
use crate::fleet::{VmFate, VmState};
use tokio::time::Instant;

impl Actor {
    pub(super) fn on_event(&mut self, ev: Event) {
        let now = Instant::now();
        match ev {
            Event::Created { name, result } => self.on_created(name, result, now),
            Event::Deleted { name, outcome } => self.on_deleted(&name, outcome, now),
            Event::AddressWanted { name, asked, reply } => self.sightings.ask(name, asked, reply),
            Event::Checked { name, result } => self.on_checked(&name, result),
            Event::Listed { started, result } => self.on_listed(started, result, now),
            Event::RateLimited { until } => {
                if self.pauses.rate_limited(until, now) {
                    tracing::warn!(runner = %self.s.short_token, pause = ?until.saturating_duration_since(now), "Compute Engine API rate limit reached: holding new VM work until the quota refills");
                }
            }
        }
    }

    fn on_created(&mut self, name: String, result: Result<Ready, CreateFailure>, now: Instant) {
        let shutting_down = self.shutdown.is_some();
        let Some(vm) = self.table.vms.get_mut(&name) else {
            return;
        };
        vm.worker = None;
        let zone = vm.zone.clone();
        let took = now.duration_since(vm.created_at);
        match result {
            Ok(ready) => {
                tracing::info!(vm = %name, %zone, ?took, "VM ready");
                vm.state = VmState::Idle;
                vm.ready_at = Some(now);
                vm.idle_since = now;
                vm.docker = Some(ready.docker);
                self.demand.ready(took);
                self.metrics.created(&zone, took, &ready.phases);
                self.zones.record_success(&zone);
                self.pauses.creation_succeeded();
                self.stats.created += 1;
                if shutting_down {
                    self.start_removal(&name);
                }
            }
            Err(f) => {
                let may_exist = f.may_exist();
                if !matches!(f, CreateFailure::Canceled { .. }) {
                    self.stats.creation_failures += 1;
                    self.metrics.creation_failed(&zone, f.kind(), took);
                    tracing::warn!(vm = %name, %zone, kind = f.kind(), detail = f.detail(), "VM creation failed");
                }
                if matches!(f, CreateFailure::Other { .. }) {
                    self.pauses.creation_failed(now);
                }
                if let Some(b) = f.blame() {
                    let cooled = self.zones.record_failure(&zone, &b, now);
                    if !cooled.is_empty() {
                        tracing::warn!(zones = ?cooled, cause = ?b, "zones cooling down");
                    }
                }
                if may_exist {
                    self.start_removal(&name);
                } else {
                    self.table.vms.remove(&name);
                }
            }
        }
    }

    fn on_deleted(&mut self, name: &str, outcome: DeleteOutcome, now: Instant) {
        match self.table.deleted(name, outcome, now) {
            Deletion::Removed { zone, took } => {
                self.metrics.removed(&zone, took);
                self.stats.removed += 1;
            }
            Deletion::Failed { attempts, stuck } => {
                if stuck {
                    tracing::error!(vm = %name, attempts, "VM stuck on removing");
                }
            }
            Deletion::OrphanRemoved { zone } => {
                self.metrics.removed(&zone, None);
                self.stats.removed += 1;
            }
            Deletion::Nothing | Deletion::Accepted => {}
        }
    }

    fn on_listed(&mut self, started: Instant, result: Result<Listing, CloudError>, now: Instant) {
        match result {
            Ok(listing) => {
                self.listings
                    .succeeded(started, now, self.s.reconcile_interval);
                self.sightings.answer(&listing, started);
                if self.reconcile(listing, started) && !self.started {
                    self.started = true;
                    tracing::info!(runner = %self.s.short_token, "leftovers handled: pool warming");
                }
            }
            Err(e) => {
                let retry = self
                    .listings
                    .failed(now, self.s.reconcile_interval, self.started);
                tracing::warn!(runner = %self.s.short_token, error = %e, retry_in = ?retry, "listing this manager's VMs failed");
            }
        }
    }

    /// Carries out what `reconcile` finds in a listing begun at `started`; false when it found
    /// another host with this manager id (then nothing is done but reporting it).
    fn reconcile(&mut self, listing: Listing, started: Instant) -> bool {
        let me = Identity::of(&self.s);
        let fixes = reconcile::reconcile(&self.table, listing, &me, &self.registry, started);
        for fix in fixes {
            match fix {
                Fix::Conflict { name, host } => {
                    tracing::error!(runner = %self.s.short_token, manager_id = %self.s.manager_id, vm = %name, other_host = %host, "another host runs with this manager_id: stopping without touching its VMs; give each host its own manager_id");
                    let what = format!(
                        "VM {name} carries manager_id {} but host {host}",
                        self.s.manager_id
                    );
                    self.registry.report_conflict(what);
                    return false;
                }
                Fix::Remove(name) => self.start_removal(&name),
                Fix::Lose { name, fate, exists } => self.lose(&name, fate, exists),
                Fix::DeleteOrphan { name, zone } => self.delete_orphan(&name, &zone),
                Fix::Forget(name) | Fix::DropOrphan(name) => {
                    self.on_deleted(&name, DeleteOutcome::Gone, Instant::now());
                }
                Fix::Check { name, zone } => {
                    if self.sightings.begin_check(&name) {
                        let token = self.cancel.child_token();
                        self.tracker
                            .spawn(worker::check(self.ctx.clone(), zone, name, token));
                    }
                }
            }
        }
        true
    }

    /// A get of a held VM a listing missed: lost unless it runs.
    fn on_checked(&mut self, name: &str, result: Result<Option<Instance>, CloudError>) {
        self.sightings.end_check(name);
        match result {
            Ok(found) => match reconcile::checked_fate(found.as_ref(), self.s.gce.spot) {
                Some((fate, exists)) => self.lose(name, fate, exists),
                None => tracing::debug!(vm = %name, "a listing missed a running VM"),
            },
            Err(e) => {
                tracing::warn!(vm = %name, error = %e, "checking a VM missing from a listing failed")
            }
        }
    }

    /// A held VM went away without us: forget it (delete it if the cloud still has it) and
    /// remember its fate for `vm_fate` if a job held it.
    fn lose(&mut self, name: &str, fate: VmFate, exists: bool) {
        let Some(vm) = self.table.vms.get(name) else {
            return;
        };
        tracing::warn!(vm = %name, zone = %vm.zone, state = vm.state.as_str(), ?fate, "VM lost");
        if vm.is_held_by_job() {
            self.table.remember_lost(name, fate, Instant::now());
        }
        if exists {
            self.start_removal(name);
        } else {
            self.table.vms.remove(name);
        }
    }
}
