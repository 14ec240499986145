//! The byte pipes under Flotilla's Docker clients and the pooled hyper client over them: a VM's
//! (a hyper-util connector that dials the VM's address and runs a TLS handshake verifying the
//! server as the VM's *name*, since its certificate cannot know the address) and the local
//! engine's unix socket. Owns dialing, the handshake and connection reuse ([`pooled_docker`]);
//! the certificates are `tls`'s business, which engine to reach is `mod.rs`'s.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bollard::{BollardRequest, Docker, API_DEFAULT_VERSION};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper::Uri;
use hyper_util::client::legacy::connect::{Connect, Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Seconds bollard waits for the response headers of one request. Long streams (wait, attach,
/// pull) answer their headers at once, so this bounds only an unresponsive engine.
const REQUEST_TIMEOUT_SECS: u64 = 120;
/// How long dialing plus the TLS handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long an idle pooled connection is kept. Short: while a job's script runs, the job holds
/// its attach stream and makes no other call, so the connection its earlier calls used would
/// idle for the whole job, holding hyper's buffers (and toward a VM its TLS state: ≈ 30 KB a
/// VM, most of a running job's cost at 2,000 at once: BENCHMARKS.md). Calls made in a row (a
/// job's preparation, its end) still share one connection.
const POOL_IDLE: Duration = Duration::from_secs(5);
/// Idle connections kept per engine at most. Toward the local engine, every job of the runner
/// shares the pool: a few connections serve a steady stream of calls, and a burst of jobs
/// starting at once does not leave hundreds open for [`POOL_IDLE`].
const POOL_MAX_IDLE: usize = 16;

/// A bollard client whose requests go through `connector` over a pool of kept-alive
/// connections, instead of bollard's own clients, which turn pooling off and so dial (and
/// toward a VM, handshake) once per request: a short job makes about a dozen engine calls. The
/// engine answers HTTP/1.1 keep-alive (dockerd sets no idle timeout); an attach takes its
/// connection out of the pool for good (an upgrade). `uri` names the engine in the requests
/// (their `Host` header): the connector decides where the bytes go.
pub(crate) fn pooled_docker<C>(connector: C, uri: String) -> Result<Docker, bollard::errors::Error>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    let client = Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE)
        .pool_max_idle_per_host(POOL_MAX_IDLE)
        .build(connector);
    let transport = move |req: BollardRequest| {
        let client = client.clone();
        async move {
            client
                .request(req)
                .await
                .map_err(bollard::errors::Error::from)
        }
    };
    Docker::connect_with_custom_transport(
        transport,
        Some(uri),
        REQUEST_TIMEOUT_SECS,
        API_DEFAULT_VERSION,
    )
}

/// Dials the local engine's unix socket at `path`, whatever the request URI names.
#[derive(Clone, Debug)]
pub(crate) struct UnixDialer {
    pub(crate) path: PathBuf,
}

impl tower_service::Service<Uri> for UnixDialer {
    type Response = EngineStream<UnixStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _dst: Uri) -> Self::Future {
        let path = self.path.clone();
        Box::pin(async move { Ok(EngineStream(TokioIo::new(UnixStream::connect(path).await?))) })
    }
}

/// Dials one VM: every connection goes to `addr`, whatever host the request URI names, and the
/// server must prove to be `name`.
#[derive(Clone)]
pub(crate) struct VmTlsDialer {
    pub(crate) addr: SocketAddr,
    pub(crate) name: ServerName<'static>,
    pub(crate) tls: TlsConnector,
}

impl std::fmt::Debug for VmTlsDialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmTlsDialer")
            .field("addr", &self.addr)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl VmTlsDialer {
    /// TCP to the address, then the TLS handshake as the VM name, within [`CONNECT_TIMEOUT`].
    async fn dial(self) -> io::Result<EngineStream<TlsStream<TcpStream>>> {
        let work = async {
            let tcp = TcpStream::connect(self.addr).await?;
            tcp.set_nodelay(true)?;
            let tls = self.tls.connect(self.name.clone(), tcp).await?;
            Ok(EngineStream(TokioIo::new(tls)))
        };
        tokio::time::timeout(CONNECT_TIMEOUT, work)
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "connecting to {} did not finish within {CONNECT_TIMEOUT:?}",
                        self.addr
                    ),
                )
            })?
    }
}

impl tower_service::Service<Uri> for VmTlsDialer {
    type Response = EngineStream<TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _dst: Uri) -> Self::Future {
        Box::pin(self.clone().dial())
    }
}

/// A connection to an engine (TLS to a VM's dockerd, or the local unix socket), as hyper reads
/// and writes it.
#[derive(Debug)]
pub(crate) struct EngineStream<S>(TokioIo<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> Read for EngineStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Write for EngineStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
}

impl<S> Connection for EngineStream<S> {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}
