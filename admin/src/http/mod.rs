//! The admin's HTTP surface: the JSON API under `/api/plugin/`, Server-Sent Events,
//! operations endpoints (`/healthz`, `/readyz`, `/metrics`), and the `/plugin` pages
//! (`pages/`). Mutating API requests from other sites are refused (`origin.rs`), and a loopback admin
//! answers only loopback host names (`host.rs`, against DNS rebinding). Each area has its own
//! `router()`; `app` nests them.

pub(crate) mod api;
mod artifacts;
pub mod auth;
pub(crate) mod detection;
mod error;
pub(crate) mod governance;
mod host;
mod job_log;
mod ops;
mod origin;
mod pages;
mod seaweed;
pub(crate) mod shapes;
mod sse;
pub(crate) mod trends;

use std::sync::Arc;

use axum::Router;

pub use error::{ApiError, ApiQuery, INVALID_CONFIG};

use crate::components::Components;

/// Shared by every handler.
pub type AppState = Arc<Components>;

/// The largest request body the API takes (and the largest request the gRPC admin API
/// decodes).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

pub fn app(state: AppState) -> Router {
    Router::new()
        .nest(
            "/api/plugin",
            api::router()
                .merge(governance::router())
                .merge(seaweed::router())
                .merge(artifacts::router())
                .merge(trends::router())
                .merge(job_log::router())
                .merge(sse::router())
                .layer(axum::middleware::from_fn(origin::reject_cross_site)),
        )
        .merge(pages::router())
        .merge(ops::router())
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::authenticate))
        .layer(axum::middleware::from_fn_with_state(state.clone(), host::check_host))
        .with_state(state)
}
