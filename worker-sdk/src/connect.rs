//! Dialing the admin: the gRPC address (looked up first for an HTTP admin address),
//! TLS, and the bearer token that goes on the stream. One [`Dialer`] per configured
//! admin address.

use std::{sync::Mutex, time::Duration};

use tonic::{
    metadata::{Ascii, MetadataValue},
    transport::{Channel, Endpoint},
};

use crate::{
    Error, TlsConfig,
    config::{AdminAddress, admin_list},
    error::chain,
    resolve::{self, HttpTarget},
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 pings find an admin that vanished without closing the connection.
const KEEPALIVE: Duration = Duration::from_secs(20);

/// Everything needed to open a connection to one admin address, checked once at start.
#[derive(Debug)]
pub(crate) struct Dialer {
    /// The address as configured, for logs.
    label: String,
    address: AdminAddress,
    /// `host:port` of the gRPC listener last dialed (an HTTP address's looked-up port),
    /// to recognise this admin when a standby names the leader.
    dialed: Mutex<Option<String>>,
    tls: Option<TlsConfig>,
    token: Option<String>,
    authorization: Option<MetadataValue<Ascii>>,
}

impl Dialer {
    pub(crate) fn new(admin: &str, tls: Option<TlsConfig>, token: Option<String>) -> Result<Self, Error> {
        if let Some(tls) = &tls {
            tls.validate()?;
        }
        let address = AdminAddress::parse(admin, tls.is_some())?;
        let authorization = token
            .as_deref()
            .map(|t| {
                format!("Bearer {t}")
                    .parse::<MetadataValue<Ascii>>()
                    .map_err(|_| Error::Config("the token has characters a header cannot carry".into()))
            })
            .transpose()?;
        Ok(Dialer { label: admin.trim().to_string(), address, dialed: Mutex::new(None), tls, token, authorization })
    }

    /// One dialer per entry of `admin` (one address, or a comma-separated list).
    pub(crate) fn list(admin: &str, tls: Option<TlsConfig>, token: Option<String>) -> Result<Vec<Self>, Error> {
        admin_list(admin)?.into_iter().map(|entry| Dialer::new(entry, tls.clone(), token.clone())).collect()
    }

    /// The address as configured.
    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    /// Whether `leader` (the `host:port` a standby named) is this admin's gRPC
    /// listener: the configured gRPC address, or the one an HTTP address led to.
    pub(crate) fn is_at(&self, leader: &str) -> bool {
        let leader = leader.trim().to_ascii_lowercase();
        let configured = match &self.address {
            AdminAddress::Grpc { host, port } => Some(format!("{host}:{port}")),
            AdminAddress::Http { .. } => None,
        };
        let dialed = self.dialed.lock().unwrap_or_else(|e| e.into_inner()).clone();
        [configured, dialed].into_iter().flatten().any(|a| a.to_ascii_lowercase() == leader)
    }

    /// The `authorization` metadata for the stream, when a token is set.
    pub(crate) fn authorization(&self) -> Option<&MetadataValue<Ascii>> {
        self.authorization.as_ref()
    }

    /// Opens a connection; returns it with the URI it reached, for logs.
    pub(crate) async fn dial(&self) -> Result<(Channel, String), Error> {
        let (host, port) = match &self.address {
            AdminAddress::Grpc { host, port } => (host.as_str(), *port),
            AdminAddress::Http { host, port, https } => {
                let target = HttpTarget {
                    host,
                    port: *port,
                    tls: if *https { self.tls.as_ref() } else { None },
                    token: self.token.as_deref(),
                };
                (host.as_str(), resolve::grpc_port(target).await?)
            }
        };
        *self.dialed.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!("{host}:{port}"));
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let uri = format!("{scheme}://{host}:{port}");
        let mut endpoint = Endpoint::from_shared(uri.clone())
            .map_err(|e| Error::Config(format!("invalid admin address {uri}: {}", chain(&e))))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE)
            .keep_alive_timeout(KEEPALIVE)
            .keep_alive_while_idle(true);
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.tonic(host)).map_err(|e| Error::Tls(chain(&e)))?;
        }
        tracing::debug!(%uri, "dialing the admin");
        let channel = endpoint.connect().await.map_err(|e| Error::transport(&uri, &e))?;
        Ok((channel, uri))
    }

    /// A transport error on a gRPC address is often a gRPC client dialing the admin's
    /// HTTP port. When the address answers HTTP/1 with the admin's status, the error
    /// says so and names the two addresses that work; otherwise it is returned as is.
    pub(crate) async fn explain(&self, error: Error) -> Error {
        let (AdminAddress::Grpc { host, port }, Error::Transport { address, detail }) = (&self.address, &error) else {
            return error;
        };
        let target = HttpTarget { host, port: *port, tls: self.tls.as_ref(), token: self.token.as_deref() };
        match resolve::probe_http(target).await {
            Some(grpc_port) => {
                let scheme = if self.tls.is_some() { "https" } else { "http" };
                Error::Transport {
                    address: address.clone(),
                    detail: format!(
                        "{detail}; {host}:{port} is the admin's HTTP port, not its gRPC port: \
                         use --admin {scheme}://{host}:{port} (the gRPC port is looked up) \
                         or grpc://{host}:{grpc_port}"
                    ),
                }
            }
            None => error,
        }
    }
}
