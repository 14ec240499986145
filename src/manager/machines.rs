//! The docker+machine side of the manager: one Compute client per GCE project (managers sharing
//! a project share its API quota, so one client per project keeps one rate limit), the Docker CA
//! that the fleets' VMs trust, and one fleet per docker+machine runner.

use crate::cloud::{Cloud, CloudError, GceCloud, GceCloudSettings, GceMetrics};
use crate::config::{Config, ExecutorKind, RunnerConfig, RunnerIdentity};
use crate::docker::{DockerCa, TlsError};
use crate::fleet::{self, FleetError, FleetHandle, FleetSettings, RunnerRegistry, VmConnector};
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
struct CaConnector {
    ca: Arc<DockerCa>,
}

#[async_trait]
impl VmConnector for CaConnector {
    fn vm_metadata(&self, vm_name: &str) -> Result<Vec<(String, String)>, String> {
        let material = self
            .ca
            .server_material(vm_name)
            .map_err(|e| e.to_string())?;
        Ok(material
            .metadata_items()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }

    async fn connect(&self, vm_name: &str, addr: SocketAddr) -> Result<bollard::Docker, String> {
        self.ca
            .connect(vm_name, addr)
            .await
            .map_err(|e| e.to_string())
    }
}

/// The running fleets, by runner identity. Created at start; shut down by the supervisor.
#[derive(Default)]
pub(crate) struct Fleets {
    /// One handle per docker+machine runner.
    pub by_runner: HashMap<RunnerIdentity, FleetHandle>,
    /// The fleets' own tasks (kept apart from job tasks so a drain can wait for jobs first).
    pub tracker: TaskTracker,
    /// Stops every fleet task once the fleets are shut down.
    pub cancel: CancellationToken,
}

/// What makes two runners share one Compute client: project, endpoint and credentials.
type CloudKey = (String, Option<String>, Option<PathBuf>);

/// Starts a fleet for every docker+machine runner of `config`.
pub(crate) async fn start_fleets(
    config: &Config,
    manager_id: &str,
    registry: &prometheus::Registry,
    fleet_metrics: &fleet::FleetMetrics,
) -> Result<Fleets, MachinesError> {
    let mut fleets = Fleets::default();
    let runners: Vec<&RunnerConfig> = config
        .runners
        .iter()
        .filter(|r| r.executor == ExecutorKind::DockerMachine)
        .collect();
    if runners.is_empty() {
        return Ok(fleets);
    }
    let connector: Arc<dyn VmConnector> = Arc::new(CaConnector {
        ca: Arc::new(DockerCa::new()?),
    });
    let pools = RunnerRegistry::new();
    // One set of API-call counters for every project's client, registered once.
    let gce_metrics = GceMetrics::register(registry).map_err(|e| MachinesError::Cloud {
        project: "(every project)".into(),
        source: CloudError::Failed {
            method: "setup",
            message: format!("registering gce metrics: {e}"),
        },
    })?;
    let mut clouds: HashMap<CloudKey, Arc<dyn Cloud>> = HashMap::new();
    for runner in runners {
        let settings = FleetSettings::for_runner(config, runner, manager_id)?;
        let gce = &settings.gce;
        let key = (
            gce.project.clone(),
            gce.endpoint.clone(),
            gce.credentials_file.clone(),
        );
        let cloud = match clouds.get(&key) {
            Some(cloud) => cloud.clone(),
            None => {
                let mut cloud_settings = GceCloudSettings::new(&gce.project, registry.clone());
                cloud_settings.metrics = Some(gce_metrics.clone());
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
                clouds.insert(key, cloud.clone());
                cloud
            }
        };
        let handle = fleet::start_with_metrics(
            settings,
            cloud,
            connector.clone(),
            pools.clone(),
            fleet_metrics,
            &fleets.tracker,
            fleets.cancel.child_token(),
        )?;
        fleets.by_runner.insert(runner.identity(), handle);
    }
    fleets.tracker.close();
    Ok(fleets)
}

impl Fleets {
    /// Deletes every VM of every fleet by `deadline` and stops the fleets. Returns the names of
    /// VMs whose deletion was not confirmed in time (the next start's reconcile deletes them).
    pub(crate) async fn shutdown(&self, deadline: tokio::time::Instant) -> Vec<String> {
        let mut unconfirmed = Vec::new();
        for handle in self.by_runner.values() {
            unconfirmed.extend(handle.shutdown(deadline).await);
        }
        self.cancel.cancel();
        let _ = tokio::time::timeout_at(deadline, self.tracker.wait()).await;
        unconfirmed
    }
}
