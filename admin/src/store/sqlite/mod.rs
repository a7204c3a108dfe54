//! The SQLite backend: one write connection owned by the writer thread (WAL,
//! synchronous=FULL, cached statements), and a small pool of read connections for the
//! queries, which WAL lets run beside the writer. rusqlite's errors stop here: they leave
//! as the source of a [`BackendError`] that says what was being done.

mod legacy;
mod queries;
mod rows;
mod schema;
mod writes;

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, AtomicI32, Ordering},
    },
};

use rusqlite::Connection;

use crate::{
    audit::{AuditEvent, AuditQuery},
    job::{ActivityView, AttemptView, Job, JobView, RunView},
    store::backend::{Backend, BackendError, FinishedJob, JobQuery, Loaded, Pruned, Reader, Write},
};

/// Read connections kept for reuse; more may be open at once under load.
const READ_POOL: usize = 8;

/// Opens (creating or migrating if needed) the database at `path`: the writer side and
/// the reader side.
pub(super) fn open(path: &Path) -> Result<(SqliteBackend, SqliteReader), BackendError> {
    let mut conn = schema::open_writer(path).map_err(|e| BackendError::with_source("cannot open the database", e))?;
    schema::create_or_migrate(&conn)
        .map_err(|e| BackendError::with_source("cannot create or migrate the schema", e))?;
    let checkpointer = Checkpointer::start(path, &mut conn)?;
    Ok((
        SqliteBackend { conn, checkpointer, blobs: writes::Blobs::default() },
        SqliteReader { path: path.to_path_buf(), pool: Mutex::new(Vec::new()) },
    ))
}

/// The writer side: owns the write connection.
pub(super) struct SqliteBackend {
    conn: Connection,
    checkpointer: Checkpointer,
    /// The writer's encoding buffers and row budget, kept from batch to batch.
    blobs: writes::Blobs,
}

impl Drop for SqliteBackend {
    /// The checkpointer's connection closes first, so the write connection is the last one
    /// and SQLite checkpoints the whole log into the database as it closes.
    fn drop(&mut self) {
        self.checkpointer.stop();
    }
}

/// Log frames (pages) not yet copied into the database after which the checkpointer copies
/// them, as SQLite's own automatic checkpoint would.
const CHECKPOINT_PAGES: i32 = 1000;

/// Log length (frames) from which the writer copies the rest of the log itself, so that
/// its next batch starts the log over.
const RESTART_PAGES: i32 = 4 * CHECKPOINT_PAGES;

/// At most this many frames are left for the writer to copy, unless the log has grown to
/// twice [`RESTART_PAGES`]; also the growth after which a restart that a reader prevented
/// is tried again.
const FINISH_PAGES: i32 = CHECKPOINT_PAGES / 4;

/// Keeps WAL checkpoints off the commit path. SQLite's automatic checkpoint runs inside
/// the commit that crosses [`CHECKPOINT_PAGES`], so one commit in many pays for copying the
/// log into the database (and syncing both files) while every producer waits for it. Here
/// the write connection's automatic checkpoint is off; a commit that leaves
/// [`CHECKPOINT_PAGES`] of the log uncopied wakes this thread, which runs a passive
/// checkpoint on its own connection beside the writer.
///
/// SQLite starts the log over only when a write begins with all of it copied, which a
/// checkpoint beside a busy writer seldom leaves. So once the log is [`RESTART_PAGES`]
/// long and the checkpointer has left at most [`FINISH_PAGES`] uncopied, the writer copies
/// those itself before its next batch, which then starts the log over.
///
/// (Waking the checkpointer after every commit past the threshold, as this did before,
/// also kept the log short, but a log that is never all copied wakes it for every commit:
/// a checkpoint, with a sync of the log and of the database, per commit.)
struct Checkpointer {
    shared: Arc<Shared>,
    handle: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    /// The database, for the log's warnings.
    path: PathBuf,
    state: Mutex<CheckpointState>,
    wake: Condvar,
    /// Frames of the log that the last checkpoint had copied (SQLite's `nBackfill`).
    copied: AtomicI32,
    /// The writer copies the rest of the log before its next batch.
    finish: AtomicBool,
}

#[derive(Default)]
struct CheckpointState {
    wanted: bool,
    stopping: bool,
}

impl Checkpointer {
    fn start(path: &Path, writer: &mut Connection) -> Result<Checkpointer, BackendError> {
        let failed = |e| BackendError::with_source("cannot start the WAL checkpointer", e);
        let conn = schema::open_checkpointer(path).map_err(failed)?;
        let shared = Arc::new(Shared {
            path: path.to_path_buf(),
            state: Mutex::default(),
            wake: Condvar::new(),
            copied: AtomicI32::new(0),
            finish: AtomicBool::new(false),
        });
        let nudge = shared.clone();
        let mut policy = LogPolicy::default();
        writer.pragma_update(None, "wal_autocheckpoint", 0).map_err(failed)?;
        // Set after the pragma: `wal_autocheckpoint` installs SQLite's own hook. It runs on
        // the writer thread after each commit; `pages` is the log's length.
        writer
            .wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, pages: std::ffi::c_int| {
                let next = policy.after_commit(pages, nudge.copied.load(Ordering::Relaxed));
                if next.wake_checkpointer {
                    let mut s = nudge.state.lock().expect("checkpointer lock");
                    if !s.wanted {
                        s.wanted = true;
                        nudge.wake.notify_one();
                    }
                }
                if next.finish_on_writer {
                    nudge.finish.store(true, Ordering::Relaxed);
                }
                Ok(())
            }))
            .map_err(failed)?;
        let worker = shared.clone();
        let handle = std::thread::Builder::new()
            .name("plughost-ckpt".into())
            .spawn(move || checkpoint_loop(&conn, &worker))
            .map_err(|e| BackendError::with_source("cannot start the WAL checkpointer", e))?;
        Ok(Checkpointer { shared, handle: Some(handle) })
    }

    /// On the writer thread, before a batch: copies the rest of a long log if the last
    /// commit asked for it, so that the batch starts the log over.
    fn finish_on_writer(&self, writer: &Connection) {
        if !self.shared.finish.swap(false, Ordering::Relaxed) {
            return;
        }
        // Should the checkpointer be running one, a later commit asks again.
        self.shared.checkpoint(writer);
    }

    fn stop(&mut self) {
        self.shared.state.lock().expect("checkpointer lock").stopping = true;
        self.shared.wake.notify_one();
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// What is to be done about the log after a commit.
#[derive(Debug, PartialEq)]
struct AfterCommit {
    wake_checkpointer: bool,
    finish_on_writer: bool,
}

/// Decides, after each commit, from the log's length and what the last checkpoint had
/// copied, whether to wake the checkpointer and whether the writer copies the rest of the
/// log before its next batch (see [`Checkpointer`]).
struct LogPolicy {
    /// The log length from which the writer (next) copies the rest of the log.
    finish_from: i32,
}

impl Default for LogPolicy {
    fn default() -> LogPolicy {
        LogPolicy { finish_from: RESTART_PAGES }
    }
}

impl LogPolicy {
    fn after_commit(&mut self, pages: i32, copied: i32) -> AfterCommit {
        // A log shorter than what was copied has started over since.
        let left = if pages >= copied { pages - copied } else { pages };
        let mut finish_on_writer = false;
        if pages < RESTART_PAGES {
            self.finish_from = RESTART_PAGES;
        } else if pages >= self.finish_from && (left <= FINISH_PAGES || pages >= 2 * RESTART_PAGES) {
            finish_on_writer = true;
            // Should a reader keep the log from starting over, try again this much later.
            self.finish_from = pages + FINISH_PAGES;
        }
        AfterCommit { wake_checkpointer: left >= CHECKPOINT_PAGES, finish_on_writer }
    }
}

impl Shared {
    /// Runs a passive checkpoint on `conn` and notes how much of the log it left copied.
    fn checkpoint(&self, conn: &Connection) {
        match conn.wal_checkpoint_v2(None::<&str>, rusqlite::wal::CheckpointMode::PASSIVE) {
            Ok((_, copied)) => self.copied.store(copied, Ordering::Relaxed),
            // Another connection is checkpointing (a passive checkpoint never waits).
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::DatabaseBusy => {}
            // The log only grows meanwhile; the next checkpoint tries again.
            Err(e) => tracing::warn!(path = %self.path.display(), error = %e, "WAL checkpoint failed"),
        }
    }
}

fn checkpoint_loop(conn: &Connection, shared: &Shared) {
    loop {
        {
            let mut s = shared.state.lock().expect("checkpointer lock");
            while !s.wanted && !s.stopping {
                s = shared.wake.wait(s).expect("checkpointer lock");
            }
            if s.stopping {
                return;
            }
            s.wanted = false;
        }
        // If another connection is checkpointing, the next commit past the threshold asks
        // again.
        shared.checkpoint(conn);
    }
}

impl Backend for SqliteBackend {
    fn load(&mut self) -> Result<Loaded, BackendError> {
        queries::load(&self.conn).map_err(|e| BackendError::with_source("cannot load the stored state", e))
    }

    fn apply(&mut self, writes: &[Write<'_>]) -> Result<Vec<Pruned>, BackendError> {
        self.checkpointer.finish_on_writer(&self.conn);
        writes::apply(&mut self.conn, writes, &mut self.blobs)
            .map_err(|e| BackendError::with_source("cannot write a batch", e))
    }
}

/// The reader side: a pool of read connections.
pub(super) struct SqliteReader {
    path: PathBuf,
    pool: Mutex<Vec<Connection>>,
}

impl SqliteReader {
    /// Runs a query on a pooled read connection; `what` says what it was for if it fails.
    fn read<T>(
        &self,
        what: &'static str,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, BackendError> {
        let pooled = self.pool.lock().expect("reader pool lock").pop();
        let conn = match pooled {
            Some(c) => c,
            None => schema::open_reader(&self.path)
                .map_err(|e| BackendError::with_source("cannot open a read connection", e))?,
        };
        let out = f(&conn).map_err(|e| BackendError::with_source(what, e));
        let mut pool = self.pool.lock().expect("reader pool lock");
        if pool.len() < READ_POOL {
            pool.push(conn);
        }
        out
    }
}

impl Reader for SqliteReader {
    fn job(&self, seq: i64) -> Result<Option<Job>, BackendError> {
        self.read("cannot read a job", |c| queries::job(c, seq))
    }

    fn jobs(&self, query: &JobQuery) -> Result<Vec<JobView>, BackendError> {
        self.read("cannot list jobs", |c| queries::jobs(c, query))
    }

    fn attempts(&self, job_seq: i64) -> Result<Vec<AttemptView>, BackendError> {
        self.read("cannot read a job's attempts", |c| queries::attempts(c, job_seq))
    }

    fn activities(
        &self,
        job_type: Option<&str>,
        job_id: Option<&str>,
        before_id: Option<i64>,
        limit: usize,
    ) -> Result<Vec<ActivityView>, BackendError> {
        self.read("cannot list activities", |c| queries::activities(c, job_type, job_id, before_id, limit))
    }

    fn feed(
        &self,
        job_type: Option<&str>,
        job_id: Option<&str>,
        before_id: Option<i64>,
        limit: usize,
    ) -> Result<Vec<ActivityView>, BackendError> {
        self.read("cannot list activities", |c| queries::feed(c, job_type, job_id, before_id, limit))
    }

    fn finished_jobs(&self, since: i64, until: i64, visit: &mut dyn FnMut(FinishedJob)) -> Result<(), BackendError> {
        self.read("cannot read the finished jobs", |c| queries::finished_jobs(c, since, until, visit))
    }

    fn detection_runs(&self, job_type: &str, success: bool, limit: usize) -> Result<Vec<RunView>, BackendError> {
        self.read("cannot list detection runs", |c| queries::detection_runs(c, job_type, success, limit))
    }

    fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, BackendError> {
        self.read("cannot list audit events", |c| queries::audit(c, query))
    }

    fn audit_count(&self, query: &AuditQuery) -> Result<i64, BackendError> {
        self.read("cannot count audit events", |c| queries::audit_count(c, query))
    }

    fn audit_oldest(&self, after: i64, up_to: i64, limit: usize) -> Result<Vec<AuditEvent>, BackendError> {
        self.read("cannot read audit events to archive", |c| queries::audit_oldest(c, after, up_to, limit))
    }

    fn audit_cutoff(&self, before_ms: Option<i64>, keep: Option<i64>) -> Result<Option<(i64, i64)>, BackendError> {
        self.read("cannot find the audit events to prune", |c| queries::audit_cutoff(c, before_ms, keep))
    }

    fn dead_letters(&self) -> Result<Vec<(String, i64)>, BackendError> {
        self.read("cannot count dead letters", queries::dead_letters)
    }

    fn replayed_as(&self, seq: i64) -> Result<Option<i64>, BackendError> {
        self.read("cannot look up a job's replay", |c| queries::replayed_as(c, seq))
    }

    fn newest_with_keys(
        &self,
        job_type: &str,
        after_seq: i64,
        keys: &[String],
    ) -> Result<std::collections::HashMap<String, i64>, BackendError> {
        self.read("cannot look up newer jobs with a dedupe key", |c| {
            queries::newest_with_keys(c, job_type, after_seq, keys)
        })
    }
}

#[cfg(test)]
mod tests {
    use proto::pb::JobState;

    use super::*;
    use crate::{
        events::EventBus,
        job::{StopRequest, now_ms},
        store::{
            Op, Store,
            backend::JobQuery,
            backend_tests,
            tests::{job, temp_dir},
        },
    };

    /// A store at `path` whose jobs table is the old one (a column per field), holding
    /// `jobs`, written as the build before the compact row wrote them, without the
    /// `dropped` columns (as builds before those columns wrote it).
    fn legacy_store(path: &Path, jobs: &[&Job], dropped: &[&str]) {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(legacy::JOBS_TABLE).unwrap();
        for job in jobs {
            legacy::insert(&conn, job).unwrap();
        }
        for column in dropped {
            conn.execute_batch(&format!("ALTER TABLE jobs DROP COLUMN {column}")).unwrap();
        }
    }

    fn table_names(path: &Path) -> Vec<String> {
        let conn = Connection::open(path).unwrap();
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE tbl_name LIKE 'jobs%' AND sql IS NOT NULL ORDER BY name")
            .unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    }

    /// A store from before the compact row has every job rewritten in it when it opens:
    /// each reads back as it was, the load and the queries find them, the old table is
    /// gone with its indexes, and the store writes on in the new layout.
    #[test]
    fn an_older_stores_jobs_are_rewritten_in_the_compact_row_when_it_opens() {
        let dir = temp_dir("legacy-jobs");
        let path = dir.0.join("state.db");
        let running = backend_tests::every_field(7);
        let mut done = job(8, JobState::Succeeded, 50);
        (done.attempts, done.attempts_total, done.worker_id, done.request_id) = (1, 2, "w".into(), "r".into());
        (done.assigned_at, done.completed_at) = (40, 50);
        let pending = job(9, JobState::Pending, 70);
        legacy_store(&path, &[&running, &done, &pending], &[]);

        let (mut backend, reader) = open(&path).unwrap();
        assert_eq!(table_names(&path), ["jobs", "jobs_by_replay", "jobs_by_type", "jobs_dead_letters", "jobs_open"]);
        for want in [&running, &done, &pending] {
            backend_tests::assert_same_job(&reader.job(want.seq).unwrap().unwrap(), want);
        }
        let loaded = backend.load().unwrap();
        assert_eq!(loaded.active.iter().map(|j| j.seq).collect::<Vec<_>>(), [7, 9]);
        assert_eq!(loaded.counts.get(&("t".to_string(), JobState::Succeeded as i32)), Some(&1));
        assert_eq!(loaded.next_job_seq, 10);
        let last = reader.attempts(8).unwrap();
        assert_eq!(
            last.iter().map(|a| (a.attempt, &*a.worker_id, a.started_at, a.ended_at)).collect::<Vec<_>>(),
            [(2, "w", 40, 50)]
        );
        let mut finished = Vec::new();
        reader.finished_jobs(0, 100, &mut |f| finished.push((f.state, f.assigned_at, f.attempts_total))).unwrap();
        assert_eq!(finished, [(JobState::Succeeded, 40, 2)]);

        let mut ended = pending.clone();
        (ended.state, ended.completed_at, ended.worker_id) = (JobState::Succeeded, 80, "w2".into());
        backend.apply(&[Write::UpdateJob(&ended)]).unwrap();
        backend_tests::assert_same_job(&reader.job(9).unwrap().unwrap(), &ended);
        drop((backend, reader));
        // Opened again: nothing left to convert.
        let (_backend, reader) = open(&path).unwrap();
        assert!(!legacy::is_legacy(&Connection::open(&path).unwrap()).unwrap());
        backend_tests::assert_same_job(&reader.job(7).unwrap().unwrap(), &running);
    }

    /// A job's row keeps room for what it gains when it ends ([`rows::RowBudget`]). Once
    /// an ended job has taught the writer the budget, a job inserted after is as long at
    /// its end as at its insert (so SQLite overwrites it in place), whether it succeeds or
    /// fails; a job that outgrows the budget is written at its own length and does not
    /// raise the budget past its cap; and every job reads back as written.
    #[test]
    fn a_rows_length_keeps_from_its_insert_to_its_end_within_the_budget() {
        let dir = temp_dir("row-budget");
        let path = dir.0.join("state.db");
        let (mut backend, reader) = open(&path).unwrap();
        let stats = Connection::open(&path).unwrap();
        let payload = || -> i64 {
            stats.query_row("SELECT sum(payload) FROM dbstat WHERE name = 'jobs'", [], |r| r.get(0)).unwrap()
        };
        const AT: i64 = 1_800_000_000_000;
        let fresh = |seq: i64| {
            let mut j = job(seq, JobState::Pending, AT);
            (j.ready_at, j.failed_on) = (AT, Vec::new());
            j
        };
        let ended = |seq: i64, state: JobState| {
            let mut j = fresh(seq);
            (j.state, j.attempts, j.attempts_total, j.assigned_at) = (state, 1, 1, AT + 10);
            (j.updated_at, j.completed_at) = (AT + 50, AT + 50);
            (j.worker_id, j.request_id) = ("worker-7".into(), format!("exec-1f2e3d4c-{seq}").into());
            match state {
                JobState::Failed => j.error = "full".into(),
                _ => j.message = "done".into(),
            }
            j
        };
        // The row's length at its insert, and what its end added to it.
        let mut insert_then_end = |end: &Job| -> (i64, i64) {
            let empty = payload();
            backend.apply(&[Write::InsertJob(&fresh(end.seq))]).unwrap();
            let inserted = payload();
            backend.apply(&[Write::UpdateJob(end)]).unwrap();
            backend_tests::assert_same_job(&reader.job(end.seq).unwrap().unwrap(), end);
            (inserted - empty, payload() - inserted)
        };

        let (unpadded, grown) = insert_then_end(&ended(1, JobState::Succeeded));
        assert!(grown > 0, "before any budget, a row grows as its job ends");
        let (padded, grown) = insert_then_end(&ended(2, JobState::Succeeded));
        assert_eq!(grown, 0, "a row inserted under the budget is as long at its end");
        assert!(padded > unpadded, "{padded} > {unpadded}");
        let (_, grown) = insert_then_end(&ended(3, JobState::Failed));
        assert_eq!(grown, 0, "a failed job with a short error keeps within the budget too");
        let mut long = ended(4, JobState::Succeeded);
        long.message = "m".repeat(400).into();
        let (_, grown) = insert_then_end(&long);
        assert!(grown > 0, "a job past the budget's cap grows");
        let (after_long, grown) = insert_then_end(&ended(5, JobState::Succeeded));
        assert_eq!((after_long, grown), (padded, 0), "the budget did not follow the long job past its cap");
    }

    /// A batch's new jobs go in statements of many rows: each lands with its own row
    /// whatever statement it went in, and a prune between them deletes the ones before it
    /// and not the ones after, as if every write were applied in order.
    #[test]
    fn new_jobs_in_statements_of_many_rows_land_each_as_written_and_in_order_with_a_prune() {
        let dir = temp_dir("many-rows");
        let (mut backend, reader) = open(&dir.0.join("state.db")).unwrap();
        let mut jobs: Vec<Job> = (1..=23).map(|seq| job(seq, JobState::Pending, 100 + seq)).collect();
        for j in &mut jobs {
            j.error = format!("e{}", j.seq).into();
        }
        let (mut before, mut after) = (job(50, JobState::Succeeded, 5), job(51, JobState::Succeeded, 5));
        (before.completed_at, after.completed_at) = (5, 5);
        let mut writes: Vec<Write<'_>> = jobs[..21].iter().map(Write::InsertJob).collect();
        writes.push(Write::InsertJob(&before));
        writes.push(Write::Prune { before_ms: 10 });
        writes.extend(jobs[21..].iter().map(Write::InsertJob));
        writes.push(Write::InsertJob(&after));
        let pruned = backend.apply(&writes).unwrap();
        assert_eq!(pruned, [std::collections::HashMap::from([(("t".to_string(), JobState::Succeeded as i32), 1)])]);
        for want in &jobs {
            backend_tests::assert_same_job(&reader.job(want.seq).unwrap().unwrap(), want);
        }
        assert!(reader.job(50).unwrap().is_none(), "inserted before the prune, and pruned");
        backend_tests::assert_same_job(&reader.job(51).unwrap().unwrap(), &after);
    }

    /// A job whose blob is damaged reads with that blob's fields empty, as the columns
    /// hold them, rather than failing the load and every listing it is in.
    #[test]
    fn a_damaged_blob_reads_as_empty_and_the_rest_of_the_row_as_stored() {
        let dir = temp_dir("damaged-blob");
        let path = dir.0.join("state.db");
        let (mut backend, reader) = open(&path).unwrap();
        let mut j = job(3, JobState::Running, 30);
        (j.worker_id, j.error) = ("w".into(), "kept".into());
        backend.apply(&[Write::InsertJob(&j)]).unwrap();
        Connection::open(&path).unwrap().execute_batch("UPDATE jobs SET status = x'ff', spec = x'0a'").unwrap();
        let got = reader.job(3).unwrap().unwrap();
        assert_eq!((&*got.worker_id, got.spec.parameters.as_map()), ("", None), "the blobs read as empty");
        assert_eq!((got.state, &*got.error, &*got.spec.summary), (JobState::Running, "kept", "job 3"));
        assert_eq!(backend.load().unwrap().active.iter().map(|j| j.seq).collect::<Vec<_>>(), [3]);
    }

    /// The oldest layout lacked the stop request, the replayed job and the cluster
    /// context: they read back as none, and a job written after that keeps them.
    #[tokio::test]
    async fn the_oldest_layout_is_rewritten_with_the_fields_it_lacked_as_none() {
        let dir = temp_dir("oldest-jobs");
        std::fs::create_dir_all(dir.0.join("plugin")).unwrap();
        let path = dir.0.join("plugin/state.db");
        let old = job(1, JobState::Pending, now_ms());
        legacy_store(&path, &[&old], &["stop_outcome", "stop_reason", "replay_of", "cluster_context"]);
        let (store, loaded) = Store::open(&dir.0, Arc::new(EventBus::new(16))).unwrap();
        assert_eq!(loaded.active.len(), 1);
        backend_tests::assert_same_job(&store.job(1).unwrap().unwrap(), &old);

        let context = proto::pb::ClusterContext { master_grpc_addresses: vec!["m:9333".into()], ..Default::default() };
        let mut j = job(2, JobState::Running, now_ms());
        Arc::make_mut(&mut j.spec).cluster_context = Some(Arc::new(context.clone()));
        j.stop = Some(Box::new(StopRequest { reason: "why".into(), outcome: JobState::Canceled, deadline: 0 }));
        store.write(Op::InsertJob(Arc::new(j)));
        store.settle().await;
        let got = store.job(2).unwrap().unwrap();
        assert_eq!((got.spec.cluster_context.as_deref(), got.stop.unwrap().reason.as_str()), (Some(&context), "why"));
        store.close();
    }

    #[tokio::test]
    async fn a_long_log_is_copied_into_the_database_beside_the_writer() {
        let dir = temp_dir("checkpoint");
        let (store, _) = Store::open(&dir.0, Arc::new(EventBus::new(16))).unwrap();
        let db_len = || std::fs::metadata(store.path()).map(|m| m.len()).unwrap_or(0);
        let before = db_len();
        // About 2,000 pages of 4 KiB: twice the log length that asks for a checkpoint.
        for seq in 1..=2_000 {
            let mut j = job(seq, JobState::Pending, now_ms());
            Arc::make_mut(&mut j.spec).detail = "x".repeat(4_000).into();
            store.write(Op::InsertJob(Arc::new(j)));
        }
        store.settle().await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while db_len() < before + 4_000_000 {
            assert!(
                std::time::Instant::now() < deadline,
                "the log was not checkpointed: the database is {} bytes",
                db_len()
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        store.close();
    }

    /// The writer never waits (the next batch is always queued when one commits), so no
    /// write begins with the whole log copied unless the writer copies the rest itself.
    #[tokio::test]
    async fn a_busy_writers_log_starts_over() {
        let dir = temp_dir("restart");
        let (store, _) = Store::open(&dir.0, Arc::new(EventBus::new(16))).unwrap();
        // Each job fills most of a 4 KiB page, so the jobs alone are this many log frames.
        let jobs = 3 * RESTART_PAGES as i64 + 1_000;
        let mut previous = None;
        for chunk in (1..=jobs).collect::<Vec<_>>().chunks(100) {
            let mut last = 0;
            for &seq in chunk {
                let mut j = job(seq, JobState::Pending, now_ms());
                Arc::make_mut(&mut j.spec).detail = "x".repeat(4_000).into();
                last = store.write(Op::InsertJob(Arc::new(j)));
            }
            if let Some(ticket) = previous.replace(last) {
                store.durable(ticket).await.unwrap();
            }
        }
        store.settle().await;
        let side = Connection::open(store.path()).unwrap();
        let count: i64 = side.query_row("SELECT count(*) FROM jobs", [], |r| r.get(0)).unwrap();
        assert_eq!(count, jobs);
        // A log that never started over holds every job: a frame (4 KiB and a 24-byte
        // header) or more each. The file keeps the longest the log has been.
        let log_len = std::fs::metadata(store.path().with_extension("db-wal")).unwrap().len();
        let every_job = jobs as u64 * (4_096 + 24);
        assert!(log_len < every_job, "the log never started over: {log_len} bytes for {jobs} jobs");
        store.close();
    }

    fn commit(policy: &mut LogPolicy, pages: i32, copied: i32) -> (bool, bool) {
        let next = policy.after_commit(pages, copied);
        (next.wake_checkpointer, next.finish_on_writer)
    }

    #[test]
    fn the_checkpointer_is_woken_per_checkpoint_pages_left_uncopied_not_per_commit() {
        let mut policy = LogPolicy::default();
        assert_eq!(commit(&mut policy, CHECKPOINT_PAGES - 1, 0), (false, false));
        assert_eq!(commit(&mut policy, CHECKPOINT_PAGES, 0), (true, false));
        // The checkpointer copied the first thousand; later commits lengthen the log.
        for pages in (CHECKPOINT_PAGES + 10..2 * CHECKPOINT_PAGES).step_by(10) {
            assert_eq!(commit(&mut policy, pages, CHECKPOINT_PAGES), (false, false), "at {pages} frames");
        }
        assert_eq!(commit(&mut policy, 2 * CHECKPOINT_PAGES, CHECKPOINT_PAGES), (true, false));
        // A log that started over is all uncopied, whatever the last checkpoint copied.
        assert_eq!(commit(&mut policy, CHECKPOINT_PAGES, 3 * CHECKPOINT_PAGES), (true, false));
    }

    #[test]
    fn the_writer_copies_the_rest_of_a_long_log_once_little_is_left() {
        let mut policy = LogPolicy::default();
        // Long, but the checkpointer has not caught up: the writer leaves it to it.
        assert_eq!(commit(&mut policy, RESTART_PAGES, RESTART_PAGES - CHECKPOINT_PAGES), (true, false));
        assert_eq!(commit(&mut policy, RESTART_PAGES + 10, RESTART_PAGES - FINISH_PAGES + 10), (false, true));
        // A reader kept the log from starting over: not again until it has grown some more.
        assert_eq!(commit(&mut policy, RESTART_PAGES + 20, RESTART_PAGES + 10), (false, false));
        assert_eq!(commit(&mut policy, RESTART_PAGES + 10 + FINISH_PAGES, RESTART_PAGES + 10), (false, true));
        // Twice as long: the writer copies the rest however much it is.
        let mut policy = LogPolicy::default();
        assert_eq!(commit(&mut policy, 2 * RESTART_PAGES, 2 * RESTART_PAGES - CHECKPOINT_PAGES), (true, true));
        // Started over: the next long log is handled afresh.
        assert_eq!(commit(&mut policy, 10, 2 * RESTART_PAGES), (false, false));
        assert_eq!(commit(&mut policy, RESTART_PAGES, RESTART_PAGES), (false, true));
    }

    /// A store from before `jobs_by_type` and `jobs_open` has its two state indexes
    /// replaced by them when it opens, and loads as before.
    #[tokio::test]
    async fn an_older_stores_state_indexes_are_replaced_when_it_opens() {
        let dir = temp_dir("job-indexes");
        let events = Arc::new(EventBus::new(16));
        let (store, _) = Store::open(&dir.0, events.clone()).unwrap();
        store.write(Op::InsertJob(Arc::new(job(1, JobState::Succeeded, now_ms()))));
        store.write(Op::InsertJob(Arc::new(job(2, JobState::Pending, now_ms()))));
        store.settle().await;
        store.close();
        let path = dir.0.join("plugin/state.db");
        let indexes = || -> Vec<String> {
            let conn = Connection::open(&path).unwrap();
            let mut stmt = conn
                .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'jobs' AND sql IS NOT NULL ORDER BY name")
                .unwrap();
            stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
        };
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "DROP INDEX jobs_by_type; DROP INDEX jobs_open; \
                 CREATE INDEX jobs_by_state ON jobs(state, seq); \
                 CREATE INDEX jobs_by_type_state ON jobs(job_type, state, seq);",
            )
            .unwrap();
        assert!(indexes().contains(&"jobs_by_state".to_string()));

        let (store, loaded) = Store::open(&dir.0, events).unwrap();
        assert_eq!(indexes(), ["jobs_by_replay", "jobs_by_type", "jobs_dead_letters", "jobs_open"]);
        assert_eq!(loaded.active.iter().map(|j| j.seq).collect::<Vec<_>>(), [2]);
        assert_eq!(loaded.counts.get(&("t".to_string(), JobState::Succeeded as i32)), Some(&1));
        assert_eq!(loaded.counts.get(&("t".to_string(), JobState::Pending as i32)), Some(&1));
        store.close();
    }

    /// An insert over a row that is already there leaves the row as written the second
    /// time, every column and the indexes with it (the writes are upserts).
    #[test]
    fn an_insert_over_an_existing_row_leaves_it_as_written() {
        let dir = temp_dir("upsert");
        let (mut backend, reader) = open(&dir.0.join("state.db")).unwrap();
        let first = job(1, JobState::Pending, 10);
        let mut second = job(1, JobState::Failed, 20);
        Arc::make_mut(&mut second.spec).summary = "second".into();
        second.error = "boom".into();
        backend.apply(&[Write::InsertJob(&first)]).unwrap();
        backend.apply(&[Write::InsertJob(&second)]).unwrap();
        let got = reader.job(1).unwrap().unwrap();
        assert_eq!(
            (got.state, &*got.spec.summary, &*got.error, got.updated_at),
            (JobState::Failed, "second", "boom", 20)
        );
        let loaded = backend.load().unwrap();
        assert!(loaded.active.is_empty(), "the row left jobs_open's pending entry");
        assert_eq!(loaded.counts.get(&("t".to_string(), JobState::Failed as i32)), Some(&1));
        assert_eq!(loaded.counts.len(), 1, "{:?}", loaded.counts);
    }

    /// The plan SQLite picks for `sql` with `args` in the database at `path`, its steps
    /// joined by `; `.
    fn query_plan(path: &Path, sql: &str, args: &[rusqlite::types::Value]) -> String {
        let conn = Connection::open(path).unwrap();
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3)).unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
    }

    /// The queries over jobs read from the two job indexes (see `schema::LATE_INDEXES`),
    /// which are covering for the counts; none walks the table but the listing of
    /// succeeded jobs, which finds them from the newest job.
    #[test]
    fn the_jobs_are_read_from_their_indexes() {
        let dir = temp_dir("jobs-plan");
        let path = dir.0.join("state.db");
        let (_backend, _reader) = open(&path).unwrap();
        let plan = |sql: &str, args: &[rusqlite::types::Value]| query_plan(&path, sql, args);
        let active = plan(&queries::active_sql(), &[1.into(), 2.into(), 3.into()]);
        assert!(active.contains("USING INDEX jobs_open (state=?)"), "{active}");
        let totals = plan(queries::TYPE_TOTALS_SQL, &[]);
        assert!(totals.contains("COVERING INDEX jobs_by_type"), "{totals}");
        let others = plan(queries::NOT_SUCCEEDED_COUNTS_SQL, &[]);
        assert!(others.contains("COVERING INDEX jobs_open"), "{others}");
        let listing = |job_type: Option<&str>, state: Option<JobState>| {
            let q = JobQuery { job_type: job_type.map(String::from), state, ..Default::default() };
            let (sql, args) = queries::jobs_sql(&q);
            plan(&sql, &args)
        };
        let by_type = listing(Some("t"), None);
        assert!(by_type.contains("USING INDEX jobs_by_type (job_type=?)"), "{by_type}");
        for state in [JobState::Pending, JobState::Failed, JobState::Canceled] {
            let by_state = listing(None, Some(state));
            assert!(by_state.contains("USING INDEX jobs_open (state=?)"), "{state:?}: {by_state}");
            let both = listing(Some("t"), Some(state));
            assert!(both.contains("jobs_open (state=?") || both.contains("jobs_by_type (job_type=?"), "{both}");
        }
        let succeeded = listing(Some("t"), Some(JobState::Succeeded));
        assert!(succeeded.contains("USING INDEX jobs_by_type (job_type=?)"), "{succeeded}");
        let everything = listing(None, None);
        assert!(!everything.contains("TEMP B-TREE"), "newest first is the table's own order: {everything}");
    }

    /// The feed's queries read from the partial indexes, so a flood of output lines is
    /// never walked through to find the newest feed entries.
    #[test]
    fn the_feed_reads_from_its_partial_indexes() {
        let dir = temp_dir("feed-plan");
        let path = dir.0.join("state.db");
        let (_backend, _reader) = open(&path).unwrap();
        let overall = query_plan(&path, &queries::activities_sql(true, false, false, false), &[15.into()]);
        assert!(overall.contains("activities_feed"), "{overall}");
        let by_type = query_plan(
            &path,
            &queries::activities_sql(true, true, false, true),
            &["t".to_string().into(), 100.into(), 15.into()],
        );
        assert!(by_type.contains("activities_feed_by_type"), "{by_type}");
    }
}
