//! Execution: `VACUUM` one database in place, with a busy timeout, progress while
//! SQLite works, cancellation (the transaction rolls back and the file is unchanged),
//! and the bytes before and after.
//!
//! VACUUM is one statement in two phases: it rebuilds the database into a temporary
//! one (virtual-machine work, which SQLite's progress handler sees), then copies the
//! result back page by page (which it does not). Progress counts the VM steps of the
//! rebuild against an estimate from the number of pages in use and maps them onto the
//! first [`REBUILD_SHARE`] of the bar; the handler adds elapsed-time reports so the copy
//! phase is visible too. The same progress handler makes a cancel interrupt SQLite.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use rusqlite::{Connection, OpenFlags};
use worker_sdk::CancellationToken;

use crate::inspect::{self, PageStats};

/// VM instructions between two calls of the progress handler.
const OPS_PER_CALL: i32 = 1000;
/// Roughly how many VM instructions the rebuild spends per page in use (measured at
/// about 105 on a table with an index; SQLite copies whole b-trees cheaply).
const OPS_PER_PAGE: u64 = 110;
/// The part of the progress bar the rebuild phase covers.
pub const REBUILD_SHARE: f64 = 60.0;
/// Progress reports at most this often.
const REPORT_EVERY: Duration = Duration::from_millis(250);

/// A database's size on disk and its page accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    pub file_bytes: u64,
    /// The write-ahead log beside it (0 when there is none).
    pub wal_bytes: u64,
    pub stats: PageStats,
}

impl Sizes {
    pub fn total_bytes(&self) -> u64 {
        self.file_bytes + self.wal_bytes
    }
}

/// What a vacuum did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VacuumReport {
    pub before: Sizes,
    pub after: Sizes,
    pub elapsed: Duration,
}

impl VacuumReport {
    pub fn reclaimed_bytes(&self) -> u64 {
        self.before.total_bytes().saturating_sub(self.after.total_bytes())
    }
}

/// How far a running vacuum is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// An estimate; at most [`REBUILD_SHARE`] while SQLite is rebuilding.
    pub percent: f64,
    pub steps: u64,
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum VacuumError {
    #[error("{} is not an SQLite database", .0.display())]
    NotSqlite(PathBuf),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("vacuum canceled; the database is unchanged")]
    Canceled,
}

/// Vacuums the database at `path` in place. `on_progress` is called from the vacuuming
/// thread a few times a second. A cancel interrupts SQLite, which rolls back.
pub fn vacuum(
    path: &Path,
    busy_timeout: Duration,
    cancel: &CancellationToken,
    on_progress: impl Fn(Progress) + Send + 'static,
) -> Result<VacuumReport, VacuumError> {
    let sqlite = |source| VacuumError::Sqlite { path: path.to_path_buf(), source };
    match inspect::looks_like_sqlite(path) {
        Ok(true) => {}
        Ok(false) => return Err(VacuumError::NotSqlite(path.to_path_buf())),
        Err(source) => return Err(VacuumError::Io { path: path.to_path_buf(), source }),
    }
    // Read-write but never create: a database that vanished is an error, not a new file.
    let mut conn =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .map_err(sqlite)?;
    conn.busy_timeout(busy_timeout).map_err(sqlite)?;
    let before = sizes(path, &conn)?;
    let started = Instant::now();

    let estimate = (before.stats.used_pages().max(1) * OPS_PER_PAGE / OPS_PER_CALL as u64).max(1);
    let token = cancel.clone();
    let mut calls = 0u64;
    let mut last_report = Instant::now();
    conn.progress_handler(
        OPS_PER_CALL,
        Some(move || {
            calls += 1;
            if last_report.elapsed() >= REPORT_EVERY {
                last_report = Instant::now();
                let done = (calls as f64 / estimate as f64).min(1.0);
                let steps = calls * OPS_PER_CALL as u64;
                on_progress(Progress { percent: done * REBUILD_SHARE, steps, elapsed: started.elapsed() });
            }
            token.is_cancelled()
        }),
    )
    .map_err(sqlite)?;
    let result = conn.execute_batch("VACUUM");
    conn.progress_handler(0, None::<fn() -> bool>).map_err(sqlite)?;
    match result {
        Ok(()) => {}
        Err(_) if cancel.is_cancelled() => return Err(VacuumError::Canceled),
        Err(e) => return Err(sqlite(e)),
    }
    // In WAL mode the rebuilt pages sit in the log; a truncating checkpoint moves them
    // into the file and gives the log's space back too.
    let journal: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).map_err(sqlite)?;
    if journal.eq_ignore_ascii_case("wal") {
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).map_err(sqlite)?;
    }
    let after = sizes(path, &conn)?;
    Ok(VacuumReport { before, after, elapsed: started.elapsed() })
}

fn sizes(path: &Path, conn: &Connection) -> Result<Sizes, VacuumError> {
    let stats = inspect::stats_of(conn).map_err(|source| VacuumError::Sqlite { path: path.to_path_buf(), source })?;
    let file_bytes =
        std::fs::metadata(path).map_err(|source| VacuumError::Io { path: path.to_path_buf(), source })?.len();
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let wal_bytes = std::fs::metadata(PathBuf::from(wal)).map(|m| m.len()).unwrap_or(0);
    Ok(Sizes { file_bytes, wal_bytes, stats })
}
