//! Injectable faults: what a test can make the fake do wrong ([`GceFault`], also accepted as JSON
//! on `POST /admin/faults`), and the standing fault state consulted on every call and insert.
//! One-shot faults that act on an instance (preempt, vanish) are carried out by the lifecycle
//! module; this file only records and consumes the rest.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{ApiError, QuotaSpec};

/// A fault to inject. Standing faults (stockout, quota, unreachable, never-running, rate bucket,
/// latency) last until [`GceFault::Clear`]; counted ones (`*Next`) wear off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GceFault {
    /// Inserts in `zone` end with their operation DONE and `ZONE_RESOURCE_POOL_EXHAUSTED`
    /// (`_WITH_DETAILS` when `with_details`), httpErrorStatusCode 503.
    Stockout {
        /// Zone name.
        zone: String,
        /// Use the `_WITH_DETAILS` code and message.
        #[serde(default)]
        with_details: bool,
    },
    /// Inserts in `region` (every region when `None`) exceed quota `quota` (`CPUS` by default
    /// for a region, `CPUS_ALL_REGIONS` globally): in the operation (`QUOTA_EXCEEDED`,
    /// `quotaInfo`, 403), or as a synchronous 403 `quotaExceeded` when `sync`.
    QuotaExceeded {
        /// Region name, or `None` for a project-wide quota.
        #[serde(default)]
        region: Option<String>,
        /// Quota name; defaults by scope.
        #[serde(default)]
        quota: Option<String>,
        /// The limit reported.
        #[serde(default = "default_limit")]
        limit: f64,
        /// Fail the insert call itself instead of its operation.
        #[serde(default)]
        sync: bool,
    },
    /// At most `limit` API calls per wall-clock minute; the rest get 403 `rateLimitExceeded`
    /// until the next minute boundary.
    RateLimitPerMinute {
        /// Calls allowed per minute.
        limit: u32,
    },
    /// The next `calls` API calls get 403 `rateLimitExceeded` (legacy body), or 429
    /// `RESOURCE_EXHAUSTED` when `resource_exhausted`.
    RateLimitNext {
        /// How many calls.
        calls: u32,
        /// Use the 429 variant.
        #[serde(default)]
        resource_exhausted: bool,
    },
    /// The next `calls` API calls get 503 `backendError`.
    UnavailableNext {
        /// How many calls.
        calls: u32,
    },
    /// Aggregated lists report `zones/<zone>` in `unreachables` and omit its instances.
    ZoneUnreachable {
        /// Zone name.
        zone: String,
    },
    /// The instance disappears at once, without an operation (deleted by someone else).
    Vanish {
        /// Zone name.
        zone: String,
        /// Instance name.
        name: String,
    },
    /// Spot preemption: a `compute.instances.preempted` system operation, then the instance is
    /// deleted or TERMINATED per its `instanceTerminationAction`.
    Preempt {
        /// Zone name.
        zone: String,
        /// Instance name.
        name: String,
    },
    /// Inserts in `zone` never reach RUNNING: the instance stays STAGING, the operation RUNNING.
    NeverRunning {
        /// Zone name.
        zone: String,
    },
    /// VMs that boot in `zone` while this stands run a startup script that fails before its
    /// last step: dockerd serves, but the readiness marker (the volume named in metadata
    /// `flotilla-ready-volume`) is never made, as when iptables fails on a real VM.
    StartupScriptFails {
        /// Zone name.
        zone: String,
    },
    /// Every API call is answered this much later.
    Latency {
        /// Extra delay in milliseconds.
        millis: u64,
    },
    /// Removes every standing and counted fault.
    Clear,
}

fn default_limit() -> f64 {
    24.0
}

/// What an insert runs into, decided when it is accepted.
#[derive(Debug, Clone)]
pub(crate) enum InsertFate {
    Boot,
    Stockout { with_details: bool },
    Quota(QuotaSpec),
    Hang,
}

/// The standing and counted faults; lives inside the fake's state mutex.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    stockout: BTreeMap<String, bool>,
    quotas: Vec<(QuotaSpec, bool)>,
    per_minute: Option<u32>,
    minute: (u64, u32),
    rate_next: u32,
    rate_next_429: bool,
    unavailable_next: u32,
    pub(crate) unreachable: BTreeSet<String>,
    never_running: BTreeSet<String>,
    startup_fails: BTreeSet<String>,
    pub(crate) latency: Duration,
}

impl Faults {
    /// Records a standing or counted fault. Instance faults (preempt, vanish) are not handled here.
    pub(crate) fn add(&mut self, fault: &GceFault) {
        match fault {
            GceFault::Stockout { zone, with_details } => {
                self.stockout.insert(zone.clone(), *with_details);
            }
            GceFault::QuotaExceeded {
                region,
                quota,
                limit,
                sync,
            } => {
                let default = if region.is_some() {
                    "CPUS"
                } else {
                    "CPUS_ALL_REGIONS"
                };
                let spec = QuotaSpec {
                    quota: quota.clone().unwrap_or_else(|| default.to_owned()),
                    region: region.clone(),
                    limit: *limit,
                };
                self.quotas.push((spec, *sync));
            }
            GceFault::RateLimitPerMinute { limit } => self.per_minute = Some(*limit),
            GceFault::RateLimitNext {
                calls,
                resource_exhausted,
            } => {
                self.rate_next = *calls;
                self.rate_next_429 = *resource_exhausted;
            }
            GceFault::UnavailableNext { calls } => self.unavailable_next = *calls,
            GceFault::ZoneUnreachable { zone } => {
                self.unreachable.insert(zone.clone());
            }
            GceFault::NeverRunning { zone } => {
                self.never_running.insert(zone.clone());
            }
            GceFault::StartupScriptFails { zone } => {
                self.startup_fails.insert(zone.clone());
            }
            GceFault::Latency { millis } => self.latency = Duration::from_millis(*millis),
            GceFault::Clear => *self = Self::default(),
            GceFault::Vanish { .. } | GceFault::Preempt { .. } => {}
        }
    }

    /// Consumes the per-call faults for one API call in `region`; `Err` is the reply to send.
    pub(crate) fn on_call(&mut self, region: &str) -> Result<(), ApiError> {
        if self.unavailable_next > 0 {
            self.unavailable_next -= 1;
            return Err(ApiError::unavailable());
        }
        if self.rate_next > 0 {
            self.rate_next -= 1;
            return Err(if self.rate_next_429 {
                ApiError::resource_exhausted(region)
            } else {
                ApiError::rate_limited(region)
            });
        }
        if let Some(limit) = self.per_minute {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() / 60)
                .unwrap_or_default();
            if self.minute.0 != now {
                self.minute = (now, 0);
            }
            if self.minute.1 >= limit {
                return Err(ApiError::rate_limited(region));
            }
            self.minute.1 += 1;
        }
        Ok(())
    }

    /// Whether a VM booting in `zone` now completes its startup script (sets its marker).
    pub(crate) fn startup_completes(&self, zone: &str) -> bool {
        !self.startup_fails.contains(zone)
    }

    /// A synchronous quota error for an insert in `region`, if one is injected.
    pub(crate) fn sync_quota(&self, region: &str) -> Option<ApiError> {
        self.quota_for(region, true).map(ApiError::quota_exceeded)
    }

    /// What an insert accepted in `zone`/`region` will run into.
    pub(crate) fn insert_fate(&self, zone: &str, region: &str) -> InsertFate {
        if let Some(q) = self.quota_for(region, false) {
            return InsertFate::Quota(q.clone());
        }
        if let Some(with_details) = self.stockout.get(zone) {
            return InsertFate::Stockout {
                with_details: *with_details,
            };
        }
        if self.never_running.contains(zone) {
            return InsertFate::Hang;
        }
        InsertFate::Boot
    }

    fn quota_for(&self, region: &str, sync: bool) -> Option<&QuotaSpec> {
        self.quotas
            .iter()
            .find(|(q, s)| *s == sync && q.region.as_deref().is_none_or(|r| r == region))
            .map(|(q, _)| q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_faults_wear_off() {
        let mut f = Faults::default();
        f.add(&GceFault::UnavailableNext { calls: 1 });
        f.add(&GceFault::RateLimitNext {
            calls: 1,
            resource_exhausted: true,
        });
        assert_eq!(f.on_call("r").map_err(|e| e.status().as_u16()), Err(503));
        assert_eq!(f.on_call("r").map_err(|e| e.status().as_u16()), Err(429));
        assert!(f.on_call("r").is_ok());
    }

    #[test]
    fn per_minute_bucket() {
        let mut f = Faults::default();
        f.add(&GceFault::RateLimitPerMinute { limit: 2 });
        let results: Vec<bool> = (0..3).map(|_| f.on_call("r").is_ok()).collect();
        // A minute boundary may fall between the calls; then all three pass.
        assert!(
            results == [true, true, false] || results == [true, true, true],
            "{results:?}"
        );
    }

    #[test]
    fn json_form() {
        let f: GceFault =
            serde_json::from_str(r#"{"kind":"stockout","zone":"z","with_details":true}"#)
                .unwrap_or(GceFault::Clear);
        assert_eq!(
            f,
            GceFault::Stockout {
                zone: "z".into(),
                with_details: true
            }
        );
        let q: GceFault = serde_json::from_str(r#"{"kind":"quota_exceeded","region":"r"}"#)
            .unwrap_or(GceFault::Clear);
        let mut faults = Faults::default();
        faults.add(&q);
        assert!(matches!(faults.insert_fate("z", "r"), InsertFate::Quota(_)));
        assert!(matches!(faults.insert_fate("z", "other"), InsertFate::Boot));
    }
}
