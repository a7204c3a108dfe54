//! The PostgreSQL schema and its versioned migrations, and the leader election's lease
//! table.
//!
//! `plughost_schema_version` holds one row per applied migration. Migration N is a list
//! of statements applied in one transaction together with its version row, under a
//! transaction-level advisory lock ([`ADVISORY_LOCK`]), so admins that start at once
//! migrate one after the other and the later ones find the work done. With a fence epoch
//! each migration's transaction also checks the lease first, as every batch does.

use tokio_postgres::Client;

use super::{Failure, fence_check};

/// The advisory lock (one bigint key: "plughost" in ASCII) the migrations and the lease
/// table's creation take for their transaction.
pub(super) const ADVISORY_LOCK: i64 = 0x706c_7567_686f_7374;

/// The migrations, oldest first: migration N is `MIGRATIONS[N - 1]`. Append only; never
/// edit one that has shipped.
pub(super) const MIGRATIONS: &[&[&str]] = &[MIGRATION_1, MIGRATION_2, MIGRATION_3];

/// The job store's tables.
const MIGRATION_1: &[&str] = &[
    "CREATE TABLE jobs (
        seq bigint PRIMARY KEY,
        job_type text NOT NULL,
        dedupe_key text NOT NULL,
        priority integer NOT NULL,
        summary text NOT NULL,
        detail text NOT NULL,
        payload bytea NOT NULL,
        created_at bigint NOT NULL,
        not_before bigint NOT NULL,
        expires_at bigint NOT NULL,
        detection_run bigint NOT NULL,
        state integer NOT NULL,
        attempts integer NOT NULL,
        attempts_total integer NOT NULL,
        worker_id text NOT NULL,
        request_id text NOT NULL,
        progress double precision NOT NULL,
        stage text NOT NULL,
        message text NOT NULL,
        error text NOT NULL,
        result_summary text NOT NULL,
        result bytea NOT NULL,
        updated_at bigint NOT NULL,
        ready_at bigint NOT NULL,
        assigned_at bigint NOT NULL,
        completed_at bigint NOT NULL,
        dead_letter boolean NOT NULL,
        failed_on text NOT NULL,
        stop_outcome integer NOT NULL DEFAULT 0,
        stop_reason text NOT NULL DEFAULT '',
        replay_of bigint NOT NULL DEFAULT 0,
        cluster_context bytea NOT NULL DEFAULT '\\x'
    )",
    "CREATE INDEX jobs_by_state ON jobs (state, seq)",
    "CREATE INDEX jobs_by_type_state ON jobs (job_type, state, seq)",
    "CREATE INDEX jobs_by_replay ON jobs (replay_of) WHERE replay_of > 0",
    "CREATE INDEX jobs_dead_letters ON jobs (job_type) WHERE dead_letter",
    "CREATE TABLE attempts (
        job_seq bigint NOT NULL,
        attempt integer NOT NULL,
        worker_id text NOT NULL,
        request_id text NOT NULL,
        started_at bigint NOT NULL,
        ended_at bigint NOT NULL,
        outcome text NOT NULL,
        error text NOT NULL,
        PRIMARY KEY (job_seq, attempt)
    )",
    "CREATE TABLE activities (
        id bigint PRIMARY KEY,
        created_at bigint NOT NULL,
        job_type text NOT NULL,
        job_id text NOT NULL,
        source text NOT NULL,
        stage text NOT NULL,
        message text NOT NULL
    )",
    "CREATE INDEX activities_by_type ON activities (job_type, id)",
    "CREATE INDEX activities_by_job ON activities (job_id, id)",
    // The feed's indexes hold only activities that are not output lines (see
    // `not_output!`), so the newest feed entries are found however many output lines
    // came after them.
    concat!("CREATE INDEX activities_feed ON activities (id) WHERE ", not_output!()),
    concat!("CREATE INDEX activities_feed_by_type ON activities (job_type, id) WHERE ", not_output!()),
    "CREATE TABLE runs (
        id bigint PRIMARY KEY,
        job_type text NOT NULL,
        kind text NOT NULL,
        job_id text NOT NULL,
        worker_id text NOT NULL,
        started_at bigint NOT NULL,
        ended_at bigint NOT NULL,
        success boolean NOT NULL,
        message text NOT NULL,
        proposals bigint NOT NULL,
        jobs_created bigint NOT NULL
    )",
    "CREATE INDEX runs_by_type ON runs (job_type, success, id)",
    "CREATE TABLE audit (
        id bigint PRIMARY KEY,
        at bigint NOT NULL,
        actor text NOT NULL,
        actor_kind text NOT NULL,
        action text NOT NULL,
        target text NOT NULL,
        params text NOT NULL,
        outcome text NOT NULL,
        reason text NOT NULL,
        request_id text NOT NULL
    )",
    "CREATE INDEX audit_by_at ON audit (at)",
    "CREATE INDEX audit_by_action ON audit (action, id)",
    "CREATE INDEX audit_by_actor ON audit (actor, id)",
    "CREATE INDEX audit_by_target ON audit (target, id)",
    "CREATE TABLE holds (
        kind text NOT NULL,
        target text NOT NULL,
        set_by text NOT NULL,
        set_at bigint NOT NULL,
        PRIMARY KEY (kind, target)
    )",
    "CREATE TABLE schedules (
        job_type text PRIMARY KEY,
        cron text NOT NULL,
        time_zone text NOT NULL,
        set_by text NOT NULL,
        set_at bigint NOT NULL,
        last_fired_at bigint NOT NULL
    )",
    "CREATE TABLE meta (
        key text PRIMARY KEY,
        value bigint NOT NULL
    )",
];

/// The config store's job types (see `super::job_types`): the encoded `JobTypeDescriptor`
/// as the worker sent it and the encoded `PersistedJobTypeConfig` with its secrets sealed,
/// the bytes `descriptor.pb` and `config.pb` hold. Either may be missing, as either file
/// may. `updated_at`: the last write, in milliseconds since the Unix epoch.
const MIGRATION_2: &[&str] = &["CREATE TABLE job_types (
        job_type text PRIMARY KEY,
        descriptor bytea,
        config bytea,
        updated_at bigint NOT NULL
    )"];

/// No index over every job's state, whose entries moved each time a job ended: one by
/// type, which never changes after the insert, and the partial `jobs_open` over the jobs
/// in every state but SUCCEEDED (see `not_succeeded!`), which a job that succeeds leaves.
/// They answer the load (the active jobs; the counts from both) and the listings by type
/// and by any state but SUCCEEDED.
const MIGRATION_3: &[&str] = &[
    "DROP INDEX jobs_by_state",
    "DROP INDEX jobs_by_type_state",
    "CREATE INDEX jobs_by_type ON jobs (job_type, seq)",
    concat!("CREATE INDEX jobs_open ON jobs (state, seq, job_type) WHERE ", not_succeeded!()),
];

/// The jobs table's columns, in the order the insert and the row mapping use.
pub(super) const JOB_COLUMNS: &str = crate::store::columns::JOBS.columns;

/// The lease table's definition (see [`super::ensure_lease_table`]).
pub(super) const LEASE_TABLE: &str = "CREATE TABLE IF NOT EXISTS plughost_lease (id int PRIMARY KEY CHECK (id = 1), \
     holder text NOT NULL, epoch bigint NOT NULL, expires_at timestamptz NOT NULL, \
     http_addr text NOT NULL DEFAULT '', grpc_addr text NOT NULL DEFAULT '')";

/// The schema version a database is at (0: none yet). Takes the advisory lock for the
/// transaction `tx`.
async fn locked_version(tx: &tokio_postgres::Transaction<'_>) -> Result<i32, tokio_postgres::Error> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ADVISORY_LOCK]).await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS plughost_schema_version (version integer PRIMARY KEY)").await?;
    tx.query_one("SELECT COALESCE(MAX(version), 0) FROM plughost_schema_version", &[]).await?.try_get(0)
}

/// Applies the migrations the database lacks, each in a transaction of its own under the
/// advisory lock, checking the lease's epoch first when `fence` is given. Returns the
/// migrations it applied.
pub(super) async fn migrate(client: &mut Client, fence: Option<i64>) -> Result<Vec<i32>, Failure> {
    let mut applied = Vec::new();
    for (i, statements) in MIGRATIONS.iter().enumerate() {
        let version = i as i32 + 1;
        let tx = client.transaction().await?;
        match apply_one(&tx, version, statements, fence).await {
            Ok(true) => {
                tx.commit().await?;
                applied.push(version);
            }
            Ok(false) => tx.rollback().await?,
            Err(e) => {
                let _ = tx.rollback().await;
                return Err(e);
            }
        }
    }
    Ok(applied)
}

/// Applies migration `version` in `tx` unless the database has it; whether it did.
async fn apply_one(
    tx: &tokio_postgres::Transaction<'_>,
    version: i32,
    statements: &[&str],
    fence: Option<i64>,
) -> Result<bool, Failure> {
    // Statements of a migration may take a while on a big table.
    tx.batch_execute("SET LOCAL statement_timeout = 0").await?;
    let current = locked_version(tx).await?;
    if let Some(held) = fence {
        fence_check(tx, None, held).await?;
    }
    if current >= version {
        return Ok(false);
    }
    for statement in statements {
        tx.batch_execute(statement).await?;
    }
    tx.execute("INSERT INTO plughost_schema_version (version) VALUES ($1)", &[&version]).await?;
    Ok(true)
}

/// Creates the lease table unless it exists, under the migrations' advisory lock (two
/// admins creating it at once would otherwise collide in the catalog).
pub(super) async fn ensure_lease_table(client: &Client) -> Result<(), tokio_postgres::Error> {
    // One simple query, so one implicit transaction: the lock is held until the table is
    // created, and released at its end.
    client.batch_execute(&format!("SELECT pg_advisory_xact_lock({ADVISORY_LOCK}); {LEASE_TABLE}")).await
}
