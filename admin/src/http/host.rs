//! DNS-rebinding guard: an admin listening on loopback answers only requests addressed to
//! a loopback name (`localhost`, `127.x.x.x`, `[::1]`) or a name the operator allowed.
//! Without it, a web page whose name is re-pointed at 127.0.0.1 becomes same-origin
//! with the admin and can read its pages (and their CSRF token) and post forms.

use std::net::IpAddr;

use axum::{
    extract::{Request, State},
    http::{StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::AppState;

/// The host part of a `Host` header (port and IPv6 brackets removed), lowercased.
fn host_name(value: &str) -> String {
    let v = value.trim();
    let name = if let Some(rest) = v.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        v.rsplit_once(':').map(|(h, port)| if port.chars().all(|c| c.is_ascii_digit()) { h } else { v }).unwrap_or(v)
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

pub fn is_allowed(host: &str, extra: &[String]) -> bool {
    let name = host_name(host);
    crate::address::is_loopback_name(&name)
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        || extra.iter().any(|e| e.eq_ignore_ascii_case(&name))
}

pub async fn check_host(State(state): State<AppState>, request: Request, next: Next) -> Response {
    // Only a loopback listener is guarded: an operator who binds elsewhere chose the names
    // that reach it (and lists extra names with --allowed-hosts).
    if state.config.http_addr.ip().is_loopback() {
        let allowed = match request.headers().get(header::HOST).and_then(|h| h.to_str().ok()) {
            Some(host) => is_allowed(host, &state.config.allowed_hosts),
            // HTTP/1.0 without Host, or HTTP/2 with :authority in the URI.
            None => request.uri().host().is_none_or(|h| is_allowed(h, &state.config.allowed_hosts)),
        };
        if !allowed {
            let body = axum::Json(serde_json::json!({
                "error": "this admin answers only to loopback host names; add the name with --allowed-hosts"
            }));
            return (StatusCode::MISDIRECTED_REQUEST, body).into_response();
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_pass_and_rebound_names_do_not() {
        for ok in [
            "localhost",
            "localhost:23646",
            "127.0.0.1:23646",
            "127.8.9.1",
            "[::1]:23646",
            "LOCALHOST.",
            "app.localhost:1",
        ] {
            assert!(is_allowed(ok, &[]), "{ok}");
        }
        for bad in ["evil.example", "evil.example:23646", "10.0.0.1:23646", "[2001:db8::1]:80", ""] {
            assert!(!is_allowed(bad, &[]), "{bad}");
        }
        assert!(is_allowed("admin.internal:23646", &["admin.internal".to_string()]));
    }
}
