//! Who is calling the admin API: an API token in `authorization: Bearer` metadata, or a
//! client certificate mapped to an identity, exactly as the HTTP side identifies its
//! callers ([`crate::http::auth::credential`]). A worker token (`--worker-tokens`) is not
//! an API token and names no one; with `--auth off` every caller is a local admin, as on
//! HTTP. A refused call is recorded like a refused HTTP request (at most once a second).

use tonic::{Request, Status, metadata::MetadataMap};

use crate::{
    commands::Caller,
    components::Components,
    http::auth::{APPROVAL, Credential, REQUEST_ID, bearer_token, credential, record_unauthenticated, request_id},
    listener::ConnInfo,
};

/// The surface a local admin's commands are recorded under with `--auth off`.
const VIA: &str = "grpc";

fn text<'a>(metadata: &'a MetadataMap, key: &str) -> Option<&'a str> {
    metadata.get(key).and_then(|v| v.to_str().ok())
}

/// The caller of `request` to `method` (with its request id and approval token), or
/// UNAUTHENTICATED.
/// An identified caller's connection counts as established from now on, as a worker's
/// does after its accepted hello: the connection caps never shed it, and the handshake
/// deadline no longer applies (a `WatchEvents` stream may stay open).
pub fn identify<T>(state: &std::sync::Arc<Components>, request: &Request<T>, method: &str) -> Result<Caller, Status> {
    let metadata = request.metadata();
    let request_id = request_id(text(metadata, REQUEST_ID));
    let conn = request.extensions().get::<ConnInfo>();
    let bearer = text(metadata, "authorization").and_then(bearer_token);
    let message = match credential(state, bearer, conn.and_then(|c| c.certificate.as_deref()), VIA) {
        Credential::Named(actor) => {
            if let Some(conn) = conn {
                conn.establish();
            }
            let approval = text(metadata, APPROVAL).map(|v| v.trim().to_string());
            return Ok(Caller { actor, request_id, approval: None }.with_approval(approval));
        }
        Credential::Unknown => "the bearer token is not an API token of this admin",
        Credential::Absent => "authentication required: send authorization: Bearer <token> metadata",
    };
    let service = proto::admin_pb::admin_service_server::SERVICE_NAME;
    record_unauthenticated(state, &format!("gRPC {service}/{method}"));
    Err(with_request_id(Status::unauthenticated(message), &request_id))
}

/// Answers carry the request id in their metadata, as HTTP answers carry `X-Request-Id`.
pub fn with_request_id(mut status: Status, request_id: &str) -> Status {
    if let Ok(v) = request_id.parse() {
        status.metadata_mut().insert(REQUEST_ID, v);
    }
    status
}

/// A reply with the caller's request id in its metadata.
pub fn reply<T>(caller: &Caller, message: T) -> tonic::Response<T> {
    let mut response = tonic::Response::new(message);
    if let Ok(v) = caller.request_id.parse() {
        response.metadata_mut().insert(REQUEST_ID, v);
    }
    response
}
