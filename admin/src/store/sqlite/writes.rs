//! Applying one coalesced batch to SQLite in one transaction, with cached statements.

use std::sync::LazyLock;

use proto::pb::JobState;
use rusqlite::{Connection, Statement, params};

use super::rows;
use crate::job::Job;
use crate::store::backend::{Pruned, Write};
use crate::store::columns;

/// New jobs go in statements of this many rows each, the largest that fits first: a
/// statement of many rows opens its cursors once and finds the table's end from where its
/// last row went, where a statement per job starts from the root each time.
const INSERT_ROWS: [usize; 3] = [16, 4, 1];

/// Every insert is an upsert ([`columns::Table::upsert`]); the jobs', one per row count
/// of [`INSERT_ROWS`].
static INSERT_JOBS: LazyLock<[String; 3]> = LazyLock::new(|| INSERT_ROWS.map(rows::insert_sql));
static INSERT_ATTEMPT: LazyLock<String> = LazyLock::new(|| columns::ATTEMPTS.upsert('?'));
static INSERT_ACTIVITY: LazyLock<String> = LazyLock::new(|| columns::ACTIVITIES.upsert('?'));
static INSERT_RUN: LazyLock<String> = LazyLock::new(|| columns::RUNS.upsert('?'));
static INSERT_AUDIT: LazyLock<String> = LazyLock::new(|| columns::AUDIT.upsert('?'));
static INSERT_HOLD: LazyLock<String> = LazyLock::new(|| columns::HOLDS.upsert('?'));
static INSERT_SCHEDULE: LazyLock<String> = LazyLock::new(|| columns::SCHEDULES.upsert('?'));

/// Writes one batch in one transaction and commits it. Returns what each prune deleted,
/// in batch order. On error the transaction is rolled back (when it is dropped). `blobs`
/// is the writer's, kept from batch to batch.
pub(super) fn apply(conn: &mut Connection, writes: &[Write<'_>], blobs: &mut Blobs) -> rusqlite::Result<Vec<Pruned>> {
    let mut pruned = Vec::new();
    let tx = conn.transaction()?;
    {
        let mut update = tx.prepare_cached(rows::UPDATE_JOB)?;
        // New jobs wait here to go in statements of many rows. Each job is once in a
        // coalesced batch, so they commute with every other write but a prune.
        let mut new_jobs: Vec<&Job> = Vec::new();
        let mut attempt = tx.prepare_cached(&INSERT_ATTEMPT)?;
        let mut activity = tx.prepare_cached(&INSERT_ACTIVITY)?;
        let mut run = tx.prepare_cached(&INSERT_RUN)?;
        for write in writes {
            match *write {
                Write::InsertJob(job) => new_jobs.push(job),
                Write::UpdateJob(job) => {
                    rows::encode_status(job, &mut blobs.status);
                    blobs.budget.fit_update(job, &mut blobs.status);
                    update.execute(params![
                        job.seq,
                        job.state as i32,
                        job.error,
                        job.updated_at,
                        job.completed_at,
                        job.dead_letter,
                        blobs.status,
                    ])?;
                }
                Write::Attempt { attempt: a, .. } if columns::implied_by_job_row(a) => {}
                Write::Attempt { job_seq, attempt: a } => {
                    attempt.execute(params![
                        job_seq,
                        a.attempt,
                        a.worker_id,
                        a.request_id,
                        a.started_at,
                        a.ended_at,
                        a.outcome,
                        a.error_message
                    ])?;
                }
                Write::Activity(a) => {
                    activity.execute(params![
                        a.id,
                        a.created_at,
                        a.job_type,
                        a.job_id,
                        a.source,
                        a.stage,
                        a.message
                    ])?;
                }
                Write::Run(r) => {
                    run.execute(params![
                        r.id,
                        r.job_type,
                        r.kind,
                        r.job_id,
                        r.worker_id,
                        r.started_at,
                        r.ended_at,
                        r.success,
                        r.message,
                        r.proposals,
                        r.jobs_created
                    ])?;
                }
                Write::Prune { before_ms } => {
                    insert_jobs(&tx, &new_jobs, blobs)?;
                    new_jobs.clear();
                    pruned.push(prune(&tx, before_ms)?);
                }
                Write::Audit(e) => {
                    tx.prepare_cached(&INSERT_AUDIT)?.execute(params![
                        e.id,
                        e.at,
                        e.actor,
                        e.actor_kind,
                        e.action,
                        e.target,
                        e.params.to_string(),
                        e.outcome,
                        e.reason,
                        e.request_id
                    ])?;
                }
                Write::Hold { hold, active: true } => {
                    tx.prepare_cached(&INSERT_HOLD)?.execute(params![
                        hold.kind.as_str(),
                        hold.target,
                        hold.set_by,
                        hold.set_at
                    ])?;
                }
                Write::Hold { hold, active: false } => {
                    tx.prepare_cached("DELETE FROM holds WHERE kind = ?1 AND target = ?2")?
                        .execute(params![hold.kind.as_str(), hold.target])?;
                }
                Write::Schedule { job_type, cron: Some(c) } => {
                    tx.prepare_cached(&INSERT_SCHEDULE)?.execute(params![
                        job_type,
                        c.cron,
                        c.time_zone,
                        c.set_by,
                        c.set_at,
                        c.last_fired_at
                    ])?;
                }
                Write::Schedule { job_type, cron: None } => {
                    tx.prepare_cached("DELETE FROM schedules WHERE job_type = ?1")?.execute([job_type])?;
                }
                Write::ScheduleFired { job_type, at } => {
                    tx.prepare_cached("UPDATE schedules SET last_fired_at = ?2 WHERE job_type = ?1")?
                        .execute(params![job_type, at])?;
                }
                Write::PruneAudit { up_to_id } => {
                    tx.execute(
                        "INSERT INTO meta (key, value) VALUES ('max_audit_id', (SELECT COALESCE(MAX(id), 0) FROM audit)) \
                         ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)",
                        [],
                    )?;
                    tx.execute("DELETE FROM audit WHERE id <= ?1", [up_to_id])?;
                }
                Write::EventIds { up_to } => {
                    tx.execute(
                        "INSERT INTO meta (key, value) VALUES ('max_event_id', ?1) \
                         ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)",
                        [i64::try_from(up_to).unwrap_or(i64::MAX)],
                    )?;
                }
            }
        }
        insert_jobs(&tx, &new_jobs, blobs)?;
    }
    tx.commit()?;
    Ok(pruned)
}

/// The buffers a job's blobs are encoded into, reused from row to row, and the room its
/// row keeps for its changes.
#[derive(Default)]
pub(super) struct Blobs {
    spec: Vec<u8>,
    status: Vec<u8>,
    budget: rows::RowBudget,
}

/// Inserts `jobs`, in statements of [`INSERT_ROWS`] rows.
pub(super) fn insert_jobs(tx: &Connection, mut jobs: &[&Job], blobs: &mut Blobs) -> rusqlite::Result<()> {
    for (rows, sql) in INSERT_ROWS.iter().zip(INSERT_JOBS.iter()) {
        if jobs.len() < *rows {
            continue;
        }
        let mut insert = tx.prepare_cached(sql)?;
        while jobs.len() >= *rows {
            let (these, rest) = jobs.split_at(*rows);
            for (i, job) in these.iter().enumerate() {
                bind_job(&mut insert, i * rows::JOB_WIDTH, job, blobs)?;
            }
            insert.raw_execute()?;
            jobs = rest;
        }
    }
    Ok(())
}

/// Binds `job`'s row to `insert`'s parameters after the first `offset` (SQLite copies
/// each value as it is bound, so the blobs' buffers are free again at once).
fn bind_job(insert: &mut Statement<'_>, offset: usize, job: &Job, blobs: &mut Blobs) -> rusqlite::Result<()> {
    let s = &job.spec;
    rows::encode_spec(s, &mut blobs.spec);
    rows::encode_status(job, &mut blobs.status);
    blobs.budget.pad(job, &mut blobs.status);
    insert.raw_bind_parameter(offset + 1, job.seq)?;
    insert.raw_bind_parameter(offset + 2, &s.job_type)?;
    insert.raw_bind_parameter(offset + 3, &*s.dedupe_key)?;
    insert.raw_bind_parameter(offset + 4, &*s.summary)?;
    insert.raw_bind_parameter(offset + 5, job.state as i32)?;
    insert.raw_bind_parameter(offset + 6, &*job.error)?;
    insert.raw_bind_parameter(offset + 7, job.updated_at)?;
    insert.raw_bind_parameter(offset + 8, job.completed_at)?;
    insert.raw_bind_parameter(offset + 9, job.dead_letter)?;
    insert.raw_bind_parameter(offset + 10, s.replay_of)?;
    insert.raw_bind_parameter(offset + 11, blobs.spec.as_slice())?;
    insert.raw_bind_parameter(offset + 12, blobs.status.as_slice())
}

/// Deletes old finished jobs (with their attempts), activities and runs; returns the
/// deleted jobs' counts. The newest job id is remembered first, so it is never reused.
fn prune(tx: &rusqlite::Transaction<'_>, before_ms: i64) -> rusqlite::Result<Pruned> {
    let finished = params![JobState::Succeeded as i32, JobState::Failed as i32, JobState::Canceled as i32, before_ms];
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('max_job_seq', (SELECT COALESCE(MAX(seq), 0) FROM jobs)) \
         ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)",
        [],
    )?;
    let report: Pruned = {
        let mut counts = tx.prepare(
            "SELECT job_type, state, COUNT(*) FROM jobs WHERE state IN (?1, ?2, ?3) AND updated_at < ?4 \
             GROUP BY job_type, state",
        )?;
        let rows =
            counts.query_map(finished, |r| Ok(((r.get::<_, String>(0)?, r.get::<_, i32>(1)?), r.get::<_, i64>(2)?)))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    tx.execute(
        "DELETE FROM attempts WHERE job_seq IN (SELECT seq FROM jobs WHERE state IN (?1, ?2, ?3) AND updated_at < ?4)",
        finished,
    )?;
    tx.execute("DELETE FROM jobs WHERE state IN (?1, ?2, ?3) AND updated_at < ?4", finished)?;
    tx.execute("DELETE FROM activities WHERE created_at < ?1", [before_ms])?;
    tx.execute("DELETE FROM runs WHERE ended_at > 0 AND ended_at < ?1", [before_ms])?;
    Ok(report)
}
