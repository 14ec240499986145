//! Reaching a Docker engine: the local socket or `[runners.docker] host` (`unix://…`, or
//! `tcp://host:port` in plain HTTP), with the API version negotiated (engines here speak 1.41,
//! bollard defaults newer), or a VM's dockerd over mutual TLS verified by VM name (`tls`, with
//! `certs` for the per-process CA and `transport` for the connector); [`SharedEngine`] keeps one
//! runner's client for every job. Owns nothing else: what runs on the engine is the executor's
//! business.

mod certs;
pub mod tls;
mod transport;

pub use tls::{DockerCa, TlsError, VmTlsMaterial};

use bollard::{Docker, API_DEFAULT_VERSION};
use std::sync::Mutex;

/// Seconds bollard waits for the response headers of one request. Long streams (wait, attach,
/// pull) answer their headers at once, so this bounds only an unresponsive engine.
const REQUEST_TIMEOUT_SECS: u64 = 120;

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

/// Connects to `host` (`unix:///path`, `tcp://host:port`, `http://host:port`), or to the local
/// defaults (`DOCKER_HOST`, else `/var/run/docker.sock`) when `None`, and negotiates the API
/// version with the engine. The engine is contacted once (`GET /version`), so an unreachable
/// engine fails here.
pub async fn connect(host: Option<&str>) -> Result<Docker, ConnectError> {
    let endpoint = host.unwrap_or("local defaults").to_string();
    let fail = |source| ConnectError {
        endpoint: endpoint.clone(),
        source,
    };
    let docker = match host {
        None => Docker::connect_with_local_defaults(),
        Some(h) if h.starts_with("unix://") => {
            Docker::connect_with_unix(h, REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION)
        }
        Some(h) if h.starts_with("tcp://") || h.starts_with("http://") => {
            Docker::connect_with_http(h, REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION)
        }
        Some(h) => Err(bollard::errors::Error::UnsupportedURISchemeError { uri: h.to_string() }),
    }
    .map_err(fail)?;
    docker.negotiate_version().await.map_err(fail)
}

/// One runner's client for its engine (the `docker` executor), connected at the first job and
/// shared by every later one: bollard's client is a cheap handle whose requests each open their
/// own connection, so sharing it costs no job anything, and the engine's API version is
/// negotiated once instead of with a `GET /version` per job.
#[derive(Default)]
pub struct SharedEngine {
    /// The host the client was made for (`None`: the local defaults), and the client.
    client: Mutex<Option<(Option<String>, Docker)>>,
}

impl SharedEngine {
    /// The client for `host`: the one made before, or a new one ([`connect`]) when there is none
    /// yet or a reload changed `host`. The lock is not held while connecting, so an engine that
    /// does not answer delays each job by one connection attempt, not by everyone's in turn.
    pub async fn client(&self, host: Option<&str>) -> Result<Docker, ConnectError> {
        if let Some((made_for, docker)) = self.lock().as_ref() {
            if made_for.as_deref() == host {
                return Ok(docker.clone());
            }
        }
        let docker = connect(host).await?;
        *self.lock() = Some((host.map(str::to_string), docker.clone()));
        Ok(docker)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Option<String>, Docker)>> {
        self.client.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl std::fmt::Debug for SharedEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = self.lock().as_ref().map(|(host, _)| host.clone());
        f.debug_struct("SharedEngine")
            .field("connected_to", &host)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::connect;

    #[tokio::test]
    async fn unsupported_schemes_are_refused_with_the_endpoint() {
        let err = connect(Some("ssh://somewhere")).await.unwrap_err();
        assert_eq!(err.endpoint, "ssh://somewhere");
        assert!(err.to_string().contains("ssh://somewhere"), "{err}");
    }

    #[tokio::test]
    async fn a_shared_engine_keeps_no_client_when_connecting_fails() {
        let engine = super::SharedEngine::default();
        for _ in 0..2 {
            let err = engine
                .client(Some("unix:///nonexistent/docker.sock"))
                .await
                .unwrap_err();
            assert_eq!(err.endpoint, "unix:///nonexistent/docker.sock");
        }
        assert!(
            format!("{engine:?}").contains("connected_to: None"),
            "{engine:?}"
        );
    }

    #[tokio::test]
    async fn a_missing_socket_fails_before_any_request() {
        let err = connect(Some("unix:///nonexistent/docker.sock"))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err.source,
                bollard::errors::Error::SocketNotFoundError(ref p) if p == "/nonexistent/docker.sock"
            ),
            "{err:?}"
        );
    }
}
