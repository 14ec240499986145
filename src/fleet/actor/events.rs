//! The pool actor's reactions: to commands from handles, to worker events, and to listings
//! (startup cleanup and the periodic reconcile by label). Part of the actor: same owner, same
//! table, split only to keep files short.

use super::*;

impl Actor {
    pub(super) fn on_command(&mut self, cmd: Command) {
        let now = Instant::now();
        match cmd {
            Command::TryLease(reply) => {
                let lease = if self.shutdown.is_some() || self.draining || !self.started {
                    None
                } else {
                    self.newest_idle().map(|n| self.lease(&n, VmState::Leased))
                };
                if let Err(Some(lease)) = reply.send(lease) {
                    self.take_back(lease);
                }
            }
            Command::LeaseOnDemand(reply) => {
                if self.shutdown.is_some() {
                    let _ = reply.send(Err(FleetError::ShuttingDown {
                        runner: self.s.short_token.clone(),
                    }));
                    return;
                }
                self.waiters.push_back(reply);
                self.demand.arrival(now);
                if self.started {
                    self.serve_waiters();
                }
            }
            Command::MarkUsed(name) => {
                if let Some(vm) = self.vms.get_mut(&name) {
                    if vm.state == VmState::Leased {
                        vm.state = VmState::Used;
                        self.metrics.used(&vm.zone);
                        self.demand.arrival(now);
                    }
                }
            }
            Command::Unlease(name) => self.back_to_idle(&name, now),
            Command::Release { name, used } => {
                let max_builds = self.s.machine.max_builds;
                let Some(vm) = self.vms.get_mut(&name) else {
                    return;
                };
                if !matches!(vm.state, VmState::Leased | VmState::Used) {
                    return;
                }
                if used {
                    vm.used_count = vm.used_count.saturating_add(1);
                }
                if vm.retire {
                    tracing::info!(vm = %name, reason = "zone_dropped", "removing VM after its job");
                    self.start_removal(&name);
                } else if max_builds > 0 && vm.used_count >= max_builds {
                    tracing::info!(vm = %name, reason = RemoveReason::TooManyBuilds.as_str(), "removing VM after its job");
                    self.start_removal(&name);
                } else {
                    self.back_to_idle(&name, now);
                }
            }
            Command::Dropped(name) => {
                if self
                    .vms
                    .get(&name)
                    .is_some_and(|v| matches!(v.state, VmState::Leased | VmState::Used))
                {
                    tracing::warn!(vm = %name, "a lease was dropped without release: removing its VM");
                    self.start_removal(&name);
                }
            }
            Command::Lookup { name, reply } => {
                let answer = if let Some((fate, _)) = self.lost.get(&name) {
                    Lookup::Lost(*fate)
                } else if let Some(vm) = self.vms.get(&name) {
                    Lookup::Held {
                        zone: vm.zone.clone(),
                        spot: self.s.gce.spot,
                    }
                } else {
                    Lookup::Unknown
                };
                let _ = reply.send(answer);
            }
            Command::Backlog(q) => {
                self.backlog = (self.s.queue_aware && q > 0)
                    .then(|| (u32::try_from(q).unwrap_or(u32::MAX), now));
            }
            Command::Snapshot(reply) => {
                let _ = reply.send(self.snapshot(now));
            }
            Command::Reconfigure(new) => {
                let (mut new, schedule) = *new;
                // A pool's identity (labels, names) never changes: a new token is a new runner.
                new.manager_id.clone_from(&self.s.manager_id);
                new.runner_label.clone_from(&self.s.runner_label);
                new.short_token.clone_from(&self.s.short_token);
                self.zones
                    .reconfigure(new.gce.zones.clone(), new.gce.zone_cooldown);
                self.schedule = schedule;
                self.s = new;
                self.retire_dropped_zones();
                tracing::info!(runner = %self.s.short_token, "machine pool reconfigured");
            }
            Command::Drain(draining) => {
                if draining != self.draining {
                    tracing::info!(runner = %self.s.short_token, draining, "machine pool drain");
                }
                self.draining = draining;
            }
            Command::Shutdown { deadline, reply } => {
                tracing::info!(runner = %self.s.short_token, "machine pool shutting down: deleting every VM");
                match &mut self.shutdown {
                    Some((d, replies)) => {
                        *d = (*d).min(deadline);
                        replies.push(reply);
                    }
                    None => self.shutdown = Some((deadline, vec![reply])),
                }
            }
        }
    }

    /// After a reload dropped zones: their idle and creating VMs go now, busy ones after their
    /// job (marked to retire).
    fn retire_dropped_zones(&mut self) {
        let zones = self.s.gce.zones.clone();
        let dropped: Vec<(String, VmState)> = self
            .vms
            .iter()
            .filter(|(_, v)| !zones.contains(&v.zone) && v.state != VmState::Removing)
            .map(|(n, v)| (n.clone(), v.state))
            .collect();
        for (name, state) in dropped {
            match state {
                VmState::Idle | VmState::Creating => {
                    tracing::info!(vm = %name, reason = "zone_dropped", "removing VM");
                    self.start_removal(&name);
                }
                _ => {
                    if let Some(vm) = self.vms.get_mut(&name) {
                        vm.retire = true;
                    }
                }
            }
        }
    }

    fn back_to_idle(&mut self, name: &str, now: Instant) {
        let leaving = self.shutdown.is_some() || self.draining;
        let Some(vm) = self.vms.get_mut(name) else {
            return;
        };
        if !matches!(vm.state, VmState::Leased | VmState::Used) {
            return;
        }
        if leaving || vm.retire {
            self.start_removal(name);
        } else {
            vm.state = VmState::Idle;
            vm.idle_since = now;
        }
    }

    fn snapshot(&self, now: Instant) -> FleetSnapshot {
        let vms: Vec<VmInfo> = self
            .vms
            .iter()
            .map(|(n, v)| VmInfo {
                name: n.clone(),
                zone: v.zone.clone(),
                state: v.state,
                age: now.duration_since(v.created_at),
                used_count: v.used_count,
                removal_attempts: v.removal_attempts,
            })
            .collect();
        FleetSnapshot {
            counts: self.counts(),
            stuck_on_removing: vms
                .iter()
                .filter(|v| v.state_name() == "stuck-on-removing")
                .count() as u32,
            vms,
            cooling_zones: self.zones.cooling_now(now),
            peak_total: self.stats.peak_total,
            peak_creating: self.stats.peak_creating,
            created: self.stats.created,
            creation_failures: self.stats.creation_failures,
            removed: self.stats.removed,
            waiting_on_demand: self.waiters.iter().filter(|w| !w.is_closed()).count() as u32,
            started: self.started,
        }
    }

    pub(super) fn on_event(&mut self, ev: Event) {
        let now = Instant::now();
        match ev {
            Event::Created { name, result } => self.on_created(name, result, now),
            Event::Deleted { name, ok } => self.on_deleted(name, ok, now),
            Event::Listed { started, result } => {
                self.listing = false;
                match result {
                    Ok(listing) => {
                        self.list_failures = 0;
                        self.next_list_at = now + self.s.reconcile_interval;
                        self.reconcile(listing, started);
                        if !self.started {
                            self.started = true;
                            tracing::info!(runner = %self.s.short_token, "leftovers handled: pool warming");
                        }
                    }
                    Err(e) => {
                        self.list_failures = self.list_failures.saturating_add(1);
                        let retry = if self.started {
                            self.s.reconcile_interval
                        } else {
                            (Duration::from_secs(5) * (1u32 << self.list_failures.min(4)))
                                .min(Duration::from_secs(60))
                        };
                        tracing::warn!(runner = %self.s.short_token, error = %e, retry_in = ?retry, "listing this manager's VMs failed");
                        self.next_list_at = now + retry;
                    }
                }
            }
            Event::RateLimited { until } => {
                if self.api_paused_until.is_none_or(|t| t <= now) {
                    tracing::warn!(runner = %self.s.short_token, pause = ?until.saturating_duration_since(now), "Compute Engine API rate limit reached: holding new VM work until the quota refills");
                }
                self.api_paused_until = later(self.api_paused_until, until);
            }
        }
    }

    fn on_created(
        &mut self,
        name: String,
        result: Result<worker::Ready, CreateFailure>,
        now: Instant,
    ) {
        let shutting_down = self.shutdown.is_some();
        let Some(vm) = self.vms.get_mut(&name) else {
            return;
        };
        vm.worker = None;
        match result {
            Ok(ready) => {
                tracing::info!(vm = %name, zone = %vm.zone, took = ?now.duration_since(vm.created_at), "VM ready");
                vm.state = VmState::Idle;
                vm.ready_at = Some(now);
                vm.idle_since = now;
                vm.docker = Some(ready.docker);
                self.demand.ready(now.duration_since(vm.created_at));
                let zone = vm.zone.clone();
                self.metrics
                    .created(&zone, now.duration_since(vm.created_at), &ready.phases);
                self.zones.record_success(&zone);
                self.consecutive_failures = 0;
                self.failure_backoff_until = None;
                self.stats.created += 1;
                if shutting_down {
                    self.start_removal(&name);
                }
            }
            Err(f) => {
                let zone = vm.zone.clone();
                let may_exist = f.may_exist();
                if !matches!(f, CreateFailure::Canceled { .. }) {
                    self.stats.creation_failures += 1;
                    self.metrics.creation_failed(
                        &zone,
                        f.kind(),
                        now.duration_since(vm.created_at),
                    );
                    tracing::warn!(vm = %name, %zone, kind = f.kind(), detail = f.detail(), "VM creation failed");
                }
                let blame = match f {
                    CreateFailure::Stockout(_) => Some(ZoneFailure::Stockout),
                    CreateFailure::Quota(scope, _) => Some(ZoneFailure::Quota(scope)),
                    CreateFailure::Timeout { .. } => Some(ZoneFailure::CreateTimeout),
                    CreateFailure::Other { .. } => {
                        self.creation_failed_without_zone(now);
                        None
                    }
                    CreateFailure::Canceled { .. } => None,
                };
                if let Some(b) = blame {
                    let cooled = self.zones.record_failure(&zone, &b, now);
                    if !cooled.is_empty() {
                        tracing::warn!(zones = ?cooled, cause = ?b, "zones cooling down");
                    }
                }
                if may_exist {
                    self.start_removal(&name);
                } else {
                    self.vms.remove(&name);
                }
            }
        }
    }

    fn on_deleted(&mut self, name: String, ok: bool, now: Instant) {
        let backoff = |attempts: u32| {
            (attempts < STUCK_AFTER_ATTEMPTS)
                .then(|| now + Duration::from_secs(5) * (1u32 << attempts.min(6)))
        };
        if let Some(vm) = self.vms.get_mut(&name) {
            vm.worker = None;
            if ok {
                let took = vm.removing_since.map(|t| now.duration_since(t));
                self.metrics.removed(&vm.zone, took);
                self.vms.remove(&name);
                self.stats.removed += 1;
            } else {
                vm.removal_attempts = vm.removal_attempts.saturating_add(1);
                // Past the bounded retries, only a listing that still shows it retries.
                vm.retry_delete_at = backoff(vm.removal_attempts);
                if vm.retry_delete_at.is_none() {
                    tracing::error!(vm = %name, attempts = vm.removal_attempts, "VM stuck on removing");
                }
            }
        } else if let Some(o) = self.orphans.get_mut(&name) {
            o.deleting = false;
            if ok {
                self.metrics.removed(&o.zone, None);
                self.orphans.remove(&name);
                self.stats.removed += 1;
            } else {
                o.attempts = o.attempts.saturating_add(1);
                o.retry_at = backoff(o.attempts);
            }
        }
    }

    /// Startup cleanup and reconcile. Only VMs with this manager's label are considered; a VM
    /// in a zone the listing could not reach is unknown, never vanished or deleted.
    fn reconcile(&mut self, listing: Listing, started: Instant) {
        let unreachable: BTreeSet<String> = listing.unreachable_zones.into_iter().collect();
        let mut seen = BTreeSet::new();
        let janitor = self.registry.is_janitor(&self.s.runner_label);
        for inst in listing.instances {
            if unreachable.contains(&inst.zone)
                || inst.labels.get(MANAGER_LABEL) != Some(&self.s.manager_id)
            {
                continue;
            }
            seen.insert(inst.name.clone());
            let label = inst.labels.get(RUNNER_LABEL);
            if label == Some(&self.s.runner_label) {
                let stopped = matches!(
                    inst.status,
                    InstanceStatus::Stopping | InstanceStatus::Terminated
                );
                match self.vms.get(&inst.name) {
                    Some(vm) => {
                        let held =
                            matches!(vm.state, VmState::Idle | VmState::Leased | VmState::Used);
                        if held && stopped && vm.ready_at.is_some_and(|r| r < started) {
                            let fate = if self.s.gce.spot {
                                VmFate::Preempted
                            } else {
                                VmFate::Terminated
                            };
                            self.lose(&inst.name, fate, true);
                        } else if vm.state == VmState::Removing
                            && vm.worker.is_none()
                            && vm.retry_delete_at.is_none()
                        {
                            self.start_removal(&inst.name);
                        }
                    }
                    None => self.delete_orphan(&inst.name, &inst.zone),
                }
            } else if janitor && !label.is_some_and(|l| self.registry.contains(l)) {
                self.delete_orphan(&inst.name, &inst.zone);
            }
        }
        let reachable = |zone: &String| !unreachable.contains(zone);
        let gone: Vec<(String, VmState)> = self
            .vms
            .iter()
            .filter(|(n, v)| !seen.contains(*n) && reachable(&v.zone))
            .filter(|(_, v)| match v.state {
                VmState::Idle | VmState::Leased | VmState::Used => {
                    v.ready_at.is_some_and(|r| r < started)
                }
                // A removal past its retries that the cloud no longer lists is done.
                VmState::Removing => v.worker.is_none(),
                VmState::Creating => false,
            })
            .map(|(n, v)| (n.clone(), v.state))
            .collect();
        for (name, state) in gone {
            if state == VmState::Removing {
                if let Some(vm) = self.vms.remove(&name) {
                    self.metrics.removed(&vm.zone, None);
                }
                self.stats.removed += 1;
            } else {
                let fate = if self.s.gce.spot {
                    VmFate::Preempted
                } else {
                    VmFate::Gone
                };
                self.lose(&name, fate, false);
            }
        }
        self.orphans
            .retain(|n, o| o.deleting || seen.contains(n) || !reachable(&o.zone));
    }

    /// A held VM went away without us: forget it (delete it if the cloud still has it) and
    /// remember its fate for `vm_fate` if a job held it.
    fn lose(&mut self, name: &str, fate: VmFate, exists: bool) {
        let Some(vm) = self.vms.get(name) else { return };
        tracing::warn!(vm = %name, zone = %vm.zone, state = vm.state.as_str(), ?fate, "VM lost");
        if matches!(vm.state, VmState::Leased | VmState::Used) {
            self.lost.insert(name.to_string(), (fate, Instant::now()));
        }
        if exists {
            self.start_removal(name);
        } else {
            self.vms.remove(name);
        }
    }
}
