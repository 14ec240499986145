//! Hardening (issue 12): what a killed process left on the engine is removed at the next start,
//! and hostile jobs fail alone while the manager keeps running.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{ContainerCreateBody, NetworkCreateRequest, VolumeCreateRequest};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, RemoveContainerOptionsBuilder,
};

use crate::harness::{
    self, config, config_text, fake_gitlab, InProcessManager, DEADLINE, TEST_IMAGE,
};
use crate::support;

/// Waits until `probe` is true, polling every 200 ms, or panics after `within`.
async fn wait_until<F, Fut>(what: &str, within: Duration, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !probe().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn labels(manager: &str, run: &str) -> HashMap<String, String> {
    HashMap::from([
        (
            flotilla::executor::LABEL_MANAGED.to_string(),
            "true".to_string(),
        ),
        (
            flotilla::executor::LABEL_MANAGER.to_string(),
            manager.to_string(),
        ),
        (flotilla::executor::LABEL_RUN.to_string(), run.to_string()),
    ])
}

async fn sleeper(docker: &bollard::Docker, name: &str, labels: HashMap<String, String>) {
    let body = ContainerCreateBody {
        image: Some(TEST_IMAGE.to_string()),
        cmd: Some(vec!["sleep".into(), "300".into()]),
        labels: Some(labels),
        ..Default::default()
    };
    let options = CreateContainerOptionsBuilder::new().name(name).build();
    docker
        .create_container(Some(options), body)
        .await
        .expect("create");
    docker
        .start_container(
            name,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await
        .expect("start");
}

async fn exists(docker: &bollard::Docker, container: &str) -> bool {
    docker
        .inspect_container(container, None::<InspectContainerOptions>)
        .await
        .is_ok()
}

#[tokio::test]
async fn a_restart_removes_what_a_killed_process_left_on_the_engine() {
    harness::ensure_test_image();
    let docker = support::docker().await;
    let suffix = format!("{:08x}", rand_suffix());
    let manager_id = format!("it-leftovers-{suffix}");
    let other_id = format!("it-other-{suffix}");
    // What a killed run of this manager left: a running container, a volume, a network.
    let left = format!("flotilla-it-left-{suffix}");
    let foreign = format!("flotilla-it-foreign-{suffix}");
    sleeper(&docker, &left, labels(&manager_id, "killed-run")).await;
    sleeper(&docker, &foreign, labels(&other_id, "killed-run")).await;
    let volume = format!("flotilla-it-left-{suffix}-builds");
    docker
        .create_volume(VolumeCreateRequest {
            name: Some(volume.clone()),
            labels: Some(labels(&manager_id, "killed-run")),
            ..Default::default()
        })
        .await
        .expect("volume");
    let network = format!("flotilla-it-left-{suffix}-network");
    docker
        .create_network(NetworkCreateRequest {
            name: network.clone(),
            labels: Some(labels(&manager_id, "killed-run")),
            ..Default::default()
        })
        .await
        .expect("network");

    let (gitlab, token) = fake_gitlab(Default::default()).await;
    let state_dir = tempfile::tempdir().expect("tempdir");
    let text = config_text(
        &gitlab.url(),
        &token,
        state_dir.path(),
        &format!("manager_id = \"{manager_id}\""),
        "",
    );
    let manager = InProcessManager::start_with(config(&text), state_dir, Default::default());
    // Polling is not held up by the cleanup: a job runs meanwhile.
    let id = gitlab.enqueue(&token, harness::job(&["echo still-serving"], &[]));
    wait_until("the leftovers removed", DEADLINE, || async {
        let volumes = docker
            .list_volumes(None::<bollard::query_parameters::ListVolumesOptions>)
            .await
            .map(|v| v.volumes.unwrap_or_default())
            .unwrap_or_default();
        let networks = docker
            .inspect_network(
                &network,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await;
        !exists(&docker, &left).await
            && !volumes.iter().any(|v| v.name == volume)
            && networks.is_err()
    })
    .await;
    let (record, trace) = harness::finished(&gitlab, id).await;
    assert_eq!(record.state, testkit::JobState::Success, "{trace}");
    assert!(
        exists(&docker, &foreign).await,
        "another manager's container was removed"
    );
    manager.drain().await;
    let force = RemoveContainerOptionsBuilder::new().force(true).build();
    docker
        .remove_container(&foreign, Some(force))
        .await
        .expect("remove the foreign container");
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ std::process::id())
        .unwrap_or(7)
}
