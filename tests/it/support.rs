//! Helpers shared by the integration tests: the test images (built once per test process by
//! `scripts/build-test-images.sh`), a connection to the local Docker engine, and waiting for text
//! to show up in a job trace.
#![allow(dead_code)]

use flotilla::trace::{JobTrace, TraceSettings};
use std::sync::OnceLock;
use std::time::Duration;

/// The busybox image every executor test runs in.
pub const BUSYBOX: &str = "flotilla-test/busybox:latest";

/// Builds the test images if missing (once per process; the script itself is idempotent and
/// serialises concurrent processes with a lock).
pub fn ensure_test_images() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/build-test-images.sh");
        let status = std::process::Command::new(script)
            .status()
            .unwrap_or_else(|e| panic!("running {script}: {e}"));
        assert!(status.success(), "{script} failed: {status}");
    });
}

/// A connection to the local engine, API version negotiated.
pub async fn docker() -> bollard::Docker {
    flotilla::docker::connect(None)
        .await
        .expect("the local Docker engine must be reachable for integration tests")
}

/// A trace without timestamps (plain text to search), limit 4 MiB.
pub fn plain_trace() -> JobTrace {
    JobTrace::new(TraceSettings {
        limit_bytes: 4 << 20,
        timestamps: false,
        ..TraceSettings::default()
    })
    .expect("a new trace")
}

/// Everything in the trace so far, lossily decoded.
pub fn trace_text(trace: &JobTrace) -> String {
    String::from_utf8_lossy(
        &trace
            .read_at(0, usize::MAX >> 1)
            .expect("reading the trace"),
    )
    .into_owned()
}

/// Waits until the trace contains `needle`, at most `within`; panics with the trace otherwise.
pub async fn wait_for_text(trace: &JobTrace, needle: &str, within: Duration) {
    let mut changed = trace.subscribe();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if trace_text(trace).contains(needle) {
            return;
        }
        match tokio::time::timeout_at(deadline, changed.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => panic!("trace closed before {needle:?} appeared"),
            Err(_) => panic!(
                "{needle:?} did not appear within {within:?}; trace:\n{}",
                trace_text(trace)
            ),
        }
    }
}
