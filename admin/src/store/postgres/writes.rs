//! Applying one coalesced batch to PostgreSQL in one transaction, with prepared
//! statements cached on the connection. With a fence epoch the transaction first takes a
//! share lock on the lease row and checks its epoch (see [`super::fence_check`]).

use std::sync::LazyLock;

use proto::pb::JobState;
use tokio_postgres::types::ToSql;

use super::{Conn, Failure, fence_check};
use crate::store::backend::{Pruned, Write};
use crate::store::columns;

/// Every insert is an upsert ([`columns::Table::upsert`]).
static INSERT_JOB: LazyLock<String> = LazyLock::new(|| columns::JOBS.upsert('$'));
static ATTEMPT: LazyLock<String> = LazyLock::new(|| columns::ATTEMPTS.upsert('$'));
static ACTIVITY: LazyLock<String> = LazyLock::new(|| columns::ACTIVITIES.upsert('$'));
static RUN: LazyLock<String> = LazyLock::new(|| columns::RUNS.upsert('$'));
static AUDIT: LazyLock<String> = LazyLock::new(|| columns::AUDIT.upsert('$'));
static HOLD_SET: LazyLock<String> = LazyLock::new(|| columns::HOLDS.upsert('$'));
static SCHEDULE_SET: LazyLock<String> = LazyLock::new(|| columns::SCHEDULES.upsert('$'));

const UPDATE_JOB: &str = "UPDATE jobs SET state = $2, attempts = $3, attempts_total = $4, worker_id = $5, \
     request_id = $6, progress = $7, stage = $8, message = $9, error = $10, result_summary = $11, result = $12, \
     updated_at = $13, ready_at = $14, assigned_at = $15, completed_at = $16, dead_letter = $17, failed_on = $18, \
     stop_outcome = $19, stop_reason = $20 WHERE seq = $1";

const HOLD_LIFT: &str = "DELETE FROM holds WHERE kind = $1 AND target = $2";

const SCHEDULE_DELETE: &str = "DELETE FROM schedules WHERE job_type = $1";

const SCHEDULE_FIRED: &str = "UPDATE schedules SET last_fired_at = $2 WHERE job_type = $1";

/// Remembers a counter in `meta` unless a higher value is remembered already.
const META_MAX: &str = "INSERT INTO meta (key, value) VALUES ($1, $2) \
     ON CONFLICT (key) DO UPDATE SET value = GREATEST(meta.value, EXCLUDED.value)";

const MAX_AUDIT_ID: &str = "SELECT COALESCE(MAX(id), 0)::bigint FROM audit";
const PRUNE_AUDIT: &str = "DELETE FROM audit WHERE id <= $1";
const MAX_JOB_SEQ: &str = "SELECT COALESCE(MAX(seq), 0)::bigint FROM jobs";
const FINISHED: &str = "state IN ($1, $2, $3) AND updated_at < $4";

/// Writes one batch in one transaction and commits it. Returns what each prune deleted,
/// in batch order. On error the transaction is rolled back before this returns (its locks,
/// the lease row's included, are not held while the writer waits to retry). With
/// `fence`, nothing is written unless the lease's epoch is `fence` (then
/// [`Failure::Fenced`]).
pub(super) async fn apply(conn: &mut Conn, writes: &[Write<'_>], fence: Option<i64>) -> Result<Vec<Pruned>, Failure> {
    let Conn { client, statements } = conn;
    let tx = client.transaction().await?;
    match write_all(&tx, statements, writes, fence).await {
        Ok(pruned) => {
            tx.commit().await?;
            Ok(pruned)
        }
        Err(e) => {
            // Best effort: on a broken connection the server rolls back by itself.
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

async fn write_all(
    tx: &tokio_postgres::Transaction<'_>,
    statements: &mut super::Statements,
    writes: &[Write<'_>],
    fence: Option<i64>,
) -> Result<Vec<Pruned>, Failure> {
    if let Some(held) = fence {
        fence_check(tx, Some(statements), held).await?;
    }
    let mut pruned = Vec::new();
    for group in writes.chunk_by(|a, b| row_sql(a).is_some() == row_sql(b).is_some()) {
        if row_sql(&group[0]).is_some() {
            write_rows(tx, statements, group).await?;
            continue;
        }
        for write in group {
            match *write {
                // Not in this group (see `row_sql`); here for the match to be whole.
                Write::InsertJob(_)
                | Write::UpdateJob(_)
                | Write::Attempt { .. }
                | Write::Activity(_)
                | Write::Run(_) => write_rows(tx, statements, std::slice::from_ref(write)).await?,
                Write::Prune { before_ms } => pruned.push(prune(tx, statements, before_ms).await?),
                Write::Audit(e) => {
                    let stmt = statements.get_tx(tx, &AUDIT).await?;
                    let params = e.params.to_string();
                    tx.execute(
                        &stmt,
                        &[
                            &e.id,
                            &e.at,
                            &e.actor,
                            &e.actor_kind,
                            &e.action,
                            &e.target,
                            &params,
                            &e.outcome,
                            &e.reason,
                            &e.request_id,
                        ],
                    )
                    .await?;
                }
                Write::Hold { hold, active: true } => {
                    let stmt = statements.get_tx(tx, &HOLD_SET).await?;
                    tx.execute(&stmt, &[&hold.kind.as_str(), &hold.target, &hold.set_by, &hold.set_at]).await?;
                }
                Write::Hold { hold, active: false } => {
                    let stmt = statements.get_tx(tx, HOLD_LIFT).await?;
                    tx.execute(&stmt, &[&hold.kind.as_str(), &hold.target]).await?;
                }
                Write::Schedule { job_type, cron: Some(c) } => {
                    let stmt = statements.get_tx(tx, &SCHEDULE_SET).await?;
                    tx.execute(&stmt, &[&job_type, &c.cron, &c.time_zone, &c.set_by, &c.set_at, &c.last_fired_at])
                        .await?;
                }
                Write::Schedule { job_type, cron: None } => {
                    let stmt = statements.get_tx(tx, SCHEDULE_DELETE).await?;
                    tx.execute(&stmt, &[&job_type]).await?;
                }
                Write::ScheduleFired { job_type, at } => {
                    let stmt = statements.get_tx(tx, SCHEDULE_FIRED).await?;
                    tx.execute(&stmt, &[&job_type, &at]).await?;
                }
                Write::PruneAudit { up_to_id } => {
                    let max = statements.get_tx(tx, MAX_AUDIT_ID).await?;
                    let max: i64 = tx.query_one(&max, &[]).await?.try_get(0)?;
                    let remember = statements.get_tx(tx, META_MAX).await?;
                    tx.execute(&remember, &[&"max_audit_id", &max]).await?;
                    let delete = statements.get_tx(tx, PRUNE_AUDIT).await?;
                    tx.execute(&delete, &[&up_to_id]).await?;
                }
                Write::EventIds { up_to } => {
                    let stmt = statements.get_tx(tx, META_MAX).await?;
                    tx.execute(&stmt, &[&"max_event_id", &i64::try_from(up_to).unwrap_or(i64::MAX)]).await?;
                }
            }
        }
    }
    Ok(pruned)
}

/// The statement of a write that is one row of a job, an attempt, an activity or a run:
/// the writes [`write_rows`] sends pipelined. None for the others.
fn row_sql(write: &Write<'_>) -> Option<&'static str> {
    Some(match write {
        Write::InsertJob(_) => &INSERT_JOB,
        Write::UpdateJob(_) => UPDATE_JOB,
        Write::Attempt { .. } => &ATTEMPT,
        Write::Activity(_) => &ACTIVITY,
        Write::Run(_) => &RUN,
        _ => return None,
    })
}

/// Rows sent before their answers are awaited: a window bounds the memory of a large
/// batch (each row waits as an encoded message and a future) to about a megabyte.
pub(super) const ROW_WINDOW: usize = 1024;

/// Writes rows of jobs, attempts, activities and runs pipelined, a window at a time: every
/// statement of a window goes to the server before the first answer is awaited, so a
/// window costs about one round trip instead of one per row (a batch of thousands of jobs
/// took seconds one by one), plus one to prepare a statement not yet prepared on the
/// connection. The server runs them in the order sent (`try_join_all` first polls, and so
/// sends, in order), as the rows were written one by one before; the first one it refuses
/// fails the transaction, and its error is the one returned (the answers are read in
/// order), not the "transaction is aborted" of the rows after it.
async fn write_rows(
    tx: &tokio_postgres::Transaction<'_>,
    statements: &mut super::Statements,
    writes: &[Write<'_>],
) -> Result<(), Failure> {
    for window in writes.chunks(ROW_WINDOW) {
        let mut sends = Vec::with_capacity(window.len());
        for write in window {
            let Some(sql) = row_sql(write) else { continue };
            if let Write::Attempt { attempt, .. } = write
                && columns::implied_by_job_row(attempt)
            {
                continue;
            }
            let stmt = statements.get_tx(tx, sql).await?;
            sends.push(write_row(tx, stmt, *write));
        }
        futures_util::future::try_join_all(sends).await?;
    }
    Ok(())
}

/// Sends one row's statement (when first polled) and waits for its answer.
async fn write_row(
    tx: &tokio_postgres::Transaction<'_>,
    stmt: tokio_postgres::Statement,
    write: Write<'_>,
) -> Result<u64, tokio_postgres::Error> {
    match write {
        Write::InsertJob(job) => {
            let s = &job.spec;
            let payload = columns::spec_payload(s);
            let result = columns::result_bytes(job);
            let failed_on = columns::encode_failed_on(&job.failed_on);
            let (stop_outcome, stop_reason) = columns::stop_columns(job);
            let context = columns::context_bytes(s);
            let state = job.state as i32;
            let params: [&(dyn ToSql + Sync); 32] = [
                &job.seq,
                &s.job_type,
                &s.dedupe_key,
                &s.priority,
                &s.summary,
                &s.detail,
                &payload,
                &s.created_at,
                &s.not_before,
                &s.expires_at,
                &s.detection_run,
                &state,
                &job.attempts,
                &job.attempts_total,
                &job.worker_id,
                &job.request_id,
                &job.progress,
                &job.stage,
                &job.message,
                &job.error,
                &job.result_summary,
                &result,
                &job.updated_at,
                &job.ready_at,
                &job.assigned_at,
                &job.completed_at,
                &job.dead_letter,
                &failed_on,
                &stop_outcome,
                &stop_reason,
                &s.replay_of,
                &context,
            ];
            tx.execute(&stmt, &params).await
        }
        Write::UpdateJob(job) => {
            let result = columns::result_bytes(job);
            let failed_on = columns::encode_failed_on(&job.failed_on);
            let (stop_outcome, stop_reason) = columns::stop_columns(job);
            let state = job.state as i32;
            let params: [&(dyn ToSql + Sync); 20] = [
                &job.seq,
                &state,
                &job.attempts,
                &job.attempts_total,
                &job.worker_id,
                &job.request_id,
                &job.progress,
                &job.stage,
                &job.message,
                &job.error,
                &job.result_summary,
                &result,
                &job.updated_at,
                &job.ready_at,
                &job.assigned_at,
                &job.completed_at,
                &job.dead_letter,
                &failed_on,
                &stop_outcome,
                &stop_reason,
            ];
            tx.execute(&stmt, &params).await
        }
        Write::Attempt { job_seq, attempt: a } => {
            tx.execute(
                &stmt,
                &[
                    &job_seq,
                    &a.attempt,
                    &a.worker_id,
                    &a.request_id,
                    &a.started_at,
                    &a.ended_at,
                    &a.outcome,
                    &a.error_message,
                ],
            )
            .await
        }
        Write::Activity(a) => {
            tx.execute(&stmt, &[&a.id, &a.created_at, &a.job_type, &a.job_id, &a.source, &a.stage, &a.message]).await
        }
        Write::Run(r) => {
            tx.execute(
                &stmt,
                &[
                    &r.id,
                    &r.job_type,
                    &r.kind,
                    &r.job_id,
                    &r.worker_id,
                    &r.started_at,
                    &r.ended_at,
                    &r.success,
                    &r.message,
                    &r.proposals,
                    &r.jobs_created,
                ],
            )
            .await
        }
        _ => Ok(0),
    }
}

/// Deletes old finished jobs (with their attempts), activities and runs; returns the
/// deleted jobs' counts. The newest job id is remembered first, so it is never reused.
async fn prune(
    tx: &tokio_postgres::Transaction<'_>,
    statements: &mut super::Statements,
    before_ms: i64,
) -> Result<Pruned, tokio_postgres::Error> {
    let (succeeded, failed, canceled) =
        (JobState::Succeeded as i32, JobState::Failed as i32, JobState::Canceled as i32);
    let finished: [&(dyn ToSql + Sync); 4] = [&succeeded, &failed, &canceled, &before_ms];
    let max = statements.get_tx(tx, MAX_JOB_SEQ).await?;
    let max: i64 = tx.query_one(&max, &[]).await?.try_get(0)?;
    let remember = statements.get_tx(tx, META_MAX).await?;
    tx.execute(&remember, &[&"max_job_seq", &max]).await?;
    let counts = statements
        .get_tx(tx, &format!("SELECT job_type, state, COUNT(*) FROM jobs WHERE {FINISHED} GROUP BY job_type, state"))
        .await?;
    let mut report = Pruned::new();
    for row in tx.query(&counts, &finished).await? {
        report.insert((row.try_get(0)?, row.try_get(1)?), row.try_get(2)?);
    }
    let attempts = statements
        .get_tx(tx, &format!("DELETE FROM attempts WHERE job_seq IN (SELECT seq FROM jobs WHERE {FINISHED})"))
        .await?;
    tx.execute(&attempts, &finished).await?;
    let jobs = statements.get_tx(tx, &format!("DELETE FROM jobs WHERE {FINISHED}")).await?;
    tx.execute(&jobs, &finished).await?;
    let activities = statements.get_tx(tx, "DELETE FROM activities WHERE created_at < $1").await?;
    tx.execute(&activities, &[&before_ms]).await?;
    let runs = statements.get_tx(tx, "DELETE FROM runs WHERE ended_at > 0 AND ended_at < $1").await?;
    tx.execute(&runs, &[&before_ms]).await?;
    Ok(report)
}
