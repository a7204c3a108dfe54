//! A small HTTP/1.1 client for tests (hyper's connection API, no extra crates): JSON
//! requests, and Server-Sent Events read frame by frame.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::{Request, body::Bytes};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

pub struct Response {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn connect(addr: &str) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("http handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
}

/// API tokens of the admins under test, by HTTP address: [`request`] sends the one of
/// its address unless the caller gives its own `authorization` header.
fn tokens() -> &'static std::sync::Mutex<std::collections::HashMap<String, String>> {
    static TOKENS: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<String, String>>> =
        std::sync::OnceLock::new();
    TOKENS.get_or_init(Default::default)
}

/// From now on, requests to `addr` carry `Authorization: Bearer <token>`.
pub fn register_token(addr: &str, token: &str) {
    tokens().lock().unwrap().insert(addr.to_string(), token.trim().to_string());
}

/// Reads the first admin token an admin wrote into its data dir and registers it for
/// `addr`. An admin with authentication off writes none; then nothing is registered.
pub fn register_admin_token(addr: &str, data_dir: &std::path::Path) {
    match std::fs::read_to_string(data_dir.join("plugin").join("admin.token")) {
        Ok(token) => register_token(addr, &token),
        Err(_) => {
            tokens().lock().unwrap().remove(addr);
        }
    }
}

/// One request to `http://{addr}{path}`, authenticated with the registered token of
/// `addr` unless `headers` has an `authorization` header.
pub async fn request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Response {
    let registered = tokens().lock().unwrap().get(addr).cloned();
    match registered {
        Some(token) if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("authorization")) => {
            let bearer = format!("Bearer {token}");
            let mut all = headers.to_vec();
            all.push(("authorization", &bearer));
            request_without_auth(addr, method, path, &all, body).await
        }
        _ => request_without_auth(addr, method, path, headers, body).await,
    }
}

/// One request with only the credentials in `headers`.
pub async fn request_without_auth(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Response {
    let mut sender = connect(addr).await;
    let mut req = Request::builder().method(method).uri(path);
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req = req.header("host", addr);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body))).expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req))
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no response in 30 s"))
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("response body").to_bytes().to_vec();
    Response { status, headers, body }
}

pub async fn get(addr: &str, path: &str) -> Response {
    request(addr, "GET", path, &[], Vec::new()).await
}

/// [`get`] for a server that may be down, restarting or paused: `None` instead of a
/// failure when it does not answer within 5 s.
pub async fn try_get(addr: &str, path: &str) -> Option<Response> {
    let (addr, path) = (addr.to_string(), path.to_string());
    let attempt = tokio::spawn(async move { get(&addr, &path).await });
    tokio::time::timeout(Duration::from_secs(5), attempt).await.ok()?.ok()
}

pub async fn post_json(addr: &str, path: &str, body: &Value) -> Response {
    request(addr, "POST", path, &[("content-type", "application/json")], body.to_string().into_bytes()).await
}

pub async fn put_json(addr: &str, path: &str, body: &Value) -> Response {
    request(addr, "PUT", path, &[("content-type", "application/json")], body.to_string().into_bytes()).await
}

/// One Server-Sent Event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub id: Option<u64>,
    pub event: String,
    pub data: String,
}

/// An open SSE stream.
pub struct Sse {
    body: hyper::body::Incoming,
    buf: String,
}

impl Sse {
    pub async fn open(addr: &str, path: &str, last_event_id: Option<u64>) -> Sse {
        let mut sender = connect(addr).await;
        let mut req =
            Request::builder().method("GET").uri(path).header("host", addr).header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        if let Some(token) = tokens().lock().unwrap().get(addr) {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let resp =
            sender.send_request(req.body(Full::new(Bytes::new())).expect("request")).await.expect("SSE response");
        assert_eq!(resp.status().as_u16(), 200, "SSE status");
        Sse { body: resp.into_body(), buf: String::new() }
    }

    /// The next event (comments and keep-alives skipped), or `None` when the stream ends.
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut ev = SseEvent { id: None, event: "message".into(), data: String::new() };
                let mut any = false;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        ev.id = v.trim().parse().ok();
                        any = true;
                    } else if let Some(v) = line.strip_prefix("event:") {
                        ev.event = v.trim().to_string();
                        any = true;
                    } else if let Some(v) = line.strip_prefix("data:") {
                        if !ev.data.is_empty() {
                            ev.data.push('\n');
                        }
                        ev.data.push_str(v.strip_prefix(' ').unwrap_or(v));
                        any = true;
                    }
                }
                if any && !ev.data.is_empty() {
                    return Some(ev);
                }
                continue;
            }
            let frame = self.body.frame().await?.ok()?;
            if let Ok(data) = frame.into_data() {
                self.buf.push_str(&String::from_utf8_lossy(&data));
            }
        }
    }

    /// The next event matching `pred`, within `deadline`.
    pub async fn next_matching(
        &mut self,
        what: &str,
        deadline: Duration,
        mut pred: impl FnMut(&SseEvent) -> bool,
    ) -> SseEvent {
        crate::within(what, deadline, async {
            loop {
                let ev = self.next().await.unwrap_or_else(|| panic!("SSE stream ended while waiting for {what}"));
                if pred(&ev) {
                    return ev;
                }
            }
        })
        .await
    }
}
