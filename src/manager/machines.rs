//! The docker+machine side of the manager: one Compute client per GCE project (managers sharing
//! a project share its API quota, so one client per project keeps one rate limit), the Docker CA
//! that the fleets' VMs trust, and one fleet per docker+machine runner.

use crate::cloud::{Cloud, CloudError, GceCloud, GceCloudSettings, GceMetrics};
use crate::config::{Config, ExecutorKind, RunnerConfig};
use crate::docker::{DockerCa, TlsError};
use crate::fleet::{
    self, FleetError, FleetHandle, FleetSettings, RunnerRegistry, VmAccessError, VmDockerAccess,
};
use async_trait::async_trait;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why the fleets could not be started.
#[derive(Debug, thiserror::Error)]
pub enum MachinesError {
    /// The Docker CA could not be made.
    #[error("cannot make the Docker CA for VMs: {0}")]
    Ca(#[from] TlsError),
    /// The Compute client could not be built.
    #[error("cannot build the Compute Engine client for project {project}: {source}")]
    Cloud {
        /// The project.
        project: String,
        /// What failed.
        #[source]
        source: CloudError,
    },
    /// A runner's fleet settings are unusable.
    #[error(transparent)]
    Fleet(#[from] FleetError),
}

/// Reaches VMs' dockerd with the process's Docker CA.
struct CaDockerAccess {
    ca: Arc<DockerCa>,
}

#[async_trait]
impl VmDockerAccess for CaDockerAccess {
    fn vm_metadata(&self, vm_name: &str) -> Result<Vec<(String, String)>, VmAccessError> {
        let material = self
            .ca
            .server_material(vm_name)
            .map_err(|e| VmAccessError::Material {
                vm: vm_name.to_string(),
                source: Box::new(e),
            })?;
        let mut items: Vec<(String, String)> = material
            .metadata_items()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        items.push((
            crate::fleet::READY_MARKER_KEY.to_string(),
            crate::fleet::ready_marker(vm_name),
        ));
        Ok(items)
    }

    async fn connect(
        &self,
        vm_name: &str,
        addr: SocketAddr,
    ) -> Result<bollard::Docker, VmAccessError> {
        self.ca
            .connect(vm_name, addr)
            .await
            .map_err(|e| VmAccessError::Connect {
                vm: vm_name.to_string(),
                source: Box::new(e),
            })
    }
}

/// What makes two runners share one Compute client: project, endpoint and credentials. A
/// reload that changes it for a runner moves the runner to a new pool.
pub(crate) type CloudKey = (String, Option<String>, Option<PathBuf>);

/// The key of a runner's Compute client (`None` for a docker runner).
pub(crate) fn cloud_key(runner: &RunnerConfig) -> Option<CloudKey> {
    if runner.executor != ExecutorKind::DockerMachine {
        return None;
    }
    let gce = runner.gce.as_ref()?;
    Some((
        gce.project.clone(),
        gce.endpoint.clone(),
        gce.credentials_file.clone(),
    ))
}

/// Every pool of this process and what starts new ones (at start, and for runners a reload
/// adds). Owned by the manager's supervisor; shut down once at the end.
pub(crate) struct Fleets {
    manager_id: String,
    /// This host's id (the `flotilla-host` label of its VMs).
    host_id: String,
    registry: prometheus::Registry,
    /// Made with the first pool (a process without docker+machine runners makes none).
    access: Option<Arc<dyn VmDockerAccess>>,
    pools: RunnerRegistry,
    clouds: HashMap<CloudKey, Arc<dyn Cloud>>,
    /// The pools' series (machine states, creations, VM-seconds) on the manager's registry.
    fleet_metrics: fleet::FleetMetrics,
    /// One set of Compute API counters for every project's client, registered with the first.
    gce_metrics: Option<GceMetrics>,
    /// Every pool by runner short token, as the status page shows them.
    live: crate::metrics::LivePools,
    /// Every pool started, also those retired by a reload (shutting down a stopped pool is a
    /// no-op).
    all: Vec<FleetHandle>,
    /// The fleets' own tasks (kept apart from job tasks so a drain can wait for jobs first).
    pub tracker: TaskTracker,
    /// Stops every fleet task once the fleets are shut down.
    pub cancel: CancellationToken,
}

impl Fleets {
    /// No pools yet; [`Fleets::start`] makes them.
    pub(crate) fn new(
        manager_id: &str,
        host_id: &str,
        registry: &prometheus::Registry,
        fleet_metrics: &fleet::FleetMetrics,
        live: crate::metrics::LivePools,
    ) -> Fleets {
        Fleets {
            manager_id: manager_id.to_string(),
            host_id: host_id.to_string(),
            registry: registry.clone(),
            access: None,
            pools: RunnerRegistry::new(),
            clouds: HashMap::new(),
            fleet_metrics: fleet_metrics.clone(),
            gce_metrics: None,
            live,
            all: Vec::new(),
            tracker: TaskTracker::new(),
            cancel: CancellationToken::new(),
        }
    }

    /// Starts the pool of docker+machine `runner` (its settings from `config`).
    pub(crate) async fn start(
        &mut self,
        config: &Config,
        runner: &RunnerConfig,
    ) -> Result<FleetHandle, MachinesError> {
        let mut settings = FleetSettings::for_runner(config, runner, &self.manager_id)?;
        settings.host_id.clone_from(&self.host_id);
        settings.validate()?;
        let access = match &self.access {
            Some(c) => c.clone(),
            None => {
                let c: Arc<dyn VmDockerAccess> = Arc::new(CaDockerAccess {
                    ca: Arc::new(DockerCa::new()?),
                });
                self.access = Some(c.clone());
                c
            }
        };
        let gce = &settings.gce;
        let key = (
            gce.project.clone(),
            gce.endpoint.clone(),
            gce.credentials_file.clone(),
        );
        let cloud = match self.clouds.get(&key) {
            Some(cloud) => cloud.clone(),
            None => {
                let gce_metrics = match &self.gce_metrics {
                    Some(metrics) => metrics.clone(),
                    None => {
                        let metrics = GceMetrics::register(&self.registry).map_err(|e| {
                            MachinesError::Cloud {
                                project: gce.project.clone(),
                                source: CloudError::Failed {
                                    method: "setup",
                                    message: format!("registering the gce metrics: {e}"),
                                },
                            }
                        })?;
                        self.gce_metrics = Some(metrics.clone());
                        metrics
                    }
                };
                let mut cloud_settings = GceCloudSettings::new(&gce.project, self.registry.clone());
                cloud_settings.metrics = Some(gce_metrics);
                cloud_settings.endpoint = gce.endpoint.clone();
                cloud_settings.credentials_file = gce.credentials_file.clone();
                cloud_settings.api_rate_per_minute = gce.api_rate_per_minute;
                let cloud: Arc<dyn Cloud> =
                    Arc::new(GceCloud::new(cloud_settings).await.map_err(|source| {
                        MachinesError::Cloud {
                            project: gce.project.clone(),
                            source,
                        }
                    })?);
                self.clouds.insert(key, cloud.clone());
                cloud
            }
        };
        let short_token = runner.short_token().to_string();
        let handle = fleet::start_with_metrics(
            settings,
            cloud,
            access,
            self.pools.clone(),
            &self.fleet_metrics,
            &self.tracker,
            self.cancel.child_token(),
        )?;
        self.all.push(handle.clone());
        self.live
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push((short_token, handle.clone()));
        Ok(handle)
    }

    /// Waits until a pool finds VMs of another host with this manager id; what it saw.
    pub(crate) async fn conflict(&self) -> String {
        self.pools.conflict().await
    }

    /// Whether any pool was started.
    pub(crate) fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// Every pool started (for drains and progress).
    pub(crate) fn handles(&self) -> &[FleetHandle] {
        &self.all
    }

    /// VMs held by every pool now (for drain progress).
    pub(crate) async fn vms_held(&self) -> u32 {
        let mut total = 0;
        for handle in &self.all {
            total += handle.snapshot().await.counts.total();
        }
        total
    }

    /// Brings every pool's shutdown deadline forward to `deadline`.
    pub(crate) fn hasten_shutdown(&self, deadline: tokio::time::Instant) {
        for handle in &self.all {
            handle.hasten_shutdown(deadline);
        }
    }

    /// Deletes every VM of every pool by `deadline` and stops the pools. Returns the names of
    /// VMs whose deletion was not confirmed in time (the next start's reconcile deletes them).
    pub(crate) async fn shutdown(&self, deadline: tokio::time::Instant) -> Vec<String> {
        let asks = self.all.iter().map(|handle| handle.shutdown(deadline));
        let unconfirmed: Vec<String> = futures_util::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect();
        self.cancel.cancel();
        self.tracker.close();
        let _ = tokio::time::timeout_at(deadline, self.tracker.wait()).await;
        unconfirmed
    }
}
