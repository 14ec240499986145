//! The pool's running totals for the snapshot (peaks, VMs created, failed, removed) and its
//! VM-time accounting (idle and busy VM-seconds, added up between two state changes). Owned by
//! the actor, which reports the VM time to `PoolMetrics`; builds the pool's `FleetSnapshot`.

use super::policy::Counts;
use super::table::Table;
use super::FleetSnapshot;
use std::time::Duration;
use tokio::time::Instant;

/// Totals since the pool started.
#[derive(Debug)]
pub(super) struct Stats {
    pub peak_total: u32,
    pub peak_creating: u32,
    pub created: u64,
    pub creation_failures: u64,
    pub removed: u64,
    /// When VM time was last added up, and the (idle + leased, used) counts since.
    accrued_at: Instant,
    accruing: (u32, u32),
}

impl Stats {
    /// Zero totals, VM time counted from `now`.
    pub fn new(now: Instant) -> Stats {
        Stats {
            peak_total: 0,
            peak_creating: 0,
            created: 0,
            creation_failures: 0,
            removed: 0,
            accrued_at: now,
            accruing: (0, 0),
        }
    }

    /// The (idle, busy) VM-seconds since the last call, at the counts that held since then
    /// (states change only between two calls: in command and event handlers).
    pub fn accrue(&mut self, now: Instant) -> (f64, f64) {
        let secs = now.duration_since(self.accrued_at).as_secs_f64();
        self.accrued_at = now;
        let (idle, busy) = self.accruing;
        (f64::from(idle) * secs, f64::from(busy) * secs)
    }

    /// Records the counts after a change: peaks, and the counts VM time accrues at from now.
    /// Call [`Stats::accrue`] first.
    pub fn observe(&mut self, c: &Counts) {
        self.peak_total = self.peak_total.max(c.total());
        self.peak_creating = self.peak_creating.max(c.creating);
        self.accruing = (c.idle + c.leased, c.used);
    }

    /// The pool's snapshot: the table's VMs and counts with these totals.
    pub fn snapshot(
        &self,
        table: &Table,
        cooling_zones: Vec<(String, Duration)>,
        waiting_on_demand: u32,
        started: bool,
        now: Instant,
    ) -> FleetSnapshot {
        let vms = table.infos(now);
        FleetSnapshot {
            counts: table.counts(),
            stuck_on_removing: vms
                .iter()
                .filter(|v| v.state_name() == "stuck-on-removing")
                .count() as u32,
            vms,
            cooling_zones,
            peak_total: self.peak_total,
            peak_creating: self.peak_creating,
            created: self.created,
            creation_failures: self.creation_failures,
            removed: self.removed,
            waiting_on_demand,
            started,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_time_accrues_at_the_counts_observed_before() {
        let t0 = Instant::now();
        let mut s = Stats::new(t0);
        assert_eq!(s.accrue(t0 + Duration::from_secs(3)), (0.0, 0.0));
        s.observe(&Counts {
            idle: 1,
            leased: 1,
            used: 3,
            creating: 2,
            removing: 0,
        });
        assert_eq!(s.accrue(t0 + Duration::from_secs(5)), (4.0, 6.0));
        assert_eq!((s.peak_total, s.peak_creating), (7, 2));
    }
}
