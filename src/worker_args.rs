//! `plughost worker`: the bundled plugins in a worker that dials an admin.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use worker_sdk::{CancellationToken, TlsConfig, Worker, WorkerConfig};

use crate::bundled::PluginArgs;

#[derive(Args, Debug, Clone)]
pub struct WorkerArgs {
    /// The admin: its HTTP address (host:port, as `weed worker -admin` takes it, or
    /// http://host:port or https://host:port; the gRPC port is looked up from
    /// /api/plugin/status, else it is the HTTP port + 10000) or its gRPC address
    /// (grpc://host:port, or grpcs://host:port with --tls-ca). Several admins sharing
    /// one database: a comma-separated list (a,b,c); the worker streams to the leader,
    /// moving on at once from an admin that is down or a standby.
    #[arg(long, env = "PLUGHOST_ADMIN", default_value = "http://127.0.0.1:23646")]
    pub admin: String,
    /// The worker's own directory: its id file, and by default its scripts directory.
    #[arg(long, env = "PLUGHOST_WORKER_DIR", default_value = "./data/worker")]
    pub working_dir: PathBuf,
    /// A stable worker id (default: generated once and kept in the working directory).
    #[arg(long, env = "PLUGHOST_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Bearer token presented to the admin.
    #[arg(long, env = "PLUGHOST_WORKER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM CA that signed the admin's gRPC certificate (enables TLS).
    #[arg(long, env = "PLUGHOST_WORKER_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate for mutual TLS.
    #[arg(long, env = "PLUGHOST_WORKER_TLS_CERT", requires_all = ["tls_ca", "tls_key"])]
    pub tls_cert: Option<PathBuf>,
    /// PEM key of --tls-cert.
    #[arg(long, env = "PLUGHOST_WORKER_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    #[command(flatten)]
    pub plugins: PluginArgs,
}

/// A `--admin` that cannot name an admin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminAddressError {
    #[error("--admin is empty; give the admin's address, such as localhost:23646")]
    Empty,
    #[error(
        "--admin {0:?} has no port; give the admin's HTTP address as host:port (such as localhost:23646) \
         or its gRPC address as grpc://host:port"
    )]
    NoPort(String),
    #[error("--admin {0:?} has no valid port; the port is a number from 1 to 65535")]
    BadPort(String),
    #[error("--admin {0:?} is not host:port; write an IPv6 address in brackets, such as [::1]:23646")]
    Shape(String),
    #[error("--admin {0:?} has an empty entry; separate the admins' addresses with single commas")]
    EmptyEntry(String),
}

/// `--admin` in the form the SDK reads: one address, or a comma-separated list of them
/// (whitespace around the commas allowed), each entry converted on its own and the
/// list joined with commas again. A bare `host:port` is the admin's HTTP address,
/// as in SeaweedFS's `weed worker -admin=localhost:23646`, so it becomes
/// `http://host:port` (the SDK reads a bare address as gRPC, which its programs rely
/// on); an address with a scheme goes to the SDK as written, and the SDK checks it.
/// An error about one entry names that entry.
pub fn sdk_admin_address(admin: &str) -> Result<String, AdminAddressError> {
    if !admin.contains(',') {
        return sdk_admin_entry(admin);
    }
    let entries: Vec<&str> = admin.split(',').map(str::trim).collect();
    if entries.iter().any(|e| e.is_empty()) {
        return Err(AdminAddressError::EmptyEntry(admin.trim().to_string()));
    }
    let converted: Result<Vec<String>, _> = entries.into_iter().map(sdk_admin_entry).collect();
    Ok(converted?.join(","))
}

/// One `--admin` address in the form the SDK reads.
fn sdk_admin_entry(admin: &str) -> Result<String, AdminAddressError> {
    let admin = admin.trim();
    if admin.contains("://") {
        return Ok(admin.to_string());
    }
    let authority = admin.trim_end_matches('/');
    if authority.is_empty() {
        return Err(AdminAddressError::Empty);
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (_, rest) = v6.split_once(']').ok_or_else(|| AdminAddressError::Shape(admin.to_string()))?;
            let port = rest.strip_prefix(':').ok_or_else(|| AdminAddressError::NoPort(admin.to_string()))?;
            (&authority[..authority.len() - port.len() - 1], port)
        }
        None => authority.rsplit_once(':').ok_or_else(|| AdminAddressError::NoPort(admin.to_string()))?,
    };
    if host.is_empty() || (!host.starts_with('[') && host.contains(':')) || host.contains('/') {
        return Err(AdminAddressError::Shape(admin.to_string()));
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(format!("http://{authority}")),
        _ => Err(AdminAddressError::BadPort(admin.to_string())),
    }
}

impl WorkerArgs {
    pub fn worker(&self) -> anyhow::Result<Worker> {
        let mut config = WorkerConfig::new(sdk_admin_address(&self.admin)?, self.working_dir.clone());
        config.worker_id = self.worker_id.clone();
        config.token = self.token.clone();
        config.version = env!("CARGO_PKG_VERSION").to_string();
        if let Some(ca) = &self.tls_ca {
            config.tls = Some(TlsConfig::from_files(ca, self.tls_cert.as_deref(), self.tls_key.as_deref())?);
        }
        let handlers = self.plugins.handlers(self.working_dir.join("scripts"))?;
        Ok(handlers.into_iter().fold(Worker::new(config), Worker::handler_arc))
    }
}

/// Runs the worker until Ctrl-C or SIGTERM (running jobs get the shutdown grace) or
/// until the admin rejects it.
pub async fn run_worker(args: WorkerArgs) -> anyhow::Result<()> {
    let worker = args.worker()?;
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        crate::signal::shutdown_signal().await;
        on_signal.cancel();
    });
    println!("plughost worker: offering {} to {}", args.plugins.job_types()?.join(", "), args.admin);
    worker.run(shutdown).await.context("worker stopped")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_host_and_port_is_the_admins_http_address() {
        assert_eq!(sdk_admin_address("localhost:23646").unwrap(), "http://localhost:23646");
        assert_eq!(sdk_admin_address(" 10.0.0.5:23646/ ").unwrap(), "http://10.0.0.5:23646");
        assert_eq!(sdk_admin_address("[::1]:23646").unwrap(), "http://[::1]:23646");
    }

    #[test]
    fn addresses_with_a_scheme_keep_their_meaning() {
        for admin in ["grpc://127.0.0.1:33646", "grpcs://admin:33646", "http://127.0.0.1:23646", "https://admin"] {
            assert_eq!(sdk_admin_address(admin).unwrap(), admin);
        }
    }

    #[test]
    fn a_bad_address_says_what_is_missing() {
        assert_eq!(sdk_admin_address(" "), Err(AdminAddressError::Empty));
        assert_eq!(sdk_admin_address("localhost"), Err(AdminAddressError::NoPort("localhost".into())));
        assert_eq!(sdk_admin_address("[::1]"), Err(AdminAddressError::NoPort("[::1]".into())));
        assert_eq!(sdk_admin_address("localhost:0"), Err(AdminAddressError::BadPort("localhost:0".into())));
        assert_eq!(sdk_admin_address("localhost:http"), Err(AdminAddressError::BadPort("localhost:http".into())));
        assert_eq!(sdk_admin_address("::1:23646"), Err(AdminAddressError::Shape("::1:23646".into())));
        assert_eq!(sdk_admin_address("[::1:23646"), Err(AdminAddressError::Shape("[::1:23646".into())));
        assert!(sdk_admin_address("localhost").unwrap_err().to_string().contains("grpc://host:port"));
    }

    #[test]
    fn a_list_converts_each_entry_and_allows_whitespace_around_the_commas() {
        assert_eq!(
            sdk_admin_address("10.0.0.5:23646, grpc://10.0.0.6:33646 ,https://admin-c").unwrap(),
            "http://10.0.0.5:23646,grpc://10.0.0.6:33646,https://admin-c"
        );
        assert_eq!(sdk_admin_address("a:1/,[::1]:2").unwrap(), "http://a:1,http://[::1]:2");
    }

    #[test]
    fn a_bad_entry_in_a_list_is_named_and_an_empty_entry_is_refused() {
        assert_eq!(sdk_admin_address("a:1, b"), Err(AdminAddressError::NoPort("b".into())));
        assert_eq!(sdk_admin_address("a:1,b:0"), Err(AdminAddressError::BadPort("b:0".into())));
        assert_eq!(sdk_admin_address("::1:2,a:1"), Err(AdminAddressError::Shape("::1:2".into())));
        for bad in ["a:1,,b:2", "a:1,", ",a:1", " , ", "a:1, ,b:2"] {
            assert_eq!(sdk_admin_address(bad), Err(AdminAddressError::EmptyEntry(bad.trim().into())), "{bad}");
        }
        let err = sdk_admin_address("a:1,,b:2").unwrap_err().to_string();
        assert!(err.contains("\"a:1,,b:2\" has an empty entry"), "{err}");
    }

    #[test]
    fn the_cli_turns_a_bare_admin_into_an_http_address_and_refuses_a_portless_one() {
        use clap::Parser;
        let dir = std::env::temp_dir().join(format!("plughost-worker-args-{}", std::process::id()));
        let cli = crate::Cli::try_parse_from(
            ["plughost", "worker", "--admin", "localhost:1", "--working-dir"]
                .iter()
                .map(std::ffi::OsString::from)
                .chain([dir.clone().into_os_string()]),
        )
        .unwrap();
        let crate::Command::Worker(args) = cli.command else { panic!("a worker command") };
        assert!(args.worker().is_ok());
        let bad = WorkerArgs { admin: "localhost".into(), ..args };
        let err = bad.worker().err().expect("a portless admin is refused").to_string();
        assert!(err.contains("has no port"), "{err}");
        let list = WorkerArgs { admin: "localhost:1, grpc://127.0.0.1:2".into(), ..bad.clone() };
        assert!(list.worker().is_ok());
        let bad_entry = WorkerArgs { admin: "localhost:1,localhost".into(), ..bad };
        let err = bad_entry.worker().err().expect("a portless entry is refused").to_string();
        assert!(err.contains("--admin \"localhost\" has no port"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
