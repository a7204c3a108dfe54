//! The jobs table as builds before the compact row wrote it (one column per field), read
//! once, when such a store first opens, to rewrite its jobs in the current layout
//! ([`super::rows`]).

use std::sync::Arc;

use proto::pb::{self, JobState};
use rusqlite::{Connection, Row};

use super::{rows, writes};
use crate::job::{Job, JobSpecData};
use crate::store::columns;

/// The old table, as the last build that wrote it created it (older ones lacked the last
/// four columns; [`convert`] adds them first).
#[cfg(test)]
pub(super) const JOBS_TABLE: &str = "
CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY,
    job_type TEXT NOT NULL,
    dedupe_key TEXT NOT NULL,
    priority INTEGER NOT NULL,
    summary TEXT NOT NULL,
    detail TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    not_before INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    detection_run INTEGER NOT NULL,
    state INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    attempts_total INTEGER NOT NULL,
    worker_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    progress REAL NOT NULL,
    stage TEXT NOT NULL,
    message TEXT NOT NULL,
    error TEXT NOT NULL,
    result_summary TEXT NOT NULL,
    result BLOB NOT NULL,
    updated_at INTEGER NOT NULL,
    ready_at INTEGER NOT NULL,
    assigned_at INTEGER NOT NULL,
    completed_at INTEGER NOT NULL,
    dead_letter INTEGER NOT NULL,
    failed_on TEXT NOT NULL,
    stop_outcome INTEGER NOT NULL DEFAULT 0,
    stop_reason TEXT NOT NULL DEFAULT '',
    replay_of INTEGER NOT NULL DEFAULT 0,
    cluster_context BLOB NOT NULL DEFAULT x''
);
CREATE INDEX jobs_by_type ON jobs(job_type, seq);
";

/// The old table's columns, in the order [`row_to_job`] reads them.
const COLUMNS: &str = "seq, job_type, dedupe_key, priority, summary, detail, payload, created_at, not_before, \
     expires_at, detection_run, state, attempts, attempts_total, worker_id, request_id, progress, stage, message, \
     error, result_summary, result, updated_at, ready_at, assigned_at, completed_at, dead_letter, failed_on, \
     stop_outcome, stop_reason, replay_of, cluster_context";

/// Whether the jobs table is the old one.
pub(super) fn is_legacy(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row("SELECT COUNT(*) FROM pragma_table_info('jobs') WHERE name = 'payload'", [], |r| r.get::<_, i64>(0))
        .map(|n| n > 0)
}

/// Rewrites an old jobs table in the current layout, in one transaction: the old table is
/// renamed, `create_table` creates the new one, every job is copied over (oldest first)
/// and the old table goes with its indexes. Returns the jobs copied.
pub(super) fn convert(conn: &Connection, create_table: &str) -> rusqlite::Result<usize> {
    let tx = conn.unchecked_transaction()?;
    let mut have = Vec::new();
    {
        let mut stmt = tx.prepare("SELECT name FROM pragma_table_info('jobs')")?;
        for name in stmt.query_map([], |r| r.get::<_, String>(0))? {
            have.push(name?);
        }
    }
    for (column, definition) in [
        ("stop_outcome", "stop_outcome INTEGER NOT NULL DEFAULT 0"),
        ("stop_reason", "stop_reason TEXT NOT NULL DEFAULT ''"),
        ("replay_of", "replay_of INTEGER NOT NULL DEFAULT 0"),
        ("cluster_context", "cluster_context BLOB NOT NULL DEFAULT x''"),
    ] {
        if !have.iter().any(|c| c == column) {
            tx.execute_batch(&format!("ALTER TABLE jobs ADD COLUMN {definition};"))?;
        }
    }
    tx.execute_batch("ALTER TABLE jobs RENAME TO jobs_legacy;")?;
    tx.execute_batch(create_table)?;
    let mut copied = 0;
    {
        let mut read = tx.prepare(&format!("SELECT {COLUMNS} FROM jobs_legacy ORDER BY seq"))?;
        let mut blobs = writes::Blobs::default();
        let mut rows = read.query([])?;
        while let Some(row) = rows.next()? {
            writes::insert_jobs(&tx, &[&row_to_job(row)?], &mut blobs)?;
            copied += 1;
        }
    }
    tx.execute_batch("DROP TABLE jobs_legacy;")?;
    tx.commit()?;
    Ok(copied)
}

/// A job from a row of the old table's [`COLUMNS`].
fn row_to_job(r: &Row<'_>) -> rusqlite::Result<Job> {
    let payload: pb::JobSpec = rows::decode(r, 6)?;
    let result: pb::JobResult = rows::decode(r, 21)?;
    let failed_on: String = r.get(27)?;
    let state: i32 = r.get(11)?;
    Ok(Job {
        seq: r.get(0)?,
        spec: Arc::new(JobSpecData {
            job_type: r.get(1)?,
            dedupe_key: r.get::<_, String>(2)?.into(),
            priority: r.get(3)?,
            summary: r.get::<_, String>(4)?.into(),
            detail: r.get::<_, String>(5)?.into(),
            parameters: payload.parameters.into(),
            labels: payload.labels.into(),
            created_at: r.get(7)?,
            not_before: r.get(8)?,
            expires_at: r.get(9)?,
            detection_run: r.get(10)?,
            replay_of: r.get(30)?,
            cluster_context: columns::decode_context(&r.get::<_, Vec<u8>>(31)?),
        }),
        state: JobState::try_from(state).unwrap_or(JobState::Unspecified),
        attempts: r.get(12)?,
        attempts_total: r.get(13)?,
        worker_id: r.get::<_, String>(14)?.into(),
        request_id: r.get::<_, String>(15)?.into(),
        progress: r.get(16)?,
        stage: r.get::<_, String>(17)?.into(),
        message: r.get::<_, String>(18)?.into(),
        error: r.get::<_, String>(19)?.into(),
        result_summary: r.get::<_, String>(20)?.into(),
        result_values: result.output_values.into(),
        updated_at: r.get(22)?,
        ready_at: r.get(23)?,
        assigned_at: r.get(24)?,
        completed_at: r.get(25)?,
        dead_letter: r.get(26)?,
        failed_on: columns::decode_failed_on(&failed_on),
        stop: columns::stop_request(r.get(28)?, r.get(29)?),
        queued_at: Default::default(),
        deadline: 0,
        session_id: 0,
    })
}

/// Writes `job` in the old layout (for the tests of [`convert`]), as the old build did.
#[cfg(test)]
pub(super) fn insert(conn: &Connection, job: &Job) -> rusqlite::Result<()> {
    let s = &job.spec;
    let (stop_outcome, stop_reason) = columns::stop_columns(job);
    let values: Vec<rusqlite::types::Value> = vec![
        job.seq.into(),
        s.job_type.clone().into(),
        s.dedupe_key.to_string().into(),
        s.priority.into(),
        s.summary.to_string().into(),
        s.detail.to_string().into(),
        columns::spec_payload(s).into(),
        s.created_at.into(),
        s.not_before.into(),
        s.expires_at.into(),
        s.detection_run.into(),
        (job.state as i32).into(),
        job.attempts.into(),
        job.attempts_total.into(),
        job.worker_id.to_string().into(),
        job.request_id.to_string().into(),
        job.progress.into(),
        job.stage.to_string().into(),
        job.message.to_string().into(),
        job.error.to_string().into(),
        job.result_summary.to_string().into(),
        columns::result_bytes(job).into(),
        job.updated_at.into(),
        job.ready_at.into(),
        job.assigned_at.into(),
        job.completed_at.into(),
        job.dead_letter.into(),
        columns::encode_failed_on(&job.failed_on).into(),
        stop_outcome.into(),
        stop_reason.to_string().into(),
        s.replay_of.into(),
        columns::context_bytes(s).into(),
    ];
    let marks = vec!["?"; values.len()].join(", ");
    conn.execute(&format!("INSERT INTO jobs ({COLUMNS}) VALUES ({marks})"), rusqlite::params_from_iter(values))?;
    Ok(())
}
