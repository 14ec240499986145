//! The machine pool of each docker+machine runner. One actor task per runner OWNS the machine
//! table (states creating → idle → leased → used → removing); everything else talks to it
//! through a cloneable [`FleetHandle`] (commands on a channel) and never sees the table. Slow
//! cloud work (create, delete, list) runs in worker tasks the actor starts and hears back from;
//! the actor starts at most one worker per VM at a time, so one VM is never acted on by two
//! tasks at once. Scaling decisions are pure functions ([`policy`], [`schedule`], [`zones`]).
//!
//! Owns: the VMs this process made for a runner, their ownership labels, zone fallback,
//! readiness (dockerd answering `_ping` over mTLS, through a [`VmDockerAccess`]) and reconcile by
//! label. Invariant: never touches a VM labelled with another manager id; never imports
//! `coordinator` or `executor`.

mod access;
mod actor;
pub mod adaptive;
pub mod clock;
mod demand;
mod handle;
pub mod metrics;
pub mod names;
mod pauses;
mod plan;
pub mod policy;
mod protocol;
mod reconcile;
pub mod schedule;
mod sightings;
mod spec;
mod stats;
mod table;
mod worker;
pub mod zones;

#[cfg(test)]
mod tests;

pub use access::{ready_marker, AccessCause, VmAccessError, VmDockerAccess, READY_MARKER_KEY};
pub use clock::WallClock;
pub use handle::FleetHandle;
pub use metrics::FleetMetrics;
pub use policy::Counts;
pub use protocol::Lease;
pub use schedule::IdleSettings;

use crate::cloud::Cloud;
use crate::config::{Config, GceConfig, MachineConfig, RunnerConfig};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Label naming the manager process that owns a VM.
pub const MANAGER_LABEL: &str = "flotilla-manager";
/// Label naming the runner (hash of its token) a VM serves.
pub const RUNNER_LABEL: &str = "flotilla-runner";
/// Label naming the host (state directory) that made a VM: VMs with this manager's id but
/// another host's label mean two hosts share one `manager_id` (see [`RunnerRegistry::conflict`]).
pub const HOST_LABEL: &str = "flotilla-host";
/// Network tag every VM carries.
pub const RUNNER_TAG: &str = "flotilla-runner";

/// What became of a VM whose Docker connection was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmFate {
    /// The cloud no longer has it (deleted, or a spot VM deleted on preemption).
    Gone,
    /// It is STOPPING or TERMINATED and we did not stop it.
    Terminated,
    /// A spot VM that went away or stopped: preempted.
    Preempted,
    /// Still running: the failure was something else.
    Alive,
}

/// A failed fleet request.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The pool is shutting down: no new leases.
    #[error("the machine pool of runner {runner} is shutting down")]
    ShuttingDown { runner: String },
    /// The caller's cancellation token fired while waiting for a VM.
    #[error("waiting for a VM was canceled")]
    Canceled,
    /// The pool task is gone (aborted).
    #[error("the machine pool is not running")]
    Closed,
    /// The runner's settings cannot drive a pool.
    #[error("runner {runner}: {reason}")]
    Config { runner: String, reason: String },
}

impl FleetError {
    /// A closed-set name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            FleetError::ShuttingDown { .. } => "shutting_down",
            FleetError::Canceled => "canceled",
            FleetError::Closed => "closed",
            FleetError::Config { .. } => "config",
        }
    }
}

/// A VM's state in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum VmState {
    /// Insert to dockerd answering.
    Creating,
    /// Ready, free.
    Idle,
    /// Leased to a worker asking for a job ("acquired").
    Leased,
    /// Running a job.
    Used,
    /// Being deleted.
    Removing,
}

impl VmState {
    /// GitLab Runner's state names (`gitlab_runner_autoscaling_machine_states{state}`).
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Creating => "creating",
            VmState::Idle => "idle",
            VmState::Leased => "acquired",
            VmState::Used => "used",
            VmState::Removing => "removing",
        }
    }

    /// The state name for metrics and the status page: GitLab Runner's, with
    /// `stuck-on-removing` for a removing VM after [`STUCK_AFTER_ATTEMPTS`] failed deletions.
    pub fn name_after(self, removal_attempts: u32) -> &'static str {
        if self == VmState::Removing && removal_attempts >= STUCK_AFTER_ATTEMPTS {
            "stuck-on-removing"
        } else {
            self.as_str()
        }
    }
}

/// Deletion attempts after which a removing VM shows as stuck-on-removing.
pub const STUCK_AFTER_ATTEMPTS: u32 = 3;

/// One VM in a snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct VmInfo {
    /// Instance name.
    pub name: String,
    /// Zone.
    pub zone: String,
    /// State.
    pub state: VmState,
    /// Time since its creation started.
    pub age: Duration,
    /// Jobs it has run.
    pub used_count: u32,
    /// Failed deletion attempts.
    pub removal_attempts: u32,
}

impl VmInfo {
    /// The state name for metrics: `stuck-on-removing` after [`STUCK_AFTER_ATTEMPTS`].
    pub fn state_name(&self) -> &'static str {
        self.state.name_after(self.removal_attempts)
    }
}

/// The pool's state for metrics and the status page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FleetSnapshot {
    /// VMs per state.
    pub counts: Counts,
    /// Removing VMs past [`STUCK_AFTER_ATTEMPTS`].
    pub stuck_on_removing: u32,
    /// Every VM held.
    pub vms: Vec<VmInfo>,
    /// Zones cooling and for how much longer.
    pub cooling_zones: Vec<(String, Duration)>,
    /// The most VMs held at once (all states) since start.
    pub peak_total: u32,
    /// The most VMs creating at once since start.
    pub peak_creating: u32,
    /// VMs that became ready since start.
    pub created: u64,
    /// Creations that failed since start.
    pub creation_failures: u64,
    /// VMs deleted since start (ours and leftovers).
    pub removed: u64,
    /// Jobs waiting for an on-demand VM.
    pub waiting_on_demand: u32,
    /// Whether the startup cleanup finished (the pool warms only after it).
    pub started: bool,
}

/// Everything one runner's pool needs from the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetSettings {
    /// This process's manager id (the `flotilla-manager` label value).
    pub manager_id: String,
    /// This host's id (the `flotilla-host` label value, from the state directory); empty: VMs
    /// carry no host label and none is checked.
    pub host_id: String,
    /// The `flotilla-runner` label value ([`names::runner_label`] of the token).
    pub runner_label: String,
    /// The runner's short token (names, logs).
    pub short_token: String,
    /// `limit`: VMs in all states (0 = none).
    pub limit: u32,
    /// `[runners.machine]`.
    pub machine: MachineConfig,
    /// `[runners.gce]`.
    pub gce: GceConfig,
    /// How often to reconcile with the cloud.
    pub reconcile_interval: Duration,
    /// Also create for the coordinator's backlog (`job_info.queue_size`).
    pub queue_aware: bool,
    /// The clock autoscaling periods are read against (the system's but in simulations).
    pub clock: WallClock,
}

impl FleetSettings {
    /// The settings of a docker+machine runner (queue-aware scale-out as `[runners.gce]`
    /// `queue_aware_scaling` says).
    pub fn for_runner(
        config: &Config,
        runner: &RunnerConfig,
        manager_id: &str,
    ) -> Result<FleetSettings, FleetError> {
        let fail = |reason: &str| FleetError::Config {
            runner: runner.short_token(),
            reason: reason.to_string(),
        };
        let machine = runner
            .machine
            .clone()
            .ok_or_else(|| fail("no [runners.machine] section"))?;
        let gce = runner
            .gce
            .clone()
            .ok_or_else(|| fail("no [runners.gce] section (or MachineDriver = \"google\")"))?;
        let queue_aware = gce.queue_aware;
        Ok(FleetSettings {
            manager_id: manager_id.to_string(),
            host_id: String::new(),
            runner_label: names::runner_label(runner.token.expose()),
            short_token: runner.short_token(),
            limit: u32::try_from(runner.limit).unwrap_or(u32::MAX),
            machine,
            gce,
            reconcile_interval: config.reconcile_interval,
            queue_aware,
            clock: WallClock::system(),
        })
    }

    /// The short token VM names start with (`runner-<it>-`), unless MachineName is the whole
    /// name (a carried-over docker-autoscaler instance group).
    pub fn name_token(&self) -> Option<&str> {
        self.machine
            .runner_name_prefix
            .then_some(self.short_token.as_str())
    }

    /// Takes `old`'s identity (labels, names): a pool's never changes, a new token is a new
    /// runner.
    pub(crate) fn keep_identity(&mut self, old: &FleetSettings) {
        self.manager_id.clone_from(&old.manager_id);
        self.host_id.clone_from(&old.host_id);
        self.runner_label.clone_from(&old.runner_label);
        self.short_token.clone_from(&old.short_token);
    }

    /// Checks what the pool relies on: a `%s` in MachineName, periods that parse, at least one
    /// zone, label values GCE accepts.
    pub fn validate(&self) -> Result<(), FleetError> {
        let fail = |reason: String| FleetError::Config {
            runner: self.short_token.clone(),
            reason,
        };
        schedule::Schedule::new(&self.machine).map_err(|e| fail(e.to_string()))?;
        names::machine_name(self.name_token(), &self.machine.machine_name, "0-00000000")
            .map_err(|e| fail(e.to_string()))?;
        if self.gce.zones.is_empty() {
            return Err(fail("[runners.gce] zones is empty".into()));
        }
        for (what, v) in [
            ("manager id", &self.manager_id),
            ("runner label", &self.runner_label),
        ] {
            if v.is_empty() || !names::is_valid_label_value(v) {
                return Err(fail(format!("{what} {v:?} is not a valid GCE label value")));
            }
        }
        if self.reconcile_interval.is_zero() {
            return Err(fail("reconcile_interval must be above 0".into()));
        }
        Ok(())
    }
}

/// The runner labels of this process's live pools, shared by them so a reconcile can tell a
/// VM of another runner of this process (left to that pool) from one of a runner no pool
/// holds (deleted, by one pool only: the one with the smallest label). Counted: after a reload
/// that moves a runner to another project, its old pool (draining) and its new one hold the same
/// label for a while. A std `Mutex`: held for a map operation, never across an await.
#[derive(Debug, Clone, Default)]
pub struct RunnerRegistry {
    labels: Arc<Mutex<BTreeMap<String, usize>>>,
    /// Set once when a pool finds VMs of another host with this manager id.
    conflict: Arc<Mutex<Option<String>>>,
    conflicted: CancellationToken,
}

impl RunnerRegistry {
    /// An empty registry; make one per process and give it to every pool.
    pub fn new() -> RunnerRegistry {
        RunnerRegistry::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, usize>> {
        self.labels.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a pool holds `label`.
    pub fn contains(&self, label: &str) -> bool {
        self.lock().contains_key(label)
    }

    fn register(&self, label: &str) {
        *self.lock().entry(label.to_string()).or_default() += 1;
    }

    fn deregister(&self, label: &str) {
        let mut labels = self.lock();
        if let Some(count) = labels.get_mut(label) {
            *count -= 1;
            if *count == 0 {
                labels.remove(label);
            }
        }
    }

    /// Reports that another host runs with this manager id (`what`: which VM showed it). The
    /// first report wins; the manager stops on it.
    fn report_conflict(&self, what: String) {
        let mut c = self.conflict.lock().unwrap_or_else(|p| p.into_inner());
        c.get_or_insert(what);
        self.conflicted.cancel();
    }

    /// Waits until a pool found VMs of another host with this manager id; returns what it saw.
    pub async fn conflict(&self) -> String {
        self.conflicted.cancelled().await;
        let c = self.conflict.lock().unwrap_or_else(|p| p.into_inner());
        c.clone().unwrap_or_default()
    }

    /// Whether `label`'s pool deletes VMs of runners no pool holds.
    fn is_janitor(&self, label: &str) -> bool {
        self.lock().keys().next().is_some_and(|l| l == label)
    }
}

/// Starts the pool of one runner: registers its label, then spawns its actor on `tracker`.
/// The actor first deletes every VM labelled with this manager id and this runner (leftovers
/// of an earlier process), then warms. It ends when `cancel` fires or after
/// [`FleetHandle::shutdown`].
pub fn start(
    settings: FleetSettings,
    cloud: Arc<dyn Cloud>,
    access: Arc<dyn VmDockerAccess>,
    registry: RunnerRegistry,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> Result<FleetHandle, FleetError> {
    start_with_metrics(
        settings,
        cloud,
        access,
        registry,
        &FleetMetrics::unregistered(),
        tracker,
        cancel,
    )
}

/// [`start`] reporting the pool's events and states to `metrics` (the manager's registry).
pub fn start_with_metrics(
    settings: FleetSettings,
    cloud: Arc<dyn Cloud>,
    access: Arc<dyn VmDockerAccess>,
    registry: RunnerRegistry,
    metrics: &FleetMetrics,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> Result<FleetHandle, FleetError> {
    settings.validate()?;
    registry.register(&settings.runner_label);
    let pool_metrics = metrics.pool(&settings);
    actor::spawn(
        settings,
        cloud,
        access,
        registry,
        pool_metrics,
        tracker,
        cancel,
    )
}
