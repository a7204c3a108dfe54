//! A fake admin for SDK tests: a real tonic server whose streams are handed to the test over channels.
//!
//! `FakeAdmin::start` serves `plugin.PluginControlService` on 127.0.0.1 (optionally
//! with TLS, optionally requiring client certificates). Every `WorkerStream` call
//! becomes a [`FakeSession`]: the test reads what the worker sent from `inbound`,
//! writes what the admin says to `outbound`, and sees the request metadata. The admin
//! can be stopped (every open stream ends with UNAVAILABLE, the port is released) and
//! restarted on the same port, which is how reconnect tests take it away. It can also
//! play a standby admin of a high-availability pair ([`FakeAdmin::set_standby`]): it
//! refuses streams the way a standby does and ends open ones the way a leader that lost
//! its lease does; [`FakeAdmin::record_attempts`] logs every stream call, in order
//! across several fake admins.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use proto::pb::{
    self,
    admin_to_worker_message::Body as AdminBody,
    plugin_control_service_server::{PluginControlService, PluginControlServiceServer},
};
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tokio_util::sync::CancellationToken;
use tonic::{
    Request, Response, Status, Streaming,
    metadata::MetadataMap,
    transport::{Certificate, Identity, Server, ServerTlsConfig},
};

/// How long the helpers wait for the worker before failing the test.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// How to serve.
#[derive(Debug, Clone, Default)]
pub struct FakeAdminOptions {
    /// Serve TLS.
    pub tls: Option<ServerTls>,
    /// 0 picks a free port.
    pub port: u16,
}

/// Server TLS material, PEM.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert_pem: String,
    pub key_pem: String,
    /// When set, clients must present a certificate signed by this CA.
    pub client_ca_pem: Option<String>,
}

impl ServerTls {
    /// The server certificate of `pki`; with `require_client_cert`, mutual TLS
    /// against the same CA.
    pub fn from_pki(pki: &crate::certs::TestPki, require_client_cert: bool) -> Self {
        ServerTls {
            cert_pem: pki.server.cert_pem.clone(),
            key_pem: pki.server.key_pem.clone(),
            client_ca_pem: require_client_cert.then(|| pki.ca_pem.clone()),
        }
    }
}

/// A running (or stopped) fake admin.
pub struct FakeAdmin {
    addr: SocketAddr,
    options: FakeAdminOptions,
    sessions_tx: mpsc::Sender<FakeSession>,
    sessions: mpsc::Receiver<FakeSession>,
    running: Option<Running>,
    role: Arc<Mutex<Role>>,
}

/// One `WorkerStream` call, as [`FakeAdmin::record_attempts`] logs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The label given to `record_attempts`.
    pub admin: String,
    /// Refused as a standby (else the stream was opened).
    pub refused: bool,
}

/// Leader or standby, and where stream calls are logged.
#[derive(Default)]
struct Role {
    /// `Some(leader)`: a standby, naming `leader` (the leader's gRPC `host:port`) if set.
    standby: Option<Option<String>>,
    /// Canceled when this admin becomes a standby: its open streams end.
    demoted: CancellationToken,
    journal: Option<(String, mpsc::UnboundedSender<Attempt>)>,
}

impl Role {
    fn record(&self, refused: bool) {
        if let Some((admin, journal)) = &self.journal {
            let _ = journal.send(Attempt { admin: admin.clone(), refused });
        }
    }
}

/// What a standby admin answers to any call: UNAVAILABLE, "not the leader: ...", the
/// metadata `plughost-role: standby` and, when known, `plughost-leader: host:port`.
pub fn not_the_leader(leader: Option<&str>) -> Status {
    let message = match leader {
        Some(leader) => format!("not the leader: this admin is a standby; the leader is {leader}"),
        None => "not the leader: this admin is a standby; the leader is not known".to_string(),
    };
    let mut status = Status::unavailable(message);
    status.metadata_mut().insert("plughost-role", "standby".parse().expect("ascii"));
    if let Some(leader) = leader {
        status.metadata_mut().insert("plughost-leader", leader.parse().expect("an ascii host:port"));
    }
    status
}

struct Running {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl FakeAdmin {
    /// Binds 127.0.0.1 (`options.port`, or any free port) and serves.
    pub async fn start(options: FakeAdminOptions) -> Self {
        let (sessions_tx, sessions) = mpsc::channel(16);
        let mut admin = FakeAdmin {
            addr: SocketAddr::from(([127, 0, 0, 1], options.port)),
            options,
            sessions_tx,
            sessions,
            running: None,
            role: Arc::default(),
        };
        admin.serve().await;
        admin
    }

    /// A plaintext fake admin on a free port.
    pub async fn plain() -> Self {
        Self::start(FakeAdminOptions::default()).await
    }

    async fn serve(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.expect("bind the fake admin");
        self.addr = listener.local_addr().expect("local addr");
        let stop = CancellationToken::new();
        let service = FakeService { sessions: self.sessions_tx.clone(), stop: stop.clone(), role: self.role.clone() };
        let mut builder = Server::builder();
        if let Some(tls) = &self.options.tls {
            let mut config = ServerTlsConfig::new().identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem));
            if let Some(ca) = &tls.client_ca_pem {
                config = config.client_ca_root(Certificate::from_pem(ca));
            }
            builder = builder.tls_config(config).expect("valid server tls settings");
        }
        let router = builder.add_service(PluginControlServiceServer::new(service));
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let shutdown = stop.clone().cancelled_owned();
        let task = tokio::spawn(async move {
            if let Err(e) = router.serve_with_incoming_shutdown(incoming, shutdown).await {
                tracing::warn!(error = %e, "fake admin server ended with an error");
            }
        });
        self.running = Some(Running { stop, task });
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The address a worker should dial: `grpc://127.0.0.1:port`, or `grpcs://` with TLS.
    pub fn grpc_url(&self) -> String {
        let scheme = if self.options.tls.is_some() { "grpcs" } else { "grpc" };
        format!("{scheme}://{}", self.addr)
    }

    /// The next stream a worker opened; panics after [`DEADLINE`].
    pub async fn next_session(&mut self) -> FakeSession {
        crate::within("a worker stream", DEADLINE, self.sessions.recv()).await.expect("the fake admin keeps a sender")
    }

    /// A stream that is already open, if any.
    pub fn try_next_session(&mut self) -> Option<FakeSession> {
        self.sessions.try_recv().ok()
    }

    /// Ends every open stream with UNAVAILABLE, stops serving and releases the port.
    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop.cancel();
            let mut task = running.task;
            if tokio::time::timeout(DEADLINE, &mut task).await.is_err() {
                task.abort();
            }
        }
    }

    /// Serves again on the same port.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.serve().await;
    }

    /// Becomes a standby naming `leader` (a gRPC `host:port`) or no leader: open
    /// streams end with [`not_the_leader`] (a leader losing its lease), and every new
    /// stream call is refused with it.
    pub fn set_standby(&self, leader: Option<&str>) {
        let mut role = self.role.lock().expect("the role lock");
        role.standby = Some(leader.map(str::to_string));
        role.demoted.cancel();
    }

    /// Takes streams again (the default).
    pub fn set_leader(&self) {
        let mut role = self.role.lock().expect("the role lock");
        role.standby = None;
        role.demoted = CancellationToken::new();
    }

    /// Logs every stream call from now on to `journal`, labelled `label`; give several
    /// fake admins one journal to see the order of a worker's attempts across them.
    pub fn record_attempts(&self, label: &str, journal: mpsc::UnboundedSender<Attempt>) {
        self.role.lock().expect("the role lock").journal = Some((label.to_string(), journal));
    }
}

impl Drop for FakeAdmin {
    fn drop(&mut self) {
        if let Some(running) = &self.running {
            running.stop.cancel();
        }
    }
}

struct FakeService {
    sessions: mpsc::Sender<FakeSession>,
    stop: CancellationToken,
    role: Arc<Mutex<Role>>,
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<pb::AdminToWorkerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl PluginControlService for FakeService {
    type WorkerStreamStream = ResponseStream;

    async fn worker_stream(
        &self,
        request: Request<Streaming<pb::WorkerToAdminMessage>>,
    ) -> Result<Response<Self::WorkerStreamStream>, Status> {
        let demoted = {
            let role = self.role.lock().expect("the role lock");
            role.record(role.standby.is_some());
            if let Some(leader) = &role.standby {
                return Err(not_the_leader(leader.as_deref()));
            }
            role.demoted.clone()
        };
        let metadata = request.metadata().clone();
        let mut from_worker = request.into_inner();
        let (inbound_tx, inbound) = mpsc::channel(1024);
        let (outbound, mut outbound_rx) = mpsc::channel::<pb::AdminToWorkerMessage>(256);
        let (response_tx, response_rx) = mpsc::channel(256);

        // Like a real admin, the call ends once the worker ends its side.
        let worker_done = CancellationToken::new();
        let stop = self.stop.clone();
        let done = worker_done.clone();
        tokio::spawn(async move {
            let _done = done.drop_guard();
            loop {
                tokio::select! {
                    message = from_worker.message() => match message {
                        Ok(Some(m)) => {
                            if inbound_tx.send(m).await.is_err() {
                                break;
                            }
                        }
                        // The worker ended the stream (or it broke): `inbound` closes.
                        _ => break,
                    },
                    _ = stop.cancelled() => break,
                }
            }
        });

        let stop = self.stop.clone();
        let role = self.role.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => {
                        let _ = response_tx.send(Err(Status::unavailable("the fake admin stopped"))).await;
                        break;
                    }
                    _ = demoted.cancelled() => {
                        let leader = role.lock().expect("the role lock").standby.clone().flatten();
                        let _ = response_tx.send(Err(not_the_leader(leader.as_deref()))).await;
                        break;
                    }
                    message = outbound_rx.recv() => match message {
                        Some(m) => {
                            if response_tx.send(Ok(m)).await.is_err() {
                                break;
                            }
                        }
                        // The test dropped the session: end the stream cleanly.
                        None => break,
                    },
                    _ = worker_done.cancelled() => break,
                }
            }
        });

        let _ = self.sessions.send(FakeSession { inbound, outbound, metadata, next_request: 0 }).await;
        Ok(Response::new(Box::pin(ReceiverStream::new(response_rx))))
    }
}

/// One worker stream as the admin sees it.
pub struct FakeSession {
    /// What the worker sent; closes when the worker ends the stream.
    pub inbound: mpsc::Receiver<pb::WorkerToAdminMessage>,
    /// What the admin sends; dropping the session ends the stream.
    pub outbound: mpsc::Sender<pb::AdminToWorkerMessage>,
    /// The request metadata (e.g. `authorization`).
    pub metadata: MetadataMap,
    next_request: u64,
}

impl FakeSession {
    /// The next message; `None` once the worker ended the stream. Panics after
    /// [`DEADLINE`].
    pub async fn recv(&mut self) -> Option<pb::WorkerToAdminMessage> {
        crate::within("a message from the worker", DEADLINE, self.inbound.recv()).await
    }

    /// The first message, which must be a hello.
    pub async fn expect_hello(&mut self) -> pb::WorkerHello {
        match self.recv().await.and_then(|m| m.body) {
            Some(pb::worker_to_admin_message::Body::Hello(hello)) => hello,
            other => panic!("expected a hello first, got {other:?}"),
        }
    }

    /// Answers the hello with `accepted: true`.
    pub async fn accept(&self, heartbeat_interval_seconds: i32, reconnect_delay_seconds: i32) {
        self.hello(pb::AdminHello {
            accepted: true,
            message: "welcome".into(),
            heartbeat_interval_seconds,
            reconnect_delay_seconds,
        })
        .await;
    }

    /// Answers the hello with `accepted: false`.
    pub async fn reject(&self, message: &str) {
        self.hello(pb::AdminHello { accepted: false, message: message.into(), ..Default::default() }).await;
    }

    async fn hello(&self, hello: pb::AdminHello) {
        self.send_message(pb::AdminToWorkerMessage {
            request_id: String::new(),
            sent_at: Some(proto::now()),
            body: Some(AdminBody::Hello(hello)),
        })
        .await;
    }

    /// Sends a request with a fresh request id (`req-1`, `req-2`, ...) and returns the id.
    pub async fn request(&mut self, body: AdminBody) -> String {
        self.next_request += 1;
        let id = format!("req-{}", self.next_request);
        self.send(&id, body).await;
        id
    }

    /// Sends `body` with `request_id`.
    pub async fn send(&self, request_id: &str, body: AdminBody) {
        self.send_message(pb::AdminToWorkerMessage {
            request_id: request_id.to_string(),
            sent_at: Some(proto::now()),
            body: Some(body),
        })
        .await;
    }

    pub async fn send_message(&self, message: pb::AdminToWorkerMessage) {
        crate::within("room in the outbound stream", DEADLINE, self.outbound.send(message))
            .await
            .expect("the stream to the worker is open");
    }

    /// Skips messages until `pick` returns `Some`; panics after `deadline` or if the
    /// worker ends the stream first.
    pub async fn recv_matching<T>(
        &mut self,
        what: &str,
        deadline: Duration,
        mut pick: impl FnMut(&pb::WorkerToAdminMessage) -> Option<T>,
    ) -> T {
        self.collect_until(what, deadline, &mut pick).await.1
    }

    /// Every message up to and including the first one `pick` accepts.
    pub async fn collect_until<T>(
        &mut self,
        what: &str,
        deadline: Duration,
        mut pick: impl FnMut(&pb::WorkerToAdminMessage) -> Option<T>,
    ) -> (Vec<pb::WorkerToAdminMessage>, T) {
        let inbound = &mut self.inbound;
        crate::within(what, deadline, async move {
            let mut seen = Vec::new();
            loop {
                let Some(message) = inbound.recv().await else {
                    panic!("the worker ended the stream while waiting for {what}; saw {seen:#?}");
                };
                let picked = pick(&message);
                seen.push(message);
                if let Some(v) = picked {
                    return (seen, v);
                }
            }
        })
        .await
    }

    /// Waits until the worker ends the stream, returning what it sent before.
    pub async fn expect_closed(&mut self, deadline: Duration) -> Vec<pb::WorkerToAdminMessage> {
        let inbound = &mut self.inbound;
        crate::within("the worker to end the stream", deadline, async move {
            let mut seen = Vec::new();
            while let Some(message) = inbound.recv().await {
                seen.push(message);
            }
            seen
        })
        .await
    }

    /// The `authorization` metadata, if sent.
    pub fn authorization(&self) -> Option<&str> {
        self.metadata.get("authorization").and_then(|v| v.to_str().ok())
    }
}

/// The body of a worker message, for `match`.
pub fn body(message: &pb::WorkerToAdminMessage) -> Option<&pb::worker_to_admin_message::Body> {
    message.body.as_ref()
}

/// The acknowledgement of `request_id`, if `message` is one.
pub fn ack_of(message: &pb::WorkerToAdminMessage, request_id: &str) -> Option<pb::WorkerAcknowledge> {
    match body(message) {
        Some(pb::worker_to_admin_message::Body::Acknowledge(a)) if a.request_id == request_id => Some(a.clone()),
        _ => None,
    }
}

/// The heartbeat, if `message` is one.
pub fn heartbeat_of(message: &pb::WorkerToAdminMessage) -> Option<pb::WorkerHeartbeat> {
    match body(message) {
        Some(pb::worker_to_admin_message::Body::Heartbeat(h)) => Some(h.clone()),
        _ => None,
    }
}

/// The `job_completed` for `request_id`, if `message` is one.
pub fn job_completed_of(message: &pb::WorkerToAdminMessage, request_id: &str) -> Option<pb::JobCompleted> {
    match body(message) {
        Some(pb::worker_to_admin_message::Body::JobCompleted(c)) if c.request_id == request_id => Some(c.clone()),
        _ => None,
    }
}

/// The `detection_complete` for `request_id`, if `message` is one.
pub fn detection_complete_of(message: &pb::WorkerToAdminMessage, request_id: &str) -> Option<pb::DetectionComplete> {
    match body(message) {
        Some(pb::worker_to_admin_message::Body::DetectionComplete(c)) if c.request_id == request_id => Some(c.clone()),
        _ => None,
    }
}

/// The `job_progress_update` for `request_id`, if `message` is one.
pub fn progress_of(message: &pb::WorkerToAdminMessage, request_id: &str) -> Option<pb::JobProgressUpdate> {
    match body(message) {
        Some(pb::worker_to_admin_message::Body::JobProgressUpdate(p)) if p.request_id == request_id => Some(p.clone()),
        _ => None,
    }
}
