//! The bounds every Tessera server keeps on its ports (the store's client, peer and HTTP ports,
//! and the scheduler's): connections open at once, and HTTP/2 streams per connection.
//!
//! Connections a port takes (gRPC or the HTTP gateway), at most so many open at once.
//!
//! Each connection holds a file descriptor, and the engines need descriptors too (RocksDB opens
//! its files as it reads them): a client that opened connections without bound could leave the
//! store unable to read its own data. So a port accepts a connection only while fewer than its
//! bound are open; past it, new connections wait in the kernel's listen backlog (which refuses
//! them once full) until one closes.

#![deny(missing_docs)]

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// The most connections each port keeps open at once, by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// The most gRPC calls one connection may have open at once (HTTP/2's
/// SETTINGS_MAX_CONCURRENT_STREAMS; a client past it waits for a call to end). tonic sets no
/// bound unless told, so without it one connection could open any number.
pub const GRPC_MAX_CONCURRENT_STREAMS: u32 = 1024;

/// A gRPC server with these per-connection bounds.
pub fn grpc_server() -> tonic::transport::Server {
    tonic::transport::Server::builder().max_concurrent_streams(Some(GRPC_MAX_CONCURRENT_STREAMS))
}

/// How long the accept loop rests after an accept error other than one about a single
/// connection (out of descriptors, say), so it does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// An accepted connection, holding its place among the port's open connections until dropped.
pub struct BoundedConn {
    stream: TcpStream,
    _place: OwnedSemaphorePermit,
}

impl Connected for BoundedConn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for BoundedConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for BoundedConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// A listener that accepts a connection only while fewer than its bound are open.
pub struct BoundedListener {
    listener: TcpListener,
    places: Arc<Semaphore>,
}

impl BoundedListener {
    /// Bounds `listener` to `max` connections open at once (at least 1).
    pub fn new(listener: TcpListener, max: usize) -> BoundedListener {
        BoundedListener {
            listener,
            places: Arc::new(Semaphore::new(max.clamp(1, Semaphore::MAX_PERMITS))),
        }
    }

    /// Waits for a place, then accepts one connection, with Nagle's algorithm off (small
    /// request/response calls must not wait on it). After an error that is not about that one
    /// connection (out of descriptors, say) it first rests a moment, so callers that retry at
    /// once do not spin.
    async fn accept_bounded(&self) -> io::Result<(BoundedConn, SocketAddr)> {
        // The semaphore is never closed.
        let place = self
            .places
            .clone()
            .acquire_owned()
            .await
            .map_err(io::Error::other)?;
        match self.listener.accept().await {
            Ok((stream, addr)) => {
                let _ = stream.set_nodelay(true);
                let conn = BoundedConn {
                    stream,
                    _place: place,
                };
                Ok((conn, addr))
            }
            Err(e) => {
                if !about_one_connection(&e) {
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
                Err(e)
            }
        }
    }

    /// The connections as a stream, for a tonic server.
    pub fn into_stream(self) -> impl Stream<Item = io::Result<BoundedConn>> + Send + 'static {
        futures_util::stream::unfold(self, |listener| async move {
            let accepted = listener.accept_bounded().await.map(|(conn, _)| conn);
            Some((accepted, listener))
        })
    }
}

impl axum::serve::Listener for BoundedListener {
    type Io = BoundedConn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (BoundedConn, SocketAddr) {
        loop {
            match self.accept_bounded().await {
                Ok(accepted) => return accepted,
                Err(e) => tracing::debug!(error = %e, "accepting a connection failed"),
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// The connections of `listener`, at most `max` open at once, as a stream for a tonic server.
pub fn bounded(
    listener: TcpListener,
    max: usize,
) -> impl Stream<Item = io::Result<BoundedConn>> + Send + 'static {
    BoundedListener::new(listener, max).into_stream()
}

/// Whether an accept error concerns only the connection being accepted (the next accept may
/// well succeed at once).
fn about_one_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// How long a client has to finish its TLS handshake on an HTTPS port.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshaken connections waiting for the server to take them.
const TLS_READY_QUEUE: usize = 64;

/// A [`BoundedListener`] whose connections speak TLS (an HTTPS port). Handshakes run side by
/// side, each within [`TLS_HANDSHAKE_TIMEOUT`], so a slow or silent client holds up no other;
/// a connection holds its place among the port's open connections from the TCP accept on.
pub struct TlsListener {
    local: SocketAddr,
    ready: tokio::sync::mpsc::Receiver<(tokio_rustls::server::TlsStream<BoundedConn>, SocketAddr)>,
    acceptor: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Serves TLS with `config` on `listener`, at most `max` connections open at once.
    ///
    /// # Errors
    /// When the listener's address cannot be read.
    pub fn new(
        listener: TcpListener,
        max: usize,
        config: Arc<tokio_rustls::rustls::ServerConfig>,
    ) -> io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let mut bounded = BoundedListener::new(listener, max);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let (tx, ready) = tokio::sync::mpsc::channel(TLS_READY_QUEUE);
        let acceptor = tokio::spawn(async move {
            while !tx.is_closed() {
                let (conn, addr) = axum::serve::Listener::accept(&mut bounded).await;
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(conn)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, addr)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            local,
            ready,
            acceptor,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<BoundedConn>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, SocketAddr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept loop is gone only when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// The answer to `GET /metrics`: `text` in Prometheus' text format, or a 500 saying why it
/// could not be made.
pub fn metrics_response<E: std::fmt::Display>(text: Result<String, E>) -> axum::response::Response {
    use axum::response::IntoResponse;
    match text {
        Ok(text) => (
            axum::http::StatusCode::OK,
            [("content-type", "text/plain; version=0.0.4")],
            text,
        )
            .into_response(),
        Err(e) => (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the metrics: {e}\n"),
        )
            .into_response(),
    }
}

/// A 200 answer carrying the JSON document `doc` (already serialized), one line break after it.
pub fn json_response(doc: String) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        axum::http::StatusCode::OK,
        [("content-type", "application/json")],
        doc + "\n",
    )
        .into_response()
}
