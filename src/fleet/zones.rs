//! Zone choice and cool-down. Owns the ordered `[runners.gce] zones` and which of them are
//! cooling: a stockout (`ZONE_RESOURCE_POOL_EXHAUSTED*`) or repeated create timeouts cool that
//! zone, `QUOTA_EXCEEDED` cools the scope its details name (a region's zones, or every zone).
//! A cool-down starts at `zone_cooldown` and doubles per repeat up to one hour; a success in a
//! zone resets it. Creation takes the first zone in order that is not cooling; when all cool,
//! the caller sleeps until [`Zones::next_ready`] (no busy loop). Time comes from the caller
//! (`tokio::time::Instant`), so paused-clock tests drive it.

use crate::cloud::QuotaScope;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

/// The longest cool-down.
pub const MAX_COOLDOWN: Duration = Duration::from_secs(3600);

/// Create timeouts in a row that cool a zone.
pub const TIMEOUT_STRIKES: u32 = 2;

/// Why a zone is blamed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZoneFailure {
    /// A stockout in that zone.
    Stockout,
    /// A VM there was not ready within `create_timeout`.
    CreateTimeout,
    /// A quota failure: cools its scope, whichever zone reported it.
    Quota(QuotaScope),
}

#[derive(Debug, Clone, Default)]
struct ZoneState {
    /// Cooling until then.
    until: Option<Instant>,
    /// Cool-downs in a row (doubles the next one).
    repeats: u32,
    /// Create timeouts in a row.
    timeouts: u32,
}

/// The zones of one runner and their cool-downs. Owned by the pool actor.
#[derive(Debug, Clone)]
pub struct Zones {
    order: Vec<String>,
    base: Duration,
    state: BTreeMap<String, ZoneState>,
}

/// The region of a zone: its name without the last `-x` (`us-central1-a` → `us-central1`).
pub fn region_of(zone: &str) -> &str {
    zone.rsplit_once('-').map(|(r, _)| r).unwrap_or(zone)
}

impl Zones {
    /// Zones in preference order; `base` is `zone_cooldown`.
    pub fn new(order: Vec<String>, base: Duration) -> Zones {
        Zones {
            order,
            base,
            state: BTreeMap::new(),
        }
    }

    /// Replaces the zone list and base cool-down (config reload), keeping the cool-downs of
    /// zones still listed.
    pub fn reconfigure(&mut self, order: Vec<String>, base: Duration) {
        self.state.retain(|z, _| order.contains(z));
        self.order = order;
        self.base = base;
    }

    fn cooling(&self, zone: &str, now: Instant) -> bool {
        self.state
            .get(zone)
            .and_then(|s| s.until)
            .is_some_and(|u| u > now)
    }

    /// The first zone in order that is not cooling, if any.
    pub fn pick(&self, now: Instant) -> Option<&str> {
        self.order
            .iter()
            .find(|z| !self.cooling(z, now))
            .map(String::as_str)
    }

    /// When the earliest cooling zone becomes usable again (`None` when one is usable now or
    /// there are no zones).
    pub fn next_ready(&self, now: Instant) -> Option<Instant> {
        if self.pick(now).is_some() {
            return None;
        }
        self.order
            .iter()
            .filter_map(|z| self.state.get(z).and_then(|s| s.until))
            .min()
    }

    fn cool(&mut self, zone: &str, now: Instant) {
        let base = self.base;
        let s = self.state.entry(zone.to_string()).or_default();
        if s.until.is_some_and(|u| u > now) {
            return; // already cooling: one failure burst is one repeat
        }
        let factor = 1u32.checked_shl(s.repeats.min(16)).unwrap_or(u32::MAX);
        let d = base.saturating_mul(factor).min(MAX_COOLDOWN);
        s.until = Some(now + d);
        s.repeats = s.repeats.saturating_add(1);
        s.timeouts = 0;
    }

    /// Records a failure in `zone`; returns the zones that started cooling.
    pub fn record_failure(
        &mut self,
        zone: &str,
        failure: &ZoneFailure,
        now: Instant,
    ) -> Vec<String> {
        let targets: Vec<String> = match failure {
            ZoneFailure::Stockout => vec![zone.to_string()],
            ZoneFailure::CreateTimeout => {
                let s = self.state.entry(zone.to_string()).or_default();
                s.timeouts += 1;
                if s.timeouts >= TIMEOUT_STRIKES {
                    vec![zone.to_string()]
                } else {
                    vec![]
                }
            }
            ZoneFailure::Quota(QuotaScope::Global) => self.order.clone(),
            ZoneFailure::Quota(QuotaScope::Region(r)) => self
                .order
                .iter()
                .filter(|z| region_of(z) == r)
                .cloned()
                .collect(),
        };
        let mut started = Vec::new();
        for z in targets {
            if !self.cooling(&z, now) {
                self.cool(&z, now);
                started.push(z);
            }
        }
        started
    }

    /// A VM became ready in `zone`: its cool-down history is forgotten.
    pub fn record_success(&mut self, zone: &str) {
        self.state.remove(zone);
    }

    /// Zones cooling now and for how much longer (status page).
    pub fn cooling_now(&self, now: Instant) -> Vec<(String, Duration)> {
        self.order
            .iter()
            .filter_map(|z| {
                let u = self.state.get(z)?.until?;
                (u > now).then(|| (z.clone(), u - now))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zones() -> Zones {
        Zones::new(
            vec![
                "us-central1-a".into(),
                "us-central1-b".into(),
                "europe-west1-b".into(),
            ],
            Duration::from_secs(300),
        )
    }

    #[test]
    fn regions_are_zone_names_minus_the_last_part() {
        assert_eq!(region_of("us-central1-a"), "us-central1");
        assert_eq!(region_of("europe-west1-b"), "europe-west1");
        assert_eq!(region_of("weird"), "weird");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stockout_moves_creation_to_the_next_zone_until_the_cooldown_ends() {
        let mut z = zones();
        let t0 = Instant::now();
        assert_eq!(z.pick(t0), Some("us-central1-a"));
        assert_eq!(
            z.record_failure("us-central1-a", &ZoneFailure::Stockout, t0),
            vec!["us-central1-a"]
        );
        assert_eq!(z.pick(t0), Some("us-central1-b"));
        tokio::time::advance(Duration::from_secs(299)).await;
        assert_eq!(z.pick(Instant::now()), Some("us-central1-b"));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(z.pick(Instant::now()), Some("us-central1-a"));
    }

    #[tokio::test(start_paused = true)]
    async fn cooldowns_double_per_repeat_up_to_an_hour_and_reset_after_success() {
        let mut z = zones();
        let mut expected = vec![300, 600, 1200, 2400, 3600, 3600];
        for want in expected.drain(..) {
            let now = Instant::now();
            z.record_failure("us-central1-a", &ZoneFailure::Stockout, now);
            let cooling = z.cooling_now(now);
            assert_eq!(
                cooling,
                vec![("us-central1-a".to_string(), Duration::from_secs(want))]
            );
            tokio::time::advance(Duration::from_secs(want)).await;
        }
        z.record_success("us-central1-a");
        let now = Instant::now();
        z.record_failure("us-central1-a", &ZoneFailure::Stockout, now);
        assert_eq!(z.cooling_now(now)[0].1, Duration::from_secs(300));
    }

    #[tokio::test(start_paused = true)]
    async fn quota_cools_its_scope() {
        let t0 = Instant::now();
        let mut z = zones();
        let started = z.record_failure(
            "us-central1-a",
            &ZoneFailure::Quota(QuotaScope::Region("us-central1".into())),
            t0,
        );
        assert_eq!(started, vec!["us-central1-a", "us-central1-b"]);
        assert_eq!(z.pick(t0), Some("europe-west1-b"));

        let mut z = zones();
        z.record_failure(
            "europe-west1-b",
            &ZoneFailure::Quota(QuotaScope::Global),
            t0,
        );
        assert_eq!(z.pick(t0), None);
        assert_eq!(z.next_ready(t0), Some(t0 + Duration::from_secs(300)));
    }

    #[tokio::test(start_paused = true)]
    async fn one_timeout_is_a_strike_two_cool_the_zone() {
        let t0 = Instant::now();
        let mut z = zones();
        assert!(z
            .record_failure("us-central1-a", &ZoneFailure::CreateTimeout, t0)
            .is_empty());
        assert_eq!(z.pick(t0), Some("us-central1-a"));
        assert_eq!(
            z.record_failure("us-central1-a", &ZoneFailure::CreateTimeout, t0)
                .len(),
            1
        );
        assert_eq!(z.pick(t0), Some("us-central1-b"));
    }

    #[tokio::test(start_paused = true)]
    async fn when_all_cool_next_ready_is_the_earliest_end() {
        let mut z = zones();
        let t0 = Instant::now();
        z.record_failure("us-central1-b", &ZoneFailure::Stockout, t0);
        tokio::time::advance(Duration::from_secs(10)).await;
        let t1 = Instant::now();
        z.record_failure("us-central1-a", &ZoneFailure::Stockout, t1);
        z.record_failure("europe-west1-b", &ZoneFailure::Stockout, t1);
        assert_eq!(z.pick(t1), None);
        assert_eq!(z.next_ready(t1), Some(t0 + Duration::from_secs(300)));
        // A failure burst while cooling does not extend or double the cool-down.
        assert!(z
            .record_failure("us-central1-a", &ZoneFailure::Stockout, t1)
            .is_empty());
        assert_eq!(
            z.cooling_now(t1)[0],
            ("us-central1-a".into(), Duration::from_secs(300))
        );
    }
}
