//! The "VM" side of a fake instance: a loopback address of its own (from a random 127.x.y.0/24
//! the fake picks, re-picked on bind failures so parallel test processes never collide) and, on
//! it, a TLS proxy to the local Docker engine that serves the certificate from the instance's
//! metadata and requires a client certificate signed by the CA in that metadata — what dockerd
//! with `--tlsverify` does on a real VM. Owns addresses and sockets; not instance state.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Metadata key of the CA (PEM) that signs accepted client certificates.
pub const META_CA: &str = "flotilla-docker-ca";
/// Metadata key of the server certificate chain (PEM).
pub const META_CERT: &str = "flotilla-docker-cert";
/// Metadata key of the server private key (PEM).
pub const META_KEY: &str = "flotilla-docker-key";
/// Metadata key naming the Docker volume the startup script makes as its last step (the
/// readiness marker the manager waits for).
pub const META_READY_VOLUME: &str = "flotilla-ready-volume";

/// How long a client gets to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bind attempts before giving up on an address for an instance.
const BIND_ATTEMPTS: usize = 64;

/// Why an instance's TLS material could not be used (the instance then gets no proxy).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    #[error("bad PEM in metadata key {key}: {source}")]
    Pem {
        key: &'static str,
        source: rustls::pki_types::pem::Error,
    },
    #[error("metadata key {0} holds no certificate")]
    Empty(&'static str),
    #[error("CA certificate rejected: {0}")]
    Ca(rustls::Error),
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("server certificate or key rejected: {0}")]
    Server(rustls::Error),
}

/// Hands out loopback addresses: 127.A.B.1..254 for a random A (16..=250) and B, then a new
/// random A.B. Addresses are never reused within one fake.
#[derive(Debug)]
pub(crate) struct AddressPool {
    net: [u8; 2],
    next: u8,
}

impl AddressPool {
    /// A pool on a freshly picked random /24.
    pub(crate) fn new() -> Self {
        let mut p = Self {
            net: [0, 0],
            next: 1,
        };
        p.reroll();
        p
    }

    /// Moves to another random /24.
    pub(crate) fn reroll(&mut self) {
        let mut rng = rand::rng();
        self.net = [rng.random_range(16..=250), rng.random()];
        self.next = 1;
    }

    /// The next unused address.
    pub(crate) fn allocate(&mut self) -> Ipv4Addr {
        if self.next == 255 {
            self.reroll();
        }
        let ip = Ipv4Addr::new(127, self.net[0], self.net[1], self.next);
        self.next += 1;
        ip
    }
}

/// Allocates an address from `pool` and binds `port` on it, moving on (and to a new /24 every
/// few failures) when the bind fails, e.g. because another test process holds that address.
pub(crate) async fn bind(
    pool: &std::sync::Mutex<AddressPool>,
    port: u16,
) -> std::io::Result<(Ipv4Addr, TcpListener)> {
    let mut last = None;
    for attempt in 1..=BIND_ATTEMPTS {
        let ip = lock(pool).allocate();
        match TcpListener::bind((ip, port)).await {
            Ok(l) => return Ok((ip, l)),
            Err(e) => {
                tracing::debug!(%ip, port, error = %e, "fake gce: bind failed, trying another address");
                if attempt % 4 == 0 {
                    lock(pool).reroll();
                }
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no address could be bound")))
}

fn lock(pool: &std::sync::Mutex<AddressPool>) -> std::sync::MutexGuard<'_, AddressPool> {
    pool.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Builds the TLS server config from an instance's metadata; `Ok(None)` when any of the three
/// keys is missing (the VM then never serves Docker).
pub(crate) fn server_config(
    metadata: &[(String, String)],
) -> Result<Option<Arc<ServerConfig>>, ProxyError> {
    let get = |k: &str| {
        metadata
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_bytes())
    };
    let (Some(ca), Some(cert), Some(key)) = (get(META_CA), get(META_CERT), get(META_KEY)) else {
        return Ok(None);
    };
    let certs = pem_certs(META_CERT, cert)?;
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|source| ProxyError::Pem {
        key: META_KEY,
        source,
    })?;
    let mut roots = RootCertStore::empty();
    for c in pem_certs(META_CA, ca)? {
        roots.add(c).map_err(ProxyError::Ca)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?;
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ProxyError::Server)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(ProxyError::Server)?;
    Ok(Some(Arc::new(config)))
}

fn pem_certs(key: &'static str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, ProxyError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| ProxyError::Pem { key, source })?;
    if certs.is_empty() {
        return Err(ProxyError::Empty(key));
    }
    Ok(certs)
}

/// Serves the proxy on `listener` until `stop` is cancelled; every connection task is tracked
/// and also ends on `stop` (as connections to a deleted VM do).
pub(crate) fn spawn(
    tracker: &TaskTracker,
    stop: CancellationToken,
    listener: TcpListener,
    config: Arc<ServerConfig>,
    docker_socket: PathBuf,
) {
    let conn_tracker = tracker.clone();
    tracker.spawn(async move {
        let acceptor = TlsAcceptor::from(config);
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => return,
                r = listener.accept() => r,
            };
            match accepted {
                Ok((tcp, _)) => {
                    let work = serve(acceptor.clone(), tcp, docker_socket.clone());
                    let stop = stop.clone();
                    conn_tracker.spawn(async move {
                        tokio::select! {
                            _ = stop.cancelled() => {}
                            r = work => if let Err(e) = r {
                                tracing::debug!(error = %e, "fake gce: docker proxy connection ended");
                            },
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "fake gce: docker proxy accept failed");
                    tokio::task::yield_now().await;
                }
            }
        }
    });
}

async fn serve(acceptor: TlsAcceptor, tcp: TcpStream, socket: PathBuf) -> std::io::Result<()> {
    let mut tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "tls handshake timed out")
        })??;
    let mut docker = UnixStream::connect(&socket).await?;
    tokio::io::copy_bidirectional(&mut tls, &mut docker).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_stays_in_loopback_and_moves_on() {
        let mut p = AddressPool::new();
        let first = p.allocate();
        assert!(first.is_loopback());
        assert!((16..=250).contains(&first.octets()[1]));
        assert_eq!(first.octets()[3], 1);
        let all: Vec<_> = (0..300).map(|_| p.allocate()).collect();
        assert!(all
            .iter()
            .all(|ip| ip.is_loopback() && ip.octets()[3] != 0 && ip.octets()[3] != 255));
    }

    #[test]
    fn no_metadata_no_proxy() {
        assert!(matches!(server_config(&[]), Ok(None)));
        let bad = vec![
            (META_CA.to_owned(), "junk".to_owned()),
            (META_CERT.to_owned(), "junk".to_owned()),
            (META_KEY.to_owned(), "junk".to_owned()),
        ];
        assert!(server_config(&bad).is_err());
    }
}
