//! The scale benchmark (not a test): prints numbers for BENCHMARKS.md.
//!
//! One real `flotilla run` process (target/release/flotilla, so /proc figures are the
//! manager's alone) with one docker+machine runner against the test kit's fakes in this
//! process: GitLab with long polling, Compute Engine with zero boot time, and a fake Docker
//! Engine behind every VM's mutual-TLS endpoint, whose job containers print one line a second
//! for `BENCH_JOB_SECS`.
//!
//! Scale mode (default): baseline of the idle manager (warm pool up, no job), then `BENCH_JOBS`
//! (2,000) jobs enqueued at `BENCH_RATE` per second; when they all run, `BENCH_PROBES` (100)
//! short jobs one after another measure pickup (enqueue → handed out by the fake GitLab) at
//! full load. Prints peak jobs running, jobs/s sustained over the ramp, manager CPU ms per job
//! lifecycle (net of the idle baseline), peak RSS and RSS per running job, pickup p50/p99, GCE
//! calls per VM, open file descriptors and alive tokio tasks, each beside the idle baseline.
//!
//! Soak mode (`-- --soak N`, default N = 10,000 when given without a number): N short jobs
//! (one line, no run time) through the same setup with `concurrent` = `BENCH_SOAK_CONCURRENT`
//! (50); RSS, open descriptors and alive tasks sampled every 1,000 jobs; the slope of each by
//! least squares must be flat (RSS ≤ 100 bytes per job).
//!
//! Run: `cargo build --release --bin flotilla && cargo bench --bench scale` (and
//! `cargo bench --bench scale -- --soak 100000`). Without a release build the debug binary is
//! used (`BENCH_FLOTILLA` or `BENCH_BIN` names another); `cargo bench --profile dev --bench scale` builds the
//! bench itself without optimizations. `BENCH_LOG=warn` shows the manager's logs.
// Benchmarks time the wall clock on purpose (clippy.toml bans std's Instant in src/).
#![allow(clippy::disallowed_types)]

#[path = "support/manager_bin.rs"]
mod manager_bin;
#[path = "support/procfs.rs"]
mod procfs;
#[path = "support/reap.rs"]
mod reap;

use manager_bin::{alive_tasks, free_port, global_section, manager_binary};
use procfs::{clock_ticks, read_proc, slope, Proc};
use reap::reap;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use testkit::{
    Behaviour, FakeDocker, FakeDockerOptions, FakeGce, FakeGceOptions, FakeGitlab,
    FakeGitlabOptions, ZoneSpec,
};

const JOB_IMAGE: &str = "flotilla-fake/job:latest";
const PROBE_IMAGE: &str = "flotilla-fake/probe:latest";
const ZONE: &str = "us-central1-a";

fn env_u64(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Setup {
    gitlab: FakeGitlab,
    token: String,
    gce: FakeGce,
    docker: FakeDocker,
    child: std::process::Child,
    pid: u32,
    metrics: String,
    _dir: tempfile::TempDir,
}

async fn setup(concurrent: u64, idle: u64, job_secs: u64) -> Setup {
    let gitlab = FakeGitlab::start(FakeGitlabOptions {
        long_poll: Duration::from_secs(50),
        // GitLab asks for a trace update every 30 s of a job nobody watches
        // (`Gitlab::Ci::Trace::UPDATE_FREQUENCY_DEFAULT`), every 3 s of one being watched.
        trace_update_interval_secs: Some(env_u64("BENCH_TRACE_SECS", 30)),
        ..Default::default()
    })
    .await
    .expect("fake gitlab");
    let token = format!(
        "glrt-t1_{:016x}{:04x}",
        rand::random::<u64>(),
        rand::random::<u16>()
    );
    gitlab.add_runner(&token);
    let line = |text: &str, secs: u64| Behaviour {
        run_time: Duration::from_secs(secs),
        line_every: Some(Duration::from_secs(1)),
        line: text.to_owned(),
        exit_code: 0,
    };
    let docker = FakeDocker::start(FakeDockerOptions {
        images: vec![JOB_IMAGE.into(), PROBE_IMAGE.into()],
        behaviours: HashMap::from([
            (
                JOB_IMAGE.into(),
                line("scale bench: one line a second", job_secs),
            ),
            (PROBE_IMAGE.into(), line("scale bench: probe", 0)),
        ]),
        default: Behaviour::default(),
        start_latency: Duration::ZERO,
    })
    .await
    .expect("fake docker");
    let gce = FakeGce::start(FakeGceOptions {
        zones: vec![ZoneSpec::new(ZONE, Duration::ZERO)],
        docker_socket: docker.socket().to_path_buf(),
        delete_latency: Duration::ZERO,
        ..FakeGceOptions::default()
    })
    .await
    .expect("fake gce");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    // `BENCH_EXECUTOR=docker`: the `docker` executor straight on the fake engine (no VMs).
    let executor = if docker_executor() {
        format!(
            r#"executor = "docker"
limit = {concurrent}
request_concurrency = 4
[runners.docker]
host = "{host}"
image = "{JOB_IMAGE}"
pull_policy = ["if-not-present"]
network_mode = "host"
"#,
            host = docker.host()
        )
    } else {
        format!(
            r#"executor = "docker+machine"
limit = {concurrent}
request_concurrency = 4
[runners.docker]
image = "{JOB_IMAGE}"
pull_policy = ["if-not-present"]
network_mode = "host"
[runners.machine]
IdleCount = {idle}
MaxBuilds = 1
MachineName = "scale-%s"
[runners.gce]
project = "{project}"
zones = ["{ZONE}"]
endpoint = "{endpoint}"
create_timeout = 300
api_rate_per_minute = {rate}
"#,
            project = gce.project(),
            endpoint = gce.endpoint(),
            rate = gce_rate(),
        )
    };
    let config = format!(
        r#"{global}manager_id = "scale-{id:08x}"
[[runners]]
name = "scale-bench"
url = "{url}"
token = "{token}"
{executor}"#,
        global = global_section(concurrent, port, &dir.path().join("state")),
        id = rand::random::<u32>(),
        url = gitlab.url(),
    );
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).expect("config");
    let bin = manager_binary();
    let child = std::process::Command::new(&bin)
        .args(["run", "-c"])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start flotilla");
    let pid = child.id();
    Setup {
        gitlab,
        token,
        gce,
        docker,
        child,
        pid,
        metrics: format!("http://127.0.0.1:{port}/metrics"),
        _dir: dir,
    }
}

fn job(image: &str) -> serde_json::Value {
    json!({
        "image": {"name": image},
        "steps": [{"name": "script", "script": ["echo scale"], "timeout": 3600, "when": "on_success"}],
        "variables": [{"key": "GIT_STRATEGY", "value": "none", "public": true}],
    })
}

/// Enqueues one short probe job and waits for its hand-out: enqueue → handed out, in ms.
async fn probe(s: &Setup, ids: &mut HashSet<i64>, all: &mut Vec<i64>) -> Option<f64> {
    let id = s.gitlab.enqueue(&s.token, job(PROBE_IMAGE));
    ids.insert(id);
    all.push(id);
    let rec = s
        .gitlab
        .wait_job(id, Duration::from_secs(60), |j| j.handed_out_at.is_some())
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let handed = rec.ok()?.handed_out_at?;
    let rec = s.gitlab.job(id)?;
    Some(handed.duration_since(rec.enqueued_at).as_secs_f64() * 1000.0)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

fn calls_per_vm(gce: &FakeGce) -> (f64, usize, usize) {
    let counts = gce.call_counts();
    let is_list = |api: &str| api.ends_with(".list") || api.ends_with(".aggregatedList");
    let per: usize = counts
        .iter()
        .filter(|(a, _)| !is_list(a))
        .map(|(_, n)| n)
        .sum();
    let lists: usize = counts
        .iter()
        .filter(|(a, _)| is_list(a))
        .map(|(_, n)| n)
        .sum();
    let inserts = counts.get("instances.insert").copied().unwrap_or(0);
    (per as f64 / inserts.max(1) as f64, inserts, lists)
}

async fn stop(mut s: Setup) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &s.pid.to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = s.child.try_wait() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = s.child.kill();
    let _ = s.child.wait();
    s.gitlab.shutdown().await;
    s.gce.shutdown().await;
    s.docker.shutdown();
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "MET"
    } else {
        "NOT MET"
    }
}

/// `api_rate_per_minute` of the bench's runner: `BENCH_GCE_RATE`, else 60,000. The default (600
/// a minute) caps a `MaxBuilds = 1` pool at about 3 new VMs a second (insert, wait and delete
/// are three calls per VM): the bench measures the manager, not that quota.
fn gce_rate() -> u64 {
    env_u64("BENCH_GCE_RATE", 60_000)
}

/// `BENCH_EXECUTOR=docker`: the `docker` executor on the fake engine instead of docker+machine.
fn docker_executor() -> bool {
    std::env::var("BENCH_EXECUTOR").is_ok_and(|e| e == "docker")
}

async fn wait_idle_pool(s: &Setup, idle: u64) {
    if docker_executor() {
        s.gitlab
            .wait_held_polls(1, Duration::from_secs(120))
            .await
            .expect("a held job request");
        return;
    }
    let ok = s
        .gce
        .wait_until(Duration::from_secs(600), |vms| {
            vms.iter().filter(|v| v.status == "RUNNING").count() as u64 >= idle
        })
        .await;
    assert!(ok, "the warm pool never reached {idle} VMs");
    s.gitlab
        .wait_held_polls(1, Duration::from_secs(120))
        .await
        .expect("a held job request");
}

async fn scale() {
    let jobs = env_u64("BENCH_JOBS", 2000);
    let rate = env_u64("BENCH_RATE", 50).max(1);
    let job_secs = env_u64("BENCH_JOB_SECS", 120);
    let probes = env_u64("BENCH_PROBES", 100);
    let idle = env_u64("BENCH_IDLE", 100);
    let ticks = clock_ticks();
    // Room for the warm pool beside the running jobs: at `limit` every probe would wait for a
    // VM to be deleted, confirmed gone and replaced (MaxBuilds = 1), not for the manager.
    let s = setup(jobs + idle + 20, idle, job_secs).await;
    wait_idle_pool(&s, idle).await;
    // Baseline: the idle manager over 10 s.
    let b0 = read_proc(s.pid, ticks);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let base = read_proc(s.pid, ticks);
    let idle_cpu_per_s = (base.cpu_ms - b0.cpu_ms) / t0.elapsed().as_secs_f64();
    let base_tasks = alive_tasks(&s.metrics).await.unwrap_or(0);
    println!(
        "== scale: {jobs} jobs of {job_secs} s (one line a second) enqueued at {rate}/s; {}, fake Docker, trace update every {} s",
        if docker_executor() {
            "docker executor".to_owned()
        } else {
            format!(
                "docker+machine, zero-boot fake GCE, IdleCount {idle}, api_rate_per_minute {}",
                gce_rate()
            )
        },
        env_u64("BENCH_TRACE_SECS", 30)
    );
    println!(
        "baseline (idle manager{}): RSS {:.1} MB, CPU {:.1} ms/s, {} fds, {} tasks",
        if docker_executor() {
            String::new()
        } else {
            format!(", {idle} idle VMs")
        },
        base.rss_kb as f64 / 1024.0,
        idle_cpu_per_s,
        base.fds,
        base_tasks
    );

    // Baseline pickup: the same probes on the idle manager.
    let (mut ids, mut all) = (HashSet::new(), Vec::new());
    let mut idle_pickups = Vec::new();
    for _ in 0..(probes / 5).max(5) {
        if let Some(ms) = probe(&s, &mut ids, &mut all).await {
            idle_pickups.push(ms);
        }
    }
    // They end before the measured part starts (not counted in it).
    let (mut done_failed, settle) = (0u64, Instant::now() + Duration::from_secs(60));
    while !ids.is_empty() && Instant::now() < settle {
        reap(&s.gitlab, &mut ids, &mut done_failed);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ids.clear();
    all.clear();
    idle_pickups.sort_by(f64::total_cmp);
    println!(
        "baseline pickup (idle manager, {} probes one at a time): p50 {:.1} ms, p99 {:.1} ms",
        idle_pickups.len(),
        pct(&idle_pickups, 0.5),
        pct(&idle_pickups, 0.99)
    );

    let cpu_start = read_proc(s.pid, ticks).cpu_ms;
    let fakes_cpu_start = read_proc(std::process::id(), ticks).cpu_ms;
    let start = Instant::now();
    let mut enqueued = 0u64;
    let (mut peak, mut peak_at) = (0u64, start);
    let mut peak_proc = Proc::default();
    let mut peak_tasks = 0u64;
    let mut failed = 0u64;
    let mut finished = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let ramp_deadline = start + Duration::from_secs(job_secs.max(60) * 3);
    while Instant::now() < ramp_deadline {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(jobs);
        while enqueued < due {
            let id = s.gitlab.enqueue(&s.token, job(JOB_IMAGE));
            ids.insert(id);
            all.push(id);
            enqueued += 1;
        }
        let running = s.docker.stats().running;
        if running > peak {
            peak = running;
            peak_at = Instant::now();
        }
        if running >= jobs {
            break;
        }
        if enqueued == jobs && start.elapsed().as_secs().is_multiple_of(5) {
            finished += reap(&s.gitlab, &mut ids, &mut failed);
            if finished > 0 {
                // Jobs end before all ran at once: the ramp is over.
                break;
            }
        }
    }
    let ramp_secs = peak_at.duration_since(start).as_secs_f64();
    let handed: Vec<f64> = all
        .iter()
        .filter_map(|id| s.gitlab.job(*id))
        .filter_map(|r| {
            r.handed_out_at
                .map(|h| h.duration_since(r.enqueued_at).as_secs_f64())
        })
        .collect();
    let p = read_proc(s.pid, ticks);
    peak_proc.rss_kb = p.rss_kb;
    peak_proc.fds = p.fds;
    peak_tasks = peak_tasks.max(alive_tasks(&s.metrics).await.unwrap_or(0));

    // Pickup at full load: probes one after another while the long jobs run.
    let mut pickups = Vec::new();
    for _ in 0..probes {
        if let Some(ms) = probe(&s, &mut ids, &mut all).await {
            pickups.push(ms);
        }
        let p = read_proc(s.pid, ticks);
        peak_proc.rss_kb = peak_proc.rss_kb.max(p.rss_kb);
        peak_proc.fds = peak_proc.fds.max(p.fds);
    }
    let running_at_probe_end = s.docker.stats().running;
    // Everything to the end.
    let end_deadline = Instant::now() + Duration::from_secs(job_secs * 3 + 300);
    while !ids.is_empty() && Instant::now() < end_deadline {
        finished += reap(&s.gitlab, &mut ids, &mut failed);
        let p = read_proc(s.pid, ticks);
        peak_proc.rss_kb = peak_proc.rss_kb.max(p.rss_kb);
        peak_proc.fds = peak_proc.fds.max(p.fds);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let total_secs = start.elapsed().as_secs_f64();
    let end = read_proc(s.pid, ticks);
    let cpu = end.cpu_ms - cpu_start;
    let fakes_cpu = read_proc(std::process::id(), ticks).cpu_ms - fakes_cpu_start;
    let cpu_net = cpu - idle_cpu_per_s * total_secs;
    let (per_vm, inserts, lists) = calls_per_vm(&s.gce);
    let mut sorted_p = pickups.clone();
    sorted_p.sort_by(f64::total_cmp);
    let mut sorted_h = handed.clone();
    sorted_h.sort_by(f64::total_cmp);
    let rss_per_job =
        (peak_proc.rss_kb.saturating_sub(base.rss_kb)) as f64 * 1024.0 / peak.max(1) as f64;
    println!(
        "peak jobs running at once: {peak} of {jobs} (reached {ramp_secs:.1} s after the first enqueue); {running_at_probe_end} still running after the probes"
    );
    println!(
        "jobs/s sustained over the ramp: {:.1} (handed out: enqueue -> handed out p50 {:.0} ms, p99 {:.0} ms over {} jobs)",
        peak as f64 / ramp_secs.max(0.001),
        pct(&sorted_h, 0.5) * 1000.0,
        pct(&sorted_h, 0.99) * 1000.0,
        sorted_h.len()
    );
    println!(
        "pickup at full load (enqueue -> handed out, {} probes one at a time): p50 {:.1} ms, p99 {:.1} ms",
        sorted_p.len(),
        pct(&sorted_p, 0.5),
        pct(&sorted_p, 0.99)
    );
    println!(
        "manager CPU: {:.0} ms over {total_secs:.0} s for {finished} jobs ({failed} failed): {:.2} ms/job gross, {:.2} ms/job net of the idle baseline ({idle_cpu_per_s:.1} ms/s)",
        cpu,
        cpu / finished.max(1) as f64,
        cpu_net / finished.max(1) as f64
    );
    println!(
        "the fakes' own CPU (this bench process): {fakes_cpu:.0} ms over the same {total_secs:.0} s ({:.0} % of one core)",
        fakes_cpu / total_secs / 10.0
    );
    println!(
        "manager RSS: baseline {:.1} MB, at peak {:.1} MB, peak (VmHWM) {:.1} MB; {:.1} KB per running job",
        base.rss_kb as f64 / 1024.0,
        peak_proc.rss_kb as f64 / 1024.0,
        end.hwm_kb as f64 / 1024.0,
        rss_per_job / 1024.0
    );
    println!(
        "open file descriptors: baseline {}, peak {}; alive tokio tasks: baseline {base_tasks}, at peak {peak_tasks}",
        base.fds, peak_proc.fds
    );
    println!(
        "GCE calls per VM (all but list calls): {per_vm:.2} over {inserts} VMs; shared list calls: {lists}"
    );
    println!("target: {jobs} running at once: {}", verdict(peak >= jobs));
    println!(
        "target: RSS <= 200 MB: {:.1} MB: {}",
        end.hwm_kb as f64 / 1024.0,
        verdict(end.hwm_kb <= 200 * 1024)
    );
    println!(
        "target: <= 5 ms manager CPU per job (net): {:.2}: {}",
        cpu_net / finished.max(1) as f64,
        verdict(cpu_net / finished.max(1) as f64 <= 5.0)
    );
    println!(
        "target: pickup p99 <= 100 ms at full load: {:.1} ms: {}",
        pct(&sorted_p, 0.99),
        verdict(pct(&sorted_p, 0.99) <= 100.0)
    );
    stop(s).await;
}

async fn soak(total: u64) {
    let concurrent = env_u64("BENCH_SOAK_CONCURRENT", 50);
    let ticks = clock_ticks();
    let s = setup(concurrent, concurrent, 0).await;
    wait_idle_pool(&s, concurrent).await;
    println!(
        "== soak: {total} short jobs (one line each), concurrent {concurrent}, docker+machine on the fake GCE and fake Docker"
    );
    let base = read_proc(s.pid, ticks);
    let start = Instant::now();
    let mut ids = HashSet::new();
    let (mut enqueued, mut finished, mut failed) = (0u64, 0u64, 0u64);
    let mut next_sample = 1000u64;
    let mut samples: Vec<(u64, Proc, u64)> = Vec::new();
    let cpu0 = base.cpu_ms;
    println!(
        "{:>8} {:>10} {:>6} {:>6} {:>8}",
        "jobs", "RSS KB", "fds", "tasks", "jobs/s"
    );
    while finished < total {
        while enqueued < total && (ids.len() as u64) < concurrent * 3 {
            ids.insert(s.gitlab.enqueue(&s.token, job(PROBE_IMAGE)));
            enqueued += 1;
        }
        finished += reap(&s.gitlab, &mut ids, &mut failed);
        if finished >= next_sample {
            let p = read_proc(s.pid, ticks);
            let tasks = alive_tasks(&s.metrics).await.unwrap_or(0);
            println!(
                "{:>8} {:>10} {:>6} {:>6} {:>8.1}",
                finished,
                p.rss_kb,
                p.fds,
                tasks,
                finished as f64 / start.elapsed().as_secs_f64()
            );
            samples.push((finished, p, tasks));
            next_sample += 1000;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let end = read_proc(s.pid, ticks);
    // The first sample is warm-up (allocator arenas, connection pools filling).
    let fit: Vec<&(u64, Proc, u64)> = samples.iter().skip(1).collect();
    let rss = slope(
        &fit.iter()
            .map(|(j, p, _)| (*j as f64, p.rss_kb as f64 * 1024.0))
            .collect::<Vec<_>>(),
    );
    let fds = slope(
        &fit.iter()
            .map(|(j, p, _)| (*j as f64, p.fds as f64))
            .collect::<Vec<_>>(),
    );
    let tasks = slope(
        &fit.iter()
            .map(|(j, _, t)| (*j as f64, *t as f64))
            .collect::<Vec<_>>(),
    );
    println!(
        "{finished} jobs ({failed} failed) in {secs:.0} s = {:.1} jobs/s; manager CPU {:.2} ms/job; RSS baseline {:.1} MB, end {:.1} MB, peak {:.1} MB",
        finished as f64 / secs,
        (end.cpu_ms - cpu0) / finished.max(1) as f64,
        base.rss_kb as f64 / 1024.0,
        end.rss_kb as f64 / 1024.0,
        end.hwm_kb as f64 / 1024.0
    );
    println!(
        "slope by least squares over samples 2..{}: RSS {rss:.1} bytes/job, fds {:.4}/1000 jobs, tasks {:.4}/1000 jobs",
        samples.len(),
        fds * 1000.0,
        tasks * 1000.0
    );
    println!(
        "target: RSS slope <= 100 bytes/job: {}",
        verdict(rss <= 100.0)
    );
    let (per_vm, inserts, lists) = calls_per_vm(&s.gce);
    println!("GCE calls per VM (all but list calls): {per_vm:.2} over {inserts} VMs; shared list calls: {lists}");
    stop(s).await;
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    if let Err(e) = flotilla::nofile::raise() {
        eprintln!("cannot raise the open files limit: {e}");
    }
    let args: Vec<String> = std::env::args().collect();
    let soak_at = args.iter().position(|a| a == "--soak");
    match soak_at {
        Some(i) => {
            let n = args
                .get(i + 1)
                .and_then(|v| v.parse().ok())
                .unwrap_or(10_000);
            soak(n).await;
        }
        None => scale().await,
    }
}
