//! The pages' static files, embedded in the binary at build time (`admin/static/`):
//! nothing is fetched from the internet, and the admin runs from one file.

use axum::{
    extract::Path,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use super::PageError;

/// (name, content type, bytes)
const FILES: &[(&str, &str, &[u8])] = &[
    ("app.css", "text/css; charset=utf-8", include_bytes!("../../../static/app.css")),
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("../../../static/app.js")),
    ("favicon.svg", "image/svg+xml", include_bytes!("../../../static/favicon.svg")),
];

pub async fn serve(Path(file): Path<String>) -> Response {
    let Some((_, content_type, bytes)) = FILES.iter().find(|(name, _, _)| *name == file) else {
        return PageError::not_found("There is no such file.").into_response();
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            // Short: the files change with the admin's version, and URLs carry no hash.
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300")),
        ],
        *bytes,
    )
        .into_response()
}
