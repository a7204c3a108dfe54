//! One stream to the admin, from dial to end: hello and AdminHello, then one loop
//! that reads admin requests, forwards the outbox, sends heartbeats and, on shutdown,
//! drains running work before closing the stream.

use std::{
    collections::VecDeque,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::Streaming;

use crate::{
    CancellationToken, Error, WorkerStatus,
    connect::Dialer,
    dispatch::{Action, dispatch},
    heartbeat,
    pb::{self, plugin_control_service_client::PluginControlServiceClient},
    shared::{Body, Shared},
};

/// Messages waiting for the gRPC stream itself; small, so the outbox (which survives
/// reconnects) holds the backlog rather than a stream that may die.
const STREAM_BUFFER: usize = 16;
/// How many outbox messages one turn of the session loop forwards before it looks at
/// the admin's requests and the heartbeat again.
const FORWARD_PER_TURN: usize = 64;
/// How long the admin has to answer the hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long closing the stream may take to flush the last messages.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the worker loop hands a session and gets back from it.
pub(crate) struct SessionContext<'a> {
    pub(crate) shared: &'a Arc<Shared>,
    pub(crate) dialer: &'a Dialer,
    pub(crate) outbox: &'a mut mpsc::Receiver<Body>,
    /// Outbox messages a dead stream did not take; sent first on the next stream.
    pub(crate) carry: &'a mut VecDeque<Body>,
    /// The local shutdown signal.
    pub(crate) stop: &'a CancellationToken,
    /// Set once the admin accepted the hello.
    pub(crate) accepted: Option<pb::AdminHello>,
}

/// Runs one stream. `Ok` means a shutdown completed (work drained, stream closed);
/// `Err` means the stream could not be opened or ended, and the caller decides
/// whether to reconnect ([`Error::is_fatal`]).
pub(crate) async fn run(cx: &mut SessionContext<'_>) -> Result<(), Error> {
    let shared = cx.shared;
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    let (outbound, closed) = Outbound::new(rx);
    let writer = Writer { tx, worker_id: shared.worker_id.clone() };
    writer.send(Body::Hello(hello(shared))).await?;

    let (mut inbound, uri) = tokio::select! {
        opened = open(cx.dialer, outbound) => match opened {
            Ok(opened) => opened,
            Err(e) => return Err(cx.dialer.explain(e).await),
        },
        _ = cx.stop.cancelled() => return Err(Error::Stopped),
    };
    let admin_hello = tokio::select! {
        first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message()) => match first {
            Err(_) => return Err(Error::Protocol(format!("no AdminHello within {HELLO_TIMEOUT:?}"))),
            Ok(Err(status)) => return Err(Error::call(&uri, status)),
            Ok(Ok(None)) => return Err(Error::StreamClosed),
            Ok(Ok(Some(pb::AdminToWorkerMessage { body: Some(pb::admin_to_worker_message::Body::Hello(h)), .. }))) => h,
            Ok(Ok(Some(_))) => return Err(Error::Protocol("the admin's first message was not AdminHello".into())),
        },
        _ = cx.stop.cancelled() => return Err(Error::Stopped),
    };
    if !admin_hello.accepted {
        return Err(Error::Rejected { message: admin_hello.message });
    }
    let interval = heartbeat::interval(&admin_hello);
    tracing::info!(worker_id = %shared.worker_id, admin = %uri, heartbeat = ?interval, admin_message = %admin_hello.message, "connected to the admin");
    cx.accepted = Some(admin_hello);
    shared.status.send_replace(WorkerStatus::Connected { heartbeat_interval: interval });

    while let Some(body) = cx.carry.pop_front() {
        let Some(room) = writer.room().await else {
            cx.carry.push_front(body);
            return Err(Error::StreamClosed);
        };
        writer.put(room, body);
    }

    let mut heartbeats = tokio::time::interval(interval);
    heartbeats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut busy = shared.tracker.watch_busy();
    let mut drain: Option<Drain> = None;
    // The drain's deadline, made once and reset when a drain begins: a timer built in
    // each turn of the loop would read the clock at every message.
    let mut cut_short = std::pin::pin!(tokio::time::sleep_until(Instant::now()));
    let mut replies = Vec::new();
    loop {
        if drain.is_some() && shared.tracker.is_empty() {
            // Every task queued its final message before leaving the tracker.
            while let Ok(body) = cx.outbox.try_recv() {
                writer.send(body).await?;
            }
            drop(writer);
            close(inbound, closed).await;
            tracing::info!("drained; stream closed");
            return Ok(());
        }
        let cancel_at = drain.as_ref().and_then(|d| d.cancel_at);
        if let Some(at) = cancel_at
            && cut_short.deadline() != at
        {
            cut_short.as_mut().reset(at);
        }
        tokio::select! {
            _ = cx.stop.cancelled(), if drain.is_none() => {
                drain = Some(Drain::begin(shared, "worker is shutting down", shared.config.shutdown_grace));
            }
            message = inbound.message() => {
                let message = match message {
                    Ok(Some(m)) => m,
                    Ok(None) => return Err(Error::StreamClosed),
                    Err(status) => return Err(Error::call(&uri, status)),
                };
                let action = dispatch(shared, message, &mut replies);
                for body in replies.drain(..) {
                    let room = writer.room().await.ok_or(Error::StreamClosed)?;
                    writer.put(room, body);
                }
                if let Action::Shutdown { reason, grace } = action
                    && drain.is_none()
                {
                    tracing::info!(%reason, ?grace, "the admin asked this worker to shut down");
                    drain = Some(Drain::begin(shared, &format!("admin shutdown: {reason}"), grace));
                }
            }
            body = cx.outbox.recv() => {
                // The outbox never closes: `shared` holds a sender. What else is queued
                // goes along, up to a turn's worth, without a turn of the loop each.
                let mut next = body;
                let mut forwarded = 0;
                while let Some(body) = next {
                    let Some(room) = writer.room().await else {
                        cx.carry.push_back(body);
                        return Err(Error::StreamClosed);
                    };
                    writer.put(room, body);
                    forwarded += 1;
                    next = if forwarded < FORWARD_PER_TURN { cx.outbox.try_recv().ok() } else { None };
                }
            }
            _ = heartbeats.tick() => {
                writer.send(Body::Heartbeat(heartbeat::build(shared))).await?;
            }
            _ = &mut cut_short, if cancel_at.is_some() => {
                if let Some(d) = drain.as_mut() {
                    let n = shared.tracker.cut_short_all(&d.reason);
                    tracing::info!(canceled = n, "shutdown grace period over; canceled running work");
                    d.cancel_at = None;
                }
            }
            _ = busy.changed(), if drain.is_some() => {}
        }
    }
}

/// Ends our side and waits (briefly) for the admin to end its side. Dropping the
/// response early would reset the HTTP/2 stream, and a reset discards messages that
/// are still queued for sending, such as the last job's completion.
async fn close(mut inbound: Streaming<pb::AdminToWorkerMessage>, sent_all: oneshot::Receiver<()>) {
    let wait = async {
        // Resolves once tonic took the end of our stream (and dropped it).
        let _ = sent_all.await;
        while let Ok(Some(message)) = inbound.message().await {
            // Too late to take or refuse: the admin's deadline for it will expire.
            tracing::warn!(request_id = %message.request_id, "a request arrived after shutdown; not answered");
        }
    };
    if tokio::time::timeout(CLOSE_TIMEOUT, wait).await.is_err() {
        tracing::debug!("the admin did not end the stream; closing anyway");
    }
}

/// Dials and opens the stream; returns it with the URI it reached.
async fn open(dialer: &Dialer, outbound: Outbound) -> Result<(Streaming<pb::AdminToWorkerMessage>, String), Error> {
    let (channel, uri) = dialer.dial().await?;
    let mut request = tonic::Request::new(outbound);
    if let Some(value) = dialer.authorization() {
        request.metadata_mut().insert("authorization", value.clone());
    }
    let mut client = PluginControlServiceClient::new(channel);
    let response = client.worker_stream(request).await.map_err(|s| Error::call(&uri, s))?;
    tracing::debug!(%uri, "stream open");
    Ok((response.into_inner(), uri))
}

fn hello(shared: &Shared) -> pb::WorkerHello {
    pb::WorkerHello {
        worker_id: shared.worker_id.clone(),
        worker_instance_id: shared.instance_id.clone(),
        address: shared.config.address.clone(),
        worker_version: shared.config.version.clone(),
        protocol_version: proto::PROTOCOL_VERSION.to_string(),
        capabilities: shared.capabilities.clone(),
        metadata: shared.config.metadata.clone(),
    }
}

/// A shutdown in progress: new work is refused; at `cancel_at` what still runs is
/// canceled; the session ends once nothing runs.
struct Drain {
    reason: String,
    cancel_at: Option<Instant>,
}

impl Drain {
    fn begin(shared: &Shared, reason: &str, grace: Duration) -> Self {
        shared.draining.cancel();
        shared.status.send_replace(WorkerStatus::Draining);
        Drain { reason: reason.to_string(), cancel_at: Some(Instant::now() + grace) }
    }
}

/// Puts the envelope on each body and writes it to the stream.
struct Writer {
    tx: mpsc::Sender<pb::WorkerToAdminMessage>,
    worker_id: String,
}

impl Writer {
    fn envelope(&self, body: Body) -> pb::WorkerToAdminMessage {
        pb::WorkerToAdminMessage { worker_id: self.worker_id.clone(), sent_at: Some(proto::now()), body: Some(body) }
    }

    async fn send(&self, body: Body) -> Result<(), Error> {
        let room = self.room().await.ok_or(Error::StreamClosed)?;
        self.put(room, body);
        Ok(())
    }

    /// Waits for room for one message on the stream; `None` once the stream is gone.
    /// With [`Writer::put`], the way to send a body the caller holds without moving it
    /// into a future first.
    async fn room(&self) -> Option<mpsc::Permit<'_, pb::WorkerToAdminMessage>> {
        self.tx.reserve().await.ok()
    }

    fn put(&self, room: mpsc::Permit<'_, pb::WorkerToAdminMessage>, body: Body) {
        room.send(self.envelope(body));
    }
}

/// The request stream given to tonic. Tells the session when tonic has dropped it,
/// which happens after it took the last message, so closing can wait for the flush.
struct Outbound {
    inner: ReceiverStream<pb::WorkerToAdminMessage>,
    _dropped: oneshot::Sender<()>,
}

impl Outbound {
    fn new(rx: mpsc::Receiver<pb::WorkerToAdminMessage>) -> (Self, oneshot::Receiver<()>) {
        let (dropped, closed) = oneshot::channel();
        (Outbound { inner: ReceiverStream::new(rx), _dropped: dropped }, closed)
    }
}

impl Stream for Outbound {
    type Item = pb::WorkerToAdminMessage;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}
