//! Starting and stopping the admin: binds both listeners, opens the data dir, starts the
//! gRPC service, the HTTP app and the background loops, and shuts all of it down in
//! order (stop dispatching, tell workers, close streams, flush the store).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use proto::{
    admin_pb::admin_service_server::AdminServiceServer,
    pb::{self, admin_to_worker_message::Body, plugin_control_service_server::PluginControlServiceServer},
};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    auth::{Auth, AuthMode},
    clock::SharedClock,
    components::Components,
    config::AdminConfig,
    config_store::{ConfigStore, ConfigStoreError},
    datadir::{DataDirLock, LockError},
    events::EventBus,
    grpc::WorkerService,
    grpc_admin::AdminApi,
    identity::Identity,
    listener::{Acceptor, Side},
    retention::Retention,
    secret_box::{SecretBox, SecretKeyError},
    store::{Op, Store, StoreError},
};

/// Events kept for SSE replay.
const EVENT_BUFFER: usize = 8192;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// A listener could not bind; `listener` names it and the flag that sets it.
    #[error("cannot listen on {addr} for {listener}: {source}")]
    Bind { listener: String, addr: SocketAddr, source: std::io::Error },
    #[error("data dir: {0}")]
    Config(#[from] ConfigStoreError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("worker identity: {0}")]
    Identity(String),
    #[error(transparent)]
    DataDir(#[from] LockError),
    #[error(transparent)]
    Tokens(#[from] crate::auth::TokenError),
    #[error("--auth off {0}")]
    AuthOff(&'static str),
    #[error("secret key: {0}")]
    SecretKey(#[from] SecretKeyError),
    #[error(transparent)]
    ClusterContext(#[from] crate::cluster_context::ClusterContextError),
    #[error("gRPC reflection: {0}")]
    Reflection(String),
    #[error("{what} stopped unexpectedly: {message}")]
    Task { what: &'static str, message: String },
}

/// A running admin. Dropping it does not stop it; call `shutdown`.
pub struct Admin {
    components: Arc<Components>,
    http_addr: SocketAddr,
    grpc_addr: SocketAddr,
    servers: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    /// The data dir lock, the tokens and the listeners (shared with the terms before and
    /// after this one when the admin is one of several).
    prepared: Arc<Prepared>,
}

impl Admin {
    pub async fn start(config: AdminConfig) -> Result<Admin, AdminError> {
        Admin::start_with_clock(config, crate::clock::system()).await
    }

    /// Starts with a given clock (tests drive time-dependent behaviour with a manual one).
    pub async fn start_with_clock(config: AdminConfig, clock: SharedClock) -> Result<Admin, AdminError> {
        let prepared = Arc::new(Prepared::open(&config, &clock).await?);
        Admin::start_term(config, clock, prepared, None).await
    }

    /// Starts serving on `prepared`'s listeners. `term` is the leader lease this admin
    /// holds when its store is PostgreSQL: every store write is fenced by its epoch, and
    /// the dispatcher stops at the lease's deadline.
    pub(crate) async fn start_term(
        config: AdminConfig,
        clock: SharedClock,
        prepared: Arc<Prepared>,
        term: Option<(crate::ha::Term, tokio::time::Instant)>,
    ) -> Result<Admin, AdminError> {
        let (http_listener, grpc_listener) = prepared.listeners()?;
        let (http_addr, grpc_addr) = (prepared.http_addr, prepared.grpc_addr);
        let tls = prepared.grpc_tls.clone();
        let http_tls = prepared.http_tls.clone();
        let auth = prepared.auth.clone();

        let events = Arc::new(EventBus::new(EVENT_BUFFER));
        let data_dir = config.data_dir.clone();
        let key = config.secret_key.clone();
        // With PostgreSQL the lease holder keeps the job types in the database (every save
        // fenced by the term's epoch, as the job store's writes), so the next leader sees them.
        let database = match (&config.store, &term) {
            (crate::config::StoreLocation::Postgres { url, ca }, Some((term, _))) => {
                let target = crate::store::PgTarget::parse(url, ca.as_deref()).map_err(|source| {
                    StoreError::Backend { path: crate::store::postgres::redacted(url).into(), source }
                })?;
                Some((target, term.epoch))
            }
            _ => None,
        };
        let configs = Arc::new(
            tokio::task::spawn_blocking(move || -> Result<ConfigStore, AdminError> {
                // The key first: the config store opens sealed values with it.
                let sealer = SecretBox::open_source(&key, &data_dir)?;
                Ok(match database {
                    Some((target, epoch)) => ConfigStore::open_postgres(&target, epoch, &data_dir, sealer)?,
                    None => ConfigStore::open(&data_dir, sealer)?,
                })
            })
            .await
            .map_err(|e| AdminError::Task { what: "opening the config store", message: e.to_string() })??,
        );
        let identity = Arc::new(Identity::open(&config.data_dir, &config.worker_tokens).map_err(AdminError::Identity)?);
        let connection_limits = prepared.limits.clone();
        let (store, loaded) = open_store(&config, term.as_ref().map(|(t, _)| t.epoch), events.clone()).await?;
        // Event ids go on above the earlier runs' (SSE clients may hold one of theirs).
        events.resume_after(loaded.max_event_id);
        store.write(Op::EventIds { up_to: events.last_id() });
        let (components, requeued) = Components::assemble(config, auth, clock, configs, store, events, loaded);
        let components = Arc::new(components);
        // A context file that cannot be used is a start error, before any request is built.
        components.cluster_context.reload()?;
        components.set_grpc_port(grpc_addr.port());
        if let Some((term, deadline)) = term {
            // Before any loop starts: nothing is dispatched past the lease's deadline.
            components.lease.extend(deadline);
            components.set_term(term);
        }
        if requeued > 0 {
            tracing::info!(requeued, "jobs that were running when the admin stopped are requeued");
        }

        let servers = CancellationToken::new();
        let mut tasks = Vec::new();

        let c = &components;
        let service = PluginControlServiceServer::new(WorkerService::new(c.clone(), identity))
            .max_decoding_message_size(c.config.max_message_bytes)
            .max_encoding_message_size(c.config.max_message_bytes);
        // Beside the worker protocol: the admin API, health checks and reflection.
        let admin_api = AdminServiceServer::new(AdminApi::new(c.clone()))
            .max_decoding_message_size(crate::grpc_admin::MAX_REQUEST_BYTES)
            .max_encoding_message_size(c.config.max_message_bytes);
        let (health, health_service) = tonic_health::server::health_reporter();
        // Not serving until the admin is ready (the watcher below says when).
        crate::grpc_admin::health::set_all(&health, tonic_health::ServingStatus::NotServing).await;
        let (reflection_v1, reflection_v1alpha) =
            crate::grpc_admin::reflection().map_err(|e| AdminError::Reflection(e.to_string()))?;
        // TLS, connection caps and handshake deadlines are the accept loop's (`listener.rs`).
        let mut builder = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)));
        let token = servers.clone();
        let grpc_acceptor = Acceptor::new(Side::Grpc, grpc_listener, connection_limits.clone(), tls, c.monitor.clone());
        tasks.push(tokio::spawn(async move {
            let incoming = crate::listener::grpc_incoming(grpc_acceptor, token.clone());
            let router = builder
                .add_service(service)
                .add_service(admin_api)
                .add_service(health_service)
                .add_service(reflection_v1)
                .add_service(reflection_v1alpha);
            if let Err(e) = router.serve_with_incoming_shutdown(incoming, token.cancelled()).await {
                tracing::error!(error = %e, "gRPC server stopped");
            }
        }));

        let app = crate::http::app(c.clone());
        let header_read_timeout = connection_limits.header_read_timeout;
        let http_acceptor = Acceptor::new(Side::Http, http_listener, connection_limits, http_tls, c.monitor.clone());
        tasks.push(tokio::spawn(crate::listener::serve_http(http_acceptor, app, header_read_timeout, servers.clone())));

        let stop = &c.shutdown;
        tasks.push(tokio::spawn(c.dispatcher.clone().run(stop.clone())));
        tasks.push(tokio::spawn(c.scheduler.clone().run(stop.clone())));
        tasks.push(tokio::spawn(c.schemas.clone().run(stop.clone())));
        tasks.push(tokio::spawn(c.liveness().run(stop.clone())));
        tasks.push(tokio::spawn(c.cluster_context.clone().watch(c.config.cluster_context_poll, stop.clone())));
        let retention = Retention {
            store: c.store.clone(),
            dispatcher: c.dispatcher.clone(),
            clock: c.clock.clone(),
            keep: c.config.history_retention,
            audit: c.audit.clone(),
            audit_retention: c.audit_retention(),
        };
        tasks.push(tokio::spawn(retention.run(stop.clone())));
        tasks.push(tokio::spawn(c.artifacts.clone().run_retention(stop.clone())));
        tasks.push(tokio::spawn(c.trends.clone().run(c.dispatcher.clone(), c.registry.clone(), stop.clone())));
        // In the background: the charts show the earlier runs' jobs once it is done.
        tokio::spawn(c.trends.clone().rebuild(c.store.clone()));

        c.set_ready();
        tasks.push(tokio::spawn(crate::grpc_admin::health::follow(health, c.clone())));
        tracing::info!(%http_addr, %grpc_addr, "admin ready");
        Ok(Admin { components, http_addr, grpc_addr, servers, tasks, prepared })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// When this start created the first admin token: a link that signs in with it.
    pub fn sign_in_hint(&self) -> Option<String> {
        let token = self.prepared.first_token.as_ref()?;
        let scheme = if self.components.config.http_tls.is_some() { "https" } else { "http" };
        Some(format!(
            "first start: an admin token was written to {}; sign in at {scheme}://{}/plugin/login with it ({token})",
            crate::auth::admin_token_path(&self.components.config.data_dir).display(),
            self.http_addr
        ))
    }

    pub fn components(&self) -> &Arc<Components> {
        &self.components
    }

    /// Resolves when something asked the admin to stop (not used by the admin itself).
    pub async fn stopped(&self) {
        self.components.shutdown.cancelled().await
    }

    /// Stops dispatching, sends `shutdown` to every worker, waits up to the grace period
    /// for running jobs, closes the streams and the servers, and flushes the store.
    pub async fn shutdown(self) {
        let c = self.components.clone();
        c.shutdown.cancel();
        let grace = c.config.shutdown_grace;
        let msg =
            pb::AdminShutdown { reason: "admin is shutting down".into(), grace_period_seconds: grace.as_secs() as i32 };
        for s in c.registry.sessions() {
            s.send(crate::wire::envelope("", Body::Shutdown(msg.clone())), c.config.send_timeout);
        }
        let until = tokio::time::Instant::now() + grace;
        while c.dispatcher.in_flight() > 0 && !c.registry.is_empty() && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for s in c.registry.sessions() {
            s.close(crate::worker_history::LeftBecause::AdminShutdown, "admin is shutting down");
        }
        self.servers.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        let ticket = c.store.last_ticket();
        let _ = tokio::time::timeout(Duration::from_secs(10), c.store.durable(ticket)).await;
        remember_event_ids(&c).await;
        let store = c.store.clone();
        let _ = tokio::task::spawn_blocking(move || store.close()).await;
        tracing::info!("admin stopped");
    }
}

/// What an admin sets up once, before it serves: the data dir lock, the API tokens, both
/// listeners bound and their TLS. An admin that is one of several keeps these across its
/// terms as leader and standby, so its addresses never change.
pub(crate) struct Prepared {
    _lock: DataDirLock,
    pub(crate) auth: Arc<Auth>,
    /// The first admin token, when this start created it.
    pub(crate) first_token: Option<String>,
    http: std::net::TcpListener,
    grpc: std::net::TcpListener,
    pub(crate) http_addr: SocketAddr,
    pub(crate) grpc_addr: SocketAddr,
    pub(crate) grpc_tls: Option<rustls::ServerConfig>,
    pub(crate) http_tls: Option<rustls::ServerConfig>,
    pub(crate) limits: crate::config::ConnectionLimits,
}

impl Prepared {
    pub(crate) async fn open(config: &AdminConfig, clock: &SharedClock) -> Result<Prepared, AdminError> {
        if config.auth == AuthMode::Off {
            if !config.http_addr.ip().is_loopback() || !config.grpc_addr.ip().is_loopback() {
                return Err(AdminError::AuthOff("is allowed only when both listeners are on loopback addresses"));
            }
            if config.scripts_allowed {
                return Err(AdminError::AuthOff("is not allowed while scripts are allowed"));
            }
        }
        // Before anything touches the data dir: one admin per data dir.
        let lock = DataDirLock::acquire(&config.data_dir)?;
        let (auth, first_token) = Auth::open(&config.data_dir, config.auth, clock.now_ms())?;
        let http_bind = |source| AdminError::Bind {
            listener: "the HTTP listener (set --http-addr)".into(),
            addr: config.http_addr,
            source,
        };
        let grpc_bind = |source| AdminError::Bind {
            listener: if config.grpc_addr_derived {
                "the gRPC listener (HTTP port + 10000; set --grpc-addr)".into()
            } else {
                "the gRPC listener (set --grpc-addr)".into()
            },
            addr: config.grpc_addr,
            source,
        };
        let http = TcpListener::bind(config.http_addr).await.map_err(http_bind)?;
        let grpc = TcpListener::bind(config.grpc_addr).await.map_err(grpc_bind)?;
        let http_addr = http.local_addr().map_err(http_bind)?;
        let grpc_addr = grpc.local_addr().map_err(grpc_bind)?;
        let grpc_tls = match &config.grpc_tls {
            Some(files) => Some(crate::tls::server_config(files, &[b"h2"]).map_err(AdminError::Tls)?),
            None => None,
        };
        let http_tls = match &config.http_tls {
            Some(files) => Some(crate::tls::server_config(files, &[b"http/1.1"]).map_err(AdminError::Tls)?),
            None => None,
        };
        Ok(Prepared {
            _lock: lock,
            auth,
            first_token,
            http: http.into_std().map_err(http_bind)?,
            grpc: grpc.into_std().map_err(grpc_bind)?,
            http_addr,
            grpc_addr,
            grpc_tls,
            http_tls,
            limits: crate::listener::fit_to_open_files(&config.connections),
        })
    }

    /// Listeners on the bound sockets for one term's servers: when the term ends and
    /// drops them, the sockets stay open here, so the next term serves the same addresses.
    pub(crate) fn listeners(&self) -> Result<(TcpListener, TcpListener), AdminError> {
        let share = |listener: &std::net::TcpListener, addr: SocketAddr, name: &str| {
            let bind = |source| AdminError::Bind { listener: name.into(), addr, source };
            let copy = listener.try_clone().map_err(bind)?;
            copy.set_nonblocking(true).map_err(bind)?;
            TcpListener::from_std(copy).map_err(bind)
        };
        Ok((
            share(&self.http, self.http_addr, "the HTTP listener")?,
            share(&self.grpc, self.grpc_addr, "the gRPC listener")?,
        ))
    }
}

/// Opens the job store the config names: SQLite in the data dir, or PostgreSQL with every
/// write fenced by `epoch`.
async fn open_store(
    config: &AdminConfig,
    epoch: Option<i64>,
    events: Arc<EventBus>,
) -> Result<(Arc<Store>, crate::store::Loaded), AdminError> {
    match &config.store {
        crate::config::StoreLocation::Sqlite => Ok(Store::open(&config.data_dir, events)?),
        crate::config::StoreLocation::Postgres { url, ca } => {
            // Several admins may share the database: only a lease holder writes to it.
            let Some(epoch) = epoch else {
                return Err(AdminError::Task {
                    what: "opening the PostgreSQL store",
                    message: "a PostgreSQL store is opened by the leader lease's holder (admin::ha::HaAdmin)".into(),
                });
            };
            let epoch = Some(epoch);
            let target = crate::store::PgTarget::parse(url, ca.as_deref())
                .map_err(|source| StoreError::Backend { path: crate::store::postgres::redacted(url).into(), source })?;
            // The backend blocks on its own runtime while it loads: not on this one.
            tokio::task::spawn_blocking(move || Store::open_postgres(&target, epoch, events))
                .await
                .map_err(|e| AdminError::Task { what: "opening the PostgreSQL store", message: e.to_string() })?
                .map_err(AdminError::from)
        }
    }
}

impl Admin {
    /// Ends this term at once because the admin no longer leads (its lease was lost or
    /// could not be renewed in time): nothing more is dispatched, the workers' streams
    /// are closed with "not the leader" so they move on, and what the store had not
    /// committed is dropped, not retried: the new leader requeues those jobs from what
    /// was committed.
    pub(crate) async fn step_down(self, reason: &str) {
        let c = self.components.clone();
        c.lease.revoke();
        c.shutdown.cancel();
        let status = crate::ha::not_leader(reason, None);
        for s in c.registry.sessions() {
            s.close_with(crate::worker_history::LeftBecause::AdminShutdown, reason, status.clone());
        }
        self.servers.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        let store = c.store.clone();
        let _ = tokio::task::spawn_blocking(move || store.abandon()).await;
        tracing::warn!(reason, "stepped down: no longer the leader");
    }
}

/// Remembers the newest event id in the store, so that the next run's ids start above
/// it. The writer publishes a batch's events right after the batch commits, one batch at
/// a time: once an empty batch queued after it is durable, every event is published.
async fn remember_event_ids(c: &Components) {
    let wait = Duration::from_secs(5);
    let barrier = c.store.submit(None, None);
    let _ = tokio::time::timeout(wait, c.store.durable(barrier)).await;
    let ticket = c.store.write(Op::EventIds { up_to: c.events.last_id() });
    let _ = tokio::time::timeout(wait, c.store.durable(ticket)).await;
}
