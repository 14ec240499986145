//! The foundation benchmark (not a test): prints numbers for BENCHMARKS.md.
//!
//! 1. Pickup latency over N jobs run one at a time, each enqueued while the fake GitLab holds the
//!    runner's long poll: enqueue → acknowledged (PUT running seen by the fake) and enqueue →
//!    first script byte in the manager's trace buffer, p50/p99; beside it, a bare Docker
//!    create+start+attach of the same image to its first output byte.
//! 2. Trace intake: a job printing 200 MB in 100-byte lines (timestamps and masking on,
//!    `output_limit` 512 MiB, uploads paced as GitLab Runner paces them): bytes entering the trace
//!    buffer per second.
//! 3. The manager's peak RSS (VmHWM) while it runs that job, as the real `flotilla` binary.
//!
//! Run: `cargo bench --bench pickup_and_intake` (env: BENCH_JOBS=200, BENCH_INTAKE_MB=200).
// Benchmarks time the wall clock on purpose (clippy.toml bans std's Instant in src/).
#![allow(clippy::disallowed_types)]

use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder,
};
use flotilla::config::Config;
use flotilla::lifecycle::Control;
use flotilla::manager::Hooks;
use flotilla::trace::JobTrace;
use futures_util::StreamExt;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testkit::{FakeGitlab, FakeGitlabOptions, JobState};
use tokio::sync::mpsc;

const IMAGE: &str = "flotilla-test/busybox:latest";
const MARKER: &str = "BENCH-FIRST-BYTE";

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn summary(name: &str, mut ms: Vec<f64>) -> f64 {
    ms.sort_by(|a, b| a.total_cmp(b));
    let p50 = percentile(&ms, 0.5);
    println!(
        "{name:<44} n={:<4} p50={:>8.2} ms  p99={:>8.2} ms",
        ms.len(),
        p50,
        percentile(&ms, 0.99)
    );
    p50
}

fn config_text(url: &str, token: &str, state: &std::path::Path, output_limit_kib: usize) -> String {
    format!(
        r#"concurrent = 1
check_interval = 3
log_level = "warn"
state_dir = "{}"
[[runners]]
name = "bench"
url = "{url}"
token = "{token}"
executor = "docker"
output_limit = {output_limit_kib}
[runners.docker]
image = "{IMAGE}"
pull_policy = ["if-not-present"]
network_mode = "host"
"#,
        state.display()
    )
}

fn job(script: &[&str]) -> serde_json::Value {
    json!({
        "image": {"name": IMAGE},
        "steps": [{"name": "script", "script": script, "timeout": 3600, "when": "on_success"}],
        "variables": [
            {"key": "GIT_STRATEGY", "value": "none", "public": true},
            {"key": "BENCH_SECRET", "value": "not-in-the-output-123", "public": false, "masked": true},
        ],
    })
}

/// Traces of running jobs by id, filled by the manager's hook.
type Traces = Arc<Mutex<HashMap<i64, JobTrace>>>;

fn hooks(traces: &Traces) -> Hooks {
    let traces = traces.clone();
    Hooks {
        on_job_trace: Some(Arc::new(move |id, trace: &JobTrace| {
            traces.lock().unwrap().insert(id, trace.clone());
        })),
        ..Default::default()
    }
}

async fn wait_for_trace(traces: &Traces, id: i64) -> JobTrace {
    loop {
        if let Some(t) = traces.lock().unwrap().get(&id) {
            return t.clone();
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// Waits until the trace holds `marker`, rescanning only the new tail each time it grows.
async fn wait_for_marker(trace: &JobTrace, marker: &str) -> Instant {
    // This runs in the timed window, on the cores the manager uses: each change reads only the
    // new bytes, and at most the last 64 KiB of them (the marker ends the script's output; only
    // the runner's few closing lines follow it), and searches them with memmem.
    const TAIL: u64 = 64 * 1024;
    let mut rx = trace.subscribe();
    let mut scanned = 0u64;
    loop {
        let len = trace.len();
        if len > scanned {
            let from = scanned
                .saturating_sub(marker.len() as u64)
                .max(len.saturating_sub(TAIL));
            let bytes = trace
                .read_at(from, (len - from) as usize)
                .unwrap_or_default();
            if memchr::memmem::find(&bytes, marker.as_bytes()).is_some() {
                return Instant::now();
            }
            scanned = len;
        }
        if rx.changed().await.is_err() {
            return Instant::now();
        }
    }
}

/// The attached output stream of a bare container.
type AttachOutput = std::pin::Pin<
    Box<
        dyn futures_util::Stream<
                Item = Result<bollard::container::LogOutput, bollard::errors::Error>,
            > + Send,
    >,
>;

/// Creates a bare container of the test image running `script` (log driver none, as the
/// executor's), attaches to it and starts it: `(container id, its output, when it was started)`.
async fn bare_container(docker: &bollard::Docker, script: &str) -> (String, AttachOutput, Instant) {
    let body = bollard::models::ContainerCreateBody {
        image: Some(IMAGE.into()),
        cmd: Some(vec!["sh".into(), "-c".into(), script.into()]),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        host_config: Some(bollard::models::HostConfig {
            log_config: Some(bollard::models::HostConfigLogConfig {
                typ: Some("none".into()),
                config: None,
            }),
            network_mode: Some("host".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = docker
        .create_container(Some(CreateContainerOptionsBuilder::default().build()), body)
        .await
        .expect("create");
    let attach = docker
        .attach_container(
            &created.id,
            Some(
                AttachContainerOptionsBuilder::default()
                    .stdout(true)
                    .stderr(true)
                    .stream(true)
                    .build(),
            ),
        )
        .await
        .expect("attach");
    let started = Instant::now();
    docker
        .start_container(
            &created.id,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await
        .expect("start");
    (created.id, attach.output, started)
}

async fn remove_container(docker: &bollard::Docker, id: &str) {
    let _ = docker
        .remove_container(
            id,
            Some(RemoveContainerOptionsBuilder::default().force(true).build()),
        )
        .await;
}

/// Bytes a bare Docker attach delivers for the same script, and in how many seconds (the
/// engine's ceiling for intake).
async fn bare_docker_attach_throughput(docker: &bollard::Docker, script: &str) -> (u64, f64) {
    let (id, mut output, start) = bare_container(docker, script).await;
    let mut bytes = 0u64;
    while let Some(Ok(chunk)) = output.next().await {
        bytes += chunk.into_bytes().len() as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    remove_container(docker, &id).await;
    (bytes, secs)
}

/// Milliseconds from a bare container's create call to its first output byte.
async fn bare_docker_first_byte(docker: &bollard::Docker) -> f64 {
    let start = Instant::now();
    let (id, mut output, _) = bare_container(docker, &format!("echo {MARKER}")).await;
    let _ = output.next().await;
    let elapsed = start.elapsed().as_secs_f64() * 1000.0;
    remove_container(docker, &id).await;
    elapsed
}

async fn pickup(jobs: usize) {
    let opts = FakeGitlabOptions {
        long_poll: Duration::from_secs(50),
        ..Default::default()
    };
    let gitlab = FakeGitlab::start(opts).await.expect("fake gitlab");
    let token = "glrt-t1_benchpickup".to_string();
    gitlab.add_runner(&token);
    let state = tempfile::tempdir().unwrap();
    let config = Config::from_toml_str(
        &config_text(&gitlab.url(), &token, state.path(), 4096),
        "bench",
    )
    .expect("config")
    .config;
    let traces: Traces = Arc::default();
    let (controls, rx) = mpsc::channel(2);
    let manager = tokio::spawn(flotilla::manager::run_with(config, rx, hooks(&traces)));

    // Warm-up job (image cache, first connection).
    let warm = gitlab.enqueue(&token, job(&[&format!("echo {MARKER}")]));
    gitlab
        .wait_job(warm, Duration::from_secs(120), |j| j.state.is_finished())
        .await
        .expect("warm-up");

    let mut acked = Vec::new();
    let mut first_byte = Vec::new();
    for _ in 0..jobs {
        gitlab
            .wait_held_polls(1, Duration::from_secs(60))
            .await
            .expect("a held poll");
        let enqueued = Instant::now();
        let id = gitlab.enqueue(&token, job(&[&format!("echo {MARKER}")]));
        let trace = wait_for_trace(&traces, id).await;
        let first = wait_for_marker(&trace, MARKER).await;
        let record = gitlab
            .wait_job(id, Duration::from_secs(120), |j| j.state.is_finished())
            .await
            .expect("job");
        assert_eq!(
            record.state,
            JobState::Success,
            "{}",
            String::from_utf8_lossy(&record.trace)
        );
        let ack = record.acknowledged_at.expect("acknowledged");
        acked.push(ack.duration_since(enqueued).as_secs_f64() * 1000.0);
        first_byte.push(first.duration_since(enqueued).as_secs_f64() * 1000.0);
        traces.lock().unwrap().remove(&id);
    }
    let _ = controls.send(Control::Drain).await;
    let _ = manager.await;

    let docker = flotilla::docker::connect(None).await.expect("docker");
    let mut bare = Vec::new();
    for _ in 0..jobs.clamp(5, 50) {
        bare.push(bare_docker_first_byte(&docker).await);
    }
    println!("== pickup latency ({jobs} jobs, one at a time, enqueued during a held long poll)");
    let ack_p50 = summary("enqueue -> acknowledged (PUT running)", acked);
    let first_p50 = summary("enqueue -> first script byte in trace", first_byte);
    let bare_p50 = summary("bare docker create+start+attach -> 1st byte", bare);
    println!(
        "target: acknowledged p50 <= 20 ms: {}",
        verdict(ack_p50 <= 20.0)
    );
    println!(
        "target: first byte p50 <= 1.5 x bare ({:.2} ms): ratio {:.2}: {}",
        1.5 * bare_p50,
        first_p50 / bare_p50,
        verdict(first_p50 <= 1.5 * bare_p50)
    );
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "MET"
    } else {
        "NOT MET"
    }
}

fn intake_script(megabytes: usize) -> String {
    // 99 characters and a newline per line; `yes` repeats it, `head` stops at the byte count
    // (`yes` then dies of SIGPIPE: `|| true` keeps `set -o pipefail` from failing the job). The
    // end marker is assembled by the shell so that the echoed command line does not contain it.
    format!(
        "(yes 0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456 | head -c {}) || true; echo; END=END; echo \"{MARKER}-$END\"",
        megabytes * 1_000_000
    )
}

async fn intake(megabytes: usize) {
    let opts = FakeGitlabOptions {
        trace_limit_bytes: 2 << 30,
        ..Default::default()
    };
    let gitlab = FakeGitlab::start(opts).await.expect("fake gitlab");
    let token = "glrt-t1_benchintake".to_string();
    gitlab.add_runner(&token);
    let state = tempfile::tempdir().unwrap();
    let config = Config::from_toml_str(
        &config_text(&gitlab.url(), &token, state.path(), 512 * 1024),
        "bench",
    )
    .expect("config")
    .config;
    let traces: Traces = Arc::default();
    let (controls, rx) = mpsc::channel(2);
    let manager = tokio::spawn(flotilla::manager::run_with(config, rx, hooks(&traces)));
    let id = gitlab.enqueue(&token, job(&[&intake_script(megabytes)]));
    let trace = wait_for_trace(&traces, id).await;
    let start_len = {
        let mut rx = trace.subscribe();
        let _ = rx.changed().await;
        trace.len()
    };
    let started = Instant::now();
    let end = wait_for_marker(&trace, &format!("{MARKER}-END")).await;
    let stored = trace.len() - start_len;
    let secs = end.duration_since(started).as_secs_f64();
    let record = gitlab
        .wait_job(id, Duration::from_secs(900), |j| j.state.is_finished())
        .await
        .expect("job");
    assert_eq!(record.state, JobState::Success);
    let _ = controls.send(Control::Drain).await;
    let _ = manager.await;
    println!("== trace intake ({megabytes} MB in 100-byte lines, timestamps + masking on)");
    println!(
        "script bytes {:.0} MB, stored bytes {:.0} MB in {:.2} s: {:.1} MB/s of script output, {:.1} MB/s stored",
        megabytes as f64,
        stored as f64 / 1e6,
        secs,
        megabytes as f64 / secs,
        stored as f64 / 1e6 / secs
    );
    println!(
        "target: intake >= 100 MB/s: {}",
        verdict(megabytes as f64 / secs >= 100.0)
    );
    let docker = flotilla::docker::connect(None).await.expect("docker");
    let (bare_bytes, bare_secs) =
        bare_docker_attach_throughput(&docker, &intake_script(megabytes)).await;
    println!(
        "bare Docker attach of the same script (no manager): {:.0} MB in {:.2} s = {:.1} MB/s; the manager's intake is {:.0}% of it",
        bare_bytes as f64 / 1e6,
        bare_secs,
        bare_bytes as f64 / 1e6 / bare_secs,
        100.0 * (megabytes as f64 / secs) / (bare_bytes as f64 / 1e6 / bare_secs)
    );
    println!(
        "uploaded to the fake: {} bytes (paced PATCHes, then the final flush)",
        record.trace.len()
    );
}

/// Peak RSS of the real binary while it runs the intake job.
async fn peak_rss(megabytes: usize) {
    let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/flotilla");
    if !bin.exists() {
        println!(
            "== peak RSS: skipped, build target/release/flotilla first (cargo build --release)"
        );
        return;
    }
    let opts = FakeGitlabOptions {
        trace_limit_bytes: 2 << 30,
        ..Default::default()
    };
    let gitlab = FakeGitlab::start(opts).await.expect("fake gitlab");
    let token = "glrt-t1_benchrss01".to_string();
    gitlab.add_runner(&token);
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("config.toml");
    std::fs::write(
        &config_path,
        config_text(&gitlab.url(), &token, &dir.path().join("state"), 512 * 1024),
    )
    .unwrap();
    let mut child = std::process::Command::new(&bin)
        .args(["run", "-c"])
        .arg(&config_path)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("flotilla");
    let id = gitlab.enqueue(&token, job(&[&intake_script(megabytes)]));
    let pid = child.id();
    let mut peak_kb = 0u64;
    let done = gitlab.wait_job(id, Duration::from_secs(900), |j| j.state.is_finished());
    tokio::pin!(done);
    loop {
        tokio::select! {
            record = &mut done => { record.expect("job"); break; }
            _ = tokio::time::sleep(Duration::from_millis(50)) => {
                if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                    for line in status.lines().filter(|l| l.starts_with("VmHWM:")) {
                        let kb: u64 = line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
                        peak_kb = peak_kb.max(kb);
                    }
                }
            }
        }
    }
    let _ = std::process::Command::new("kill")
        .args(["-QUIT", &pid.to_string()])
        .status();
    let _ = child.wait();
    println!(
        "== manager peak RSS while running the {megabytes} MB job: {:.1} MB (VmHWM)",
        peak_kb as f64 / 1024.0
    );
    println!(
        "target: RSS <= 40 MB: {}",
        verdict((peak_kb as f64 / 1024.0) <= 40.0)
    );
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let status = std::process::Command::new("bash")
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-test-images.sh"))
        .status()
        .expect("build test images");
    assert!(status.success());
    let jobs = env_usize("BENCH_JOBS", 200);
    let megabytes = env_usize("BENCH_INTAKE_MB", 200);
    if jobs > 0 {
        pickup(jobs).await;
    }
    intake(megabytes).await;
    peak_rss(megabytes).await;
}
