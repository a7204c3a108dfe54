//! `plughost worker`: the bundled plugins in a worker that dials an admin.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use worker_sdk::{CancellationToken, TlsConfig, Worker, WorkerConfig};

use crate::bundled::PluginArgs;

#[derive(Args, Debug, Clone)]
pub struct WorkerArgs {
    /// The admin: its HTTP address (http://host:port; the gRPC port is looked up) or
    /// its gRPC address (grpc://host:port, grpcs://host:port or host:port).
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

impl WorkerArgs {
    pub fn worker(&self) -> anyhow::Result<Worker> {
        let mut config = WorkerConfig::new(self.admin.clone(), self.working_dir.clone());
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
