//! Operations endpoints: liveness, readiness and Prometheus metrics.

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use proto::pb::JobState;

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
    } else if state.ready.load(std::sync::atomic::Ordering::Relaxed) && !state.is_stopping() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut gauges: Vec<(&str, &str, String, f64)> = Vec::new();
    gauges.push(("plughost_workers_connected", "connected worker streams", String::new(), state.registry.len() as f64));
    {
        let t = state.jobs.lock().expect("job table lock");
        let mut rows: Vec<(&(String, i32), &i64)> = t.counts().iter().collect();
        rows.sort();
        for ((job_type, s), n) in rows {
            let name = state_name(JobState::try_from(*s).unwrap_or(JobState::Unspecified));
            gauges.push((
                "plughost_jobs",
                "jobs by job type and state",
                format!("job_type=\"{job_type}\",state=\"{name}\""),
                *n as f64,
            ));
        }
    }
    let body = state.metrics.render(&gauges);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}
