//! The OpenAPI 3.1 document of the JSON API and the operations endpoints, served at
//! `GET /api/plugin/openapi.json`. It is derived with `utoipa` from the handlers'
//! `#[utoipa::path]` attributes and the types they take and answer (`ToSchema`); each
//! area lists its handlers in its own `Doc`, merged here. Answers built as JSON values
//! (SeaweedFS's shapes, proto JSON) are described by schemas that name their fields
//! (`shapes::schema`), or as objects in proto JSON where the message is the contract.
//!
//! The document must cover exactly what [`super::routes`] routes: the test below (and
//! `tests/tests/admin_openapi.rs` over HTTP) compares the two both ways.

use std::sync::OnceLock;

use axum::{http::header, response::IntoResponse};
use serde::Serialize;
use utoipa::{
    Modify, OpenApi, ToSchema,
    openapi::{
        Ref, RefOr, ResponseBuilder,
        security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme},
    },
};

use super::routes::Routes;
use crate::validator::FieldError;

pub fn routes() -> Routes {
    Routes::new().get("/openapi.json", openapi_json)
}

/// The body of every error answer (`ApiError`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for a person.
    pub error: String,
    /// For an invalid config: what is wrong with each field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field_errors: Option<Vec<FieldError>>,
    /// For a conflict with an active job (the same dedupe key): that job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// For a rate cap (429): when to try again; also in `Retry-After`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
}

impl ErrorBody {
    pub fn new(error: String) -> ErrorBody {
        ErrorBody { error, field_errors: None, job_id: None, retry_after_seconds: None }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Plughost admin API",
        description = "The admin's JSON API (`/api/plugin`, paths shared with SeaweedFS's admin answer a \
            superset of its shapes) and its operations endpoints. Every request needs credentials \
            but `/healthz`, `/readyz` and a reduced `GET /api/plugin/status`: an API token as a bearer \
            token, a client certificate mapped to a token, or a page session cookie. Reads need any \
            role; commands need the operator role, some the admin role (the command layer says which, \
            answering 403). A request may send `X-Request-Id` (1 to 64 of `A-Za-z0-9._:-`); every \
            answer carries one. Commands that need approval take `X-Plughost-Approval`.",
        license(name = "Apache-2.0"),
    ),
    components(schemas(ErrorBody)),
    security(("bearer" = []), ("session" = []), ("client_certificate" = [])),
    tags(
        (name = "status", description = "the admin, its workers and job types"),
        (name = "config", description = "descriptors and saved configs"),
        (name = "detection", description = "detections on demand and their results"),
        (name = "jobs", description = "jobs, their detail, artifacts and commands"),
        (name = "operations", description = "holds, schedules, replay, audit, tokens, health and metrics"),
        (name = "seaweedfs", description = "routes SeaweedFS's admin has, in its shapes"),
        (name = "events", description = "the live event stream"),
    ),
)]
struct Base;

/// The security schemes, and the answers every authenticated route may give (401 without
/// credentials, 500 on an internal error), added to each operation.
struct Common;

impl Modify for Common {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("an API token (`plughost token create`, or `<data>/plugin/admin.token`)"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                super::auth::SESSION_COOKIE,
                "a page session, from signing in at /plugin/login",
            ))),
        );
        components.add_security_scheme(
            "client_certificate",
            SecurityScheme::MutualTls {
                description: Some("a TLS client certificate mapped to a token (`--certificate`)".into()),
                extensions: None,
            },
        );
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    utoipa::openapi::ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
                )
                .build()
        };
        components.responses.insert("Unauthorized".into(), RefOr::T(error("no valid credentials")));
        components.responses.insert("Internal".into(), RefOr::T(error("an internal error; the admin's log says more")));
        for item in openapi.paths.paths.values_mut() {
            for op in [&mut item.get, &mut item.post, &mut item.put, &mut item.delete].into_iter().flatten() {
                let public = op.security.as_ref().is_some_and(|s| s.contains(&SecurityRequirement::default()));
                let responses = &mut op.responses.responses;
                if !public {
                    responses
                        .entry("401".into())
                        .or_insert_with(|| RefOr::Ref(Ref::from_response_name("Unauthorized")));
                }
                responses.entry("500".into()).or_insert_with(|| RefOr::Ref(Ref::from_response_name("Internal")));
            }
        }
    }
}

/// The whole document.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = Base::openapi();
    for part in [
        super::api::Doc::openapi(),
        super::governance::Doc::openapi(),
        super::seaweed::Doc::openapi(),
        super::artifacts::Doc::openapi(),
        super::trends::Doc::openapi(),
        super::job_log::Doc::openapi(),
        super::sse::Doc::openapi(),
        super::ops::Doc::openapi(),
        Doc::openapi(),
    ] {
        doc.merge(part);
    }
    // Run the modifier again, now over every area's operations.
    Common.modify(&mut doc);
    doc
}

/// The document as JSON, made once.
fn document_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| document().to_pretty_json().expect("the OpenAPI document serialises"))
}

#[derive(OpenApi)]
#[openapi(paths(openapi_json))]
struct Doc;

/// This document.
#[utoipa::path(get, path = "/api/plugin/openapi.json", tag = "status",
    responses((status = 200, description = "the OpenAPI 3.1 document of this API", content_type = "application/json", body = Object)))]
async fn openapi_json() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document_json())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every (method, path) in the document.
    fn documented(doc: &serde_json::Value) -> BTreeSet<(String, String)> {
        let mut found = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("a path item").keys() {
                found.insert((method.clone(), path.clone()));
            }
        }
        found
    }

    #[test]
    fn every_routed_path_is_documented_and_every_documented_path_is_routed() {
        let doc: serde_json::Value = serde_json::from_str(document_json()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{}", doc["openapi"]);
        let routed: BTreeSet<(String, String)> =
            super::super::route_table().into_iter().map(|(m, p)| (m.openapi_name().to_string(), p)).collect();
        let documented = documented(&doc);
        let undocumented: Vec<_> = routed.difference(&documented).collect();
        let unrouted: Vec<_> = documented.difference(&routed).collect();
        assert!(undocumented.is_empty(), "routed but not in the OpenAPI document: {undocumented:?}");
        assert!(unrouted.is_empty(), "in the OpenAPI document but not routed: {unrouted:?}");
        assert!(routed.len() > 40, "{routed:?}");
    }

    #[test]
    fn a_route_added_without_documentation_is_caught() {
        async fn extra() {}
        let routed = super::super::routes().merge(Routes::new().get("/api/plugin/extra", extra)).table();
        let doc: serde_json::Value = serde_json::from_str(document_json()).unwrap();
        let documented = documented(&doc);
        let missing: Vec<_> = routed
            .iter()
            .filter(|(m, p)| !documented.contains(&(m.openapi_name().to_string(), p.clone())))
            .map(|(_, p)| p.as_str())
            .collect();
        assert_eq!(missing, ["/api/plugin/extra"]);
    }

    #[test]
    fn every_schema_reference_resolves_and_every_operation_says_how_it_fails() {
        let doc: serde_json::Value = serde_json::from_str(document_json()).unwrap();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        let responses = doc["components"]["responses"].as_object().expect("responses");
        for (i, _) in text.match_indices("\"$ref\":\"#/components/") {
            let rest = &text[i + "\"$ref\":\"#/components/".len()..];
            let reference = &rest[..rest.find('"').unwrap()];
            let (kind, name) = reference.split_once('/').unwrap();
            let known = match kind {
                "schemas" => schemas.contains_key(name),
                "responses" => responses.contains_key(name),
                _ => false,
            };
            assert!(known, "unresolved reference {reference}");
        }
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let codes: Vec<&String> = op["responses"].as_object().unwrap().keys().collect();
                assert!(codes.iter().any(|c| c.starts_with('2')), "{method} {path}: no success answer");
                assert!(codes.iter().any(|c| c.starts_with('5')), "{method} {path}: no error answer");
            }
        }
    }
}
