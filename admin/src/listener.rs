//! The accept loops of both listeners, with connection limits: a cap on open connections
//! per listener and per peer IP, a deadline for each new connection to finish its TLS
//! handshake, its HTTP/2 handshake and its first request (HTTP) or accepted hello (gRPC),
//! and the TLS handshake itself (rustls, ring provider), each in the connection's own task.
//!
//! A connection that has not got that far is *pending*. When a cap is reached, the oldest
//! pending connection (of the same peer, for the per-peer cap) is shed to make room; only
//! when every connection is established is the new one refused. So a flood of stray
//! connections that never finish a request cannot lock out `/healthz` or a worker, and it
//! never closes an established worker stream. Every refusal, shed connection and timeout
//! is counted in `plughost_connections_refused_total{listener,reason}` and logged at most
//! a few times per window.
//!
//! The gRPC listener hands its connections to tonic (`GrpcIncoming`, with [`ConnInfo`] in
//! each request's extensions); the HTTP listener serves the app with hyper's HTTP/1
//! connection (its header-read timeout needs hyper-util's timer).

use std::{
    collections::{BTreeMap, HashMap},
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_util::{
    either::Either,
    sync::{CancellationToken, WaitForCancellationFutureOwned},
};

use crate::{
    config::ConnectionLimits,
    identity::fingerprint,
    monitor::{ConnRefusal, Monitor},
    throttle::Throttle,
};

/// Descriptors kept free for the store, the data dir and the listeners themselves when the
/// connection caps are fitted to the open-file limit.
const RESERVED_FILES: u64 = 128;
/// How long the accept loop pauses after a failed accept (out of descriptors, say).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Which listener a connection came to; the metric's `listener` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Grpc,
    Http,
}

impl Side {
    pub fn label(self) -> &'static str {
        match self {
            Side::Grpc => "grpc",
            Side::Http => "http",
        }
    }
}

/// Raises the soft open-file limit to the hard one (as far as the process may), then
/// returns the connection limits lowered, if need be, so both listeners at their caps
/// still leave descriptors for everything else.
pub fn fit_to_open_files(limits: &ConnectionLimits) -> ConnectionLimits {
    let mut fitted = limits.clone();
    let Some(files) = open_files_limit() else { return fitted };
    let per_listener = (files.saturating_sub(RESERVED_FILES) / 2).max(1) as usize;
    if per_listener < fitted.max_per_listener {
        tracing::info!(
            open_files = files,
            configured = fitted.max_per_listener,
            max_connections = per_listener,
            "connection cap per listener lowered to fit the open-file limit"
        );
        fitted.max_per_listener = per_listener;
    }
    fitted.max_per_peer = fitted.max_per_peer.min(fitted.max_per_listener);
    fitted
}

#[cfg(unix)]
fn open_files_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit { current: limit.maximum, maximum: limit.maximum };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            limit = getrlimit(Resource::Nofile);
        }
    }
    limit.current
}

#[cfg(not(unix))]
fn open_files_limit() -> Option<u64> {
    None
}

/// One connection's state, shared by its IO, its deadline and the gate.
struct ConnState {
    /// Cancelled to close the connection (shed, or past its handshake deadline).
    close: CancellationToken,
    /// Cancelled once the connection is established: from then on it is never shed.
    established: CancellationToken,
}

/// What a gRPC request learns about its connection (tonic puts it in the extensions).
#[derive(Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// Hex SHA-256 of the client certificate (DER), on an mTLS listener.
    pub certificate: Option<Arc<str>>,
    state: Arc<ConnState>,
}

impl ConnInfo {
    /// Marks the connection established: it has proven it is a real client.
    pub fn establish(&self) {
        self.state.established.cancel();
    }
}

/// Caps and bookkeeping of one listener.
struct Gate {
    side: Side,
    limits: ConnectionLimits,
    monitor: Arc<Monitor>,
    conns: Mutex<Conns>,
    warn: Throttle,
}

#[derive(Default)]
struct Conns {
    next_id: u64,
    /// Open connections by id, so the first pending one found is the oldest.
    open: BTreeMap<u64, Open>,
    per_peer: HashMap<IpAddr, usize>,
}

struct Open {
    peer: SocketAddr,
    state: Arc<ConnState>,
}

/// The address a per-peer cap counts (an IPv4 peer on a dual-stack socket counts as IPv4).
fn peer_ip(peer: SocketAddr) -> IpAddr {
    peer.ip().to_canonical()
}

impl Conns {
    fn oldest_pending(&self, ip: Option<IpAddr>) -> Option<u64> {
        self.open
            .iter()
            .find(|(_, o)| !o.state.established.is_cancelled() && ip.is_none_or(|ip| peer_ip(o.peer) == ip))
            .map(|(id, _)| *id)
    }

    fn remove(&mut self, id: u64) -> Option<Open> {
        let open = self.open.remove(&id)?;
        let ip = peer_ip(open.peer);
        if let Some(n) = self.per_peer.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_peer.remove(&ip);
            }
        }
        Some(open)
    }
}

/// An admitted connection's place in its gate, given back when the connection is dropped.
struct Slot {
    gate: Arc<Gate>,
    id: u64,
    state: Arc<ConnState>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gate.lock().remove(self.id);
        // The connection is gone: its handshake watch ends without counting a timeout
        // (a client that connected and left before speaking is not one).
        self.state.close.cancel();
    }
}

impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, Conns> {
        self.conns.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn refused(&self, reason: ConnRefusal, peer: SocketAddr) {
        self.monitor.connections_refused.inc(self.side.label(), reason);
        if let Some(left_out) = self.warn.allow() {
            let limits = &self.limits;
            tracing::warn!(
                listener = self.side.label(),
                %peer,
                reason = reason.label(),
                max_connections = limits.max_per_listener,
                max_per_peer = limits.max_per_peer,
                similar_lines_left_out = left_out,
                "connection limit hit: {}",
                reason.describe()
            );
        }
    }

    /// Admits a new connection, shedding the oldest pending one where a cap is reached.
    fn admit(self: &Arc<Self>, peer: SocketAddr) -> Result<Slot, ConnRefusal> {
        let ip = peer_ip(peer);
        let mut shed = Vec::new();
        let slot = {
            let mut c = self.lock();
            if c.per_peer.get(&ip).copied().unwrap_or(0) >= self.limits.max_per_peer {
                let Some(id) = c.oldest_pending(Some(ip)) else { return Err(ConnRefusal::PeerFull) };
                shed.extend(c.remove(id));
            }
            if c.open.len() >= self.limits.max_per_listener {
                let Some(id) = c.oldest_pending(None) else { return Err(ConnRefusal::ListenerFull) };
                shed.extend(c.remove(id));
            }
            let id = c.next_id;
            c.next_id += 1;
            let state = Arc::new(ConnState { close: CancellationToken::new(), established: CancellationToken::new() });
            c.open.insert(id, Open { peer, state: state.clone() });
            *c.per_peer.entry(ip).or_default() += 1;
            Slot { gate: self.clone(), id, state }
        };
        for open in shed {
            open.state.close.cancel();
            self.refused(ConnRefusal::Shed, open.peer);
        }
        Ok(slot)
    }

    /// Closes the connection if it is not established within the handshake timeout.
    fn watch_handshake(self: &Arc<Self>, state: Arc<ConnState>, peer: SocketAddr) {
        let gate = self.clone();
        let timeout = self.limits.handshake_timeout;
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(timeout) => {
                    if !state.established.is_cancelled() && !state.close.is_cancelled() {
                        gate.refused(ConnRefusal::HandshakeTimeout, peer);
                        state.close.cancel();
                    }
                }
                _ = state.established.cancelled() => {}
                _ = state.close.cancelled() => {}
            }
        });
    }
}

/// A connection's stream: fails once the connection is closed by its gate, and gives its
/// slot back when dropped.
pub struct GuardedIo {
    inner: Either<TcpStream, TlsStream<TcpStream>>,
    closed: Pin<Box<WaitForCancellationFutureOwned>>,
    info: ConnInfo,
    _slot: Slot,
}

impl GuardedIo {
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let state = &self.info.state;
        let closed = state.close.is_cancelled()
            // Only a pending connection can be closed; an established one skips the wakeup.
            || (!state.established.is_cancelled() && self.closed.as_mut().poll(cx).is_ready());
        if closed {
            Err(io::Error::new(io::ErrorKind::ConnectionAborted, "connection closed by the admin's connection limits"))
        } else {
            Ok(())
        }
    }
}

impl AsyncRead for GuardedIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Err(e) = this.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Err(e) = this.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for GuardedIo {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

/// One listener's accept loop with its gate and optional TLS.
pub struct Acceptor {
    listener: TcpListener,
    gate: Arc<Gate>,
    tls: Option<TlsAcceptor>,
}

impl Acceptor {
    pub fn new(
        side: Side,
        listener: TcpListener,
        limits: ConnectionLimits,
        tls: Option<rustls::ServerConfig>,
        monitor: Arc<Monitor>,
    ) -> Acceptor {
        let gate = Arc::new(Gate {
            side,
            limits,
            monitor,
            conns: Mutex::new(Conns::default()),
            warn: Throttle::new(5, Duration::from_secs(10)),
        });
        Acceptor { listener, gate, tls: tls.map(|c| TlsAcceptor::from(Arc::new(c))) }
    }

    /// Accepts until `stop`, handing each admitted connection, once its TLS handshake is
    /// done, to `serve` in the connection's own task.
    async fn run<F, Fut>(self, stop: CancellationToken, serve: F)
    where
        F: Fn(GuardedIo) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        loop {
            let (tcp, peer) = tokio::select! {
                _ = stop.cancelled() => return,
                accepted = self.listener.accept() => match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of descriptors, mostly: the connection waits in the backlog.
                        self.gate.monitor.connections_refused.inc(self.gate.side.label(), ConnRefusal::AcceptFailed);
                        if let Some(left_out) = self.gate.warn.allow() {
                            tracing::warn!(listener = self.gate.side.label(), error = %e, similar_lines_left_out = left_out, "accept failed");
                        }
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                        }
                    }
                },
            };
            let slot = match self.gate.admit(peer) {
                Ok(slot) => slot,
                Err(reason) => {
                    drop(tcp);
                    self.gate.refused(reason, peer);
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            self.gate.watch_handshake(slot.state.clone(), peer);
            let tls = self.tls.clone();
            let serve = serve.clone();
            tokio::spawn(async move {
                let close = slot.state.close.clone();
                let (inner, certificate) = match tls {
                    None => (Either::Left(tcp), None),
                    Some(acceptor) => {
                        let tls = tokio::select! {
                            _ = close.cancelled() => return,
                            tls = acceptor.accept(tcp) => match tls {
                                Ok(tls) => tls,
                                Err(e) => {
                                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                    return;
                                }
                            },
                        };
                        let certificate = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|der| {
                            let hex: Arc<str> = fingerprint(der.as_ref()).into();
                            hex
                        });
                        (Either::Right(tls), certificate)
                    }
                };
                let info = ConnInfo { peer, certificate, state: slot.state.clone() };
                let io = GuardedIo { inner, closed: Box::pin(close.cancelled_owned()), info, _slot: slot };
                serve(io).await;
            });
        }
    }
}

/// Connections for tonic's `serve_with_incoming_shutdown`: the accept loop runs in its
/// own task until `stop` and feeds this stream.
pub fn grpc_incoming(
    acceptor: Acceptor,
    stop: CancellationToken,
) -> tokio_stream::wrappers::ReceiverStream<Result<GuardedIo, io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(acceptor.run(stop, move |io| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(Ok(io)).await;
        }
    }));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Serves `app` over HTTP/1 on the acceptor's connections until `stop`; then lets each
/// connection finish its request in flight.
pub async fn serve_http(acceptor: Acceptor, app: axum::Router, header_read_timeout: Duration, stop: CancellationToken) {
    // Each connection holds a sender; once all are dropped, every connection has ended.
    let (open_tx, mut all_closed) = mpsc::channel::<()>(1);
    let stopping = stop.clone();
    acceptor
        .run(stop.clone(), move |io| {
            let (app, stop, open) = (app.clone(), stopping.clone(), open_tx.clone());
            async move {
                serve_http_connection(io, app, header_read_timeout, stop).await;
                drop(open);
            }
        })
        .await;
    let _ = all_closed.recv().await;
}

async fn serve_http_connection(
    io: GuardedIo,
    app: axum::Router,
    header_read_timeout: Duration,
    stop: CancellationToken,
) {
    use tower::ServiceExt;
    let info = io.info.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        info.establish();
        // The connection (peer, client certificate) goes with each request: `http/auth.rs`
        // maps a client certificate to an identity.
        req.extensions_mut().insert(info.clone());
        app.clone().oneshot(req.map(axum::body::Body::new))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_read_timeout);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        }
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(max_per_listener: usize, max_per_peer: usize) -> Arc<Gate> {
        Arc::new(Gate {
            side: Side::Http,
            limits: ConnectionLimits { max_per_listener, max_per_peer, ..ConnectionLimits::default() },
            monitor: Arc::new(Monitor::default()),
            conns: Mutex::new(Conns::default()),
            warn: Throttle::new(5, Duration::from_secs(10)),
        })
    }

    fn peer(last: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], 4000))
    }

    #[test]
    fn a_full_listener_sheds_its_oldest_pending_connection_and_never_an_established_one() {
        let g = gate(2, 10);
        let a = g.admit(peer(1)).unwrap();
        a.state.established.cancel();
        let b = g.admit(peer(2)).unwrap();
        let c = g.admit(peer(3)).unwrap();
        assert!(b.state.close.is_cancelled(), "the oldest pending one is shed");
        assert!(!a.state.close.is_cancelled(), "the established one stays");
        c.state.established.cancel();
        assert_eq!(g.admit(peer(4)).err(), Some(ConnRefusal::ListenerFull), "all established: refused");
        drop(b);
        assert_eq!(g.lock().open.len(), 2, "a shed connection's slot was given back once");
        drop(a);
        assert!(g.admit(peer(4)).is_ok(), "a closed connection frees its slot");
        let text = g.monitor.render(Vec::new());
        assert!(text.contains("plughost_connections_refused_total{listener=\"http\",reason=\"shed\"} 1"), "{text}");
    }

    #[test]
    fn one_peer_at_its_cap_sheds_its_own_pending_connections_not_other_peers() {
        let g = gate(10, 2);
        let other = g.admit(peer(9)).unwrap();
        let first = g.admit(peer(1)).unwrap();
        let second = g.admit(peer(1)).unwrap();
        let _third = g.admit(peer(1)).unwrap();
        assert!(first.state.close.is_cancelled());
        assert!(!second.state.close.is_cancelled());
        assert!(!other.state.close.is_cancelled());
        second.state.established.cancel();
        let _fourth = g.admit(peer(1)).unwrap();
        assert!(!second.state.close.is_cancelled(), "established, so kept");
        assert_eq!(g.lock().per_peer[&peer(1).ip()], 2);
    }

    #[tokio::test]
    async fn a_connection_not_established_within_the_handshake_timeout_is_closed() {
        let g = Arc::new(Gate {
            side: Side::Grpc,
            limits: ConnectionLimits { handshake_timeout: Duration::from_millis(20), ..ConnectionLimits::default() },
            monitor: Arc::new(Monitor::default()),
            conns: Mutex::new(Conns::default()),
            warn: Throttle::new(5, Duration::from_secs(10)),
        });
        let slow = g.admit(peer(1)).unwrap();
        let quick = g.admit(peer(2)).unwrap();
        quick.state.established.cancel();
        g.watch_handshake(slow.state.clone(), peer(1));
        g.watch_handshake(quick.state.clone(), peer(2));
        tokio::time::timeout(Duration::from_secs(10), slow.state.close.cancelled()).await.expect("closed");
        let text = g.monitor.render(Vec::new());
        assert!(text.contains("{listener=\"grpc\",reason=\"handshake_timeout\"} 1"), "{text}");
        assert!(!quick.state.close.is_cancelled());
        // A connection that ends before its deadline (the client left) is not a timeout.
        let gone = g.admit(peer(3)).unwrap();
        let state = gone.state.clone();
        g.watch_handshake(state.clone(), peer(3));
        drop(gone);
        assert!(state.close.is_cancelled(), "the watch ends with the connection");
        let late = g.admit(peer(4)).unwrap();
        g.watch_handshake(late.state.clone(), peer(4));
        tokio::time::timeout(Duration::from_secs(10), late.state.close.cancelled()).await.expect("closed");
        let text = g.monitor.render(Vec::new());
        assert!(
            text.contains("{listener=\"grpc\",reason=\"handshake_timeout\"} 2"),
            "only the two that timed out: {text}"
        );
    }
}
