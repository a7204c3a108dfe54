//! What a standby serves on the admin's listeners while another admin leads.
//!
//! HTTP: `/healthz`; `/readyz` (503: a standby takes no work); `/api/plugin/status` (the
//! role, the epoch, the leader's addresses); `/metrics` (the lease's metrics). Every other
//! read (the pages and the JSON API's GETs, with the same authentication as on a leader)
//! is served by the ordinary HTTP app over a read-only view of the database: components
//! assembled from the state the leader last committed (`Store::snapshot_postgres`),
//! rebuilt when a request finds it older than [`VIEW_AGE`], with no loop running and no
//! write possible. The pages carry a "standby; the leader is ..." notice. Signing in and
//! out works; every other mutation answers 503 with the leader's address. gRPC: every call
//! is refused with "not the leader".

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::{Request, State},
    http::{HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::{Group, GroupView};
use crate::{
    AdminConfig,
    auth::AuthMode,
    clock::SharedClock,
    components::Components,
    config_store::ConfigStore,
    events::EventBus,
    listener::{Acceptor, Side},
    monitor::Monitor,
    secret_box::SecretBox,
    server::{AdminError, Prepared},
    store::{PgTarget, Store},
};

/// How old the read-only view may be before a request rebuilds it.
pub(super) const VIEW_AGE: Duration = Duration::from_secs(3);

/// The standby's servers; [`StandbyServer::stop`] ends them (the sockets stay bound).
pub(super) struct StandbyServer {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    view: Arc<View>,
}

impl StandbyServer {
    pub(super) async fn stop(self) {
        // Long-lived responses (a page's event stream) end with their view, so the
        // connections close at once instead of holding the takeover up.
        if let Some(current) = self.view.current.lock().await.take() {
            current.shutdown.cancel();
        }
        self.stop.cancel();
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

#[derive(Clone)]
struct Standby {
    group: Arc<Group>,
    auth_on: bool,
    grpc_port: u16,
    view: Arc<View>,
}

/// The read-only view and what it is built from.
struct View {
    config: AdminConfig,
    clock: SharedClock,
    prepared: Arc<Prepared>,
    target: PgTarget,
    group: Arc<Group>,
    /// The newest view. One build at a time.
    current: tokio::sync::Mutex<Option<Built>>,
}

/// A view's HTTP app, when it was built, and its components' shutdown token (which ends
/// its event streams).
struct Built {
    at: Instant,
    app: Router,
    shutdown: CancellationToken,
}

pub(super) fn serve(
    prepared: &Arc<Prepared>,
    config: &AdminConfig,
    clock: SharedClock,
    group: Arc<Group>,
    target: PgTarget,
) -> Result<StandbyServer, AdminError> {
    let (http, grpc) = prepared.listeners()?;
    let stop = CancellationToken::new();
    let monitor = Arc::new(Monitor::default());
    let view = View {
        config: config.clone(),
        clock,
        prepared: prepared.clone(),
        target,
        group: group.clone(),
        current: tokio::sync::Mutex::new(None),
    };
    let view = Arc::new(view);
    let state = Standby {
        group: group.clone(),
        auth_on: prepared.auth.mode == AuthMode::On,
        grpc_port: prepared.grpc_addr.port(),
        view: view.clone(),
    };
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/plugin/status", get(status))
        .fallback(elsewhere)
        .with_state(state);
    let http_acceptor =
        Acceptor::new(Side::Http, http, prepared.limits.clone(), prepared.http_tls.clone(), monitor.clone());
    let header_read_timeout = config.connections.header_read_timeout;
    let mut tasks =
        vec![tokio::spawn(crate::listener::serve_http(http_acceptor, app, header_read_timeout, stop.clone()))];

    // gRPC: one route that refuses every call, whatever the service.
    let refuse = Router::new().fallback(move || {
        let group = group.clone();
        async move {
            let view = group.view();
            super::not_leader("this admin is a standby", Some(&view.leader_grpc))
                .into_http::<axum::body::Body>()
                .into_response()
        }
    });
    let grpc_acceptor = Acceptor::new(Side::Grpc, grpc, prepared.limits.clone(), prepared.grpc_tls.clone(), monitor);
    let token = stop.clone();
    tasks.push(tokio::spawn(async move {
        let incoming = crate::listener::grpc_incoming(grpc_acceptor, token.clone());
        let served = tonic::transport::Server::builder()
            .add_routes(tonic::service::Routes::from(refuse))
            .serve_with_incoming_shutdown(incoming, token.cancelled())
            .await;
        if let Err(error) = served {
            tracing::error!(error = %error, "standby gRPC server stopped");
        }
    }));
    Ok(StandbyServer { stop, tasks, view })
}

/// The leader's HTTP address as a URL, when one leads.
fn leader_url(view: &GroupView) -> Option<String> {
    let http = view.leader_http.trim();
    if http.is_empty() {
        None
    } else if http.contains("://") {
        Some(http.to_string())
    } else {
        Some(format!("http://{http}"))
    }
}

fn standby_words(view: &GroupView) -> String {
    match leader_url(view) {
        Some(url) => format!("standby; the leader is {url}"),
        None if view.database_reachable => "standby; no admin leads at the moment".into(),
        None => "standby; the database cannot be reached".into(),
    }
}

async fn readyz(State(s): State<Standby>) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {}\n", standby_words(&s.group.view()))).into_response()
}

async fn status(State(s): State<Standby>) -> Json<serde_json::Value> {
    let view = s.group.view();
    Json(json!({
        "enabled": true,
        "worker_grpc_port": s.grpc_port,
        "protocol_version": proto::PROTOCOL_VERSION,
        "authentication_required": s.auth_on,
        "ready": false,
        "role": view.role,
        "epoch": view.epoch,
        "leader_http": view.leader_http,
        "leader_grpc": view.leader_grpc,
        "database_reachable": view.database_reachable,
        "error": view.error,
    }))
}

async fn metrics(State(s): State<Standby>) -> Response {
    let body = super::metrics_text(&s.group);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// Whether a request only reads (or signs in or out, which changes nothing stored).
fn is_read(method: &Method, path: &str) -> bool {
    method == Method::GET
        || method == Method::HEAD
        || (method == Method::POST && matches!(path, "/plugin/login" | "/plugin/logout"))
}

/// Reads go to the read-only view; everything else gets 503 with the leader's address.
async fn elsewhere(State(s): State<Standby>, request: Request) -> Response {
    let view = s.group.view();
    if !is_read(request.method(), request.uri().path()) {
        return unavailable(&view, "changes go to the leader");
    }
    match s.view.app().await {
        Ok(app) => match app.oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        },
        Err(error) => unavailable(&view, &format!("the database cannot be read ({error})")),
    }
}

fn unavailable(view: &GroupView, what: &str) -> Response {
    let leader = leader_url(view);
    let mut response = (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "error": format!("{}: {what}", standby_words(view)), "role": "standby", "leader": leader })),
    )
        .into_response();
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    if let Some(value) = leader.as_deref().and_then(|l| HeaderValue::from_str(l).ok()) {
        response.headers_mut().insert("x-plughost-leader", value);
    }
    response
}

impl View {
    /// The app over a view no older than [`VIEW_AGE`], built now if need be. The view it
    /// replaces is shut down (its event streams end; their browsers reconnect to the new
    /// one).
    async fn app(&self) -> Result<Router, String> {
        let mut current = self.current.lock().await;
        if let Some(built) = current.as_ref()
            && built.at.elapsed() < VIEW_AGE
        {
            return Ok(built.app.clone());
        }
        let built = self.build().await?;
        let app = built.app.clone();
        if let Some(old) = current.replace(built) {
            old.shutdown.cancel();
        }
        Ok(app)
    }

    async fn build(&self) -> Result<Built, String> {
        let target = self.target.clone();
        let (data_dir, key) = (self.config.data_dir.clone(), self.config.secret_key.clone());
        let (store, loaded, configs) = tokio::task::spawn_blocking(move || -> Result<_, String> {
            let (store, loaded) = Store::snapshot_postgres(&target).map_err(|e| e.to_string())?;
            let sealer = SecretBox::open_source(&key, &data_dir).map_err(|e| e.to_string())?;
            let configs = ConfigStore::open_postgres_view(&target, sealer).map_err(|e| e.to_string())?;
            Ok((store, loaded, configs))
        })
        .await
        .map_err(|e| e.to_string())??;
        let events = Arc::new(EventBus::new(64));
        events.resume_after(loaded.max_event_id);
        let (components, _) = Components::assemble(
            self.config.clone(),
            self.prepared.auth.clone(),
            self.clock.clone(),
            Arc::new(configs),
            store,
            events,
            loaded,
        );
        components.set_grpc_port(self.prepared.grpc_addr.port());
        components.set_standby(standby_words(&self.group.view()));
        // Nothing runs on a view (no loop is started, its store writes nothing), and its
        // dispatcher could send nothing even if asked.
        components.lease.revoke();
        let shutdown = components.shutdown.clone();
        Ok(Built { at: Instant::now(), app: crate::http::app(Arc::new(components)), shutdown })
    }
}
