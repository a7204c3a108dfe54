//! The `job_types` table (migration 2): the config store's persistence on PostgreSQL
//! (`ConfigStore::open_postgres`), so every admin sharing the database sees the same job
//! types. One row per job type holds the encoded descriptor as the worker sent it and the
//! encoded config with its sensitive values sealed: the bytes `descriptor.pb` and
//! `config.pb` hold. This module knows bytes only; the config store encodes, seals, opens
//! and decodes them.
//!
//! [`JobTypeTable`] is a writer of its own beside the job store's: a [`PgBackend`] (a
//! current-thread runtime and one connection, opened again when lost) that the config
//! store owns and calls synchronously, from its callers' blocking threads. Called from
//! inside a runtime (a `spawn_blocking` thread has one), [`super::block_on`] runs the work
//! on a scoped thread, since blocking on a runtime inside a runtime panics.
//!
//! **Fencing.** Every write is one transaction that first checks the lease's epoch with
//! the job store's check ([`super::fence_check`]): under an epoch that is no longer the
//! lease's it writes nothing and fails with [`BackendError::fenced`], and a takeover's
//! epoch bump waits for a save that took the lease row's share lock.

use std::sync::{Mutex, PoisonError};

use tokio_postgres::Transaction;

use super::{Conn, Failure, PgBackend, PgTarget, Statements, fence_check, pg_error};
use crate::store::BackendError;

/// Every job type, by name.
const LOAD: &str = "SELECT job_type, descriptor, config FROM job_types ORDER BY job_type";

/// Whether any job type is stored.
const ANY: &str = "SELECT EXISTS (SELECT 1 FROM job_types)";

/// Milliseconds since the Unix epoch, by the database's clock.
macro_rules! now_ms {
    () => {
        "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
    };
}

/// A save: sets the parts it names; a part it leaves NULL keeps the stored one.
const SAVE: &str = concat!(
    "INSERT INTO job_types (job_type, descriptor, config, updated_at) VALUES ($1, $2, $3, ",
    now_ms!(),
    ") ON CONFLICT (job_type) DO UPDATE SET descriptor = COALESCE(EXCLUDED.descriptor, job_types.descriptor), \
     config = COALESCE(EXCLUDED.config, job_types.config), updated_at = EXCLUDED.updated_at"
);

/// An import: never replaces a stored job type.
const IMPORT: &str = concat!(
    "INSERT INTO job_types (job_type, descriptor, config, updated_at) VALUES ($1, $2, $3, ",
    now_ms!(),
    ") ON CONFLICT (job_type) DO NOTHING"
);

/// One job type's row: the encoded `JobTypeDescriptor` and the encoded
/// `PersistedJobTypeConfig` (sensitive values sealed). Either may be missing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct JobTypeRow {
    pub(crate) job_type: String,
    pub(crate) descriptor: Option<Vec<u8>>,
    pub(crate) config: Option<Vec<u8>>,
}

/// The `job_types` table of one database, written under one lease epoch.
pub(crate) struct JobTypeTable {
    /// Saves are serialised by the config store already; the lock makes `&self` enough.
    writer: Mutex<PgBackend>,
    redacted: String,
    /// A standby's view: it reads, and refuses every save.
    read_only: bool,
}

impl std::fmt::Debug for JobTypeTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobTypeTable").field("database", &self.redacted).finish()
    }
}

impl JobTypeTable {
    /// Connects to the database `target` names and creates or migrates its schema (the
    /// same migrations as the job store's, under the same advisory lock, each checking
    /// that the lease's epoch is `fence`). Every later write is fenced by `fence` too.
    pub(crate) fn open(target: &PgTarget, fence: i64) -> Result<JobTypeTable, BackendError> {
        let writer = PgBackend::open(target, Some(fence))?;
        Ok(JobTypeTable { writer: Mutex::new(writer), redacted: target.redacted().to_string(), read_only: false })
    }

    /// The table as it is, for a standby's read-only view: no migration, and every save
    /// refused (only the lease holder writes).
    pub(crate) fn open_view(target: &PgTarget) -> Result<JobTypeTable, BackendError> {
        let writer = PgBackend::unmigrated(target)?;
        Ok(JobTypeTable { writer: Mutex::new(writer), redacted: target.redacted().to_string(), read_only: true })
    }

    /// The database's URL without its password.
    pub(crate) fn redacted(&self) -> &str {
        &self.redacted
    }

    /// Whether the table holds no job type.
    pub(crate) fn is_empty(&self) -> Result<bool, BackendError> {
        self.writer().run(|mut conn, _| async move {
            let out = any(&mut conn).await;
            (conn, out.map(|any| !any).map_err(|e| pg_error("cannot read the stored job types", e)))
        })
    }

    /// Every stored job type, by name.
    pub(crate) fn load(&self) -> Result<Vec<JobTypeRow>, BackendError> {
        self.writer().run(|mut conn, _| async move {
            let out = load(&mut conn).await;
            (conn, out.map_err(|e| pg_error("cannot load the stored job types", e)))
        })
    }

    /// Stores `rows` in one fenced transaction if, in it, the table is still empty;
    /// returns how many it stored (0 when the table held a job type already). Never
    /// replaces a stored row.
    pub(crate) fn import(&self, rows: &[JobTypeRow]) -> Result<usize, BackendError> {
        self.write(Change::Import(rows), "cannot import the data dir's job types")
    }

    /// Sets one job type's descriptor and/or config in one fenced transaction; a part
    /// that is `None` keeps its stored value.
    pub(crate) fn save(
        &self,
        job_type: &str,
        descriptor: Option<&[u8]>,
        config: Option<&[u8]>,
    ) -> Result<(), BackendError> {
        let what = format!("cannot save job type {job_type:?}");
        self.write(Change::Save { job_type, descriptor, config }, &what).map(|_| ())
    }

    fn write(&self, change: Change<'_>, what: &str) -> Result<usize, BackendError> {
        if self.read_only {
            return Err(BackendError::new(format!("{what}: a standby saves nothing; changes go to the leader")));
        }
        self.writer().run(|mut conn, fence| async move {
            let out = write(&mut conn, fence, &change).await;
            (conn, out.map_err(|f| f.into_backend(what)))
        })
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, PgBackend> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What one fenced transaction writes.
enum Change<'a> {
    Import(&'a [JobTypeRow]),
    Save { job_type: &'a str, descriptor: Option<&'a [u8]>, config: Option<&'a [u8]> },
}

async fn any(conn: &mut Conn) -> Result<bool, tokio_postgres::Error> {
    let stmt = conn.statements.get(&conn.client, ANY).await?;
    conn.client.query_one(&stmt, &[]).await?.try_get(0)
}

async fn load(conn: &mut Conn) -> Result<Vec<JobTypeRow>, tokio_postgres::Error> {
    let stmt = conn.statements.get(&conn.client, LOAD).await?;
    let rows = conn.client.query(&stmt, &[]).await?;
    rows.iter()
        .map(|r| Ok(JobTypeRow { job_type: r.try_get(0)?, descriptor: r.try_get(1)?, config: r.try_get(2)? }))
        .collect()
}

/// Writes `change` in one transaction that first checks the lease's epoch, and commits
/// it; how many rows it stored. On error the transaction is rolled back before this
/// returns, so the lease row's share lock is not held after it.
async fn write(conn: &mut Conn, fence: Option<i64>, change: &Change<'_>) -> Result<usize, Failure> {
    let Conn { client, statements } = conn;
    let tx = client.transaction().await?;
    match write_in(&tx, statements, fence, change).await {
        Ok(stored) => {
            tx.commit().await?;
            Ok(stored)
        }
        Err(e) => {
            // Best effort: on a broken connection the server rolls back by itself.
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

async fn write_in(
    tx: &Transaction<'_>,
    statements: &mut Statements,
    fence: Option<i64>,
    change: &Change<'_>,
) -> Result<usize, Failure> {
    let Some(held) = fence else {
        return Err(Failure::Backend(BackendError::new("job types are written only under a lease epoch")));
    };
    fence_check(tx, Some(statements), held).await?;
    match *change {
        Change::Import(rows) => {
            let any: bool = tx.query_one(ANY, &[]).await?.try_get(0)?;
            if any {
                return Ok(0);
            }
            let stmt = statements.get_tx(tx, IMPORT).await?;
            let mut stored = 0;
            for row in rows {
                stored += tx.execute(&stmt, &[&row.job_type, &row.descriptor, &row.config]).await? as usize;
            }
            Ok(stored)
        }
        Change::Save { job_type, descriptor, config } => {
            let stmt = statements.get_tx(tx, SAVE).await?;
            Ok(tx.execute(&stmt, &[&job_type, &descriptor, &config]).await? as usize)
        }
    }
}
