//! Operations endpoints: liveness, readiness and the metrics, as Prometheus text
//! (`/metrics`) and as JSON (`GET /api/plugin/metrics`, routed with the API). Both are
//! rendered from one [`MetricsSnapshot`].

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};

use super::{AppState, routes::Routes};
use crate::{
    job::state_name,
    monitor::{MetricFamily, MetricKind, MetricsSnapshot},
};

pub fn routes() -> Routes {
    Routes::new().get("/healthz", healthz).get("/readyz", readyz).get("/metrics", metrics)
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(healthz, readyz, metrics, metrics_json))]
pub(super) struct Doc;

/// The JSON snapshot, routed under `/api/plugin`.
pub fn api_routes() -> Routes {
    Routes::new().get("/metrics", metrics_json)
}

/// Liveness: the process answers HTTP.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, description = "the admin is alive", content_type = "text/plain", body = String)))]
async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: the state store commits and the admin has finished starting.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses(
        (status = 200, description = "ready", content_type = "text/plain", body = String),
        (status = 503, description = "not ready, or the state store cannot commit", content_type = "text/plain", body = String),
    ))]
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if !state.store.is_healthy() {
        (StatusCode::SERVICE_UNAVAILABLE, std::borrow::Cow::Borrowed("not ready: the state store cannot commit\n"))
    } else if state.is_ready() {
        match state.term() {
            Some(term) => (StatusCode::OK, format!("ready: leader, epoch {}\n", term.epoch).into()),
            None => (StatusCode::OK, "ready\n".into()),
        }
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".into())
    }
}

/// Every metric now: the monitor's counters and histograms, and the gauges read from the
/// registry and the job table.
pub fn snapshot(state: &AppState) -> MetricsSnapshot {
    let mut gauges = Vec::new();
    gauges.push(
        MetricFamily::new("plughost_workers_connected", MetricKind::Gauge, "connected worker streams")
            .with(&[], state.registry.len() as f64),
    );
    let mut sessions = state.registry.sessions();
    sessions.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
    let mut slots = MetricFamily::new(
        "plughost_worker_slots",
        MetricKind::Gauge,
        "slots a connected worker offers, by kind (detection, execution), as its last heartbeat said",
    );
    let mut used = MetricFamily::new(
        "plughost_worker_slots_used",
        MetricKind::Gauge,
        "slots of a connected worker in use, by kind (detection, execution), as its last heartbeat said",
    );
    for s in &sessions {
        let hb = s.heartbeat();
        let id = s.worker_id.as_str();
        for (kind, total, in_use) in [
            ("detection", hb.detection_slots_total, hb.detection_slots_used),
            ("execution", hb.execution_slots_total, hb.execution_slots_used),
        ] {
            slots.push(&[("kind", kind), ("worker_id", id)], f64::from(total));
            used.push(&[("kind", kind), ("worker_id", id)], f64::from(in_use));
        }
    }
    gauges.push(slots);
    gauges.push(used);
    let mut jobs = MetricFamily::new("plughost_jobs", MetricKind::Gauge, "jobs by job type and state");
    for ((job_type, s), n) in state.dispatcher.counts() {
        jobs.push(&[("job_type", job_type.as_str()), ("state", state_name(s))], n as f64);
    }
    gauges.push(jobs);
    gauges.extend(state.store.metrics());
    if let Some(term) = state.term() {
        gauges.extend(crate::ha::lease_metrics(&term.group));
    }
    state.monitor.snapshot(gauges)
}

/// The metrics in the Prometheus text format (needs a token, like the API).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Prometheus text exposition format 0.0.4", content_type = "text/plain; version=0.0.4", body = String),
        (status = 401, description = "no valid credentials", body = super::openapi::ErrorBody),
    ))]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let body = snapshot(&state).to_prometheus();
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

/// The same metrics as `/metrics`, as JSON: every family with its type, help and samples.
#[utoipa::path(get, path = "/api/plugin/metrics", tag = "operations",
    responses(
        (status = 200, description = "every metric now", body = MetricsSnapshot),
        (status = 401, description = "no valid credentials", body = super::openapi::ErrorBody),
    ))]
async fn metrics_json(State(state): State<AppState>) -> Json<MetricsSnapshot> {
    Json(snapshot(&state))
}
