//! What an earlier process of this manager left on a Docker engine after `kill -9` (or a power
//! cut): its job containers, builds volumes and per-job networks, found by the
//! `com.flotilla.manager` label (this manager's id, per `state_dir`) and removed at the next
//! start, as the fleet deletes the VMs of a killed process. Objects of this process (its
//! `com.flotilla.run` label) and of other managers are never touched.

use super::cleanup::{LABEL_MANAGER, LABEL_RUN};
use super::error::is_not_found;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveVolumeOptions,
};
use bollard::Docker;
use std::collections::HashMap;

/// How many objects of earlier processes were removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Leftovers {
    /// Containers removed (with their anonymous volumes).
    pub containers: usize,
    /// Named volumes removed.
    pub volumes: usize,
    /// Networks removed.
    pub networks: usize,
}

/// Removes every container, volume and network labelled with `manager` whose run label is not
/// `this_run`. Errors other than "already gone" are returned; what was removed before stays
/// removed.
pub async fn remove_leftovers(
    docker: &Docker,
    manager: &str,
    this_run: &str,
) -> Result<Leftovers, bollard::errors::Error> {
    let mut done = Leftovers::default();
    if manager.is_empty() {
        return Ok(done);
    }
    let ours = format!("{LABEL_MANAGER}={manager}");
    let stale = |labels: Option<&HashMap<String, String>>| {
        labels.and_then(|l| l.get(LABEL_RUN)).map(String::as_str) != Some(this_run)
    };
    let filters = HashMap::from([("label", vec![ours.clone()])]);
    let list = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let force = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    for c in docker.list_containers(Some(list)).await? {
        let Some(id) = c.id.filter(|_| stale(c.labels.as_ref())) else {
            continue;
        };
        match docker.remove_container(&id, Some(force.clone())).await {
            Ok(()) => done.containers += 1,
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e),
        }
    }
    let list = ListVolumesOptionsBuilder::new().filters(&filters).build();
    let volumes = docker
        .list_volumes(Some(list))
        .await?
        .volumes
        .unwrap_or_default();
    for v in volumes.into_iter().filter(|v| stale(Some(&v.labels))) {
        match docker
            .remove_volume(&v.name, None::<RemoveVolumeOptions>)
            .await
        {
            Ok(()) => done.volumes += 1,
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e),
        }
    }
    let list = ListNetworksOptionsBuilder::new().filters(&filters).build();
    for n in docker.list_networks(Some(list)).await? {
        let Some(id) = n.id.filter(|_| stale(n.labels.as_ref())) else {
            continue;
        };
        match docker.remove_network(&id).await {
            Ok(()) => done.networks += 1,
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}
