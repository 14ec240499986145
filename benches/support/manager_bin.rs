//! The manager process a bench measures: which `flotilla` binary, a free port for its
//! `/metrics`, its alive tokio tasks read from there, and the global section of its config. Shared by the `scale` and `soak`
//! benches (each includes it with `#[path]`).

use std::path::{Path, PathBuf};

/// `BENCH_FLOTILLA` or `target/release/flotilla`, else `target/debug/flotilla` (printed: a
/// debug build costs several times the CPU of a release one).
pub fn manager_binary() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin = std::env::var("BENCH_FLOTILLA")
        .or_else(|_| std::env::var("BENCH_BIN"))
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            let release = root.join("target/release/flotilla");
            if release.exists() {
                release
            } else {
                root.join("target/debug/flotilla")
            }
        });
    assert!(
        bin.exists(),
        "build the manager first: cargo build --release --bin flotilla"
    );
    eprintln!("manager binary: {}", bin.display());
    bin
}

/// `flotilla_tokio_alive_tasks` from the manager's /metrics.
pub async fn alive_tasks(metrics: &str) -> Option<u64> {
    let body = reqwest::get(metrics).await.ok()?.text().await.ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix("flotilla_tokio_alive_tasks "))
        .and_then(|v| v.trim().parse().ok())
}

/// The global section of a bench manager's `config.toml`: `concurrent`, a 3 s
/// `check_interval`, the log level (`BENCH_LOG`, else `error`), `/metrics` on `port` and
/// `state_dir`; the bench appends its own keys and runners.
pub fn global_section(concurrent: u64, port: u16, state_dir: &Path) -> String {
    let log = std::env::var("BENCH_LOG").unwrap_or_else(|_| "error".into());
    format!(
        r#"concurrent = {concurrent}
check_interval = 3
log_level = "{log}"
listen_address = "127.0.0.1:{port}"
state_dir = "{state}"
"#,
        state = state_dir.display(),
    )
}

/// A port on 127.0.0.1 free at the time of asking.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}
