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
    /// Whether `grpc_addr` is the HTTP address's port + 10000 rather than one the operator
    /// set (error messages say which).
    pub grpc_addr_derived: bool,
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
    /// Bearer tokens a worker may present; empty means no token is required. Each entry is
    /// `token` or `token@pattern`, where the pattern (a glob with `*`) limits the worker_ids
    /// that token may register (`identity::WorkerToken`).
    pub worker_tokens: Vec<String>,
    /// Passed to workers in `ClusterContext.metadata`.
    pub cluster_metadata: HashMap<String, String>,
    /// Master addresses for `ClusterContext.master_grpc_addresses`, as the operator wrote
    /// them (`host:port` or SeaweedFS's `host:port.grpcport`).
    pub master_addresses: Vec<String>,
    /// Filer addresses for `ClusterContext.filer_addresses`, as written.
    pub filer_addresses: Vec<String>,
    /// A `ClusterContext` in proto JSON, over the flags above (`cluster_context.rs` has
    /// the rule); re-read when it changes and on SIGHUP.
    pub cluster_context_file: Option<PathBuf>,
    /// How often the context file's modification time and length are looked at.
    pub cluster_context_poll: Duration,
    /// Whether HTTP callers must authenticate (on unless explicitly turned off).
    pub auth: crate::auth::AuthMode,
    /// Some worker of this process runs operator scripts (`up --allow-scripts`); then
    /// authentication cannot be turned off.
    pub scripts_allowed: bool,
    /// The key that encrypts sensitive config values in the data dir.
    pub secret_key: crate::secret_box::SecretKeySource,
    /// How much a worker may send: lengths, counts and sizes (`input.rs` checks them).
    pub limits: InputLimits,
    /// Connection caps and handshake timeouts of both listeners (`listener.rs`).
    pub connections: ConnectionLimits,
    /// Most rows one audit export returns.
    pub audit_export_max: usize,
    /// Audit events older than this many days are pruned; 0 keeps them by age.
    pub audit_retention_days: u32,
    /// At most this many audit events are kept; 0 keeps any number.
    pub audit_max_events: u64,
    /// Pruned audit events are appended here first, as JSONL files.
    pub audit_archive_dir: Option<PathBuf>,
    /// How many of a job's artifacts are kept, how large, and for how long.
    pub artifacts: crate::artifacts::ArtifactLimits,
    /// Most jobs one bulk replay may replay.
    pub replay_max: usize,
    /// When set, wide or destructive commands (bulk replay, global pauses, deleting a
    /// schedule) need this token in `X-Plughost-Approval`.
    pub approval_token: Option<String>,
    /// Per job type cap on on-demand detections (run now, preview).
    pub run_now_max: RateCap,
    /// Where the job store lives.
    pub store: StoreLocation,
    /// With PostgreSQL: the leader lease's time to live.
    pub lease_ttl: Duration,
    /// With PostgreSQL: the HTTP address this admin gives standbys and operators while it
    /// leads (`--advertise-http`); the HTTP listener's address when unset.
    pub advertise_http: Option<String>,
}

/// Where the job store lives.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StoreLocation {
    /// SQLite at `<data>/plugin/state.db`: one admin.
    #[default]
    Sqlite,
    /// A PostgreSQL database several admins share; one of them leads at a time.
    Postgres {
        /// `postgres://user[:password]@host[:port]/database[?sslmode=require]`.
        url: String,
        /// PEM CA that signed the database's certificate (with `sslmode=require`).
        ca: Option<PathBuf>,
    },
}

/// The leader lease's default time to live.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);

/// At most `max` events per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateCap {
    pub max: u32,
    pub window: Duration,
}

impl RateCap {
    /// Parses `N/WINDOW`, where WINDOW is a number with a unit (`s`, `m`, `h`) or a bare
    /// unit meaning one of it: `5/1m`, `100/h`, `10/30s`.
    pub fn parse(text: &str) -> Result<RateCap, String> {
        let bad = |why: &str| format!("{text:?} is not a rate cap like 5/1m ({why})");
        let (n, window) = text.trim().split_once('/').ok_or_else(|| bad("no '/'"))?;
        let max: u32 = n.trim().parse().map_err(|_| bad("the count is not a whole number"))?;
        if max == 0 {
            return Err(bad("the count must be at least 1"));
        }
        let window = window.trim();
        let split = window.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| bad("the window has no unit"))?;
        let (amount, unit) = window.split_at(split);
        let amount: u64 = if amount.is_empty() { 1 } else { amount.parse().map_err(|_| bad("bad window"))? };
        let unit_secs = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            _ => return Err(bad("the window's unit must be s, m or h")),
        };
        let secs = amount.saturating_mul(unit_secs);
        if secs == 0 || secs > 24 * 3600 {
            return Err(bad("the window must be between 1 s and 24 h"));
        }
        Ok(RateCap { max, window: Duration::from_secs(secs) })
    }
}

impl std::fmt::Display for RateCap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}s", self.max, self.window.as_secs())
    }
}

/// Bounds on what a worker may send. Input over a bound is refused with a reason (never
/// echoed in full, never kept); the defaults suit real workers with room to spare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputLimits {
    /// Ids and short names: worker_id, worker_instance_id, versions, request, job and
    /// proposal ids, metadata and label keys.
    pub max_id_bytes: usize,
    /// Addresses, display names, dedupe keys, stages, metadata and label values.
    pub max_name_bytes: usize,
    /// Free text: descriptions, summaries, details, messages, error messages.
    pub max_text_bytes: usize,
    /// Job types one worker may offer in its hello.
    pub max_job_types_per_worker: usize,
    /// Entries in a hello's or heartbeat's metadata and in a proposal's labels.
    pub max_metadata_entries: usize,
    /// Jobs one detection may create, whatever the job type's `max_jobs_per_detection` says.
    pub max_proposals_per_detection: usize,
    /// A proposal's parameters, and a job result's output values, encoded.
    pub max_parameters_bytes: usize,
    /// A job type descriptor, encoded.
    pub max_descriptor_bytes: usize,
    /// Fields in a descriptor's two forms together.
    pub max_descriptor_fields: usize,
    /// Activities attached to one progress update or completion.
    pub max_activities_per_message: usize,
    /// One observations message, encoded.
    pub max_observation_bytes: usize,
}

impl Default for InputLimits {
    fn default() -> Self {
        InputLimits {
            max_id_bytes: 256,
            max_name_bytes: 1024,
            max_text_bytes: 16 * 1024,
            max_job_types_per_worker: 256,
            max_metadata_entries: 64,
            max_proposals_per_detection: 1000,
            max_parameters_bytes: 64 * 1024,
            max_descriptor_bytes: 1024 * 1024,
            max_descriptor_fields: 512,
            max_activities_per_message: 100,
            max_observation_bytes: 1024 * 1024,
        }
    }
}

/// Caps and timeouts for connections, applied to each listener on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open connections per listener (lowered at start to fit the open-file limit).
    pub max_per_listener: usize,
    /// Open connections per listener from one peer IP address.
    pub max_per_peer: usize,
    /// Time for a new connection to finish its TLS and HTTP/2 handshakes and its first
    /// request (HTTP) or its hello (gRPC); a connection that has not is closed.
    pub handshake_timeout: Duration,
    /// Time for a client to send an HTTP/1 request's headers.
    pub header_read_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_per_listener: 1024,
            max_per_peer: 256,
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
        }
    }
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
            grpc_addr_derived: true,
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
            master_addresses: Vec::new(),
            filer_addresses: Vec::new(),
            cluster_context_file: None,
            cluster_context_poll: crate::cluster_context::DEFAULT_POLL,
            auth: crate::auth::AuthMode::On,
            scripts_allowed: false,
            secret_key: Default::default(),
            limits: InputLimits::default(),
            connections: ConnectionLimits::default(),
            audit_export_max: 100_000,
            audit_retention_days: 365,
            audit_max_events: 1_000_000,
            audit_archive_dir: None,
            artifacts: Default::default(),
            replay_max: 1_000,
            approval_token: None,
            run_now_max: RateCap { max: 60, window: Duration::from_secs(60) },
            store: StoreLocation::Sqlite,
            lease_ttl: DEFAULT_LEASE_TTL,
            advertise_http: None,
        }
    }

    /// Both listeners on 127.0.0.1 with ports the OS picks; for tests and benchmarks.
    pub fn ephemeral(data_dir: impl Into<PathBuf>) -> Self {
        let mut c = AdminConfig::new(data_dir);
        c.http_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        c.grpc_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        c.grpc_addr_derived = false;
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_caps_parse_with_a_unit_and_refuse_nonsense() {
        assert_eq!(RateCap::parse("5/1m"), Ok(RateCap { max: 5, window: Duration::from_secs(60) }));
        assert_eq!(RateCap::parse(" 100/h "), Ok(RateCap { max: 100, window: Duration::from_secs(3600) }));
        assert_eq!(RateCap::parse("10/30s"), Ok(RateCap { max: 10, window: Duration::from_secs(30) }));
        for bad in ["5", "0/1m", "x/1m", "5/1d", "5/0s", "5/", "5/25h"] {
            assert!(RateCap::parse(bad).is_err(), "{bad} is refused");
        }
        assert!(RateCap::parse("5/1d").unwrap_err().contains("s, m or h"));
    }
}
