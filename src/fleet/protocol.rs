//! What a [`FleetHandle`](super::FleetHandle) and the pool actor say to each other: the
//! [`Command`]s a handle sends, the [`Lookup`] answer for `vm_fate`, and the [`Lease`] of one VM
//! with the guard that reports it if dropped. Below both `handle` and `actor`, so neither imports
//! the other for these types. Owns no behaviour beyond the lease guard.

use super::schedule::Schedule;
use super::{FleetError, FleetSettings, FleetSnapshot, VmFate};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// What a handle asks of the actor. Made by `FleetHandle` methods and [`LeaseGuard`]'s `Drop`;
/// consumed by the actor's loop.
pub(super) enum Command {
    /// An idle VM now, if any (it becomes "acquired").
    TryLease(oneshot::Sender<Option<Lease>>),
    /// A VM for a job already taken: queued until one is idle (the reply dropped = gave up).
    LeaseOnDemand(oneshot::Sender<Result<Lease, FleetError>>),
    /// The leased VM's job request found a job.
    MarkUsed(String),
    /// The leased VM's job request found none: back to idle.
    Unlease(String),
    /// The VM's job ended (`used`: a job ran on it).
    Release { name: String, used: bool },
    /// A lease went out of scope unreturned.
    Dropped(String),
    /// What the pool knows of a VM (for `vm_fate`).
    Lookup {
        name: String,
        reply: oneshot::Sender<Lookup>,
    },
    /// The coordinator's backlog hint.
    Backlog(u64),
    /// The pool's state for metrics and the status page.
    Snapshot(oneshot::Sender<FleetSnapshot>),
    /// Delete every VM and stop by `deadline`; the reply gets the names not confirmed deleted.
    Shutdown {
        deadline: Instant,
        reply: oneshot::Sender<Vec<String>>,
    },
    /// Reloaded settings, already validated, with their parsed schedule.
    Reconfigure(Box<(FleetSettings, Schedule)>),
    /// Start (`true`) or end a drain.
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

/// One VM leased to one job (or one job request). Give it back with
/// [`FleetHandle::unlease`](super::FleetHandle::unlease) or
/// [`FleetHandle::release`](super::FleetHandle::release); a lease dropped without either is
/// released as used and the VM is removed (its history is unknown).
pub struct Lease {
    /// Instance name.
    pub name: String,
    /// Zone.
    pub zone: String,
    /// A Docker client for its dockerd (mTLS).
    pub docker: bollard::Docker,
    pub(super) guard: LeaseGuard,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("name", &self.name)
            .field("zone", &self.zone)
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// Turns the guard off (the lease is being returned on purpose) and gives the VM name.
    pub(super) fn disarm(mut self) -> String {
        self.guard.tx = None;
        std::mem::take(&mut self.name)
    }
}

/// Sends `Dropped` when a lease goes out of scope un-returned. Made by the actor with each lease.
pub(super) struct LeaseGuard {
    pub name: String,
    pub tx: Option<mpsc::UnboundedSender<Command>>,
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Command::Dropped(std::mem::take(&mut self.name)));
        }
    }
}
