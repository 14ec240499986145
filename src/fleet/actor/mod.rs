//! The pool actor: one task per runner that owns the [`Table`] and carries out decisions. It
//! receives commands from [`FleetHandle`]s (`protocol`) and events from its workers, updates the
//! table, then asks the pure [`plan`] what to do and does it: starts workers (create, delete,
//! list) on the tracker — at most one per VM — and answers waiters. It wakes on its own only
//! when something is due (an idle VM's IdleTime, a zone's cool-down, a pause's end, the next
//! reconcile, a schedule check), never in a polling loop. The decisions live elsewhere: scaling
//! in `plan`/`policy`, reconcile in `reconcile`, zones in `zones`, pauses in `pauses`, demand in
//! `demand`, totals and VM time in `stats`. Worker events are handled in `events`.

mod events;

use super::adaptive::{self, DemandEstimator};
use super::demand::{Backlog, Waiters};
use super::handle::FleetHandle;
use super::metrics::PoolMetrics;
use super::pauses::Pauses;
use super::plan::{self, Action, Policy};
use super::policy::Caps;
use super::protocol::{Command, Lease, LeaseGuard};
use super::reconcile::{Listings, Want};
use super::schedule::{IdleSettings, Schedule};
use super::sightings::Sightings;
use super::stats::Stats;
use super::table::{GiveBack, Table, Vm};
use super::worker::{self, Ctx, Event};
use super::zones::Zones;
use super::{
    spec, FleetError, FleetSettings, RunnerRegistry, VmDockerAccess, VmState, MANAGER_LABEL,
};
use crate::cloud::Cloud;
use crate::config::IdleCountPolicy;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Re-evaluate the autoscaling periods at least this often.
const HOUSEKEEPING: Duration = Duration::from_secs(15);
/// Messages handled at most between two planning rounds (see `Actor::take_queued`).
const BATCH: usize = 64;
/// The state gauges (`gitlab_runner_autoscaling_machine_states`, zone cooling) are recounted
/// at most this often: counting reads every VM, and at 2,000 VMs doing it after every planning
/// round was 4 % of the manager's CPU. Scrapes come every 15 s or so.
const GAUGES_EVERY: Duration = Duration::from_millis(250);

/// A shutdown under way: its deadline and who waits for its end.
struct Shutdown {
    deadline: Instant,
    replies: Vec<tokio::sync::oneshot::Sender<Vec<String>>>,
}

struct Actor {
    s: FleetSettings,
    schedule: Schedule,
    zones: Zones,
    ctx: Ctx,
    registry: RunnerRegistry,
    tracker: TaskTracker,
    /// The pool's own token: a child of the one given; cancels every worker at the end.
    cancel: CancellationToken,
    cmd_tx: mpsc::UnboundedSender<Command>,
    cmds: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedReceiver<Event>,
    /// Idle VMs right now, for `FleetHandle::idle_available`.
    idle_tx: watch::Sender<u32>,
    table: Table,
    waiters: Waiters,
    backlog: Backlog,
    pauses: Pauses,
    listings: Listings,
    sightings: Sightings,
    /// The startup cleanup finished: the pool warms only after it.
    started: bool,
    shutdown: Option<Shutdown>,
    /// Draining: no idle VMs kept, VMs made only for waiting jobs (see `FleetHandle::set_draining`).
    draining: bool,
    stats: Stats,
    metrics: PoolMetrics,
    /// Job arrivals, times to ready and the last estimate (the adaptive policy acts on them).
    demand: DemandEstimator,
    /// When the state gauges were last counted.
    gauges_at: Option<Instant>,
    /// A recount was skipped since (too soon): one is due at `gauges_at + GAUGES_EVERY`.
    gauges_stale: bool,
}

/// Starts the actor of one pool on `tracker` and returns the handle on it.
pub(super) fn spawn(
    s: FleetSettings,
    cloud: Arc<dyn Cloud>,
    access: Arc<dyn VmDockerAccess>,
    registry: RunnerRegistry,
    metrics: PoolMetrics,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> Result<FleetHandle, FleetError> {
    let schedule = Schedule::new(&s.machine).map_err(|e| FleetError::Config {
        runner: s.short_token.clone(),
        reason: e.to_string(),
    })?;
    let (cmd_tx, cmds) = mpsc::unbounded_channel();
    // Unbounded: one event per worker, and workers are bounded by the table.
    let (ev_tx, events) = mpsc::unbounded_channel();
    let (idle_tx, idle_rx) = watch::channel(0);
    let handle = FleetHandle {
        tx: cmd_tx.clone(),
        idle: idle_rx,
        cloud: cloud.clone(),
        runner: s.short_token.clone(),
    };
    let now = Instant::now();
    let actor = Actor {
        zones: Zones::new(s.gce.zones.clone(), s.gce.zone_cooldown),
        schedule,
        ctx: Ctx {
            cloud,
            access,
            events: ev_tx,
        },
        registry,
        tracker: tracker.clone(),
        cancel: cancel.child_token(),
        cmd_tx,
        cmds,
        events,
        idle_tx,
        table: Table::default(),
        waiters: Waiters::default(),
        backlog: Backlog::default(),
        pauses: Pauses::default(),
        listings: Listings::new(now),
        sightings: Sightings::default(),
        started: false,
        shutdown: None,
        draining: false,
        stats: Stats::new(now),
        metrics,
        demand: DemandEstimator::new(),
        gauges_at: None,
        gauges_stale: false,
        s,
    };
    tracker.spawn(actor.run());
    Ok(handle)
}

impl Actor {
    async fn run(mut self) {
        tracing::info!(runner = %self.s.short_token, "machine pool starting: deleting leftovers first");
        loop {
            let now = Instant::now();
            if self.finished(now) {
                break;
            }
            self.step(now);
            self.publish();
            let wake = self.next_wake(Instant::now());
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                Some(cmd) = self.cmds.recv() => { self.on_command(cmd); self.take_queued(); }
                Some(ev) = self.events.recv() => { self.on_event(ev); self.take_queued(); }
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
        let left = self.table.all_names();
        if let Some(shutdown) = self.shutdown.take() {
            for r in shutdown.replies {
                let _ = r.send(left.clone());
            }
        }
        self.cancel.cancel();
        self.registry.deregister(&self.s.runner_label);
        self.idle_tx.send_replace(0);
        let (idle, busy) = self.stats.accrue(Instant::now());
        self.metrics.accrue(idle, busy);
        self.metrics.forget();
        tracing::info!(runner = %self.s.short_token, vms_left = left.len(), "machine pool stopped");
    }

    /// Handles the commands and events already queued (up to [`BATCH`]) before the next
    /// planning round: under load (hundreds of jobs taking and giving back VMs a second) the
    /// pool plans and publishes once per batch, not once per message — each round reads the
    /// whole table.
    fn take_queued(&mut self) {
        for _ in 0..BATCH {
            if let Ok(cmd) = self.cmds.try_recv() {
                self.on_command(cmd);
            } else if let Ok(ev) = self.events.try_recv() {
                self.on_event(ev);
            } else {
                return;
            }
        }
    }

    fn finished(&self, now: Instant) -> bool {
        self.shutdown
            .as_ref()
            .is_some_and(|s| self.table.is_empty() || now >= s.deadline)
    }

    /// Forgets what expired, serves waiting jobs from idle VMs, then plans and acts.
    fn step(&mut self, now: Instant) {
        self.table.expire_lost(now);
        self.waiters.prune();
        self.backlog.expire(now);
        // Jobs waiting on demand take idle VMs before any idle VM is judged for removal.
        if self.shutdown.is_none() && self.started {
            self.serve_waiters(now);
        }
        self.estimate_demand(now);
        let policy = self.policy(now);
        let mut creating = true;
        for action in plan::plan(&self.table, &policy, now) {
            match action {
                Action::List => self.start_listing(),
                Action::RetryRemoval(name) => self.start_removal(&name),
                Action::RetryOrphan { name, zone } => self.delete_orphan(&name, &zone),
                Action::FailWaiters => self.waiters.fail_all(&self.s.short_token),
                Action::CancelCreation(name) => {
                    if let Some(t) = self.table.vms.get(&name).and_then(|v| v.worker.as_ref()) {
                        t.cancel();
                    }
                }
                Action::Remove { name, reason } => {
                    tracing::info!(vm = %name, reason, "removing idle VM");
                    self.start_removal(&name);
                }
                Action::Create if creating => {
                    let Some(zone) = self.zones.pick(now).map(str::to_string) else {
                        tracing::debug!(runner = %self.s.short_token, "every zone is cooling: waiting");
                        creating = false;
                        continue;
                    };
                    creating = self.dispatch_create(zone, now);
                }
                Action::Create => {}
            }
        }
    }

    /// What `plan` needs besides the table.
    fn policy(&self, now: Instant) -> Policy {
        Policy {
            idle: self.active_idle(),
            caps: Caps {
                limit: self.s.limit,
                max_growth_rate: self.s.machine.max_growth_rate,
            },
            max_builds: self.s.machine.max_builds,
            backlog: if self.draining { 0 } else { self.backlog.get() },
            drain_keep: adaptive::drain_keep(
                self.s.machine.idle_count_policy,
                self.demand.last(),
                self.draining,
            ),
            waiting: self.waiters.count(),
            started: self.started,
            draining: self.draining,
            shutting_down: self.shutdown.is_some(),
            creation_paused: self.pauses.holds_creation(now),
            list_due: self.listings.due(now, self.want()),
        }
    }

    /// What waits on a listing before `reconcile_interval` is up.
    fn want(&self) -> Want {
        if self.sightings.wants_listing() {
            Want::Addresses
        } else if self.table.confirming() {
            Want::Confirmations
        } else {
            Want::Nothing
        }
    }

    /// Publishes the counts: the idle watch, peaks, VM time, state gauges.
    fn publish(&mut self) {
        let c = self.table.counts();
        self.idle_tx.send_if_modified(|n| {
            let changed = *n != c.idle;
            *n = c.idle;
            changed
        });
        let now = Instant::now();
        let (idle, busy) = self.stats.accrue(now);
        self.metrics.accrue(idle, busy);
        self.stats.observe(&c);
        if self.gauges_at.is_some_and(|t| now < t + GAUGES_EVERY) {
            self.gauges_stale = true;
            return;
        }
        self.gauges_at = Some(now);
        self.gauges_stale = false;
        self.metrics.publish(
            self.table
                .vms
                .values()
                .map(|v| (v.zone.as_str(), v.state_name())),
            &self.zones.cooling_now(now),
        );
    }

    fn next_wake(&self, now: Instant) -> Instant {
        let idle = self.active_idle();
        let mut due = vec![now + HOUSEKEEPING];
        if let Some(last) = self.gauges_at.filter(|_| self.gauges_stale) {
            due.push(last + GAUGES_EVERY);
        }
        due.extend(self.listings.due_at(self.want()));
        for vm in self.table.vms.values() {
            if vm.state == VmState::Idle {
                due.push(vm.idle_since + idle.idle_time + Duration::from_millis(1));
            }
            due.extend(vm.retry_delete_at);
        }
        due.extend(self.table.orphans.values().filter_map(|o| o.retry_at));
        due.extend(self.zones.next_ready(now));
        due.extend(self.pauses.ends());
        due.extend(self.backlog.expires_at());
        due.extend(self.shutdown.as_ref().map(|s| s.deadline));
        due.into_iter()
            .filter(|t| *t > now)
            .min()
            .unwrap_or(now + HOUSEKEEPING)
    }

    /// The idle settings in force: the schedule's (adaptive: the demand estimate's within the
    /// schedule's bounds), or none kept while draining.
    fn active_idle(&self) -> IdleSettings {
        let active = self.schedule.in_force(self.s.clock.now(), self.draining);
        let policy = self.s.machine.idle_count_policy;
        adaptive::in_force(active, policy, self.demand.last(), self.draining)
    }

    /// Updates the demand estimate (the adaptive target, and the metrics of both policies).
    fn estimate_demand(&mut self, now: Instant) {
        let (wall, backlog) = (self.s.clock.now(), self.backlog.get());
        let policy = self.s.machine.idle_count_policy;
        let (e, desired) = self
            .demand
            .target(&self.schedule, policy, now, wall, backlog);
        self.metrics.demand(desired, &e);
    }

    // ---- acting ---------------------------------------------------------------------------

    fn dispatch_create(&mut self, zone: String, now: Instant) -> bool {
        let plan = match spec::new_vm(&self.s, self.ctx.access.as_ref(), &zone) {
            Ok(plan) if self.table.vms.contains_key(&plan.spec.name) => return false,
            Ok(plan) => plan,
            Err(e) => {
                tracing::error!(runner = %self.s.short_token, error = %e, "cannot make a VM");
                if matches!(e, spec::NewVmError::Metadata(_)) {
                    self.stats.creation_failures += 1;
                }
                self.pauses.creation_failed(now);
                return false;
            }
        };
        let token = self.cancel.child_token();
        tracing::debug!(vm = %plan.spec.name, %zone, "creating VM");
        self.table.vms.insert(
            plan.spec.name.clone(),
            Vm::creating(zone, now, token.clone()),
        );
        self.tracker
            .spawn(worker::create(self.ctx.clone(), plan, token));
        true
    }

    /// Starts removing held VM `name` (one deletion worker; see `Table::begin_removal`).
    fn start_removal(&mut self, name: &str) {
        let cancel = &self.cancel;
        if let Some((zone, token)) = self
            .table
            .begin_removal(name, Instant::now(), || cancel.child_token())
        {
            self.tracker.spawn(worker::delete(
                self.ctx.clone(),
                zone,
                name.to_string(),
                token,
            ));
        }
    }

    /// Starts deleting a VM this pool does not hold.
    fn delete_orphan(&mut self, name: &str, zone: &str) {
        let Some(attempts) = self.table.begin_orphan_deletion(name, zone) else {
            return;
        };
        if attempts == 0 {
            self.metrics.orphan_deleted(!self.started);
        }
        tracing::info!(vm = %name, %zone, "deleting a VM this process does not hold");
        let token = self.cancel.child_token();
        self.tracker.spawn(worker::delete(
            self.ctx.clone(),
            zone.to_string(),
            name.to_string(),
            token,
        ));
    }

    fn start_listing(&mut self) {
        self.listings.running = true;
        let labels = BTreeMap::from([(MANAGER_LABEL.to_string(), self.s.manager_id.clone())]);
        self.tracker.spawn(worker::list(
            self.ctx.clone(),
            labels,
            self.cancel.child_token(),
        ));
    }

    /// Hands idle VMs to waiting jobs, newest idle first; a lease its job no longer wants goes
    /// back to idle.
    fn serve_waiters(&mut self, now: Instant) {
        while !self.waiters.is_empty() {
            let Some(name) = self.table.newest_idle() else {
                return;
            };
            let fresh_first = self.s.machine.idle_count_policy == IdleCountPolicy::Adaptive;
            let Some((since, w)) = self.waiters.next(now, fresh_first) else {
                return;
            };
            let Some(lease) = self.lease(&name, VmState::Used) else {
                return;
            };
            let zone = lease.zone.clone();
            match w.send(Ok(lease)) {
                Err(Ok(lease)) => self.take_back(lease),
                _ => {
                    self.metrics.used(&zone);
                    self.demand.served(now.duration_since(since));
                }
            }
        }
    }

    /// Marks idle VM `name` as `state` and makes its lease.
    fn lease(&mut self, name: &str, state: VmState) -> Option<Lease> {
        let (zone, docker) = self.table.lease(name, state)?;
        Some(Lease {
            name: name.to_string(),
            zone,
            docker,
            guard: LeaseGuard {
                name: name.to_string(),
                tx: Some(self.cmd_tx.clone()),
            },
        })
    }

    /// A lease its asker no longer wanted: back to idle, silently.
    fn take_back(&mut self, mut lease: Lease) {
        lease.guard.tx = None;
        self.table.take_back(&lease.name);
    }

    // ---- commands -------------------------------------------------------------------------

    fn on_command(&mut self, cmd: Command) {
        let now = Instant::now();
        match cmd {
            Command::TryLease(reply) => {
                let lease = if self.shutdown.is_some() || self.draining || !self.started {
                    None
                } else {
                    self.table
                        .newest_idle()
                        .and_then(|n| self.lease(&n, VmState::Leased))
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
                self.waiters.push(reply, now);
                self.demand.arrival(now);
                if self.started {
                    self.serve_waiters(now);
                }
            }
            Command::MarkUsed(name) => {
                if let Some(zone) = self.table.mark_used(&name) {
                    self.metrics.used(&zone);
                    self.demand.arrival(now);
                }
            }
            Command::Unlease(name) => self.give_back(&name, None, now),
            Command::Release { name, used } => self.give_back(&name, Some(used), now),
            Command::Dropped(name) => {
                if self.table.vms.get(&name).is_some_and(Vm::is_held_by_job) {
                    tracing::warn!(vm = %name, "a lease was dropped without release: removing its VM");
                    self.start_removal(&name);
                }
            }
            Command::Lookup { name, reply } => {
                let _ = reply.send(self.table.lookup(&name, self.s.gce.spot));
            }
            Command::Backlog(q) => self.backlog.observe(q, self.s.queue_aware, now),
            Command::Snapshot(reply) => {
                let cooling = self.zones.cooling_now(now);
                let waiting = self.waiters.count();
                let snapshot =
                    self.stats
                        .snapshot(&self.table, cooling, waiting, self.started, now);
                let _ = reply.send(snapshot);
            }
            Command::Reconfigure(new) => self.reconfigure(*new),
            Command::Drain(draining) => {
                if draining != self.draining {
                    tracing::info!(runner = %self.s.short_token, draining, "machine pool drain");
                }
                self.draining = draining;
            }
            Command::Shutdown { deadline, reply } => {
                tracing::info!(runner = %self.s.short_token, "machine pool shutting down: deleting every VM");
                match &mut self.shutdown {
                    Some(s) => {
                        s.deadline = s.deadline.min(deadline);
                        s.replies.push(reply);
                    }
                    None => {
                        self.shutdown = Some(Shutdown {
                            deadline,
                            replies: vec![reply],
                        })
                    }
                }
            }
        }
    }

    /// A VM given back (`after_job`: see `Table::give_back`): reused or removed.
    fn give_back(&mut self, name: &str, after_job: Option<bool>, now: Instant) {
        let leaving = self.shutdown.is_some() || self.draining;
        let max_builds = self.s.machine.max_builds;
        if let Some(GiveBack::Remove(reason)) = self
            .table
            .give_back(name, after_job, max_builds, leaving, now)
        {
            tracing::info!(vm = %name, reason, "removing VM after its job");
            self.start_removal(name);
        }
    }

    fn reconfigure(&mut self, (mut new, schedule): (FleetSettings, Schedule)) {
        new.keep_identity(&self.s);
        self.zones
            .reconfigure(new.gce.zones.clone(), new.gce.zone_cooldown);
        self.schedule = schedule;
        self.s = new;
        // Idle and creating VMs in dropped zones go now, busy ones after their job.
        for name in self.table.outside_zones(&self.s.gce.zones) {
            tracing::info!(vm = %name, reason = "zone_dropped", "removing VM");
            self.start_removal(&name);
        }
        tracing::info!(runner = %self.s.short_token, "machine pool reconfigured");
    }
}
