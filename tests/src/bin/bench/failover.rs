//! `failover`: two admins, A and B, on one durable PostgreSQL server the bench starts,
//! with `--lease-seconds L`; SDK workers given both gRPC addresses; N no-op jobs proposed
//! at once by one detection (in batches of 1,000, as in `throughput`) and executed at a
//! steady pace (each execution takes 50 ms, W workers x 8 slots). When half of them have
//! run on A (the leader), A gets SIGKILL. Measured from the kill:
//!
//! - `kill_to_ready_s`: B's `GET /readyz` answers 200 (polled every 5 ms);
//! - `kill_to_first_dispatch_s`: the first execute request from B reaches a worker. The
//!   worker tells B's requests from A's by the request id's nonce (`exec-<nonce>-<n>`,
//!   one per admin run), so a request of A's that arrives late is not taken for B's.
//!
//! Then, once every job has finished (B's status and the database agree):
//!
//! - `lost`: jobs proposed that did not end succeeded in the database (never created,
//!   failed, or never finished);
//! - `doubled`: jobs that ran to success twice: executed again after A had committed their
//!   success (the database's succeeded set is read right after the kill, until B takes
//!   the lease, so it is what A committed), executed twice by the same admin, or stored
//!   twice (two job rows for one dedupe key, or two successful attempt rows);
//! - `executions_repeated`: jobs that were out on A's workers when it died, whose success
//!   A never committed, and that B ran again (expected: requeued without using an attempt).

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use proto::pb::JobState;
use serde_json::{Value, json};
use tests::http;

use crate::{
    Options, Size,
    admin_process::{self, AdminProcess},
    noop::{self, Fleet, JOB_TYPE, Pace, Shared},
    stats::num,
    store::{BenchStore, StoreKind, pg_connect},
    throughput::BATCH,
};

/// How long each execution takes, and slots per worker: a steady flow of short jobs
/// (W x 8 / 50 ms: 1,280 jobs/s with 8 workers), far below the admin's capacity.
const EXECUTE_TIME: Duration = Duration::from_millis(50);
const SLOTS: usize = 8;

fn default_jobs(size: Size) -> usize {
    match size {
        Size::Full => 50_000,
        Size::Quick => 10_000,
        Size::Smoke => 1_000,
    }
}

pub fn default_lease_seconds(size: Size) -> u64 {
    match size {
        Size::Full => 10,
        Size::Quick | Size::Smoke => 2,
    }
}

pub async fn run(o: &Options) -> Result<Value> {
    let jobs = o.jobs.unwrap_or_else(|| default_jobs(o.size));
    let lease = o.lease_seconds.unwrap_or_else(|| default_lease_seconds(o.size));
    let workers = o.workers;
    let store = BenchStore::start(StoreKind::Postgres).await?;
    let url = store.url().context("a PostgreSQL store")?;
    let admin_store = store.admin_store(Some(lease));
    let (dir_a, dir_b) = (tests::TempDir::new("bench-failover-a"), tests::TempDir::new("bench-failover-b"));

    // A first, on the fresh database: it takes the free lease at once.
    let mut a = AdminProcess::start_on(dir_a.path(), 5, &admin_store).await?;
    let a_status = role(&a.http, "leader", Duration::from_secs(60)).await.context("A leading")?;
    let a_epoch = a_status["epoch"].as_i64().context("the leader's epoch")?;
    let mut b = AdminProcess::spawn(dir_b.path(), 5, &admin_store)?;
    b.wait_listening(dir_b.path(), Duration::from_secs(60)).await?;
    let a_http = a.http.clone();
    admin_process::wait_json(&b.http, "/api/plugin/status", "B to stand by behind A", Duration::from_secs(60), |s| {
        (s["role"] == "standby" && s["leader_http"] == a_http.as_str()).then_some(())
    })
    .await?;

    let shared = Shared::with_execute_time(jobs, Pace::Burst { batch: BATCH }, a.pid, EXECUTE_TIME);
    let fleet = Fleet::start_many(&[a.grpc, b.grpc], workers, SLOTS, &shared);
    let result = drive(&mut a, a_epoch, &b, &fleet, &shared, &url, jobs, workers, lease).await;
    fleet.stop().await;
    a.stop(Duration::from_secs(1)).await;
    b.stop(Duration::from_secs(5)).await;
    let m = result?;

    let target_s = lease as f64 + 2.0;
    Ok(json!({
        "store": "postgres",
        "postgres_settings": "durable (fsync on, synchronous_commit on), a server of the bench's own",
        "lease_seconds": lease,
        "jobs": jobs,
        "workers": workers,
        "slots_per_worker": SLOTS,
        "execute_ms": EXECUTE_TIME.as_millis() as u64,
        "jobs_done_at_kill": m.done_at_kill,
        "kill_after_s": num(m.kill_after.as_secs_f64(), 3),
        "kill_to_ready_s": num(m.kill_to_ready.as_secs_f64(), 3),
        "kill_to_first_dispatch_s": m.kill_to_first_dispatch.map(|d| num(d.as_secs_f64(), 3)),
        "kill_to_first_dispatch_source": "the arrival at an SDK worker of the first execute request sent by B \
            (told from A's by the request id's nonce), on the bench's clock, from just before SIGKILL to A",
        "kill_to_first_dispatch_target_s": target_s,
        "kill_to_all_done_s": num(m.kill_to_done.as_secs_f64(), 3),
        "epoch_before": a_epoch,
        "epoch_after": m.b_epoch,
        "lost": m.lost,
        "doubled": m.doubled,
        "executions_repeated": m.repeated,
        "failed": m.failed,
        "never_created": m.never_created,
        "never_executed": m.never_executed,
        "duplicate_job_rows": m.duplicate_rows,
        "jobs_with_two_successful_attempts": m.doubled_attempts,
        "max_attempts": m.max_attempts,
        "succeeded_on_a": m.succeeded_on_a,
        "elapsed_s": num(m.elapsed.as_secs_f64(), 3),
        "lost_note": "jobs proposed that did not end succeeded in the database",
        "doubled_note": "jobs run again after A committed their success, run twice by one admin, or stored twice",
        "executions_repeated_note": "jobs out on A's workers when it died, not committed by A, run again by B (expected)",
    }))
}

struct Measured {
    done_at_kill: usize,
    kill_after: Duration,
    kill_to_ready: Duration,
    kill_to_first_dispatch: Option<Duration>,
    kill_to_done: Duration,
    b_epoch: Option<i64>,
    lost: usize,
    doubled: usize,
    repeated: usize,
    failed: usize,
    never_created: usize,
    never_executed: usize,
    duplicate_rows: usize,
    doubled_attempts: usize,
    max_attempts: i32,
    succeeded_on_a: usize,
    elapsed: Duration,
}

/// Waits until the admin at `http` says it has `role`; returns its status.
async fn role(http: &str, role: &str, within: Duration) -> Result<Value> {
    admin_process::wait_json(http, "/api/plugin/status", &format!("{http} to be {role}"), within, |s| {
        (s["role"] == role).then(|| s.clone())
    })
    .await
}

/// Jobs in a final state, by B's (or A's) in-memory view.
async fn done(http_addr: &str) -> Option<(u64, u64)> {
    let status = http::try_get(http_addr, "/api/plugin/status").await?;
    if status.status != 200 {
        return None;
    }
    let by_state = &status.json()["jobs_by_state"];
    let n = |s: &str| by_state[s].as_u64().unwrap_or(0);
    let total: u64 = by_state.as_object().map(|m| m.values().filter_map(Value::as_u64).sum()).unwrap_or(0);
    Some((n("succeeded") + n("failed") + n("canceled"), total))
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    a: &mut AdminProcess,
    a_epoch: i64,
    b: &AdminProcess,
    fleet: &Fleet,
    shared: &Arc<Shared>,
    url: &str,
    jobs: usize,
    workers: usize,
    lease: u64,
) -> Result<Measured> {
    fleet.wait_registered(a, workers).await?;
    let db = pg_connect(url).await?;
    shared.go();
    let wait_start = Instant::now();
    let first_at = loop {
        if let Some((at, _)) = shared.first_proposal.get() {
            break *at;
        }
        if wait_start.elapsed() > Duration::from_secs(60) {
            bail!("no detection started within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };

    // Run until every job is in A's store and half of them have run.
    let deadline = Duration::from_secs(120).max(Duration::from_secs_f64(jobs as f64 / 100.0));
    loop {
        let executed = shared.executed.load(Ordering::Relaxed);
        if executed >= jobs / 2
            && shared.last_proposal.get().is_some()
            && done(&a.http).await.is_some_and(|(_, total)| total >= jobs as u64)
        {
            break;
        }
        if first_at.elapsed() > deadline {
            bail!("only {executed} of {jobs} jobs ran on A within {deadline:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let done_at_kill = shared.executed.load(Ordering::Relaxed);
    let killed_at = Instant::now();
    a.kill9();
    eprintln!("bench:   killed A (pid {}) after {done_at_kill} of {jobs} jobs; waiting for B to take over", a.pid);

    // Until B holds the lease, the database holds what A committed: read its succeeded set
    // again and again (commits A sent just before it died may still land), keeping the
    // last reading taken while A's epoch was still the lease's.
    let succeeded = JobState::Succeeded as i32;
    let mut on_a: Option<HashSet<String>> = None;
    let mut taken_over = false;
    let mut next_snapshot = killed_at + Duration::from_millis(50);
    let mut ready_at = None;
    let ready_deadline = Duration::from_secs(lease + 60);
    while ready_at.is_none() || !taken_over {
        let now = Instant::now();
        if ready_at.is_none() && admin_process::readyz_status(&b.http).await == Some(200) {
            ready_at = Some(Instant::now());
        }
        if !taken_over && now >= next_snapshot {
            let row = db
                .query_one(
                    "SELECT (SELECT epoch FROM plughost_lease WHERE id = 1), \
                     ARRAY(SELECT dedupe_key FROM jobs WHERE job_type = $1 AND state = $2)",
                    &[&JOB_TYPE, &succeeded],
                )
                .await
                .context("reading what A committed")?;
            let epoch: i64 = row.try_get(0)?;
            if epoch == a_epoch {
                on_a = Some(row.try_get::<_, Vec<String>>(1)?.into_iter().collect());
            } else {
                taken_over = true;
            }
            next_snapshot = Instant::now() + Duration::from_millis(100);
        }
        if killed_at.elapsed() > ready_deadline {
            bail!("B was not ready within {ready_deadline:?} of the kill");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ready_at = ready_at.unwrap_or_else(Instant::now);
    let on_a = on_a.context("B took the lease before the bench could read what A committed")?;
    let b_status = role(&b.http, "leader", Duration::from_secs(10)).await?;
    eprintln!(
        "bench:   B leads (epoch {}) {:.2} s after the kill; {} jobs had succeeded on A",
        b_status["epoch"],
        (ready_at - killed_at).as_secs_f64(),
        on_a.len()
    );

    // Every job finished on B, and the database says so too.
    let finals = [succeeded, JobState::Failed as i32, JobState::Canceled as i32];
    let mut finished_in_time = true;
    loop {
        let in_memory = done(&b.http).await.is_some_and(|(d, _)| d >= jobs as u64);
        if in_memory {
            let row = db
                .query_one(
                    "SELECT COUNT(*) FROM jobs WHERE job_type = $1 AND state = ANY($2)",
                    &[&JOB_TYPE, &&finals[..]],
                )
                .await?;
            if row.try_get::<_, i64>(0)? >= jobs as i64 {
                break;
            }
        }
        if first_at.elapsed() > deadline + Duration::from_secs(lease) {
            eprintln!("bench:   not every job finished within {deadline:?}; counting what is missing");
            finished_in_time = false;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let all_done = Instant::now();
    // The first dispatch from B has happened by now if any job was left for it.
    let kill_to_first_dispatch = shared.first_later_since(killed_at);

    // The database's view: one row per dedupe key, every one succeeded.
    let rows = db.query("SELECT dedupe_key, state FROM jobs WHERE job_type = $1", &[&JOB_TYPE]).await?;
    let mut by_key: HashMap<String, Vec<i32>> = HashMap::new();
    for r in &rows {
        by_key.entry(r.try_get(0)?).or_default().push(r.try_get(1)?);
    }
    let duplicate_rows = rows.len().saturating_sub(by_key.len());
    let mut lost = 0;
    let mut failed = 0;
    let mut never_created = 0;
    for i in 0..jobs {
        match by_key.get(&noop::key(i)) {
            None => {
                never_created += 1;
                lost += 1;
            }
            Some(states) if states.contains(&succeeded) => {}
            Some(states) => {
                lost += 1;
                if states.iter().any(|s| *s == JobState::Failed as i32 || *s == JobState::Canceled as i32) {
                    failed += 1;
                }
            }
        }
    }
    // The store keeps one attempt row per attempt (a requeue after a failover reuses it).
    let doubled_attempts = db
        .query_one(
            "SELECT COUNT(*) FROM (SELECT a.job_seq FROM attempts a JOIN jobs j ON j.seq = a.job_seq \
             WHERE j.job_type = $1 AND a.outcome = 'succeeded' GROUP BY a.job_seq HAVING COUNT(*) > 1) AS twice",
            &[&JOB_TYPE],
        )
        .await?
        .try_get::<_, i64>(0)? as usize;
    let max_attempts: i32 = db
        .query_one("SELECT COALESCE(MAX(attempts), 0) FROM jobs WHERE job_type = $1", &[&JOB_TYPE])
        .await?
        .try_get(0)?;

    // The workers' view: who ran what, A (the first admin to dispatch) or B.
    let mut doubled = 0;
    let mut repeated = 0;
    let mut never_executed = 0;
    for i in 0..jobs {
        let total = shared.executions[i].load(Ordering::Relaxed);
        let later = shared.executions_later[i].load(Ordering::Relaxed);
        let earlier = total - later;
        let committed_on_a = on_a.contains(&noop::key(i));
        if total == 0 {
            never_executed += 1;
        } else if earlier > 1 || later > 1 || (committed_on_a && later > 0) {
            doubled += 1;
        } else if earlier == 1 && later == 1 {
            repeated += 1;
        }
    }
    let doubled = doubled + duplicate_rows + doubled_attempts;
    if !finished_in_time && lost == 0 {
        bail!("B's status never showed every job finished, yet the database has them all");
    }
    Ok(Measured {
        done_at_kill,
        kill_after: killed_at - first_at,
        kill_to_ready: ready_at - killed_at,
        kill_to_first_dispatch,
        kill_to_done: all_done - killed_at,
        b_epoch: b_status["epoch"].as_i64(),
        lost,
        doubled,
        repeated,
        failed,
        never_created,
        never_executed,
        duplicate_rows,
        doubled_attempts,
        max_attempts,
        succeeded_on_a: on_a.len(),
        elapsed: all_done - first_at,
    })
}
