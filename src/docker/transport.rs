//! The byte pipe under a VM's Docker client: a hyper-util connector that dials the VM's address
//! and runs a TLS handshake verifying the server as the VM's *name* (its certificate cannot know
//! the address), and the stream type hyper drives over it. Owns dialing and the handshake; the
//! certificates and the bollard client are `tls`'s business.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// How long dialing plus the TLS handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

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
    async fn dial(self) -> io::Result<VmStream> {
        let work = async {
            let tcp = TcpStream::connect(self.addr).await?;
            tcp.set_nodelay(true)?;
            let tls = self.tls.connect(self.name.clone(), tcp).await?;
            Ok(VmStream(TokioIo::new(tls)))
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
    type Response = VmStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<VmStream>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _dst: Uri) -> Self::Future {
        Box::pin(self.clone().dial())
    }
}

/// A TLS connection to a VM's dockerd, as hyper reads and writes it.
#[derive(Debug)]
pub(crate) struct VmStream(TokioIo<TlsStream<TcpStream>>);

impl Read for VmStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl Write for VmStream {
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

impl Connection for VmStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}
