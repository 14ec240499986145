//! The pool as the rest of the process sees it: a cloneable [`FleetHandle`] that sends commands
//! (`protocol`) to the runner's pool actor. Created by `fleet::start`; dropping
//! every handle does not stop the pool (its cancellation token or `shutdown` does).

use super::protocol::{Command, Lease, Lookup};
use super::schedule::Schedule;
use super::{FleetError, FleetSettings, FleetSnapshot, VmFate};
use crate::cloud::{Cloud, CloudError, InstanceStatus};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often `vm_fate` asks the cloud while it waits.
const FATE_POLL: Duration = Duration::from_secs(5);

/// A handle on one runner's pool. Cheap to clone.
#[derive(Clone)]
pub struct FleetHandle {
    /// Unbounded: senders are the runner's own workers (bounded by its concurrency), and
    /// `release`/`Drop` must send without awaiting.
    pub(super) tx: mpsc::UnboundedSender<Command>,
    /// Idle VMs right now, published by the actor after every change.
    pub(super) idle: watch::Receiver<u32>,
    pub(super) cloud: Arc<dyn Cloud>,
    pub(super) runner: String,
}

impl std::fmt::Debug for FleetHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetHandle")
            .field("runner", &self.runner)
            .finish()
    }
}

impl FleetHandle {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).ok()?;
        rx.await.ok()
    }

    /// An idle VM now, if any (most recently idle first); it becomes "acquired". With
    /// IdleCount > 0 the runner asks for a job only with such a lease in hand.
    pub async fn try_lease(&self) -> Option<Lease> {
        self.ask(Command::TryLease).await.flatten()
    }

    /// Resolves when an idle VM may be leasable (another worker may take it first: then call
    /// again). Never resolves once the pool has stopped.
    pub async fn idle_available(&self) {
        let mut rx = self.idle.clone();
        if rx.wait_for(|n| *n > 0).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// IdleCount = 0: a VM for a job already taken — an idle one, else one created for it. Waits
    /// (creation, `limit`, zone cool-downs) until `cancel` fires. The VM is "used" at once.
    pub async fn lease_on_demand(&self, cancel: CancellationToken) -> Result<Lease, FleetError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::LeaseOnDemand(tx))
            .map_err(|_| FleetError::Closed)?;
        tokio::select! {
            r = rx => r.map_err(|_| FleetError::Closed)?,
            // Dropping `rx` tells the actor this waiter is gone.
            _ = cancel.cancelled() => Err(FleetError::Canceled),
        }
    }

    /// The job request with this lease found a job: the VM is now "used" (it counts in use,
    /// no longer as available capacity).
    pub fn mark_used(&self, lease: &Lease) {
        let _ = self.tx.send(Command::MarkUsed(lease.name.clone()));
    }

    /// The job request found no job: the VM goes back to idle.
    pub fn unlease(&self, lease: Lease) {
        let name = lease.disarm();
        let _ = self.tx.send(Command::Unlease(name));
    }

    /// After the job: the VM is reused (MaxBuilds not reached) or removed. `used` says whether
    /// a job ran on it (counts towards MaxBuilds).
    pub fn release(&self, lease: Lease, used: bool) {
        let name = lease.disarm();
        let _ = self.tx.send(Command::Release { name, used });
    }

    /// After `HostLost`: what became of VM `name` — the pool's own knowledge if it saw the VM
    /// go, else the cloud's, asked every few seconds for up to `wait` (a preempted VM takes
    /// ~30 s to stop). `Alive` if it still runs then.
    pub async fn vm_fate(&self, name: &str, wait: Duration) -> VmFate {
        let deadline = Instant::now() + wait;
        let (zone, spot) = match self
            .ask(|reply| Command::Lookup {
                name: name.to_string(),
                reply,
            })
            .await
        {
            Some(Lookup::Lost(f)) => return f,
            Some(Lookup::Held { zone, spot }) => (zone, spot),
            Some(Lookup::Unknown) | None => return VmFate::Gone,
        };
        let gone = if spot {
            VmFate::Preempted
        } else {
            VmFate::Gone
        };
        let stopped = if spot {
            VmFate::Preempted
        } else {
            VmFate::Terminated
        };
        loop {
            let pause = match self.cloud.get(&zone, name).await {
                Ok(None) => return gone,
                Ok(Some(i))
                    if matches!(
                        i.status,
                        InstanceStatus::Stopping | InstanceStatus::Terminated
                    ) =>
                {
                    return stopped
                }
                Ok(Some(_)) => FATE_POLL,
                Err(CloudError::NotFound { .. }) => return gone,
                Err(CloudError::RateLimited { retry_after, .. }) => retry_after,
                Err(e) => {
                    tracing::debug!(vm = %name, error = %e, "vm_fate: get failed");
                    FATE_POLL
                }
            };
            let now = Instant::now();
            if now >= deadline {
                return VmFate::Alive;
            }
            tokio::time::sleep_until((now + pause).min(deadline)).await;
        }
    }

    /// The coordinator's backlog (`job_info.queue_size` of a job it handed out; 0 after a
    /// request that found no job). Used by queue-aware scale-out; forgotten after a minute.
    pub fn observe_backlog(&self, queue_size: u64) {
        let _ = self.tx.send(Command::Backlog(queue_size));
    }

    /// Counts per state and every VM (metrics, status page). Empty once the pool stopped.
    pub async fn snapshot(&self) -> FleetSnapshot {
        self.ask(Command::Snapshot).await.unwrap_or_default()
    }

    /// Applies reloaded settings (idle settings, periods, limit, MaxBuilds, MaxGrowthRate, zones,
    /// the VM shape of new VMs); VMs already made keep theirs. The pool's identity (manager id,
    /// runner label) is kept. Fails when the settings are invalid (the old ones stay).
    pub fn reconfigure(&self, settings: FleetSettings) -> Result<(), FleetError> {
        settings.validate()?;
        let schedule = Schedule::new(&settings.machine).map_err(|e| FleetError::Config {
            runner: settings.short_token.clone(),
            reason: e.to_string(),
        })?;
        self.tx
            .send(Command::Reconfigure(Box::new((settings, schedule))))
            .map_err(|_| FleetError::Closed)
    }

    /// Starts (`true`) or ends (`false`) a drain: while draining the pool keeps no idle VMs
    /// (idle ones are deleted at once, released ones after their job), offers no idle lease and
    /// creates VMs only for jobs already taken that wait for one. Used by SIGQUIT and for a
    /// runner removed (or moved to another project) by a reload; `false` when it comes back.
    pub fn set_draining(&self, draining: bool) {
        let _ = self.tx.send(Command::Drain(draining));
    }

    /// Brings a shutdown's deadline forward (or starts a shutdown) without waiting for it: an
    /// abort arriving while a drain deletes the VMs.
    pub fn hasten_shutdown(&self, deadline: Instant) {
        let (reply, _) = oneshot::channel();
        let _ = self.tx.send(Command::Shutdown { deadline, reply });
    }

    /// Deletes every VM: idle and creating ones at once, leased ones when released. Returns
    /// when all are confirmed deleted or at `deadline`, with the names not confirmed deleted;
    /// the pool then stops.
    pub async fn shutdown(&self, deadline: Instant) -> Vec<String> {
        self.ask(|reply| Command::Shutdown { deadline, reply })
            .await
            .unwrap_or_default()
    }
}
