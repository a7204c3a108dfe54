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
static ATTEMPT: LazyLock<String> = LazyLock::new(|| columns::ATTEMPTS.upsert('$'));
static ACTIVITY: LazyLock<String> = LazyLock::new(|| columns::ACTIVITIES.upsert('$'));
static RUN: LazyLock<String> = LazyLock::new(|| columns::RUNS.upsert('$'));
static AUDIT: LazyLock<String> = LazyLock::new(|| columns::AUDIT.upsert('$'));
static HOLD_SET: LazyLock<String> = LazyLock::new(|| columns::HOLDS.upsert('$'));
static SCHEDULE_SET: LazyLock<String> = LazyLock::new(|| columns::SCHEDULES.upsert('$'));

/// The jobs' columns' types, in [`columns::JOBS`]' order, for the arrays a run of new
/// jobs is inserted from (see [`JobColumns`]).
const JOB_TYPES: [&str; 32] = [
    "bigint",
    "text",
    "text",
    "integer",
    "text",
    "text",
    "bytea",
    "bigint",
    "bigint",
    "bigint",
    "bigint",
    "integer",
    "integer",
    "integer",
    "text",
    "text",
    "double precision",
    "text",
    "text",
    "text",
    "text",
    "bytea",
    "bigint",
    "bigint",
    "bigint",
    "bigint",
    "boolean",
    "text",
    "integer",
    "text",
    "bigint",
    "bytea",
];

/// Where the columns a change overwrites (`state` to `stop_reason`) sit in
/// [`columns::JOBS`]: what [`UPDATE_JOBS`] sets and [`JobColumns::mutable_columns`] holds.
const MUTABLE: std::ops::Range<usize> = 11..30;

/// Inserts (or replaces) a run of jobs from one array per column.
static INSERT_JOBS: LazyLock<String> = LazyLock::new(|| {
    let arrays: Vec<String> = JOB_TYPES.iter().enumerate().map(|(i, t)| format!("${}::{t}[]", i + 1)).collect();
    columns::JOBS.upsert_from(&format!("SELECT * FROM unnest({})", arrays.join(", ")))
});

/// Overwrites the mutable part of a run of jobs (every column from `state` to
/// `stop_reason`) from one array per column.
static UPDATE_JOBS: LazyLock<String> = LazyLock::new(|| {
    let names = columns::JOBS.columns.split(',').map(str::trim).collect::<Vec<_>>();
    let mutable: Vec<(usize, &str)> = names.iter().copied().enumerate().take(MUTABLE.end).skip(MUTABLE.start).collect();
    let arrays: Vec<String> = std::iter::once(format!("$1::{}[]", JOB_TYPES[0]))
        .chain(mutable.iter().enumerate().map(|(n, (i, _))| format!("${}::{}[]", n + 2, JOB_TYPES[*i])))
        .collect();
    let set: Vec<String> = mutable.iter().map(|(_, c)| format!("{c} = u.{c}")).collect();
    let aliases: Vec<&str> = std::iter::once("seq").chain(mutable.iter().map(|(_, c)| *c)).collect();
    format!(
        "UPDATE jobs SET {} FROM unnest({}) AS u({}) WHERE jobs.seq = u.seq",
        set.join(", "),
        arrays.join(", "),
        aliases.join(", ")
    )
});

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
    for group in writes.chunk_by(|a, b| is_row(a) == is_row(b)) {
        if is_row(&group[0]) {
            write_rows(tx, statements, group).await?;
            continue;
        }
        for write in group {
            match *write {
                // Not in this group (see `is_row`); here for the match to be whole.
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

/// Whether a write is a row of a job, an attempt, an activity or a run: the writes
/// [`write_rows`] sends together.
fn is_row(write: &Write<'_>) -> bool {
    matches!(
        write,
        Write::InsertJob(_) | Write::UpdateJob(_) | Write::Attempt { .. } | Write::Activity(_) | Write::Run(_)
    )
}

/// The statement of a row of an attempt, an activity or a run.
fn row_sql(write: &Write<'_>) -> Option<&'static str> {
    Some(match write {
        Write::Attempt { .. } => &ATTEMPT,
        Write::Activity(_) => &ACTIVITY,
        Write::Run(_) => &RUN,
        _ => return None,
    })
}

/// Rows sent before their answers are awaited: a window bounds the memory of a large
/// batch (each row waits as an encoded message and a future) to about a megabyte.
pub(super) const ROW_WINDOW: usize = 1024;

/// Writes rows of jobs, attempts, activities and runs, a window at a time. A window's new
/// jobs go in one statement and its changed jobs in another, each from one array per
/// column (`unnest`), and every other row in a statement of its own; all of them go to
/// the server before the first answer is awaited, so a window costs about one round trip
/// (plus one to prepare a statement not yet prepared on the connection), and the server
/// runs a statement per window rather than per job. The jobs are written first: a
/// coalesced batch writes each job once, in no relation to the other rows, whose order
/// is kept (a run may be written twice in a batch, its end after its start). The first
/// statement the server refuses fails the transaction, and its error is the one returned
/// (`try_join_all` sends in order and reads the answers in order), not the "transaction
/// is aborted" of the statements after it.
async fn write_rows(
    tx: &tokio_postgres::Transaction<'_>,
    statements: &mut super::Statements,
    writes: &[Write<'_>],
) -> Result<(), Failure> {
    for window in writes.chunks(ROW_WINDOW) {
        let (mut inserted, mut updated) = (JobColumns::default(), JobColumns::default());
        let mut sends = Vec::with_capacity(window.len());
        for write in window {
            match write {
                Write::InsertJob(job) => inserted.push(job, true),
                Write::UpdateJob(job) => updated.push(job, false),
                Write::Attempt { attempt, .. } if columns::implied_by_job_row(attempt) => {}
                _ => {
                    let Some(sql) = row_sql(write) else { continue };
                    let stmt = statements.get_tx(tx, sql).await?;
                    sends.push(write_row(tx, stmt, *write));
                }
            }
        }
        let insert = match inserted.seq.is_empty() {
            true => None,
            false => Some(statements.get_tx(tx, &INSERT_JOBS).await?),
        };
        let update = match updated.seq.is_empty() {
            true => None,
            false => Some(statements.get_tx(tx, &UPDATE_JOBS).await?),
        };
        let insert = async {
            match &insert {
                Some(stmt) => tx.execute(stmt, &inserted.all()).await,
                None => Ok(0),
            }
        };
        let update = async {
            match &update {
                Some(stmt) => tx.execute(stmt, &updated.mutable()).await,
                None => Ok(0),
            }
        };
        futures_util::future::try_join3(insert, update, futures_util::future::try_join_all(sends)).await?;
    }
    Ok(())
}

/// Jobs column by column, each column an array parameter of [`INSERT_JOBS`] or
/// [`UPDATE_JOBS`]. The spec's columns are filled only for jobs to insert.
#[derive(Default)]
struct JobColumns<'a> {
    seq: Vec<i64>,
    job_type: Vec<&'a str>,
    dedupe_key: Vec<&'a str>,
    priority: Vec<i32>,
    summary: Vec<&'a str>,
    detail: Vec<&'a str>,
    payload: Vec<Vec<u8>>,
    created_at: Vec<i64>,
    not_before: Vec<i64>,
    expires_at: Vec<i64>,
    detection_run: Vec<i64>,
    state: Vec<i32>,
    attempts: Vec<i32>,
    attempts_total: Vec<i32>,
    worker_id: Vec<&'a str>,
    request_id: Vec<&'a str>,
    progress: Vec<f64>,
    stage: Vec<&'a str>,
    message: Vec<&'a str>,
    error: Vec<&'a str>,
    result_summary: Vec<&'a str>,
    result: Vec<Vec<u8>>,
    updated_at: Vec<i64>,
    ready_at: Vec<i64>,
    assigned_at: Vec<i64>,
    completed_at: Vec<i64>,
    dead_letter: Vec<bool>,
    failed_on: Vec<String>,
    stop_outcome: Vec<i32>,
    stop_reason: Vec<&'a str>,
    replay_of: Vec<i64>,
    cluster_context: Vec<Vec<u8>>,
}

impl<'a> JobColumns<'a> {
    fn push(&mut self, job: &'a crate::job::Job, with_spec: bool) {
        self.seq.push(job.seq);
        if with_spec {
            let s = &job.spec;
            self.job_type.push(&s.job_type);
            self.dedupe_key.push(&s.dedupe_key);
            self.priority.push(s.priority);
            self.summary.push(&s.summary);
            self.detail.push(&s.detail);
            self.payload.push(columns::spec_payload(s));
            self.created_at.push(s.created_at);
            self.not_before.push(s.not_before);
            self.expires_at.push(s.expires_at);
            self.detection_run.push(s.detection_run);
            self.replay_of.push(s.replay_of);
            self.cluster_context.push(columns::context_bytes(s));
        }
        let (stop_outcome, stop_reason) = columns::stop_columns(job);
        self.state.push(job.state as i32);
        self.attempts.push(job.attempts);
        self.attempts_total.push(job.attempts_total);
        self.worker_id.push(&job.worker_id);
        self.request_id.push(&job.request_id);
        self.progress.push(job.progress);
        self.stage.push(&job.stage);
        self.message.push(&job.message);
        self.error.push(&job.error);
        self.result_summary.push(&job.result_summary);
        self.result.push(columns::result_bytes(job));
        self.updated_at.push(job.updated_at);
        self.ready_at.push(job.ready_at);
        self.assigned_at.push(job.assigned_at);
        self.completed_at.push(job.completed_at);
        self.dead_letter.push(job.dead_letter);
        self.failed_on.push(columns::encode_failed_on(&job.failed_on));
        self.stop_outcome.push(stop_outcome);
        self.stop_reason.push(stop_reason);
    }

    /// The parameters of [`INSERT_JOBS`]: every column, in [`columns::JOBS`]' order (the
    /// spec's first eleven, the columns a change overwrites, the spec's last two).
    fn all(&self) -> [&(dyn ToSql + Sync); 32] {
        let mut all = [&self.seq as &(dyn ToSql + Sync); 32];
        all[1..MUTABLE.start].copy_from_slice(&[
            &self.job_type as &(dyn ToSql + Sync),
            &self.dedupe_key,
            &self.priority,
            &self.summary,
            &self.detail,
            &self.payload,
            &self.created_at,
            &self.not_before,
            &self.expires_at,
            &self.detection_run,
        ]);
        all[MUTABLE].copy_from_slice(&self.mutable_columns());
        all[MUTABLE.end..].copy_from_slice(&[&self.replay_of as &(dyn ToSql + Sync), &self.cluster_context]);
        all
    }

    /// The parameters of [`UPDATE_JOBS`]: the key, then the columns a change overwrites.
    fn mutable(&self) -> [&(dyn ToSql + Sync); 20] {
        let mut all = [&self.seq as &(dyn ToSql + Sync); 20];
        all[1..].copy_from_slice(&self.mutable_columns());
        all
    }

    /// The columns a change overwrites, in [`columns::JOBS`]' order.
    fn mutable_columns(&self) -> [&(dyn ToSql + Sync); 19] {
        [
            &self.state,
            &self.attempts,
            &self.attempts_total,
            &self.worker_id,
            &self.request_id,
            &self.progress,
            &self.stage,
            &self.message,
            &self.error,
            &self.result_summary,
            &self.result,
            &self.updated_at,
            &self.ready_at,
            &self.assigned_at,
            &self.completed_at,
            &self.dead_letter,
            &self.failed_on,
            &self.stop_outcome,
            &self.stop_reason,
        ]
    }
}

/// Sends one row's statement (when first polled) and waits for its answer.
async fn write_row(
    tx: &tokio_postgres::Transaction<'_>,
    stmt: tokio_postgres::Statement,
    write: Write<'_>,
) -> Result<u64, tokio_postgres::Error> {
    match write {
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
