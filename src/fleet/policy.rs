//! The scaling decisions, as pure functions over counts: how many VMs to create now and which
//! idle VMs to remove. Follows GitLab Runner's docker+machine rules (`canCreate`, "idle
//! exceeded", `updateMachine`), with one hard `limit` over EVERY state (creating, idle, leased,
//! used, removing) and `MaxGrowthRate` over VMs being created. Queue-aware scale-out (switchable)
//! also creates for the backlog the coordinator reported. No clock, no I/O: the pool feeds these.

use super::schedule::IdleSettings;
use std::time::Duration;

/// VMs per state, as the pool counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Being created (insert to dockerd answering).
    pub creating: u32,
    /// Ready and free.
    pub idle: u32,
    /// Leased to a runner worker that is asking for a job ("acquired").
    pub leased: u32,
    /// Running a job.
    pub used: u32,
    /// Being deleted.
    pub removing: u32,
}

impl Counts {
    /// GitLab Runner's Available: acquired + creating + idle.
    pub fn available(&self) -> u32 {
        self.leased + self.creating + self.idle
    }
    /// GitLab Runner's InUse.
    pub fn in_use(&self) -> u32 {
        self.used
    }
    /// Every VM, removing included (what `limit` caps).
    pub fn total(&self) -> u32 {
        self.creating + self.idle + self.leased + self.used + self.removing
    }
}

/// The hard caps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Caps {
    /// `limit`: VMs in all states (0 = none).
    pub limit: u32,
    /// `MaxGrowthRate`: VMs creating at once (0 = none).
    pub max_growth_rate: u32,
}

/// What asks for VMs besides the idle settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Demand {
    /// Jobs waiting for an on-demand VM (IdleCount = 0 path).
    pub on_demand: u32,
    /// The coordinator's backlog hint when queue-aware scale-out is on, else 0.
    pub backlog: u32,
}

/// Whether the hard caps allow one more VM to be created.
pub fn caps_allow(c: &Counts, caps: Caps) -> bool {
    let growing_too_fast = caps.max_growth_rate > 0 && c.creating >= caps.max_growth_rate;
    let at_limit = caps.limit > 0 && c.total() >= caps.limit;
    !growing_too_fast && !at_limit
}

/// GitLab Runner's "idle exceeded": enough VMs are available for the idle settings.
pub fn idle_exceeded(c: &Counts, idle: &IdleSettings) -> bool {
    let available = c.available();
    if available >= idle.idle_count {
        return true;
    }
    if idle.idle_scale_factor > 0.0 {
        let floor = idle.idle_count_min.max(1);
        // Truncation as Go's int(float64) does.
        let scaled = (f64::from(c.in_use()) * idle.idle_scale_factor) as u64;
        return u64::from(available) >= u64::from(floor) && u64::from(available) >= scaled;
    }
    false
}

/// GitLab Runner's `canCreate` for the idle pool (not on demand).
pub fn can_create_idle(c: &Counts, idle: &IdleSettings, caps: Caps) -> bool {
    caps_allow(c, caps) && !idle_exceeded(c, idle)
}

/// How many VMs to start creating now: first to restore the idle settings (GitLab Runner's
/// loop), then for jobs waiting on demand, then for the backlog, each unit only while the caps
/// allow. Waiting jobs and the backlog are served by idle and creating VMs first.
pub fn creations(counts: Counts, idle: &IdleSettings, caps: Caps, demand: Demand) -> u32 {
    let mut c = counts;
    let mut n = 0;
    while can_create_idle(&c, idle, caps) {
        c.creating += 1;
        n += 1;
    }
    let mut wanted = demand.on_demand.saturating_sub(c.idle + c.creating);
    while wanted > 0 && caps_allow(&c, caps) {
        c.creating += 1;
        n += 1;
        wanted -= 1;
    }
    let spare = (c.idle + c.creating).saturating_sub(demand.on_demand);
    let mut wanted = demand.backlog.saturating_sub(spare);
    while wanted > 0 && caps_allow(&c, caps) {
        c.creating += 1;
        n += 1;
        wanted -= 1;
    }
    n
}

/// One idle VM as the removal decision sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdleVm {
    /// The caller's key for this VM.
    pub key: usize,
    /// Time since it became idle.
    pub idle_for: Duration,
    /// Jobs it has run.
    pub used_count: u32,
}

/// Why an idle VM goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveReason {
    /// `MaxBuilds` reached.
    TooManyBuilds,
    /// More VMs than `limit` (e.g. after a reload lowered it).
    TooManyMachines,
    /// Idle past `IdleTime` while idle capacity is exceeded.
    TooManyIdle,
}

impl RemoveReason {
    /// A closed-set name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RemoveReason::TooManyBuilds => "too_many_builds",
            RemoveReason::TooManyMachines => "too_many_machines",
            RemoveReason::TooManyIdle => "too_many_idle",
        }
    }
}

/// Which idle VMs to remove, as GitLab Runner's `updateMachines`: non-idle VMs count first, then
/// idle ones most recently used first; each idle VM is judged against the VMs counted before it
/// (so the stalest go first). `busy` is every VM that is not idle. With a backlog (queue-aware),
/// idle VMs it needs are kept too.
pub fn removals(
    busy: Counts,
    idle_vms: &[IdleVm],
    idle: &IdleSettings,
    caps: Caps,
    max_builds: u32,
    backlog: u32,
) -> Vec<(usize, RemoveReason)> {
    let mut order: Vec<&IdleVm> = idle_vms.iter().collect();
    order.sort_by_key(|v| v.idle_for);
    let mut seen = Counts { idle: 0, ..busy };
    let mut out = Vec::new();
    for vm in order {
        let reason = if max_builds > 0 && vm.used_count >= max_builds {
            Some(RemoveReason::TooManyBuilds)
        } else if caps.limit > 0 && seen.total() >= caps.limit {
            Some(RemoveReason::TooManyMachines)
        } else if vm.idle_for > idle.idle_time
            && idle_exceeded(&seen, idle)
            && seen.idle + seen.creating >= backlog
        {
            Some(RemoveReason::TooManyIdle)
        } else {
            None
        };
        match reason {
            Some(r) => out.push((vm.key, r)),
            None => seen.idle += 1,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle(count: u32, min: u32, factor: f64) -> IdleSettings {
        IdleSettings {
            idle_count: count,
            idle_count_min: min,
            idle_scale_factor: factor,
            idle_time: Duration::from_secs(600),
        }
    }

    fn counts(creating: u32, idle: u32, leased: u32, used: u32, removing: u32) -> Counts {
        Counts {
            creating,
            idle,
            leased,
            used,
            removing,
        }
    }

    const NO_CAPS: Caps = Caps {
        limit: 0,
        max_growth_rate: 0,
    };

    #[test]
    fn creation_table() {
        let caps = |limit, growth| Caps {
            limit,
            max_growth_rate: growth,
        };
        let d = |on_demand, backlog| Demand { on_demand, backlog };
        // (counts, idle settings, caps, demand, expected creations)
        let table = [
            // Warm to IdleCount and no further.
            (counts(0, 0, 0, 0, 0), idle(3, 0, 0.0), NO_CAPS, d(0, 0), 3),
            (counts(1, 2, 0, 0, 0), idle(3, 0, 0.0), NO_CAPS, d(0, 0), 0),
            (counts(0, 3, 0, 5, 0), idle(3, 0, 0.0), NO_CAPS, d(0, 0), 0),
            // Leased VMs count as available (GitLab's Available = acquired+creating+idle).
            (counts(0, 1, 2, 0, 0), idle(3, 0, 0.0), NO_CAPS, d(0, 0), 0),
            // limit counts every state, removing included.
            (
                counts(0, 0, 0, 3, 2),
                idle(3, 0, 0.0),
                caps(6, 0),
                d(0, 0),
                1,
            ),
            (
                counts(1, 1, 1, 1, 2),
                idle(9, 0, 0.0),
                caps(6, 0),
                d(0, 0),
                0,
            ),
            // MaxGrowthRate bounds VMs creating at once.
            (
                counts(0, 0, 0, 0, 0),
                idle(10, 0, 0.0),
                caps(0, 2),
                d(0, 0),
                2,
            ),
            (
                counts(2, 0, 0, 0, 0),
                idle(10, 0, 0.0),
                caps(0, 2),
                d(0, 0),
                0,
            ),
            (
                counts(1, 0, 0, 0, 0),
                idle(10, 0, 0.0),
                caps(3, 2),
                d(0, 0),
                1,
            ),
            // IdleScaleFactor: idle = factor × in use, floor IdleCountMin (at least 1).
            (
                counts(0, 0, 0, 10, 0),
                idle(50, 2, 0.5),
                NO_CAPS,
                d(0, 0),
                5,
            ),
            (counts(0, 0, 0, 2, 0), idle(50, 2, 0.5), NO_CAPS, d(0, 0), 2),
            (counts(0, 0, 0, 0, 0), idle(50, 0, 0.5), NO_CAPS, d(0, 0), 1),
            // IdleCount caps the scale factor (Available ≥ IdleCount is exceeded).
            (
                counts(0, 0, 0, 100, 0),
                idle(4, 1, 1.0),
                NO_CAPS,
                d(0, 0),
                4,
            ),
            // On demand (IdleCount = 0): one per waiting job not covered by idle/creating.
            (counts(0, 0, 0, 0, 0), idle(0, 0, 0.0), NO_CAPS, d(2, 0), 2),
            (counts(1, 0, 0, 0, 0), idle(0, 0, 0.0), NO_CAPS, d(2, 0), 1),
            (
                counts(0, 0, 0, 4, 0),
                idle(0, 0, 0.0),
                caps(5, 0),
                d(3, 0),
                1,
            ),
            // Queue-aware: the backlog beyond idle + creating, bounded by limit and growth.
            (counts(0, 2, 0, 0, 0), idle(2, 0, 0.0), NO_CAPS, d(0, 5), 3),
            (
                counts(0, 0, 0, 0, 0),
                idle(0, 0, 0.0),
                caps(4, 0),
                d(0, 10),
                4,
            ),
            (
                counts(0, 0, 0, 0, 0),
                idle(0, 0, 0.0),
                caps(0, 3),
                d(0, 10),
                3,
            ),
            (
                counts(0, 0, 0, 0, 0),
                idle(1, 0, 0.0),
                caps(0, 3),
                d(1, 10),
                3,
            ),
            (counts(0, 3, 0, 0, 0), idle(1, 0, 0.0), NO_CAPS, d(0, 2), 0),
        ];
        for (i, (c, s, caps, demand, want)) in table.iter().enumerate() {
            let got = creations(*c, s, *caps, *demand);
            assert_eq!(got, *want, "row {i}: {c:?} {s:?} {caps:?} {demand:?}");
            let after = Counts {
                creating: c.creating + got,
                ..*c
            };
            if caps.limit > 0 && got > 0 {
                assert!(after.total() <= caps.limit, "row {i} exceeds limit");
            }
            if caps.max_growth_rate > 0 && got > 0 {
                assert!(
                    after.creating <= caps.max_growth_rate,
                    "row {i} exceeds growth"
                );
            }
        }
    }

    /// (busy counts, idle VMs, settings, caps, MaxBuilds, backlog, expected removals)
    type RemovalRow = (
        Counts,
        Vec<IdleVm>,
        IdleSettings,
        Caps,
        u32,
        u32,
        Vec<(usize, RemoveReason)>,
    );

    #[test]
    fn removal_table() {
        let vm = |key, idle_secs, used_count| IdleVm {
            key,
            idle_for: Duration::from_secs(idle_secs),
            used_count,
        };
        let caps = |limit| Caps {
            limit,
            max_growth_rate: 0,
        };
        // (busy counts, idle VMs, settings, caps, MaxBuilds, backlog, expected removals)
        let table: Vec<RemovalRow> = vec![
            // Fresh idle VMs stay.
            (
                Counts::default(),
                vec![vm(0, 10, 0), vm(1, 20, 0)],
                idle(0, 0, 0.0),
                NO_CAPS,
                0,
                0,
                vec![],
            ),
            // Expired ones go only while idle capacity is exceeded: keep IdleCount of them.
            (
                Counts::default(),
                vec![vm(0, 700, 0), vm(1, 900, 0), vm(2, 800, 0)],
                idle(1, 0, 0.0),
                NO_CAPS,
                0,
                0,
                vec![
                    (2, RemoveReason::TooManyIdle),
                    (1, RemoveReason::TooManyIdle),
                ],
            ),
            (
                Counts::default(),
                vec![vm(0, 700, 0)],
                idle(1, 0, 0.0),
                NO_CAPS,
                0,
                0,
                vec![],
            ),
            // A fresh one counts first, so the expired one goes.
            (
                Counts::default(),
                vec![vm(0, 700, 0), vm(1, 5, 0)],
                idle(1, 0, 0.0),
                NO_CAPS,
                0,
                0,
                vec![(0, RemoveReason::TooManyIdle)],
            ),
            // MaxBuilds reached.
            (
                Counts::default(),
                vec![vm(0, 1, 3)],
                idle(5, 0, 0.0),
                NO_CAPS,
                3,
                0,
                vec![(0, RemoveReason::TooManyBuilds)],
            ),
            (
                Counts::default(),
                vec![vm(0, 1, 2)],
                idle(5, 0, 0.0),
                NO_CAPS,
                3,
                0,
                vec![],
            ),
            // Over limit (after a reload lowered it): busy VMs count first.
            (
                counts(0, 0, 0, 3, 0),
                vec![vm(0, 1, 0), vm(1, 2, 0)],
                idle(5, 0, 0.0),
                caps(4),
                0,
                0,
                vec![(1, RemoveReason::TooManyMachines)],
            ),
            // The backlog keeps expired idle VMs it needs.
            (
                Counts::default(),
                vec![vm(0, 700, 0), vm(1, 800, 0)],
                idle(0, 0, 0.0),
                NO_CAPS,
                0,
                2,
                vec![],
            ),
            (
                Counts::default(),
                vec![vm(0, 700, 0), vm(1, 800, 0)],
                idle(0, 0, 0.0),
                NO_CAPS,
                0,
                1,
                vec![(1, RemoveReason::TooManyIdle)],
            ),
        ];
        for (i, (busy, vms, s, caps, max_builds, backlog, want)) in table.iter().enumerate() {
            assert_eq!(
                &removals(*busy, vms, s, *caps, *max_builds, *backlog),
                want,
                "row {i}"
            );
        }
    }
}
