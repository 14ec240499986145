//! One simulated day for one policy: the real pool (`flotilla::fleet::start`, its actor,
//! policy, zones and rate-limit handling) on the in-process cloud, on a paused tokio clock,
//! fed with the day's arrivals the way GitLab hands jobs out to Flotilla's runner loop: with a
//! static IdleCount > 0 a job is taken only with an idle VM leased (one at a time, in arrival
//! order, the backlog reported as `job_info.queue_size`); with IdleCount = 0 or the adaptive
//! policy each job is taken on arrival and asks the pool for a VM (`lease_on_demand`).

use crate::cloud::{SimCloud, SimConnector};
use chrono::{DateTime, Utc};
use flotilla::config::Config;
use flotilla::fleet::{self, FleetSettings, RunnerRegistry, WallClock};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use testkit::arrivals::Arrival;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The pool runs this long before the first arrival (a static pool warms to IdleCount).
pub const WARMUP: Duration = Duration::from_secs(600);
/// Compute API calls per minute (the client-side limiter, `api_rate_per_minute`).
pub const API_RATE_PER_MINUTE: u32 = 600;
/// `MaxGrowthRate`.
pub const MAX_GROWTH_RATE: u32 = 50;
/// The SLO: a job waits at most this long for its VM …
pub const SLO_WAIT_S: f64 = 10.0;
/// … for at least this share of jobs.
pub const SLO_SHARE: f64 = 0.95;

/// A warm-pool policy under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// `IdleCount = k`, static.
    Static(u32),
    /// `IdleCountPolicy = "adaptive"` with IdleCountMin = 0 and IdleCount as the ceiling.
    Adaptive { ceiling: u32 },
}

impl Policy {
    /// The name in the report.
    pub fn name(&self) -> String {
        match self {
            Policy::Static(k) => format!("static IdleCount={k}"),
            Policy::Adaptive { .. } => "adaptive".to_string(),
        }
    }
}

/// What one day measured.
#[derive(Debug, Clone)]
pub struct DayResult {
    pub policy: Policy,
    /// Arrival → VM leased, seconds, one per job.
    pub waits: Vec<f64>,
    /// VM-seconds from insert to deletion (within the measured window), less job time.
    pub idle_vm_s: f64,
    /// Every insert.
    pub creations: usize,
    /// The most VMs at once.
    pub peak_vms: usize,
    /// Idle VM-seconds by cause: booting (insert → dockerd answering), ready and waiting for
    /// the job that used it, ready and never used (drained).
    pub parts: [f64; 3],
    /// VMs deleted without running a job.
    pub unused: usize,
    /// Ready-idle VM-seconds (used and unused) per hour of the day.
    pub hourly: Vec<f64>,
    /// Late jobs / jobs per hour of the day.
    pub late_hourly: Vec<String>,
}

impl DayResult {
    /// The `p`-quantile of the waits (nearest rank).
    pub fn wait_quantile(&self, p: f64) -> f64 {
        let mut w = self.waits.clone();
        w.sort_by(f64::total_cmp);
        if w.is_empty() {
            return f64::NAN;
        }
        let i = ((w.len() as f64 * p).ceil() as usize).clamp(1, w.len()) - 1;
        w[i]
    }

    /// Share of jobs that waited at most [`SLO_WAIT_S`].
    pub fn within_slo(&self) -> f64 {
        let n = self.waits.iter().filter(|w| **w <= SLO_WAIT_S).count();
        n as f64 / self.waits.len().max(1) as f64
    }

    /// Whether the day met the SLO.
    pub fn meets_slo(&self) -> bool {
        self.within_slo() >= SLO_SHARE
    }
}

fn config_text(policy: Policy) -> String {
    let (idle_count, extra) = match policy {
        Policy::Static(k) => (k, String::new()),
        Policy::Adaptive { ceiling } => (
            ceiling,
            "IdleCountMin = 0\nIdleCountPolicy = \"adaptive\"\n".to_string(),
        ),
    };
    // Built, not written out: no token-looking literal in the tree. Fixed, so that the VM names
    // (derived from it) and hence every run of a day are the same; the simulation never sends it.
    let token = format!("glrt-t1_sim{:017}", 0);
    format!(
        r#"concurrent = 100000
[[runners]]
name = "autoscale-day"
url = "http://127.0.0.1:1"
token = "{token}"
executor = "docker+machine"
limit = 100000
[runners.docker]
image = "alpine:3"
[runners.machine]
IdleCount = {idle_count}
{extra}IdleTime = 600
MaxBuilds = 1
MaxGrowthRate = {MAX_GROWTH_RATE}
MachineName = "sim-%s"
[runners.gce]
project = "sim-project"
zones = ["us-central1-a", "us-central1-b", "us-central1-c"]
use_internal_ip = true
api_rate_per_minute = {API_RATE_PER_MINUTE}
"#
    )
}

/// The pool's settings for `policy`, its periods read on a clock starting at `day_start`.
fn settings(policy: Policy, clock: WallClock) -> Result<FleetSettings, String> {
    let config = Config::from_toml_str(&config_text(policy), "autoscale-day.toml")
        .map_err(|e| format!("simulation config invalid: {e}"))?
        .config;
    let runner = config.runners.first().ok_or("no runner in the config")?;
    let mut s =
        FleetSettings::for_runner(&config, runner, "sim-manager").map_err(|e| e.to_string())?;
    s.clock = clock;
    Ok(s)
}

/// Simulates `arrivals` under `policy` on a fresh paused runtime.
pub fn simulate(
    policy: Policy,
    arrivals: &[Arrival],
    seed: u64,
    day_start: DateTime<Utc>,
) -> Result<DayResult, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(run(policy, arrivals, seed, day_start))
}

async fn run(
    policy: Policy,
    arrivals: &[Arrival],
    seed: u64,
    day_start: DateTime<Utc>,
) -> Result<DayResult, String> {
    let warmup = chrono::Duration::from_std(WARMUP).map_err(|e| e.to_string())?;
    let settings = settings(policy, WallClock::starting_at(day_start - warmup))?;
    let cloud = Arc::new(SimCloud::new(seed, API_RATE_PER_MINUTE));
    let docker =
        bollard::Docker::connect_with_http("http://127.0.0.1:1", 4, bollard::API_DEFAULT_VERSION)
            .map_err(|e| e.to_string())?;
    let connector = Arc::new(SimConnector {
        cloud: cloud.clone(),
        docker,
    });
    let tracker = TaskTracker::new();
    let cancel = CancellationToken::new();
    let pool = fleet::start(
        settings,
        cloud.clone(),
        connector,
        RunnerRegistry::new(),
        &tracker,
        cancel.clone(),
    )
    .map_err(|e| e.to_string())?;
    let t0 = Instant::now() + WARMUP;
    let waits: Arc<Mutex<Vec<f64>>> = Arc::default();
    let leases: Leases = Arc::default();
    let jobs = TaskTracker::new();
    match policy {
        Policy::Static(k) if k > 0 => {
            lease_first(&pool, arrivals, t0, &waits, &leases, &jobs).await
        }
        _ => on_demand(&pool, arrivals, t0, &waits, &leases, &jobs).await,
    }
    jobs.close();
    jobs.wait().await;
    let end = Instant::now();
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
    let busy: f64 = arrivals.iter().map(|a| a.duration).sum();
    let alive: f64 = cloud
        .ledger()
        .iter()
        .map(|e| {
            let from = e.inserted.max(t0);
            let to = e.deleted.unwrap_or(end).min(end);
            to.saturating_duration_since(from).as_secs_f64()
        })
        .sum();
    let waits = std::mem::take(&mut *waits.lock().unwrap_or_else(|p| p.into_inner()));
    let log = std::mem::take(&mut *leases.lock().unwrap_or_else(|p| p.into_inner()));
    let leases = log.leases;
    let span = |a: Instant, b: Instant| {
        b.min(end)
            .saturating_duration_since(a.max(t0))
            .as_secs_f64()
    };
    let mut parts = [0.0; 3];
    let mut unused = 0;
    let mut hourly = vec![0.0; 25];
    for e in cloud.ledger() {
        let gone = e.deleted.unwrap_or(end);
        parts[0] += span(e.inserted, e.ready.min(gone));
        let (i, until) = match leases.get(&e.name) {
            Some(at) => (1, *at),
            None => {
                unused += 1;
                (2, gone)
            }
        };
        parts[i] += span(e.ready, until);
        // Per hour of the day (from t0).
        let (mut a, b) = (e.ready.max(t0), until.min(end));
        while a < b {
            let h = a.duration_since(t0).as_secs() / 3600;
            let h_end = t0 + Duration::from_secs((h + 1) * 3600);
            let to = b.min(h_end);
            hourly[(h as usize).min(24)] += to.duration_since(a).as_secs_f64();
            a = to;
        }
    }
    Ok(DayResult {
        late_hourly: log
            .late
            .iter()
            .zip(&log.jobs)
            .map(|(l, j)| format!("{l}/{j}"))
            .collect(),
        parts,
        unused,
        hourly,
        policy,
        waits,
        idle_vm_s: alive - busy,
        creations: cloud.ledger().len(),
        peak_vms: cloud.peak(),
    })
}

/// What the breakdown is made from: when each VM got its job (by name), and jobs and late
/// jobs per hour of the day.
#[derive(Default)]
struct Log {
    leases: std::collections::HashMap<String, Instant>,
    jobs: Vec<u32>,
    late: Vec<u32>,
}

/// The log, shared by the jobs.
type Leases = Arc<Mutex<Log>>;

fn record(waits: &Mutex<Vec<f64>>, arrived: Instant, leases: &Leases, vm: &str, t0: Instant) {
    let w = Instant::now().duration_since(arrived).as_secs_f64();
    waits.lock().unwrap_or_else(|p| p.into_inner()).push(w);
    let mut log = leases.lock().unwrap_or_else(|p| p.into_inner());
    log.leases.insert(vm.to_string(), Instant::now());
    let h = (arrived.saturating_duration_since(t0).as_secs() / 3600).min(24) as usize;
    if log.jobs.len() < 25 {
        log.jobs = vec![0; 25];
        log.late = vec![0; 25];
    }
    log.jobs[h] += 1;
    log.late[h] += u32::from(w > SLO_WAIT_S);
}

/// IdleCount > 0: GitLab holds each job until a request comes with an idle VM leased.
async fn lease_first(
    pool: &fleet::FleetHandle,
    arrivals: &[Arrival],
    t0: Instant,
    waits: &Arc<Mutex<Vec<f64>>>,
    leases: &Leases,
    jobs: &TaskTracker,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, f64)>();
    let queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let feeder = {
        let arrivals = arrivals.to_vec();
        let queued = queued.clone();
        tokio::spawn(async move {
            for a in arrivals {
                let at = t0 + Duration::from_secs_f64(a.at);
                tokio::time::sleep_until(at).await;
                queued.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = tx.send((at, a.duration));
            }
        })
    };
    while let Some((arrived, duration)) = rx.recv().await {
        let lease = loop {
            if let Some(lease) = pool.try_lease().await {
                break lease;
            }
            pool.idle_available().await;
        };
        let left = queued.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) - 1;
        pool.mark_used(&lease);
        // GitLab's queue_size counts the job handed out too; the runner reports the rest.
        pool.observe_backlog(left as u64);
        record(waits, arrived, leases, &lease.name, t0);
        let pool = pool.clone();
        jobs.spawn(async move {
            tokio::time::sleep(Duration::from_secs_f64(duration)).await;
            pool.release(lease, true);
        });
    }
    let _ = feeder.await;
}

/// IdleCount = 0 or adaptive: each job is taken on arrival and waits for a VM from the pool.
async fn on_demand(
    pool: &fleet::FleetHandle,
    arrivals: &[Arrival],
    t0: Instant,
    waits: &Arc<Mutex<Vec<f64>>>,
    leases: &Leases,
    jobs: &TaskTracker,
) {
    for a in arrivals {
        let at = t0 + Duration::from_secs_f64(a.at);
        tokio::time::sleep_until(at).await;
        let (pool, waits, leases, duration) =
            (pool.clone(), waits.clone(), leases.clone(), a.duration);
        jobs.spawn(async move {
            match pool.lease_on_demand(CancellationToken::new()).await {
                Ok(lease) => {
                    record(&waits, at, &leases, &lease.name, t0);
                    tokio::time::sleep(Duration::from_secs_f64(duration)).await;
                    pool.release(lease, true);
                }
                Err(e) => eprintln!("a job got no VM: {e}"),
            }
        });
    }
}
