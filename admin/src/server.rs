//! Starting and stopping the admin: binds both listeners, opens the data dir, starts the
//! gRPC service, the HTTP app and the background loops, and shuts all of it down in
//! order (stop dispatching, tell workers, close streams, flush the store).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use proto::pb::{self, admin_to_worker_message::Body, plugin_control_service_server::PluginControlServiceServer};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

use crate::{
    config::AdminConfig,
    config_store::{ConfigStore, ConfigStoreError},
    dispatcher::JobTable,
    events::{EventBus, EventKind},
    grpc::WorkerService,
    job::now_ms,
    state::AdminState,
    store::{Op, Store, StoreError},
};

/// Events kept for SSE replay.
const EVENT_BUFFER: usize = 8192;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("data dir: {0}")]
    Config(#[from] ConfigStoreError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("TLS: {0}")]
    Tls(String),
}

/// A running admin. Dropping it does not stop it; call `shutdown`.
pub struct Admin {
    state: Arc<AdminState>,
    http_addr: SocketAddr,
    grpc_addr: SocketAddr,
    servers: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Admin {
    pub async fn start(config: AdminConfig) -> Result<Admin, AdminError> {
        let http_listener = TcpListener::bind(config.http_addr)
            .await
            .map_err(|source| AdminError::Bind { addr: config.http_addr, source })?;
        let grpc_listener = TcpListener::bind(config.grpc_addr)
            .await
            .map_err(|source| AdminError::Bind { addr: config.grpc_addr, source })?;
        let http_addr =
            http_listener.local_addr().map_err(|source| AdminError::Bind { addr: config.http_addr, source })?;
        let grpc_addr =
            grpc_listener.local_addr().map_err(|source| AdminError::Bind { addr: config.grpc_addr, source })?;
        let tls = match &config.grpc_tls {
            Some(files) => Some(grpc_tls(files)?),
            None => None,
        };
        let http_tls = match &config.http_tls {
            Some(files) => Some(crate::tls::server_config(files, &[b"http/1.1"]).map_err(AdminError::Tls)?),
            None => None,
        };

        let events = Arc::new(EventBus::new(EVENT_BUFFER));
        let data_dir = config.data_dir.clone();
        let configs =
            Arc::new(tokio::task::spawn_blocking(move || ConfigStore::open(&data_dir)).await.map_err(|e| {
                AdminError::Config(ConfigStoreError::Io {
                    path: config.data_dir.clone(),
                    source: std::io::Error::other(e),
                })
            })??);
        let (store, mut loaded) = Store::open(&config.data_dir, events.clone())?;
        let (jobs, requeue_writes) = JobTable::from_loaded(&mut loaded);
        let requeued = requeue_writes.iter().filter(|op| matches!(op, Op::UpdateJob(_))).count();
        for op in requeue_writes {
            store.write(op);
        }
        let state = Arc::new(AdminState::new(
            config,
            configs,
            store,
            events,
            jobs,
            loaded.next_activity_id,
            loaded.next_run_id,
        ));
        state.grpc_port.store(grpc_addr.port(), std::sync::atomic::Ordering::Relaxed);
        if requeued > 0 {
            tracing::info!(requeued, "jobs that were running when the admin stopped are requeued");
        }

        let servers = CancellationToken::new();
        let mut tasks = Vec::new();

        let service = PluginControlServiceServer::new(WorkerService::new(state.clone()))
            .max_decoding_message_size(state.config.max_message_bytes)
            .max_encoding_message_size(state.config.max_message_bytes);
        let mut builder = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)));
        if let Some(tls) = tls {
            builder = builder.tls_config(tls).map_err(|e| AdminError::Tls(e.to_string()))?;
        }
        let token = servers.clone();
        tasks.push(tokio::spawn(async move {
            let incoming = TcpListenerStream::new(grpc_listener);
            if let Err(e) = builder.add_service(service).serve_with_incoming_shutdown(incoming, token.cancelled()).await
            {
                tracing::error!(error = %e, "gRPC server stopped");
            }
        }));

        let app = crate::http::app(state.clone());
        let token = servers.clone();
        let stopped = async move { token.cancelled().await };
        tasks.push(match http_tls {
            Some(tls) => {
                let listener = crate::tls::TlsListener::new(http_listener, tls)
                    .map_err(|source| AdminError::Bind { addr: http_addr, source })?;
                tokio::spawn(async move {
                    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stopped).await {
                        tracing::error!(error = %e, "HTTPS server stopped");
                    }
                })
            }
            None => tokio::spawn(async move {
                if let Err(e) = axum::serve(http_listener, app).with_graceful_shutdown(stopped).await {
                    tracing::error!(error = %e, "HTTP server stopped");
                }
            }),
        });

        tasks.push(tokio::spawn(dispatch_loop(state.clone())));
        tasks.push(tokio::spawn(scheduler_loop(state.clone())));
        tasks.push(tokio::spawn(liveness_loop(state.clone())));
        tasks.push(tokio::spawn(retention_loop(state.clone())));

        state.ready.store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(%http_addr, %grpc_addr, "admin ready");
        Ok(Admin { state, http_addr, grpc_addr, servers, tasks })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn state(&self) -> &Arc<AdminState> {
        &self.state
    }

    /// Resolves when something asked the admin to stop (not used by the admin itself).
    pub async fn stopped(&self) {
        self.state.shutdown.cancelled().await
    }

    /// Stops dispatching, sends `shutdown` to every worker, waits up to the grace period
    /// for running jobs, closes the streams and the servers, and flushes the store.
    pub async fn shutdown(self) {
        let state = self.state.clone();
        state.shutdown.cancel();
        let grace = state.config.shutdown_grace;
        let msg =
            pb::AdminShutdown { reason: "admin is shutting down".into(), grace_period_seconds: grace.as_secs() as i32 };
        for s in state.registry.sessions() {
            s.send(AdminState::envelope("", Body::Shutdown(msg.clone())), state.send_timeout());
        }
        let until = tokio::time::Instant::now() + grace;
        while state.in_flight() > 0 && !state.registry.is_empty() && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for s in state.registry.sessions() {
            s.close("admin is shutting down");
        }
        self.servers.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        let ticket = state.store.last_ticket();
        let _ = tokio::time::timeout(Duration::from_secs(10), state.store.durable(ticket)).await;
        let store = state.store.clone();
        let _ = tokio::task::spawn_blocking(move || store.close()).await;
        tracing::info!("admin stopped");
    }
}

fn grpc_tls(files: &crate::config::TlsFiles) -> Result<tonic::transport::ServerTlsConfig, AdminError> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| AdminError::Tls(format!("cannot read {}: {e}", p.display())))
    };
    let identity = tonic::transport::Identity::from_pem(read(&files.cert)?, read(&files.key)?);
    let mut tls = tonic::transport::ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &files.client_ca {
        tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(read(ca)?));
    }
    Ok(tls)
}

async fn dispatch_loop(state: Arc<AdminState>) {
    loop {
        state.check_deadlines();
        let next = state.dispatch_pass();
        let wait = next.map(|n| (n - now_ms()).clamp(1, 250)).unwrap_or(250) as u64;
        tokio::select! {
            _ = state.wake_dispatch.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
            _ = state.shutdown.cancelled() => break,
        }
    }
}

async fn scheduler_loop(state: Arc<AdminState>) {
    loop {
        let next = state.scheduler_pass();
        state.expire_schema_requests(None);
        let wait = (next - now_ms()).clamp(10, 1000) as u64;
        tokio::select! {
            _ = state.wake_scheduler.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
            _ = state.shutdown.cancelled() => break,
        }
    }
}

/// Declares workers lost after three silent heartbeat intervals, and publishes a slot
/// summary for the live pages.
async fn liveness_loop(state: Arc<AdminState>) {
    let interval = state.config.heartbeat_interval.max(Duration::from_secs(1));
    let limit_ms = 3 * interval.as_millis() as i64;
    let mut tick = tokio::time::interval(Duration::from_millis(250).min(interval / 2));
    let mut last_summary = 0i64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = state.shutdown.cancelled() => break,
        }
        let now = now_ms();
        let sessions = state.registry.sessions();
        for s in &sessions {
            let silent = now - s.last_seen();
            if silent > limit_ms {
                tracing::warn!(worker_id = %s.worker_id, silent_ms = silent, "worker lost: no heartbeat");
                s.close(&format!("no heartbeat for {} s", silent / 1000));
            }
        }
        if !sessions.is_empty() && now - last_summary >= 2000 {
            last_summary = now;
            let (mut used, mut total) = (0i64, 0i64);
            for s in &sessions {
                let hb = s.heartbeat();
                used += i64::from(hb.execution_slots_used);
                total += i64::from(hb.execution_slots_total);
            }
            state.events.publish(EventKind::Heartbeat {
                workers: sessions.len(),
                execution_slots_used: used,
                execution_slots_total: total,
            });
        }
    }
}

async fn retention_loop(state: Arc<AdminState>) {
    let Some(keep) = state.config.history_retention else { return };
    loop {
        let (report, pruned) = tokio::sync::oneshot::channel();
        state.store.write(Op::Prune { before_ms: now_ms() - keep.as_millis() as i64, report: Some(report) });
        if let Ok(pruned) = pruned.await {
            state.jobs.lock().expect("job table lock").forget_pruned(&pruned);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            _ = state.shutdown.cancelled() => break,
        }
    }
}
