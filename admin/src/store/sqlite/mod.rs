//! The SQLite backend: one write connection owned by the writer thread (WAL,
//! synchronous=FULL, cached statements), and a small pool of read connections for the
//! queries, which WAL lets run beside the writer. rusqlite's errors stop here: they leave
//! as the source of a [`BackendError`] that says what was being done.

mod queries;
mod schema;
mod writes;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Condvar, Mutex},
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
    Ok((SqliteBackend { conn, checkpointer }, SqliteReader { path: path.to_path_buf(), pool: Mutex::new(Vec::new()) }))
}

/// The writer side: owns the write connection.
pub(super) struct SqliteBackend {
    conn: Connection,
    checkpointer: Checkpointer,
}

impl Drop for SqliteBackend {
    /// The checkpointer's connection closes first, so the write connection is the last one
    /// and SQLite checkpoints the whole log into the database as it closes.
    fn drop(&mut self) {
        self.checkpointer.stop();
    }
}

/// Log frames (pages) after which the checkpointer copies the WAL back into the database,
/// as SQLite's own automatic checkpoint would.
const CHECKPOINT_PAGES: i32 = 1000;

/// Keeps WAL checkpoints off the commit path. SQLite's automatic checkpoint runs inside
/// the commit that crosses [`CHECKPOINT_PAGES`], so one commit in many pays for copying the
/// log into the database (and syncing it) while every producer waits for it. Here the write
/// connection's automatic checkpoint is off; a commit that leaves the log that long wakes
/// this thread, which runs a passive checkpoint on its own connection beside the writer.
/// The writer restarts the log once a checkpoint has copied all of it.
struct Checkpointer {
    shared: Arc<(Mutex<CheckpointState>, Condvar)>,
    handle: Option<std::thread::JoinHandle<()>>,
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
        let shared: Arc<(Mutex<CheckpointState>, Condvar)> = Arc::default();
        let nudge = shared.clone();
        writer.pragma_update(None, "wal_autocheckpoint", 0).map_err(failed)?;
        // Set after the pragma: `wal_autocheckpoint` installs SQLite's own hook.
        writer
            .wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, pages: std::ffi::c_int| {
                if pages >= CHECKPOINT_PAGES {
                    let (state, wake) = &*nudge;
                    let mut s = state.lock().expect("checkpointer lock");
                    if !s.wanted {
                        s.wanted = true;
                        wake.notify_one();
                    }
                }
                Ok(())
            }))
            .map_err(failed)?;
        let worker = shared.clone();
        let path_for_log = path.to_path_buf();
        let handle = std::thread::Builder::new()
            .name("plughost-ckpt".into())
            .spawn(move || checkpoint_loop(&conn, &worker, &path_for_log))
            .map_err(|e| BackendError::with_source("cannot start the WAL checkpointer", e))?;
        Ok(Checkpointer { shared, handle: Some(handle) })
    }

    fn stop(&mut self) {
        let (state, wake) = &*self.shared;
        state.lock().expect("checkpointer lock").stopping = true;
        wake.notify_one();
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

fn checkpoint_loop(conn: &Connection, shared: &(Mutex<CheckpointState>, Condvar), path: &Path) {
    let (state, wake) = shared;
    loop {
        {
            let mut s = state.lock().expect("checkpointer lock");
            while !s.wanted && !s.stopping {
                s = wake.wait(s).expect("checkpointer lock");
            }
            if s.stopping {
                return;
            }
            s.wanted = false;
        }
        match conn.wal_checkpoint_v2(None::<&str>, rusqlite::wal::CheckpointMode::PASSIVE) {
            Ok(_) => {}
            // Another connection is checkpointing (a passive checkpoint never waits): the next
            // commit past the threshold asks again.
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::DatabaseBusy => {}
            // Likewise; the log only grows meanwhile.
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "WAL checkpoint failed"),
        }
    }
}

impl Backend for SqliteBackend {
    fn load(&mut self) -> Result<Loaded, BackendError> {
        queries::load(&self.conn).map_err(|e| BackendError::with_source("cannot load the stored state", e))
    }

    fn apply(&mut self, writes: &[Write<'_>]) -> Result<Vec<Pruned>, BackendError> {
        writes::apply(&mut self.conn, writes).map_err(|e| BackendError::with_source("cannot write a batch", e))
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
    use std::error::Error;

    use proto::pb::JobState;

    use super::*;
    use crate::{
        events::EventBus,
        job::{ActivityView, AttemptView, StopRequest, now_ms},
        store::{
            Op, Store, StoreError,
            tests::{job, temp_dir},
        },
    };

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
        let old_schema = schema::SCHEMA
            .replace(",\n    stop_outcome INTEGER NOT NULL DEFAULT 0,\n    stop_reason TEXT NOT NULL DEFAULT ''", "");
        assert_ne!(old_schema, schema::SCHEMA, "the old schema lacks the stop columns");
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
    async fn a_jobs_cluster_context_is_kept_and_an_older_store_gets_the_column() {
        let dir = temp_dir("job-context");
        std::fs::create_dir_all(dir.0.join("plugin")).unwrap();
        let old_schema = schema::SCHEMA.replace(",\n    cluster_context BLOB NOT NULL DEFAULT x''", "");
        assert_ne!(old_schema, schema::SCHEMA, "the old schema lacks the column");
        Connection::open(dir.0.join("plugin/state.db")).unwrap().execute_batch(&old_schema).unwrap();
        let (store, _) = Store::open(&dir.0, Arc::new(EventBus::new(16))).unwrap();
        let context = proto::pb::ClusterContext { master_grpc_addresses: vec!["m:9333".into()], ..Default::default() };
        let mut with = job(1, JobState::Pending, now_ms());
        Arc::make_mut(&mut with.spec).cluster_context = Some(Arc::new(context.clone()));
        store.write(Op::InsertJob(Arc::new(with)));
        store.write(Op::InsertJob(Arc::new(job(2, JobState::Pending, now_ms()))));
        store.settle().await;
        assert_eq!(store.job(1).unwrap().unwrap().spec.cluster_context.as_deref(), Some(&context));
        assert_eq!(store.job(2).unwrap().unwrap().spec.cluster_context, None, "none stays none");
        store.close();
    }

    #[test]
    fn a_batch_is_applied_all_or_nothing_and_the_error_says_what_failed() {
        let dir = temp_dir("atomic");
        let path = dir.0.join("state.db");
        let (mut backend, reader) = open(&path).unwrap();
        let side = Connection::open(&path).unwrap();
        side.execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON jobs WHEN NEW.seq = 2 BEGIN SELECT RAISE(ABORT, 'injected'); END;",
        )
        .unwrap();
        let (one, two) = (job(1, JobState::Pending, now_ms()), job(2, JobState::Pending, now_ms()));
        let err = backend.apply(&[Write::InsertJob(&one), Write::InsertJob(&two)]).unwrap_err();
        assert_eq!(err.message(), "cannot write a batch");
        assert!(err.to_string().contains("injected"), "{err}");
        assert!(err.source().is_some_and(|s| s.is::<rusqlite::Error>()), "the driver's error is the source");
        assert!(reader.job(1).unwrap().is_none(), "job 1 was rolled back with job 2");

        side.execute_batch("DROP TRIGGER refuse;").unwrap();
        let pruned = backend.apply(&[Write::InsertJob(&one), Write::InsertJob(&two)]).unwrap();
        assert!(pruned.is_empty());
        assert!(reader.job(1).unwrap().is_some() && reader.job(2).unwrap().is_some(), "the same batch applies later");
    }

    #[test]
    fn a_succeeded_attempt_is_held_by_its_job_row_and_listed_with_the_others() {
        let dir = temp_dir("implied-attempt");
        let path = dir.0.join("state.db");
        let (mut backend, reader) = open(&path).unwrap();
        let mut j = job(1, JobState::Succeeded, 5_000);
        (j.attempts, j.attempts_total, j.worker_id, j.request_id) = (2, 2, "w2".into(), "r2".into());
        (j.assigned_at, j.completed_at) = (4_000, 5_000);
        let failed =
            AttemptView { ended_at: 3_000, error_message: "boom".into(), ..crate::store::tests::attempt(1, "failed") };
        let succeeded = AttemptView {
            attempt: 2,
            worker_id: "w2".into(),
            request_id: "r2".into(),
            started_at: 4_000,
            ended_at: 5_000,
            outcome: "succeeded".into(),
            error_message: String::new(),
        };
        backend
            .apply(&[
                Write::InsertJob(&j),
                Write::Attempt { job_seq: 1, attempt: &failed },
                Write::Attempt { job_seq: 1, attempt: &succeeded },
            ])
            .unwrap();
        let rows: i64 =
            Connection::open(&path).unwrap().query_row("SELECT COUNT(*) FROM attempts", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 1, "only the failed attempt has a row of its own");
        let listed = reader.attempts(1).unwrap();
        let describe = |a: &AttemptView| {
            (
                a.attempt,
                a.worker_id.clone(),
                a.request_id.clone(),
                a.started_at,
                a.ended_at,
                a.outcome.clone(),
                a.error_message.clone(),
            )
        };
        assert_eq!(listed.iter().map(describe).collect::<Vec<_>>(), vec![describe(&failed), describe(&succeeded)]);
        assert!(reader.attempts(2).unwrap().is_empty(), "no job, no attempts");
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
            Arc::make_mut(&mut j.spec).detail = "x".repeat(4_000);
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

    #[tokio::test]
    async fn a_failed_query_is_a_backend_error_with_the_driver_error_as_its_source() {
        let dir = temp_dir("query-error");
        let (store, _) = Store::open(&dir.0, Arc::new(EventBus::new(16))).unwrap();
        Connection::open(store.path()).unwrap().execute_batch("DROP TABLE attempts;").unwrap();
        let err = store.attempts(1).unwrap_err();
        let StoreError::Backend { path, source } = &err else { panic!("not a backend error: {err:?}") };
        assert_eq!(path, store.path());
        assert_eq!(source.message(), "cannot read a job's attempts");
        assert!(source.source().is_some_and(|s| s.is::<rusqlite::Error>()));
        assert!(err.to_string().contains("no such table"), "{err}");
        store.close();
    }

    fn activity(id: i64, job_id: &str, source: &'static str, message: &str) -> ActivityView {
        ActivityView {
            id,
            created_at: 1_000 + id,
            job_type: if id % 2 == 0 { "a".into() } else { "b".into() },
            job_id: job_id.into(),
            source,
            stage: String::new(),
            message: message.into(),
        }
    }

    /// The feed's SQL filter and `job::is_output` decide alike.
    #[test]
    fn the_feed_leaves_out_exactly_the_output_lines() {
        let dir = temp_dir("feed");
        let path = dir.0.join("state.db");
        let (mut backend, reader) = open(&path).unwrap();
        let all = [
            activity(1, "j1", "executor", "stdout: hello"),
            activity(2, "j1", "executor", "stderr: oops"),
            activity(3, "j1", "executor", "copying"),
            activity(4, "", "executor", "stdout: no job"),
            activity(5, "j1", "admin", "stdout: an admin note"),
            activity(6, "j2", "detector", "stderr: a detector"),
            activity(7, "j2", "executor", "stdout:tight"),
            activity(8, "j2", "executor", "STDOUT: loud"),
            activity(9, "j2", "executor", "stdout: "),
            activity(10, "j2", "executor", " stdout: indented"),
        ];
        let writes: Vec<Write<'_>> = all.iter().map(Write::Activity).collect();
        backend.apply(&writes).unwrap();
        let expected = |f: &dyn Fn(&ActivityView) -> bool| -> Vec<i64> {
            all.iter().rev().filter(|a| !crate::job::is_output(a) && f(a)).map(|a| a.id).collect()
        };
        let ids = |v: Vec<ActivityView>| v.into_iter().map(|a| a.id).collect::<Vec<_>>();
        assert_eq!(ids(reader.feed(None, None, None, 100).unwrap()), expected(&|_| true));
        assert_eq!(ids(reader.feed(None, None, None, 100).unwrap()), vec![10, 8, 7, 6, 5, 4, 3]);
        assert_eq!(ids(reader.feed(Some("a"), None, None, 100).unwrap()), expected(&|a| a.job_type == "a"));
        assert_eq!(ids(reader.feed(None, Some("j1"), None, 100).unwrap()), expected(&|a| a.job_id == "j1"));
        assert_eq!(ids(reader.feed(None, None, Some(6), 2).unwrap()), vec![5, 4]);
        assert_eq!(reader.activities(None, None, None, 100).unwrap().len(), 10, "output lines stay stored");
    }

    /// The feed's queries read from the partial indexes, so a flood of output lines is
    /// never walked through to find the newest feed entries.
    #[test]
    fn the_feed_reads_from_its_partial_indexes() {
        let dir = temp_dir("feed-plan");
        let path = dir.0.join("state.db");
        let (_backend, _reader) = open(&path).unwrap();
        let conn = Connection::open(&path).unwrap();
        let plan = |sql: &str, args: &[&dyn rusqlite::ToSql]| -> String {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let rows = stmt.query_map(args, |r| r.get::<_, String>(3)).unwrap();
            rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
        };
        let overall = plan(&queries::activities_sql(true, false, false, false), &[&15]);
        assert!(overall.contains("activities_feed"), "{overall}");
        let by_type = plan(&queries::activities_sql(true, true, false, true), &[&"t", &100, &15]);
        assert!(by_type.contains("activities_feed_by_type"), "{by_type}");
    }

    #[test]
    fn finished_jobs_are_those_in_a_final_state_that_completed_in_the_range() {
        let dir = temp_dir("finished");
        let path = dir.0.join("state.db");
        let (mut backend, reader) = open(&path).unwrap();
        let mut jobs = Vec::new();
        for (seq, state, completed_at) in [
            (1, JobState::Succeeded, 1_000),
            (2, JobState::Failed, 2_000),
            (3, JobState::Canceled, 2_999),
            (4, JobState::Succeeded, 3_000),
            (5, JobState::Succeeded, 999),
            (6, JobState::Pending, 0),
        ] {
            let mut j = job(seq, state, 500);
            (j.completed_at, j.assigned_at, j.attempts_total) = (completed_at, 700, 1);
            j.worker_id = if seq == 3 { String::new() } else { "w1".into() };
            jobs.push(j);
        }
        backend.apply(&jobs.iter().map(Write::InsertJob).collect::<Vec<_>>()).unwrap();
        let mut seen = Vec::new();
        reader.finished_jobs(1_000, 3_000, &mut |f| seen.push((f.state, f.completed_at, f.had_worker))).unwrap();
        seen.sort_by_key(|s| s.1);
        assert_eq!(
            seen,
            vec![
                (JobState::Succeeded, 1_000, true),
                (JobState::Failed, 2_000, true),
                (JobState::Canceled, 2_999, false)
            ]
        );
    }
}
