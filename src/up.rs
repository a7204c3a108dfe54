//! `plughost up`: the admin and a worker with the bundled plugins in one process. The
//! worker still dials the admin's gRPC listener over loopback, exactly as a separate
//! `plughost worker` would, so `up` exercises the same paths as a real deployment.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::ensure;
use clap::Args;
use worker_sdk::{CancellationToken, JobHandler, Worker, WorkerConfig};

use crate::{admin_args::AdminArgs, bundled::PluginArgs, demo};

/// How long the bundled worker may take to finish running jobs on shutdown.
const WORKER_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Args, Debug, Clone)]
pub struct UpArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    #[command(flatten)]
    pub plugins: PluginArgs,
    /// Prepare a demo directory under the data dir (a fragmented SQLite database, old
    /// log files, a sample script) and point the plugins at it. Implies --allow-scripts,
    /// with scripts running in the demo's scripts directory (instead of --scripts-dir).
    #[arg(long)]
    pub demo: bool,
}

pub async fn run_up(args: UpArgs) -> anyhow::Result<()> {
    ensure!(
        args.admin.grpc_tls_cert.is_none() && args.admin.http_tls_cert.is_none(),
        "plughost up runs its workers over loopback without TLS; for TLS run `plughost admin` and `plughost worker`"
    );
    let data_dir = args.admin.data_dir.clone();
    let mut plugins = args.plugins.clone();
    plugins.allow_scripts |= args.demo;
    let job_types = plugins.job_types()?;

    let mut config = args.admin.to_config()?;
    if matches!(config.store, admin::config::StoreLocation::Postgres { .. }) {
        anyhow::bail!(
            "plughost up runs one admin on SQLite; to share a PostgreSQL store, run `plughost admin --store ...` \
             and `plughost worker` separately"
        );
    }
    config.scripts_allowed = plugins.allow_scripts;
    // The bundled worker uses the first token (without its worker_id pattern, if any).
    let token =
        config.worker_tokens.first().and_then(|t| admin::identity::WorkerToken::parse(t).ok()).map(|t| t.secret);
    // First the admin: it locks the data dir and binds both listeners, so a second `up`
    // on the same data dir or a busy port stops here, before it touches any demo files.
    let admin = admin::Admin::start(config).await?;
    let (demo, handlers) = match demo_and_handlers(&plugins, &data_dir, args.demo) {
        Ok(prepared) => prepared,
        Err(e) => {
            admin.shutdown().await;
            return Err(e);
        }
    };
    let mut worker_config =
        WorkerConfig::new(format!("grpc://{}", dialable(admin.grpc_addr())), data_dir.join("worker"));
    worker_config.token = token;
    worker_config.version = env!("CARGO_PKG_VERSION").to_string();
    worker_config.shutdown_grace = WORKER_SHUTDOWN_GRACE;
    let worker = handlers.into_iter().fold(Worker::new(worker_config), Worker::handler_arc);
    let stop = CancellationToken::new();
    let mut worker_task = tokio::spawn(worker.run(stop.clone()));
    println!(
        "plughost up: http://{}/plugin  (workers dial {}; bundled worker offers {})",
        admin.http_addr(),
        admin.grpc_addr(),
        job_types.join(", ")
    );
    if let Some(hint) = admin.sign_in_hint() {
        println!("plughost up: {hint}");
    }
    if let Some(d) = demo {
        if d.settings_pending() {
            println!("plughost up: demo files in {}; jobs appear within a minute", d.root.display());
            let state = admin.components().clone();
            tokio::spawn(async move {
                if let Err(e) = demo::configure(&state, &d, &job_types).await {
                    tracing::error!(error = %format!("{e:#}"), "demo configuration failed");
                }
            });
        } else {
            println!("plughost up: demo files in {} recreated; the saved settings are kept", d.root.display());
        }
    }

    // Either the operator stops `up`, or the worker stops on its own (the admin
    // rejected it, which is fatal): both end the process.
    let ended_early = tokio::select! {
        _ = crate::signal::shutdown_signal() => None,
        ended = &mut worker_task => Some(ended),
    };
    tracing::info!("stopping");
    stop.cancel();
    let result = match ended_early {
        Some(Ok(Ok(()))) => Ok(()),
        Some(Ok(Err(e))) => Err(anyhow::Error::from(e).context("the bundled worker stopped")),
        Some(Err(join)) => Err(anyhow::anyhow!("the bundled worker crashed: {join}")),
        None => match tokio::time::timeout(WORKER_SHUTDOWN_GRACE * 3, worker_task).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(join)) => Err(anyhow::anyhow!("the bundled worker crashed: {join}")),
            Err(_) => {
                tracing::warn!("the bundled worker did not stop in time");
                Ok(())
            }
        },
    };
    admin.shutdown().await;
    result
}

/// The bundled worker's handlers.
type Handlers = Vec<Arc<dyn JobHandler>>;

/// With `--demo`, the demo directory (prepared now) and the scripts running in it; then
/// the handlers of the offered job types.
fn demo_and_handlers(
    plugins: &PluginArgs,
    data_dir: &std::path::Path,
    with_demo: bool,
) -> anyhow::Result<(Option<demo::Demo>, Handlers)> {
    let mut plugins = plugins.clone();
    let demo = if with_demo { Some(demo::prepare(&data_dir.join("demo"))?) } else { None };
    if let Some(d) = &demo {
        plugins.scripts_dir = Some(d.scripts.clone());
    }
    let handlers = plugins.handlers(data_dir.join("scripts"))?;
    Ok((demo, handlers))
}

/// The address to dial for a listener: a wildcard listener is reached over loopback.
fn dialable(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
    }
    addr
}
