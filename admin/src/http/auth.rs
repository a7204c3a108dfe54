//! Authentication of every HTTP request: a bearer token or a page session names the
//! caller, who is put in the request's extensions as a [`Caller`]. Public: `/healthz`,
//! `/readyz`, the login page, static assets, and `GET /api/plugin/status` (which then
//! shows only what a worker needs to dial in). Anything else without a valid identity is
//! refused: the API with 401 and a JSON error, the pages with a redirect to the login
//! page. Roles are checked where the work is: commands in the command layer, token
//! listing in its handler.

use axum::{
    Json,
    extract::{Request, State},
    http::{HeaderMap, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Redirect, Response},
};

use super::AppState;
pub use crate::commands::Caller;
use crate::{auth::AuthMode, commands::Actor, listener::ConnInfo};

/// The page session's cookie.
pub const SESSION_COOKIE: &str = "plughost_session";

/// The request id a client may send, and every response carries.
pub const REQUEST_ID: &str = "x-request-id";

/// The approval token for wide or destructive commands (`--approval-token-file`).
pub const APPROVAL: &str = "x-plughost-approval";

/// The request id a client sent, if it is a sane one (1 to 64 of `A-Za-z0-9._:-`); else
/// a new one. The gRPC admin API takes it from the same-named metadata.
pub fn request_id(sent: Option<&str>) -> String {
    sent.map(str::trim)
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        })
        .map(String::from)
        .unwrap_or_else(|| crate::random::hex(8))
}

fn is_public(method: &Method, path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/plugin/login")
        || path.starts_with("/plugin/static/")
        || (method == Method::GET && path == "/api/plugin/status")
}

/// The bearer token of a request, if it carries one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    bearer_token(headers.get(header::AUTHORIZATION)?.to_str().ok()?)
}

/// The token of an `authorization` value of the `Bearer` scheme (any case).
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The value of a cookie, if the request carries it.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
}

/// What an API token or a client certificate says about a caller.
#[derive(Debug, PartialEq, Eq)]
pub enum Credential {
    /// A token of ours, a certificate mapped to an identity, or anyone with
    /// authentication off.
    Named(Actor),
    /// A bearer token that is not one of ours: refused, whatever else the caller has.
    Unknown,
    /// No token, and no mapped certificate.
    Absent,
}

/// The caller an API token (`Bearer`) or a client certificate's fingerprint names. The
/// HTTP side and the gRPC admin API both identify callers through here, so a token or a
/// certificate names the same actor on both; worker tokens (`--worker-tokens`) are not
/// API tokens and name no one.
pub fn credential(state: &AppState, bearer: Option<&str>, certificate: Option<&str>, via: &'static str) -> Credential {
    if state.auth.mode == AuthMode::Off {
        return Credential::Named(Actor::Local(via));
    }
    if let Some(token) = bearer {
        // A wrong token is refused even when a session cookie would do: say what is wrong.
        return match state.auth.tokens.verify(token) {
            Some(t) => Credential::Named(Actor::Token { name: t.name, role: t.role }),
            None => Credential::Unknown,
        };
    }
    match certificate.and_then(|c| state.auth.tokens.verify_certificate(c)) {
        Some(t) => Credential::Named(Actor::Certificate { subject: t.name, role: t.role }),
        None => Credential::Absent,
    }
}

/// The caller a request's credentials name, if any: a bearer token, else a client
/// certificate mapped to an identity (`plughost token create --certificate`), else a page
/// session.
pub fn identify(state: &AppState, headers: &HeaderMap, conn: Option<&ConnInfo>, via: &'static str) -> Option<Actor> {
    match credential(state, bearer(headers), conn.and_then(|c| c.certificate.as_deref()), via) {
        Credential::Named(actor) => Some(actor),
        Credential::Unknown => None,
        Credential::Absent => {
            let id = cookie(headers, SESSION_COOKIE)?;
            let session = state.auth.sessions.get(id, state.clock.now_ms())?;
            Some(Actor::Session { user: session.user, role: session.role })
        }
    }
}

/// Names the caller of every request (with its request id, which the response echoes in
/// `X-Request-Id`), or refuses it.
pub async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let id = request_id(request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()));
    let mut response = identified(state, request, next, id.clone()).await;
    if let Ok(value) = header::HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

async fn identified(state: AppState, mut request: Request, next: Next, request_id: String) -> Response {
    let path = request.uri().path();
    let api = path.starts_with("/api/") || path == "/metrics";
    let via = if api { "api" } else { "ui" };
    let conn = request.extensions().get::<ConnInfo>().cloned();
    match identify(&state, request.headers(), conn.as_ref(), via) {
        Some(actor) => {
            let approval = request.headers().get(APPROVAL).and_then(|v| v.to_str().ok()).map(|v| v.trim().to_string());
            request.extensions_mut().insert(Caller { actor, request_id, approval: None }.with_approval(approval));
            next.run(request).await
        }
        None if is_public(request.method(), path) => next.run(request).await,
        None => {
            record_unauthenticated(&state, &format!("{} {}", request.method(), crate::text::clip(path, 200)));
            if api {
                let body = Json(serde_json::json!({
                    "error": "authentication required: send Authorization: Bearer <token>"
                }));
                (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response()
            } else {
                let next = request.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/plugin");
                Redirect::to(&format!("/plugin/login?next={}", super::pages::percent_encode(next))).into_response()
            }
        }
    }
}

/// Records a refused unauthenticated request (`what`: its method and path) in the
/// activity timeline, at most once a second (a flood of them must not flood the store).
/// The gRPC admin API records its refusals here too.
pub fn record_unauthenticated(state: &AppState, what: &str) {
    if !state.auth.should_audit_refusal(state.clock.now_ms()) {
        return;
    }
    let what = format!("unauthenticated request refused: {what}");
    tracing::warn!("{what}");
    state.journal.record("", "", proto::pb::ActivitySource::Admin, "auth", &what);
}
