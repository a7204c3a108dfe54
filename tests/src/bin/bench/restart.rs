//! `restart`: an admin starting on a store that holds many finished jobs. The store is made
//! by running the admin once (so the schema is its own), stopping it, and bulk-inserting
//! finished jobs (with one attempt and one execution run each, as the admin writes them)
//! straight into its SQLite file in one transaction. Then: spawn to `/readyz` 200, and the
//! median time of `GET /api/plugin/jobs?limit=100` and `GET /plugin`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use proto::pb::JobState;
use rusqlite::params;
use serde_json::{Value, json};

use crate::{Options, Size, admin_process::AdminProcess, noop::JOB_TYPE, stats::num};

const REQUESTS: usize = 7;

fn default_jobs(size: Size) -> usize {
    match size {
        Size::Full => 1_000_000,
        Size::Quick => 100_000,
        Size::Smoke => 5_000,
    }
}

pub async fn run(o: &Options) -> Result<Value> {
    let jobs = o.restart_jobs.unwrap_or_else(|| default_jobs(o.size));
    let dir = tests::TempDir::new("bench-restart");
    let first = AdminProcess::start(dir.path(), 5).await?;
    first.stop(Duration::from_secs(10)).await;
    let db_path = AdminProcess::state_db(dir.path());
    let fill_start = Instant::now();
    fill(&db_path, jobs).with_context(|| format!("filling {}", db_path.display()))?;
    let fill_s = fill_start.elapsed().as_secs_f64();
    let db_mib = std::fs::metadata(&db_path).map(|m| m.len() as f64 / 1048576.0).unwrap_or(f64::NAN);
    eprintln!("bench:   {jobs} finished jobs written in {fill_s:.1} s ({db_mib:.0} MiB); restarting the admin");

    let admin = AdminProcess::start(dir.path(), 5).await?;
    let result = measure(&admin, jobs).await;
    let rss = admin.rss_bytes().unwrap_or(0);
    admin.stop(Duration::from_secs(10)).await;
    let m = result?;
    Ok(json!({
        "jobs": jobs,
        "store_mib": num(db_mib, 1),
        "fill_s": num(fill_s, 2),
        "ready_s": num(m.ready_s, 3),
        "jobs_api_ms": num(m.jobs_api_ms, 2),
        "jobs_api_first_ms": num(m.jobs_api_first_ms, 2),
        "plugin_page_status": m.page_status,
        "plugin_page_ms": if m.page_status == 200 { num(m.page_ms, 2) } else { Value::Null },
        "plugin_page_first_ms": if m.page_status == 200 { num(m.page_first_ms, 2) } else { Value::Null },
        "plugin_page_note": match m.page_status {
            200 => "ok".to_string(),
            404 => "GET /plugin answered 404: the page is not built yet".to_string(),
            s => format!("GET /plugin answered {s}"),
        },
        "plugin_jobs_page_status": m.jobs_page_status,
        "plugin_jobs_page_ms": if m.jobs_page_status == 200 { num(m.jobs_page_ms, 2) } else { Value::Null },
        "admin_rss_mib": num(rss as f64 / 1048576.0, 1),
        "requests_per_median": REQUESTS,
        "note": "warm page cache (the store was just written); times include a new loopback TCP connection per request",
    }))
}

struct Measured {
    ready_s: f64,
    jobs_api_ms: f64,
    jobs_api_first_ms: f64,
    page_status: u16,
    page_ms: f64,
    page_first_ms: f64,
    jobs_page_status: u16,
    jobs_page_ms: f64,
}

async fn measure(admin: &AdminProcess, jobs: usize) -> Result<Measured> {
    let (api, api_status, api_body) = timed(&admin.http, "/api/plugin/jobs?limit=100").await;
    if api_status != 200 {
        bail!("GET /api/plugin/jobs answered {api_status}");
    }
    let listed = serde_json::from_slice::<Value>(&api_body)?.as_array().map(Vec::len).unwrap_or(0);
    if listed != 100.min(jobs) {
        bail!("GET /api/plugin/jobs?limit=100 listed {listed} jobs");
    }
    let (page, page_status, _) = timed(&admin.http, "/plugin").await;
    let (_, jobs_page_status, _) = timed(&admin.http, "/plugin/jobs").await;
    Ok(Measured {
        ready_s: admin.ready_after.as_secs_f64(),
        jobs_api_first_ms: api,
        jobs_api_ms: median_of(&admin.http, "/api/plugin/jobs?limit=100").await,
        page_status,
        page_first_ms: page,
        page_ms: median_of(&admin.http, "/plugin").await,
        jobs_page_status,
        jobs_page_ms: median_of(&admin.http, "/plugin/jobs").await,
    })
}

async fn timed(http: &str, path: &str) -> (f64, u16, Vec<u8>) {
    let t = Instant::now();
    let r = tests::http::get(http, path).await;
    (t.elapsed().as_secs_f64() * 1000.0, r.status, r.body)
}

async fn median_of(http: &str, path: &str) -> f64 {
    let mut times = Vec::with_capacity(REQUESTS);
    for _ in 0..REQUESTS {
        times.push(timed(http, path).await.0);
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Writes `jobs` SUCCEEDED jobs, their attempts and runs into the admin's (stopped) store.
fn fill(path: &std::path::Path, jobs: usize) -> Result<()> {
    let mut db = rusqlite::Connection::open(path)?;
    // Setup only: durability of the fill itself does not matter, the admin reopens it.
    db.pragma_update(None, "synchronous", "OFF")?;
    let existing: i64 = db.query_row("SELECT COUNT(*) FROM jobs", [], |r| r.get(0))?;
    if existing != 0 {
        bail!("the fresh store already holds {existing} jobs");
    }
    let base = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64
        - jobs as i64 * 2
        - 86_400_000;
    let tx = db.transaction()?;
    {
        let mut job = tx.prepare(
            "INSERT INTO jobs (seq, job_type, dedupe_key, priority, summary, detail, payload, created_at, \
             not_before, expires_at, detection_run, state, attempts, attempts_total, worker_id, request_id, progress, \
             stage, message, error, result_summary, result, updated_at, ready_at, assigned_at, completed_at, \
             dead_letter, failed_on) \
             VALUES (?1, ?2, ?3, ?4, ?5, '', x'', ?6, 0, 0, 1, ?7, 1, 1, ?8, ?9, 100.0, '', '', '', '', x'', ?10, 0, \
             ?11, ?10, 0, '')",
        )?;
        let mut attempt = tx.prepare(
            "INSERT INTO attempts (job_seq, attempt, worker_id, request_id, started_at, ended_at, outcome, error) \
             VALUES (?1, 1, ?2, ?3, ?4, ?5, 'succeeded', '')",
        )?;
        let mut run = tx.prepare(
            "INSERT INTO runs (id, job_type, kind, job_id, worker_id, started_at, ended_at, success, message, \
             proposals, jobs_created) VALUES (?1, ?2, 'execution', ?3, ?4, ?5, ?6, 1, '', 0, 0)",
        )?;
        let succeeded = JobState::Succeeded as i32;
        let normal = proto::pb::JobPriority::Normal as i32;
        for i in 1..=jobs as i64 {
            let created = base + i * 2;
            let (assigned, done) = (created + 1, created + 2);
            let worker = format!("bench-w{}", i % 8);
            let request = format!("exec-0badc0de-{i}");
            job.execute(params![
                i,
                JOB_TYPE,
                format!("k{i}"),
                normal,
                format!("no-op job {i}"),
                created,
                succeeded,
                worker,
                request,
                done,
                assigned
            ])?;
            attempt.execute(params![i, worker, request, assigned, done])?;
            run.execute(params![i, JOB_TYPE, format!("j{i}"), worker, assigned, done])?;
        }
    }
    tx.commit()?;
    // A long-running admin's store would have been checkpointed long ago.
    db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(())
}
