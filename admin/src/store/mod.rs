//! Durable state: jobs, attempts, activities and run history. It lives in one of two
//! backends behind the [`Backend`] and [`Reader`] traits, and nothing of either shows in
//! [`Store`]'s API:
//!
//! - **SQLite** (`sqlite`, [`Store::open`]): `<data>/plugin/state.db` (WAL,
//!   synchronous=FULL), for a single admin.
//! - **PostgreSQL** (`postgres`, [`Store::open_postgres`]): a database shared by several
//!   admins of which one, the leader, writes. Its batches are fenced by the leader's
//!   lease epoch: once another admin has taken the lease, a batch is refused, the writer
//!   stops and [`Store::fenced`] turns true. Standbys read through a [`StoreReader`]
//!   ([`StoreReader::open_postgres`]).
//!
//! How writes go:
//!
//! - **Group commit.** One writer thread (`writer`) owns the write side of the backend
//!   and applies operations in batches: it takes everything queued, has the backend write
//!   it in one transaction and commit once, so a thousand job updates cost one fsync, not
//!   a thousand. Producers push onto a swap-buffer queue (one lock round trip, no
//!   per-operation channel allocation) and get a ticket.
//! - **Coalescing.** Within a batch each job is written once, with its newest state (an
//!   insert followed by updates is one insert of the newest state), and each attempt
//!   record once. The writer does this before the backend sees the batch, so every
//!   backend gets it.
//! - **Persisted, then published.** After the commit the writer hands the batch to its
//!   publisher thread, which marks the batch's tickets durable and only then publishes
//!   its events, in commit order, and frees the batch, while the writer commits the next. Callers that must know an
//!   operation is durable (a job before it may be dispatched) wait on its ticket
//!   ([`Store::durable`]).
//! - **Retry.** A batch that fails to commit (disk full, I/O error, a lost connection) is
//!   retried with the admin's backoff (100 ms doubling to 5 s); it is never reported
//!   durable before it commits, nothing queued after it becomes durable either, and
//!   [`Store::is_healthy`] is false meanwhile (`/readyz` reports it). A fenced batch is
//!   not retried: it and everything queued are dropped, never durable
//!   ([`StoreError::Fenced`]), and the store stays unhealthy.
//! - **Reads** go to the backend's [`Reader`], which runs beside the writer (SQLite: a
//!   pool of read connections under WAL; PostgreSQL: a reader thread with a few
//!   connections). [`Store::settle`] first gives read-your-writes. The read methods are
//!   [`StoreReader`]'s, which a [`Store`] derefs to.
//!
//! The queue to the writer is unbounded on purpose: producers hold the job table's lock
//! and must not block; the flow is bounded upstream, because jobs only enter after the
//! store has made them durable, and each job produces a handful of updates.
//!
//! Modules: `backend` (the traits and the backend-neutral types), `writer` (the
//! writer thread and the coalescing), `sqlite` and `postgres` (the backends: schema and
//! migrations, writes, queries).

/// The condition that keeps an activity in the feed: it is not an output line of a job
/// (an executor's activity whose message starts with `stdout: ` or `stderr: `; see
/// [`crate::job::is_output`], which says the same in Rust). One text, so the feed's
/// queries use the partial indexes built on it (SQLite matches them word for
/// word; PostgreSQL proves the index's predicate from the query's, which this makes trivial).
/// Both backends use it.
macro_rules! not_output {
    () => {
        "NOT (source = 'executor' AND job_id <> '' AND substr(message, 1, 8) IN ('stdout: ', 'stderr: '))"
    };
}

/// The condition of the jobs' partial index `jobs_open`: every state but SUCCEEDED (4),
/// which is most jobs, so a job that succeeds leaves the index and enters none. A query
/// that filters on another state says it too, word for word, so that the backend reads
/// that index (SQLite matches a partial index's condition by its text; PostgreSQL has to
/// prove it, which a parameter's value would not let it do for a prepared statement).
/// Both backends use it.
macro_rules! not_succeeded {
    () => {
        "state <> 4"
    };
}

mod backend;
#[cfg(test)]
mod backend_tests;
mod columns;
pub mod postgres;
mod sqlite;
mod writer;

use std::{
    ops::Deref,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use proto::pb::JobState;
use tokio::sync::watch;

pub use self::backend::{Backend, BackendError, FinishedJob, JobQuery, Loaded, MAX_PAGE, Op, Pruned, Reader, Write};
pub use self::columns::implied_by_job_row;
pub use self::postgres::PgTarget;
use self::writer::Queue;
use crate::{
    audit::{AuditEvent, AuditQuery},
    events::{EventBus, EventKind},
    job::{ActivityView, AttemptView, Job, JobView, RunView},
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed an operation.
    #[error("state store {path}: {source}")]
    Backend {
        path: PathBuf,
        #[source]
        source: BackendError,
    },
    /// The store's directory could not be created, or its writer thread not started.
    #[error("state store {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state store is closed")]
    Closed,
    /// The write was dropped, never committed: another admin took the lease (see
    /// [`Store::fenced`]).
    #[error("state store is fenced: another admin holds the lease, so this write was dropped")]
    Fenced,
}

pub struct Store {
    queue: Arc<Queue>,
    /// False while the writer cannot commit; `/readyz` and the gRPC health service
    /// report it.
    healthy: watch::Receiver<bool>,
    /// True once a batch was refused as fenced; the writer has stopped.
    fenced: watch::Receiver<bool>,
    committed: watch::Receiver<u64>,
    reads: StoreReader,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// What the writer committed, for the metrics.
    counters: Arc<writer::Committed>,
}

/// The store's reads ([`StoreReader`]'s methods) are a [`Store`]'s too.
impl Deref for Store {
    type Target = StoreReader;

    fn deref(&self) -> &StoreReader {
        &self.reads
    }
}

impl Store {
    /// Opens (creating if needed) `<data>/plugin/state.db`, loads what the admin needs to
    /// resume, and starts the writer thread. Events of committed batches go to `events`.
    pub fn open(data_dir: &Path, events: Arc<EventBus>) -> Result<(Arc<Store>, Loaded), StoreError> {
        let dir = data_dir.join("plugin");
        std::fs::create_dir_all(&dir).map_err(|source| StoreError::Io { path: dir.clone(), source })?;
        let path = dir.join("state.db");
        let (backend, reader) =
            sqlite::open(&path).map_err(|source| StoreError::Backend { path: path.clone(), source })?;
        Store::start(path, backend, reader, events)
    }

    /// Opens the PostgreSQL database `target` names: creates or migrates its schema, loads
    /// what the admin needs to resume, and starts the writer thread. With `fence_epoch`,
    /// the migrations and every batch first check, in their transaction, that the lease
    /// (`plughost_lease`, see [`postgres::ensure_lease_table`]) still has this epoch, and
    /// refuse to write otherwise; the store's [`StoreReader::path`] is the redacted URL. May be
    /// called from inside a tokio runtime (the backend runs its own).
    pub fn open_postgres(
        target: &PgTarget,
        fence_epoch: Option<i64>,
        events: Arc<EventBus>,
    ) -> Result<(Arc<Store>, Loaded), StoreError> {
        let path = PathBuf::from(target.redacted());
        let (backend, reader) =
            postgres::open(target, fence_epoch).map_err(|source| StoreError::Backend { path: path.clone(), source })?;
        Store::start(path, backend, reader, events)
    }

    /// A read-only store over PostgreSQL for a standby's pages: the state as the leader last
    /// committed it and the database's queries. It writes nothing: every write is dropped
    /// and never becomes durable (waiting for one returns at once with
    /// [`StoreError::Closed`]).
    pub fn snapshot_postgres(target: &PgTarget) -> Result<(Arc<Store>, Loaded), StoreError> {
        let path = PathBuf::from(target.redacted());
        let (loaded, reader) =
            postgres::open_snapshot(target).map_err(|source| StoreError::Backend { path: path.clone(), source })?;
        let queue = Arc::new(Queue::new());
        queue.abandon();
        // The senders go at once: nothing will ever commit.
        let (_, committed) = watch::channel(0u64);
        let (_, healthy) = watch::channel(true);
        let (_, fenced) = watch::channel(false);
        let store = Arc::new(Store {
            queue,
            healthy,
            fenced,
            committed,
            reads: StoreReader { path, reader: Box::new(reader) },
            writer: Mutex::new(None),
            counters: Arc::default(),
        });
        Ok((store, loaded))
    }

    /// Starts a store over any backend: loads what the admin needs to resume, then hands
    /// the writer side to the writer thread. `path` names the store in errors and logs.
    pub(crate) fn start<B: Backend, R: Reader>(
        path: PathBuf,
        mut backend: B,
        reader: R,
        events: Arc<EventBus>,
    ) -> Result<(Arc<Store>, Loaded), StoreError> {
        let loaded = backend.load().map_err(|source| StoreError::Backend { path: path.clone(), source })?;
        let queue = Arc::new(Queue::new());
        let (committed_tx, committed) = watch::channel(0u64);
        let (healthy_tx, healthy) = watch::channel(true);
        let (fenced_tx, fenced) = watch::channel(false);
        let counters = Arc::new(writer::Committed::default());
        let writer = writer::spawn(
            backend,
            queue.clone(),
            counters.clone(),
            healthy_tx,
            fenced_tx,
            committed_tx,
            events,
            path.clone(),
        )
        .map_err(|source| StoreError::Io { path: path.clone(), source })?;
        let store = Arc::new(Store {
            queue,
            healthy,
            fenced,
            committed,
            reads: StoreReader { path, reader: Box::new(reader) },
            writer: Mutex::new(Some(writer)),
            counters,
        });
        Ok((store, loaded))
    }

    /// The writer's counters as metrics: committed batches, the operations queued into
    /// them, and the rows written once coalesced.
    pub fn metrics(&self) -> Vec<crate::monitor::MetricFamily> {
        use std::sync::atomic::Ordering::Relaxed;

        use crate::monitor::{MetricFamily, MetricKind};
        let c = &self.counters;
        let counter = |name: &str, help: &str, n: &std::sync::atomic::AtomicU64| {
            MetricFamily::new(name, MetricKind::Counter, help).with(&[], n.load(Relaxed) as f64)
        };
        vec![
            counter("plughost_store_batches_total", "batches (transactions) the store committed", &c.batches),
            counter(
                "plughost_store_operations_total",
                "operations (job changes, attempts, activities, ...) in the committed batches",
                &c.operations,
            ),
            counter(
                "plughost_store_writes_total",
                "rows the committed batches wrote, after coalescing each job's changes in a batch",
                &c.writes,
            ),
        ]
    }

    /// False while the last batch failed to commit (it is being retried), and for good
    /// once the store is fenced.
    pub fn is_healthy(&self) -> bool {
        *self.healthy.borrow()
    }

    /// Follows [`Store::is_healthy`]: the receiver is told each time it changes (and
    /// sees the channel closed once the writer has stopped).
    pub fn health(&self) -> watch::Receiver<bool> {
        self.healthy.clone()
    }

    /// True once the backend refused a batch because another admin holds the lease: the
    /// writer has stopped, dropped everything queued, and takes no more writes. It never
    /// turns false again; wait for it with `wait_for(|f| *f)` (the channel closes when the
    /// writer stops, fenced or not, and keeps its last value).
    pub fn fenced(&self) -> watch::Receiver<bool> {
        self.fenced.clone()
    }

    /// Queues a write (and an event to publish once it is committed); returns its ticket.
    pub fn submit(&self, op: Option<Op>, event: Option<EventKind>) -> u64 {
        self.queue.push(op, event)
    }

    pub fn write(&self, op: Op) -> u64 {
        self.submit(Some(op), None)
    }

    /// Waits until the write with this ticket (and every earlier one) is committed.
    /// [`StoreError::Fenced`] when it was dropped because the store is fenced,
    /// [`StoreError::Closed`] when it was dropped at close.
    pub async fn durable(&self, ticket: u64) -> Result<(), StoreError> {
        let mut rx = self.committed.clone();
        rx.wait_for(|c| *c >= ticket)
            .await
            .map(|_| ())
            .map_err(|_| if *self.fenced.borrow() { StoreError::Fenced } else { StoreError::Closed })
    }

    /// Waits for everything queued so far to be committed, so a read that follows sees
    /// every change made before it (read-your-writes for the history endpoints).
    pub async fn settle(&self) {
        let _ = self.durable(self.last_ticket()).await;
    }

    /// Runs `f` so that every operation it queues is committed in one batch, one
    /// transaction: a command's effect and its audit event land together or not at all.
    /// `f` must be quick and synchronous; the writer waits for it.
    pub fn atomically<R>(&self, f: impl FnOnce() -> R) -> R {
        let _bundle = self.queue.bundle();
        f()
    }

    /// The newest ticket handed out; `durable(last_ticket())` is a flush.
    pub fn last_ticket(&self) -> u64 {
        self.queue.last_ticket()
    }

    /// Stops the writer without committing what is queued, and without waiting for it:
    /// for an admin that stepped down, whose writes the database would refuse anyway (or
    /// could not take: the database is gone). None of it becomes durable.
    pub fn abandon(&self) {
        let dropped = self.queue.abandon();
        if dropped > 0 {
            tracing::warn!(dropped, "state store abandoned; queued writes dropped");
        }
        // Detached: a writer in the middle of a retry's sleep ends by itself.
        drop(self.writer.lock().expect("writer lock").take());
    }

    /// Stops the writer after it has committed everything queued.
    pub fn close(&self) {
        self.queue.close();
        if let Some(handle) = self.writer.lock().expect("writer lock").take() {
            let _ = handle.join();
        }
    }
}

/// The store's read side alone: the history and listing queries over a backend's
/// [`Reader`]. A [`Store`] derefs to one; a standby, which must not write, opens one by
/// itself ([`StoreReader::open_postgres`]).
pub struct StoreReader {
    path: PathBuf,
    reader: Box<dyn Reader>,
}

impl StoreReader {
    /// Reads the PostgreSQL database `target` names, without migrating or writing
    /// anything (a standby's view of the leader's store).
    pub fn open_postgres(target: &PgTarget) -> Result<StoreReader, StoreError> {
        let path = PathBuf::from(target.redacted());
        let reader =
            postgres::open_reader(target).map_err(|source| StoreError::Backend { path: path.clone(), source })?;
        Ok(StoreReader { path, reader: Box::new(reader) })
    }

    /// Where the store lives: the database file, or PostgreSQL's redacted URL.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn backend_error(&self, source: BackendError) -> StoreError {
        StoreError::Backend { path: self.path.clone(), source }
    }

    pub fn job(&self, seq: i64) -> Result<Option<Job>, StoreError> {
        self.reader.job(seq).map_err(|e| self.backend_error(e))
    }

    pub fn jobs(&self, q: &JobQuery) -> Result<Vec<JobView>, StoreError> {
        self.reader.jobs(q).map_err(|e| self.backend_error(e))
    }

    pub fn attempts(&self, seq: i64) -> Result<Vec<AttemptView>, StoreError> {
        self.reader.attempts(seq).map_err(|e| self.backend_error(e))
    }

    /// Newest first. Filters: job type, job id, and ids older than `before_id`.
    pub fn activities(
        &self,
        job_type: Option<&str>,
        job_id: Option<&str>,
        before_id: Option<i64>,
        limit: usize,
    ) -> Result<Vec<ActivityView>, StoreError> {
        self.reader.activities(job_type, job_id, before_id, limit.clamp(1, MAX_PAGE)).map_err(|e| self.backend_error(e))
    }

    /// The activity feed: [`StoreReader::activities`] without the jobs' output lines.
    pub fn feed(
        &self,
        job_type: Option<&str>,
        job_id: Option<&str>,
        before_id: Option<i64>,
        limit: usize,
    ) -> Result<Vec<ActivityView>, StoreError> {
        self.reader.feed(job_type, job_id, before_id, limit.clamp(1, MAX_PAGE)).map_err(|e| self.backend_error(e))
    }

    /// See [`Reader::finished_jobs`].
    pub fn finished_jobs(&self, since: i64, until: i64, visit: &mut dyn FnMut(FinishedJob)) -> Result<(), StoreError> {
        self.reader.finished_jobs(since, until, visit).map_err(|e| self.backend_error(e))
    }

    /// Audit events matching `q`, newest first.
    pub fn audit(&self, q: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        self.reader.audit(q).map_err(|e| self.backend_error(e))
    }

    pub fn audit_count(&self, q: &AuditQuery) -> Result<i64, StoreError> {
        self.reader.audit_count(q).map_err(|e| self.backend_error(e))
    }

    /// Audit events with `after < id <= up_to`, oldest first.
    pub fn audit_oldest(&self, after: i64, up_to: i64, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        self.reader.audit_oldest(after, up_to, limit.clamp(1, MAX_PAGE)).map_err(|e| self.backend_error(e))
    }

    /// See [`Reader::audit_cutoff`].
    pub fn audit_cutoff(&self, before_ms: Option<i64>, keep: Option<i64>) -> Result<Option<(i64, i64)>, StoreError> {
        self.reader.audit_cutoff(before_ms, keep).map_err(|e| self.backend_error(e))
    }

    /// Dead letters per job type.
    pub fn dead_letters(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.reader.dead_letters().map_err(|e| self.backend_error(e))
    }

    pub fn replayed_as(&self, seq: i64) -> Result<Option<i64>, StoreError> {
        self.reader.replayed_as(seq).map_err(|e| self.backend_error(e))
    }

    /// See [`Reader::newest_with_keys`].
    pub fn newest_with_keys(
        &self,
        job_type: &str,
        after_seq: i64,
        keys: &[String],
    ) -> Result<std::collections::HashMap<String, i64>, StoreError> {
        self.reader.newest_with_keys(job_type, after_seq, keys).map_err(|e| self.backend_error(e))
    }

    /// The last `per_outcome` successful and the last `per_outcome` failed runs of a job
    /// type, newest first within each group. Runs are detections (the `runs` table) and
    /// job executions (finished jobs, read from `jobs`, so a job costs no extra row).
    pub fn runs(&self, job_type: &str, per_outcome: usize) -> Result<(Vec<RunView>, Vec<RunView>), StoreError> {
        let detections = |success| self.reader.detection_runs(job_type, success, per_outcome);
        let (mut ok, mut failed) = (
            detections(true).map_err(|e| self.backend_error(e))?,
            detections(false).map_err(|e| self.backend_error(e))?,
        );
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
}

#[cfg(test)]
pub(crate) mod tests {
    use proto::pb;

    use super::*;
    use crate::{job::now_ms, test_support::TempDir};

    pub(crate) fn temp_dir(name: &str) -> TempDir {
        TempDir::new(&format!("store-{name}"))
    }

    /// The backends every store test runs against.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) enum Which {
        Sqlite,
        Postgres,
    }

    /// Where a test's store lives: a fresh directory (SQLite: `<dir>/plugin/state.db`) or
    /// a fresh database (PostgreSQL). Opening it again opens the same store.
    pub(crate) enum Place {
        Dir(TempDir),
        Database(String),
    }

    impl Place {
        pub(crate) fn new(which: Which, tag: &str) -> Place {
            match which {
                Which::Sqlite => Place::Dir(temp_dir(tag)),
                Which::Postgres => Place::Database(crate::test_support::postgres_database(tag)),
            }
        }

        /// The PostgreSQL database's target (panics for SQLite).
        pub(crate) fn target(&self) -> PgTarget {
            match self {
                Place::Database(url) => PgTarget::parse(url, None).unwrap(),
                Place::Dir(_) => panic!("not a PostgreSQL place"),
            }
        }

        /// The PostgreSQL database's URL (panics for SQLite).
        pub(crate) fn url(&self) -> &str {
            match self {
                Place::Database(url) => url,
                Place::Dir(_) => panic!("not a PostgreSQL place"),
            }
        }

        fn sqlite_path(dir: &TempDir) -> PathBuf {
            dir.0.join("plugin/state.db")
        }

        pub(crate) fn try_open(&self, events: Arc<EventBus>) -> Result<(Arc<Store>, Loaded), StoreError> {
            match self {
                Place::Dir(dir) => Store::open(&dir.0, events),
                Place::Database(_) => Store::open_postgres(&self.target(), None, events),
            }
        }

        /// Opens the store (the same one each time), unfenced.
        pub(crate) fn open(&self, events: Arc<EventBus>) -> (Arc<Store>, Loaded) {
            self.try_open(events).unwrap()
        }

        /// The backend's two sides alone, without a store around them.
        pub(crate) fn backend(&self) -> (Box<dyn Backend>, Box<dyn Reader>) {
            match self {
                Place::Dir(dir) => {
                    std::fs::create_dir_all(dir.0.join("plugin")).unwrap();
                    let (b, r) = sqlite::open(&Self::sqlite_path(dir)).unwrap();
                    (Box::new(b), Box::new(r))
                }
                Place::Database(_) => {
                    let (b, r) = postgres::open(&self.target(), None).unwrap();
                    (Box::new(b), Box::new(r))
                }
            }
        }

        /// Runs SQL on a connection of its own (the one for this backend's dialect).
        pub(crate) fn exec(&self, sqlite: &str, postgres: &str) {
            match self {
                Place::Dir(dir) => {
                    rusqlite::Connection::open(Self::sqlite_path(dir)).unwrap().execute_batch(sqlite).unwrap()
                }
                Place::Database(url) => {
                    let (url, sql) = (url.clone(), postgres.to_string());
                    pg_side(url, move |client| async move { client.batch_execute(&sql).await.unwrap() });
                }
            }
        }

        /// The first column of the first row of `sql`, an integer (both dialects alike).
        pub(crate) fn count(&self, sql: &str) -> i64 {
            match self {
                Place::Dir(dir) => rusqlite::Connection::open(Self::sqlite_path(dir))
                    .unwrap()
                    .query_row(sql, [], |r| r.get(0))
                    .unwrap(),
                Place::Database(url) => {
                    let (url, sql) = (url.clone(), sql.to_string());
                    pg_side(
                        url,
                        move |client| async move { client.query_one(&sql, &[]).await.unwrap().get::<_, i64>(0) },
                    )
                }
            }
        }

        /// Whether `e` is this backend's driver error (PostgreSQL's wrapped, so it shows
        /// the server's message, with the driver's as its source).
        pub(crate) fn is_driver_error(&self, e: &(dyn std::error::Error + 'static)) -> bool {
            match self {
                Place::Dir(_) => e.is::<rusqlite::Error>(),
                Place::Database(_) => {
                    e.is::<postgres::PgError>() && e.source().is_some_and(|s| s.is::<tokio_postgres::Error>())
                }
            }
        }
    }

    /// Runs `f` with a connection to `url` on a thread and runtime of its own (the caller
    /// may be inside a runtime).
    pub(crate) fn pg_side<T, F, Fut>(url: String, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(tokio_postgres::Client) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T>,
    {
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
                tokio::spawn(connection);
                f(client).await
            })
        })
        .join()
        .unwrap()
    }

    /// For each test body `async fn name(which: Which)`, a module `name` with a test per
    /// backend (`name::sqlite`, `name::postgres`).
    macro_rules! on_both_backends {
        ($($test:ident),* $(,)?) => {$(
            mod $test {
                #[tokio::test]
                async fn sqlite() {
                    super::$test(super::Which::Sqlite).await
                }
                #[tokio::test]
                async fn postgres() {
                    super::$test(super::Which::Postgres).await
                }
            }
        )*};
    }
    pub(crate) use on_both_backends;

    on_both_backends!(
        updates_in_one_batch_leave_the_newest_state_and_survive_a_reopen,
        events_are_published_only_after_their_batch_commits,
        prune_removes_old_finished_history_and_keeps_active_jobs,
        the_highest_event_id_remembered_is_loaded_at_the_next_start,
        job_queries_filter_and_page_newest_first,
        the_in_memory_filter_agrees_with_the_store_query,
        history_queries_return_attempts_activities_and_runs,
    );

    pub(crate) fn job(seq: i64, state: JobState, updated_at: i64) -> Job {
        let mut spec = crate::test_support::spec(&format!("k{seq}"), updated_at);
        spec.summary = format!("job {seq}").into();
        spec.parameters =
            [("p".to_string(), pb::ConfigValue { kind: Some(pb::config_value::Kind::Int64Value(seq)) })].into();
        let mut job = Job::pending(seq, spec, updated_at);
        job.state = state;
        job.failed_on = vec!["w1".into()];
        job
    }

    pub(crate) fn attempt(n: i32, outcome: &str) -> AttemptView {
        AttemptView {
            attempt: n,
            worker_id: "w1".into(),
            request_id: format!("r{n}"),
            started_at: 1,
            ended_at: 0,
            outcome: outcome.into(),
            error_message: String::new(),
        }
    }

    async fn updates_in_one_batch_leave_the_newest_state_and_survive_a_reopen(which: Which) {
        let place = Place::new(which, "coalesce");
        let events = Arc::new(EventBus::new(64));
        let (store, loaded) = place.open(events.clone());
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

        let (store, loaded) = place.open(events);
        assert_eq!(loaded.active.iter().map(|j| j.seq).collect::<Vec<_>>(), vec![2], "only non-final jobs load");
        assert_eq!(loaded.next_job_seq, 3);
        assert_eq!(loaded.counts.get(&("t".to_string(), JobState::Succeeded as i32)), Some(&1));
        store.close();
    }

    async fn events_are_published_only_after_their_batch_commits(which: Which) {
        let place = Place::new(which, "publish");
        let events = Arc::new(EventBus::new(64));
        let (store, _) = place.open(events.clone());
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

    async fn prune_removes_old_finished_history_and_keeps_active_jobs(which: Which) {
        let place = Place::new(which, "prune");
        let (store, _) = place.open(Arc::new(EventBus::new(16)));
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
        let (store, loaded) = place.open(Arc::new(EventBus::new(16)));
        assert_eq!(loaded.next_job_seq, 5, "the pruned newest job's id is not handed out again");
        store.close();
    }

    async fn the_highest_event_id_remembered_is_loaded_at_the_next_start(which: Which) {
        let place = Place::new(which, "event-ids");
        let (store, loaded) = place.open(Arc::new(EventBus::new(16)));
        assert_eq!(loaded.max_event_id, 0, "nothing remembered yet");
        store.write(Op::EventIds { up_to: 1_700_000_000_000_123 });
        store.write(Op::EventIds { up_to: 1_700_000_000_000_100 });
        store.settle().await;
        store.close();
        let (store, loaded) = place.open(Arc::new(EventBus::new(16)));
        assert_eq!(loaded.max_event_id, 1_700_000_000_000_123, "a lower id never replaces a higher one");
        store.close();
    }

    async fn job_queries_filter_and_page_newest_first(which: Which) {
        let place = Place::new(which, "query");
        let (store, _) = place.open(Arc::new(EventBus::new(16)));
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

    /// `JobQuery::matches` (for jobs listed from memory) decides as the SQL query does.
    async fn the_in_memory_filter_agrees_with_the_store_query(which: Which) {
        let place = Place::new(which, "matches");
        let (store, _) = place.open(Arc::new(EventBus::new(16)));
        let states = [JobState::Pending, JobState::Running, JobState::Succeeded, JobState::Failed];
        let mut jobs = Vec::new();
        for seq in 1..=40i64 {
            let mut j = job(seq, states[seq as usize % 4], 1_000 + seq);
            let spec = Arc::make_mut(&mut j.spec);
            spec.job_type = if seq % 3 == 0 { "other".into() } else { "t".into() };
            spec.summary = format!("Job {seq} of 100%_x").into();
            j.error = if seq % 2 == 0 { format!("Disk FULL on w{seq}").into() } else { Box::default() };
            j.dead_letter = seq % 7 == 0;
            j.completed_at = if j.state == JobState::Succeeded { 5_000 + seq } else { 0 };
            store.write(Op::InsertJob(Arc::new(j.clone())));
            jobs.push(j);
        }
        store.settle().await;
        let queries = [
            JobQuery { job_type: Some("other".into()), ..Default::default() },
            JobQuery { state: Some(JobState::Running), ..Default::default() },
            JobQuery { dead_letter: Some(true), ..Default::default() },
            JobQuery { dead_letter: Some(false), job_type: Some("t".into()), ..Default::default() },
            JobQuery { text: Some("job 1".into()), ..Default::default() },
            JobQuery { text: Some("100%_X".into()), ..Default::default() },
            JobQuery { text: Some("J3".into()), ..Default::default() },
            JobQuery { text: Some("k2".into()), ..Default::default() },
            JobQuery { error_contains: Some("disk full".into()), ..Default::default() },
            JobQuery { completed_since: Some(5_010), completed_until: Some(5_030), ..Default::default() },
            JobQuery { before_seq: Some(20), state: Some(JobState::Succeeded), ..Default::default() },
        ];
        for q in queries {
            let q = JobQuery { limit: MAX_PAGE, ..q };
            let stored: Vec<String> = store.jobs(&q).unwrap().into_iter().map(|v| v.job_id).collect();
            let matched: Vec<String> = jobs.iter().rev().filter(|j| q.matches(j)).map(|j| j.id()).collect();
            assert!(!stored.is_empty(), "{q:?} selects some jobs");
            assert_eq!(matched, stored, "{q:?}");
        }
        store.close();
    }

    async fn history_queries_return_attempts_activities_and_runs(which: Which) {
        let place = Place::new(which, "history");
        let (store, _) = place.open(Arc::new(EventBus::new(16)));
        let now = now_ms();
        let mut done = job(1, JobState::Succeeded, now);
        (done.completed_at, done.attempts_total) = (now, 2);
        done.result_summary = "fine".into();
        store.write(Op::InsertJob(Arc::new(done)));
        store.write(Op::Attempt { job_seq: 1, attempt: Box::new(attempt(2, "canceled")) });
        store.write(Op::Attempt { job_seq: 1, attempt: Box::new(attempt(1, "failed")) });
        for id in 1..=3 {
            store.write(Op::Activity(Box::new(ActivityView {
                id,
                created_at: now,
                job_type: "t".into(),
                job_id: if id == 2 { "j1".into() } else { String::new() },
                source: "executor",
                stage: "run".into(),
                message: format!("a{id}"),
            })));
        }
        for (id, success) in [(1, true), (2, false), (3, true)] {
            store.write(Op::Run(Box::new(RunView {
                id,
                job_type: "t".into(),
                kind: "detection".into(),
                job_id: String::new(),
                worker_id: "w1".into(),
                started_at: now - 10,
                ended_at: now - 5 + id,
                success,
                message: format!("r{id}"),
                proposals: 1,
                jobs_created: 0,
            })));
        }
        store.settle().await;
        let attempts = store.attempts(1).unwrap();
        assert_eq!(attempts.iter().map(|a| a.attempt).collect::<Vec<_>>(), vec![1, 2], "oldest first");
        assert_eq!(attempts[0], attempt(1, "failed"));
        let all = store.activities(None, None, None, 10).unwrap();
        assert_eq!(all.iter().map(|a| a.id).collect::<Vec<_>>(), vec![3, 2, 1]);
        assert_eq!(all[0].source, "executor");
        assert_eq!(store.activities(None, Some("j1"), None, 10).unwrap().len(), 1);
        assert_eq!(store.activities(Some("t"), None, Some(3), 1).unwrap()[0].id, 2);
        let (ok, failed) = store.runs("t", 10).unwrap();
        assert_eq!(ok.iter().map(|r| r.message.as_str()).collect::<Vec<_>>(), vec!["fine", "r3", "r1"]);
        assert_eq!(ok[0].kind, "execution");
        assert_eq!(failed.iter().map(|r| r.message.as_str()).collect::<Vec<_>>(), vec!["r2"]);
        let (ok, _) = store.runs("t", 1).unwrap();
        assert_eq!(ok.len(), 1);
        store.close();
    }

    #[test]
    fn a_data_dir_that_cannot_be_created_is_an_io_error() {
        let dir = temp_dir("io");
        std::fs::write(dir.0.join("plugin"), b"a file, not a directory").unwrap();
        let err = Store::open(&dir.0, Arc::new(EventBus::new(4))).err().expect("open fails");
        assert!(matches!(&err, StoreError::Io { path, .. } if path == &dir.0.join("plugin")), "{err:?}");
    }
}
