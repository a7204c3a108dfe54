//! Durable state in `<data>/plugin/state.db` (SQLite, WAL, synchronous=FULL): jobs,
//! attempts, activities and run history.
//!
//! One writer thread owns the write connection and applies operations in batches: it
//! takes everything queued, writes it in one transaction and commits once (group
//! commit), so a thousand job updates cost one fsync, not a thousand. Within a batch only
//! the newest update of each job is written. After the commit it publishes the batch's
//! events, which is what makes "persisted, then published" hold. Callers that must know an
//! operation is durable (a job before it may be dispatched) wait on its ticket.
//!
//! The queue to the writer is unbounded on purpose: producers hold the job table's lock
//! and must not block; the flow is bounded upstream, because jobs only enter after the
//! store has made them durable, and each job produces a handful of updates.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Condvar, Mutex},
    time::Duration,
};

use prost::Message;
use proto::pb::{self, JobState};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::watch;

use crate::{
    events::{EventBus, EventKind},
    job::{ActivityView, AttemptView, Job, JobSpecData, JobView, RunView, StopRequest},
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("state store is closed")]
    Closed,
}

/// One write. Attempts, activities and runs are identified by ids the caller assigns, so
/// an operation can be built and published before it is committed.
pub enum Op {
    InsertJob(Arc<Job>),
    UpdateJob(Arc<Job>),
    Attempt {
        job_seq: i64,
        attempt: AttemptView,
    },
    Activity(ActivityView),
    Run(RunView),
    /// Delete finished jobs, activities and runs older than this (Unix ms). Once
    /// committed, `report` gets the (job_type, state) counts of the deleted jobs, so the
    /// admin's counters can follow.
    Prune {
        before_ms: i64,
        report: Option<tokio::sync::oneshot::Sender<Pruned>>,
    },
}

/// Jobs a prune deleted: (job_type, state as i32) -> count.
pub type Pruned = HashMap<(String, i32), i64>;

struct Queued {
    ticket: u64,
    op: Option<Op>,
    event: Option<EventKind>,
}

/// What the admin finds in the store when it starts.
pub struct Loaded {
    /// Jobs that were not final when the admin stopped, as stored.
    pub active: Vec<Job>,
    /// (job_type, state) -> count, over all jobs.
    pub counts: HashMap<(String, i32), i64>,
    pub next_job_seq: i64,
    pub next_activity_id: i64,
    pub next_run_id: i64,
}

/// Filters for listing jobs, newest first.
#[derive(Debug, Clone, Default)]
pub struct JobQuery {
    pub job_type: Option<String>,
    pub state: Option<JobState>,
    pub dead_letter: Option<bool>,
    /// Case-insensitive substring of the summary, dedupe key or job id.
    pub text: Option<String>,
    /// Only jobs older than this one (keyset pagination).
    pub before_seq: Option<i64>,
    pub limit: usize,
}

/// The writer's inbox: producers push under the lock, the writer swaps the whole vector
/// out, so a batch costs one lock round trip and no per-item channel allocation.
#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

#[derive(Default)]
struct QueueState {
    items: Vec<Queued>,
    next_ticket: u64,
    closed: bool,
}

pub struct Store {
    path: PathBuf,
    queue: Arc<Queue>,
    /// False while the writer cannot commit; `/readyz` reports it.
    healthy: Arc<std::sync::atomic::AtomicBool>,
    committed: watch::Receiver<u64>,
    readers: Mutex<Vec<Connection>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
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
    stop_reason TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs(state, seq);
CREATE INDEX IF NOT EXISTS jobs_by_type_state ON jobs(job_type, state, seq);
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
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
";

const JOB_COLUMNS: &str = "seq, job_type, dedupe_key, priority, summary, detail, payload, created_at, not_before, \
     expires_at, detection_run, state, attempts, attempts_total, worker_id, request_id, progress, stage, message, \
     error, result_summary, result, updated_at, ready_at, assigned_at, completed_at, dead_letter, failed_on, \
     stop_outcome, stop_reason";

fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    Ok(conn)
}

impl Store {
    /// Opens (creating if needed) `<data>/plugin/state.db`, loads what the admin needs to
    /// resume, and starts the writer thread. Events of committed batches go to `events`.
    pub fn open(data_dir: &Path, events: Arc<EventBus>) -> Result<(Arc<Store>, Loaded), StoreError> {
        let dir = data_dir.join("plugin");
        let path = dir.join("state.db");
        let err = |source| StoreError::Sqlite { path: path.clone(), source };
        std::fs::create_dir_all(&dir).map_err(|e| err(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
        let conn = open_connection(&path).map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        migrate(&conn).map_err(err)?;
        let loaded = load(&conn).map_err(err)?;

        let queue = Arc::new(Queue::default());
        queue.state.lock().expect("store queue lock").next_ticket = 1;
        let (committed_tx, committed) = watch::channel(0u64);
        let writer_path = path.clone();
        let writer_queue = queue.clone();
        let healthy = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let writer_healthy = healthy.clone();
        let writer = std::thread::Builder::new()
            .name("plughost-store".into())
            .spawn(move || writer_loop(conn, writer_queue, writer_healthy, committed_tx, events, writer_path))
            .map_err(|e| err(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;

        let store = Arc::new(Store {
            path,
            queue,
            healthy,
            committed,
            readers: Mutex::new(Vec::new()),
            writer: Mutex::new(Some(writer)),
        });
        Ok((store, loaded))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// False while the last batch failed to commit (it is being retried).
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Queues a write (and an event to publish once it is committed); returns its ticket.
    pub fn submit(&self, op: Option<Op>, event: Option<EventKind>) -> u64 {
        let mut q = self.queue.state.lock().expect("store queue lock");
        let ticket = q.next_ticket;
        q.next_ticket += 1;
        if q.closed {
            tracing::warn!(ticket, "state store is closed; a write was dropped");
            return ticket;
        }
        q.items.push(Queued { ticket, op, event });
        if q.items.len() == 1 {
            self.queue.ready.notify_one();
        }
        ticket
    }

    pub fn write(&self, op: Op) -> u64 {
        self.submit(Some(op), None)
    }

    /// Waits until the write with this ticket (and every earlier one) is committed.
    pub async fn durable(&self, ticket: u64) -> Result<(), StoreError> {
        let mut rx = self.committed.clone();
        rx.wait_for(|c| *c >= ticket).await.map(|_| ()).map_err(|_| StoreError::Closed)
    }

    /// Waits for everything queued so far to be committed, so a read that follows sees
    /// every change made before it (read-your-writes for the history endpoints).
    pub async fn settle(&self) {
        let _ = self.durable(self.last_ticket()).await;
    }

    /// The newest ticket handed out; `durable(last_ticket())` is a flush.
    pub fn last_ticket(&self) -> u64 {
        self.queue.state.lock().expect("store queue lock").next_ticket - 1
    }

    /// Stops the writer after it has committed everything queued.
    pub fn close(&self) {
        self.queue.state.lock().expect("store queue lock").closed = true;
        self.queue.ready.notify_one();
        if let Some(handle) = self.writer.lock().expect("writer lock").take() {
            let _ = handle.join();
        }
    }

    /// Runs a read on a pooled read connection (WAL lets reads run beside the writer).
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let err = |source| StoreError::Sqlite { path: self.path.clone(), source };
        let conn = match self.readers.lock().expect("reader pool lock").pop() {
            Some(c) => c,
            None => {
                let c = Connection::open(&self.path).map_err(err)?;
                c.busy_timeout(Duration::from_secs(10)).map_err(err)?;
                c
            }
        };
        let out = f(&conn).map_err(err);
        let mut pool = self.readers.lock().expect("reader pool lock");
        if pool.len() < 8 {
            pool.push(conn);
        }
        out
    }

    pub fn job(&self, seq: i64) -> Result<Option<Job>, StoreError> {
        self.read(|c| {
            c.query_row(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE seq = ?1"), [seq], row_to_job).optional()
        })
    }

    pub fn jobs(&self, q: &JobQuery) -> Result<Vec<JobView>, StoreError> {
        let mut sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE 1=1");
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(t) = &q.job_type {
            args.push(t.clone().into());
            sql.push_str(&format!(" AND job_type = ?{}", args.len()));
        }
        if let Some(s) = q.state {
            args.push((s as i64).into());
            sql.push_str(&format!(" AND state = ?{}", args.len()));
        }
        if let Some(d) = q.dead_letter {
            args.push(i64::from(d).into());
            sql.push_str(&format!(" AND dead_letter = ?{}", args.len()));
        }
        if let Some(text) = q.text.as_ref().filter(|t| !t.is_empty()) {
            let escaped = text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
            args.push(format!("%{escaped}%").into());
            let n = args.len();
            sql.push_str(&format!(
                " AND (summary LIKE ?{n} ESCAPE '\\' OR dedupe_key LIKE ?{n} ESCAPE '\\' OR ('j' || seq) LIKE ?{n} ESCAPE '\\')"
            ));
        }
        if let Some(b) = q.before_seq {
            args.push(b.into());
            sql.push_str(&format!(" AND seq < ?{}", args.len()));
        }
        args.push((q.limit.clamp(1, 1000) as i64).into());
        sql.push_str(&format!(" ORDER BY seq DESC LIMIT ?{}", args.len()));
        self.read(|c| {
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), row_to_job)?;
            rows.map(|r| r.map(|j| j.view())).collect()
        })
    }

    pub fn attempts(&self, seq: i64) -> Result<Vec<AttemptView>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
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
            rows.collect()
        })
    }

    /// Newest first. Filters: job type, job id, and ids older than `before_id`.
    pub fn activities(
        &self,
        job_type: Option<&str>,
        job_id: Option<&str>,
        before_id: Option<i64>,
        limit: usize,
    ) -> Result<Vec<ActivityView>, StoreError> {
        let mut sql =
            "SELECT id, created_at, job_type, job_id, source, stage, message FROM activities WHERE 1=1".to_string();
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(t) = job_type {
            args.push(t.to_string().into());
            sql.push_str(&format!(" AND job_type = ?{}", args.len()));
        }
        if let Some(j) = job_id {
            args.push(j.to_string().into());
            sql.push_str(&format!(" AND job_id = ?{}", args.len()));
        }
        if let Some(b) = before_id {
            args.push(b.into());
            sql.push_str(&format!(" AND id < ?{}", args.len()));
        }
        args.push((limit.clamp(1, 1000) as i64).into());
        sql.push_str(&format!(" ORDER BY id DESC LIMIT ?{}", args.len()));
        self.read(|c| {
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), |r| {
                Ok(ActivityView {
                    id: r.get(0)?,
                    created_at: r.get(1)?,
                    job_type: r.get(2)?,
                    job_id: r.get(3)?,
                    source: static_source(&r.get::<_, String>(4)?),
                    stage: r.get(5)?,
                    message: r.get(6)?,
                })
            })?;
            rows.collect()
        })
    }

    /// The last `per_outcome` successful and the last `per_outcome` failed runs of a job
    /// type, newest first within each group. Runs are detections (the `runs` table) and
    /// job executions (finished jobs, read from `jobs`, so a job costs no extra row).
    pub fn runs(&self, job_type: &str, per_outcome: usize) -> Result<(Vec<RunView>, Vec<RunView>), StoreError> {
        let (mut ok, mut failed) = self.detection_runs(job_type, per_outcome)?;
        for (state, out) in [(JobState::Succeeded, &mut ok), (JobState::Failed, &mut failed)] {
            let jobs = self.jobs(&JobQuery {
                job_type: Some(job_type.to_string()),
                state: Some(state),
                limit: per_outcome,
                ..Default::default()
            })?;
            out.extend(jobs.into_iter().map(|j| RunView {
                id: 0,
                job_type: j.job_type,
                kind: "execution".into(),
                worker_id: j.worker_id,
                started_at: j.created_at,
                ended_at: j.completed_at,
                success: state == JobState::Succeeded,
                message: if state == JobState::Succeeded { j.result_summary } else { j.error_message },
                proposals: 0,
                jobs_created: 0,
                job_id: j.job_id,
            }));
            out.sort_by_key(|r| std::cmp::Reverse(r.ended_at));
            out.truncate(per_outcome);
        }
        Ok((ok, failed))
    }

    fn detection_runs(&self, job_type: &str, per_outcome: usize) -> Result<(Vec<RunView>, Vec<RunView>), StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, job_type, kind, job_id, worker_id, started_at, ended_at, success, message, proposals, jobs_created \
                 FROM runs WHERE job_type = ?1 AND success = ?2 AND ended_at > 0 ORDER BY id DESC LIMIT ?3",
            )?;
            let mut fetch = |success: bool| -> rusqlite::Result<Vec<RunView>> {
                let rows = stmt.query_map(params![job_type, success, per_outcome as i64], |r| {
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
            };
            Ok((fetch(true)?, fetch(false)?))
        })
    }
}

fn static_source(s: &str) -> &'static str {
    match s {
        "admin" => "admin",
        "detector" => "detector",
        "executor" => "executor",
        _ => "unspecified",
    }
}

fn encode_failed_on(list: &[String]) -> String {
    list.join("\n")
}

fn row_to_job(r: &rusqlite::Row<'_>) -> rusqlite::Result<Job> {
    let payload: Vec<u8> = r.get(6)?;
    let spec_pb = pb::JobSpec::decode(payload.as_slice()).unwrap_or_default();
    let result: Vec<u8> = r.get(21)?;
    let result_pb = pb::JobResult::decode(result.as_slice()).unwrap_or_default();
    let failed_on: String = r.get(27)?;
    let state: i32 = r.get(11)?;
    Ok(Job {
        seq: r.get(0)?,
        spec: Arc::new(JobSpecData {
            job_type: r.get(1)?,
            dedupe_key: r.get(2)?,
            priority: r.get(3)?,
            summary: r.get(4)?,
            detail: r.get(5)?,
            parameters: spec_pb.parameters,
            labels: spec_pb.labels,
            created_at: r.get(7)?,
            not_before: r.get(8)?,
            expires_at: r.get(9)?,
            detection_run: r.get(10)?,
        }),
        state: JobState::try_from(state).unwrap_or(JobState::Unspecified),
        attempts: r.get(12)?,
        attempts_total: r.get(13)?,
        worker_id: r.get(14)?,
        request_id: r.get(15)?,
        progress: r.get(16)?,
        stage: r.get(17)?,
        message: r.get(18)?,
        error: r.get(19)?,
        result_summary: r.get(20)?,
        result_values: result_pb.output_values,
        updated_at: r.get(22)?,
        ready_at: r.get(23)?,
        assigned_at: r.get(24)?,
        completed_at: r.get(25)?,
        dead_letter: r.get(26)?,
        failed_on: failed_on.split('\n').filter(|s| !s.is_empty()).map(String::from).collect(),
        stop: match r.get::<_, i32>(28)? {
            0 => None,
            outcome => Some(StopRequest {
                reason: r.get(29)?,
                outcome: JobState::try_from(outcome).unwrap_or(JobState::Canceled),
                deadline: 0,
            }),
        },
        queued_at: 0,
        deadline: 0,
        session_id: 0,
    })
}

/// Brings a store written by an older build up to the current schema.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('jobs')")?;
    let columns: Vec<String> = stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
    if !columns.iter().any(|c| c == "stop_outcome") {
        conn.execute_batch(
            "ALTER TABLE jobs ADD COLUMN stop_outcome INTEGER NOT NULL DEFAULT 0; \
             ALTER TABLE jobs ADD COLUMN stop_reason TEXT NOT NULL DEFAULT '';",
        )?;
    }
    Ok(())
}

fn meta(conn: &Connection, key: &str) -> rusqlite::Result<i64> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional().map(|v| v.unwrap_or(0))
}

fn load(conn: &Connection) -> rusqlite::Result<Loaded> {
    let mut active = Vec::new();
    {
        let mut stmt =
            conn.prepare(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE state IN (?1, ?2, ?3) ORDER BY seq"))?;
        let rows = stmt.query_map(
            params![JobState::Pending as i32, JobState::Assigned as i32, JobState::Running as i32],
            row_to_job,
        )?;
        for job in rows {
            active.push(job?);
        }
    }
    let mut counts = HashMap::new();
    {
        let mut stmt = conn.prepare("SELECT job_type, state, COUNT(*) FROM jobs GROUP BY job_type, state")?;
        let rows = stmt.query_map([], |r| Ok(((r.get::<_, String>(0)?, r.get::<_, i32>(1)?), r.get::<_, i64>(2)?)))?;
        for row in rows {
            let (k, v) = row?;
            counts.insert(k, v);
        }
    }
    let max = |table: &str, col: &str| -> rusqlite::Result<i64> {
        conn.query_row(&format!("SELECT COALESCE(MAX({col}), 0) FROM {table}"), [], |r| r.get(0))
    };
    Ok(Loaded {
        // Pruning may have deleted the newest jobs; their ids are never handed out again.
        next_job_seq: max("jobs", "seq")?.max(meta(conn, "max_job_seq")?) + 1,
        next_activity_id: max("activities", "id")? + 1,
        next_run_id: max("runs", "id")? + 1,
        active,
        counts,
    })
}

fn writer_loop(
    mut conn: Connection,
    queue: Arc<Queue>,
    healthy: Arc<std::sync::atomic::AtomicBool>,
    committed: watch::Sender<u64>,
    events: Arc<EventBus>,
    path: PathBuf,
) {
    let mut batch: Vec<Queued> = Vec::with_capacity(1024);
    loop {
        {
            let mut q = queue.state.lock().expect("store queue lock");
            while q.items.is_empty() && !q.closed {
                q = queue.ready.wait(q).expect("store queue lock");
            }
            if q.items.is_empty() && q.closed {
                return;
            }
            std::mem::swap(&mut q.items, &mut batch);
        }
        let last_ticket = batch.last().map(|q| q.ticket).unwrap_or(0);
        // A batch is durable only once it commits: on failure (disk full, I/O error) it is
        // retried with backoff, and until then nothing after it counts as durable, so no
        // new job is dispatched and no event claims a change that was not stored.
        let mut delay = Duration::from_millis(100);
        let pruned = loop {
            let e = match apply(&mut conn, &batch) {
                Ok(pruned) => break pruned,
                Err(e) => e,
            };
            healthy.store(false, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(path = %path.display(), error = %e, ops = batch.len(), retry_in = ?delay, "state store write failed");
            if queue.state.lock().expect("store queue lock").closed && delay >= Duration::from_secs(5) {
                tracing::error!(path = %path.display(), ops = batch.len(), "giving up on a batch at shutdown");
                return;
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_secs(5));
        };
        healthy.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = committed.send(last_ticket);
        let mut pruned = pruned;
        for q in batch.drain(..) {
            if let Some(Op::Prune { report: Some(tx), .. }) = q.op {
                let _ = tx.send(pruned.remove(&q.ticket).unwrap_or_default());
            }
            if let Some(event) = q.event {
                events.publish(event);
            }
        }
    }
}

/// Writes one batch in one transaction. Returns what each prune (by ticket) deleted.
fn apply(conn: &mut Connection, batch: &[Queued]) -> rusqlite::Result<HashMap<u64, Pruned>> {
    let mut pruned: HashMap<u64, Pruned> = HashMap::new();
    // Only the newest update of each job in the batch needs writing.
    let mut last_update: HashMap<i64, usize> = HashMap::new();
    let mut last_attempt: HashMap<(i64, i32), usize> = HashMap::new();
    for (i, q) in batch.iter().enumerate() {
        match &q.op {
            Some(Op::UpdateJob(job)) => {
                last_update.insert(job.seq, i);
            }
            Some(Op::Attempt { job_seq, attempt }) => {
                last_attempt.insert((*job_seq, attempt.attempt), i);
            }
            _ => {}
        }
    }
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare_cached(&format!(
            "INSERT OR REPLACE INTO jobs ({JOB_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, \
             ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30)"
        ))?;
        let mut update = tx.prepare_cached(
            "UPDATE jobs SET state = ?2, attempts = ?3, attempts_total = ?4, worker_id = ?5, request_id = ?6, \
             progress = ?7, stage = ?8, message = ?9, error = ?10, result_summary = ?11, result = ?12, updated_at = ?13, \
             ready_at = ?14, assigned_at = ?15, completed_at = ?16, dead_letter = ?17, failed_on = ?18, \
             stop_outcome = ?19, stop_reason = ?20 WHERE seq = ?1",
        )?;
        let mut attempt = tx.prepare_cached(
            "INSERT OR REPLACE INTO attempts (job_seq, attempt, worker_id, request_id, started_at, ended_at, outcome, error) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        let mut activity = tx.prepare_cached(
            "INSERT OR REPLACE INTO activities (id, created_at, job_type, job_id, source, stage, message) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        let mut run = tx.prepare_cached(
            "INSERT OR REPLACE INTO runs (id, job_type, kind, job_id, worker_id, started_at, ended_at, success, message, \
             proposals, jobs_created) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?;
        for (i, q) in batch.iter().enumerate() {
            let Some(op) = &q.op else { continue };
            match op {
                Op::InsertJob(job) => {
                    // If the same batch also updates it, write the newest state right away.
                    let job = match last_update.remove(&job.seq) {
                        Some(j) => match &batch[j].op {
                            Some(Op::UpdateJob(newer)) => newer,
                            _ => job,
                        },
                        None => job,
                    };
                    let s = &job.spec;
                    let payload = pb::JobSpec {
                        parameters: s.parameters.clone(),
                        labels: s.labels.clone(),
                        ..Default::default()
                    }
                    .encode_to_vec();
                    let result = result_bytes(job);
                    insert.execute(rusqlite::params![
                        job.seq,
                        s.job_type,
                        s.dedupe_key,
                        s.priority,
                        s.summary,
                        s.detail,
                        payload,
                        s.created_at,
                        s.not_before,
                        s.expires_at,
                        s.detection_run,
                        job.state as i32,
                        job.attempts,
                        job.attempts_total,
                        job.worker_id,
                        job.request_id,
                        job.progress,
                        job.stage,
                        job.message,
                        job.error,
                        job.result_summary,
                        result,
                        job.updated_at,
                        job.ready_at,
                        job.assigned_at,
                        job.completed_at,
                        job.dead_letter,
                        encode_failed_on(&job.failed_on),
                        job.stop.as_ref().map(|st| st.outcome as i32).unwrap_or(0),
                        job.stop.as_ref().map(|st| st.reason.as_str()).unwrap_or(""),
                    ])?;
                }
                Op::UpdateJob(job) => {
                    if last_update.get(&job.seq) != Some(&i) {
                        continue;
                    }
                    update.execute(rusqlite::params![
                        job.seq,
                        job.state as i32,
                        job.attempts,
                        job.attempts_total,
                        job.worker_id,
                        job.request_id,
                        job.progress,
                        job.stage,
                        job.message,
                        job.error,
                        job.result_summary,
                        result_bytes(job),
                        job.updated_at,
                        job.ready_at,
                        job.assigned_at,
                        job.completed_at,
                        job.dead_letter,
                        encode_failed_on(&job.failed_on),
                        job.stop.as_ref().map(|st| st.outcome as i32).unwrap_or(0),
                        job.stop.as_ref().map(|st| st.reason.as_str()).unwrap_or(""),
                    ])?;
                }
                Op::Attempt { job_seq, attempt: a } => {
                    if last_attempt.get(&(*job_seq, a.attempt)) != Some(&i) {
                        continue;
                    }
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
                Op::Activity(a) => {
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
                Op::Run(r) => {
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
                Op::Prune { before_ms, .. } => {
                    let finished = params![
                        JobState::Succeeded as i32,
                        JobState::Failed as i32,
                        JobState::Canceled as i32,
                        before_ms
                    ];
                    tx.execute(
                        "INSERT INTO meta (key, value) VALUES ('max_job_seq', (SELECT COALESCE(MAX(seq), 0) FROM jobs)) \
                         ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)",
                        [],
                    )?;
                    let mut counts = tx.prepare(
                        "SELECT job_type, state, COUNT(*) FROM jobs WHERE state IN (?1, ?2, ?3) AND updated_at < ?4 \
                         GROUP BY job_type, state",
                    )?;
                    let rows = counts.query_map(finished, |r| {
                        Ok(((r.get::<_, String>(0)?, r.get::<_, i32>(1)?), r.get::<_, i64>(2)?))
                    })?;
                    let report: Pruned = rows.collect::<rusqlite::Result<_>>()?;
                    pruned.insert(q.ticket, report);
                    tx.execute(
                        "DELETE FROM attempts WHERE job_seq IN (SELECT seq FROM jobs WHERE state IN (?1, ?2, ?3) AND updated_at < ?4)",
                        params![JobState::Succeeded as i32, JobState::Failed as i32, JobState::Canceled as i32, before_ms],
                    )?;
                    tx.execute(
                        "DELETE FROM jobs WHERE state IN (?1, ?2, ?3) AND updated_at < ?4",
                        params![
                            JobState::Succeeded as i32,
                            JobState::Failed as i32,
                            JobState::Canceled as i32,
                            before_ms
                        ],
                    )?;
                    tx.execute("DELETE FROM activities WHERE created_at < ?1", [before_ms])?;
                    tx.execute("DELETE FROM runs WHERE ended_at > 0 AND ended_at < ?1", [before_ms])?;
                }
            }
        }
    }
    tx.commit()?;
    Ok(pruned)
}

fn result_bytes(job: &Job) -> Vec<u8> {
    if job.result_values.is_empty() {
        return Vec::new();
    }
    pb::JobResult { output_values: job.result_values.clone(), summary: String::new() }.encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{JobSpecData, now_ms};

    use crate::test_support::TempDir;

    fn temp_dir(name: &str) -> TempDir {
        TempDir::new(&format!("store-{name}"))
    }

    fn job(seq: i64, state: JobState, updated_at: i64) -> Job {
        let spec = JobSpecData {
            job_type: "t".into(),
            dedupe_key: format!("k{seq}"),
            priority: 2,
            summary: format!("job {seq}"),
            detail: String::new(),
            parameters: [("p".to_string(), pb::ConfigValue { kind: Some(pb::config_value::Kind::Int64Value(seq)) })]
                .into(),
            labels: Default::default(),
            created_at: updated_at,
            not_before: 0,
            expires_at: 0,
            detection_run: 1,
        };
        let mut job = Job::pending(seq, spec, updated_at);
        job.state = state;
        job.failed_on = vec!["w1".into()];
        job
    }

    #[tokio::test]
    async fn updates_in_one_batch_leave_the_newest_state_and_survive_a_reopen() {
        let dir = temp_dir("coalesce");
        let events = Arc::new(EventBus::new(64));
        let (store, loaded) = Store::open(&dir.0, events.clone()).unwrap();
        assert!(loaded.active.is_empty());
        let now = now_ms();
        store.write(Op::InsertJob(Arc::new(job(1, JobState::Pending, now))));
        let mut j = job(1, JobState::Running, now);
        j.progress = 40.0;
        store.write(Op::UpdateJob(Arc::new(j.clone())));
        j.state = JobState::Succeeded;
        j.progress = 100.0;
        store.write(Op::UpdateJob(Arc::new(j)));
        store.write(Op::InsertJob(Arc::new(job(2, JobState::Pending, now))));
        store.settle().await;
        let got = store.job(1).unwrap().unwrap();
        assert_eq!(got.state, JobState::Succeeded);
        assert_eq!(got.progress, 100.0);
        assert_eq!(got.failed_on, vec!["w1".to_string()]);
        assert!(got.spec.parameters.contains_key("p"));
        store.close();

        let (store, loaded) = Store::open(&dir.0, events).unwrap();
        assert_eq!(loaded.active.iter().map(|j| j.seq).collect::<Vec<_>>(), vec![2], "only non-final jobs load");
        assert_eq!(loaded.next_job_seq, 3);
        assert_eq!(loaded.counts.get(&("t".to_string(), JobState::Succeeded as i32)), Some(&1));
        store.close();
    }

    #[tokio::test]
    async fn events_are_published_only_after_their_batch_commits() {
        let dir = temp_dir("publish");
        let events = Arc::new(EventBus::new(64));
        let (store, _) = Store::open(&dir.0, events.clone()).unwrap();
        let mut sub = events.subscribe_after(None);
        let j = job(7, JobState::Pending, now_ms());
        let j = Arc::new(j);
        let ticket =
            store.submit(Some(Op::InsertJob(j.clone())), Some(EventKind::Job { job: crate::events::JobEvent(j) }));
        let event = sub.rx.recv().await.unwrap();
        assert_eq!(event.kind.name(), "job");
        // The event was received, so the row must already be readable.
        assert!(store.job(7).unwrap().is_some());
        store.durable(ticket).await.unwrap();
        store.close();
    }

    #[tokio::test]
    async fn a_batch_that_cannot_commit_is_retried_and_never_reported_durable_before_it_commits() {
        let dir = temp_dir("retry");
        let (store, _) = Store::open(&dir.0, Arc::new(EventBus::new(16))).unwrap();
        let side = Connection::open(store.path()).unwrap();
        side.execute_batch("CREATE TRIGGER refuse BEFORE INSERT ON jobs BEGIN SELECT RAISE(ABORT, 'injected'); END;")
            .unwrap();
        let ticket = store.write(Op::InsertJob(Arc::new(job(1, JobState::Pending, now_ms()))));
        let early = tokio::time::timeout(std::time::Duration::from_millis(300), store.durable(ticket)).await;
        assert!(early.is_err(), "not durable while the commit fails");
        assert!(!store.is_healthy());
        side.execute_batch("DROP TRIGGER refuse;").unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(30), store.durable(ticket)).await.unwrap().unwrap();
        assert!(store.job(1).unwrap().is_some(), "the retried batch landed");
        assert!(store.is_healthy());
        store.close();
    }

    #[tokio::test]
    async fn a_store_written_before_stop_requests_were_kept_is_migrated_on_open() {
        let dir = temp_dir("migrate");
        std::fs::create_dir_all(dir.0.join("plugin")).unwrap();
        let old_schema = SCHEMA
            .replace(",\n    stop_outcome INTEGER NOT NULL DEFAULT 0,\n    stop_reason TEXT NOT NULL DEFAULT ''", "");
        assert_ne!(old_schema, SCHEMA, "the old schema lacks the stop columns");
        Connection::open(dir.0.join("plugin/state.db")).unwrap().execute_batch(&old_schema).unwrap();
        let (store, _) = Store::open(&dir.0, Arc::new(EventBus::new(16))).unwrap();
        let mut j = job(1, JobState::Running, now_ms());
        j.stop = Some(StopRequest { reason: "why".into(), outcome: JobState::Canceled, deadline: 0 });
        store.write(Op::InsertJob(Arc::new(j)));
        store.settle().await;
        assert_eq!(store.job(1).unwrap().unwrap().stop.unwrap().reason, "why");
        store.close();
    }

    #[tokio::test]
    async fn prune_removes_old_finished_history_and_keeps_active_jobs() {
        let dir = temp_dir("prune");
        let (store, _) = Store::open(&dir.0, Arc::new(EventBus::new(16))).unwrap();
        let old = now_ms() - 10 * 86_400_000;
        store.write(Op::InsertJob(Arc::new(job(1, JobState::Succeeded, old))));
        store.write(Op::InsertJob(Arc::new(job(2, JobState::Pending, old))));
        store.write(Op::InsertJob(Arc::new(job(3, JobState::Failed, now_ms()))));
        store.write(Op::InsertJob(Arc::new(job(4, JobState::Succeeded, old))));
        let (tx, rx) = tokio::sync::oneshot::channel();
        store.write(Op::Prune { before_ms: now_ms() - 86_400_000, report: Some(tx) });
        store.settle().await;
        assert!(store.job(1).unwrap().is_none());
        assert!(store.job(2).unwrap().is_some(), "active jobs are never pruned");
        assert!(store.job(3).unwrap().is_some());
        let report = rx.await.unwrap();
        assert_eq!(report, [(("t".to_string(), JobState::Succeeded as i32), 2)].into());
        store.close();
        let (store, loaded) = Store::open(&dir.0, Arc::new(EventBus::new(16))).unwrap();
        assert_eq!(loaded.next_job_seq, 5, "the pruned newest job's id is not handed out again");
        store.close();
    }

    #[tokio::test]
    async fn job_queries_filter_and_page_newest_first() {
        let dir = temp_dir("query");
        let (store, _) = Store::open(&dir.0, Arc::new(EventBus::new(16))).unwrap();
        for seq in 1..=25 {
            let state = if seq % 5 == 0 { JobState::Failed } else { JobState::Succeeded };
            store.write(Op::InsertJob(Arc::new(job(seq, state, now_ms()))));
        }
        store.settle().await;
        let page = store.jobs(&JobQuery { limit: 10, ..Default::default() }).unwrap();
        assert_eq!(page.first().unwrap().job_id, "j25");
        assert_eq!(page.len(), 10);
        let next = store.jobs(&JobQuery { limit: 10, before_seq: Some(16), ..Default::default() }).unwrap();
        assert_eq!(next.first().unwrap().job_id, "j15");
        let failed = store.jobs(&JobQuery { limit: 100, state: Some(JobState::Failed), ..Default::default() }).unwrap();
        assert_eq!(failed.len(), 5);
        let text = store.jobs(&JobQuery { limit: 100, text: Some("job 2".into()), ..Default::default() }).unwrap();
        assert_eq!(text.len(), 7, "job 2, job 20..25");
        let none = store.jobs(&JobQuery { limit: 100, text: Some("100%_".into()), ..Default::default() }).unwrap();
        assert!(none.is_empty(), "LIKE wildcards in the text are literal");
        store.close();
    }
}
