//! How the fleet reaches a VM's dockerd: the [`VmDockerAccess`] trait (TLS material for a new
//! VM, a Docker client for it, its readiness: `_ping` and the startup script's marker) and its
//! typed error. Implemented by the manager with
//! the process's Docker CA (`docker::DockerCa`) and by the fleet's test fakes; the fleet never
//! sees certificates.

use async_trait::async_trait;
use std::net::SocketAddr;

/// Metadata key naming the Docker volume `scripts/vm-startup.sh` makes as its very last step,
/// after the metadata-server block is in place and dockerd serves: the readiness marker.
pub const READY_MARKER_KEY: &str = "flotilla-ready-volume";

/// The readiness marker volume of VM `vm_name` (named per VM: one name cannot be mistaken for
/// another VM's on a shared engine).
pub fn ready_marker(vm_name: &str) -> String {
    format!("flotilla-ready-{vm_name}")
}

/// The cause inside a [`VmAccessError`]: whatever the implementation's own error is.
pub type AccessCause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a VM's dockerd could not be reached (or prepared for).
#[derive(Debug, thiserror::Error)]
pub enum VmAccessError {
    /// The VM's TLS material (server certificate, CA) could not be made.
    #[error("cannot make the TLS material of VM {vm}: {source}")]
    Material {
        /// The VM name.
        vm: String,
        /// What failed.
        #[source]
        source: AccessCause,
    },
    /// No Docker client could be made for the VM's address.
    #[error("cannot connect to the dockerd of VM {vm}: {source}")]
    Connect {
        /// The VM name.
        vm: String,
        /// What failed.
        #[source]
        source: AccessCause,
    },
    /// The VM's dockerd did not answer `_ping`.
    #[error("the dockerd of VM {vm} does not answer: {source}")]
    Ping {
        /// The VM name.
        vm: String,
        /// What failed.
        #[source]
        source: AccessCause,
    },
    /// The VM's dockerd answers but its startup script has not set the readiness marker (its
    /// isolation may not be in place).
    #[error("VM {vm} is not ready: its startup script has not finished ({source})")]
    NotReady {
        /// The VM name.
        vm: String,
        /// What failed.
        #[source]
        source: AccessCause,
    },
}

impl VmAccessError {
    /// A closed-set name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            VmAccessError::Material { .. } => "material",
            VmAccessError::Connect { .. } => "connect",
            VmAccessError::Ping { .. } => "ping",
            VmAccessError::NotReady { .. } => "not_ready",
        }
    }
}

/// How the fleet reaches a VM's dockerd; implemented by the manager with the Docker CA.
#[async_trait]
pub trait VmDockerAccess: Send + Sync + 'static {
    /// Metadata items for a new VM (TLS material); called once per VM name before insert.
    fn vm_metadata(&self, vm_name: &str) -> Result<Vec<(String, String)>, VmAccessError>;
    /// A Docker client for `vm_name`'s dockerd at `addr` (mTLS verified by VM name).
    async fn connect(
        &self,
        vm_name: &str,
        addr: SocketAddr,
    ) -> Result<bollard::Docker, VmAccessError>;
    /// Whether that dockerd answers (`_ping`) and the startup script finished (its marker
    /// volume, [`ready_marker`], exists): a VM becomes idle only after this succeeds, so no job
    /// starts on a VM whose metadata-server block is not in place. Docker API calls only.
    async fn ping(&self, vm_name: &str, docker: &bollard::Docker) -> Result<(), VmAccessError> {
        docker
            .ping()
            .await
            .map(|_| ())
            .map_err(|e| VmAccessError::Ping {
                vm: vm_name.to_string(),
                source: Box::new(e),
            })?;
        docker
            .inspect_volume(&ready_marker(vm_name))
            .await
            .map(|_| ())
            .map_err(|e| VmAccessError::NotReady {
                vm: vm_name.to_string(),
                source: Box::new(e),
            })
    }
}
