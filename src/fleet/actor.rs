//! The pool actor: one task per runner that OWNS the machine table and every decision about it.
//! It takes commands from [`FleetHandle`]s and events from its workers, runs the pure policy
//! after each, and starts workers (create, delete, list) on the tracker — at most one per VM.
//! It wakes on its own only when something is due (an idle VM's IdleTime, a zone's cool-down,
//! a rate-limit pause, the next reconcile, a schedule check), never in a polling loop.

use super::adaptive::{Bounds, DemandEstimator, Estimate};
use super::handle::{FleetHandle, Lease, LeaseGuard};
use super::metrics::PoolMetrics;
use super::policy::{self, Caps, Counts, Demand, IdleVm, RemoveReason};
use super::schedule::{IdleSettings, Schedule};
use super::worker::{self, CreateFailure, CreatePlan, Ctx, Event};
use super::zones::{ZoneFailure, Zones};
use super::{
    names, spec, FleetError, FleetSettings, FleetSnapshot, RunnerRegistry, VmConnector, VmFate,
    VmInfo, VmState, MANAGER_LABEL, RUNNER_LABEL, STUCK_AFTER_ATTEMPTS,
};
use crate::cloud::{Cloud, InstanceStatus, Listing};
use crate::config::IdleCountPolicy;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Re-evaluate the autoscaling periods at least this often.
const HOUSEKEEPING: Duration = Duration::from_secs(15);
/// A backlog hint older than this is forgotten.
const BACKLOG_TTL: Duration = Duration::from_secs(60);
/// How long `vm_fate` remembers a VM the pool saw go.
const LOST_TTL: Duration = Duration::from_secs(600);
/// Longest pause after creations failing for reasons no zone explains.
const MAX_FAILURE_BACKOFF: Duration = Duration::from_secs(300);

/// What a [`FleetHandle`] asks of the actor.
pub(super) enum Command {
    TryLease(oneshot::Sender<Option<Lease>>),
    LeaseOnDemand(oneshot::Sender<Result<Lease, FleetError>>),
    MarkUsed(String),
    Unlease(String),
    Release {
        name: String,
        used: bool,
    },
    Dropped(String),
    Lookup {
        name: String,
        reply: oneshot::Sender<Lookup>,
    },
    Backlog(u64),
    Snapshot(oneshot::Sender<FleetSnapshot>),
    Shutdown {
        deadline: Instant,
        reply: oneshot::Sender<Vec<String>>,
    },
    Reconfigure(Box<(FleetSettings, Schedule)>),
    Drain(bool),
}

/// What the pool knows of a VM, for `vm_fate`.
pub(super) enum Lookup {
    /// The pool saw it go.
    Lost(VmFate),
    /// Still held: ask the cloud.
    Held { zone: String, spot: bool },
    /// Not ours (any more).
    Unknown,
}

struct Vm {
    zone: String,
    state: VmState,
    created_at: Instant,
    ready_at: Option<Instant>,
    idle_since: Instant,
    used_count: u32,
    docker: Option<bollard::Docker>,
    removal_attempts: u32,
    /// When its removal started (the removal-duration histogram).
    removing_since: Option<Instant>,
    /// The worker acting on this VM (creating or deleting), if any.
    worker: Option<CancellationToken>,
    retry_delete_at: Option<Instant>,
    /// In a zone a reload dropped: removed when its job ends, never leased again.
    retire: bool,
}

impl Vm {
    /// GitLab Runner's state name: `stuck-on-removing` past the bounded deletion retries.
    fn state_name(&self) -> &'static str {
        if self.state == VmState::Removing && self.removal_attempts >= STUCK_AFTER_ATTEMPTS {
            "stuck-on-removing"
        } else {
            self.state.as_str()
        }
    }
}

/// A VM this pool deletes but does not hold (a leftover, or of a runner no pool holds): not
/// counted against `limit`.
struct Orphan {
    zone: String,
    deleting: bool,
    attempts: u32,
    retry_at: Option<Instant>,
}

#[derive(Default)]
struct Stats {
    peak_total: u32,
    peak_creating: u32,
    created: u64,
    creation_failures: u64,
    removed: u64,
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
    idle_tx: watch::Sender<u32>,
    vms: BTreeMap<String, Vm>,
    orphans: BTreeMap<String, Orphan>,
    lost: BTreeMap<String, (VmFate, Instant)>,
    waiters: VecDeque<oneshot::Sender<Result<Lease, FleetError>>>,
    backlog: Option<(u32, Instant)>,
    started: bool,
    listing: bool,
    next_list_at: Instant,
    list_failures: u32,
    api_paused_until: Option<Instant>,
    failure_backoff_until: Option<Instant>,
    consecutive_failures: u32,
    shutdown: Option<(Instant, Vec<oneshot::Sender<Vec<String>>>)>,
    /// Draining: no idle VMs kept, VMs made only for waiting jobs (see `FleetHandle::set_draining`).
    draining: bool,
    stats: Stats,
    metrics: PoolMetrics,
    /// VM-time accounting: when it was last added up, and the (idle, busy) VM counts since.
    accrued_at: Instant,
    accruing: (u32, u32),
    /// Job arrivals and times to ready seen (both policies; the adaptive one acts on them).
    demand: DemandEstimator,
    /// The demand estimate of the last planning round.
    estimate: Option<Estimate>,
}

pub(super) fn spawn(
    s: FleetSettings,
    cloud: Arc<dyn Cloud>,
    connector: Arc<dyn VmConnector>,
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
    let actor = Actor {
        zones: Zones::new(s.gce.zones.clone(), s.gce.zone_cooldown),
        schedule,
        ctx: Ctx {
            cloud,
            connector,
            events: ev_tx,
        },
        registry,
        tracker: tracker.clone(),
        cancel: cancel.child_token(),
        cmd_tx,
        cmds,
        events,
        idle_tx,
        vms: BTreeMap::new(),
        orphans: BTreeMap::new(),
        lost: BTreeMap::new(),
        waiters: VecDeque::new(),
        backlog: None,
        started: false,
        listing: false,
        next_list_at: Instant::now(),
        list_failures: 0,
        api_paused_until: None,
        failure_backoff_until: None,
        consecutive_failures: 0,
        shutdown: None,
        draining: false,
        stats: Stats::default(),
        metrics,
        accrued_at: Instant::now(),
        accruing: (0, 0),
        demand: DemandEstimator::new(),
        estimate: None,
        s,
    };
    tracker.spawn(actor.run());
    Ok(handle)
}

fn later(a: Option<Instant>, b: Instant) -> Option<Instant> {
    Some(a.map_or(b, |a| a.max(b)))
}

impl Actor {
    async fn run(mut self) {
        tracing::info!(runner = %self.s.short_token, "machine pool starting: deleting leftovers first");
        loop {
            let now = Instant::now();
            if self.finished(now) {
                break;
            }
            self.plan(now);
            self.publish();
            let wake = self.next_wake(Instant::now());
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                Some(cmd) = self.cmds.recv() => self.on_command(cmd),
                Some(ev) = self.events.recv() => self.on_event(ev),
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
        let left: Vec<String> = self
            .vms
            .keys()
            .chain(self.orphans.keys())
            .cloned()
            .collect();
        if let Some((_, replies)) = self.shutdown.take() {
            for r in replies {
                let _ = r.send(left.clone());
            }
        }
        self.cancel.cancel();
        self.registry.deregister(&self.s.runner_label);
        self.idle_tx.send_replace(0);
        self.accrue(Instant::now());
        self.metrics.forget();
        tracing::info!(runner = %self.s.short_token, vms_left = left.len(), "machine pool stopped");
    }

    fn finished(&self, now: Instant) -> bool {
        match &self.shutdown {
            Some((deadline, _)) => {
                (self.vms.is_empty() && self.orphans.is_empty()) || now >= *deadline
            }
            None => false,
        }
    }

    fn counts(&self) -> Counts {
        let mut c = Counts::default();
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

    fn publish(&mut self) {
        let c = self.counts();
        self.stats.peak_total = self.stats.peak_total.max(c.total());
        self.stats.peak_creating = self.stats.peak_creating.max(c.creating);
        self.idle_tx.send_if_modified(|n| {
            let changed = *n != c.idle;
            *n = c.idle;
            changed
        });
        let now = Instant::now();
        self.accrue(now);
        self.accruing = (c.idle + c.leased, c.used);
        self.metrics.publish(
            self.vms.values().map(|v| (v.zone.as_str(), v.state_name())),
            &self.zones.cooling_now(now),
        );
    }

    /// Adds the VM time since the last call, at the counts that held since then (states change
    /// only between two calls: in command and event handlers).
    fn accrue(&mut self, now: Instant) {
        let secs = now.duration_since(self.accrued_at).as_secs_f64();
        self.accrued_at = now;
        let (idle, busy) = self.accruing;
        self.metrics
            .accrue(f64::from(idle) * secs, f64::from(busy) * secs);
    }

    fn next_wake(&self, now: Instant) -> Instant {
        let idle = self.active_idle();
        let mut due = vec![now + HOUSEKEEPING];
        if !self.listing {
            due.push(self.next_list_at);
        }
        for vm in self.vms.values() {
            if vm.state == VmState::Idle {
                due.push(vm.idle_since + idle.idle_time + Duration::from_millis(1));
            }
            due.extend(vm.retry_delete_at);
        }
        due.extend(self.orphans.values().filter_map(|o| o.retry_at));
        due.extend(self.zones.next_ready(now));
        due.extend(self.api_paused_until);
        due.extend(self.failure_backoff_until);
        due.extend(self.backlog.map(|(_, at)| at + BACKLOG_TTL));
        due.extend(self.shutdown.as_ref().map(|(d, _)| *d));
        due.into_iter()
            .filter(|t| *t > now)
            .min()
            .unwrap_or(now + HOUSEKEEPING)
    }

    /// The idle settings in force: the schedule's (adaptive: the demand estimate's within the
    /// schedule's bounds), or none kept while draining.
    fn active_idle(&self) -> IdleSettings {
        let active = self.schedule.active(self.s.clock.now());
        let active = match (self.s.machine.idle_count_policy, &self.estimate) {
            (IdleCountPolicy::Adaptive, Some(e)) => e.idle_settings(active.idle_time),
            _ => active,
        };
        if self.draining {
            IdleSettings {
                idle_count: 0,
                idle_count_min: 0,
                idle_scale_factor: 0.0,
                ..active
            }
        } else {
            active
        }
    }

    fn caps(&self) -> Caps {
        Caps {
            limit: self.s.limit,
            max_growth_rate: self.s.machine.max_growth_rate,
        }
    }

    // ---- planning -------------------------------------------------------------------------

    fn plan(&mut self, now: Instant) {
        self.lost
            .retain(|_, (_, at)| now.duration_since(*at) < LOST_TTL);
        self.waiters.retain(|w| !w.is_closed());
        if self
            .backlog
            .is_some_and(|(_, at)| now.duration_since(at) >= BACKLOG_TTL)
        {
            self.backlog = None;
        }
        if !self.listing && now >= self.next_list_at {
            self.start_listing();
        }
        self.retry_deletes(now);
        if self.shutdown.is_some() {
            self.plan_shutdown();
            return;
        }
        if !self.started {
            return;
        }
        // Jobs waiting on demand take idle VMs before any idle VM is judged for removal.
        self.serve_waiters();
        self.estimate_demand(now);
        if self.draining {
            self.remove_every_idle("draining");
        }
        let idle = self.active_idle();
        let backlog = if self.draining {
            0
        } else {
            self.backlog.map_or(0, |(b, _)| b)
        };
        let mut busy = self.counts();
        busy.idle = 0;
        let idle_names: Vec<&String> = self
            .vms
            .iter()
            .filter(|(_, v)| v.state == VmState::Idle)
            .map(|(n, _)| n)
            .collect();
        let idle_vms: Vec<IdleVm> = idle_names
            .iter()
            .enumerate()
            .map(|(key, n)| {
                let v = &self.vms[*n];
                IdleVm {
                    key,
                    idle_for: now.duration_since(v.idle_since),
                    used_count: v.used_count,
                }
            })
            .collect();
        let remove: Vec<(String, RemoveReason)> = policy::removals(
            busy,
            &idle_vms,
            &idle,
            self.caps(),
            self.s.machine.max_builds,
            backlog,
        )
        .into_iter()
        .map(|(k, r)| (idle_names[k].clone(), r))
        .collect();
        for (name, reason) in remove {
            tracing::info!(vm = %name, reason = reason.as_str(), "removing idle VM");
            self.start_removal(&name);
        }
        if self.api_paused_until.is_some_and(|t| t > now)
            || self.failure_backoff_until.is_some_and(|t| t > now)
        {
            return;
        }
        let demand = Demand {
            on_demand: u32::try_from(self.waiters.len()).unwrap_or(u32::MAX),
            backlog,
        };
        let n = policy::creations(self.counts(), &idle, self.caps(), demand);
        for _ in 0..n {
            let Some(zone) = self.zones.pick(now).map(str::to_string) else {
                tracing::debug!(runner = %self.s.short_token, "every zone is cooling: waiting");
                break;
            };
            if !self.dispatch_create(zone, now) {
                break;
            }
        }
    }

    /// Updates the demand estimate (the adaptive target, and the metrics of both policies).
    fn estimate_demand(&mut self, now: Instant) {
        let wall = self.s.clock.now();
        let bounds = Bounds::new(
            &self.schedule.base(),
            self.schedule.active_period(wall).as_ref(),
        );
        let backlog = self.backlog.map_or(0, |(b, _)| b);
        let e = self.demand.estimate(now, backlog, bounds);
        let desired = match self.s.machine.idle_count_policy {
            IdleCountPolicy::Adaptive => e.desired_idle,
            IdleCountPolicy::Static => self.schedule.active(wall).idle_count,
        };
        self.metrics.demand(desired, &e);
        self.estimate = Some(e);
    }

    /// Removes every idle VM now (a drain keeps none).
    fn remove_every_idle(&mut self, reason: &str) {
        let names: Vec<String> = self
            .vms
            .iter()
            .filter(|(_, v)| v.state == VmState::Idle)
            .map(|(n, _)| n.clone())
            .collect();
        for n in names {
            tracing::info!(vm = %n, reason, "removing idle VM");
            self.start_removal(&n);
        }
    }

    fn plan_shutdown(&mut self) {
        while let Some(w) = self.waiters.pop_front() {
            let _ = w.send(Err(FleetError::ShuttingDown {
                runner: self.s.short_token.clone(),
            }));
        }
        let names: Vec<String> = self
            .vms
            .iter()
            .filter(|(_, v)| v.state == VmState::Idle)
            .map(|(n, _)| n.clone())
            .collect();
        for n in names {
            self.start_removal(&n);
        }
        for vm in self.vms.values() {
            if vm.state == VmState::Creating {
                if let Some(t) = &vm.worker {
                    t.cancel();
                }
            }
        }
    }

    fn dispatch_create(&mut self, zone: String, now: Instant) -> bool {
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let unique = names::unique_id(unix, rand::random());
        let name =
            match names::machine_name(&self.s.short_token, &self.s.machine.machine_name, &unique) {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(runner = %self.s.short_token, error = %e, "cannot name a VM");
                    self.creation_failed_without_zone(now);
                    return false;
                }
            };
        if self.vms.contains_key(&name) {
            return false;
        }
        let metadata = match self.ctx.connector.vm_metadata(&name) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(vm = %name, error = %e, "cannot make the VM's TLS material");
                self.stats.creation_failures += 1;
                self.creation_failed_without_zone(now);
                return false;
            }
        };
        let plan = CreatePlan {
            spec: spec::instance_spec(&self.s, &name, &zone, metadata),
            request_id: uuid::Uuid::new_v4().to_string(),
            timeout: self.s.gce.create_timeout,
            docker_port: self.s.gce.docker_port,
            use_internal_ip: self.s.gce.use_internal_ip,
        };
        let token = self.cancel.child_token();
        tracing::debug!(vm = %name, %zone, "creating VM");
        self.vms.insert(
            name,
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
                worker: Some(token.clone()),
                retry_delete_at: None,
                retire: false,
            },
        );
        self.tracker
            .spawn(worker::create(self.ctx.clone(), plan, token));
        true
    }

    fn creation_failed_without_zone(&mut self, now: Instant) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let exp = self.consecutive_failures.min(10) - 1;
        let d = (Duration::from_secs(5) * (1u32 << exp)).min(MAX_FAILURE_BACKOFF);
        self.failure_backoff_until = Some(now + d);
    }

    fn serve_waiters(&mut self) {
        while !self.waiters.is_empty() {
            let Some(name) = self.newest_idle() else {
                return;
            };
            let Some(w) = self.waiters.pop_front() else {
                return;
            };
            let lease = self.lease(&name, VmState::Used);
            let zone = lease.zone.clone();
            match w.send(Ok(lease)) {
                Err(Ok(lease)) => self.take_back(lease),
                _ => self.metrics.used(&zone),
            }
        }
    }

    fn newest_idle(&self) -> Option<String> {
        self.vms
            .iter()
            .filter(|(_, v)| v.state == VmState::Idle && v.docker.is_some() && !v.retire)
            .max_by_key(|(_, v)| v.idle_since)
            .map(|(n, _)| n.clone())
    }

    /// Marks idle VM `name` as `state` and makes its lease.
    fn lease(&mut self, name: &str, state: VmState) -> Lease {
        let vm = self.vms.get_mut(name).expect("leased VM is in the table");
        vm.state = state;
        Lease {
            name: name.to_string(),
            zone: vm.zone.clone(),
            docker: vm.docker.clone().expect("idle VMs have a Docker client"),
            guard: LeaseGuard {
                name: name.to_string(),
                tx: Some(self.cmd_tx.clone()),
            },
        }
    }

    /// A lease its asker no longer wanted: back to idle, silently.
    fn take_back(&mut self, mut lease: Lease) {
        lease.guard.tx = None;
        if let Some(vm) = self.vms.get_mut(&lease.name) {
            vm.state = VmState::Idle;
        }
    }
}

mod events;
mod removal;
