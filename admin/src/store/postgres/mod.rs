//! The PostgreSQL backend, for admins that share one database (one leader writes, the
//! standbys read). tokio-postgres underneath; its errors stop here: they leave as the
//! source of a [`BackendError`] that says what was being done, and no message ever shows
//! the URL's password (see [`redacted`]).
//!
//! - **Connecting.** A [`PgTarget`] is a `postgres://` or `postgresql://` URL. TLS (rustls,
//!   ring only) when the URL asks for it with `sslmode=require` or `sslmode=prefer`, with
//!   the roots of a PEM CA file the caller names (`--store-ca`); no TLS otherwise.
//! - **Threads.** The writer side ([`Backend`]) lives on the store's writer thread and
//!   runs a current-thread tokio runtime of its own, one connection, blocking on each
//!   batch. The reader side ([`Reader`]) is called synchronously from request handlers
//!   that run on the admin's runtime, where blocking on a runtime would panic: it sends
//!   each query to a reader thread (`plughost-pg-read`) whose runtime owns up to
//!   [`READ_CONNECTIONS`] connections, runs the query as a task of its own, and waits
//!   (at most [`READ_TIMEOUT`]) for the answer. A broken connection is dropped and a new
//!   one opened by the next query. Every statement is prepared once per connection.
//! - **Schema.** Versioned migrations (`schema`), each in one transaction under an
//!   advisory lock, so admins starting at once do not collide.
//! - **Fencing.** With a fence epoch (the leader's lease epoch), every batch's
//!   transaction first reads the lease row `FOR SHARE` and writes nothing unless the
//!   epoch is still the one this admin won ([`BackendError::fenced`] otherwise). The
//!   share lock makes a takeover (an `UPDATE` of that row) wait until the batch commits,
//!   so a batch commits only while its epoch is current.
//!
//! Modules: `schema` (migrations, the lease table), `writes` (applying a batch),
//! `queries` (the load at start and the reads), `job_types` (the config store's table:
//! descriptors and saved configs, each save fenced like a batch, on a writer of its own).

mod job_types;
mod queries;
mod schema;
mod writes;

pub(crate) use self::job_types::{JobTypeRow, JobTypeTable};

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    path::Path,
    pin::Pin,
    str::FromStr,
    sync::{Arc, Mutex, mpsc as std_mpsc},
    time::Duration,
};

use tokio::sync::{Semaphore, mpsc};
use tokio_postgres::{Client, NoTls, Statement, Transaction, config::SslMode};

use crate::{
    audit::{AuditEvent, AuditQuery},
    job::{ActivityView, AttemptView, Job, JobView, RunView},
    store::backend::{Backend, BackendError, FinishedJob, JobQuery, Loaded, Pruned, Reader, Write},
};

/// The reader thread's connections at most (more queries wait for one).
pub const READ_CONNECTIONS: usize = 4;

/// How long a read may take, waiting for a connection included; the server cancels a
/// statement that runs longer (`statement_timeout` on read connections).
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long opening a connection may take, unless the URL says (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A PostgreSQL database to store in: the parsed URL and, when it asks for TLS, the
/// client configuration. Shows itself (Debug, [`PgTarget::redacted`]) without the
/// password.
#[derive(Clone)]
pub struct PgTarget {
    config: tokio_postgres::Config,
    tls: Option<Arc<rustls::ClientConfig>>,
    redacted: String,
}

impl fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgTarget").field("url", &self.redacted).field("tls", &self.tls.is_some()).finish()
    }
}

impl PgTarget {
    /// Parses a `postgres://` or `postgresql://` URL. TLS when its `sslmode` is `require`
    /// or `prefer` (only then: an absent `sslmode` means none, not libpq's `prefer`),
    /// trusting the certificates of the PEM file `ca`, which TLS then needs.
    pub fn parse(url: &str, ca: Option<&Path>) -> Result<PgTarget, BackendError> {
        let shown = redacted(url);
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(BackendError::new(format!(
                "the store URL {shown} is not a PostgreSQL URL (postgres://user@host:port/database)"
            )));
        }
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|e| pg_error(format!("cannot parse the store URL {shown}"), e))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let tls = match sslmode(url) {
            Some("require" | "prefer") => {
                let Some(ca) = ca else {
                    return Err(BackendError::new(format!(
                        "the store URL {shown} asks for TLS (sslmode): name the CA that signed the server's \
                         certificate with --store-ca"
                    )));
                };
                // The URL's mode stands: `prefer` may fall back to no TLS, `require` may not.
                Some(Arc::new(tls_config(ca)?))
            }
            _ => {
                config.ssl_mode(SslMode::Disable);
                None
            }
        };
        Ok(PgTarget { config, tls, redacted: shown })
    }

    /// The URL without its password or parameters: `postgres://user@host:port/db`.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// Opens a connection; its driver is spawned on the current tokio runtime (so call
    /// this inside one).
    pub async fn connect(&self) -> Result<Client, BackendError> {
        let failed = |e| pg_error(format!("cannot connect to PostgreSQL at {}", self.redacted), e);
        match &self.tls {
            Some(tls) => {
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new((**tls).clone());
                let (client, connection) = self.config.connect(tls).await.map_err(failed)?;
                tokio::spawn(connection);
                Ok(client)
            }
            None => {
                let (client, connection) = self.config.connect(NoTls).await.map_err(failed)?;
                tokio::spawn(connection);
                Ok(client)
            }
        }
    }
}

/// The `sslmode` a URL's parameters name, if any.
fn sslmode(url: &str) -> Option<&str> {
    let (_, query) = url.split_once('?')?;
    query.split('&').find_map(|kv| kv.strip_prefix("sslmode="))
}

/// A rustls client configuration (ring) that trusts the certificates in a PEM file.
fn tls_config(ca: &Path) -> Result<rustls::ClientConfig, BackendError> {
    let shown = ca.display();
    let pem = std::fs::read(ca).map_err(|e| BackendError::with_source(format!("cannot read --store-ca {shown}"), e))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| BackendError::with_source(format!("cannot parse --store-ca {shown}"), e))?;
        roots
            .add(cert)
            .map_err(|e| BackendError::with_source(format!("a bad certificate in --store-ca {shown}"), e))?;
    }
    if roots.is_empty() {
        return Err(BackendError::new(format!("--store-ca {shown} holds no PEM certificate")));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| BackendError::with_source("cannot set up TLS for PostgreSQL", e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// A PostgreSQL URL without its password and parameters, fit for logs and errors:
/// `postgres://user:secret@host:5432/db?sslmode=require` shows as
/// `postgres://user@host:5432/db`. Anything that is not such a URL shows as a
/// placeholder.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return "<not a postgres:// URL>".to_string() };
    // The last '@' ends the user info, whatever the password holds.
    let (user, location) = match rest.rfind('@') {
        Some(at) => (rest[..at].split(':').next(), &rest[at + 1..]),
        None => (None, rest),
    };
    let location = location.split(['?', '#']).next().unwrap_or_default();
    match user.filter(|u| !u.is_empty()) {
        Some(user) => format!("{scheme}://{user}@{location}"),
        None => format!("{scheme}://{location}"),
    }
}

/// Creates the leader election's lease table (`plughost_lease`) unless it exists, under
/// the migrations' advisory lock. The election calls it before it competes (before the
/// store's migrations, which run once it has won).
pub async fn ensure_lease_table(client: &Client) -> Result<(), BackendError> {
    schema::ensure_lease_table(client).await.map_err(|e| pg_error("cannot create the lease table", e))
}

/// A driver error as the backend reports it: tokio-postgres says only `db error` of an
/// error the server sent, so this shows the server's message after it. The driver's
/// error is its source.
#[derive(Debug)]
pub struct PgError(pub tokio_postgres::Error);

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use std::error::Error;
        match (self.0.as_db_error(), self.0.source()) {
            (Some(db), _) => write!(f, "{}: {db}", self.0),
            (None, Some(cause)) => write!(f, "{}: {cause}", self.0),
            (None, None) => write!(f, "{}", self.0),
        }
    }
}

impl std::error::Error for PgError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// A [`BackendError`] saying what failed, with the driver's error as its cause.
fn pg_error(what: impl Into<String>, e: tokio_postgres::Error) -> BackendError {
    BackendError::with_source(what, PgError(e))
}

/// A connection and its prepared statements.
struct Conn {
    client: Client,
    statements: Statements,
}

impl Conn {
    async fn open(target: &PgTarget) -> Result<Conn, BackendError> {
        Ok(Conn { client: target.connect().await?, statements: Statements::default() })
    }
}

/// Statements prepared on one connection, by their SQL.
#[derive(Default)]
struct Statements(HashMap<String, Statement>);

impl Statements {
    async fn get(&mut self, client: &Client, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        if let Some(s) = self.0.get(sql) {
            return Ok(s.clone());
        }
        let s = client.prepare(sql).await?;
        self.0.insert(sql.to_string(), s.clone());
        Ok(s)
    }

    async fn get_tx(&mut self, tx: &Transaction<'_>, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        if let Some(s) = self.0.get(sql) {
            return Ok(s.clone());
        }
        let s = tx.prepare(sql).await?;
        self.0.insert(sql.to_string(), s.clone());
        Ok(s)
    }
}

/// Why a transaction did not commit.
enum Failure {
    Pg(tokio_postgres::Error),
    Backend(BackendError),
    /// The lease's epoch is `current`, not `held`.
    Fenced {
        held: i64,
        current: Option<i64>,
    },
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        Failure::Pg(e)
    }
}

impl From<BackendError> for Failure {
    fn from(e: BackendError) -> Self {
        Failure::Backend(e)
    }
}

impl Failure {
    fn into_backend(self, what: &str) -> BackendError {
        match self {
            Failure::Pg(e) => pg_error(what, e),
            Failure::Backend(e) => e,
            Failure::Fenced { held, current } => BackendError::fenced(held, current),
        }
    }
}

/// The fence: the lease row, share-locked until the transaction ends.
const FENCE: &str = "SELECT epoch FROM plughost_lease WHERE id = 1 FOR SHARE";

/// Checks, in `tx`, that the lease's epoch is `held`, and keeps it so until `tx` ends: a
/// takeover's update of the row waits for this transaction.
async fn fence_check(tx: &Transaction<'_>, statements: Option<&mut Statements>, held: i64) -> Result<(), Failure> {
    let row = match statements {
        Some(s) => {
            let stmt = s.get_tx(tx, FENCE).await?;
            tx.query_opt(&stmt, &[]).await?
        }
        None => tx.query_opt(FENCE, &[]).await?,
    };
    let current: Option<i64> = row.map(|r| r.try_get(0)).transpose()?;
    if current == Some(held) { Ok(()) } else { Err(Failure::Fenced { held, current }) }
}

/// Runs `f` to completion on `rt`. From inside another runtime (a caller on the admin's
/// runtime opening the store) it runs on a scoped thread of its own, since blocking on a
/// runtime inside a runtime panics.
fn block_on<F>(rt: &tokio::runtime::Runtime, f: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|s| {
            s.spawn(|| rt.block_on(f)).join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    } else {
        rt.block_on(f)
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, BackendError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| BackendError::with_source("cannot start a runtime for PostgreSQL", e))
}

/// Opens the database `target` names, creating or migrating its schema (checking the
/// lease's epoch first when `fence` is given): the writer side and the reader side.
pub(super) fn open(target: &PgTarget, fence: Option<i64>) -> Result<(PgBackend, PgReader), BackendError> {
    let backend = PgBackend::open(target, fence)?;
    let reader = PgReader::start(target.clone())?;
    Ok((backend, reader))
}

/// Opens the database `target` names for reading only: no migration, no write. A
/// standby reads the leader's store through it.
pub fn open_reader(target: &PgTarget) -> Result<PgReader, BackendError> {
    let reader = PgReader::start(target.clone())?;
    // Connect now, so a wrong URL or an unreachable server is an error at start.
    reader.read("cannot reach the store", |c| async move {
        let r = c.client.simple_query("SELECT 1").await.map(|_| ());
        (c, r)
    })?;
    Ok(reader)
}

/// What a standby's read-only view of the store needs: the state as the leader last
/// committed it (no migration, no write, no fence) and a reader.
pub(crate) fn open_snapshot(target: &PgTarget) -> Result<(Loaded, PgReader), BackendError> {
    let mut backend = PgBackend::unmigrated(target)?;
    let loaded = backend.load()?;
    drop(backend);
    Ok((loaded, PgReader::start(target.clone())?))
}

/// The writer side: a runtime of its own and one connection, opened again when lost.
pub(crate) struct PgBackend {
    /// Always Some until dropped.
    rt: Option<tokio::runtime::Runtime>,
    target: PgTarget,
    conn: Option<Conn>,
    fence: Option<i64>,
}

impl PgBackend {
    /// A connection side for reading what is there: no migration and no fence, so it
    /// must never write (a standby's view).
    pub(crate) fn unmigrated(target: &PgTarget) -> Result<PgBackend, BackendError> {
        Ok(PgBackend { rt: Some(runtime()?), target: target.clone(), conn: None, fence: None })
    }

    /// A runtime and a connection to the database `target` names, whose schema is created
    /// or migrated first (each migration checking the lease's epoch when `fence` is given).
    fn open(target: &PgTarget, fence: Option<i64>) -> Result<PgBackend, BackendError> {
        let mut backend = PgBackend { rt: Some(runtime()?), target: target.clone(), conn: None, fence };
        let applied = backend.run(|mut conn, fence| async move {
            let out = schema::migrate(&mut conn.client, fence).await;
            (conn, out.map_err(|f| f.into_backend("cannot create or migrate the schema")))
        })?;
        if !applied.is_empty() {
            tracing::info!(store = %target.redacted(), ?applied, "PostgreSQL store migrated");
        }
        Ok(backend)
    }

    /// Runs `work` on the connection (opened first if there is none). After an error the
    /// connection is dropped and the next call opens a new one: failures are rare, and
    /// a connection that broke may not know it yet.
    /// `work` hands the connection back with its result.
    fn run<T, F, Fut>(&mut self, work: F) -> Result<T, BackendError>
    where
        T: Send,
        F: FnOnce(Conn, Option<i64>) -> Fut + Send,
        Fut: Future<Output = (Conn, Result<T, BackendError>)> + Send,
    {
        let (rt, target, slot, fence) = (self.rt.as_ref().expect("runtime"), &self.target, &mut self.conn, self.fence);
        block_on(rt, async move {
            let conn = match slot.take().filter(|c| !c.client.is_closed()) {
                Some(conn) => conn,
                None => Conn::open(target).await?,
            };
            let (conn, out) = work(conn, fence).await;
            if out.is_ok() {
                *slot = Some(conn);
            }
            out
        })
    }
}

impl Drop for PgBackend {
    /// The runtime may be dropped on a thread inside another runtime (a store that failed
    /// to start), where a plain drop would panic.
    fn drop(&mut self) {
        self.conn = None;
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Backend for PgBackend {
    fn load(&mut self) -> Result<Loaded, BackendError> {
        self.run(|mut conn, _| async move {
            let out = queries::load(&mut conn).await;
            (conn, out.map_err(|e| pg_error("cannot load the stored state", e)))
        })
    }

    fn apply(&mut self, writes: &[Write<'_>]) -> Result<Vec<Pruned>, BackendError> {
        self.run(|mut conn, fence| async move {
            let out = writes::apply(&mut conn, writes, fence).await;
            (conn, out.map_err(|f| f.into_backend("cannot write a batch")))
        })
    }
}

/// One query for the reader thread: it gets the connection pool and answers on its own.
type ReadTask = Box<dyn FnOnce(Arc<Pool>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// The reader thread's connections.
struct Pool {
    target: PgTarget,
    idle: Mutex<Vec<Conn>>,
    /// One permit per connection that may be open.
    permits: Semaphore,
}

impl Pool {
    /// An idle open connection, else a new one.
    async fn take(&self) -> Result<Conn, BackendError> {
        loop {
            let idle = self.idle.lock().expect("reader pool lock").pop();
            match idle {
                Some(c) if c.client.is_closed() => continue,
                Some(c) => return Ok(c),
                None => break,
            }
        }
        let conn = Conn::open(&self.target).await?;
        let timeout = format!("SET statement_timeout = {}", READ_TIMEOUT.as_millis());
        conn.client.batch_execute(&timeout).await.map_err(|e| pg_error("cannot set up a read connection", e))?;
        Ok(conn)
    }

    /// Keeps a connection for the next query, unless it failed other than by the
    /// server's refusal (then it may be broken: the next query opens a new one).
    fn give_back(&self, mut conn: Conn, failure: Option<&tokio_postgres::Error>) {
        if let Some(e) = failure {
            if e.as_db_error().is_none() {
                return;
            }
            conn.statements.0.clear();
        }
        if !conn.client.is_closed() {
            self.idle.lock().expect("reader pool lock").push(conn);
        }
    }
}

/// The reader side: a handle on the reader thread (`plughost-pg-read`), which stops when
/// this is dropped.
pub struct PgReader {
    tasks: Option<mpsc::UnboundedSender<ReadTask>>,
    thread: Option<std::thread::JoinHandle<()>>,
    name: String,
}

impl PgReader {
    fn start(target: PgTarget) -> Result<PgReader, BackendError> {
        let rt = runtime()?;
        let name = target.redacted().to_string();
        let pool = Arc::new(Pool { target, idle: Mutex::new(Vec::new()), permits: Semaphore::new(READ_CONNECTIONS) });
        let (tasks, mut inbox) = mpsc::unbounded_channel::<ReadTask>();
        let thread = std::thread::Builder::new()
            .name("plughost-pg-read".into())
            .spawn(move || {
                rt.block_on(async move {
                    while let Some(task) = inbox.recv().await {
                        tokio::spawn(task(pool.clone()));
                    }
                });
            })
            .map_err(|e| BackendError::with_source("cannot start the PostgreSQL reader thread", e))?;
        Ok(PgReader { tasks: Some(tasks), thread: Some(thread), name })
    }

    /// Runs `query` on a connection of the reader thread's and waits for its answer (at
    /// most [`READ_TIMEOUT`]). `query` hands the connection back with its result.
    fn read<T, F, Fut>(&self, what: &'static str, query: F) -> Result<T, BackendError>
    where
        T: Send + 'static,
        F: FnOnce(Conn) -> Fut + Send + 'static,
        Fut: Future<Output = (Conn, Result<T, tokio_postgres::Error>)> + Send + 'static,
    {
        let (answer, answered) = std_mpsc::sync_channel(1);
        let task: ReadTask = Box::new(move |pool: Arc<Pool>| {
            Box::pin(async move {
                let out = async {
                    let _permit = pool.permits.acquire().await.map_err(|_| BackendError::new("the reader stopped"))?;
                    let conn = pool.take().await?;
                    let (conn, out) = query(conn).await;
                    pool.give_back(conn, out.as_ref().err());
                    out.map_err(|e| pg_error(what, e))
                }
                .await;
                let _ = answer.send(out);
            })
        });
        let stopped = || BackendError::new(format!("{what}: the PostgreSQL reader of {} has stopped", self.name));
        self.tasks.as_ref().ok_or_else(stopped)?.send(task).map_err(|_| stopped())?;
        match answered.recv_timeout(READ_TIMEOUT) {
            Ok(out) => out,
            Err(std_mpsc::RecvTimeoutError::Timeout) => Err(BackendError::new(format!(
                "{what}: no answer from PostgreSQL at {} within {} s",
                self.name,
                READ_TIMEOUT.as_secs()
            ))),
            Err(std_mpsc::RecvTimeoutError::Disconnected) => Err(stopped()),
        }
    }
}

impl Drop for PgReader {
    fn drop(&mut self) {
        self.tasks = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A read on the reader thread: `$call` is a `queries` function's call on `c`, a
/// `&mut Conn`; the arguments it names must be owned (moved into the task).
macro_rules! read {
    ($self:ident, $what:expr, |$c:ident| $call:expr) => {
        $self.read($what, move |mut conn| async move {
            let $c = &mut conn;
            let out = $call.await;
            (conn, out)
        })
    };
}

impl Reader for PgReader {
    fn job(&self, seq: i64) -> Result<Option<Job>, BackendError> {
        read!(self, "cannot read a job", |c| queries::job(c, seq))
    }

    fn jobs(&self, query: &JobQuery) -> Result<Vec<JobView>, BackendError> {
        let query = query.clone();
        read!(self, "cannot list jobs", |c| queries::jobs(c, &query))
    }

    fn attempts(&self, job_seq: i64) -> Result<Vec<AttemptView>, BackendError> {
        read!(self, "cannot read a job's attempts", |c| queries::attempts(c, job_seq))
    }

    fn activities(
        &self,
        job_type: Option<&str>,
        job_id: Option<&str>,
        before_id: Option<i64>,
        limit: usize,
    ) -> Result<Vec<ActivityView>, BackendError> {
        let (job_type, job_id) = (job_type.map(str::to_string), job_id.map(str::to_string));
        read!(self, "cannot list activities", |c| queries::activities(
            c,
            job_type.as_deref(),
            job_id.as_deref(),
            before_id,
            limit,
            false
        ))
    }

    fn feed(
        &self,
        job_type: Option<&str>,
        job_id: Option<&str>,
        before_id: Option<i64>,
        limit: usize,
    ) -> Result<Vec<ActivityView>, BackendError> {
        let (job_type, job_id) = (job_type.map(str::to_string), job_id.map(str::to_string));
        read!(self, "cannot list activities", |c| queries::activities(
            c,
            job_type.as_deref(),
            job_id.as_deref(),
            before_id,
            limit,
            true
        ))
    }

    fn finished_jobs(&self, since: i64, until: i64, visit: &mut dyn FnMut(FinishedJob)) -> Result<(), BackendError> {
        let finished = read!(self, "cannot read the finished jobs", |c| queries::finished_jobs(c, since, until))?;
        finished.into_iter().for_each(visit);
        Ok(())
    }

    fn detection_runs(&self, job_type: &str, success: bool, limit: usize) -> Result<Vec<RunView>, BackendError> {
        let job_type = job_type.to_string();
        read!(self, "cannot list detection runs", |c| queries::detection_runs(c, &job_type, success, limit))
    }

    fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, BackendError> {
        let query = query.clone();
        read!(self, "cannot list audit events", |c| queries::audit(c, &query))
    }

    fn audit_count(&self, query: &AuditQuery) -> Result<i64, BackendError> {
        let query = query.clone();
        read!(self, "cannot count audit events", |c| queries::audit_count(c, &query))
    }

    fn audit_oldest(&self, after: i64, up_to: i64, limit: usize) -> Result<Vec<AuditEvent>, BackendError> {
        read!(self, "cannot read audit events to archive", |c| queries::audit_oldest(c, after, up_to, limit))
    }

    fn audit_cutoff(&self, before_ms: Option<i64>, keep: Option<i64>) -> Result<Option<(i64, i64)>, BackendError> {
        read!(self, "cannot find the audit events to prune", |c| queries::audit_cutoff(c, before_ms, keep))
    }

    fn dead_letters(&self) -> Result<Vec<(String, i64)>, BackendError> {
        read!(self, "cannot count dead letters", |c| queries::dead_letters(c))
    }

    fn replayed_as(&self, seq: i64) -> Result<Option<i64>, BackendError> {
        read!(self, "cannot look up a job's replay", |c| queries::replayed_as(c, seq))
    }

    fn newest_with_keys(
        &self,
        job_type: &str,
        after_seq: i64,
        keys: &[String],
    ) -> Result<HashMap<String, i64>, BackendError> {
        let (job_type, keys) = (job_type.to_string(), keys.to_vec());
        read!(self, "cannot look up newer jobs with a dedupe key", |c| queries::newest_with_keys(
            c, &job_type, after_seq, &keys
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::Barrier,
        time::{Duration, Instant},
    };

    use proto::pb::JobState;

    use super::*;
    use crate::{
        events::EventBus,
        job::now_ms,
        store::{
            Op, Store, StoreError, StoreReader,
            tests::{Place, Which, job},
        },
    };

    /// How long a test waits for something that should happen at once.
    const DEADLINE: Duration = Duration::from_secs(30);

    async fn side(place: &Place) -> Client {
        let (client, connection) = tokio_postgres::connect(place.url(), NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    }

    /// A fresh database whose lease is held at `epoch`, and a connection to it.
    async fn leased(tag: &str, epoch: i64) -> (Place, Client) {
        let place = Place::new(Which::Postgres, tag);
        let client = side(&place).await;
        ensure_lease_table(&client).await.unwrap();
        client
            .execute(
                "INSERT INTO plughost_lease (id, holder, epoch, expires_at) VALUES (1, 'me', $1, now() + interval '1 minute')",
                &[&epoch],
            )
            .await
            .unwrap();
        (place, client)
    }

    async fn take_over(client: &Client, epoch: i64) {
        client.execute("UPDATE plughost_lease SET epoch = $1 WHERE id = 1", &[&epoch]).await.unwrap();
    }

    async fn exists(client: &Client, relation: &str) -> bool {
        client.query_one("SELECT to_regclass($1) IS NOT NULL", &[&relation]).await.unwrap().get(0)
    }

    /// Waits until `n` sessions of the database wait for a lock.
    async fn lock_waiters(client: &Client, n: i64) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let waiting: i64 = client
                .query_one(
                    "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            if waiting >= n {
                return;
            }
            assert!(Instant::now() < deadline, "{waiting} sessions wait for a lock, not {n}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn within<T>(f: impl Future<Output = T>) -> T {
        tokio::time::timeout(DEADLINE, f).await.expect("in time")
    }

    fn open_fenced(place: &Place, epoch: i64) -> Arc<Store> {
        Store::open_postgres(&place.target(), Some(epoch), Arc::new(EventBus::new(16))).unwrap().0
    }

    #[test]
    fn urls_are_shown_without_their_password_or_parameters() {
        let cases = [
            ("postgres://u:s3cret@db.example:5432/plughost?sslmode=require", "postgres://u@db.example:5432/plughost"),
            ("postgresql://u@h/db", "postgresql://u@h/db"),
            ("postgres://u:p@ss/w:rd@h:1/db", "postgres://u@h:1/db"),
            ("postgres://h:5432/db?password=s3cret", "postgres://h:5432/db"),
            ("postgres://:s3cret@h/db", "postgres://h/db"),
        ];
        for (url, shown) in cases {
            assert_eq!(redacted(url), shown, "{url}");
        }
        assert_eq!(redacted("s3cret"), "<not a postgres:// URL>");
    }

    /// No error, at parsing, connecting or reading, and no Debug output shows the password.
    #[tokio::test]
    async fn the_password_never_appears_in_an_error_message() {
        let secret = "s3cret-pw";
        let check = |what: &str, text: String| {
            assert!(!text.contains(secret), "{what} shows the password: {text}");
        };
        let err = PgTarget::parse(&format!("postgres://u:{secret}@h/db?sslmode=require"), None).unwrap_err();
        assert!(err.to_string().contains("--store-ca"), "{err}");
        check("TLS without a CA", format!("{err} {err:?}"));
        let err = PgTarget::parse(&format!("postgres://u:{secret}@h/db?sslmode=bogus"), None).unwrap_err();
        check("a bad sslmode", format!("{err} {err:?} {:?}", std::error::Error::source(&err)));
        let err = PgTarget::parse(&format!("mysql://u:{secret}@h/db"), None).unwrap_err();
        check("another scheme", format!("{err} {err:?}"));
        let ca = crate::test_support::TempDir::new("pg-ca");
        std::fs::write(ca.0.join("ca.pem"), "not a certificate").unwrap();
        let err = PgTarget::parse(&format!("postgres://u:{secret}@h/db?sslmode=prefer"), Some(&ca.0.join("ca.pem")))
            .unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");

        // Nothing listens on port 1: connecting fails.
        let target = PgTarget::parse(&format!("postgres://u:{secret}@127.0.0.1:1/db"), None).unwrap();
        check("the target's Debug", format!("{target:?}"));
        assert_eq!(target.redacted(), "postgres://u@127.0.0.1:1/db");
        let err = Store::open_postgres(&target, None, Arc::new(EventBus::new(4))).err().expect("cannot connect");
        assert!(err.to_string().contains("postgres://u@127.0.0.1:1/db"), "{err}");
        check("opening the store", format!("{err} {err:?}"));
        let err = StoreReader::open_postgres(&target).err().expect("cannot connect");
        check("opening a reader", format!("{err} {err:?}"));

        // The password is right (the test server trusts anyone), and not in later errors.
        let place = Place::new(Which::Postgres, "password");
        let url = place.url().replacen("postgres://postgres@", &format!("postgres://postgres:{secret}@"), 1);
        let target = PgTarget::parse(&url, None).unwrap();
        let (store, _) = Store::open_postgres(&target, None, Arc::new(EventBus::new(4))).unwrap();
        assert!(!store.path().display().to_string().contains(secret));
        side(&place).await.batch_execute("DROP TABLE jobs").await.unwrap();
        let err = store.job(1).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        check("a failed read", format!("{err} {err:?}"));
        store.close();
    }

    #[tokio::test]
    async fn migrations_are_versioned_and_a_second_open_does_not_run_them_again() {
        let place = Place::new(Which::Postgres, "migrations");
        let (store, _) = place.open(Arc::new(EventBus::new(4)));
        store.close();
        let client = side(&place).await;
        let versions = || async {
            let rows = client.query("SELECT version FROM plughost_schema_version ORDER BY version", &[]).await.unwrap();
            rows.iter().map(|r| r.get::<_, i32>(0)).collect::<Vec<_>>()
        };
        let all: Vec<i32> = (1..=schema::MIGRATIONS.len() as i32).collect();
        assert_eq!(versions().await, all);
        for table in ["jobs", "attempts", "activities", "runs", "audit", "holds", "schedules", "meta", "job_types"] {
            assert!(exists(&client, table).await, "{table}");
        }
        assert!(exists(&client, "activities_feed").await && exists(&client, "activities_feed_by_type").await);
        // Migration 3 replaced migration 1's two state indexes of the jobs.
        assert!(exists(&client, "jobs_by_type").await && exists(&client, "jobs_open").await);
        assert!(!exists(&client, "jobs_by_state").await && !exists(&client, "jobs_by_type_state").await);
        assert!(!exists(&client, "plughost_lease").await, "the lease table is the election's, not a migration's");
        // Migration 1 made this index; a second open that ran it again would make it again.
        client.batch_execute("DROP INDEX audit_by_at").await.unwrap();
        let (store, _) = place.open(Arc::new(EventBus::new(4)));
        store.close();
        assert_eq!(versions().await, all);
        assert!(!exists(&client, "audit_by_at").await, "migration 1 did not run again");
    }

    #[test]
    fn admins_migrating_at_once_all_succeed() {
        for round in 0..3 {
            let place = Place::new(Which::Postgres, &format!("concurrent-{round}"));
            let target = place.target();
            let start = Arc::new(Barrier::new(3));
            let opens: Vec<_> = (0..3)
                .map(|_| {
                    let (target, start) = (target.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        open(&target, None).map(|_| ())
                    })
                })
                .collect();
            for open in opens {
                open.join().unwrap().unwrap();
            }
            let versions = place.count("SELECT COUNT(*) FROM plughost_schema_version");
            assert_eq!(versions, schema::MIGRATIONS.len() as i64, "each migration applied once");
        }
    }

    #[tokio::test]
    async fn the_lease_table_is_created_once_however_many_ask() {
        let place = Place::new(Which::Postgres, "lease-table");
        let (a, b) = (side(&place).await, side(&place).await);
        let (x, y) = tokio::join!(ensure_lease_table(&a), ensure_lease_table(&b));
        x.unwrap();
        y.unwrap();
        ensure_lease_table(&a).await.unwrap();
        a.execute("INSERT INTO plughost_lease (id, holder, epoch, expires_at) VALUES (1, 'a', 1, now())", &[])
            .await
            .unwrap();
        let columns: i64 = a
            .query_one(
                "SELECT COUNT(*) FROM information_schema.columns WHERE table_name = 'plughost_lease' \
                 AND column_name IN ('holder', 'epoch', 'expires_at', 'http_addr', 'grpc_addr')",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(columns, 5);
        assert!(
            a.execute("INSERT INTO plughost_lease (id, holder, epoch, expires_at) VALUES (2, 'b', 1, now())", &[])
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn migrations_run_only_under_the_current_epoch() {
        let (place, client) = leased("fenced-migration", 1).await;
        let err = Store::open_postgres(&place.target(), Some(2), Arc::new(EventBus::new(4))).err().expect("fenced");
        let StoreError::Backend { source, .. } = &err else { panic!("{err:?}") };
        assert!(source.is_fenced(), "{err}");
        assert!(!exists(&client, "jobs").await && !exists(&client, "plughost_schema_version").await);
        let store = open_fenced(&place, 1);
        assert!(exists(&client, "jobs").await);
        store.close();
    }

    #[tokio::test]
    async fn a_batch_under_an_old_epoch_is_refused_and_the_writer_stops() {
        let (place, client) = leased("fenced", 1).await;
        let store = open_fenced(&place, 1);
        let mut fenced = store.fenced();
        let first = store.write(Op::InsertJob(Arc::new(job(1, JobState::Pending, now_ms()))));
        within(store.durable(first)).await.unwrap();
        assert!(!*fenced.borrow());

        take_over(&client, 2).await;
        let refused = store.write(Op::InsertJob(Arc::new(job(2, JobState::Pending, now_ms()))));
        assert!(matches!(within(store.durable(refused)).await, Err(StoreError::Fenced)));
        within(fenced.wait_for(|f| *f)).await.expect("fenced() turns true");
        assert!(!store.is_healthy());
        let late = store.write(Op::InsertJob(Arc::new(job(3, JobState::Pending, now_ms()))));
        assert!(matches!(within(store.durable(late)).await, Err(StoreError::Fenced)), "nothing more is taken");

        // Were the writer retrying, its batch would now commit, and close would wait for it.
        take_over(&client, 1).await;
        store.close();
        assert!(store.job(1).unwrap().is_some());
        assert!(
            store.job(2).unwrap().is_none() && store.job(3).unwrap().is_none(),
            "nothing of a fenced batch is stored"
        );
        assert_eq!(place.count("SELECT COUNT(*) FROM jobs"), 1);
    }

    /// A batch that took the lease row's share lock commits first; the takeover's update
    /// waits for it, and the next batch is refused.
    #[tokio::test]
    async fn a_batch_that_holds_the_fence_commits_before_a_takeover() {
        let (place, client) = leased("race-batch-first", 1).await;
        let store = open_fenced(&place, 1);
        // Keeps the batch in its transaction, past the fence: its upsert of the same key waits.
        let blocker = side(&place).await;
        blocker.batch_execute("BEGIN; INSERT INTO meta (key, value) VALUES ('max_event_id', 0)").await.unwrap();
        let ticket = store.write(Op::EventIds { up_to: 42 });
        lock_waiters(&client, 1).await;
        let takeover = side(&place).await;
        let update = tokio::spawn(async move { take_over(&takeover, 2).await });
        lock_waiters(&client, 2).await;
        assert!(!update.is_finished(), "the takeover waits for the batch");
        blocker.batch_execute("ROLLBACK").await.unwrap();
        within(store.durable(ticket)).await.expect("the batch commits under its epoch");
        within(update).await.unwrap();
        assert_eq!(place.count("SELECT value FROM meta WHERE key = 'max_event_id'"), 42);
        let next = store.write(Op::EventIds { up_to: 43 });
        assert!(matches!(within(store.durable(next)).await, Err(StoreError::Fenced)));
        assert_eq!(place.count("SELECT value FROM meta WHERE key = 'max_event_id'"), 42);
        store.close();
    }

    /// A takeover that updated the lease row first makes a batch wait for it, and the
    /// batch then sees the new epoch and is refused.
    #[tokio::test]
    async fn a_batch_racing_a_takeover_that_locked_the_lease_first_is_refused() {
        let (place, client) = leased("race-takeover-first", 1).await;
        let store = open_fenced(&place, 1);
        let takeover = side(&place).await;
        takeover.batch_execute("BEGIN; UPDATE plughost_lease SET epoch = 2 WHERE id = 1").await.unwrap();
        let ticket = store.write(Op::InsertJob(Arc::new(job(1, JobState::Pending, now_ms()))));
        lock_waiters(&client, 1).await;
        takeover.batch_execute("COMMIT").await.unwrap();
        assert!(matches!(within(store.durable(ticket)).await, Err(StoreError::Fenced)));
        assert!(*store.fenced().borrow());
        assert!(store.job(1).unwrap().is_none());
        // The refused batch let go of the lease row: the new holder can renew.
        within(take_over(&client, 3)).await;
        store.close();
    }

    /// Handlers on the admin's (multi-thread) runtime call the reader synchronously, many
    /// at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_reader_answers_calls_from_inside_a_runtime() {
        async fn read(store: Arc<Store>, seq: i64) -> Option<i64> {
            let listed = store.jobs(&crate::store::JobQuery { limit: 5, ..Default::default() }).unwrap();
            assert_eq!(listed.len(), 5);
            store.job(seq).unwrap().map(|j| j.seq)
        }
        let place = Place::new(Which::Postgres, "reader-in-runtime");
        let (store, _) = place.open(Arc::new(EventBus::new(4)));
        for seq in 1..=20 {
            store.write(Op::InsertJob(Arc::new(job(seq, JobState::Pending, now_ms()))));
        }
        store.settle().await;
        let reads: Vec<_> = (1..=20).map(|seq| tokio::spawn(read(store.clone(), seq))).collect();
        for (seq, read) in (1..=20).zip(reads) {
            assert_eq!(within(read).await.unwrap(), Some(seq));
        }
        store.close();
    }

    #[tokio::test]
    async fn a_standby_reads_without_migrating_or_writing() {
        let place = Place::new(Which::Postgres, "standby");
        let standby = StoreReader::open_postgres(&place.target()).unwrap();
        let client = side(&place).await;
        assert!(!exists(&client, "plughost_schema_version").await, "a reader runs no migration");
        let err = standby.job(1).unwrap_err();
        assert!(err.to_string().contains("cannot read a job"), "{err}");
        let (store, _) = place.open(Arc::new(EventBus::new(4)));
        store.write(Op::InsertJob(Arc::new(job(1, JobState::Pending, now_ms()))));
        store.settle().await;
        assert_eq!(standby.job(1).unwrap().map(|j| j.seq), Some(1), "the standby sees the leader's writes");
        assert_eq!(standby.path(), store.path());
        store.close();
    }

    /// A batch's rows go to the server pipelined, a window at a time: a row the server
    /// refuses fails the whole batch with that row's own error (not the "transaction is
    /// aborted" of the rows sent after it), nothing of the batch is stored, and the next
    /// batch commits. Small and large runs of rows (the latter over a window) alike.
    #[tokio::test]
    async fn a_row_refused_in_a_pipelined_batch_fails_the_batch_with_its_own_error() {
        let place = Place::new(Which::Postgres, "pipelined");
        let (mut backend, reader) = open(&place.target(), None).unwrap();
        backend.load().unwrap();
        // PostgreSQL's text never holds a NUL byte.
        let refused = crate::job::ActivityView {
            id: 1,
            created_at: now_ms(),
            job_type: "t".into(),
            job_id: "job-1".into(),
            source: "admin",
            stage: String::new(),
            message: "a NUL \0 byte".into(),
        };
        let mut next = 1;
        for jobs in [2, 40, 2 * writes::ROW_WINDOW + 3] {
            let batch: Vec<Job> = (next..next + jobs as i64).map(|seq| job(seq, JobState::Pending, now_ms())).collect();
            next += jobs as i64;
            let mut writes: Vec<Write<'_>> = batch.iter().map(Write::InsertJob).collect();
            writes.insert(jobs / 2, Write::Activity(&refused));
            let err = backend.apply(&writes).unwrap_err().to_string();
            assert!(err.contains("0x00") && !err.contains("aborted"), "{jobs} jobs: {err}");
            for j in [&batch[0], &batch[jobs / 2], &batch[jobs - 1]] {
                assert!(reader.job(j.seq).unwrap().is_none(), "{jobs} jobs: job {} was stored", j.seq);
            }
            writes.remove(jobs / 2);
            backend.apply(&writes).unwrap();
            for j in [&batch[0], &batch[jobs / 2], &batch[jobs - 1]] {
                assert_eq!(reader.job(j.seq).unwrap().map(|s| s.state), Some(JobState::Pending), "{jobs} jobs");
            }
        }
    }

    #[tokio::test]
    async fn lost_connections_are_opened_again() {
        let place = Place::new(Which::Postgres, "reconnect");
        let (store, _) = place.open(Arc::new(EventBus::new(4)));
        let first = store.write(Op::InsertJob(Arc::new(job(1, JobState::Pending, now_ms()))));
        within(store.durable(first)).await.unwrap();
        assert!(store.job(1).unwrap().is_some());
        let client = side(&place).await;
        let killed: i64 = client
            .query_one(
                "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(killed >= 2, "the writer's and a reader's connections were cut: {killed}");
        let second = store.write(Op::InsertJob(Arc::new(job(2, JobState::Pending, now_ms()))));
        within(store.durable(second)).await.expect("the writer reconnects");
        // A read may find its connection broken; the next one opens a new one.
        let read = store.job(2).or_else(|_| store.job(2)).unwrap();
        assert!(read.is_some());
        assert!(store.job(2).unwrap().is_some());
        store.close();
    }

    /// The feed's queries read from the partial indexes, so a flood of output lines is
    /// never walked through to find the newest feed entries (PostgreSQL proves the
    /// indexes' predicate from the query's).
    #[tokio::test]
    async fn the_feed_reads_from_its_partial_indexes() {
        let place = Place::new(Which::Postgres, "feed-plan");
        let (store, _) = place.open(Arc::new(EventBus::new(4)));
        store.close();
        let client = side(&place).await;
        client
            .batch_execute(
                "INSERT INTO activities (id, created_at, job_type, job_id, source, stage, message) \
                 SELECT i, i, 't' || (i % 3), 'j1', 'executor', '', 'stdout: line ' || i FROM generate_series(1, 20000) i; \
                 INSERT INTO activities VALUES (20001, 1, 't1', 'j1', 'executor', '', 'copying'); ANALYZE activities;",
            )
            .await
            .unwrap();
        let plan = |sql: String, limit: i64, job_type: Option<&'static str>| {
            let client = &client;
            async move {
                let rows = match job_type {
                    Some(t) => client.query(&format!("EXPLAIN {sql}"), &[&t, &limit]).await.unwrap(),
                    None => client.query(&format!("EXPLAIN {sql}"), &[&limit]).await.unwrap(),
                };
                rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>().join("; ")
            }
        };
        let overall = plan(queries::activities_sql(true, false, false, false), 15, None).await;
        assert!(overall.contains("activities_feed"), "{overall}");
        // Either feed index will do (the planner picks by its estimates): neither holds an
        // output line.
        let by_type = plan(queries::activities_sql(true, true, false, false), 15, Some("t1")).await;
        assert!(by_type.contains("using activities_feed"), "{by_type}");
    }
}
