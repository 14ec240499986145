//! The soak with the `docker` executor (not a test): prints numbers for BENCHMARKS.md.
//!
//! One real `flotilla run` process (so `/proc/<pid>` is the manager's alone) with one `docker`
//! runner whose `host` is the test kit's fake Docker Engine, against the fake GitLab with long
//! polling, both in this process. `N` short jobs (one line of output, no run time) go through
//! it, `BENCH_SOAK_CONCURRENT` (20) at a time; every 1,000 jobs the manager's RSS, anonymous
//! RSS, open descriptors and alive tokio tasks (`flotilla_tokio_alive_tasks`) are sampled, and
//! a least-squares slope of each over the job count is printed (target: RSS ≤ 100 bytes per
//! job), and the connections the manager opened to the engine per job. The first sample is
//! the warm-up (allocator arenas, pools) and is left out of the fit.
//! `BENCH_JOB_SECS` gives each job a run time (one line a second), e.g. to hold `concurrent`
//! jobs at once under a heap profiler.
//! `benches/scale.rs -- --soak` is the same with docker+machine (a VM per job on the fake GCE).
//!
//! Run: `cargo build --release --bin flotilla && cargo bench --bench soak -- 20000`
//! (`BENCH_FLOTILLA` names another binary; `BENCH_LOG=warn` shows the manager's logs).
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
use testkit::{Behaviour, FakeDocker, FakeDockerOptions, FakeGitlab, FakeGitlabOptions};

const IMAGE: &str = "flotilla-fake/soak:latest";

fn job() -> serde_json::Value {
    json!({
        "image": {"name": IMAGE},
        "steps": [{"name": "script", "script": ["echo soak"], "timeout": 3600, "when": "on_success"}],
        "variables": [{"key": "GIT_STRATEGY", "value": "none", "public": true}],
    })
}

/// One sample: jobs done, /proc, alive tasks.
type Sample = (u64, Proc, u64);

fn fit(samples: &[Sample], y: impl Fn(&Sample) -> f64) -> f64 {
    let points: Vec<(f64, f64)> = samples.iter().skip(1).map(|s| (s.0 as f64, y(s))).collect();
    slope(&points)
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    if let Err(e) = flotilla::nofile::raise() {
        eprintln!("cannot raise the open files limit: {e}");
    }
    let total: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    let concurrent: u64 = std::env::var("BENCH_SOAK_CONCURRENT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    // Run time of each job (0: short jobs); a longer one holds `concurrent` jobs at once.
    let job_secs: u64 = std::env::var("BENCH_JOB_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let ticks = clock_ticks();
    let gitlab = FakeGitlab::start(FakeGitlabOptions {
        long_poll: Duration::from_secs(50),
        ..Default::default()
    })
    .await
    .expect("fake gitlab");
    // Built at run time (never a literal token).
    let token = format!(
        "glrt-t1_{:016x}{:04x}",
        rand::random::<u64>(),
        rand::random::<u16>()
    );
    gitlab.add_runner(&token);
    let docker = FakeDocker::start(FakeDockerOptions {
        images: vec![IMAGE.into()],
        behaviours: HashMap::from([(
            IMAGE.into(),
            Behaviour {
                run_time: Duration::from_secs(job_secs),
                line_every: Some(Duration::from_secs(1)),
                line: "soak".into(),
                exit_code: 0,
            },
        )]),
        default: Behaviour::default(),
        start_latency: Duration::ZERO,
    })
    .await
    .expect("fake docker");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = format!(
        r#"{global}[[runners]]
name = "soak-bench"
url = "{url}"
token = "{token}"
executor = "docker"
request_concurrency = 4
[runners.docker]
host = "{host}"
image = "{IMAGE}"
pull_policy = ["if-not-present"]
"#,
        global = global_section(concurrent, port, &dir.path().join("state")),
        url = gitlab.url(),
        host = docker.host(),
    );
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).expect("config");
    let bin = manager_binary();
    let mut child = std::process::Command::new(&bin)
        .args(["run", "-c"])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start flotilla");
    let pid = child.id();
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    gitlab
        .wait_held_polls(4, Duration::from_secs(120))
        .await
        .expect("the manager's requesters poll");
    println!(
        "== soak: {total} short jobs, {concurrent} at a time, `docker` executor on the fake Docker; {} (pid {pid})",
        bin.display()
    );
    let base = read_proc(pid, ticks);
    let base_tasks = alive_tasks(&metrics).await.unwrap_or(0);
    println!(
        "idle manager: RSS {} KB (anon {} KB), {} fds, {base_tasks} tasks",
        base.rss_kb, base.anon_kb, base.fds
    );
    println!(
        "{:>8} {:>9} {:>9} {:>5} {:>6} {:>7} {:>9}",
        "jobs", "RSS KB", "anon KB", "fds", "tasks", "jobs/s", "CPU ms/j"
    );
    let start = Instant::now();
    let mut ids = HashSet::new();
    let (mut enqueued, mut finished, mut failed) = (0u64, 0u64, 0u64);
    let mut next_sample = 1000u64;
    let mut samples: Vec<Sample> = Vec::new();
    let mut last = (base.cpu_ms, 0u64, Instant::now());
    while finished < total {
        while enqueued < total && (ids.len() as u64) < concurrent * 2 {
            ids.insert(gitlab.enqueue(&token, job()));
            enqueued += 1;
        }
        finished += reap(&gitlab, &mut ids, &mut failed);
        if finished >= next_sample {
            let p = read_proc(pid, ticks);
            let tasks = alive_tasks(&metrics).await.unwrap_or(0);
            let rate = (finished - last.1) as f64 / last.2.elapsed().as_secs_f64();
            let cpu = (p.cpu_ms - last.0) / (finished - last.1).max(1) as f64;
            println!(
                "{finished:>8} {:>9} {:>9} {:>5} {tasks:>6} {rate:>7.1} {cpu:>9.2}",
                p.rss_kb, p.anon_kb, p.fds
            );
            samples.push((finished, p, tasks));
            last = (p.cpu_ms, finished, Instant::now());
            next_sample += 1000;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let end = read_proc(pid, ticks);
    let rss = fit(&samples, |s| s.1.rss_kb as f64 * 1024.0);
    let anon = fit(&samples, |s| s.1.anon_kb as f64 * 1024.0);
    let fds = fit(&samples, |s| s.1.fds as f64);
    let tasks = fit(&samples, |s| s.2 as f64);
    println!(
        "{finished} jobs ({failed} failed) in {secs:.0} s = {:.1} jobs/s; manager CPU {:.2} ms/job; RSS idle {:.1} MB, end {:.1} MB, peak {:.1} MB",
        finished as f64 / secs,
        (end.cpu_ms - base.cpu_ms) / finished.max(1) as f64,
        base.rss_kb as f64 / 1024.0,
        end.rss_kb as f64 / 1024.0,
        end.hwm_kb as f64 / 1024.0
    );
    let engine = docker.stats();
    println!(
        "engine connections: {} for {} containers ({:.2} per job)",
        engine.connections,
        engine.created,
        engine.connections as f64 / finished.max(1) as f64
    );
    println!(
        "slope by least squares over samples 2..{}: RSS {rss:.1} bytes/job (anon {anon:.1}), fds {:.4}/1000 jobs, tasks {:.4}/1000 jobs",
        samples.len(),
        fds * 1000.0,
        tasks * 1000.0
    );
    println!(
        "target: RSS slope <= 100 bytes/job: {}",
        if rss <= 100.0 { "MET" } else { "NOT MET" }
    );
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    docker.shutdown();
}
