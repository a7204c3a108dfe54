//! The admin's flags (shared by `plughost admin` and `plughost up`) and `plughost admin`.

use std::{path::PathBuf, time::Duration};

use admin::address::ListenAddr;

use clap::Args;

/// The environment variable that may hold the secret key itself (64 hex digits or base64
/// of 32 bytes).
pub const SECRET_KEY_VAR: &str = "PLUGHOST_SECRET_KEY";

#[derive(Args, Debug, Clone)]
pub struct AdminArgs {
    /// Where descriptors, configs and the job store live.
    #[arg(long, env = "PLUGHOST_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// The job store: `sqlite` (the default: `<data-dir>/plugin/state.db`, one admin) or a
    /// PostgreSQL URL, `postgres://user@host:port/database` (several admins share it and
    /// one leads at a time; `?sslmode=require` for TLS, with --store-ca).
    #[arg(long, env = "PLUGHOST_STORE", default_value = "sqlite")]
    pub store: String,
    /// PEM CA that signed the PostgreSQL server's certificate (with sslmode=require).
    #[arg(long, env = "PLUGHOST_STORE_CA")]
    pub store_ca: Option<PathBuf>,
    /// With PostgreSQL: the leader lease's time to live, in seconds. The leader renews it
    /// every third of that; a standby takes over at most this long after the leader died.
    #[arg(long, env = "PLUGHOST_LEASE_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(2..=300))]
    pub lease_seconds: u64,
    /// With PostgreSQL: the HTTP address (host:port, or a URL) standbys send operators
    /// and workers to while this admin leads. Defaults to --http-addr.
    #[arg(long, env = "PLUGHOST_ADVERTISE_HTTP")]
    pub advertise_http: Option<String>,
    /// HTTP listener (pages, JSON API, SSE, metrics): IP:port or host:port (`localhost`
    /// binds 127.0.0.1; another name is resolved at start). Loopback by default.
    #[arg(long, env = "PLUGHOST_HTTP_ADDR", default_value = "127.0.0.1:23646", value_parser = ListenAddr::parse)]
    pub http_addr: ListenAddr,
    /// Worker gRPC listener, written as --http-addr. Defaults to the HTTP address with
    /// port + 10000.
    #[arg(long, env = "PLUGHOST_GRPC_ADDR", value_parser = ListenAddr::parse)]
    pub grpc_addr: Option<ListenAddr>,
    /// Heartbeat interval advertised to workers, in seconds. A worker is lost after 3
    /// silent intervals: this one, or the one it keeps when that is longer (up to 60 s).
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
    /// An entry `token@pattern` limits the token to worker_ids matching the pattern (a glob
    /// with `*`, such as `vacuum-*`); a worker_id stays bound to the first token (or client
    /// certificate) that registered it.
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
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub governance: GovernanceArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// The cluster the workers' job types act on, sent in every detection and execution
/// request's `ClusterContext` (SeaweedFS's job types need the master addresses).
#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    /// Master addresses, comma-separated, passed to workers as written (`host:port`, or
    /// SeaweedFS's `host:port.grpcport`).
    #[arg(long = "master", env = "PLUGHOST_MASTER", value_delimiter = ',')]
    pub masters: Vec<String>,
    /// Filer addresses, comma-separated, passed to workers as written.
    #[arg(long = "filer", env = "PLUGHOST_FILER", value_delimiter = ',')]
    pub filers: Vec<String>,
    /// A `ClusterContext` in proto JSON. Its non-empty address lists win over --master and
    /// --filer, which fill the rest; its metadata is merged in. Re-read when it changes and
    /// on SIGHUP; a file that stops parsing keeps the last good context.
    #[arg(long, env = "PLUGHOST_CLUSTER_CONTEXT_FILE")]
    pub cluster_context_file: Option<PathBuf>,
}

impl ClusterArgs {
    fn apply(&self, c: &mut admin::AdminConfig) {
        c.master_addresses = self.masters.clone();
        c.filer_addresses = self.filers.clone();
        c.cluster_context_file = self.cluster_context_file.clone();
    }
}

/// The operator's controls: the audit trail's bounds and export cap, bulk replay's cap,
/// the approval token for wide or destructive commands, the run-now cap.
#[derive(Args, Debug, Clone)]
pub struct GovernanceArgs {
    /// Most events one audit export (`GET /api/plugin/audit/export`) returns.
    #[arg(long, env = "PLUGHOST_AUDIT_EXPORT_MAX", default_value_t = 100_000, value_parser = at_least_one())]
    pub audit_export_max: u64,
    /// Audit events older than this many days are pruned (0 keeps them by age).
    #[arg(long, env = "PLUGHOST_AUDIT_RETENTION_DAYS", default_value_t = 365)]
    pub audit_retention_days: u32,
    /// At most this many audit events are kept; the oldest go first (0: no cap).
    #[arg(long, env = "PLUGHOST_AUDIT_MAX_EVENTS", default_value_t = 1_000_000)]
    pub audit_max_events: u64,
    /// Pruned audit events are appended first to JSONL files here
    /// (`audit-<first id>-<last id>.jsonl`).
    #[arg(long, env = "PLUGHOST_AUDIT_ARCHIVE_DIR")]
    pub audit_archive_dir: Option<PathBuf>,
    /// Most dead letters one bulk replay (`POST /api/plugin/jobs/replay`) may replay.
    #[arg(long, env = "PLUGHOST_REPLAY_MAX", default_value_t = 1_000, value_parser = at_least_one())]
    pub replay_max: u64,
    /// A file holding an approval token: bulk replay, the global pauses and deleting a
    /// schedule then need it in the `X-Plughost-Approval` header (or the page form's
    /// approval field).
    #[arg(long, env = "PLUGHOST_APPROVAL_TOKEN_FILE")]
    pub approval_token_file: Option<PathBuf>,
    /// On-demand detections (run now, preview) per job type: `N/WINDOW` such as `5/1m`.
    #[arg(long, env = "PLUGHOST_RUN_NOW_MAX", default_value = "60/1m", value_parser = admin::RateCap::parse)]
    pub run_now_max: admin::RateCap,
}

impl GovernanceArgs {
    fn apply(&self, c: &mut admin::AdminConfig) -> anyhow::Result<()> {
        c.audit_export_max = usize::try_from(self.audit_export_max).unwrap_or(usize::MAX);
        c.audit_retention_days = self.audit_retention_days;
        c.audit_max_events = self.audit_max_events;
        c.audit_archive_dir = self.audit_archive_dir.clone();
        c.replay_max = usize::try_from(self.replay_max).unwrap_or(usize::MAX);
        c.run_now_max = self.run_now_max;
        c.approval_token = match &self.approval_token_file {
            None => None,
            Some(file) => {
                let text = std::fs::read_to_string(file)
                    .map_err(|e| anyhow::anyhow!("cannot read the approval token file {}: {e}", file.display()))?;
                let token = text.trim().to_string();
                if token.len() < 16 {
                    anyhow::bail!(
                        "the approval token in {} is {} characters long; use at least 16 (say, `openssl rand -hex 16`)",
                        file.display(),
                        token.len()
                    );
                }
                Some(token)
            }
        };
        Ok(())
    }
}

/// How much a worker may send, and how many connections each listener takes. Input over a
/// limit is refused with a reason; raise a limit for workers that need more.
#[derive(Args, Debug, Clone)]
pub struct LimitArgs {
    /// Largest gRPC message the admin accepts; a larger one ends the stream (RESOURCE_EXHAUSTED).
    #[arg(long, env = "PLUGHOST_MAX_MESSAGE_BYTES", default_value_t = admin::AdminConfig::new(".").max_message_bytes as u64, value_parser = at_least_one())]
    pub max_message_bytes: u64,
    /// Longest worker id, instance id, version, request/job/proposal id, metadata key.
    #[arg(long, env = "PLUGHOST_MAX_ID_BYTES", default_value_t = INPUT.max_id_bytes as u64, value_parser = at_least_one())]
    pub max_id_bytes: u64,
    /// Longest address, display name, dedupe key, stage, metadata or label value.
    #[arg(long, env = "PLUGHOST_MAX_NAME_BYTES", default_value_t = INPUT.max_name_bytes as u64, value_parser = at_least_one())]
    pub max_name_bytes: u64,
    /// Longest description, summary, detail or message.
    #[arg(long, env = "PLUGHOST_MAX_TEXT_BYTES", default_value_t = INPUT.max_text_bytes as u64, value_parser = at_least_one())]
    pub max_text_bytes: u64,
    /// Job types one worker may offer.
    #[arg(long, env = "PLUGHOST_MAX_JOB_TYPES_PER_WORKER", default_value_t = INPUT.max_job_types_per_worker as u64, value_parser = at_least_one())]
    pub max_job_types_per_worker: u64,
    /// Entries in a hello's or heartbeat's metadata and in a proposal's labels.
    #[arg(long, env = "PLUGHOST_MAX_METADATA_ENTRIES", default_value_t = INPUT.max_metadata_entries as u64, value_parser = at_least_one())]
    pub max_metadata_entries: u64,
    /// Jobs one detection may create, whatever the job type's descriptor asks for.
    #[arg(long, env = "PLUGHOST_MAX_PROPOSALS_PER_DETECTION", default_value_t = INPUT.max_proposals_per_detection as u64, value_parser = at_least_one())]
    pub max_proposals_per_detection: u64,
    /// A proposal's parameters (and a job result's output values), encoded.
    #[arg(long, env = "PLUGHOST_MAX_PARAMETERS_BYTES", default_value_t = INPUT.max_parameters_bytes as u64, value_parser = at_least_one())]
    pub max_parameters_bytes: u64,
    /// A job type descriptor, encoded.
    #[arg(long, env = "PLUGHOST_MAX_DESCRIPTOR_BYTES", default_value_t = INPUT.max_descriptor_bytes as u64, value_parser = at_least_one())]
    pub max_descriptor_bytes: u64,
    /// Fields in a descriptor's forms.
    #[arg(long, env = "PLUGHOST_MAX_DESCRIPTOR_FIELDS", default_value_t = INPUT.max_descriptor_fields as u64, value_parser = at_least_one())]
    pub max_descriptor_fields: u64,
    /// Activities kept from one progress update or completion.
    #[arg(long, env = "PLUGHOST_MAX_ACTIVITIES_PER_MESSAGE", default_value_t = INPUT.max_activities_per_message as u64, value_parser = at_least_one())]
    pub max_activities_per_message: u64,
    /// One observations message, encoded.
    #[arg(long, env = "PLUGHOST_MAX_OBSERVATION_BYTES", default_value_t = INPUT.max_observation_bytes as u64, value_parser = at_least_one())]
    pub max_observation_bytes: u64,
    /// Open connections per listener (lowered at start to fit the open-file limit).
    #[arg(long, env = "PLUGHOST_MAX_CONNECTIONS", default_value_t = CONNECTIONS.max_per_listener as u64, value_parser = at_least_one())]
    pub max_connections: u64,
    /// Open connections per listener from one IP address.
    #[arg(long, env = "PLUGHOST_MAX_CONNECTIONS_PER_PEER", default_value_t = CONNECTIONS.max_per_peer as u64, value_parser = at_least_one())]
    pub max_connections_per_peer: u64,
    /// Seconds a new connection has for its TLS and HTTP/2 handshakes and its first request
    /// (HTTP) or hello (gRPC) before it is closed.
    #[arg(long, env = "PLUGHOST_HANDSHAKE_TIMEOUT_SECONDS", default_value_t = CONNECTIONS.handshake_timeout.as_secs(), value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub handshake_timeout_seconds: u64,
    /// Seconds an HTTP client has to send a request's headers.
    #[arg(long, env = "PLUGHOST_HEADER_READ_TIMEOUT_SECONDS", default_value_t = CONNECTIONS.header_read_timeout.as_secs(), value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_read_timeout_seconds: u64,
    /// Artifacts kept per job (a job runner's logs, result and files); more are dropped.
    #[arg(long, env = "PLUGHOST_MAX_ARTIFACTS_PER_JOB", default_value_t = ARTIFACTS.max_per_job as u64)]
    pub max_artifacts_per_job: u64,
    /// Bytes of one job's artifacts together; artifacts that would pass it are dropped.
    #[arg(long, env = "PLUGHOST_MAX_ARTIFACT_BYTES_PER_JOB", default_value_t = ARTIFACTS.max_bytes_per_job)]
    pub max_artifact_bytes_per_job: u64,
    /// Artifacts are deleted this many days after they were kept (0 keeps them).
    #[arg(long, env = "PLUGHOST_ARTIFACT_RETENTION_DAYS", default_value_t = 30)]
    pub artifact_retention_days: u32,
}

static INPUT: std::sync::LazyLock<admin::InputLimits> = std::sync::LazyLock::new(admin::InputLimits::default);
static ARTIFACTS: std::sync::LazyLock<admin::artifacts::ArtifactLimits> =
    std::sync::LazyLock::new(admin::artifacts::ArtifactLimits::default);
static CONNECTIONS: std::sync::LazyLock<admin::ConnectionLimits> =
    std::sync::LazyLock::new(admin::ConnectionLimits::default);

fn at_least_one() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(1..)
}

impl LimitArgs {
    fn apply(&self, c: &mut admin::AdminConfig) {
        let n = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        c.max_message_bytes = n(self.max_message_bytes);
        c.limits = admin::InputLimits {
            max_id_bytes: n(self.max_id_bytes),
            max_name_bytes: n(self.max_name_bytes),
            max_text_bytes: n(self.max_text_bytes),
            max_job_types_per_worker: n(self.max_job_types_per_worker),
            max_metadata_entries: n(self.max_metadata_entries),
            max_proposals_per_detection: n(self.max_proposals_per_detection),
            max_parameters_bytes: n(self.max_parameters_bytes),
            max_descriptor_bytes: n(self.max_descriptor_bytes),
            max_descriptor_fields: n(self.max_descriptor_fields),
            max_activities_per_message: n(self.max_activities_per_message),
            max_observation_bytes: n(self.max_observation_bytes),
        };
        c.connections = admin::ConnectionLimits {
            max_per_listener: n(self.max_connections),
            max_per_peer: n(self.max_connections_per_peer),
            handshake_timeout: Duration::from_secs(self.handshake_timeout_seconds),
            header_read_timeout: Duration::from_secs(self.header_read_timeout_seconds),
        };
        c.artifacts = admin::artifacts::ArtifactLimits {
            max_per_job: n(self.max_artifacts_per_job),
            max_bytes_per_job: self.max_artifact_bytes_per_job,
            retention: (self.artifact_retention_days > 0)
                .then(|| Duration::from_secs(u64::from(self.artifact_retention_days) * 86_400)),
        };
    }
}

impl AdminArgs {
    /// The admin's config; fails when a file it names (the approval token) cannot be read.
    pub fn to_config(&self) -> anyhow::Result<admin::AdminConfig> {
        let mut c = admin::AdminConfig::new(&self.data_dir);
        c.http_addr = self.http_addr.addr;
        c.grpc_addr = self.grpc_addr.as_ref().map(|g| g.addr).unwrap_or_else(|| {
            let mut a = self.http_addr.addr;
            a.set_port(a.port().saturating_add(admin::config::GRPC_PORT_OFFSET));
            a
        });
        c.grpc_addr_derived = self.grpc_addr.is_none();
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
        // The name the HTTP listener was given is one the operator reaches it by, so the
        // loopback guard answers it too.
        c.allowed_hosts = self
            .allowed_hosts
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .chain(self.http_addr.extra_allowed_host().map(str::to_string))
            .filter(|h| !h.is_empty())
            .collect();
        c.worker_tokens = self.worker_tokens.iter().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect();
        c.auth = if self.auth == "off" { admin::auth::AuthMode::Off } else { admin::auth::AuthMode::On };
        // The key itself only from the environment, never from argv (`ps` shows argv).
        c.secret_key = match (std::env::var(SECRET_KEY_VAR), &self.secret_key_file) {
            (Ok(key), _) if !key.trim().is_empty() => admin::SecretKeySource::Text(key),
            (_, Some(file)) => admin::SecretKeySource::File(file.clone()),
            _ => admin::SecretKeySource::DataDir,
        };
        c.store = store_location(&self.store, self.store_ca.as_deref())?;
        c.lease_ttl = Duration::from_secs(self.lease_seconds);
        c.advertise_http = self.advertise_http.as_ref().map(|a| a.trim().to_string()).filter(|a| !a.is_empty());
        self.limits.apply(&mut c);
        self.cluster.apply(&mut c);
        self.governance.apply(&mut c)?;
        Ok(c)
    }
}

/// `--store`: `sqlite`, or a PostgreSQL URL.
fn store_location(store: &str, ca: Option<&std::path::Path>) -> anyhow::Result<admin::config::StoreLocation> {
    let store = store.trim();
    if store.is_empty() || store == "sqlite" {
        if ca.is_some() {
            anyhow::bail!("--store-ca is for a PostgreSQL store; --store is sqlite");
        }
        return Ok(admin::config::StoreLocation::Sqlite);
    }
    if store.starts_with("postgres://") || store.starts_with("postgresql://") {
        return Ok(admin::config::StoreLocation::Postgres { url: store.to_string(), ca: ca.map(Into::into) });
    }
    anyhow::bail!("--store must be sqlite or a postgres:// URL (such as postgres://plughost@db:5432/plughost)")
}

/// `plughost admin`: runs the admin until Ctrl-C or SIGTERM.
pub async fn run_admin(config: admin::AdminConfig) -> anyhow::Result<()> {
    if matches!(config.store, admin::config::StoreLocation::Postgres { .. }) {
        return run_one_of_several(config).await;
    }
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

/// `plughost admin --store postgres://…`: a standby until this admin takes the leader
/// lease, then the leader until it loses it (and a standby again) or stops.
async fn run_one_of_several(config: admin::AdminConfig) -> anyhow::Result<()> {
    let admin = admin::ha::HaAdmin::start(config, admin::clock::system()).await?;
    println!(
        "plughost admin: http://{}/plugin  (workers dial {}; one of several on PostgreSQL: standby until it leads)",
        admin.http_addr(),
        admin.grpc_addr()
    );
    if let Some(hint) = admin.sign_in_hint() {
        println!("plughost admin: {hint}");
    }
    crate::signal::shutdown_signal().await;
    tracing::info!("stopping");
    admin.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn admin_args(args: &[&str]) -> Result<AdminArgs, clap::Error> {
        let cli = crate::Cli::try_parse_from(["plughost", "admin"].iter().chain(args))?;
        match cli.command {
            crate::Command::Admin(a) => Ok(a),
            other => panic!("an admin command, not {other:?}"),
        }
    }

    #[test]
    fn the_http_address_may_be_written_with_localhost() {
        let config = admin_args(&["--http-addr", "localhost:0"]).unwrap().to_config().unwrap();
        assert_eq!(config.http_addr, "127.0.0.1:0".parse().unwrap());
        assert_eq!(config.grpc_addr, "127.0.0.1:10000".parse().unwrap(), "gRPC defaults to the HTTP port + 10000");
        assert!(config.allowed_hosts.is_empty(), "localhost needs no extra allowed name");
        let config = admin_args(&["--http-addr", "LOCALHOST:23646", "--grpc-addr", "localhost:4000"])
            .unwrap()
            .to_config()
            .unwrap();
        assert_eq!(config.http_addr, "127.0.0.1:23646".parse().unwrap());
        assert_eq!(config.grpc_addr, "127.0.0.1:4000".parse().unwrap());
    }

    #[test]
    fn ip_addresses_and_the_loopback_default_are_unchanged() {
        let config = admin_args(&[]).unwrap().to_config().unwrap();
        assert_eq!(config.http_addr, "127.0.0.1:23646".parse().unwrap());
        assert_eq!(config.grpc_addr, "127.0.0.1:33646".parse().unwrap());
        let config = admin_args(&["--http-addr", "[::1]:8080"]).unwrap().to_config().unwrap();
        assert_eq!(config.http_addr, "[::1]:8080".parse().unwrap());
    }

    #[test]
    fn the_store_is_sqlite_or_a_postgres_url() {
        let config = admin_args(&[]).unwrap().to_config().unwrap();
        assert_eq!(config.store, admin::config::StoreLocation::Sqlite);
        let config = admin_args(&["--store", "postgres://plughost@db:5432/plughost", "--store-ca", "/etc/ca.pem"])
            .unwrap()
            .to_config()
            .unwrap();
        assert_eq!(
            config.store,
            admin::config::StoreLocation::Postgres {
                url: "postgres://plughost@db:5432/plughost".into(),
                ca: Some("/etc/ca.pem".into())
            }
        );
        assert_eq!(config.lease_ttl, Duration::from_secs(10));
        let err = admin_args(&["--store", "mysql://db"]).unwrap().to_config().unwrap_err().to_string();
        assert_eq!(err, "--store must be sqlite or a postgres:// URL (such as postgres://plughost@db:5432/plughost)");
        let err = admin_args(&["--store-ca", "/etc/ca.pem"]).unwrap().to_config().unwrap_err().to_string();
        assert_eq!(err, "--store-ca is for a PostgreSQL store; --store is sqlite");
        assert!(admin_args(&["--lease-seconds", "1"]).is_err(), "a lease under 2 s is refused");
    }

    #[test]
    fn a_bad_http_address_is_refused_with_the_reason() {
        for (text, reason) in [
            ("localhost", "is not host:port"),
            ("localhost:99999", "no valid port"),
            ("http://localhost:23646", "is a URL"),
        ] {
            let err = admin_args(&["--http-addr", text]).unwrap_err().to_string();
            assert!(err.contains(reason), "{text}: {err}");
        }
    }
}
