//! What "the VM is gone" means to the local Docker engine: every container and volume labelled
//! `com.flotilla.vm=<instance name>` is force-removed; and what the VM's startup script leaves
//! there as its last step, the readiness marker volume (labelled the same way). Owns the bollard
//! client (connected lazily, API version negotiated: the engines here speak 1.41).

use std::collections::HashMap;
use std::path::PathBuf;

use bollard::models::VolumeCreateRequest;
use bollard::query_parameters::{
    ListContainersOptions, ListVolumesOptions, RemoveContainerOptions, RemoveVolumeOptions,
};
use bollard::Docker;
use tokio::sync::OnceCell;

/// The label that ties a container to the fake VM it "runs on".
pub const VM_LABEL: &str = "com.flotilla.vm";

/// Lazily connected Docker client for container clean-up.
#[derive(Debug)]
pub(crate) struct DockerOps {
    socket: PathBuf,
    client: OnceCell<Docker>,
}

impl DockerOps {
    /// A client for the engine at `socket`; nothing is connected yet.
    pub(crate) fn new(socket: PathBuf) -> Self {
        Self {
            socket,
            client: OnceCell::new(),
        }
    }

    async fn client(&self) -> Result<&Docker, bollard::errors::Error> {
        self.client
            .get_or_try_init(|| async {
                let path = self.socket.to_string_lossy();
                Docker::connect_with_unix(&path, 30, bollard::API_DEFAULT_VERSION)?
                    .negotiate_version()
                    .await
            })
            .await
    }

    /// Force-removes the containers labelled with `vm`; failures are logged, not returned (a
    /// missing engine must not stop the fake from deleting instances). Returns how many went.
    pub(crate) async fn kill_vm_containers(&self, vm: &str) -> usize {
        match self.try_kill(vm).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(vm, error = %e, "fake gce: could not remove the vm's containers");
                0
            }
        }
    }

    /// Makes the readiness marker `volume` of `vm` (what the real startup script does last);
    /// a failure is logged (the VM then never becomes ready, as on a real one).
    pub(crate) async fn create_ready_marker(&self, vm: &str, volume: &str) {
        let request = VolumeCreateRequest {
            name: Some(volume.to_owned()),
            labels: Some(HashMap::from([(VM_LABEL.to_owned(), vm.to_owned())])),
            ..Default::default()
        };
        let made = match self.client().await {
            Ok(docker) => docker.create_volume(request).await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = made {
            tracing::warn!(vm, error = %e, "fake gce: could not make the readiness marker");
        }
    }

    /// Removes the volumes labelled with `vm` (its readiness marker).
    async fn remove_vm_volumes(
        &self,
        docker: &Docker,
        vm: &str,
    ) -> Result<(), bollard::errors::Error> {
        let filters = HashMap::from([("label".to_owned(), vec![format!("{VM_LABEL}={vm}")])]);
        let list = docker
            .list_volumes(Some(ListVolumesOptions {
                filters: Some(filters),
            }))
            .await?;
        for volume in list.volumes.unwrap_or_default() {
            let opts = RemoveVolumeOptions { force: true };
            if let Err(e) = docker.remove_volume(&volume.name, Some(opts)).await {
                tracing::warn!(vm, volume = %volume.name, error = %e, "fake gce: volume remove failed");
            }
        }
        Ok(())
    }

    async fn try_kill(&self, vm: &str) -> Result<usize, bollard::errors::Error> {
        let docker = self.client().await?;
        let filters = HashMap::from([("label".to_owned(), vec![format!("{VM_LABEL}={vm}")])]);
        let list = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let containers = docker.list_containers(Some(list)).await?;
        let mut removed = 0;
        for id in containers.into_iter().filter_map(|c| c.id) {
            let opts = RemoveContainerOptions {
                force: true,
                v: true,
                link: false,
            };
            match docker.remove_container(&id, Some(opts)).await {
                Ok(()) => removed += 1,
                Err(e) => {
                    tracing::warn!(vm, container = %id, error = %e, "fake gce: remove failed")
                }
            }
        }
        self.remove_vm_volumes(docker, vm).await?;
        Ok(removed)
    }
}
