//! The pool actor's deletion side: removing held VMs (one deletion worker per VM, bounded
//! retries, then only when a listing still shows it), deleting VMs it does not hold, and
//! starting listings. Part of the actor: same owner, same table.

use super::*;

impl Actor {
    pub(super) fn start_removal(&mut self, name: &str) {
        let Some(vm) = self.vms.get_mut(name) else {
            return;
        };
        if let Some(t) = &vm.worker {
            // A creation worker is canceled and reports; deletion starts from its event. A
            // deletion worker is already doing the job.
            if vm.state == VmState::Creating {
                t.cancel();
            }
            return;
        }
        vm.state = VmState::Removing;
        vm.removing_since.get_or_insert_with(Instant::now);
        vm.docker = None;
        vm.retry_delete_at = None;
        let token = self.cancel.child_token();
        vm.worker = Some(token.clone());
        let (zone, name) = (vm.zone.clone(), name.to_string());
        self.tracker
            .spawn(worker::delete(self.ctx.clone(), zone, name, token));
    }

    pub(super) fn delete_orphan(&mut self, name: &str, zone: &str) {
        let o = self.orphans.entry(name.to_string()).or_insert(Orphan {
            zone: zone.to_string(),
            deleting: false,
            attempts: 0,
            retry_at: None,
        });
        if o.deleting {
            return;
        }
        o.deleting = true;
        if o.attempts == 0 {
            self.metrics.orphan_deleted(!self.started);
        }
        o.retry_at = None;
        tracing::info!(vm = %name, %zone, "deleting a VM this process does not hold");
        let token = self.cancel.child_token();
        self.tracker.spawn(worker::delete(
            self.ctx.clone(),
            zone.to_string(),
            name.to_string(),
            token,
        ));
    }

    pub(super) fn retry_deletes(&mut self, now: Instant) {
        let due: Vec<String> = self
            .vms
            .iter()
            .filter(|(_, v)| v.worker.is_none() && v.retry_delete_at.is_some_and(|t| t <= now))
            .map(|(n, _)| n.clone())
            .collect();
        for n in due {
            self.start_removal(&n);
        }
        let due: Vec<(String, String)> = self
            .orphans
            .iter()
            .filter(|(_, o)| !o.deleting && o.retry_at.is_some_and(|t| t <= now))
            .map(|(n, o)| (n.clone(), o.zone.clone()))
            .collect();
        for (n, z) in due {
            self.delete_orphan(&n, &z);
        }
    }

    pub(super) fn start_listing(&mut self) {
        self.listing = true;
        let labels = BTreeMap::from([(MANAGER_LABEL.to_string(), self.s.manager_id.clone())]);
        self.tracker.spawn(worker::list(
            self.ctx.clone(),
            labels,
            self.cancel.child_token(),
        ));
    }
}
