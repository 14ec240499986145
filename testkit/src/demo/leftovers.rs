//! The docker+machine demo's leak check, run after flotilla's drain and before the fakes stop
//! (the fake Compute Engine's own shutdown would remove what flotilla left and hide it): no
//! instance in the fake, and on the Docker engine no container, network or volume labelled
//! `com.flotilla.vm` with one of this run's VM names. Lists; removes nothing.

use std::collections::{BTreeSet, HashMap};

use anyhow::Context as _;
use bollard::query_parameters::{ListContainersOptions, ListNetworksOptions, ListVolumesOptions};
use bollard::Docker;

use crate::gce::VM_LABEL;
use crate::FakeGce;

/// What is left after the run (names).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Leftovers {
    /// Instances still in the fake (any status).
    pub vms: Vec<String>,
    /// Containers of this run's VMs.
    pub containers: Vec<String>,
    /// Networks of this run's VMs.
    pub networks: Vec<String>,
    /// Volumes of this run's VMs.
    pub volumes: Vec<String>,
}

impl Leftovers {
    /// Whether nothing is left.
    pub(super) fn is_empty(&self) -> bool {
        self.vms.is_empty()
            && self.containers.is_empty()
            && self.networks.is_empty()
            && self.volumes.is_empty()
    }

    /// "nothing (…)" or what is left, by kind.
    pub(super) fn describe(&self) -> String {
        if self.is_empty() {
            return "nothing: no VM in the fake GCE, no job container, network or volume".into();
        }
        let kinds = [
            ("VMs", &self.vms),
            ("containers", &self.containers),
            ("networks", &self.networks),
            ("volumes", &self.volumes),
        ];
        kinds
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| format!("{} {k} ({})", v.len(), v.join(", ")))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Looks for what this run left: `vms` are the names of every VM it saw.
pub(super) async fn check(gce: &FakeGce, vms: &BTreeSet<String>) -> anyhow::Result<Leftovers> {
    let docker = Docker::connect_with_local_defaults()
        .context("connecting to the Docker engine")?
        .negotiate_version()
        .await
        .context("negotiating the Docker API version")?;
    let ours = |labels: Option<&HashMap<String, String>>| {
        labels
            .and_then(|l| l.get(VM_LABEL))
            .is_some_and(|vm| vms.contains(vm))
    };
    let filters = Some(HashMap::from([(
        "label".to_owned(),
        vec![VM_LABEL.to_owned()],
    )]));
    let containers = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: filters.clone(),
            ..Default::default()
        }))
        .await
        .context("listing containers")?
        .into_iter()
        .filter(|c| ours(c.labels.as_ref()))
        .map(|c| {
            c.names
                .and_then(|n| n.first().cloned())
                .or(c.id)
                .unwrap_or_default()
        })
        .collect();
    let networks = docker
        .list_networks(Some(ListNetworksOptions {
            filters: filters.clone(),
        }))
        .await
        .context("listing networks")?
        .into_iter()
        .filter(|n| ours(n.labels.as_ref()))
        .map(|n| n.name.unwrap_or_default())
        .collect();
    let volumes = docker
        .list_volumes(Some(ListVolumesOptions { filters }))
        .await
        .context("listing volumes")?
        .volumes
        .unwrap_or_default()
        .into_iter()
        .filter(|v| ours(Some(&v.labels)))
        .map(|v| v.name)
        .collect();
    Ok(Leftovers {
        vms: gce.instances().into_iter().map(|i| i.name).collect(),
        containers,
        networks,
        volumes,
    })
}
