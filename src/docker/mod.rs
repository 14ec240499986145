//! Reaching a Docker engine: the local socket or `[runners.docker] host`, with the API version
//! negotiated (engines here speak 1.41). Later: a VM's dockerd over mTLS verified by VM name.
//!
//! PLACEHOLDER API (skeleton): the real implementation keeps these signatures.

/// Why a Docker engine could not be reached.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach the Docker engine at {endpoint}: {source}")]
pub struct ConnectError {
    /// Where we tried.
    pub endpoint: String,
    /// What failed.
    #[source]
    pub source: bollard::errors::Error,
}

/// Connects to `host` (or the local defaults) and negotiates the API version.
pub async fn connect(host: Option<&str>) -> Result<bollard::Docker, ConnectError> {
    let endpoint = host.unwrap_or("local defaults").to_string();
    let docker = bollard::Docker::connect_with_local_defaults().map_err(|source| ConnectError {
        endpoint: endpoint.clone(),
        source,
    })?;
    docker
        .negotiate_version()
        .await
        .map_err(|source| ConnectError { endpoint, source })
}
