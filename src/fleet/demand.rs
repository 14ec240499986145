//! What asks the pool for VMs besides its idle settings: the jobs waiting for an on-demand VM
//! ([`Waiters`], IdleCount = 0) and the coordinator's backlog hint ([`Backlog`], queue-aware
//! scale-out). Owned by the actor; `plan` sees only their counts.

use super::adaptive;
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

/// Jobs waiting for an on-demand VM, each with when it asked.
#[derive(Default)]
pub(super) struct Waiters {
    queue: VecDeque<(Instant, Waiter)>,
}

impl Waiters {
    /// Queues a job that asked for a VM at `since`.
    pub fn push(&mut self, w: Waiter, since: Instant) {
        self.queue.push_back((since, w));
    }

    /// The next job to serve and when it asked, if any: the oldest (first come first served),
    /// or with `fresh_first` (the adaptive policy) the oldest that asked within the SLO's wait
    /// ([`adaptive::SLO_WAIT`]) — a VM goes to a job it can still serve in time before one
    /// already late, as adaptive LIFO does for an overloaded queue — unless the oldest has
    /// waited [`adaptive::STARVED_AFTER`], which then goes first: no job waits behind newer
    /// ones for ever (each waiting job has a VM on the way anyway).
    pub fn next(&mut self, now: Instant, fresh_first: bool) -> Option<(Instant, Waiter)> {
        let since = |d| now.checked_sub(d).unwrap_or(now);
        let starved = self
            .queue
            .front()
            .is_some_and(|(at, _)| *at < since(adaptive::STARVED_AFTER));
        let i = if fresh_first && !starved {
            let fresh = since(adaptive::SLO_WAIT);
            self.queue
                .iter()
                .position(|(at, w)| *at >= fresh && !w.is_closed())
                .unwrap_or(0)
        } else {
            0
        };
        self.queue.remove(i)
    }

    /// Whether no job waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Forgets the jobs that stopped waiting.
    pub fn prune(&mut self) {
        self.queue.retain(|(_, w)| !w.is_closed());
    }

    /// Jobs still waiting.
    pub fn count(&self) -> u32 {
        let n = self.queue.iter().filter(|(_, w)| !w.is_closed()).count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Tells every waiting job that runner `runner`'s pool is shutting down.
    pub fn fail_all(&mut self, runner: &str) {
        while let Some((_, w)) = self.queue.pop_front() {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Queues jobs that asked `ago` seconds before `now`, oldest first; returns their receivers.
    fn queue(
        w: &mut Waiters,
        now: Instant,
        ago: &[u64],
    ) -> Vec<oneshot::Receiver<Result<Lease, FleetError>>> {
        ago.iter()
            .map(|s| {
                let (tx, rx) = oneshot::channel();
                w.push(tx, now - Duration::from_secs(*s));
                rx
            })
            .collect()
    }

    fn order(w: &mut Waiters, now: Instant, fresh_first: bool) -> Vec<u64> {
        std::iter::from_fn(|| w.next(now, fresh_first))
            .map(|(at, _)| now.duration_since(at).as_secs())
            .collect()
    }

    #[test]
    fn first_come_first_served_unless_fresh_first() {
        let now = Instant::now() + Duration::from_secs(3600);
        let mut w = Waiters::default();
        let _rx = queue(&mut w, now, &[40, 30, 8, 2]);
        assert_eq!(order(&mut w, now, false), vec![40, 30, 8, 2]);
        let _rx = queue(&mut w, now, &[40, 30, 8, 2]);
        assert_eq!(
            order(&mut w, now, true),
            vec![8, 2, 40, 30],
            "jobs still within the SLO's wait first, oldest first; then the late ones"
        );
    }

    #[test]
    fn a_starved_job_goes_first_and_gone_jobs_are_skipped() {
        let now = Instant::now() + Duration::from_secs(3600);
        let mut w = Waiters::default();
        let starved = adaptive::STARVED_AFTER.as_secs() + 1;
        let _rx = queue(&mut w, now, &[starved, 30, 5]);
        assert_eq!(order(&mut w, now, true), vec![starved, 5, 30]);
        let mut rx = queue(&mut w, now, &[30, 6, 3]);
        drop(rx.remove(1));
        assert_eq!(
            order(&mut w, now, true)[0],
            3,
            "a fresh job that stopped waiting is not picked"
        );
    }
}
