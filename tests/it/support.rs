//! Helpers shared by the integration tests: the test images (built once per test process by
//! `scripts/build-test-images.sh`), a connection to the local Docker engine, waiting for text to
//! show up in a job trace, and finding (or checking the absence of) a job's objects on the engine
//! by their `com.flotilla.job-id` label.
#![allow(dead_code)]

use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder,
};
use bollard::Docker;
use flotilla::executor::LABEL_JOB_ID;
use flotilla::trace::{JobTrace, TraceSettings};
use std::collections::HashMap;
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

/// The label filter selecting a job's objects.
pub fn job_filter(job_id: i64) -> HashMap<&'static str, Vec<String>> {
    HashMap::from([("label", vec![format!("{LABEL_JOB_ID}={job_id}")])])
}

/// No container, volume or network with the job's label remains.
pub async fn assert_nothing_left(docker: &Docker, job_id: i64) {
    let filter = job_filter(job_id);
    let containers = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filter)
                .build(),
        ))
        .await
        .expect("listing containers");
    assert!(containers.is_empty(), "containers left: {containers:?}");
    let volumes = docker
        .list_volumes(Some(
            ListVolumesOptionsBuilder::new().filters(&filter).build(),
        ))
        .await
        .expect("listing volumes");
    let volumes = volumes.volumes.unwrap_or_default();
    assert!(volumes.is_empty(), "volumes left: {volumes:?}");
    let networks = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::new().filters(&filter).build(),
        ))
        .await
        .expect("listing networks");
    assert!(networks.is_empty(), "networks left: {networks:?}");
}

/// The job's build container while it runs.
pub async fn inspect_build_container(
    docker: &Docker,
    job_id: i64,
) -> bollard::models::ContainerInspectResponse {
    let found = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&job_filter(job_id))
                .build(),
        ))
        .await
        .expect("listing containers");
    assert_eq!(found.len(), 1, "one build container: {found:?}");
    let id = found[0].id.clone().expect("a container id");
    docker
        .inspect_container(&id, None)
        .await
        .expect("inspecting the build container")
}

/// Lists the job's containers until none is left, at most `within`.
pub async fn wait_until_nothing_left(docker: &Docker, job_id: i64, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    let filter = job_filter(job_id);
    let list = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filter)
        .build();
    loop {
        let left = docker
            .list_containers(Some(list.clone()))
            .await
            .expect("listing containers");
        if left.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "containers still there after {within:?}: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_nothing_left(docker, job_id).await;
}
