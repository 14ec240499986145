//! The GCE fleet benchmark (not a test): prints numbers for BENCHMARKS.md.
//!
//! Scenario: a fake Compute Engine whose VMs boot in 30 s, one docker+machine runner with
//! `concurrent` 40, `limit` 40, IdleCount 5, IdleTime 60 s, MaxGrowthRate 30, MaxBuilds 1; three
//! bursts of 30 jobs two minutes apart over a background of one job every 10 s (from the first
//! burst to two minutes after the last); each job a real container that prints a marker, then
//! sleeps 20 s. Run twice back to back, queue-aware scale-out on (`[runners.gce]
//! queue_aware_scaling = true`) then off, then a third time with the adaptive warm pool
//! (`IdleCountPolicy = "adaptive"`, IdleCount 40 as its ceiling, IdleCountMin 0, queue-aware on),
//! each with fresh fakes and a fresh in-process manager.
//!
//! Printed per run: job wait (enqueue → the marker, the script's first output, entering the
//! manager's trace buffer) p50/p95/max; idle VM-seconds per job (the fleet's idle VMs integrated
//! over the scenario, see [`Sampler`]); VMs created; GCE API calls per created VM (every call but
//! the shared list calls, over warm-up, scenario and shutdown) with the list calls apart. Then
//! MET/NOT MET verdicts: with queue-aware on, wait p95 ≤ one boot + 15 s and at least 2× better
//! than off; ≤ 3 GCE calls per VM lifetime (insert, wait, delete: the address comes from the
//! shared listing and deletions are confirmed by a later one).
//!
//! Run: `cargo bench --bench fleet_bursts` (~20 min). Env: `BENCH_SCALE=0.25` shrinks every
//! duration (boot, gaps, job length, IdleTime) by that factor, the burst size stays (a burst of
//! 30 against IdleCount 5 is what queue-aware scale-out is about; `BENCH_BURST=8` changes it);
//! `BENCH_MODES=on`, `off` or `adaptive` (or a comma-separated list) runs those modes only;
//! `BENCH_LOG=info` shows the manager's logs.
// Benchmarks time the wall clock on purpose (clippy.toml bans std's Instant in src/).
#![allow(clippy::disallowed_types)]

use flotilla::config::Config;
use flotilla::lifecycle::Control;
use flotilla::manager::Hooks;
use flotilla::trace::JobTrace;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testkit::{FakeGce, FakeGceOptions, FakeGitlab, FakeGitlabOptions, JobState, ZoneSpec};
use tokio::sync::mpsc;

const IMAGE: &str = "flotilla-test/busybox:latest";
/// What the script's first command prints; its command line (`echo ...-$((6*7))`) does not
/// hold it, so the marker is the script's first output, not the echoed command.
const MARKER: &str = "FLEET-BENCH-42";
const ZONES: [&str; 2] = ["us-central1-a", "us-central1-b"];
const IDLE_COUNT: u32 = 5;
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// The scenario's durations and sizes at a given scale.
#[derive(Debug, Clone, Copy)]
struct Params {
    scale: f64,
    boot: Duration,
    burst_every: Duration,
    bursts: u32,
    burst_size: u32,
    background_every: Duration,
    /// Background jobs run over `[0, background_until)`.
    background_until: Duration,
    job: Duration,
    idle_time: Duration,
}

impl Params {
    fn new(scale: f64, burst_size: u32) -> Params {
        let s = |secs: f64| Duration::from_secs_f64(secs * scale);
        Params {
            scale,
            boot: s(30.0),
            burst_every: s(120.0),
            bursts: 3,
            burst_size,
            background_every: s(10.0),
            background_until: s(360.0),
            job: s(20.0),
            idle_time: s(60.0),
        }
    }

    /// The wait target: one boot + 15 s (scaled).
    fn wait_target(&self) -> Duration {
        self.boot + Duration::from_secs_f64(15.0 * self.scale)
    }

    /// (offset from the start, is a burst job) of every job, in time order.
    fn schedule(&self) -> Vec<(Duration, bool)> {
        let mut out = Vec::new();
        for b in 0..self.bursts {
            for _ in 0..self.burst_size {
                out.push((self.burst_every * b, true));
            }
        }
        let mut t = Duration::ZERO;
        while t < self.background_until {
            out.push((t, false));
            t += self.background_every;
        }
        out.sort_by_key(|(at, burst)| (*at, !*burst));
        out
    }
}

/// What one mode measured.
struct Outcome {
    /// `on`, `off` or `adaptive`.
    mode: &'static str,
    jobs: usize,
    failed: usize,
    /// Enqueue → marker, seconds: (burst jobs, background jobs).
    waits: (Vec<f64>, Vec<f64>),
    /// Enqueue → handed out by the fake GitLab, seconds (every measured job).
    handout: Vec<f64>,
    /// Handed out → marker, seconds (every measured job).
    start: Vec<f64>,
    sampled: Sampled,
    scenario_secs: f64,
    calls: BTreeMap<String, usize>,
    failed_calls: usize,
    left_over: usize,
}

/// The sampler's integrals over the scenario.
#[derive(Debug, Default, Clone, Copy)]
struct Sampled {
    idle_vm_secs: f64,
    running_vm_secs: f64,
    peak_running: usize,
    peak_instances: usize,
}

/// Integrates the fleet's idle VMs: every [`SAMPLE_EVERY`], RUNNING instances of the fake GCE
/// minus jobs running (handed out by the fake GitLab, not finished), as a step function. With
/// IdleCount > 0 a job is only requested with a VM leased, so every running job holds one
/// RUNNING VM; what is left is RUNNING with no job: booted but not yet pinged, idle, leased to
/// a request in flight, or finished and not yet deleted.
struct Sampler {
    jobs: Arc<Mutex<Vec<i64>>>,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Sampled>,
}

impl Sampler {
    fn start(gce: Arc<FakeGce>, gitlab: testkit::GitlabHandle) -> Sampler {
        let jobs: Arc<Mutex<Vec<i64>>> = Arc::default();
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn({
            let (jobs, stop) = (jobs.clone(), stop.clone());
            async move {
                let mut out = Sampled::default();
                let mut last = Instant::now();
                let mut tick = tokio::time::interval(SAMPLE_EVERY);
                let mut done = std::collections::HashSet::new();
                loop {
                    let stopping = tokio::select! {
                        _ = tick.tick() => false,
                        _ = stop.cancelled() => true,
                    };
                    let instances = gce.instances();
                    let running = instances.iter().filter(|i| i.status == "RUNNING").count();
                    let ids: Vec<i64> = jobs.lock().unwrap().clone();
                    let mut busy = 0usize;
                    for id in ids {
                        if done.contains(&id) {
                            continue;
                        }
                        let Some(rec) = gitlab.job(id) else { continue };
                        if rec.state.is_finished() {
                            done.insert(id);
                        } else if rec.handed_out_at.is_some() {
                            busy += 1;
                        }
                    }
                    let now = Instant::now();
                    let dt = now.duration_since(last).as_secs_f64();
                    last = now;
                    out.idle_vm_secs += running.saturating_sub(busy) as f64 * dt;
                    out.running_vm_secs += running as f64 * dt;
                    out.peak_running = out.peak_running.max(running);
                    out.peak_instances = out.peak_instances.max(instances.len());
                    if stopping {
                        return out;
                    }
                }
            }
        });
        Sampler { jobs, stop, task }
    }

    fn track(&self, id: i64) {
        self.jobs.lock().unwrap().push(id);
    }

    async fn finish(self) -> Sampled {
        self.stop.cancel();
        self.task.await.expect("sampler")
    }
}

/// When each job's marker entered the manager's trace buffer, filled by watcher tasks.
type Markers = Arc<Mutex<HashMap<i64, Instant>>>;

/// Hooks that start a marker watcher for every job the manager receives.
fn hooks(markers: &Markers) -> Hooks {
    let markers = markers.clone();
    Hooks {
        on_job_trace: Some(Arc::new(move |id, trace: &JobTrace| {
            let (markers, trace) = (markers.clone(), trace.clone());
            tokio::spawn(async move {
                if let Some(at) = marker_seen(&trace).await {
                    markers.lock().unwrap().insert(id, at);
                }
            });
        })),
        ..Default::default()
    }
}

/// Waits until the trace holds [`MARKER`], rescanning only the new tail; `None` if the trace
/// ends without it.
async fn marker_seen(trace: &JobTrace) -> Option<Instant> {
    let mut rx = trace.subscribe();
    let mut scanned = 0u64;
    loop {
        let len = trace.len();
        if len > scanned {
            let from = scanned.saturating_sub(MARKER.len() as u64);
            let bytes = trace
                .read_at(from, (len - from) as usize)
                .unwrap_or_default();
            if bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()) {
                return Some(Instant::now());
            }
            scanned = len;
        }
        rx.changed().await.ok()?;
    }
}

fn config_text(
    p: &Params,
    queue_aware: bool,
    adaptive: bool,
    gitlab: &FakeGitlab,
    token: &str,
    gce: &FakeGce,
    state: &std::path::Path,
) -> String {
    format!(
        r#"concurrent = 40
check_interval = 3
log_level = "warn"
state_dir = "{state}"
manager_id = "bench-{id:08x}"
[[runners]]
name = "fleet-bench"
url = "{url}"
token = "{token}"
executor = "docker+machine"
limit = 40
[runners.docker]
image = "{IMAGE}"
pull_policy = ["if-not-present"]
network_mode = "host"
[runners.machine]
{idle}
IdleTime = {idle_time}
MaxBuilds = 1
MaxGrowthRate = 30
MachineName = "bench-%s"
[runners.gce]
project = "{project}"
zones = ["{z0}", "{z1}"]
endpoint = "{endpoint}"
create_timeout = 300
queue_aware_scaling = {queue_aware}
"#,
        state = state.display(),
        id = rand::random::<u32>(),
        url = gitlab.url(),
        idle_time = p.idle_time.as_secs(),
        idle = if adaptive {
            "IdleCount = 40\nIdleCountMin = 0\nIdleCountPolicy = \"adaptive\"".to_string()
        } else {
            format!("IdleCount = {IDLE_COUNT}")
        },
        project = gce.project(),
        z0 = ZONES[0],
        z1 = ZONES[1],
        endpoint = gce.endpoint(),
    )
}

fn job(p: &Params) -> serde_json::Value {
    json!({
        "image": {"name": IMAGE},
        "steps": [{
            "name": "script",
            "script": ["echo FLEET-BENCH-$((6*7))", format!("sleep {}", p.job.as_secs_f64())],
            "timeout": 3600,
            "when": "on_success",
        }],
        "variables": [{"key": "GIT_STRATEGY", "value": "none", "public": true}],
    })
}

async fn run(p: Params, mode: &'static str) -> Outcome {
    let (queue_aware, adaptive) = (mode != "off", mode == "adaptive");
    let opts = FakeGitlabOptions {
        long_poll: Duration::from_secs(50),
        ..Default::default()
    };
    let gitlab = FakeGitlab::start(opts).await.expect("fake gitlab");
    let token = format!(
        "glrt-t1_{:016x}{:08x}",
        rand::random::<u64>(),
        rand::random::<u32>()
    );
    gitlab.add_runner(&token);
    let gce_opts = FakeGceOptions {
        zones: ZONES.iter().map(|z| ZoneSpec::new(z, p.boot)).collect(),
        ..FakeGceOptions::default()
    };
    let gce = Arc::new(FakeGce::start(gce_opts).await.expect("fake gce"));
    let state = tempfile::tempdir().expect("tempdir");
    let text = config_text(
        &p,
        queue_aware,
        adaptive,
        &gitlab,
        &token,
        &gce,
        state.path(),
    );
    let config = match Config::from_toml_str(&text, "fleet-bench.toml") {
        Ok(loaded) => loaded.config,
        Err(e) => panic!("bench config invalid:\n{e}"),
    };
    let markers: Markers = Arc::default();
    let (controls, rx) = mpsc::channel(2);
    let manager = tokio::spawn(flotilla::manager::run_with(config, rx, hooks(&markers)));

    // Warm-up: IdleCount VMs booted and a request held with one of them leased (the adaptive
    // pool has seen no demand yet: it keeps none, and its requests poll without a VM).
    let warm = p.boot * 4 + Duration::from_secs(60);
    let booted = adaptive
        || gce
            .wait_until(warm, |vms| {
                vms.iter().filter(|v| v.status == "RUNNING").count() >= IDLE_COUNT as usize
            })
            .await;
    assert!(booted, "[{mode}] the pool did not warm to IdleCount");
    gitlab
        .wait_held_polls(1, warm)
        .await
        .expect("a held job request after warm-up");
    eprintln!("[{mode}] warmed up: {:?}", gce.count_by_status());

    let sampler = Sampler::start(gce.clone(), gitlab.handle());
    let start = Instant::now();
    let mut jobs: Vec<(i64, bool)> = Vec::new();
    for (at, burst) in p.schedule() {
        tokio::time::sleep_until((start + at).into()).await;
        let id = gitlab.enqueue(&token, job(&p));
        sampler.track(id);
        jobs.push((id, burst));
    }
    eprintln!("[{mode}] {} jobs enqueued; waiting for them", jobs.len());
    let deadline = Duration::from_secs(3600);
    let mut failed = 0;
    let mut waits = (Vec::new(), Vec::new());
    let (mut handout, mut started) = (Vec::new(), Vec::new());
    for (id, burst) in &jobs {
        let rec = gitlab
            .wait_job(*id, deadline, |j| j.state.is_finished())
            .await
            .expect("job finished");
        if rec.state != JobState::Success {
            failed += 1;
            eprintln!(
                "[{mode}] job {id} ended {:?} ({:?}): {}",
                rec.state,
                rec.failure_reason,
                String::from_utf8_lossy(&rec.trace)
                    .lines()
                    .last()
                    .unwrap_or("")
            );
            continue;
        }
        let Some(seen) = markers.lock().unwrap().get(id).copied() else {
            failed += 1;
            eprintln!("[{mode}] job {id} succeeded but its marker was not seen");
            continue;
        };
        let wait = seen.duration_since(rec.enqueued_at).as_secs_f64();
        if let Some(out) = rec.handed_out_at {
            handout.push(out.duration_since(rec.enqueued_at).as_secs_f64());
            started.push(seen.duration_since(out).as_secs_f64());
        }
        if *burst {
            waits.0.push(wait);
        } else {
            waits.1.push(wait);
        }
    }
    let sampled = sampler.finish().await;
    let scenario_secs = start.elapsed().as_secs_f64();
    eprintln!("[{mode}] all jobs finished after {scenario_secs:.0} s; draining");

    let _ = controls.send(Control::Drain).await;
    match tokio::time::timeout(Duration::from_secs(600), manager).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => eprintln!("[{mode}] manager ended with an error: {e}"),
        Ok(Err(e)) => eprintln!("[{mode}] manager task failed: {e}"),
        Err(_) => eprintln!("[{mode}] manager did not exit within 600 s of the drain"),
    }
    let left_over = gce.instances().len();
    let calls = gce.call_counts();
    let failed_calls = gce.calls().iter().filter(|c| c.status >= 300).count();
    gitlab.shutdown().await;
    if let Ok(gce) = Arc::try_unwrap(gce) {
        gce.shutdown().await;
    }
    Outcome {
        mode,
        jobs: jobs.len(),
        failed,
        waits,
        handout,
        start: started,
        sampled,
        scenario_secs,
        calls,
        failed_calls,
        left_over,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

fn wait_line(name: &str, waits: &[f64]) {
    let s = sorted(waits);
    println!(
        "  {name:<28} n={:<4} p50={:>7.1} s  p95={:>7.1} s  max={:>7.1} s",
        s.len(),
        percentile(&s, 0.5),
        percentile(&s, 0.95),
        s.last().copied().unwrap_or(f64::NAN)
    );
}

fn is_list(api: &str) -> bool {
    api.ends_with(".list") || api.ends_with(".aggregatedList")
}

/// Prints one mode; returns (wait p95, GCE calls per VM).
fn report(o: &Outcome) -> (f64, f64) {
    let all: Vec<f64> = o.waits.0.iter().chain(&o.waits.1).copied().collect();
    let p95 = percentile(&sorted(&all), 0.95);
    let inserts = o.calls.get("instances.insert").copied().unwrap_or(0);
    let per_vm_calls: usize = o
        .calls
        .iter()
        .filter(|(api, _)| !is_list(api))
        .map(|(_, n)| n)
        .sum();
    let lists: usize = o
        .calls
        .iter()
        .filter(|(api, _)| is_list(api))
        .map(|(_, n)| n)
        .sum();
    let per_vm = per_vm_calls as f64 / inserts.max(1) as f64;
    match o.mode {
        "adaptive" => println!(
            "== adaptive warm pool (IdleCountPolicy = \"adaptive\", IdleCount 40 as ceiling, queue-aware on)"
        ),
        m => println!("== queue-aware scale-out {}", m.to_uppercase()),
    }
    println!(
        "  jobs {} ({} failed or unmeasured), scenario {:.0} s (first enqueue -> last job finished)",
        o.jobs, o.failed, o.scenario_secs
    );
    println!("  job wait, enqueue -> first script output in the manager's trace:");
    wait_line("all jobs", &all);
    wait_line("burst jobs", &o.waits.0);
    wait_line("background jobs", &o.waits.1);
    wait_line("  of it enqueue -> handed out", &o.handout);
    wait_line("  of it handed out -> output", &o.start);
    let s = &o.sampled;
    println!(
        "  idle VM-seconds per job: {:.1} ({:.0} idle VM-s of {:.0} RUNNING VM-s over the scenario; peak {} RUNNING, {} instances)",
        s.idle_vm_secs / o.jobs.max(1) as f64,
        s.idle_vm_secs,
        s.running_vm_secs,
        s.peak_running,
        s.peak_instances
    );
    println!("  VM creations (instances.insert): {inserts}");
    let detail: Vec<String> = o.calls.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("  GCE calls: {}", detail.join(" "));
    println!(
        "  GCE calls per VM (all but list calls, warm-up to shutdown): {per_vm:.2}; shared list calls: {lists}; answered >= 300: {}; instances left after shutdown: {}",
        o.failed_calls, o.left_over
    );
    (p95, per_vm)
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "MET"
    } else {
        "NOT MET"
    }
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let filter = std::env::var("BENCH_LOG").unwrap_or_else(|_| "off".into());
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .try_init();
    let status = std::process::Command::new("bash")
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-test-images.sh"))
        .status()
        .expect("build test images");
    assert!(status.success());
    let scale = std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .unwrap_or(1.0);
    let modes = std::env::var("BENCH_MODES").unwrap_or_else(|_| "on,off,adaptive".into());
    let burst = std::env::var("BENCH_BURST")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|b| *b > 0)
        .unwrap_or(30);
    let p = Params::new(scale, burst);
    println!(
        "== GCE fleet bursts (scale {scale}): boot {:.1} s, {} bursts of {} jobs every {:.0} s, background job every {:.1} s for {:.0} s, jobs sleep {:.1} s; IdleCount {IDLE_COUNT}, IdleTime {} s, limit 40, MaxGrowthRate 30, MaxBuilds 1",
        p.boot.as_secs_f64(),
        p.bursts,
        p.burst_size,
        p.burst_every.as_secs_f64(),
        p.background_every.as_secs_f64(),
        p.background_until.as_secs_f64(),
        p.job.as_secs_f64(),
        p.idle_time.as_secs(),
    );
    let mut results = Vec::new();
    for name in ["on", "off", "adaptive"] {
        if modes.split(',').any(|m| m.trim() == name) {
            let o = run(p, name).await;
            let r = report(&o);
            results.push((name, r));
        }
    }
    let target = p.wait_target().as_secs_f64();
    let on = results.iter().find(|(m, _)| *m == "on").map(|(_, r)| *r);
    let off = results.iter().find(|(m, _)| *m == "off").map(|(_, r)| *r);
    if let Some((on_p95, _)) = on {
        println!(
            "target: wait p95 with queue-aware on <= boot + 15 s ({target:.1} s): {on_p95:.1} s: {}",
            verdict(on_p95 <= target)
        );
    }
    if let (Some((on_p95, _)), Some((off_p95, _))) = (on, off) {
        println!(
            "target: wait p95 on at least 2x better than off: {off_p95:.1} s / {on_p95:.1} s = {:.2}x: {}",
            off_p95 / on_p95,
            verdict(off_p95 >= 2.0 * on_p95)
        );
    }
    for (mode, (_, per_vm)) in &results {
        println!(
            "target: <= 3 GCE calls per VM lifetime besides list calls ({mode}): {per_vm:.2}: {}",
            verdict(*per_vm <= 3.0)
        );
    }
}
