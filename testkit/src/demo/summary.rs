//! The docker+machine demo's closing table: jobs by outcome, job wait p50/p95 (enqueue → first
//! script output), VMs created and inserts refused per zone, Compute calls per VM besides the shared list calls
//! (and every method's count),
//! idle and busy VM-seconds, and the leftover check. Pure: renders what the demo measured.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use super::leftovers::Leftovers;
use super::outcome::Outcome;
use super::progress::Tally;
use crate::gce::CallRecord;

/// The nearest-rank percentile `p` (0–100) of `values`; `None` when there are none.
pub(super) fn percentile(values: &[Duration], p: f64) -> Option<Duration> {
    let mut sorted = values.to_vec();
    sorted.sort();
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    sorted.get(rank.clamp(1, n) - 1).copied()
}

/// Everything the table shows.
pub(super) struct Summary<'a> {
    /// Every job of the demo.
    pub outcomes: &'a [Outcome],
    /// What the sampler counted.
    pub tally: &'a Tally,
    /// Every Compute call the fake answered.
    pub calls: &'a [CallRecord],
    /// The configured zones, in order.
    pub zones: &'a [String],
    /// What the leftover check found.
    pub leftovers: &'a Leftovers,
    /// The demo's wall time, start of flotilla to its exit.
    pub elapsed: Duration,
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()))
}

impl Summary<'_> {
    /// The table, one `label  value` row per line.
    pub(super) fn render(&self) -> String {
        let mut rows: Vec<(&str, String)> = Vec::new();
        let n = self.outcomes.len();
        let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
        for o in self.outcomes {
            *by_state.entry(o.state.gitlab_status()).or_default() += 1;
        }
        let states: Vec<String> = by_state.iter().map(|(s, c)| format!("{c} {s}")).collect();
        let unexpected = self.outcomes.iter().filter(|o| !o.as_expected()).count();
        rows.push((
            "jobs",
            format!("{n} ({}; {unexpected} not as expected)", states.join(", ")),
        ));
        let waits: Vec<Duration> = self.outcomes.iter().filter_map(|o| o.wait).collect();
        rows.push((
            "job wait p50 / p95",
            format!(
                "{} / {}  (enqueue → first script output, {} jobs)",
                secs(percentile(&waits, 50.0)),
                secs(percentile(&waits, 95.0)),
                waits.len()
            ),
        ));
        let created = self.tally.vms.len();
        let per_zone: Vec<String> = self
            .zones
            .iter()
            .map(|z| {
                let made = self.tally.vms.values().filter(|v| *v == z).count();
                let inserts = self
                    .calls
                    .iter()
                    .filter(|c| {
                        c.api == "instances.insert" && c.path.contains(&format!("/zones/{z}/"))
                    })
                    .count();
                format!(
                    "{z} {made} ({} inserts refused)",
                    inserts.saturating_sub(made)
                )
            })
            .collect();
        rows.push(("VMs created", format!("{created}: {}", per_zone.join(", "))));
        let mut methods: BTreeMap<&str, usize> = BTreeMap::new();
        for c in self.calls {
            *methods.entry(c.api.as_str()).or_default() += 1;
        }
        let is_list = |api: &str| api.ends_with(".list") || api.ends_with(".aggregatedList");
        let lists = self.calls.iter().filter(|c| is_list(&c.api)).count();
        let own = self.calls.len() - lists;
        let per_vm = if created == 0 {
            "-".to_owned()
        } else {
            format!("{:.1}", own as f64 / created as f64)
        };
        rows.push((
            "Compute calls per VM",
            format!(
                "{per_vm} besides shared lists  ({} calls in all, {lists} list calls)",
                self.calls.len()
            ),
        ));
        for (m, c) in &methods {
            rows.push(("", format!("{m}: {c}")));
        }
        rows.push((
            "VM-seconds",
            format!(
                "idle {:.0}, busy {:.0}",
                self.tally.idle_secs, self.tally.busy_secs
            ),
        ));
        rows.push(("left behind", self.leftovers.describe()));
        rows.push(("wall time", secs(Some(self.elapsed))));
        let mut out = String::new();
        for (label, value) in rows {
            let _ = writeln!(out, "  {label:<22} {value}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v = ms(&[50, 10, 40, 20, 30]);
        assert_eq!(percentile(&v, 50.0), Some(Duration::from_millis(30)));
        assert_eq!(percentile(&v, 95.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&v, 0.0), Some(Duration::from_millis(10)));
        assert_eq!(percentile(&[], 50.0), None);
        let twenty: Vec<u64> = (1..=20).collect();
        assert_eq!(
            percentile(&ms(&twenty), 95.0),
            Some(Duration::from_millis(19))
        );
    }
}
