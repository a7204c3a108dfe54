//! `restart`: an admin starting on a store that holds many finished jobs. The store is made
//! by running the admin once (so the schema is its own), stopping it, and writing finished
//! jobs (with one execution run each) into it through the admin's own store, in this
//! process. Then: spawn to `/readyz` 200, and the
//! median time of `GET /api/plugin/jobs?limit=100` and `GET /plugin`.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use admin::{
    events::EventBus,
    job::RunView,
    store::{Op, Store},
};
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::{Options, Size, admin_process::AdminProcess, noop::JOB_TYPE, stats::num, writer};

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
    fill(dir.path(), jobs).await.with_context(|| format!("filling {}", db_path.display()))?;
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

/// Writes `jobs` SUCCEEDED jobs and their execution runs into the admin's (stopped)
/// store at `data_dir`, through the admin's own store in this process, so the rows are
/// what the admin writes (a succeeded job's attempt is held by its row). A chunk is
/// queued while the one before it commits.
async fn fill(data_dir: &std::path::Path, jobs: usize) -> Result<()> {
    let (store, loaded) = Store::open(data_dir, Arc::new(EventBus::new(1024)))?;
    if loaded.next_job_seq != 1 {
        bail!("the fresh store already holds jobs (next id {})", loaded.next_job_seq);
    }
    let base = admin::job::now_ms() - jobs as i64 * 2 - 86_400_000;
    let mut previous = None;
    for chunk in (1..=jobs as i64).collect::<Vec<_>>().chunks(10_000) {
        let mut last = 0;
        for &i in chunk {
            let created = base + i * 2;
            let (assigned, done) = (created + 1, created + 2);
            let mut job = writer::succeed(&writer::assign(&writer::new_job(i as usize - 1)));
            Arc::make_mut(&mut job.spec).created_at = created;
            (job.assigned_at, job.completed_at, job.updated_at) = (assigned, done, done);
            let run = RunView {
                id: i,
                job_type: JOB_TYPE.to_string(),
                kind: "execution".into(),
                job_id: job.id(),
                worker_id: job.worker_id.to_string(),
                started_at: assigned,
                ended_at: done,
                success: true,
                message: String::new(),
                proposals: 0,
                jobs_created: 0,
            };
            store.write(Op::InsertJob(Arc::new(job)));
            last = store.write(Op::Run(Box::new(run)));
        }
        if let Some(ticket) = previous.replace(last) {
            store.durable(ticket).await?;
        }
    }
    if let Some(ticket) = previous {
        store.durable(ticket).await?;
    }
    store.close();
    // A long-running admin's store would have been checkpointed long ago.
    let db = rusqlite::Connection::open(AdminProcess::state_db(data_dir))?;
    db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(())
}
