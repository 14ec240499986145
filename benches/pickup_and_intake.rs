//! The foundation benchmark (not a test): prints numbers for BENCHMARKS.md.
//!
//! 1. Pickup latency over N jobs run one at a time, each enqueued while the fake GitLab holds the
//!    runner's long poll: enqueue → acknowledged (PUT running seen by the fake) and enqueue →
//!    first script byte in the manager's trace buffer, p50/p99; beside it, a bare Docker
//!    create+start+attach of the same image to its first output byte.
//! 2. Trace intake: a job printing 200 MB in 100-byte lines between a start and an end marker
//!    (timestamps and masking on, `output_limit` 512 MiB, uploads paced as GitLab Runner paces
//!    them): script bytes entering the trace buffer per second from marker to marker; beside
//!    it, a bare bollard attach of the same script from its first frame to its end. Rounds of
//!    the two alternate (BENCH_INTAKE_ROUNDS, 3); the medians are compared.
//! 3. The manager's peak RSS (VmHWM) while it runs that job, as the real `flotilla` binary.
//!
//! Run: `cargo bench --bench pickup_and_intake` (env: BENCH_JOBS=200, BENCH_INTAKE_MB=200,
//! BENCH_INTAKE_ROUNDS=3).
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

/// How [`wait_for_marker`] learns that the trace grew.
#[derive(Clone, Copy)]
enum Watch {
    /// Woken by every append (the trace's change notification): for latency.
    EveryChange,
    /// Looking every so often: for throughput, where a wake-up per 16 KiB append would put the
    /// bench's own reads on the cores the manager uses.
    Every(Duration),
}

/// Waits until the trace holds `marker` at or after `from`, scanning only the new bytes each
/// time it grows (with `tail`, at most the last `tail` of them): when it was seen, and the
/// trace's length then.
async fn wait_for_marker(
    trace: &JobTrace,
    marker: &str,
    tail: Option<u64>,
    from: u64,
    watch: Watch,
) -> (Instant, u64) {
    // This runs in the timed window, on the cores the manager uses: each look reads only the
    // new bytes, and searches them with memmem. The end marker ends the script's output (only
    // the runner's few closing lines follow it), so its scan reads at most the last 64 KiB.
    let mut rx = trace.subscribe();
    let mut scanned = from;
    loop {
        let len = trace.len();
        if len > scanned {
            let mut start = scanned.saturating_sub(marker.len() as u64).max(from);
            if let Some(tail) = tail {
                start = start.max(len.saturating_sub(tail));
            }
            let bytes = trace
                .read_at(start, (len - start) as usize)
                .unwrap_or_default();
            if memchr::memmem::find(&bytes, marker.as_bytes()).is_some() {
                return (Instant::now(), len);
            }
            scanned = len;
        }
        match watch {
            Watch::EveryChange => {
                if rx.changed().await.is_err() {
                    return (Instant::now(), trace.len());
                }
            }
            Watch::Every(period) => tokio::time::sleep(period).await,
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
        let (first, _) =
            wait_for_marker(&trace, MARKER, Some(64 * 1024), 0, Watch::EveryChange).await;
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
    // A start marker, then 99 characters and a newline per line (`yes` repeats it, `head`
    // stops at the byte count; `yes` then dies of SIGPIPE: `|| true` keeps `set -o pipefail`
    // from failing the job), then an end marker. The shell assembles the markers so that the
    // echoed command line does not contain them.
    format!(
        "START=START; echo \"{MARKER}-$START\"; (yes 0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456 | head -c {}) || true; echo; END=END; echo \"{MARKER}-$END\"",
        megabytes * 1_000_000
    )
}

/// One intake measurement: seconds from the start marker to the end marker, and the bytes
/// that arrived between them.
struct Intake {
    secs: f64,
    bytes: u64,
}

impl Intake {
    fn script_mb_per_s(&self, megabytes: usize) -> f64 {
        megabytes as f64 / self.secs
    }
}

/// Runs the intake job through the manager: the window is the start marker entering the trace
/// buffer to the end marker entering it (the job's setup and teardown are not in it).
async fn manager_intake(
    gitlab: &FakeGitlab,
    token: &str,
    traces: &Traces,
    megabytes: usize,
) -> Intake {
    let start_marker = format!("{MARKER}-START");
    let id = gitlab.enqueue(token, job(&[&intake_script(megabytes)]));
    let trace = wait_for_trace(traces, id).await;
    // Looking every 2 ms puts at most 2 ms on each end of a window of seconds.
    let watch = Watch::Every(Duration::from_millis(2));
    let (started, start_len) = wait_for_marker(&trace, &start_marker, None, 0, watch).await;
    let end_marker = format!("{MARKER}-END");
    let (end, end_len) =
        wait_for_marker(&trace, &end_marker, Some(64 * 1024), start_len, watch).await;
    let record = gitlab
        .wait_job(id, Duration::from_secs(900), |j| j.state.is_finished())
        .await
        .expect("job");
    assert_eq!(record.state, JobState::Success);
    traces.lock().unwrap().remove(&id);
    Intake {
        secs: end.duration_since(started).as_secs_f64(),
        bytes: end_len - start_len,
    }
}

/// The same script in a bare container, read with bollard alone: the window is the frame that
/// holds the start marker to the end of the stream.
async fn bare_intake(docker: &bollard::Docker, megabytes: usize) -> Intake {
    let (id, mut output, _) = bare_container(docker, &intake_script(megabytes)).await;
    let mut started = None;
    let mut bytes = 0u64;
    while let Some(Ok(chunk)) = output.next().await {
        if started.is_none() {
            started = Some(Instant::now());
        }
        bytes += chunk.into_bytes().len() as u64;
    }
    let secs = started.map_or(f64::NAN, |s| s.elapsed().as_secs_f64());
    remove_container(docker, &id).await;
    Intake { secs, bytes }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

async fn intake(megabytes: usize, rounds: usize) {
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
    let docker = flotilla::docker::connect(None).await.expect("docker");
    println!(
        "== trace intake ({megabytes} MB in 100-byte lines, timestamps + masking on; {rounds} rounds, the manager and a bare attach alternating)"
    );
    let (mut managed, mut bare) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let m = manager_intake(&gitlab, &token, &traces, megabytes).await;
        let b = bare_intake(&docker, megabytes).await;
        println!(
            "round {round}: manager {:.1} MB/s of script output ({:.0} MB stored in {:.2} s, {:.1} MB/s stored); bare attach {:.1} MB/s ({:.0} MB in {:.2} s); {:.0}%",
            m.script_mb_per_s(megabytes),
            m.bytes as f64 / 1e6,
            m.secs,
            m.bytes as f64 / 1e6 / m.secs,
            b.script_mb_per_s(megabytes),
            b.bytes as f64 / 1e6,
            b.secs,
            100.0 * m.script_mb_per_s(megabytes) / b.script_mb_per_s(megabytes)
        );
        managed.push(m.script_mb_per_s(megabytes));
        bare.push(b.script_mb_per_s(megabytes));
    }
    let _ = controls.send(Control::Drain).await;
    let _ = manager.await;
    let (m, b) = (median(managed), median(bare));
    println!(
        "median: manager {m:.1} MB/s of script output, bare attach {b:.1} MB/s: the manager's intake is {:.0}% of it",
        100.0 * m / b
    );
    println!(
        "target: intake >= 90% of a bare attach: {}",
        verdict(m >= 0.9 * b)
    );
    println!("target: intake >= 100 MB/s: {}", verdict(m >= 100.0));
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
    intake(megabytes, env_usize("BENCH_INTAKE_ROUNDS", 3).max(1)).await;
    peak_rss(megabytes).await;
}
