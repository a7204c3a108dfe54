//! Reading PostgreSQL: the load at start, the history and listing queries, and mapping
//! rows back to the admin's types. Each query is a prepared statement cached on its
//! connection.

use std::{collections::HashMap, sync::Arc};

use prost::Message;
use proto::pb::{self, JobState};
use tokio_postgres::{Error, Row, types::ToSql};

use super::{Conn, schema::JOB_COLUMNS};
use crate::store::columns;
use crate::{
    audit::{AuditEvent, AuditQuery},
    holds::{Hold, HoldKind},
    job::{ATTEMPT_SUCCEEDED, ActivityView, AttemptView, Job, JobSpecData, JobView, RunView},
    schedules::CronSchedule,
    store::backend::{FinishedJob, JobQuery, Loaded, counts_with_succeeded},
};

/// A query's parameters, built up with its SQL.
type Args = Vec<Box<dyn ToSql + Sync + Send>>;

fn refs(args: &Args) -> Vec<&(dyn ToSql + Sync)> {
    args.iter().map(|a| a.as_ref() as &(dyn ToSql + Sync)).collect()
}

impl Conn {
    async fn rows(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, Error> {
        let stmt = self.statements.get(&self.client, sql).await?;
        self.client.query(&stmt, params).await
    }

    async fn row(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>, Error> {
        let stmt = self.statements.get(&self.client, sql).await?;
        self.client.query_opt(&stmt, params).await
    }

    async fn scalar(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<i64, Error> {
        let stmt = self.statements.get(&self.client, sql).await?;
        self.client.query_one(&stmt, params).await?.try_get(0)
    }
}

/// What the admin needs to resume: the jobs that are not final, the counts per
/// (job_type, state), and the next free ids.
pub(super) async fn load(c: &mut Conn) -> Result<Loaded, Error> {
    let (pending, assigned, running) = (JobState::Pending as i32, JobState::Assigned as i32, JobState::Running as i32);
    let sql = format!(
        concat!("SELECT {} FROM jobs WHERE state IN ($1, $2, $3) AND ", not_succeeded!(), " ORDER BY seq"),
        JOB_COLUMNS
    );
    let active =
        c.rows(&sql, &[&pending, &assigned, &running]).await?.iter().map(row_to_job).collect::<Result<_, _>>()?;
    // The jobs per type (from `jobs_by_type`) and in each state but SUCCEEDED (from
    // `jobs_open`): no index covers every state.
    let mut per_type = HashMap::new();
    for r in c.rows("SELECT job_type, COUNT(*) FROM jobs GROUP BY job_type", &[]).await? {
        per_type.insert(r.try_get(0)?, r.try_get(1)?);
    }
    let mut others = HashMap::new();
    let sql =
        concat!("SELECT job_type, state, COUNT(*) FROM jobs WHERE ", not_succeeded!(), " GROUP BY job_type, state");
    for r in c.rows(sql, &[]).await? {
        others.insert((r.try_get(0)?, r.try_get(1)?), r.try_get(2)?);
    }
    let counts = counts_with_succeeded(per_type, others);
    let max_job_seq = c.scalar("SELECT COALESCE(MAX(seq), 0)::bigint FROM jobs", &[]).await?;
    let max_activity = c.scalar("SELECT COALESCE(MAX(id), 0)::bigint FROM activities", &[]).await?;
    let max_run = c.scalar("SELECT COALESCE(MAX(id), 0)::bigint FROM runs", &[]).await?;
    let max_audit = c.scalar("SELECT COALESCE(MAX(id), 0)::bigint FROM audit", &[]).await?;
    Ok(Loaded {
        // Pruning may have deleted the newest jobs; their ids are never handed out again.
        next_job_seq: max_job_seq.max(meta(c, "max_job_seq").await?) + 1,
        next_activity_id: max_activity + 1,
        next_run_id: max_run + 1,
        max_event_id: u64::try_from(meta(c, "max_event_id").await?).unwrap_or(0),
        next_audit_id: max_audit.max(meta(c, "max_audit_id").await?) + 1,
        holds: holds(c).await?,
        schedules: schedules(c).await?,
        active,
        counts,
    })
}

async fn meta(c: &mut Conn, key: &str) -> Result<i64, Error> {
    match c.row("SELECT value FROM meta WHERE key = $1", &[&key]).await? {
        Some(r) => r.try_get(0),
        None => Ok(0),
    }
}

async fn holds(c: &mut Conn) -> Result<Vec<Hold>, Error> {
    let mut out = Vec::new();
    for r in c.rows("SELECT kind, target, set_by, set_at FROM holds ORDER BY kind, target", &[]).await? {
        let kind: String = r.try_get(0)?;
        match HoldKind::parse(&kind) {
            Some(k) => out.push(Hold { kind: k, target: r.try_get(1)?, set_by: r.try_get(2)?, set_at: r.try_get(3)? }),
            None => tracing::warn!(kind, "a stored hold of an unknown kind is ignored"),
        }
    }
    Ok(out)
}

async fn schedules(c: &mut Conn) -> Result<Vec<CronSchedule>, Error> {
    let sql = "SELECT job_type, cron, time_zone, set_by, set_at, last_fired_at FROM schedules ORDER BY job_type";
    c.rows(sql, &[])
        .await?
        .iter()
        .map(|r| {
            Ok(CronSchedule {
                job_type: r.try_get(0)?,
                cron: r.try_get(1)?,
                time_zone: r.try_get(2)?,
                set_by: r.try_get(3)?,
                set_at: r.try_get(4)?,
                last_fired_at: r.try_get(5)?,
            })
        })
        .collect()
}

/// `%text%` for `ILIKE`, with the text's wildcards taken literally.
fn like_pattern(text: &str) -> String {
    let escaped = text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    format!("%{escaped}%")
}

/// The WHERE clause and its arguments for an audit query (paging aside).
fn audit_where(q: &AuditQuery, args: &mut Args) -> String {
    let mut sql = String::from(" WHERE TRUE");
    for (col, v) in [("action", &q.action), ("target", &q.target), ("actor", &q.actor), ("outcome", &q.outcome)] {
        if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
            args.push(Box::new(v.clone()));
            sql.push_str(&format!(" AND {col} = ${}", args.len()));
        }
    }
    if let Some(since) = q.since {
        args.push(Box::new(since));
        sql.push_str(&format!(" AND at >= ${}", args.len()));
    }
    if let Some(until) = q.until {
        args.push(Box::new(until));
        sql.push_str(&format!(" AND at < ${}", args.len()));
    }
    sql
}

const AUDIT_COLUMNS: &str = "id, at, actor, actor_kind, action, target, params, outcome, reason, request_id";

fn row_to_audit(r: &Row) -> Result<AuditEvent, Error> {
    let params: String = r.try_get(6)?;
    Ok(AuditEvent {
        id: r.try_get(0)?,
        at: r.try_get(1)?,
        actor: r.try_get(2)?,
        actor_kind: r.try_get(3)?,
        action: r.try_get(4)?,
        target: r.try_get(5)?,
        params: serde_json::from_str(&params).unwrap_or(serde_json::Value::Null),
        outcome: r.try_get(7)?,
        reason: r.try_get(8)?,
        request_id: r.try_get(9)?,
    })
}

pub(super) async fn audit(c: &mut Conn, q: &AuditQuery) -> Result<Vec<AuditEvent>, Error> {
    let mut args = Args::new();
    let mut sql = format!("SELECT {AUDIT_COLUMNS} FROM audit{}", audit_where(q, &mut args));
    if let Some(b) = q.before_id {
        args.push(Box::new(b));
        sql.push_str(&format!(" AND id < ${}", args.len()));
    }
    args.push(Box::new(q.page_size() as i64));
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", args.len()));
    c.rows(&sql, &refs(&args)).await?.iter().map(row_to_audit).collect()
}

pub(super) async fn audit_count(c: &mut Conn, q: &AuditQuery) -> Result<i64, Error> {
    let mut args = Args::new();
    let sql = format!("SELECT COUNT(*) FROM audit{}", audit_where(q, &mut args));
    c.scalar(&sql, &refs(&args)).await
}

pub(super) async fn audit_oldest(c: &mut Conn, after: i64, up_to: i64, limit: usize) -> Result<Vec<AuditEvent>, Error> {
    let sql = format!("SELECT {AUDIT_COLUMNS} FROM audit WHERE id > $1 AND id <= $2 ORDER BY id LIMIT $3");
    c.rows(&sql, &[&after, &up_to, &(limit as i64)]).await?.iter().map(row_to_audit).collect()
}

pub(super) async fn audit_cutoff(
    c: &mut Conn,
    before_ms: Option<i64>,
    keep: Option<i64>,
) -> Result<Option<(i64, i64)>, Error> {
    let mut cutoff: Option<i64> = None;
    if let Some(before) = before_ms {
        let id: Option<i64> = match c.row("SELECT MAX(id) FROM audit WHERE at < $1", &[&before]).await? {
            Some(r) => r.try_get(0)?,
            None => None,
        };
        cutoff = cutoff.max(id);
    }
    if let Some(keep) = keep {
        // The id of the newest event beyond the `keep` newest ones.
        let id: Option<i64> = match c.row("SELECT id FROM audit ORDER BY id DESC LIMIT 1 OFFSET $1", &[&keep]).await? {
            Some(r) => Some(r.try_get(0)?),
            None => None,
        };
        cutoff = cutoff.max(id);
    }
    let Some(up_to) = cutoff else { return Ok(None) };
    let count = c.scalar("SELECT COUNT(*) FROM audit WHERE id <= $1", &[&up_to]).await?;
    Ok((count > 0).then_some((up_to, count)))
}

pub(super) async fn dead_letters(c: &mut Conn) -> Result<Vec<(String, i64)>, Error> {
    let sql = "SELECT job_type, COUNT(*) FROM jobs WHERE dead_letter GROUP BY job_type ORDER BY job_type";
    c.rows(sql, &[]).await?.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
}

pub(super) async fn replayed_as(c: &mut Conn, seq: i64) -> Result<Option<i64>, Error> {
    match c.row("SELECT MAX(seq) FROM jobs WHERE replay_of = $1 AND replay_of > 0", &[&seq]).await? {
        Some(r) => r.try_get(0),
        None => Ok(None),
    }
}

pub(super) async fn newest_with_keys(
    c: &mut Conn,
    job_type: &str,
    after_seq: i64,
    keys: &[String],
) -> Result<HashMap<String, i64>, Error> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = "SELECT dedupe_key, MAX(seq) FROM jobs WHERE job_type = $1 AND seq > $2 AND dedupe_key = ANY($3) \
               GROUP BY dedupe_key";
    c.rows(sql, &[&job_type, &after_seq, &keys]).await?.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
}

pub(super) async fn job(c: &mut Conn, seq: i64) -> Result<Option<Job>, Error> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE seq = $1");
    c.row(&sql, &[&seq]).await?.as_ref().map(row_to_job).transpose()
}

pub(super) async fn jobs(c: &mut Conn, q: &JobQuery) -> Result<Vec<JobView>, Error> {
    let mut sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE TRUE");
    let mut args = Args::new();
    if let Some(t) = &q.job_type {
        args.push(Box::new(t.clone()));
        sql.push_str(&format!(" AND job_type = ${}", args.len()));
    }
    if let Some(s) = q.state {
        args.push(Box::new(s as i32));
        sql.push_str(&format!(" AND state = ${}", args.len()));
        if s != JobState::Succeeded {
            sql.push_str(concat!(" AND ", not_succeeded!()));
        }
    }
    if let Some(d) = q.dead_letter {
        args.push(Box::new(d));
        sql.push_str(&format!(" AND dead_letter = ${}", args.len()));
    }
    if let Some(text) = q.error_contains.as_ref().filter(|t| !t.is_empty()) {
        args.push(Box::new(like_pattern(text)));
        sql.push_str(&format!(" AND error ILIKE ${} ESCAPE '\\'", args.len()));
    }
    if let Some(since) = q.completed_since {
        args.push(Box::new(since));
        sql.push_str(&format!(" AND completed_at >= ${}", args.len()));
    }
    if let Some(until) = q.completed_until {
        args.push(Box::new(until));
        sql.push_str(&format!(" AND completed_at < ${}", args.len()));
    }
    if let Some(text) = q.text.as_ref().filter(|t| !t.is_empty()) {
        args.push(Box::new(like_pattern(text)));
        let n = args.len();
        sql.push_str(&format!(
            " AND (summary ILIKE ${n} ESCAPE '\\' OR dedupe_key ILIKE ${n} ESCAPE '\\' \
             OR ('j' || seq) ILIKE ${n} ESCAPE '\\')"
        ));
    }
    if let Some(b) = q.before_seq {
        args.push(Box::new(b));
        sql.push_str(&format!(" AND seq < ${}", args.len()));
    }
    args.push(Box::new(q.page_size() as i64));
    sql.push_str(&format!(" ORDER BY seq DESC LIMIT ${}", args.len()));
    c.rows(&sql, &refs(&args)).await?.iter().map(|r| row_to_job(r).map(|j| j.view())).collect()
}

pub(super) async fn attempts(c: &mut Conn, seq: i64) -> Result<Vec<AttemptView>, Error> {
    let sql = "SELECT attempt, worker_id, request_id, started_at, ended_at, outcome, error \
               FROM attempts WHERE job_seq = $1 ORDER BY attempt";
    let mut attempts = c
        .rows(sql, &[&seq])
        .await?
        .iter()
        .map(|r| {
            Ok(AttemptView {
                attempt: r.try_get(0)?,
                worker_id: r.try_get(1)?,
                request_id: r.try_get(2)?,
                started_at: r.try_get(3)?,
                ended_at: r.try_get(4)?,
                outcome: r.try_get(5)?,
                error_message: r.try_get(6)?,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    // A succeeded job's last attempt is not written as a row of its own: its row holds it.
    let sql = "SELECT attempts_total, worker_id, request_id, assigned_at, completed_at FROM jobs \
               WHERE seq = $1 AND state = $2";
    let last = match c.row(sql, &[&seq, &(JobState::Succeeded as i32)]).await? {
        Some(r) => Some(AttemptView {
            attempt: r.try_get(0)?,
            worker_id: r.try_get(1)?,
            request_id: r.try_get(2)?,
            started_at: r.try_get(3)?,
            ended_at: r.try_get(4)?,
            outcome: ATTEMPT_SUCCEEDED.to_string(),
            error_message: String::new(),
        }),
        None => None,
    };
    if let Some(last) = last.filter(|l| !attempts.iter().any(|a| a.attempt == l.attempt)) {
        attempts.push(last);
    }
    Ok(attempts)
}

/// The SQL of an activities listing with the filters given; its parameters are, in
/// order, the job type, the job id, the `before` id (each only when filtered on) and the
/// limit. The feed's filter is the partial indexes' condition word for word.
pub(super) fn activities_sql(feed_only: bool, job_type: bool, job_id: bool, before_id: bool) -> String {
    let mut sql =
        "SELECT id, created_at, job_type, job_id, source, stage, message FROM activities WHERE TRUE".to_string();
    if feed_only {
        sql.push_str(concat!(" AND ", not_output!()));
    }
    let mut n = 0;
    for (on, term) in [(job_type, "job_type = $"), (job_id, "job_id = $"), (before_id, "id < $")] {
        if on {
            n += 1;
            sql.push_str(&format!(" AND {term}{n}"));
        }
    }
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", n + 1));
    sql
}

/// Activities newest first; with `feed_only`, without the jobs' output lines.
pub(super) async fn activities(
    c: &mut Conn,
    job_type: Option<&str>,
    job_id: Option<&str>,
    before_id: Option<i64>,
    limit: usize,
    feed_only: bool,
) -> Result<Vec<ActivityView>, Error> {
    let sql = activities_sql(feed_only, job_type.is_some(), job_id.is_some(), before_id.is_some());
    let mut args = Args::new();
    if let Some(t) = job_type {
        args.push(Box::new(t.to_string()));
    }
    if let Some(j) = job_id {
        args.push(Box::new(j.to_string()));
    }
    if let Some(b) = before_id {
        args.push(Box::new(b));
    }
    args.push(Box::new(limit as i64));
    c.rows(&sql, &refs(&args))
        .await?
        .iter()
        .map(|r| {
            Ok(ActivityView {
                id: r.try_get(0)?,
                created_at: r.try_get(1)?,
                job_type: r.try_get(2)?,
                job_id: r.try_get(3)?,
                source: columns::activity_source(r.try_get(4)?),
                stage: r.try_get(5)?,
                message: r.try_get(6)?,
            })
        })
        .collect()
}

/// The jobs in a final state that completed in `[since, until)` (one scan, at start).
pub(super) async fn finished_jobs(c: &mut Conn, since: i64, until: i64) -> Result<Vec<FinishedJob>, Error> {
    let sql = "SELECT job_type, state, created_at, not_before, assigned_at, completed_at, attempts_total, \
               worker_id <> '' FROM jobs WHERE completed_at >= $1 AND completed_at < $2 AND state IN ($3, $4, $5)";
    let (succeeded, failed, canceled) =
        (JobState::Succeeded as i32, JobState::Failed as i32, JobState::Canceled as i32);
    c.rows(sql, &[&since, &until, &succeeded, &failed, &canceled])
        .await?
        .iter()
        .map(|r| {
            Ok(FinishedJob {
                job_type: r.try_get(0)?,
                state: JobState::try_from(r.try_get::<_, i32>(1)?).unwrap_or(JobState::Unspecified),
                created_at: r.try_get(2)?,
                not_before: r.try_get(3)?,
                assigned_at: r.try_get(4)?,
                completed_at: r.try_get(5)?,
                attempts_total: r.try_get(6)?,
                had_worker: r.try_get(7)?,
            })
        })
        .collect()
}

pub(super) async fn detection_runs(
    c: &mut Conn,
    job_type: &str,
    success: bool,
    limit: usize,
) -> Result<Vec<RunView>, Error> {
    let sql = "SELECT id, job_type, kind, job_id, worker_id, started_at, ended_at, success, message, proposals, \
               jobs_created FROM runs WHERE job_type = $1 AND success = $2 AND ended_at > 0 ORDER BY id DESC LIMIT $3";
    c.rows(sql, &[&job_type, &success, &(limit as i64)])
        .await?
        .iter()
        .map(|r| {
            Ok(RunView {
                id: r.try_get(0)?,
                job_type: r.try_get(1)?,
                kind: r.try_get(2)?,
                job_id: r.try_get(3)?,
                worker_id: r.try_get(4)?,
                started_at: r.try_get(5)?,
                ended_at: r.try_get(6)?,
                success: r.try_get(7)?,
                message: r.try_get(8)?,
                proposals: r.try_get(9)?,
                jobs_created: r.try_get(10)?,
            })
        })
        .collect()
}

fn row_to_job(r: &Row) -> Result<Job, Error> {
    let payload: &[u8] = r.try_get(6)?;
    let spec_pb = pb::JobSpec::decode(payload).unwrap_or_default();
    let result: &[u8] = r.try_get(21)?;
    let result_pb = pb::JobResult::decode(result).unwrap_or_default();
    let failed_on: &str = r.try_get(27)?;
    let state: i32 = r.try_get(11)?;
    let context: &[u8] = r.try_get(31)?;
    Ok(Job {
        seq: r.try_get(0)?,
        spec: Arc::new(JobSpecData {
            job_type: r.try_get(1)?,
            dedupe_key: r.try_get(2)?,
            priority: r.try_get(3)?,
            summary: r.try_get(4)?,
            detail: r.try_get(5)?,
            parameters: spec_pb.parameters.into(),
            labels: spec_pb.labels.into(),
            created_at: r.try_get(7)?,
            not_before: r.try_get(8)?,
            expires_at: r.try_get(9)?,
            detection_run: r.try_get(10)?,
            replay_of: r.try_get(30)?,
            cluster_context: columns::decode_context(context),
        }),
        state: JobState::try_from(state).unwrap_or(JobState::Unspecified),
        attempts: r.try_get(12)?,
        attempts_total: r.try_get(13)?,
        worker_id: r.try_get(14)?,
        request_id: r.try_get(15)?,
        progress: r.try_get(16)?,
        stage: r.try_get(17)?,
        message: r.try_get(18)?,
        error: r.try_get(19)?,
        result_summary: r.try_get(20)?,
        result_values: result_pb.output_values.into(),
        updated_at: r.try_get(22)?,
        ready_at: r.try_get(23)?,
        assigned_at: r.try_get(24)?,
        completed_at: r.try_get(25)?,
        dead_letter: r.try_get(26)?,
        failed_on: columns::decode_failed_on(failed_on),
        stop: columns::stop_request(r.try_get(28)?, r.try_get(29)?),
        queued_at: Default::default(),
        deadline: 0,
        session_id: 0,
    })
}
