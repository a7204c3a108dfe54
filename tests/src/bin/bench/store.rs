//! Which store the admin under test runs on: SQLite in its data dir (the default), or a
//! PostgreSQL server the bench starts itself in a temp dir with PostgreSQL's durable
//! defaults (`fsync=on`, synchronous commits; [`tests::postgres::PgServer::start_durable`]).
//! Its programs come from `PLUGHOST_TEST_PG_BIN` or `/usr/lib/postgresql/<version>/bin`.

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use tests::postgres::PgServer;

use crate::admin_process::{AdminProcess, AdminStore};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StoreKind {
    #[default]
    Sqlite,
    Postgres,
}

impl StoreKind {
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Sqlite => "sqlite",
            StoreKind::Postgres => "postgres",
        }
    }

    pub fn parse(s: &str) -> Option<StoreKind> {
        [StoreKind::Sqlite, StoreKind::Postgres].into_iter().find(|k| k.name() == s)
    }
}

/// Whether PostgreSQL's programs can be found (else scenarios that need it cannot run).
pub fn postgres_available() -> bool {
    tests::postgres::bin_dir().is_some_and(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
}

/// The store of one scenario run: nothing to start for SQLite, a server for PostgreSQL
/// (stopped when this is dropped).
pub struct BenchStore {
    pg: Option<PgServer>,
}

impl BenchStore {
    pub async fn start(kind: StoreKind) -> Result<BenchStore> {
        let pg = match kind {
            StoreKind::Sqlite => None,
            StoreKind::Postgres => Some(start_postgres().await?),
        };
        Ok(BenchStore { pg })
    }

    /// The admin's `--store` (and `--lease-seconds`) for this store.
    pub fn admin_store(&self, lease_seconds: Option<u64>) -> AdminStore {
        AdminStore { postgres: self.pg.as_ref().map(PgServer::url), lease_seconds }
    }

    pub fn url(&self) -> Option<String> {
        self.pg.as_ref().map(PgServer::url)
    }

    /// The PostgreSQL server's data dir (for the fsync probe on its disk).
    pub fn pg_data_dir(&self) -> Option<std::path::PathBuf> {
        self.pg.as_ref().map(PgServer::data_dir)
    }

    /// CPU seconds PostgreSQL's server has used so far: the postmaster with its reaped
    /// children and every live child (the admins' backends, the WAL writer, the
    /// checkpointer). `None` on SQLite or when /proc cannot tell.
    pub fn postgres_cpu_seconds(&self) -> Option<f64> {
        let pid_file = std::fs::read_to_string(self.pg.as_ref()?.data_dir().join("postmaster.pid")).ok()?;
        let postmaster: u32 = pid_file.lines().next()?.trim().parse().ok()?;
        let ticks = crate::admin_process::clock_ticks();
        let fields = |pid: u32| -> Option<Vec<f64>> {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let after = stat.rsplit_once(')')?.1;
            // From the field after the name: state, ppid, ... utime (12), stime (13),
            // cutime (14), cstime (15); ppid as a number too.
            Some(after.split_whitespace().map(|v| v.parse::<f64>().unwrap_or(0.0)).collect())
        };
        let own = fields(postmaster)?;
        let mut total = own.get(11)? + own.get(12)? + own.get(13)? + own.get(14)?;
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            if let Some(f) = fields(pid)
                && f.get(1).copied() == Some(f64::from(postmaster))
            {
                total += f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0);
            }
        }
        Some(total / ticks)
    }

    /// A connection to the store the admin writes (`data_dir` is the admin's, for SQLite).
    pub async fn connect(&self, data_dir: &Path) -> Result<StoreReader> {
        match &self.pg {
            None => {
                let db = rusqlite::Connection::open(AdminProcess::state_db(data_dir))
                    .context("opening the admin's store")?;
                db.busy_timeout(std::time::Duration::from_secs(10))?;
                Ok(StoreReader::Sqlite(db))
            }
            Some(pg) => Ok(StoreReader::Postgres(pg_connect(&pg.url()).await?)),
        }
    }
}

/// Starts a durable PostgreSQL server (initdb and pg_ctl block: off the runtime's threads).
async fn start_postgres() -> Result<PgServer> {
    if !postgres_available() {
        bail!(
            "PostgreSQL's programs were not found: set PLUGHOST_TEST_PG_BIN to the directory holding \
             initdb and pg_ctl (or install them under /usr/lib/postgresql/<version>/bin)"
        );
    }
    tokio::task::spawn_blocking(PgServer::start_durable).await.map_err(|e| match e.try_into_panic() {
        Ok(panic) => anyhow!(
            "starting PostgreSQL: {}",
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        ),
        Err(e) => anyhow!("starting PostgreSQL: {e}"),
    })
}

/// A client on the bench's runtime.
pub async fn pg_connect(url: &str) -> Result<tokio_postgres::Client> {
    let (client, connection) =
        tokio_postgres::connect(url, tokio_postgres::NoTls).await.with_context(|| format!("connecting to {url}"))?;
    tokio::spawn(connection);
    Ok(client)
}

/// The bench's own read connection to the admin's store.
pub enum StoreReader {
    Sqlite(rusqlite::Connection),
    Postgres(tokio_postgres::Client),
}

impl StoreReader {
    /// How many jobs are in one of `states` (the store's own integer states).
    pub async fn count_in_states(&self, states: &[i32]) -> Result<i64> {
        match self {
            StoreReader::Sqlite(db) => {
                let list = states.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
                Ok(db.query_row(&format!("SELECT COUNT(*) FROM jobs WHERE state IN ({list})"), [], |r| r.get(0))?)
            }
            StoreReader::Postgres(c) => {
                let row = c.query_one("SELECT COUNT(*) FROM jobs WHERE state = ANY($1)", &[&states]).await?;
                Ok(row.try_get(0)?)
            }
        }
    }
}
