//! The SQLite schema, its migrations, and opening connections with the store's pragmas.

use std::{path::Path, time::Duration};

use rusqlite::Connection;

/// The jobs table: the columns the queries and indexes read, and the rest of a job in two
/// blobs (see [`super::rows`]). A store from before this layout has its jobs rewritten in
/// it when it first opens ([`super::legacy::convert`]).
pub(super) const JOBS_TABLE: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY,
    job_type TEXT NOT NULL,
    dedupe_key TEXT NOT NULL,
    summary TEXT NOT NULL,
    state INTEGER NOT NULL,
    error TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    completed_at INTEGER NOT NULL,
    dead_letter INTEGER NOT NULL,
    replay_of INTEGER NOT NULL,
    spec BLOB NOT NULL,
    status BLOB NOT NULL
);
";

/// The rest of the current schema. Statements are idempotent; [`migrate`] brings older
/// stores up to it.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS attempts (
    job_seq INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    worker_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    ended_at INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    error TEXT NOT NULL,
    PRIMARY KEY (job_seq, attempt)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS activities (
    id INTEGER PRIMARY KEY,
    created_at INTEGER NOT NULL,
    job_type TEXT NOT NULL,
    job_id TEXT NOT NULL,
    source TEXT NOT NULL,
    stage TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS activities_by_type ON activities(job_type, id);
CREATE INDEX IF NOT EXISTS activities_by_job ON activities(job_id, id);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    job_type TEXT NOT NULL,
    kind TEXT NOT NULL,
    job_id TEXT NOT NULL,
    worker_id TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    ended_at INTEGER NOT NULL,
    success INTEGER NOT NULL,
    message TEXT NOT NULL,
    proposals INTEGER NOT NULL,
    jobs_created INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_type ON runs(job_type, success, id);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    actor_kind TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    params TEXT NOT NULL,
    outcome TEXT NOT NULL,
    reason TEXT NOT NULL,
    request_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_at ON audit(at);
CREATE INDEX IF NOT EXISTS audit_by_action ON audit(action, id);
CREATE INDEX IF NOT EXISTS audit_by_actor ON audit(actor, id);
CREATE INDEX IF NOT EXISTS audit_by_target ON audit(target, id);
CREATE TABLE IF NOT EXISTS holds (
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    set_by TEXT NOT NULL,
    set_at INTEGER NOT NULL,
    PRIMARY KEY (kind, target)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS schedules (
    job_type TEXT PRIMARY KEY,
    cron TEXT NOT NULL,
    time_zone TEXT NOT NULL,
    set_by TEXT NOT NULL,
    set_at INTEGER NOT NULL,
    last_fired_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
";

/// The jobs table's columns, in the order the insert and the row mapping use.
pub(super) const JOB_COLUMNS: &str = super::rows::JOBS.columns;

/// Indexes over columns that older stores lack: created after [`migrate`] added them;
/// the activity feed's and the jobs' (an older store gets them built once, at its first
/// start, and loses the indexes they replace).
///
/// The feed's indexes hold only activities that are not output lines, so an output line
/// costs no entry in them, and the newest feed entries are found however many output
/// lines came after them.
///
/// The jobs have no index on their state as a whole: every job changes state when it
/// ends, and moving its entries in two such indexes was a third of the store writer's
/// time. `jobs_by_type` never changes after the insert (a job keeps its type), and
/// `jobs_open` holds only the jobs that did not succeed, so a job that succeeds leaves it
/// and never enters another. They answer the load at start (the active jobs from
/// `jobs_open`, the counts from both), the listings by type, and by any state but
/// SUCCEEDED; a listing of succeeded jobs walks the table from the newest job, which is
/// where they are.
const LATE_INDEXES: &str = concat!(
    "
CREATE INDEX IF NOT EXISTS jobs_by_replay ON jobs(replay_of) WHERE replay_of > 0;
CREATE INDEX IF NOT EXISTS jobs_dead_letters ON jobs(job_type) WHERE dead_letter = 1;
DROP INDEX IF EXISTS jobs_by_state;
DROP INDEX IF EXISTS jobs_by_type_state;
CREATE INDEX IF NOT EXISTS jobs_by_type ON jobs(job_type, seq);
CREATE INDEX IF NOT EXISTS jobs_open ON jobs(state, seq, job_type) WHERE ",
    not_succeeded!(),
    ";
CREATE INDEX IF NOT EXISTS activities_feed ON activities(id) WHERE ",
    not_output!(),
    ";
CREATE INDEX IF NOT EXISTS activities_feed_by_type ON activities(job_type, id) WHERE ",
    not_output!(),
    ";
"
);

/// How long a connection waits for a lock before it reports the database busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens the write connection: WAL, and synchronous=FULL so a commit is on disk.
pub(super) fn open_writer(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    // The page cache stays at SQLite's default (2 MiB) on purpose: at the end of each
    // transaction SQLite walks the whole cache's hash table, so a larger cache costs every
    // commit more than the reads it saves (measured: 64 MiB took a quarter of the writer).
    Ok(conn)
}

/// Creates the tables that are missing and migrates the ones an older build wrote.
pub(super) fn create_or_migrate(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(JOBS_TABLE)?;
    conn.execute_batch(SCHEMA)?;
    migrate(conn)?;
    conn.execute_batch(LATE_INDEXES)
}

/// Opens the checkpointer's connection: it copies the log into the database beside the
/// writer, synced as the writer's commits are.
pub(super) fn open_checkpointer(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

/// Opens a read connection; WAL lets it read beside the writer.
pub(super) fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(conn)
}

/// Brings a store written by an older build up to the current schema: its jobs, when
/// they are in the layout of one column per field, are rewritten in the current one.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    if super::legacy::is_legacy(conn)? {
        let started = std::time::Instant::now();
        let jobs = super::legacy::convert(conn, JOBS_TABLE)?;
        tracing::info!(
            jobs,
            seconds = started.elapsed().as_secs_f64(),
            "the jobs were rewritten in the compact row layout"
        );
    }
    Ok(())
}
