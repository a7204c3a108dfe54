//! Signing in and out of the pages: the login form exchanges an API token for a session
//! cookie (HttpOnly, SameSite=Strict, Secure under HTTPS, expiring with the session).

use askama::Template;
use askama_web::WebTemplate;
use axum::{
    Form,
    extract::{Query, State, rejection::FormRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;

use super::{Chrome, Flash, PageError, back_or, csrf, forms::Posted, jobs::posted, see_other};
use crate::{
    auth::{AuthMode, sessions::SESSION_TTL_MS},
    http::{AppState, auth::SESSION_COOKIE},
};

#[derive(Template, WebTemplate)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub page: Chrome,
    /// Where to go after signing in (a page of this admin).
    pub next: String,
    pub error: String,
}

#[derive(Deserialize, Default)]
pub struct LoginQuery {
    next: Option<String>,
    ok: Option<String>,
    error: Option<String>,
}

/// `GET /plugin/login`.
pub async fn page(State(state): State<AppState>, Query(q): Query<LoginQuery>) -> Response {
    if state.auth.mode == AuthMode::Off {
        return see_other("/plugin", Ok("Authentication is off on this admin: there is nothing to sign in to.".into()));
    }
    LoginPage {
        page: Chrome::new(&state, "Sign in", "", &Flash { ok: q.ok, error: q.error }),
        next: back_or(q.next.as_deref(), "/plugin"),
        error: String::new(),
    }
    .into_response()
}

fn session_cookie(value: &str, max_age_secs: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let text = format!("{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}");
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("plughost_session=; Max-Age=0"))
}

/// `POST /plugin/login` with `token` (and `next`).
pub async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Result<Response, PageError> {
    let pairs = posted(form)?;
    csrf::check(&headers, &pairs)?;
    let field = |k: &str| Posted(&pairs).first(k);
    let next = back_or(field("next"), "/plugin");
    let token = field("token").unwrap_or("").trim();
    let Some(info) = state.auth.tokens.verify(token) else {
        state.journal.record("", "", proto::pb::ActivitySource::Admin, "auth", "sign-in with an unknown token refused");
        let page = LoginPage {
            page: Chrome::new(&state, "Sign in", "", &Flash::default()),
            next,
            error: "That token is not valid here. Use a token this admin issued (plughost token create), \
                    or the one in <data>/plugin/admin.token."
                .into(),
        };
        return Ok((StatusCode::UNAUTHORIZED, page).into_response());
    };
    let id = state.auth.sessions.open(&info.name, info.role, state.clock.now_ms());
    let cookie = session_cookie(&id, SESSION_TTL_MS / 1000, state.config.http_tls.is_some());
    let mut response = see_other(&next, Ok(format!("Signed in as {} ({}).", info.name, info.role)));
    response.headers_mut().append(header::SET_COOKIE, cookie);
    Ok(response)
}

/// `POST /plugin/logout`.
pub async fn sign_out(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Result<Response, PageError> {
    let pairs = posted(form)?;
    csrf::check(&headers, &pairs)?;
    if let Some(id) = crate::http::auth::cookie(&headers, SESSION_COOKIE) {
        state.auth.sessions.close(id);
    }
    let mut response = see_other("/plugin/login", Ok("Signed out.".into()));
    response.headers_mut().append(header::SET_COOKIE, session_cookie("", 0, state.config.http_tls.is_some()));
    Ok(response)
}
