//! What asks the pool for VMs besides its idle settings: the jobs waiting for an on-demand VM
//! ([`Waiters`], IdleCount = 0) and the coordinator's backlog hint ([`Backlog`], queue-aware
//! scale-out). Owned by the actor; `plan` sees only their counts.

use super::protocol::Lease;
use super::FleetError;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// A backlog hint older than this is forgotten.
const BACKLOG_TTL: Duration = Duration::from_secs(60);

/// One waiting job's reply channel; dropped by the job when it stops waiting.
pub(super) type Waiter = oneshot::Sender<Result<Lease, FleetError>>;

/// Jobs waiting for an on-demand VM, first come first served.
#[derive(Default)]
pub(super) struct Waiters {
    queue: VecDeque<Waiter>,
}

impl Waiters {
    /// Queues a waiting job.
    pub fn push(&mut self, w: Waiter) {
        self.queue.push_back(w);
    }

    /// The next waiting job, if any.
    pub fn pop(&mut self) -> Option<Waiter> {
        self.queue.pop_front()
    }

    /// Whether no job waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Forgets the jobs that stopped waiting.
    pub fn prune(&mut self) {
        self.queue.retain(|w| !w.is_closed());
    }

    /// Jobs still waiting.
    pub fn count(&self) -> u32 {
        let n = self.queue.iter().filter(|w| !w.is_closed()).count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Tells every waiting job that runner `runner`'s pool is shutting down.
    pub fn fail_all(&mut self, runner: &str) {
        while let Some(w) = self.queue.pop_front() {
            let _ = w.send(Err(FleetError::ShuttingDown {
                runner: runner.to_string(),
            }));
        }
    }
}

/// The coordinator's last backlog hint and when it came.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Backlog {
    hint: Option<(u32, Instant)>,
}

impl Backlog {
    /// Records a hint (`queue_size`); 0, or queue-aware scale-out off, clears it.
    pub fn observe(&mut self, queue_size: u64, queue_aware: bool, now: Instant) {
        self.hint = (queue_aware && queue_size > 0)
            .then(|| (u32::try_from(queue_size).unwrap_or(u32::MAX), now));
    }

    /// Forgets a hint past [`BACKLOG_TTL`].
    pub fn expire(&mut self, now: Instant) {
        if self
            .hint
            .is_some_and(|(_, at)| now.duration_since(at) >= BACKLOG_TTL)
        {
            self.hint = None;
        }
    }

    /// The hinted backlog (0 without a hint).
    pub fn get(&self) -> u32 {
        self.hint.map_or(0, |(b, _)| b)
    }

    /// When the hint expires, if there is one.
    pub fn expires_at(&self) -> Option<Instant> {
        self.hint.map(|(_, at)| at + BACKLOG_TTL)
    }
}
