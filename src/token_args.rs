//! `plughost token create|list|revoke`: manages the admin's API tokens in its data dir.
//! A running admin sees the change at once (it re-reads the token file when it changes).

use std::path::PathBuf;

use admin::auth::{Role, TokenStore};
use anyhow::Context;
use clap::{Args, Subcommand};

#[derive(Args, Debug)]
pub struct TokenArgs {
    /// The admin's data dir.
    #[arg(long, env = "PLUGHOST_DATA_DIR", default_value = "./data", global = true)]
    pub data_dir: PathBuf,
    #[command(subcommand)]
    pub action: TokenAction,
}

#[derive(Subcommand, Debug)]
pub enum TokenAction {
    /// Issue a token and print it (it is shown this once; only its hash is kept). With
    /// --certificate, map that client certificate to the identity instead: an HTTPS client
    /// presenting it (on an admin with --http-client-ca) acts as NAME with ROLE.
    Create {
        #[arg(long)]
        name: String,
        /// viewer (reads), operator (runs and stops work), admin (configs, scripts, tokens)
        #[arg(long, value_parser = ["viewer", "operator", "admin"])]
        role: String,
        /// A PEM client certificate (its first certificate is used).
        #[arg(long)]
        certificate: Option<PathBuf>,
    },
    /// List tokens (names and roles; never the tokens).
    List,
    /// Revoke a token; callers using it are refused from now on.
    Revoke {
        #[arg(long)]
        name: String,
    },
}

pub fn run_token(args: TokenArgs) -> anyhow::Result<()> {
    let store = TokenStore::open(&args.data_dir).context("opening the token file")?;
    match args.action {
        TokenAction::Create { name, role, certificate } => {
            let role = Role::parse(&role).context("unknown role")?;
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
            match certificate {
                Some(path) => {
                    let pem = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                    let fingerprint = admin::auth::tokens::certificate_fingerprint(&pem)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                    store.add_certificate(&name, role, &fingerprint, now)?;
                    eprintln!("certificate {fingerprint} now names {name:?} ({role})");
                }
                None => {
                    let token = store.create(&name, role, now)?;
                    println!("{token}");
                    eprintln!("token {name:?} ({role}) created; it is shown only now");
                }
            }
        }
        TokenAction::List => {
            for t in store.list()? {
                println!("{}\t{}", t.name, t.role);
            }
        }
        TokenAction::Revoke { name } => {
            let info = store.revoke(&name)?;
            eprintln!("token {:?} ({}) revoked", info.name, info.role);
        }
    }
    Ok(())
}
