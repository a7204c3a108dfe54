//! Finds the admin's gRPC port from its HTTP address: `GET /api/plugin/status` and its
//! `worker_grpc_port`, or by convention the HTTP port + 10000 when that lookup fails.

use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::{Request, body::Bytes, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::{Error, TlsConfig, error::chain};

const STATUS_PATH: &str = "/api/plugin/status";
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_STATUS_BYTES: usize = 64 * 1024;
/// HTTP 23646 pairs with gRPC 33646.
const PORT_OFFSET: u16 = 10000;

/// Where to reach the admin's HTTP listener.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HttpTarget<'a> {
    pub(crate) host: &'a str,
    pub(crate) port: u16,
    pub(crate) tls: Option<&'a TlsConfig>,
    pub(crate) token: Option<&'a str>,
}

/// The gRPC port for the admin at `target`.
pub(crate) async fn grpc_port(target: HttpTarget<'_>) -> Result<u16, Error> {
    let looked_up = tokio::time::timeout(LOOKUP_TIMEOUT, status_port(target))
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {LOOKUP_TIMEOUT:?}")));
    match looked_up {
        Ok(port) => {
            tracing::debug!(port, "admin status gave the grpc port");
            Ok(port)
        }
        Err(reason) => {
            let fallback = target.port.checked_add(PORT_OFFSET).ok_or_else(|| {
                Error::Protocol(format!(
                    "{STATUS_PATH} failed ({reason}) and http port {} + {PORT_OFFSET} is not a port",
                    target.port
                ))
            })?;
            tracing::warn!(%reason, fallback, "admin status lookup failed; using http port + 10000");
            Ok(fallback)
        }
    }
}

/// The gRPC port a Plughost admin's HTTP listener at `target` names, if `target` is one.
pub(crate) async fn probe_http(target: HttpTarget<'_>) -> Option<u16> {
    tokio::time::timeout(LOOKUP_TIMEOUT, status_port(target)).await.ok()?.ok()
}

async fn status_port(target: HttpTarget<'_>) -> Result<u16, String> {
    let authority = format!("{}:{}", target.host, target.port);
    let tcp =
        TcpStream::connect(authority.as_str()).await.map_err(|e| format!("cannot connect to {authority}: {e}"))?;
    let mut request =
        Request::get(STATUS_PATH).header(header::HOST, &authority).header(header::ACCEPT, "application/json");
    if let Some(token) = target.token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
    let body = match target.tls {
        Some(tls) => {
            let config = tls.rustls().map_err(|e| e.to_string())?;
            let name = tls.server_name_for(target.host).map_err(|e| e.to_string())?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| format!("tls handshake failed: {e}"))?;
            fetch(TokioIo::new(stream), request).await?
        }
        None => fetch(TokioIo::new(tcp), request).await?,
    };
    port_from_status(&body)
}

async fn fetch<I>(io: I, request: Request<Empty<Bytes>>) -> Result<Bytes, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.map_err(|e| chain(&e))?;
    let connection = tokio::spawn(connection);
    let result = async {
        let response = sender.send_request(request).await.map_err(|e| chain(&e))?;
        if !response.status().is_success() {
            return Err(format!("{STATUS_PATH} answered {}", response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_STATUS_BYTES)
            .collect()
            .await
            .map_err(|e| format!("cannot read the status body: {e}"))?;
        Ok(body.to_bytes())
    }
    .await;
    connection.abort();
    result
}

/// `worker_grpc_port` from the status JSON (a number, or a string holding one).
fn port_from_status(body: &[u8]) -> Result<u16, String> {
    let json: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("status is not JSON: {e}"))?;
    let field = json.get("worker_grpc_port").ok_or("status has no worker_grpc_port")?;
    let port = match field {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    port.and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("worker_grpc_port {field} is not a port"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_is_read_from_a_number_or_a_string() {
        assert_eq!(port_from_status(br#"{"worker_grpc_port":33646,"x":1}"#), Ok(33646));
        assert_eq!(port_from_status(br#"{"worker_grpc_port":"4000"}"#), Ok(4000));
        assert!(port_from_status(br#"{"worker_grpc_port":0}"#).is_err());
        assert!(port_from_status(br#"{"worker_grpc_port":70000}"#).is_err());
        assert!(port_from_status(br#"{}"#).is_err());
        assert!(port_from_status(b"<html>").is_err());
    }

    /// A one-connection HTTP server on loopback that answers every request with `response`
    /// (an admin without the status route, or one that has it); returns its port.
    async fn answering(response: String) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            assert!(request.starts_with(b"GET /api/plugin/status "), "{}", String::from_utf8_lossy(&request));
            let _ = conn.write_all(response.as_bytes()).await;
        });
        port
    }

    #[tokio::test]
    async fn the_status_answer_gives_the_grpc_port() {
        let body = r#"{"worker_grpc_port":41234}"#;
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let port = answering(response).await;
        let got = grpc_port(HttpTarget { host: "127.0.0.1", port, tls: None, token: None }).await.unwrap();
        assert_eq!(got, 41234);
    }

    #[tokio::test]
    async fn an_admin_without_the_status_route_falls_back_to_port_plus_ten_thousand() {
        let port = answering("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".to_string()).await;
        let got = grpc_port(HttpTarget { host: "127.0.0.1", port, tls: None, token: None }).await;
        match port.checked_add(PORT_OFFSET) {
            Some(fallback) => assert_eq!(got.unwrap(), fallback),
            None => assert!(got.is_err(), "no port + 10000 above 55535"),
        }
    }

    #[tokio::test]
    async fn an_unreachable_status_falls_back_to_port_plus_ten_thousand() {
        // Bind then drop, so the port is (almost certainly) closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if port > u16::MAX - PORT_OFFSET {
            let err = grpc_port(HttpTarget { host: "127.0.0.1", port, tls: None, token: None }).await;
            assert!(err.is_err());
        } else {
            let got = grpc_port(HttpTarget { host: "127.0.0.1", port, tls: None, token: None }).await.unwrap();
            assert_eq!(got, port + PORT_OFFSET);
        }
    }
}
