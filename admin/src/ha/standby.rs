//! What a standby serves on the admin's listeners while another admin leads.
//!
//! HTTP: `/healthz`; `/readyz` (503: a standby takes no work); `/api/plugin/status` (the
//! role, the epoch, the leader's addresses); `/metrics` (the lease counters); the job
//! list and job details read from the database (`/api/plugin/jobs`,
//! `/api/plugin/jobs/{id}`, with an API token); a `/plugin` page that says who leads and
//! lists the newest jobs. Everything else, every mutation included, answers 503 with the
//! leader's address. gRPC: every call is refused with "not the leader".

use std::sync::{Arc, Mutex};

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Deserialize;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Group, GroupView};
use crate::{
    AdminConfig,
    auth::{Auth, AuthMode},
    listener::{Acceptor, Side},
    monitor::Monitor,
    server::{AdminError, Prepared},
    store::{JobQuery, PgTarget, StoreReader},
};

/// The standby's servers; [`StandbyServer::stop`] ends them (the sockets stay bound).
pub(super) struct StandbyServer {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl StandbyServer {
    pub(super) async fn stop(self) {
        self.stop.cancel();
        for task in self.tasks {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
        }
    }
}

#[derive(Clone)]
struct Standby {
    group: Arc<Group>,
    auth: Arc<Auth>,
    target: PgTarget,
    /// Opened on first use, and again after it failed.
    reader: Arc<Mutex<Option<Arc<StoreReader>>>>,
    grpc_port: u16,
}

pub(super) fn serve(
    prepared: &Prepared,
    config: &AdminConfig,
    group: Arc<Group>,
    target: PgTarget,
) -> Result<StandbyServer, AdminError> {
    let (http, grpc) = prepared.listeners()?;
    let stop = CancellationToken::new();
    let monitor = Arc::new(Monitor::default());
    let state = Standby {
        group: group.clone(),
        auth: prepared.auth.clone(),
        target,
        reader: Arc::default(),
        grpc_port: prepared.grpc_addr.port(),
    };
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/plugin/status", get(status))
        .route("/api/plugin/jobs", get(jobs))
        .route("/api/plugin/jobs/{id}", get(job))
        .route("/plugin", get(page))
        .fallback(elsewhere)
        .with_state(state);
    let http_acceptor = Acceptor::new(Side::Http, http, prepared.limits.clone(), prepared.http_tls.clone(), monitor.clone());
    let header_read_timeout = config.connections.header_read_timeout;
    let mut tasks = vec![tokio::spawn(crate::listener::serve_http(http_acceptor, app, header_read_timeout, stop.clone()))];

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
    Ok(StandbyServer { stop, tasks })
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
        "authentication_required": s.auth.mode == AuthMode::On,
        "ready": false,
        "role": view.role,
        "epoch": view.epoch,
        "leader_http": view.leader_http,
        "leader_grpc": view.leader_grpc,
        "database_reachable": view.database_reachable,
    }))
}

async fn metrics(State(s): State<Standby>) -> Response {
    let body = super::metrics_text(&s.group);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// Everything a standby does not serve: 503 with the leader's address.
async fn elsewhere(State(s): State<Standby>, method: Method) -> Response {
    let view = s.group.view();
    let leader = leader_url(&view);
    let what = if method == Method::GET || method == Method::HEAD { "this is served by the leader" } else { "changes go to the leader" };
    let mut response = (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "error": format!("{}: {what}", standby_words(&view)), "role": "standby", "leader": leader })),
    )
        .into_response();
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    if let Some(value) = leader.as_deref().and_then(|l| HeaderValue::from_str(l).ok()) {
        response.headers_mut().insert("x-plughost-leader", value);
    }
    response
}

impl Standby {
    /// The caller presented an API token this admin knows (or authentication is off).
    fn signed_in(&self, headers: &HeaderMap) -> bool {
        if self.auth.mode == AuthMode::Off {
            return true;
        }
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        bearer.is_some_and(|t| self.auth.tokens.verify(t).is_some())
    }

    fn reader(&self) -> Result<Arc<StoreReader>, String> {
        let mut slot = self.reader.lock().expect("standby reader lock");
        if let Some(reader) = slot.as_ref() {
            return Ok(reader.clone());
        }
        let reader = Arc::new(StoreReader::open_postgres(&self.target).map_err(|e| e.to_string())?);
        *slot = Some(reader.clone());
        Ok(reader)
    }

    /// Runs a read on a blocking thread; a failed read drops the reader so the next
    /// request opens it again.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&StoreReader) -> Result<T, crate::store::StoreError> + Send + 'static,
    ) -> Result<T, Response> {
        let me = self.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let reader = me.reader()?;
            f(&reader).map_err(|e| {
                *me.reader.lock().expect("standby reader lock") = None;
                e.to_string()
            })
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        outcome.map_err(|error| {
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "error": format!("the database cannot be read: {error}") })))
                .into_response()
        })
    }
}

fn unauthorized() -> Response {
    (StatusCode::UNAUTHORIZED, Json(json!({ "error": "an API token is required (authorization: Bearer <token>)" })))
        .into_response()
}

#[derive(Deserialize)]
struct JobsQuery {
    job_type: Option<String>,
    limit: Option<usize>,
}

async fn jobs(State(s): State<Standby>, headers: HeaderMap, Query(q): Query<JobsQuery>) -> Response {
    if !s.signed_in(&headers) {
        return unauthorized();
    }
    let query = JobQuery { job_type: q.job_type, limit: q.limit.unwrap_or(100), ..Default::default() };
    match s.read(move |r| r.jobs(&query)).await {
        // A bare array, as the leader answers.
        Ok(views) => Json(views.iter().map(crate::http::shapes::job).collect::<Vec<_>>()).into_response(),
        Err(response) => response,
    }
}

async fn job(State(s): State<Standby>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if !s.signed_in(&headers) {
        return unauthorized();
    }
    let Some(seq) = crate::job::parse_job_id(&id) else {
        return (StatusCode::NOT_FOUND, Json(json!({ "error": format!("no job {id:?}") }))).into_response();
    };
    match s.read(move |r| r.job(seq)).await {
        Ok(Some(job)) => Json(crate::http::shapes::job(&job.view())).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, Json(json!({ "error": format!("no job {id:?}") }))).into_response(),
        Err(response) => response,
    }
}

#[derive(askama::Template, askama_web::WebTemplate)]
#[template(path = "standby.html")]
struct StandbyPage {
    words: String,
    epoch: i64,
    leader: Option<String>,
    jobs: Vec<crate::job::JobView>,
}

/// `/plugin` on a standby: who leads, and (with an API token) the newest jobs.
async fn page(State(s): State<Standby>, headers: HeaderMap) -> Response {
    let view = s.group.view();
    let mut jobs = Vec::new();
    if s.signed_in(&headers) {
        let query = JobQuery { limit: 50, ..Default::default() };
        if let Ok(views) = s.read(move |r| r.jobs(&query)).await {
            jobs = views;
        }
    }
    StandbyPage { words: standby_words(&view), epoch: view.epoch, leader: leader_url(&view), jobs }.into_response()
}
