//! Reading SQLite: the load at start, the history and listing queries, and mapping rows
//! back to the admin's types.

use std::collections::HashMap;

use proto::pb::JobState;
use rusqlite::{Connection, OptionalExtension, params};

use super::rows::{self, SpecBlob, StatusBlob, row_to_job};
use super::schema::JOB_COLUMNS;
use crate::store::columns;
use crate::{
    audit::{AuditEvent, AuditQuery},
    holds::{Hold, HoldKind},
    job::{ATTEMPT_SUCCEEDED, ActivityView, AttemptView, Job, JobView, RunView},
    schedules::CronSchedule,
    store::backend::{FinishedJob, JobQuery, Loaded, counts_with_succeeded},
};

/// What the admin needs to resume: the jobs that are not final, the counts per
/// (job_type, state), and the next free ids.
pub(super) fn load(conn: &Connection) -> rusqlite::Result<Loaded> {
    let mut active = Vec::new();
    {
        let mut stmt = conn.prepare(&active_sql())?;
        let rows = stmt.query_map(
            params![JobState::Pending as i32, JobState::Assigned as i32, JobState::Running as i32],
            row_to_job,
        )?;
        for job in rows {
            active.push(job?);
        }
    }
    let counts = counts(conn)?;
    let max = |table: &str, col: &str| -> rusqlite::Result<i64> {
        conn.query_row(&format!("SELECT COALESCE(MAX({col}), 0) FROM {table}"), [], |r| r.get(0))
    };
    Ok(Loaded {
        // Pruning may have deleted the newest jobs; their ids are never handed out again.
        next_job_seq: max("jobs", "seq")?.max(meta(conn, "max_job_seq")?) + 1,
        next_activity_id: max("activities", "id")? + 1,
        next_run_id: max("runs", "id")? + 1,
        max_event_id: u64::try_from(meta(conn, "max_event_id")?).unwrap_or(0),
        next_audit_id: max("audit", "id")?.max(meta(conn, "max_audit_id")?) + 1,
        holds: holds(conn)?,
        schedules: schedules(conn)?,
        active,
        counts,
    })
}

/// The active jobs, oldest first; the parameters are the three active states.
pub(super) fn active_sql() -> String {
    format!(
        concat!("SELECT {} FROM jobs WHERE state IN (?1, ?2, ?3) AND ", not_succeeded!(), " ORDER BY seq"),
        JOB_COLUMNS
    )
}

/// The jobs per type.
pub(super) const TYPE_TOTALS_SQL: &str = "SELECT job_type, COUNT(*) FROM jobs GROUP BY job_type";

/// The jobs per type and state, SUCCEEDED left out.
pub(super) const NOT_SUCCEEDED_COUNTS_SQL: &str = concat!(
    "SELECT job_type, state, COUNT(*) FROM jobs INDEXED BY jobs_open WHERE ",
    not_succeeded!(),
    " GROUP BY job_type, state"
);

/// (job_type, state) -> count, over all jobs, from the two covering indexes (no state
/// index covers every job, see `schema::LATE_INDEXES`).
fn counts(conn: &Connection) -> rusqlite::Result<HashMap<(String, i32), i64>> {
    let per_type =
        conn.prepare(TYPE_TOTALS_SQL)?.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
    let others = conn
        .prepare(NOT_SUCCEEDED_COUNTS_SQL)?
        .query_map([], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    Ok(counts_with_succeeded(per_type, others))
}

fn holds(conn: &Connection) -> rusqlite::Result<Vec<Hold>> {
    let mut stmt = conn.prepare("SELECT kind, target, set_by, set_at FROM holds ORDER BY kind, target")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (kind, target, set_by, set_at) = row?;
        match HoldKind::parse(&kind) {
            Some(kind) => out.push(Hold { kind, target, set_by, set_at }),
            None => tracing::warn!(kind, "a stored hold of an unknown kind is ignored"),
        }
    }
    Ok(out)
}

fn schedules(conn: &Connection) -> rusqlite::Result<Vec<CronSchedule>> {
    let mut stmt = conn
        .prepare("SELECT job_type, cron, time_zone, set_by, set_at, last_fired_at FROM schedules ORDER BY job_type")?;
    let rows = stmt.query_map([], |r| {
        Ok(CronSchedule {
            job_type: r.get(0)?,
            cron: r.get(1)?,
            time_zone: r.get(2)?,
            set_by: r.get(3)?,
            set_at: r.get(4)?,
            last_fired_at: r.get(5)?,
        })
    })?;
    rows.collect()
}

/// `LIKE` pattern for a case-insensitive substring, with the wildcards in it literal.
fn like_pattern(text: &str) -> String {
    let escaped = text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    format!("%{escaped}%")
}

/// The WHERE clause and its arguments for an audit query (paging aside).
fn audit_where(q: &AuditQuery, args: &mut Vec<rusqlite::types::Value>) -> String {
    let mut sql = String::from(" WHERE 1=1");
    let mut eq = |col: &str, v: &Option<String>, sql: &mut String| {
        if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
            args.push(v.clone().into());
            sql.push_str(&format!(" AND {col} = ?{}", args.len()));
        }
    };
    eq("action", &q.action, &mut sql);
    eq("target", &q.target, &mut sql);
    eq("actor", &q.actor, &mut sql);
    eq("outcome", &q.outcome, &mut sql);
    if let Some(since) = q.since {
        args.push(since.into());
        sql.push_str(&format!(" AND at >= ?{}", args.len()));
    }
    if let Some(until) = q.until {
        args.push(until.into());
        sql.push_str(&format!(" AND at < ?{}", args.len()));
    }
    sql
}

const AUDIT_COLUMNS: &str = "id, at, actor, actor_kind, action, target, params, outcome, reason, request_id";

fn row_to_audit(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditEvent> {
    let params: String = r.get(6)?;
    Ok(AuditEvent {
        id: r.get(0)?,
        at: r.get(1)?,
        actor: r.get(2)?,
        actor_kind: r.get(3)?,
        action: r.get(4)?,
        target: r.get(5)?,
        params: serde_json::from_str(&params).unwrap_or(serde_json::Value::Null),
        outcome: r.get(7)?,
        reason: r.get(8)?,
        request_id: r.get(9)?,
    })
}

pub(super) fn audit(conn: &Connection, q: &AuditQuery) -> rusqlite::Result<Vec<AuditEvent>> {
    let mut args = Vec::new();
    let mut sql = format!("SELECT {AUDIT_COLUMNS} FROM audit{}", audit_where(q, &mut args));
    if let Some(b) = q.before_id {
        args.push(b.into());
        sql.push_str(&format!(" AND id < ?{}", args.len()));
    }
    args.push((q.page_size() as i64).into());
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ?{}", args.len()));
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), row_to_audit)?;
    rows.collect()
}

pub(super) fn audit_count(conn: &Connection, q: &AuditQuery) -> rusqlite::Result<i64> {
    let mut args = Vec::new();
    let sql = format!("SELECT COUNT(*) FROM audit{}", audit_where(q, &mut args));
    conn.prepare_cached(&sql)?.query_row(rusqlite::params_from_iter(args.iter()), |r| r.get(0))
}

pub(super) fn audit_oldest(
    conn: &Connection,
    after: i64,
    up_to: i64,
    limit: usize,
) -> rusqlite::Result<Vec<AuditEvent>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {AUDIT_COLUMNS} FROM audit WHERE id > ?1 AND id <= ?2 ORDER BY id LIMIT ?3"
    ))?;
    let rows = stmt.query_map(params![after, up_to, limit as i64], row_to_audit)?;
    rows.collect()
}

pub(super) fn audit_cutoff(
    conn: &Connection,
    before_ms: Option<i64>,
    keep: Option<i64>,
) -> rusqlite::Result<Option<(i64, i64)>> {
    let mut cutoff: Option<i64> = None;
    if let Some(before) = before_ms {
        let id: Option<i64> = conn.query_row("SELECT MAX(id) FROM audit WHERE at < ?1", [before], |r| r.get(0))?;
        cutoff = cutoff.max(id);
    }
    if let Some(keep) = keep {
        // The id of the newest event beyond the `keep` newest ones.
        let id: Option<i64> = conn
            .query_row("SELECT id FROM audit ORDER BY id DESC LIMIT 1 OFFSET ?1", [keep], |r| r.get(0))
            .optional()?;
        cutoff = cutoff.max(id);
    }
    let Some(up_to) = cutoff else { return Ok(None) };
    let count: i64 = conn.query_row("SELECT COUNT(*) FROM audit WHERE id <= ?1", [up_to], |r| r.get(0))?;
    Ok((count > 0).then_some((up_to, count)))
}

pub(super) fn dead_letters(conn: &Connection) -> rusqlite::Result<Vec<(String, i64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT job_type, COUNT(*) FROM jobs WHERE dead_letter = 1 GROUP BY job_type ORDER BY job_type",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

pub(super) fn replayed_as(conn: &Connection, seq: i64) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT MAX(seq) FROM jobs WHERE replay_of = ?1 AND replay_of > 0")?
        .query_row([seq], |r| r.get(0))
}

pub(super) fn newest_with_keys(
    conn: &Connection,
    job_type: &str,
    after_seq: i64,
    keys: &[String],
) -> rusqlite::Result<HashMap<String, i64>> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let keys = serde_json::to_string(keys).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    let mut stmt = conn.prepare_cached(
        "SELECT dedupe_key, MAX(seq) FROM jobs WHERE job_type = ?1 AND seq > ?2 \
         AND dedupe_key IN (SELECT value FROM json_each(?3)) GROUP BY dedupe_key",
    )?;
    let rows = stmt.query_map(params![job_type, after_seq, keys], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

fn meta(conn: &Connection, key: &str) -> rusqlite::Result<i64> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional().map(|v| v.unwrap_or(0))
}

pub(super) fn job(conn: &Connection, seq: i64) -> rusqlite::Result<Option<Job>> {
    conn.query_row(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE seq = ?1"), [seq], row_to_job).optional()
}

pub(super) fn jobs(conn: &Connection, q: &JobQuery) -> rusqlite::Result<Vec<JobView>> {
    let (sql, args) = jobs_sql(q);
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), row_to_job)?;
    rows.map(|r| r.map(|j| j.view())).collect()
}

/// A jobs listing's SQL and its parameters.
pub(super) fn jobs_sql(q: &JobQuery) -> (String, Vec<rusqlite::types::Value>) {
    let mut sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE 1=1");
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    if let Some(t) = &q.job_type {
        args.push(t.clone().into());
        sql.push_str(&format!(" AND job_type = ?{}", args.len()));
    }
    if let Some(s) = q.state {
        args.push((s as i64).into());
        sql.push_str(&format!(" AND state = ?{}", args.len()));
        if s != JobState::Succeeded {
            sql.push_str(concat!(" AND ", not_succeeded!()));
        }
    }
    if let Some(d) = q.dead_letter {
        args.push(i64::from(d).into());
        sql.push_str(&format!(" AND dead_letter = ?{}", args.len()));
    }
    if let Some(text) = q.error_contains.as_ref().filter(|t| !t.is_empty()) {
        args.push(like_pattern(text).into());
        sql.push_str(&format!(" AND error LIKE ?{} ESCAPE '\\'", args.len()));
    }
    if let Some(since) = q.completed_since {
        args.push(since.into());
        sql.push_str(&format!(" AND completed_at >= ?{}", args.len()));
    }
    if let Some(until) = q.completed_until {
        args.push(until.into());
        sql.push_str(&format!(" AND completed_at < ?{}", args.len()));
    }
    if let Some(text) = q.text.as_ref().filter(|t| !t.is_empty()) {
        args.push(like_pattern(text).into());
        let n = args.len();
        sql.push_str(&format!(
            " AND (summary LIKE ?{n} ESCAPE '\\' OR dedupe_key LIKE ?{n} ESCAPE '\\' OR ('j' || seq) LIKE ?{n} ESCAPE '\\')"
        ));
    }
    if let Some(b) = q.before_seq {
        args.push(b.into());
        sql.push_str(&format!(" AND seq < ?{}", args.len()));
    }
    args.push((q.page_size() as i64).into());
    sql.push_str(&format!(" ORDER BY seq DESC LIMIT ?{}", args.len()));
    (sql, args)
}

pub(super) fn attempts(conn: &Connection, seq: i64) -> rusqlite::Result<Vec<AttemptView>> {
    let mut stmt = conn.prepare_cached(
        "SELECT attempt, worker_id, request_id, started_at, ended_at, outcome, error \
         FROM attempts WHERE job_seq = ?1 ORDER BY attempt",
    )?;
    let rows = stmt.query_map([seq], |r| {
        Ok(AttemptView {
            attempt: r.get(0)?,
            worker_id: r.get(1)?,
            request_id: r.get(2)?,
            started_at: r.get(3)?,
            ended_at: r.get(4)?,
            outcome: r.get(5)?,
            error_message: r.get(6)?,
        })
    })?;
    let mut attempts: Vec<AttemptView> = rows.collect::<rusqlite::Result<_>>()?;
    // A succeeded job's last attempt is not written as a row of its own: its row holds it.
    let last = job(conn, seq)?.filter(|j| j.state == JobState::Succeeded).map(|j| AttemptView {
        attempt: j.attempts_total,
        worker_id: j.worker_id.into(),
        request_id: j.request_id.into(),
        started_at: j.assigned_at,
        ended_at: j.completed_at,
        outcome: ATTEMPT_SUCCEEDED.to_string(),
        error_message: String::new(),
    });
    if let Some(last) = last.filter(|l| !attempts.iter().any(|a| a.attempt == l.attempt)) {
        attempts.push(last);
    }
    Ok(attempts)
}

pub(super) fn activities(
    conn: &Connection,
    job_type: Option<&str>,
    job_id: Option<&str>,
    before_id: Option<i64>,
    limit: usize,
) -> rusqlite::Result<Vec<ActivityView>> {
    list_activities(conn, job_type, job_id, before_id, limit, false)
}

/// The activity feed: [`activities`] without the jobs' output lines. The filter is the
/// partial indexes' condition word for word, so SQLite reads the feed from them and
/// never walks past a flood of output lines.
pub(super) fn feed(
    conn: &Connection,
    job_type: Option<&str>,
    job_id: Option<&str>,
    before_id: Option<i64>,
    limit: usize,
) -> rusqlite::Result<Vec<ActivityView>> {
    list_activities(conn, job_type, job_id, before_id, limit, true)
}

/// The SQL of an activities listing with the filters given; its parameters are, in
/// order, the job type, the job id, the `before` id (each only when filtered on) and the
/// limit.
pub(super) fn activities_sql(feed_only: bool, job_type: bool, job_id: bool, before_id: bool) -> String {
    let mut sql =
        "SELECT id, created_at, job_type, job_id, source, stage, message FROM activities WHERE 1=1".to_string();
    if feed_only {
        sql.push_str(concat!(" AND ", not_output!()));
    }
    let mut n = 0;
    for (on, term) in [(job_type, "job_type = ?"), (job_id, "job_id = ?"), (before_id, "id < ?")] {
        if on {
            n += 1;
            sql.push_str(&format!(" AND {term}{n}"));
        }
    }
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ?{}", n + 1));
    sql
}

fn list_activities(
    conn: &Connection,
    job_type: Option<&str>,
    job_id: Option<&str>,
    before_id: Option<i64>,
    limit: usize,
    feed_only: bool,
) -> rusqlite::Result<Vec<ActivityView>> {
    let sql = activities_sql(feed_only, job_type.is_some(), job_id.is_some(), before_id.is_some());
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    args.extend(job_type.map(|t| t.to_string().into()));
    args.extend(job_id.map(|j| j.to_string().into()));
    args.extend(before_id.map(Into::into));
    args.push((limit as i64).into());
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), |r| {
        Ok(ActivityView {
            id: r.get(0)?,
            created_at: r.get(1)?,
            job_type: r.get(2)?,
            job_id: r.get(3)?,
            source: columns::activity_source(&r.get::<_, String>(4)?),
            stage: r.get(5)?,
            message: r.get(6)?,
        })
    })?;
    rows.collect()
}

/// Visits the jobs in a final state that completed in `[since, until)`. There is no
/// index on `completed_at` (it would cost every job's final write): this scans the jobs
/// table once, which the trends' rebuild does once, in the background, at start.
pub(super) fn finished_jobs(
    conn: &Connection,
    since: i64,
    until: i64,
    visit: &mut dyn FnMut(FinishedJob),
) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare(
        "SELECT seq, job_type, state, completed_at, spec, status \
         FROM jobs WHERE completed_at >= ?1 AND completed_at < ?2 AND state IN (?3, ?4, ?5)",
    )?;
    let mut rows = stmt.query(params![
        since,
        until,
        JobState::Succeeded as i32,
        JobState::Failed as i32,
        JobState::Canceled as i32
    ])?;
    while let Some(r) = rows.next()? {
        let spec: SpecBlob = rows::decode(r, 4)?;
        let status: StatusBlob = rows::decode(r, 5)?;
        visit(FinishedJob {
            job_type: r.get(1)?,
            state: JobState::try_from(r.get::<_, i32>(2)?).unwrap_or(JobState::Unspecified),
            created_at: spec.created_at,
            not_before: spec.not_before,
            assigned_at: status.assigned_at,
            completed_at: r.get(3)?,
            attempts_total: status.attempts_total,
            had_worker: !status.worker_id.is_empty(),
        });
    }
    Ok(())
}

pub(super) fn detection_runs(
    conn: &Connection,
    job_type: &str,
    success: bool,
    limit: usize,
) -> rusqlite::Result<Vec<RunView>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, job_type, kind, job_id, worker_id, started_at, ended_at, success, message, proposals, jobs_created \
         FROM runs WHERE job_type = ?1 AND success = ?2 AND ended_at > 0 ORDER BY id DESC LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![job_type, success, limit as i64], |r| {
        Ok(RunView {
            id: r.get(0)?,
            job_type: r.get(1)?,
            kind: r.get(2)?,
            job_id: r.get(3)?,
            worker_id: r.get(4)?,
            started_at: r.get(5)?,
            ended_at: r.get(6)?,
            success: r.get(7)?,
            message: r.get(8)?,
            proposals: r.get(9)?,
            jobs_created: r.get(10)?,
        })
    })?;
    rows.collect()
}
