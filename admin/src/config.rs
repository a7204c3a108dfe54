//! The admin's own settings (flags and `PLUGHOST_*` variables end up here).

use std::{collections::HashMap, net::SocketAddr, path::PathBuf, time::Duration};

/// TLS material for a listener, as PEM files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by this CA (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub data_dir: PathBuf,
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    /// Advertised to workers; a worker silent for three intervals is lost.
    pub heartbeat_interval: Duration,
    /// Advertised to workers as the first reconnect delay.
    pub reconnect_delay: Duration,
    /// Largest gRPC message the admin decodes.
    pub max_message_bytes: usize,
    /// Messages queued to one worker; the bound is the backpressure.
    pub outbound_queue: usize,
    /// A worker whose queue stays full this long is not reading and is disconnected.
    pub send_timeout: Duration,
    /// How long a canceled job may take to confirm before it is marked CANCELED anyway.
    pub cancel_grace: Duration,
    /// Sent to workers in `shutdown`; the admin waits this long for them to finish.
    pub shutdown_grace: Duration,
    /// Delay between a job type's first capable detector appearing and its first detection.
    pub first_detection_delay: Duration,
    /// Finished jobs, activities and runs older than this are deleted; `None` keeps all.
    pub history_retention: Option<Duration>,
    /// TLS for the worker gRPC listener (mutual TLS when `client_ca` is set).
    pub grpc_tls: Option<TlsFiles>,
    /// TLS for the HTTP listener (client certificates required when `client_ca` is set).
    pub http_tls: Option<TlsFiles>,
    /// Host names (besides loopback ones) a loopback HTTP listener answers to.
    pub allowed_hosts: Vec<String>,
    /// Bearer tokens a worker may present; empty means no token is required.
    pub worker_tokens: Vec<String>,
    /// Passed to workers in `ClusterContext.metadata`.
    pub cluster_metadata: HashMap<String, String>,
    /// Whether HTTP callers must authenticate (on unless explicitly turned off).
    pub auth: crate::auth::AuthMode,
    /// Some worker of this process runs operator scripts (`up --allow-scripts`); then
    /// authentication cannot be turned off.
    pub scripts_allowed: bool,
    /// The key that encrypts sensitive config values in the data dir.
    pub secret_key: crate::secret_box::SecretKeySource,
}

pub const DEFAULT_HTTP_PORT: u16 = 23646;
/// By the protocol's convention the gRPC port is the HTTP port + 10000.
pub const GRPC_PORT_OFFSET: u16 = 10000;

impl AdminConfig {
    /// Loopback listeners on the default ports, data in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        AdminConfig {
            data_dir: data_dir.into(),
            http_addr: SocketAddr::from(([127, 0, 0, 1], DEFAULT_HTTP_PORT)),
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], DEFAULT_HTTP_PORT + GRPC_PORT_OFFSET)),
            heartbeat_interval: Duration::from_secs(5),
            reconnect_delay: Duration::from_secs(2),
            max_message_bytes: 16 * 1024 * 1024,
            outbound_queue: 1024,
            send_timeout: Duration::from_secs(15),
            cancel_grace: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            first_detection_delay: Duration::from_secs(2),
            history_retention: None,
            grpc_tls: None,
            http_tls: None,
            allowed_hosts: Vec::new(),
            worker_tokens: Vec::new(),
            cluster_metadata: HashMap::new(),
            auth: crate::auth::AuthMode::On,
            scripts_allowed: false,
            secret_key: Default::default(),
        }
    }

    /// Both listeners on 127.0.0.1 with ports the OS picks; for tests and benchmarks.
    pub fn ephemeral(data_dir: impl Into<PathBuf>) -> Self {
        let mut c = AdminConfig::new(data_dir);
        c.http_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        c.grpc_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        c
    }
}
