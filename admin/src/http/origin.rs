//! A guard for the JSON API's mutating requests: a browser on another site must not be
//! able to cancel jobs or drain workers through a user's loopback admin (a `text/plain`
//! form post needs no CORS preflight). Browsers label such requests with `Sec-Fetch-Site`
//! and `Origin`; scripts (curl, workers) send neither and are not affected.

use axum::{
    extract::Request,
    http::{Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

pub async fn reject_cross_site(request: Request, next: Next) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(request).await;
    }
    let headers = request.headers();
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    let cross_site = matches!(site, Some("cross-site") | Some("same-site"));
    let origin_mismatch = match (headers.get(header::ORIGIN), headers.get(header::HOST)) {
        (Some(origin), Some(host)) => {
            let origin = origin.to_str().unwrap_or("");
            let host = host.to_str().unwrap_or("");
            origin == "null" || origin.split_once("://").map(|(_, rest)| rest) != Some(host)
        }
        (Some(_), None) => true,
        _ => false,
    };
    if cross_site || origin_mismatch {
        let body = axum::Json(serde_json::json!({ "error": "cross-site requests may not change the admin's state" }));
        return (StatusCode::FORBIDDEN, body).into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use axum::{Router, body::Body, routing::post};
    use tower::ServiceExt;

    fn app() -> Router {
        Router::new().route("/x", post(|| async { "ok" })).layer(axum::middleware::from_fn(super::reject_cross_site))
    }

    async fn status(headers: &[(&str, &str)]) -> u16 {
        let mut req = axum::http::Request::builder().method("POST").uri("/x").header("host", "127.0.0.1:23646");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        app().oneshot(req.body(Body::empty()).unwrap()).await.unwrap().status().as_u16()
    }

    #[tokio::test]
    async fn scripts_and_same_origin_pages_pass_and_other_sites_are_refused() {
        assert_eq!(status(&[]).await, 200, "curl sends neither header");
        assert_eq!(status(&[("origin", "http://127.0.0.1:23646"), ("sec-fetch-site", "same-origin")]).await, 200);
        assert_eq!(status(&[("origin", "https://evil.example")]).await, 403);
        assert_eq!(status(&[("sec-fetch-site", "cross-site")]).await, 403);
        assert_eq!(status(&[("origin", "null")]).await, 403);
    }
}
