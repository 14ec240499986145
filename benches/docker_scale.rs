//! The manager's own cost with the `docker` executor on the real local engine, measured as a new
//! user would: the real `flotilla run` binary (release build) against the fake GitLab, its RSS and
//! CPU read from `/proc/<pid>`. Run with `cargo bench --bench docker_scale`.
//!
//! 1. Idle: the manager polling with no job (the baseline RSS and CPU rate).
//! 2. Running: `BENCH_RUNNING` (150) jobs of `BENCH_HOLD_S` (40) s each queued at once with
//!    `concurrent = 150`, `request_concurrency = 4`, `network_mode` unset (the engine's default
//!    bridge, no network per job): how long until all run at once, the manager's RSS and RssAnon
//!    with all of them running, per job above idle. (Also a slope of RSS over the count of
//!    running containers while they start: a job is held from its receipt, before its
//!    container runs, so that slope understates the cost; peak over idle is the measure.)
//! 3. Short jobs: a warm-up of 100 short jobs, then `BENCH_SHORT` (1,000) more; RSS growth per
//!    job between the two idle points (and a slope over samples every 100 jobs), and the
//!    manager's CPU per short job (raw, and net of the idle rate over the same wall time); then
//!    `BENCH_SHORT_ROUNDS` − 1 (1) more rounds of the same. Beside it: a bare `docker run --rm`
//!    of the same image.
//!
//! Every container carries the `com.flotilla.runner` label of the bench's own runner; what is
//! left at the end is removed by that label only.
// Benchmarks time the wall clock on purpose (clippy.toml bans std's Instant in src/).
#![allow(clippy::disallowed_types)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};
#[path = "support/procfs.rs"]
mod procfs;

use procfs::slope;
use serde_json::json;
use testkit::{FakeGitlab, FakeGitlabOptions, JobState};

const IMAGE: &str = "flotilla-test/busybox:latest";

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The binary to measure: `BENCH_BIN`, else the release build, else the debug one (said so).
fn binary() -> PathBuf {
    if let Ok(bin) = std::env::var("BENCH_BIN") {
        return bin.into();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let release = root.join("target/release/flotilla");
    if release.exists() {
        return release;
    }
    println!("NOTE: no target/release/flotilla (cargo build --release): measuring the debug build");
    root.join("target/debug/flotilla")
}

/// The manager process's resident set (VmRSS), in KiB.
fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS:`, `RssAnon:`, …).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Waits until every job in `ids` is finished, sampling the manager's VmRSS and RssAnon (KiB)
/// each time another 100 have finished: how many succeeded, and the samples (jobs finished,
/// RSS, anon RSS).
async fn wait_all_sampled(
    gitlab: &FakeGitlab,
    ids: &[i64],
    pid: u32,
    timeout: Duration,
) -> (usize, Vec<(f64, f64, f64)>) {
    let deadline = Instant::now() + timeout;
    let mut left: Vec<i64> = ids.to_vec();
    let (mut ok, mut done, mut samples) = (0, 0usize, Vec::new());
    let mut next = 100;
    while !left.is_empty() && Instant::now() < deadline {
        left.retain(|id| match gitlab.job(*id) {
            Some(record) if record.state.is_finished() => {
                done += 1;
                if record.state == JobState::Success {
                    ok += 1;
                } else {
                    println!(
                        "job {id} ended {:?}: {}",
                        record.state,
                        record.trace_text().lines().last().unwrap_or("")
                    );
                }
                false
            }
            _ => true,
        });
        if done >= next {
            samples.push((
                done as f64,
                rss_kib(pid) as f64,
                status_kib(pid, "RssAnon:") as f64,
            ));
            next += 100;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (ok, samples)
}

/// The process's user + system CPU time so far, in milliseconds (`/proc/<pid>/stat`).
fn cpu_ms(pid: u32, ticks_per_s: u64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime is field 14, stime 15: indexes 11 and 12 after the ')'.
    (ticks(11) + ticks(12)) as f64 * 1000.0 / ticks_per_s as f64
}

fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

fn config_text(url: &str, token: &str, state: &Path, concurrent: usize) -> String {
    format!(
        r#"concurrent = {concurrent}
check_interval = 3
log_level = "warn"
state_dir = "{}"
[[runners]]
name = "docker-scale-bench"
url = "{url}"
token = "{token}"
executor = "docker"
request_concurrency = 4
[runners.docker]
image = "{IMAGE}"
pull_policy = ["if-not-present"]
"#,
        state.display()
    )
}

fn job(script: &str) -> serde_json::Value {
    json!({
        "image": {"name": IMAGE},
        "steps": [{"name": "script", "script": [script], "timeout": 3600, "when": "on_success"}],
        "variables": [{"key": "GIT_STRATEGY", "value": "none", "public": true}],
    })
}

/// The bench runner's containers that are running now.
async fn running(docker: &bollard::Docker, short: &str) -> usize {
    let filters = HashMap::from([
        ("label", vec![format!("com.flotilla.runner={short}")]),
        ("status", vec!["running".to_string()]),
    ]);
    let options = ListContainersOptionsBuilder::new()
        .filters(&filters)
        .build();
    docker
        .list_containers(Some(options))
        .await
        .map(|l| l.len())
        .unwrap_or(0)
}

/// Waits until every job in `ids` is finished; how many succeeded.
async fn wait_all(gitlab: &FakeGitlab, ids: &[i64], timeout: Duration) -> usize {
    let mut ok = 0;
    for id in ids {
        match gitlab
            .wait_job(*id, timeout, |j| j.state.is_finished())
            .await
        {
            Ok(record) if record.state == JobState::Success => ok += 1,
            Ok(record) => println!(
                "job {id} ended {:?}: {}",
                record.state,
                record.trace_text().lines().last().unwrap_or("")
            ),
            Err(e) => println!("job {id}: {e}"),
        }
    }
    ok
}

/// The RSS in KiB once it has settled: the least of a few samples a second apart.
async fn settled_rss(pid: u32) -> u64 {
    let mut least = u64::MAX;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        least = least.min(rss_kib(pid));
    }
    least
}

/// Bare `docker run --rm IMAGE true`, `n` times: the mean wall time in ms.
fn bare_docker_run(n: usize, label: &str) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        let status = std::process::Command::new("docker")
            .args([
                "run",
                "--rm",
                "--log-driver",
                "none",
                "--label",
                label,
                IMAGE,
                "true",
            ])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("docker run");
        assert!(status.success());
    }
    start.elapsed().as_secs_f64() * 1000.0 / n as f64
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let status = std::process::Command::new("bash")
        .arg(root.join("scripts/build-test-images.sh"))
        .status()
        .expect("build test images");
    assert!(status.success());
    let n_running = env_usize("BENCH_RUNNING", 150);
    let hold_s = env_usize("BENCH_HOLD_S", 40);
    let n_short = env_usize("BENCH_SHORT", 1000);
    let ticks = clock_ticks();
    let bin = binary();
    let docker = bollard::Docker::connect_with_local_defaults().expect("docker");

    let gitlab = FakeGitlab::start(FakeGitlabOptions {
        long_poll: Duration::from_secs(10),
        ..Default::default()
    })
    .await
    .expect("fake gitlab");
    // Built at run time (never a literal token); its short token names the containers.
    let token = format!(
        "glrt-t1_dscale{:05x}{}",
        rand::random::<u32>() & 0xfffff,
        "b".repeat(8)
    );
    let short = flotilla::config::short_token(&token);
    gitlab.add_runner(&token);
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("config.toml");
    std::fs::write(
        &config_path,
        config_text(&gitlab.url(), &token, &dir.path().join("state"), n_running),
    )
    .expect("config");
    let mut child = std::process::Command::new(&bin)
        .args(["run", "-c"])
        .arg(&config_path)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("flotilla run");
    let pid = child.id();
    println!(
        "== docker_scale: {} (pid {pid}), runner {short}",
        bin.display()
    );

    // 1. Idle.
    gitlab
        .wait_held_polls(4, Duration::from_secs(60))
        .await
        .expect("the manager's 4 requesters poll");
    let idle_rss = settled_rss(pid).await;
    let idle_anon = status_kib(pid, "RssAnon:");
    let (c0, t0) = (cpu_ms(pid, ticks), Instant::now());
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_cpu_rate = (cpu_ms(pid, ticks) - c0) / t0.elapsed().as_secs_f64();
    println!(
        "idle manager: RSS {:.1} MB (RssAnon {:.1} MB), CPU {idle_cpu_rate:.1} ms/s",
        idle_rss as f64 / 1024.0,
        idle_anon as f64 / 1024.0
    );

    // 2. n_running long jobs at once.
    let script = format!("echo started; sleep {hold_s}");
    let start = Instant::now();
    let ids: Vec<i64> = (0..n_running)
        .map(|_| gitlab.enqueue(&token, job(&script)))
        .collect();
    let mut peak = 0;
    let mut all_at = None;
    let (mut peak_rss, mut peak_anon) = (0u64, 0u64);
    // (jobs running, VmRSS, RssAnon) while the jobs start: the marginal cost of one more.
    let mut ramp: Vec<(f64, f64, f64)> = Vec::new();
    let deadline = start + Duration::from_secs(hold_s as u64 + 240);
    while Instant::now() < deadline {
        let now_running = running(&docker, &short).await;
        let (rss, anon) = (rss_kib(pid), status_kib(pid, "RssAnon:"));
        if all_at.is_none() && now_running > 0 {
            ramp.push((now_running as f64, rss as f64, anon as f64));
        }
        if now_running > peak {
            peak = now_running;
            (peak_rss, peak_anon) = (rss, anon);
        } else if now_running == peak && rss > peak_rss {
            (peak_rss, peak_anon) = (rss, anon);
        }
        if now_running >= n_running {
            all_at.get_or_insert(start.elapsed());
        } else if all_at.is_some() || peak > 0 && now_running == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let ok = wait_all(&gitlab, &ids, Duration::from_secs(600)).await;
    let per_job = peak_rss.saturating_sub(idle_rss) as f64 / peak.max(1) as f64;
    let anon_per_job = peak_anon.saturating_sub(idle_anon) as f64 / peak.max(1) as f64;
    let ramp_rss = slope(&ramp.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>());
    let ramp_anon = slope(&ramp.iter().map(|r| (r.0, r.2)).collect::<Vec<_>>());
    println!(
        "running: {ok}/{n_running} succeeded; peak {peak} running at once; all running after {}",
        all_at.map_or("never".to_string(), |d| format!(
            "{:.1} s ({:.1} jobs/s taken and started)",
            d.as_secs_f64(),
            n_running as f64 / d.as_secs_f64()
        ))
    );
    println!(
        "RSS with {peak} running: {:.1} MB = idle {:.1} MB + {per_job:.0} KB per running job",
        peak_rss as f64 / 1024.0,
        idle_rss as f64 / 1024.0
    );
    println!(
        "RssAnon (heap) with {peak} running: {:.1} MB = idle {:.1} MB + {anon_per_job:.0} KB per \
         running job; least-squares slope over {} samples while they started: VmRSS \
         {ramp_rss:.0} KB, RssAnon {ramp_anon:.0} KB per more job running",
        peak_anon as f64 / 1024.0,
        idle_anon as f64 / 1024.0,
        ramp.len()
    );
    println!(
        "target: all {n_running} at once: {}; <= 100 KB RSS per running job: {}",
        verdict(peak >= n_running),
        verdict(peak > 0 && per_job <= 100.0)
    );

    // 3. Short jobs: a warm-up, then n_short.
    let warm: Vec<i64> = (0..100)
        .map(|_| gitlab.enqueue(&token, job("true")))
        .collect();
    wait_all(&gitlab, &warm, Duration::from_secs(600)).await;
    let rss_before = settled_rss(pid).await;
    let anon_before = status_kib(pid, "RssAnon:");
    let (c1, t1) = (cpu_ms(pid, ticks), Instant::now());
    let ids: Vec<i64> = (0..n_short)
        .map(|_| gitlab.enqueue(&token, job("true")))
        .collect();
    let (ok, samples) = wait_all_sampled(&gitlab, &ids, pid, Duration::from_secs(1800)).await;
    let (c2, wall) = (cpu_ms(pid, ticks), t1.elapsed().as_secs_f64());
    let rss_after = settled_rss(pid).await;
    let anon_after = status_kib(pid, "RssAnon:");
    let growth = (rss_after as f64 - rss_before as f64) / n_short as f64 * 1024.0;
    let fit_rss = slope(
        &samples
            .iter()
            .map(|s| (s.0, s.1 * 1024.0))
            .collect::<Vec<_>>(),
    );
    let fit_anon = slope(
        &samples
            .iter()
            .map(|s| (s.0, s.2 * 1024.0))
            .collect::<Vec<_>>(),
    );
    let cpu_raw = (c2 - c1) / n_short as f64;
    let cpu_net = (c2 - c1 - idle_cpu_rate * wall) / n_short as f64;
    println!(
        "short jobs: {ok}/{n_short} succeeded in {wall:.1} s ({:.1} jobs/s)",
        n_short as f64 / wall
    );
    println!(
        "RSS after the warm-up {:.1} MB, after {n_short} more {:.1} MB: {growth:.0} bytes per job",
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0
    );
    println!(
        "RssAnon (heap) {:.1} MB -> {:.1} MB; least-squares slope over {} samples (every 100 \
         jobs): RSS {fit_rss:.0} bytes per job, RssAnon {fit_anon:.0} bytes per job",
        anon_before as f64 / 1024.0,
        anon_after as f64 / 1024.0,
        samples.len()
    );
    println!(
        "manager CPU per short job: {cpu_raw:.2} ms ({cpu_net:.2} ms above the idle rate of \
         {idle_cpu_rate:.1} ms/s over the same {wall:.0} s)"
    );
    // The same again: whether the heap keeps growing once it reached its working size (the
    // first round starts up to `concurrent` short jobs at once, a higher peak than before).
    let rounds = env_usize("BENCH_SHORT_ROUNDS", 2);
    let mut last_growth = growth;
    for round in 2..=rounds {
        let (r0, a0, c0) = (
            settled_rss(pid).await,
            status_kib(pid, "RssAnon:"),
            cpu_ms(pid, ticks),
        );
        let ids: Vec<i64> = (0..n_short)
            .map(|_| gitlab.enqueue(&token, job("true")))
            .collect();
        let (ok, samples) = wait_all_sampled(&gitlab, &ids, pid, Duration::from_secs(1800)).await;
        let c1 = cpu_ms(pid, ticks);
        let (r1, a1) = (settled_rss(pid).await, status_kib(pid, "RssAnon:"));
        last_growth = (r1 as f64 - r0 as f64) / n_short as f64 * 1024.0;
        let fit = slope(
            &samples
                .iter()
                .map(|s| (s.0, s.1 * 1024.0))
                .collect::<Vec<_>>(),
        );
        println!(
            "round {round}: {ok}/{n_short} succeeded; RSS {:.1} -> {:.1} MB: {last_growth:.0} bytes \
             per job (slope {fit:.0}); RssAnon {:.1} -> {:.1} MB: {:.0} bytes per job; CPU {:.2} ms per job",
            r0 as f64 / 1024.0,
            r1 as f64 / 1024.0,
            a0 as f64 / 1024.0,
            a1 as f64 / 1024.0,
            (a1 as f64 - a0 as f64) / n_short as f64 * 1024.0,
            (c1 - c0) / n_short as f64
        );
    }
    let label = format!("com.flotilla.runner={short}");
    let bare = bare_docker_run(20, &label);
    println!("baseline: bare `docker run --rm {IMAGE} true`, one at a time: {bare:.0} ms each");
    println!(
        "target: <= 1 KB RSS growth per job: {} (first round), {} (last round); <= 5 ms CPU per \
         short job: {}",
        verdict(growth <= 1024.0),
        verdict(last_growth <= 1024.0),
        verdict(cpu_raw <= 5.0)
    );

    let _ = std::process::Command::new("kill")
        .args(["-QUIT", &pid.to_string()])
        .status();
    let _ = child.wait();
    // Anything left (none expected) is the bench runner's own: removed by its label only.
    let filters = HashMap::from([("label", vec![label])]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    for c in docker
        .list_containers(Some(options))
        .await
        .unwrap_or_default()
    {
        if let Some(id) = c.id {
            let force = RemoveContainerOptionsBuilder::new().force(true).build();
            let _ = docker.remove_container(&id, Some(force)).await;
        }
    }
}
