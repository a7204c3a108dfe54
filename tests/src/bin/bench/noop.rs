//! The no-op job type the load scenarios run, on real SDK workers: one detector proposes a
//! planned number of jobs (as fast as it can, or paced at a rate) once the bench says go,
//! and every executor finishes each job at once (or after a fixed time, for `failover`).
//! Each job's proposal, start and end times and its number of executions are recorded by
//! index (the dedupe key is `k<index>`) without locks.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use prost::Message;
use tokio::sync::watch;
use worker_sdk::prelude::*;

use crate::admin_process::{self, AdminProcess};

pub const JOB_TYPE: &str = "bench.noop";

/// How the detector hands out its jobs.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// Batches of this many proposals, back to back.
    Burst { batch: usize },
    /// Each job `i` proposed at `i / per_s` seconds after the detection starts.
    Rate { per_s: f64 },
}

/// What the workers of one scenario share with the bench.
pub struct Shared {
    epoch: Instant,
    jobs: usize,
    pace: Pace,
    admin_pid: u32,
    go: watch::Sender<bool>,
    proposed: Mutex<bool>,
    /// Per job: nanoseconds since `epoch` + 1 (0 = not yet) of its proposal, the arrival of
    /// its execute request, and its handler's end.
    pub sent: Vec<AtomicU64>,
    pub started: Vec<AtomicU64>,
    pub finished: Vec<AtomicU64>,
    /// Per job: how many execute requests arrived, and how many of them came from another
    /// admin than the first one to dispatch (after a failover). The admin that sent a
    /// request is told by the request id's nonce (`exec-<nonce>-<n>`, one per admin run).
    pub executions: Vec<AtomicU32>,
    pub executions_later: Vec<AtomicU32>,
    /// The first admin's request id nonce (set by the first execute request).
    first_nonce: OnceLock<String>,
    /// The arrival of the first execute request from another admin (0 = none yet).
    first_later: AtomicU64,
    /// How long each execution takes (zero: it returns at once).
    pub execute_time: Duration,
    /// When the first batch went out, with the admin's CPU seconds at that moment.
    pub first_proposal: OnceLock<(Instant, f64)>,
    pub last_proposal: OnceLock<Instant>,
    pub executed: AtomicUsize,
    /// Encoded size of one execute request as it arrived (for the ceiling's messages).
    pub execute_request_bytes: AtomicUsize,
}

impl Shared {
    pub fn new(jobs: usize, pace: Pace, admin_pid: u32) -> Arc<Shared> {
        Shared::with_execute_time(jobs, pace, admin_pid, Duration::ZERO)
    }

    /// Workers whose every execution takes `execute_time` (a sleep).
    pub fn with_execute_time(jobs: usize, pace: Pace, admin_pid: u32, execute_time: Duration) -> Arc<Shared> {
        let slots = || (0..jobs).map(|_| AtomicU64::new(0)).collect::<Vec<_>>();
        Arc::new(Shared {
            epoch: Instant::now(),
            jobs,
            pace,
            admin_pid,
            go: watch::Sender::new(false),
            proposed: Mutex::new(false),
            sent: slots(),
            started: slots(),
            finished: slots(),
            executions: (0..jobs).map(|_| AtomicU32::new(0)).collect(),
            executions_later: (0..jobs).map(|_| AtomicU32::new(0)).collect(),
            first_nonce: OnceLock::new(),
            first_later: AtomicU64::new(0),
            execute_time,
            first_proposal: OnceLock::new(),
            last_proposal: OnceLock::new(),
            executed: AtomicUsize::new(0),
            execute_request_bytes: AtomicUsize::new(0),
        })
    }

    /// Lets the detection start proposing.
    pub fn go(&self) {
        self.go.send_replace(true);
    }

    fn stamp(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64 + 1
    }

    /// The time in milliseconds between two recorded stamps of job `i`, if both are set.
    pub fn between_ms(from: &[AtomicU64], to: &[AtomicU64], i: usize) -> Option<f64> {
        let (a, b) = (from[i].load(Ordering::Relaxed), to[i].load(Ordering::Relaxed));
        (a > 0 && b > 0).then(|| (b as f64 - a as f64) / 1e6)
    }

    /// The time from `at` to the arrival of the first execute request sent by another
    /// admin than the first one, if one came.
    pub fn first_later_since(&self, at: Instant) -> Option<Duration> {
        let first = self.first_later.load(Ordering::SeqCst);
        (first > 0).then(|| Duration::from_nanos(first.saturating_sub(self.stamp_of(at))))
    }

    /// Nanoseconds-since-epoch + 1 of an instant, in the same unit as the stamps.
    pub fn stamp_of(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_nanos() as u64 + 1
    }
}

pub fn key(i: usize) -> String {
    format!("k{i}")
}

/// The admin run's nonce in a request id `exec-<nonce>-<n>` (the whole id otherwise).
fn request_nonce(request_id: &str) -> &str {
    request_id.split('-').nth(1).unwrap_or(request_id)
}

fn index(dedupe_key: &str) -> Option<usize> {
    dedupe_key.strip_prefix('k')?.parse().ok()
}

struct Noop {
    shared: Arc<Shared>,
    detect: bool,
    slots: u32,
    total_slots: i32,
}

#[worker_sdk::async_trait]
impl JobHandler for Noop {
    fn capability(&self) -> pb::JobTypeCapability {
        let c = capability(JOB_TYPE, "Bench no-op").execute(self.slots);
        if self.detect { c.detect(1) } else { c }
    }

    fn descriptor(&self) -> pb::JobTypeDescriptor {
        Descriptor::new(JOB_TYPE, "Bench no-op")
            .description("does nothing, as fast as it can: the benchmark's job type")
            .runtime(
                Runtime::default()
                    .interval_minutes(24 * 60)
                    .detection_timeout_seconds(3600)
                    .max_jobs_per_detection(i32::try_from(self.shared.jobs.max(1)).unwrap_or(i32::MAX))
                    .global_concurrency(self.total_slots)
                    .per_worker_concurrency(0)
                    .retry_limit(0)
                    .retry_backoff_seconds(1)
                    .max_runtime_seconds(0)
                    .execution_timeout_seconds(600),
            )
            .build()
    }

    async fn detect(
        &self,
        _request: pb::RunDetectionRequest,
        out: DetectionSender,
        cancel: CancellationToken,
    ) -> HandlerResult<()> {
        let s = &self.shared;
        let mut go = s.go.subscribe();
        tokio::select! {
            r = go.wait_for(|g| *g) => { r?; }
            _ = cancel.cancelled() => return Ok(()),
        }
        {
            // Only the first detection after `go` proposes; later ones find nothing new.
            let mut proposed = s.proposed.lock().expect("proposed lock");
            if *proposed {
                return Ok(());
            }
            *proposed = true;
        }
        let start = Instant::now();
        let mut next = 0;
        while next < s.jobs {
            let end = match s.pace {
                Pace::Burst { batch } => (next + batch.max(1)).min(s.jobs),
                Pace::Rate { per_s } => {
                    let due = start + Duration::from_secs_f64(next as f64 / per_s);
                    tokio::time::sleep_until(due.into()).await;
                    let now_due = (start.elapsed().as_secs_f64() * per_s) as usize + 1;
                    now_due.clamp(next + 1, (next + 1000).min(s.jobs))
                }
            };
            let batch: Vec<pb::JobProposal> = (next..end)
                .map(|i| pb::JobProposal {
                    proposal_id: format!("p{i}"),
                    dedupe_key: key(i),
                    summary: format!("no-op job {i}"),
                    priority: pb::JobPriority::Normal as i32,
                    ..Default::default()
                })
                .collect();
            s.first_proposal.get_or_init(|| (Instant::now(), admin_process::cpu_seconds(s.admin_pid).unwrap_or(0.0)));
            let now = s.stamp();
            for slot in &s.sent[next..end] {
                slot.store(now, Ordering::Relaxed);
            }
            out.send(batch).await?;
            next = end;
        }
        let _ = s.last_proposal.set(Instant::now());
        Ok(())
    }

    async fn execute(
        &self,
        request: pb::ExecuteJobRequest,
        _progress: ProgressSender,
        _cancel: CancellationToken,
    ) -> HandlerResult<pb::JobResult> {
        let s = &self.shared;
        let at = s.stamp();
        if s.execute_request_bytes.load(Ordering::Relaxed) == 0 {
            s.execute_request_bytes.store(request.encoded_len(), Ordering::Relaxed);
        }
        let i = request.job.as_ref().and_then(|j| index(&j.dedupe_key)).filter(|i| *i < s.jobs);
        let nonce = request_nonce(&request.request_id);
        let later = s.first_nonce.get_or_init(|| nonce.to_string()).as_str() != nonce;
        if later {
            let _ = s.first_later.compare_exchange(0, at, Ordering::SeqCst, Ordering::Relaxed);
        }
        if let Some(i) = i {
            s.started[i].store(at, Ordering::Relaxed);
            s.executions[i].fetch_add(1, Ordering::Relaxed);
            if later {
                s.executions_later[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        if !s.execute_time.is_zero() {
            tokio::time::sleep(s.execute_time).await;
        }
        if let Some(i) = i {
            s.finished[i].store(s.stamp(), Ordering::Relaxed);
        }
        s.executed.fetch_add(1, Ordering::Relaxed);
        Ok(pb::JobResult::default())
    }
}

/// `workers` SDK workers in this process, each with its own connection to the admin and
/// `slots` execution slots; the first one also detects. Given several admins (sharing a
/// PostgreSQL store), each worker gets every address and follows the leader.
pub struct Fleet {
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<Result<(), worker_sdk::Error>>>,
    _dir: tests::TempDir,
}

impl Fleet {
    pub fn start(grpc: SocketAddr, workers: usize, slots: usize, shared: &Arc<Shared>) -> Fleet {
        Fleet::start_many(&[grpc], workers, slots, shared)
    }

    pub fn start_many(admins: &[SocketAddr], workers: usize, slots: usize, shared: &Arc<Shared>) -> Fleet {
        let admin = admins.iter().map(|a| format!("grpc://{a}")).collect::<Vec<_>>().join(",");
        let dir = tests::TempDir::new("bench-workers");
        let shutdown = CancellationToken::new();
        let total_slots = i32::try_from(workers * slots).unwrap_or(i32::MAX);
        let tasks = (0..workers)
            .map(|i| {
                let mut config = WorkerConfig::new(admin.clone(), dir.path().join(format!("w{i}")));
                config.worker_id = Some(format!("bench-w{i}"));
                config.max_reconnect_delay = Duration::from_secs(1);
                config.shutdown_grace = Duration::from_secs(1);
                let handler = Noop {
                    shared: shared.clone(),
                    detect: i == 0,
                    slots: u32::try_from(slots).unwrap_or(u32::MAX),
                    total_slots,
                };
                tokio::spawn(Worker::new(config).handler(handler).run(shutdown.clone()))
            })
            .collect();
        Fleet { shutdown, tasks, _dir: dir }
    }

    /// Waits until the admin has the job type's descriptor and sees every worker.
    pub async fn wait_registered(&self, admin: &AdminProcess, workers: usize) -> Result<()> {
        admin_process::wait_json(
            &admin.http,
            "/api/plugin/job-types",
            "the workers to register",
            Duration::from_secs(60),
            |v| {
                let list = v.as_array()?;
                let t = list.iter().find(|t| t["job_type"] == JOB_TYPE)?;
                (t["has_descriptor"] == true
                    && t["executors"].as_u64() == Some(workers as u64)
                    && t["detectors"].as_u64().unwrap_or(0) >= 1)
                    .then_some(())
            },
        )
        .await
        .context("registering the SDK workers")
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}
