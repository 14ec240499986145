//! What "the VM is gone" means to the local Docker engine: every container labelled
//! `com.flotilla.vm=<instance name>` is force-removed. Owns the bollard client (connected lazily,
//! API version negotiated: the engines here speak 1.41).

use std::collections::HashMap;
use std::path::PathBuf;

use bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};
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
        Ok(removed)
    }
}
