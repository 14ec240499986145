//! Which `flotilla` binary a bench measures, shared by the `scale` and `soak` benches (each
//! includes it with `#[path]`).

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
