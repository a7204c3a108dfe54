//! The `plughost` command line: `plughost admin`, `plughost worker`, `plughost up`.
//! Parses flags, builds the configuration and calls the libraries; nothing else.
//!
//! Modules: [`admin_args`] (the admin's flags and `plughost admin`), [`worker_args`]
//! (the worker's flags and `plughost worker`), [`token_args`] (`plughost token`), [`bundled`] (which plugin handlers a
//! worker offers), [`up`] (admin and workers in one process), [`demo`] (`up --demo`'s
//! directory and settings) and [`signal`] (Ctrl-C and SIGTERM).

pub mod admin_args;
pub mod bundled;
pub mod demo;
pub mod signal;
pub mod token_args;
pub mod up;
pub mod worker_args;

use clap::{Parser, Subcommand};

pub use admin_args::AdminArgs;
pub use bundled::PluginArgs;
pub use up::UpArgs;
pub use worker_args::WorkerArgs;

#[derive(Parser, Debug)]
#[command(
    name = "plughost",
    version,
    about = "A plugin-host control plane: an admin server and the workers that dial it"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the admin server: worker gRPC, the /plugin pages and the JSON API.
    Admin(AdminArgs),
    /// Run a worker with the bundled plugins (sqlite_vacuum, file_archive, and script
    /// and job_runner with --allow-scripts) that dials an admin.
    Worker(WorkerArgs),
    /// Run the admin and the bundled workers in one process (workers still dial the
    /// admin over loopback gRPC).
    Up(UpArgs),
    /// Manage the admin's API tokens (create, list, revoke).
    Token(token_args::TokenArgs),
}

/// Runs the command line; returns the process exit code.
pub fn main_with_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("plughost: cannot start the async runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("plughost: {}", worker_sdk::error::chain(e.as_ref()));
            1
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Admin(args) => admin_args::run_admin(args.to_config()?).await,
        Command::Worker(args) => worker_args::run_worker(args).await,
        Command::Up(args) => up::run_up(args).await,
        Command::Token(args) => token_args::run_token(args),
    }
}
