//! The admin's flags (shared by `plughost admin` and `plughost up`) and `plughost admin`.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Args;

/// The environment variable that may hold the secret key itself (64 hex digits or base64
/// of 32 bytes).
pub const SECRET_KEY_VAR: &str = "PLUGHOST_SECRET_KEY";

#[derive(Args, Debug, Clone)]
pub struct AdminArgs {
    /// Where descriptors, configs and the job store live.
    #[arg(long, env = "PLUGHOST_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// HTTP listener (pages, JSON API, SSE, metrics). Loopback by default.
    #[arg(long, env = "PLUGHOST_HTTP_ADDR", default_value = "127.0.0.1:23646")]
    pub http_addr: SocketAddr,
    /// Worker gRPC listener. Defaults to the HTTP address with port + 10000.
    #[arg(long, env = "PLUGHOST_GRPC_ADDR")]
    pub grpc_addr: Option<SocketAddr>,
    /// Heartbeat interval advertised to workers, in seconds; 3 silent intervals = lost.
    #[arg(long, env = "PLUGHOST_HEARTBEAT_SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub heartbeat_seconds: u64,
    /// Delete finished jobs, activities and runs older than this many days (0 keeps all).
    #[arg(long, env = "PLUGHOST_HISTORY_RETENTION_DAYS", default_value_t = 0)]
    pub history_retention_days: u64,
    /// PEM certificate for the worker gRPC listener (enables TLS).
    #[arg(long, env = "PLUGHOST_GRPC_TLS_CERT", requires = "grpc_tls_key")]
    pub grpc_tls_cert: Option<PathBuf>,
    /// PEM private key for --grpc-tls-cert.
    #[arg(long, env = "PLUGHOST_GRPC_TLS_KEY", requires = "grpc_tls_cert")]
    pub grpc_tls_key: Option<PathBuf>,
    /// PEM CA bundle: workers must present a client certificate signed by it (mTLS).
    #[arg(long, env = "PLUGHOST_GRPC_CLIENT_CA", requires = "grpc_tls_cert")]
    pub grpc_client_ca: Option<PathBuf>,
    /// PEM certificate for the HTTP listener (serves HTTPS).
    #[arg(long, env = "PLUGHOST_HTTP_TLS_CERT", requires = "http_tls_key")]
    pub http_tls_cert: Option<PathBuf>,
    /// PEM private key for --http-tls-cert.
    #[arg(long, env = "PLUGHOST_HTTP_TLS_KEY", requires = "http_tls_cert")]
    pub http_tls_key: Option<PathBuf>,
    /// PEM CA bundle: HTTPS clients must present a certificate signed by it.
    #[arg(long, env = "PLUGHOST_HTTP_CLIENT_CA", requires = "http_tls_cert")]
    pub http_client_ca: Option<PathBuf>,
    /// Extra host names a loopback admin answers to (it refuses other names, which guards
    /// against DNS rebinding), comma-separated.
    #[arg(long, env = "PLUGHOST_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,
    /// Bearer tokens workers may present, comma-separated; none means no token is needed.
    #[arg(long, env = "PLUGHOST_WORKER_TOKENS", value_delimiter = ',')]
    pub worker_tokens: Vec<String>,
    /// `on`: HTTP callers need an API token or a signed-in session. `off` is accepted only
    /// when both listeners are on loopback and scripts are not allowed.
    #[arg(long, env = "PLUGHOST_AUTH", default_value = "on", value_parser = ["on", "off"])]
    pub auth: String,
    /// The key that encrypts sensitive config values: 32 raw bytes, or 64 hex digits or
    /// base64 of 32 bytes; created with a random key if missing. Default:
    /// <data-dir>/plugin/secret.key. PLUGHOST_SECRET_KEY (the key itself, hex or base64)
    /// takes precedence over this file.
    #[arg(long, env = "PLUGHOST_SECRET_KEY_FILE")]
    pub secret_key_file: Option<PathBuf>,
}

impl AdminArgs {
    pub fn to_config(&self) -> admin::AdminConfig {
        let mut c = admin::AdminConfig::new(&self.data_dir);
        c.http_addr = self.http_addr;
        c.grpc_addr = self.grpc_addr.unwrap_or_else(|| {
            let mut a = self.http_addr;
            a.set_port(self.http_addr.port().saturating_add(admin::config::GRPC_PORT_OFFSET));
            a
        });
        c.heartbeat_interval = Duration::from_secs(self.heartbeat_seconds);
        c.history_retention =
            (self.history_retention_days > 0).then(|| Duration::from_secs(self.history_retention_days * 86_400));
        c.grpc_tls = match (&self.grpc_tls_cert, &self.grpc_tls_key) {
            (Some(cert), Some(key)) => {
                Some(admin::TlsFiles { cert: cert.clone(), key: key.clone(), client_ca: self.grpc_client_ca.clone() })
            }
            _ => None,
        };
        c.http_tls = match (&self.http_tls_cert, &self.http_tls_key) {
            (Some(cert), Some(key)) => {
                Some(admin::TlsFiles { cert: cert.clone(), key: key.clone(), client_ca: self.http_client_ca.clone() })
            }
            _ => None,
        };
        c.allowed_hosts =
            self.allowed_hosts.iter().map(|h| h.trim().to_ascii_lowercase()).filter(|h| !h.is_empty()).collect();
        c.worker_tokens = self.worker_tokens.iter().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect();
        c.auth = if self.auth == "off" { admin::auth::AuthMode::Off } else { admin::auth::AuthMode::On };
        // The key itself only from the environment, never from argv (`ps` shows argv).
        c.secret_key = match (std::env::var(SECRET_KEY_VAR), &self.secret_key_file) {
            (Ok(key), _) if !key.trim().is_empty() => admin::SecretKeySource::Text(key),
            (_, Some(file)) => admin::SecretKeySource::File(file.clone()),
            _ => admin::SecretKeySource::DataDir,
        };
        c
    }
}

/// `plughost admin`: runs the admin until Ctrl-C or SIGTERM.
pub async fn run_admin(config: admin::AdminConfig) -> anyhow::Result<()> {
    let admin = admin::Admin::start(config).await?;
    println!("plughost admin: http://{}/plugin  (workers dial {})", admin.http_addr(), admin.grpc_addr());
    if let Some(hint) = admin.sign_in_hint() {
        println!("plughost admin: {hint}");
    }
    crate::signal::shutdown_signal().await;
    tracing::info!("stopping");
    admin.shutdown().await;
    Ok(())
}
