//! The admin's HTTP surface: the JSON API under `/api/plugin/`, Server-Sent Events,
//! operations endpoints (`/healthz`, `/readyz`, `/metrics`), and the `/plugin` pages
//! (`pages/`). Mutating API requests from other sites are refused (`origin.rs`), and a
//! loopback admin answers only loopback host names (`host.rs`, against DNS rebinding).
//! Each area has its own `routes()` (the pages a `router()`); `app` nests them. The API's
//! routes are registered through [`Routes`], which keeps their table, and the OpenAPI
//! document (`openapi.rs`, `GET /api/plugin/openapi.json`) is checked against it.

pub(crate) mod api;
mod artifacts;
pub mod auth;
pub(crate) mod detection;
mod error;
pub(crate) mod governance;
mod host;
mod job_log;
pub mod openapi;
mod ops;
mod origin;
mod pages;
pub mod routes;
mod schemas;
mod seaweed;
pub(crate) mod shapes;
mod sse;
#[cfg(test)]
mod tests;
pub(crate) mod trends;

use std::sync::Arc;

use axum::Router;

pub use error::{ApiError, ApiQuery, INVALID_CONFIG};
pub use routes::{Method, Routes};

use crate::components::Components;

/// Shared by every handler.
pub type AppState = Arc<Components>;

/// The largest request body the API takes (and the largest request the gRPC admin API
/// decodes).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// The JSON API under `/api/plugin` and the operations endpoints: every route the
/// OpenAPI document describes (the pages are not in it).
pub fn routes() -> Routes {
    let api = api::routes()
        .merge(governance::routes())
        .merge(seaweed::routes())
        .merge(artifacts::routes())
        .merge(trends::routes())
        .merge(job_log::routes())
        .merge(sse::routes())
        .merge(ops::api_routes())
        .merge(openapi::routes());
    Routes::new()
        .nest("/api/plugin", api, |r| r.layer(axum::middleware::from_fn(origin::reject_cross_site)))
        .merge(ops::routes())
}

/// Every (method, path) that [`app`] routes besides the pages, sorted.
pub fn route_table() -> Vec<(Method, String)> {
    routes().table()
}

pub fn app(state: AppState) -> Router {
    routes()
        .into_router()
        .merge(pages::router())
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::authenticate))
        .layer(axum::middleware::from_fn_with_state(state.clone(), host::check_host))
        .with_state(state)
}
