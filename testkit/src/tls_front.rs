//! A TLS front for a fake on loopback: what a self-managed GitLab behind a private CA (and,
//! when asked, one that requires client certificates) looks like to a runner. It terminates
//! TLS with the certificate it is given — requiring a client certificate signed by the given
//! CA when one is given, as nginx's `ssl_verify_client on` does — and relays the bytes to the
//! fake's plain port. Counts handshakes, failed ones and those that presented a client
//! certificate, so a test can tell what the client did. Owns only sockets.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a client gets to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Counts {
    handshakes: AtomicUsize,
    failed: AtomicUsize,
    with_client_cert: AtomicUsize,
}

/// A running TLS front; dropping it stops accepting.
pub struct TlsFront {
    url: String,
    backend: Arc<OnceLock<SocketAddr>>,
    counts: Arc<Counts>,
    cancel: CancellationToken,
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn certs(pem: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("PEM certificates")?;
    anyhow::ensure!(!certs.is_empty(), "no PEM certificate");
    Ok(certs)
}

impl TlsFront {
    /// Listens on a free port of 127.0.0.1 in front of `backend` (a plain `http://` URL on
    /// loopback), serving `cert_chain_pem` with `key_pem`; with `client_ca_pem`, a client must
    /// present a certificate that CA signed or the handshake fails.
    pub async fn start(
        backend: &str,
        cert_chain_pem: &str,
        key_pem: &str,
        client_ca_pem: Option<&str>,
    ) -> anyhow::Result<TlsFront> {
        let front = Self::start_deferred(cert_chain_pem, key_pem, client_ca_pem).await?;
        front.set_backend(backend)?;
        Ok(front)
    }

    /// The same with the backend given later ([`TlsFront::set_backend`]): for a fake that must
    /// advertise the front's URL (`advertised_url`) before it starts. Connections before that
    /// are closed after the handshake.
    pub async fn start_deferred(
        cert_chain_pem: &str,
        key_pem: &str,
        client_ca_pem: Option<&str>,
    ) -> anyhow::Result<TlsFront> {
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).context("PEM key")?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let config = match client_ca_pem {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for c in certs(ca)? {
                    roots.add(c)?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()?;
                builder
                    .with_client_cert_verifier(verifier)
                    .with_single_cert(certs(cert_chain_pem)?, key)?
            }
            None => builder
                .with_no_client_auth()
                .with_single_cert(certs(cert_chain_pem)?, key)?,
        };
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let url = format!("https://{}", listener.local_addr()?);
        let counts = Arc::new(Counts::default());
        let cancel = CancellationToken::new();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let backend: Arc<OnceLock<SocketAddr>> = Arc::default();
        let (c, stop, to) = (counts.clone(), cancel.clone(), backend.clone());
        tokio::spawn(async move {
            let tracker = TaskTracker::new();
            loop {
                let tcp = tokio::select! {
                    _ = stop.cancelled() => break,
                    r = listener.accept() => match r {
                        Ok((tcp, _)) => tcp,
                        Err(_) => continue,
                    },
                };
                tracker.spawn(relay(
                    acceptor.clone(),
                    tcp,
                    to.clone(),
                    c.clone(),
                    stop.clone(),
                ));
            }
            tracker.close();
        });
        Ok(TlsFront {
            url,
            backend,
            counts,
            cancel,
        })
    }

    /// Where the bytes go: a plain `http://` URL on loopback; set once.
    pub fn set_backend(&self, backend: &str) -> anyhow::Result<()> {
        let addr: SocketAddr = backend
            .strip_prefix("http://")
            .context("backend must be an http:// URL")?
            .trim_end_matches('/')
            .parse()
            .context("backend address")?;
        anyhow::ensure!(addr.ip().is_loopback(), "backend must be on loopback");
        self.backend
            .set(addr)
            .map_err(|_| anyhow::anyhow!("backend already set"))
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Handshakes that completed.
    pub fn handshakes(&self) -> usize {
        self.counts.handshakes.load(Ordering::Relaxed)
    }

    /// Handshakes that failed (untrusted server for the client, missing or bad client
    /// certificate for the front).
    pub fn failed_handshakes(&self) -> usize {
        self.counts.failed.load(Ordering::Relaxed)
    }

    /// Completed handshakes in which the client presented a certificate.
    pub fn with_client_certificate(&self) -> usize {
        self.counts.with_client_cert.load(Ordering::Relaxed)
    }
}

async fn relay(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    backend: Arc<OnceLock<SocketAddr>>,
    counts: Arc<Counts>,
    stop: CancellationToken,
) {
    let mut tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        _ => {
            counts.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    counts.handshakes.fetch_add(1, Ordering::Relaxed);
    if tls
        .get_ref()
        .1
        .peer_certificates()
        .is_some_and(|c| !c.is_empty())
    {
        counts.with_client_cert.fetch_add(1, Ordering::Relaxed);
    }
    let Some(backend) = backend.get().copied() else {
        return;
    };
    let Ok(mut plain) = TcpStream::connect(backend).await else {
        return;
    };
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::io::copy_bidirectional(&mut tls, &mut plain) => {}
    }
}
