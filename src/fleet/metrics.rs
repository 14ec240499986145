//! The pools' telemetry on the injected registry: GitLab Runner's docker+machine series
//! (`gitlab_runner_autoscaling_*`, with its constant `executor="docker+machine"` label and its
//! `target_*` labels) and Flotilla's own (`flotilla_vm_*`, `flotilla_zone_cooling`,
//! `flotilla_reconcile_deletions_total`). One [`FleetMetrics`] per process, made by the manager;
//! each pool actor gets a [`PoolMetrics`] from it and reports its events there. Labels come only
//! from closed sets and the configuration (zones, project, machine type, short token): never a
//! VM name.

use super::FleetSettings;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    exponential_buckets, CounterVec, GaugeVec, Histogram, HistogramOpts, HistogramVec,
    IntCounterVec, IntGaugeVec, Opts, Registry,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// GitLab Runner's constant `executor` label of its docker+machine series.
pub const EXECUTOR: &str = "docker+machine";
/// GitLab Runner's target labels, in its order.
pub const TARGET_LABELS: [&str; 4] = [
    "target_zone",
    "target_region",
    "target_project",
    "target_machine_type",
];
/// Every value of `gitlab_runner_autoscaling_machine_states{state}`, GitLab Runner's order.
pub const MACHINE_STATES: [&str; 6] = [
    "acquired",
    "creating",
    "idle",
    "used",
    "removing",
    "stuck-on-removing",
];
/// Every value of `gitlab_runner_autoscaling_actions_total{action}`.
pub const ACTIONS: [&str; 4] = ["created", "creation-failed", "used", "removed"];
/// Every value of `flotilla_vm_creation_phase_seconds{phase}`.
pub const PHASES: [&str; 3] = ["insert", "running", "docker_ready"];
/// Every value of `flotilla_vm_creation_failures_total{reason}` (`CreateFailure::kind`).
pub const FAILURE_KINDS: [&str; 4] = ["stockout", "quota", "timeout", "other"];
/// Every value of `flotilla_vm_seconds_total{state}`.
pub const VM_TIME_STATES: [&str; 2] = ["idle", "busy"];
/// Every value of `flotilla_reconcile_deletions_total{phase}`.
pub const RECONCILE_PHASES: [&str; 2] = ["startup", "reconcile"];

/// How long each phase of one VM creation took.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CreatePhases {
    /// From the first insert attempt to Compute accepting it (rate-limit waits included).
    pub insert: Duration,
    /// From the accepted insert to the operation done (the instance RUNNING).
    pub running: Duration,
    /// From RUNNING to dockerd answering over mTLS (address lookup included).
    pub docker_ready: Duration,
}

/// The `target_*` label values of one zone of one pool.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Targets {
    zone: String,
    region: String,
    project: String,
    machine_type: String,
}

impl Targets {
    fn new(zone: &str, project: &str, machine_type: &str) -> Targets {
        Targets {
            zone: zone.to_string(),
            region: super::zones::region_of(zone).to_string(),
            project: project.to_string(),
            machine_type: machine_type.to_string(),
        }
    }

    fn values(&self) -> [&str; 4] {
        [
            self.zone.as_str(),
            self.region.as_str(),
            self.project.as_str(),
            self.machine_type.as_str(),
        ]
    }
}

/// Per pool (by runner label), per target tuple: the count of VMs in each of
/// [`MACHINE_STATES`]. A std `Mutex`: held for a copy, never across an await.
type StateTable = BTreeMap<String, BTreeMap<Targets, [u32; 6]>>;

/// `gitlab_runner_autoscaling_machine_states`: summed over the pools at scrape time, as GitLab
/// Runner's collector does; with no pool at all it reports GitLab Runner's empty-target bucket
/// at 0, so the series always exist.
#[derive(Clone)]
struct StatesCollector {
    template: GaugeVec,
    table: Arc<Mutex<StateTable>>,
}

fn states_opts() -> Opts {
    Opts::new(
        "gitlab_runner_autoscaling_machine_states",
        "The current number of machines per state in this provider.",
    )
    .const_label("executor", EXECUTOR)
}

fn state_labels() -> Vec<&'static str> {
    let mut labels = vec!["state"];
    labels.extend(TARGET_LABELS);
    labels
}

impl Collector for StatesCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.template.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut sums: BTreeMap<Targets, [u32; 6]> = BTreeMap::new();
        {
            let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
            for pool in table.values() {
                for (targets, counts) in pool {
                    let sum = sums.entry(targets.clone()).or_default();
                    for (s, c) in sum.iter_mut().zip(counts) {
                        *s += c;
                    }
                }
            }
        }
        if sums.is_empty() {
            sums.insert(Targets::default(), [0; 6]);
        }
        let Ok(gauge) = GaugeVec::new(states_opts(), &state_labels()) else {
            return Vec::new();
        };
        for (targets, counts) in &sums {
            let [zone, region, project, machine_type] = targets.values();
            for (state, count) in MACHINE_STATES.iter().zip(counts) {
                gauge
                    .with_label_values(&[state, zone, region, project, machine_type])
                    .set(f64::from(*count));
            }
        }
        gauge.collect()
    }
}

/// Every pool's series. Cheap to clone (shared handles).
#[derive(Clone)]
pub struct FleetMetrics {
    actions: IntCounterVec,
    creation: Histogram,
    failed_creation: Histogram,
    removal: Histogram,
    phases: HistogramVec,
    creation_failures: IntCounterVec,
    vm_seconds: CounterVec,
    reconcile_deletions: IntCounterVec,
    zone_cooling: IntGaugeVec,
    /// Desired idle VMs, observed arrival rate and time to ready, per runner.
    demand: [GaugeVec; 3],
    states: StatesCollector,
    /// Numbers pools, so a pool a reload starts for the same runner never shares a key with
    /// the one it replaces (which forgets its own entry when it stops).
    next_pool: Arc<std::sync::atomic::AtomicU64>,
}

impl FleetMetrics {
    /// Creates the series and registers them on `registry` (once per registry).
    pub fn register(registry: &Registry) -> Result<FleetMetrics, prometheus::Error> {
        let mut action_labels = vec!["action"];
        action_labels.extend(TARGET_LABELS);
        let removal_buckets = vec![1.0, 3.0, 5.0, 10.0, 30.0, 50.0, 60.0, 80.0, 90.0, 120.0];
        let m = FleetMetrics {
            actions: IntCounterVec::new(
                Opts::new(
                    "gitlab_runner_autoscaling_actions_total",
                    "The total number of actions executed by the provider.",
                )
                .const_label("executor", EXECUTOR),
                &action_labels,
            )?,
            creation: Histogram::with_opts(
                HistogramOpts::new(
                    "gitlab_runner_autoscaling_machine_creation_duration_seconds",
                    "Histogram of machine creation time.",
                )
                .const_label("executor", EXECUTOR)
                .buckets(exponential_buckets(30.0, 1.25, 10)?),
            )?,
            failed_creation: Histogram::with_opts(
                HistogramOpts::new(
                    "gitlab_runner_autoscaling_machine_failed_creation_duration_seconds",
                    "Histogram of machine failed creation timings",
                )
                .const_label("executor", EXECUTOR)
                .buckets(removal_buckets.clone()),
            )?,
            removal: Histogram::with_opts(
                HistogramOpts::new(
                    "gitlab_runner_autoscaling_machine_removal_duration_seconds",
                    "Histogram of machine removal time.",
                )
                .const_label("executor", EXECUTOR)
                .buckets(removal_buckets),
            )?,
            phases: HistogramVec::new(
                HistogramOpts::new(
                    "flotilla_vm_creation_phase_seconds",
                    "Time of each VM creation phase (insert accepted, instance running, dockerd ready) by zone.",
                )
                .buckets(vec![0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0]),
                &["zone", "phase"],
            )?,
            creation_failures: IntCounterVec::new(
                Opts::new(
                    "flotilla_vm_creation_failures_total",
                    "VM creations that failed, by zone and reason (stockout, quota, timeout, other).",
                ),
                &["zone", "reason"],
            )?,
            vm_seconds: CounterVec::new(
                Opts::new(
                    "flotilla_vm_seconds_total",
                    "VM-seconds spent idle (idle or acquired) and busy (running a job) per runner: what the fleet costs and what it earns.",
                ),
                &["runner", "state"],
            )?,
            reconcile_deletions: IntCounterVec::new(
                Opts::new(
                    "flotilla_reconcile_deletions_total",
                    "VMs with this manager's label that no pool held and were deleted (leaks found), at startup or by a periodic reconcile.",
                ),
                &["runner", "phase"],
            )?,
            zone_cooling: IntGaugeVec::new(
                Opts::new(
                    "flotilla_zone_cooling",
                    "1 while a zone is cooling down after a stockout, quota error or creation timeout (no VM is created there), else 0.",
                ),
                &["runner", "zone"],
            )?,
            demand: [
                GaugeVec::new(
                    Opts::new(
                        "flotilla_fleet_desired_idle",
                        "VMs the pool keeps available (idle, creating or acquired): IdleCount in force, or the adaptive policy's target.",
                    ),
                    &["runner"],
                )?,
                GaugeVec::new(
                    Opts::new(
                        "flotilla_fleet_arrival_rate",
                        "Jobs per second asking the pool for a VM (the larger of the 2- and 10-minute rates).",
                    ),
                    &["runner"],
                )?,
                GaugeVec::new(
                    Opts::new(
                        "flotilla_fleet_time_to_ready_seconds",
                        "Mean time from insert to dockerd answering of the pool's recent VMs (60 before the first).",
                    ),
                    &["runner"],
                )?,
            ],
            states: StatesCollector {
                template: GaugeVec::new(states_opts(), &state_labels())?,
                table: Arc::default(),
            },
            next_pool: Arc::default(),
        };
        registry.register(Box::new(m.actions.clone()))?;
        registry.register(Box::new(m.creation.clone()))?;
        registry.register(Box::new(m.failed_creation.clone()))?;
        registry.register(Box::new(m.removal.clone()))?;
        registry.register(Box::new(m.phases.clone()))?;
        registry.register(Box::new(m.creation_failures.clone()))?;
        registry.register(Box::new(m.vm_seconds.clone()))?;
        registry.register(Box::new(m.reconcile_deletions.clone()))?;
        registry.register(Box::new(m.zone_cooling.clone()))?;
        registry.register(Box::new(m.states.clone()))?;
        for g in &m.demand {
            registry.register(Box::new(g.clone()))?;
        }
        Ok(m)
    }

    /// Series on a private registry nobody scrapes (pools started without the manager's).
    pub fn unregistered() -> FleetMetrics {
        // Constant names and labels on an empty registry: registration cannot fail.
        FleetMetrics::register(&Registry::new()).expect("fleet metrics on a fresh registry")
    }

    /// The handle of one pool; creates its series with closed label sets at 0.
    pub fn pool(&self, s: &FleetSettings) -> PoolMetrics {
        let n = self
            .next_pool
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pool = PoolMetrics {
            m: self.clone(),
            key: format!("{}#{n}", s.runner_label),
            runner: s.short_token.clone(),
            project: s.gce.project.clone(),
            machine_type: s.gce.machine_type.clone(),
            zones: s.gce.zones.clone(),
        };
        for zone in &pool.zones {
            let t = pool.targets(zone);
            let [z, r, p, mt] = t.values();
            for action in ACTIONS {
                self.actions.with_label_values(&[action, z, r, p, mt]);
            }
            for phase in PHASES {
                self.phases.with_label_values(&[zone, phase]);
            }
            for kind in FAILURE_KINDS {
                self.creation_failures.with_label_values(&[zone, kind]);
            }
            self.zone_cooling.with_label_values(&[&pool.runner, zone]);
        }
        for state in VM_TIME_STATES {
            self.vm_seconds.with_label_values(&[&pool.runner, state]);
        }
        for phase in RECONCILE_PHASES {
            self.reconcile_deletions
                .with_label_values(&[&pool.runner, phase]);
        }
        pool
    }
}

/// One pool's view of [`FleetMetrics`]: its runner's short token and target labels. Owned by
/// the pool actor.
pub struct PoolMetrics {
    m: FleetMetrics,
    /// The pool's key in the states table (its runner label and number).
    key: String,
    runner: String,
    project: String,
    machine_type: String,
    zones: Vec<String>,
}

impl PoolMetrics {
    fn targets(&self, zone: &str) -> Targets {
        Targets::new(zone, &self.project, &self.machine_type)
    }

    fn action(&self, action: &str, zone: &str) {
        let t = self.targets(zone);
        let [z, r, p, mt] = t.values();
        self.m
            .actions
            .with_label_values(&[action, z, r, p, mt])
            .inc();
    }

    /// A VM became ready `took` after its creation started.
    pub fn created(&self, zone: &str, took: Duration, phases: &CreatePhases) {
        self.action("created", zone);
        self.m.creation.observe(took.as_secs_f64());
        for (phase, d) in PHASES
            .iter()
            .zip([phases.insert, phases.running, phases.docker_ready])
        {
            self.m
                .phases
                .with_label_values(&[zone, phase])
                .observe(d.as_secs_f64());
        }
    }

    /// A creation failed (`kind`: one of [`FAILURE_KINDS`]) after `took`.
    pub fn creation_failed(&self, zone: &str, kind: &'static str, took: Duration) {
        self.action("creation-failed", zone);
        self.m.failed_creation.observe(took.as_secs_f64());
        self.m
            .creation_failures
            .with_label_values(&[zone, kind])
            .inc();
    }

    /// A VM started running a job.
    pub fn used(&self, zone: &str) {
        self.action("used", zone);
    }

    /// A held VM's deletion was confirmed, `took` after the removal started.
    pub fn removed(&self, zone: &str, took: Option<Duration>) {
        self.action("removed", zone);
        if let Some(took) = took {
            self.m.removal.observe(took.as_secs_f64());
        }
    }

    /// A VM no pool held is being deleted (`startup` before the pool warmed, else `reconcile`).
    pub fn orphan_deleted(&self, startup: bool) {
        let phase = if startup { "startup" } else { "reconcile" };
        self.m
            .reconcile_deletions
            .with_label_values(&[&self.runner, phase])
            .inc();
    }

    /// Adds VM time: `idle` seconds (idle or acquired VMs), `busy` seconds (VMs running a job).
    pub fn accrue(&self, idle: f64, busy: f64) {
        if idle > 0.0 {
            self.m
                .vm_seconds
                .with_label_values(&[&self.runner, "idle"])
                .inc_by(idle);
        }
        if busy > 0.0 {
            self.m
                .vm_seconds
                .with_label_values(&[&self.runner, "busy"])
                .inc_by(busy);
        }
    }

    /// Publishes the pool's table: each VM's zone and state name (one of [`MACHINE_STATES`]),
    /// and the zones cooling now.
    pub fn publish<'a>(
        &self,
        vms: impl Iterator<Item = (&'a str, &'static str)>,
        cooling: &[(String, Duration)],
    ) {
        // Counted by zone name first: the label set is built once per zone, not once per VM
        // (this runs after every planning round, over every VM).
        let mut by_zone: BTreeMap<&str, [u32; 6]> =
            self.zones.iter().map(|z| (z.as_str(), [0; 6])).collect();
        for (zone, state) in vms {
            let Some(i) = MACHINE_STATES.iter().position(|s| *s == state) else {
                continue;
            };
            by_zone.entry(zone).or_default()[i] += 1;
        }
        let counts: BTreeMap<Targets, [u32; 6]> = by_zone
            .into_iter()
            .map(|(zone, n)| (self.targets(zone), n))
            .collect();
        self.m
            .states
            .table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(self.key.clone(), counts);
        for zone in &self.zones {
            let cool = cooling.iter().any(|(z, _)| z == zone);
            self.m
                .zone_cooling
                .with_label_values(&[&self.runner, zone])
                .set(i64::from(cool));
        }
    }

    /// The demand estimate of a planning round; `desired` is the IdleCount in force.
    pub fn demand(&self, desired: u32, e: &super::adaptive::Estimate) {
        let [d, r, t] = &self.m.demand;
        d.with_label_values(&[&self.runner]).set(f64::from(desired));
        r.with_label_values(&[&self.runner]).set(e.arrival_rate);
        t.with_label_values(&[&self.runner])
            .set(e.time_to_ready.as_secs_f64());
    }

    /// The pool stopped: its VMs no longer count.
    pub fn forget(&self) {
        self.m
            .states
            .table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(registry: &Registry) -> String {
        prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .expect("encodes")
    }

    #[test]
    fn states_always_report_six_states_and_sum_pools() {
        let registry = Registry::new();
        let m = FleetMetrics::register(&registry).expect("registers");
        let t = text(&registry);
        for state in MACHINE_STATES {
            assert!(
                t.contains(&format!("gitlab_runner_autoscaling_machine_states{{executor=\"docker+machine\",state=\"{state}\",target_machine_type=\"\"")),
                "{state} missing in:\n{t}"
            );
        }
        let mk = |label: &str| PoolMetrics {
            m: m.clone(),
            key: label.into(),
            runner: label.into(),
            project: "p".into(),
            machine_type: "e2-small".into(),
            zones: vec!["us-central1-a".into()],
        };
        let (a, b) = (mk("a"), mk("b"));
        a.publish(
            [("us-central1-a", "idle"), ("us-central1-a", "acquired")].into_iter(),
            &[],
        );
        b.publish([("us-central1-a", "idle")].into_iter(), &[]);
        let t = text(&registry);
        assert!(t.contains("state=\"idle\",target_machine_type=\"e2-small\",target_project=\"p\",target_region=\"us-central1\",target_zone=\"us-central1-a\"} 2"), "{t}");
        assert!(t.contains("state=\"stuck-on-removing\",target_machine_type=\"e2-small\",target_project=\"p\",target_region=\"us-central1\",target_zone=\"us-central1-a\"} 0"), "{t}");
        a.forget();
        let t = text(&registry);
        assert!(t.contains("state=\"idle\",target_machine_type=\"e2-small\",target_project=\"p\",target_region=\"us-central1\",target_zone=\"us-central1-a\"} 1"), "{t}");
    }

    #[test]
    fn events_count_with_target_labels() {
        let registry = Registry::new();
        let m = FleetMetrics::register(&registry).expect("registers");
        let p = PoolMetrics {
            m: m.clone(),
            key: "k".into(),
            runner: "abcdefghi".into(),
            project: "proj".into(),
            machine_type: "n2-standard-2".into(),
            zones: vec!["europe-west1-b".into()],
        };
        p.created(
            "europe-west1-b",
            Duration::from_secs(40),
            &CreatePhases::default(),
        );
        p.creation_failed("europe-west1-b", "stockout", Duration::from_secs(2));
        p.accrue(1.5, 2.0);
        let t = text(&registry);
        assert!(t.contains("gitlab_runner_autoscaling_actions_total{action=\"created\",executor=\"docker+machine\",target_machine_type=\"n2-standard-2\",target_project=\"proj\",target_region=\"europe-west1\",target_zone=\"europe-west1-b\"} 1"), "{t}");
        assert!(t.contains("flotilla_vm_creation_failures_total{reason=\"stockout\",zone=\"europe-west1-b\"} 1"), "{t}");
        assert!(
            t.contains("flotilla_vm_seconds_total{runner=\"abcdefghi\",state=\"busy\"} 2"),
            "{t}"
        );
        assert!(t.contains("gitlab_runner_autoscaling_machine_creation_duration_seconds_count{executor=\"docker+machine\"} 1"), "{t}");
    }
}
