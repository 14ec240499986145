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

use bollard::Docker;
use hyper_util::client::legacy::connect::HttpConnector;
use std::sync::Mutex;

/// The engine reached when neither `host` nor `DOCKER_HOST` says otherwise.
const DEFAULT_SOCKET: &str = "unix:///var/run/docker.sock";

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

/// Connects to `host` (`unix:///path`, `tcp://host:port`, `http://host:port`), or, when `None`,
/// to `DOCKER_HOST` if it names a `unix://` socket, else `unix:///var/run/docker.sock` (as
/// bollard's local defaults, less their Podman probing), and negotiates the API version with
/// the engine. The engine is contacted once (`GET /version`), so an unreachable engine fails
/// here. Requests reuse kept-alive connections (`transport::pooled_docker`).
pub async fn connect(host: Option<&str>) -> Result<Docker, ConnectError> {
    let from_env = std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| h.starts_with("unix://"));
    let host = host.or(from_env.as_deref()).unwrap_or(DEFAULT_SOCKET);
    let fail = |source| ConnectError {
        endpoint: host.to_string(),
        source,
    };
    let docker = if let Some(path) = host.strip_prefix("unix://") {
        // As bollard: a socket that is not there fails before any request.
        if !std::path::Path::new(path).exists() {
            return Err(fail(bollard::errors::Error::SocketNotFoundError(
                path.to_string(),
            )));
        }
        let dialer = transport::UnixDialer { path: path.into() };
        transport::pooled_docker(dialer, "http://localhost".into())
    } else if let Some(addr) = host
        .strip_prefix("tcp://")
        .or_else(|| host.strip_prefix("http://"))
    {
        transport::pooled_docker(HttpConnector::new(), format!("http://{addr}"))
    } else {
        Err(bollard::errors::Error::UnsupportedURISchemeError {
            uri: host.to_string(),
        })
    }
    .map_err(fail)?;
    docker.negotiate_version().await.map_err(fail)
}

/// One runner's client for its engine (the `docker` executor), connected at the first job and
/// shared by every later one: bollard's client is a cheap handle over one pool of kept-alive
/// connections, so every job's calls share that pool, and the engine's API version is
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_in_a_row_reuse_one_connection_to_the_engine() {
        let engine = testkit::FakeDocker::start(testkit::FakeDockerOptions::default())
            .await
            .unwrap();
        let docker = connect(Some(&engine.host())).await.unwrap();
        for _ in 0..20 {
            docker.ping().await.unwrap();
        }
        // The version negotiation and 20 pings: bollard's own client dials 21 times. Pooled,
        // it is one connection, or a few when a call comes before hyper has put the previous
        // one's connection back (it does so on another task).
        let connections = engine.stats().connections;
        assert!(connections <= 5, "{connections} connections for 21 calls");
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
