//! Operations endpoints: liveness, readiness and Prometheus metrics.

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};

use super::AppState;
use crate::job::state_name;

pub fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).route("/metrics", get(metrics))
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if !state.store.is_healthy() {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: the state store cannot commit\n")
    } else if state.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut gauges: Vec<(&str, &str, String, f64)> = Vec::new();
    gauges.push(("plughost_workers_connected", "connected worker streams", String::new(), state.registry.len() as f64));
    for ((job_type, s), n) in state.dispatcher.counts() {
        let name = state_name(s);
        gauges.push((
            "plughost_jobs",
            "jobs by job type and state",
            format!("job_type=\"{job_type}\",state=\"{name}\""),
            n as f64,
        ));
    }
    let body = state.monitor.render(&gauges);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}
