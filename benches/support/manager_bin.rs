//! The manager process a bench measures: which `flotilla` binary, a free port for its
//! `/metrics`, and its alive tokio tasks read from there. Shared by the `scale` and `soak`
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

/// A port on 127.0.0.1 free at the time of asking.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}
