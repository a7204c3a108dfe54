//! Trends: per job type, how many jobs finished (succeeded, failed, canceled), how long
//! they waited and ran (p50 and p95), how deep the queue was and how many execution slots
//! were in use, over the last hour (1-minute buckets) and the last day (15-minute
//! buckets). The pages chart them and `GET /api/plugin/job-types/{t}/series` serves them.
//!
//! - **Fed by the event bus.** [`Trends`] is the bus's [`Observer`]: it sees every event
//!   as it is published, on the publishing thread (for job events, the store's publisher
//!   thread, never the dispatcher's). A job's final state adds to its type's current
//!   buckets: a map lookup by the type's name, one lock of that type's rings and a few
//!   counters, so O(1) per event, with nothing allocated after a type's first job and
//!   nothing shared with other job types. Other events are ignored at a glance.
//! - **Gauges are sampled.** Queue depth (PENDING jobs), jobs out on executors and the
//!   slots executors offer are read from the dispatcher's counts and the registry every
//!   [`SAMPLE_EVERY`] and on every read; a bucket keeps the highest value sampled in it.
//! - **Rebuilt at start.** The outcome counts and durations of jobs that finished in
//!   the last 24 h before this start are read back from the store, in the background
//!   ([`Trends::rebuild`]); a series says `complete: false` until that is done. Gauges
//!   are not in the store: after a restart they start empty.
//! - **Bounded.** Each job type has two fixed rings (60 + 96 buckets of about 500
//!   bytes): about 80 KB per job type, whatever the rate of jobs.
//!
//! Durations are kept in log-scale histograms (two buckets per doubling, from 1 ms to
//! about 37 h), so a percentile is an estimate within about 20 % of the true value.
//!
//! **Invariant:** the dispatcher never calls into trends, and trends never takes the job
//! table's lock on the event path; it reads the dispatcher's counts only when sampling.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use proto::pb::JobState;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::{
    clock::SharedClock,
    dispatcher::Dispatcher,
    events::{EventKind, Observer},
    job::Job,
    registry::Registry,
    store::{FinishedJob, Store},
};

/// How often the gauges are sampled (besides every read).
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// A chart's time span and its bucket width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The last hour, in 1-minute buckets.
    Hour,
    /// The last 24 hours, in 15-minute buckets.
    Day,
}

impl Window {
    /// `1h` or `24h`.
    pub fn parse(text: &str) -> Option<Window> {
        match text {
            "1h" => Some(Window::Hour),
            "24h" => Some(Window::Day),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Window::Hour => "1h",
            Window::Day => "24h",
        }
    }

    pub fn bucket_ms(self) -> i64 {
        match self {
            Window::Hour => 60_000,
            Window::Day => 15 * 60_000,
        }
    }

    pub fn buckets(self) -> usize {
        match self {
            Window::Hour => 60,
            Window::Day => 96,
        }
    }

    pub fn span_ms(self) -> i64 {
        self.bucket_ms() * self.buckets() as i64
    }
}

/// Histogram buckets: 0 ms, then two per doubling from 1 ms up to 2^27 ms (about 37 h);
/// longer durations fall in the last one.
const HIST_BUCKETS: usize = 1 + 2 * 27;

/// A log-scale histogram of durations in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Hist {
    counts: [u32; HIST_BUCKETS],
    n: u32,
}

impl Hist {
    const EMPTY: Hist = Hist { counts: [0; HIST_BUCKETS], n: 0 };

    /// The bucket of `ms`: 0 for 0, else 1 + 2 * floor(log2 ms) + the bit after the top one.
    fn index(ms: i64) -> usize {
        if ms <= 0 {
            return 0;
        }
        let ms = ms as u64;
        let octave = 63 - ms.leading_zeros() as usize;
        let half = if octave == 0 { 0 } else { ((ms >> (octave - 1)) & 1) as usize };
        (1 + 2 * octave + half).min(HIST_BUCKETS - 1)
    }

    /// The values bucket `i` holds: `[low, high)`.
    fn bounds(i: usize) -> (f64, f64) {
        if i == 0 {
            return (0.0, 1.0);
        }
        let octave = (i - 1) / 2;
        let base = (1u64 << octave) as f64;
        if octave == 0 {
            return (1.0, 2.0);
        }
        if (i - 1).is_multiple_of(2) { (base, base * 1.5) } else { (base * 1.5, base * 2.0) }
    }

    fn add(&mut self, ms: i64) {
        let i = Hist::index(ms);
        self.counts[i] = self.counts[i].saturating_add(1);
        self.n = self.n.saturating_add(1);
    }

    fn merge(&mut self, other: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a = a.saturating_add(*b);
        }
        self.n = self.n.saturating_add(other.n);
    }

    /// The `q` quantile (0..=1), interpolated within its bucket; None when empty.
    fn quantile(&self, q: f64) -> Option<i64> {
        if self.n == 0 {
            return None;
        }
        let rank = (q * f64::from(self.n)).max(1.0);
        let mut seen = 0.0;
        for (i, &c) in self.counts.iter().enumerate() {
            if c == 0 {
                continue;
            }
            let c = f64::from(c);
            if seen + c >= rank {
                let (low, high) = Hist::bounds(i);
                let within = ((rank - seen) / c).clamp(0.0, 1.0);
                return Some((low + (high - low) * within).round() as i64);
            }
            seen += c;
        }
        None
    }
}

/// One bucket of one ring.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Its start (Unix ms); [`NEVER`] when the slot was never used.
    start: i64,
    succeeded: u32,
    failed: u32,
    canceled: u32,
    wait: Hist,
    run: Hist,
    /// Whether a gauge was sampled in it; the maxima below mean nothing otherwise.
    sampled: bool,
    queue_max: u32,
    in_flight_max: u32,
    slots_max: u32,
}

const NEVER: i64 = i64::MIN;

impl Bucket {
    const EMPTY: Bucket = Bucket {
        start: NEVER,
        succeeded: 0,
        failed: 0,
        canceled: 0,
        wait: Hist::EMPTY,
        run: Hist::EMPTY,
        sampled: false,
        queue_max: 0,
        in_flight_max: 0,
        slots_max: 0,
    };

    fn starting(start: i64) -> Bucket {
        Bucket { start, ..Bucket::EMPTY }
    }
}

/// A ring of buckets of one width: slot `(t / width) % len` holds the bucket that starts
/// at `t - t % width`, while it is the newest one to land there.
#[derive(Debug)]
struct Ring {
    width: i64,
    buckets: Box<[Bucket]>,
}

impl Ring {
    fn new(window: Window) -> Ring {
        Ring { width: window.bucket_ms(), buckets: vec![Bucket::EMPTY; window.buckets()].into_boxed_slice() }
    }

    /// The bucket for time `t`, cleared first when its slot held an older one; None when
    /// `t` is older than what the slot holds now (it fell out of the window).
    fn at(&mut self, t: i64) -> Option<&mut Bucket> {
        let start = t - t.rem_euclid(self.width);
        let len = self.buckets.len() as i64;
        let slot = &mut self.buckets[start.div_euclid(self.width).rem_euclid(len) as usize];
        if slot.start < start {
            *slot = Bucket::starting(start);
        }
        (slot.start == start).then_some(slot)
    }

    /// The buckets of the window that ends with the one holding `now`, oldest first;
    /// a slot holding another time's bucket reads as empty.
    fn read(&self, now: i64) -> Vec<Bucket> {
        let len = self.buckets.len() as i64;
        let newest = now - now.rem_euclid(self.width);
        (0..len)
            .map(|k| {
                let start = newest - (len - 1 - k) * self.width;
                let b = &self.buckets[start.div_euclid(self.width).rem_euclid(len) as usize];
                if b.start == start { *b } else { Bucket::starting(start) }
            })
            .collect()
    }
}

/// The hour's and the day's rings of one job type (or the overall gauges).
#[derive(Debug)]
struct Rings {
    hour: Ring,
    day: Ring,
    /// The last sample: (queue depth, in flight, slots).
    now: Option<(u32, u32, u32)>,
}

impl Rings {
    fn new() -> Rings {
        Rings { hour: Ring::new(Window::Hour), day: Ring::new(Window::Day), now: None }
    }

    fn update(&mut self, t: i64, f: impl Fn(&mut Bucket)) {
        if let Some(b) = self.hour.at(t) {
            f(b);
        }
        if let Some(b) = self.day.at(t) {
            f(b);
        }
    }

    fn ring(&self, window: Window) -> &Ring {
        match window {
            Window::Hour => &self.hour,
            Window::Day => &self.day,
        }
    }

    fn sample(&mut self, t: i64, queue: u32, in_flight: u32, slots: u32) {
        self.now = Some((queue, in_flight, slots));
        self.update(t, |b| {
            b.sampled = true;
            b.queue_max = b.queue_max.max(queue);
            b.in_flight_max = b.in_flight_max.max(in_flight);
            b.slots_max = b.slots_max.max(slots);
        });
    }
}

/// How a job ended, and the durations of its last attempt, as a trend counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished<'a> {
    pub job_type: &'a str,
    /// SUCCEEDED, FAILED or CANCELED.
    pub state: JobState,
    pub at: i64,
    /// From when the job was ready (created, or its not-before time, or the end of its
    /// retry's backoff) to its last attempt's start.
    pub wait_ms: Option<i64>,
    /// The last attempt's run, from its start to the job's end.
    pub run_ms: Option<i64>,
}

impl<'a> Finished<'a> {
    /// A job in a final state, as published. Durations only when the job ended out of an
    /// attempt (it has a worker): a job canceled or expired while it waited has none.
    /// The wait of a job that started once runs from its creation (or its not-before
    /// time), as the store can tell again after a restart; a retried or requeued job's
    /// from when it last became ready, which the dispatcher notes (`queued_at`).
    pub fn of_job(job: &'a Job) -> Option<Finished<'a>> {
        if !crate::job::is_final(job.state) {
            return None;
        }
        let attempt = !job.worker_id.is_empty() && job.assigned_at > 0;
        let queued_at = job.queued_at.get();
        let ready = if job.attempts_total <= 1 || queued_at <= 0 {
            job.spec.created_at.max(job.spec.not_before)
        } else {
            queued_at
        };
        Some(Finished {
            job_type: &job.spec.job_type,
            state: job.state,
            at: job.completed_at,
            wait_ms: attempt.then(|| (job.assigned_at - ready).max(0)),
            run_ms: attempt.then(|| (job.completed_at - job.assigned_at).max(0)),
        })
    }

    /// A finished job read back from the store. The store does not keep when a retried
    /// or requeued job last became ready, so only a job that started once has a wait
    /// (from its creation, or its not-before time).
    pub fn of_stored(job: &'a FinishedJob) -> Finished<'a> {
        let attempt = job.had_worker && job.assigned_at > 0;
        Finished {
            job_type: &job.job_type,
            state: job.state,
            at: job.completed_at,
            wait_ms: (attempt && job.attempts_total == 1)
                .then(|| (job.assigned_at - job.created_at.max(job.not_before)).max(0)),
            run_ms: attempt.then(|| (job.completed_at - job.assigned_at).max(0)),
        }
    }
}

/// The trends of every job type. See the module docs.
pub struct Trends {
    clock: SharedClock,
    types: RwLock<HashMap<String, Arc<Mutex<Rings>>>>,
    /// Gauges of all job types together (and of all workers' slots).
    overall: Mutex<Rings>,
    /// Jobs that finished before this time are counted from the store, the others live.
    started_at: i64,
    rebuilt: AtomicBool,
}

/// One bucket of a series.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Point {
    /// Unix ms.
    pub start: i64,
    pub succeeded: u32,
    pub failed: u32,
    pub canceled: u32,
    /// The most PENDING jobs sampled in the bucket (null: no sample).
    pub queue_depth: Option<u32>,
    /// The most jobs out on executors (ASSIGNED or RUNNING) sampled in the bucket.
    pub slots_used: Option<u32>,
    /// The most execution slots the connected executors offered.
    pub slots_total: Option<u32>,
    pub wait_p50_ms: Option<i64>,
    pub wait_p95_ms: Option<i64>,
    pub run_p50_ms: Option<i64>,
    pub run_p95_ms: Option<i64>,
}

/// A series' sums over its window, and the gauges as last sampled.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Totals {
    pub succeeded: u64,
    pub failed: u64,
    pub canceled: u64,
    pub wait_p50_ms: Option<i64>,
    pub wait_p95_ms: Option<i64>,
    pub run_p50_ms: Option<i64>,
    pub run_p95_ms: Option<i64>,
    pub queue_depth_max: Option<u32>,
    pub queue_depth_now: Option<u32>,
    pub slots_used_now: Option<u32>,
    pub slots_total_now: Option<u32>,
}

/// A job type's trends (or all job types') over a window.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Series {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_type: Option<String>,
    /// `1h` or `24h`.
    pub window: &'static str,
    pub bucket_seconds: i64,
    /// The window: from the oldest bucket's start to now (Unix ms).
    pub from: i64,
    pub to: i64,
    /// False while the jobs that finished before this start are still being read back
    /// from the store.
    pub complete: bool,
    /// Oldest first.
    pub buckets: Vec<Point>,
    pub totals: Totals,
}

impl Trends {
    pub fn new(clock: SharedClock) -> Arc<Trends> {
        let started_at = clock.now_ms();
        Arc::new(Trends {
            clock,
            types: RwLock::new(HashMap::new()),
            overall: Mutex::new(Rings::new()),
            started_at,
            rebuilt: AtomicBool::new(false),
        })
    }

    /// The rings of `job_type`, created on first use.
    fn rings(&self, job_type: &str) -> Arc<Mutex<Rings>> {
        if let Some(r) = self.types.read().expect("trends lock").get(job_type) {
            return r.clone();
        }
        let mut types = self.types.write().expect("trends lock");
        types.entry(job_type.to_string()).or_insert_with(|| Arc::new(Mutex::new(Rings::new()))).clone()
    }

    /// Counts one finished job.
    pub fn finished(&self, f: &Finished<'_>) {
        let at = if f.at > 0 { f.at } else { self.clock.now_ms() };
        // The common case takes only the map's read lock and the type's own lock.
        let apply = |rings: &mut Rings| {
            rings.update(at, |b| {
                match f.state {
                    JobState::Succeeded => b.succeeded = b.succeeded.saturating_add(1),
                    JobState::Failed => b.failed = b.failed.saturating_add(1),
                    _ => b.canceled = b.canceled.saturating_add(1),
                }
                if let Some(ms) = f.wait_ms {
                    b.wait.add(ms);
                }
                if let Some(ms) = f.run_ms {
                    b.run.add(ms);
                }
            })
        };
        if let Some(r) = self.types.read().expect("trends lock").get(f.job_type) {
            apply(&mut r.lock().expect("trends rings lock"));
            return;
        }
        apply(&mut self.rings(f.job_type).lock().expect("trends rings lock"));
    }

    /// Samples the gauges: PENDING and in-flight jobs per job type from the dispatcher,
    /// the slots connected executors offer from the registry.
    pub fn sample(&self, dispatcher: &Dispatcher, registry: &Registry) {
        let now = self.clock.now_ms();
        // (pending, in flight, slots) per job type.
        let mut gauges: HashMap<String, (u32, u32, u32)> = HashMap::new();
        for ((job_type, state), n) in dispatcher.counts() {
            let n = u32::try_from(n).unwrap_or(u32::MAX);
            let g = gauges.entry(job_type).or_default();
            match state {
                JobState::Pending => g.0 = g.0.saturating_add(n),
                JobState::Assigned | JobState::Running => g.1 = g.1.saturating_add(n),
                _ => {}
            }
        }
        let (mut used_total, mut slots_total) = (0u32, 0u32);
        for s in registry.sessions() {
            let hb = s.heartbeat();
            used_total = used_total.saturating_add(u32::try_from(hb.execution_slots_used).unwrap_or(0));
            slots_total = slots_total.saturating_add(u32::try_from(hb.execution_slots_total).unwrap_or(0));
            if registry.is_draining(&s.worker_id) {
                continue;
            }
            for (job_type, c) in &s.capabilities {
                if c.can_execute {
                    let g = gauges.entry(job_type.clone()).or_default();
                    g.2 = g.2.saturating_add(u32::try_from(s.execution_slots(job_type)).unwrap_or(0));
                }
            }
        }
        let queue_total = gauges.values().fold(0u32, |sum, g| sum.saturating_add(g.0));
        let in_flight_total = gauges.values().fold(0u32, |sum, g| sum.saturating_add(g.1));
        for (job_type, (pending, in_flight, slots)) in gauges {
            self.rings(&job_type).lock().expect("trends rings lock").sample(now, pending, in_flight, slots);
        }
        // Slots in use by the workers' own account; the dispatcher's in-flight count when
        // no worker has reported yet.
        let used = if slots_total > 0 { used_total } else { in_flight_total };
        self.overall.lock().expect("trends rings lock").sample(now, queue_total, used, slots_total);
    }

    /// The series of `job_type` (None: all job types together) over `window`.
    pub fn series(&self, job_type: Option<&str>, window: Window) -> Series {
        // Read before the buckets: the rebuild sets it only after counting every stored
        // job, so `complete: true` then promises counts that include them. Read after, it
        // could pair buckets taken before the rebuild with a rebuild that ended meanwhile.
        let complete = self.rebuilt.load(Ordering::Acquire);
        let now = self.clock.now_ms();
        let (buckets, gauges, last) = match job_type {
            Some(t) => {
                let rings = self.types.read().expect("trends lock").get(t).cloned();
                match rings {
                    Some(r) => {
                        let r = r.lock().expect("trends rings lock");
                        let b = r.ring(window).read(now);
                        (b.clone(), b, r.now)
                    }
                    None => {
                        let empty = Ring::new(window).read(now);
                        (empty.clone(), empty, None)
                    }
                }
            }
            None => {
                let all: Vec<Arc<Mutex<Rings>>> = self.types.read().expect("trends lock").values().cloned().collect();
                let mut sum = Ring::new(window).read(now);
                for r in all {
                    let b = r.lock().expect("trends rings lock").ring(window).read(now);
                    for (s, b) in sum.iter_mut().zip(b.iter()) {
                        s.succeeded = s.succeeded.saturating_add(b.succeeded);
                        s.failed = s.failed.saturating_add(b.failed);
                        s.canceled = s.canceled.saturating_add(b.canceled);
                        s.wait.merge(&b.wait);
                        s.run.merge(&b.run);
                    }
                }
                let overall = self.overall.lock().expect("trends rings lock");
                (sum, overall.ring(window).read(now), overall.now)
            }
        };
        let (mut wait, mut run) = (Hist::EMPTY, Hist::EMPTY);
        let mut totals = Totals {
            succeeded: 0,
            failed: 0,
            canceled: 0,
            wait_p50_ms: None,
            wait_p95_ms: None,
            run_p50_ms: None,
            run_p95_ms: None,
            queue_depth_max: None,
            queue_depth_now: last.map(|l| l.0),
            slots_used_now: last.map(|l| l.1),
            slots_total_now: last.map(|l| l.2),
        };
        let points = buckets
            .iter()
            .zip(gauges.iter())
            .map(|(b, g)| {
                totals.succeeded += u64::from(b.succeeded);
                totals.failed += u64::from(b.failed);
                totals.canceled += u64::from(b.canceled);
                wait.merge(&b.wait);
                run.merge(&b.run);
                if g.sampled {
                    totals.queue_depth_max = Some(totals.queue_depth_max.unwrap_or(0).max(g.queue_max));
                }
                Point {
                    start: b.start,
                    succeeded: b.succeeded,
                    failed: b.failed,
                    canceled: b.canceled,
                    queue_depth: g.sampled.then_some(g.queue_max),
                    slots_used: g.sampled.then_some(g.in_flight_max),
                    slots_total: g.sampled.then_some(g.slots_max),
                    wait_p50_ms: b.wait.quantile(0.5),
                    wait_p95_ms: b.wait.quantile(0.95),
                    run_p50_ms: b.run.quantile(0.5),
                    run_p95_ms: b.run.quantile(0.95),
                }
            })
            .collect::<Vec<_>>();
        totals.wait_p50_ms = wait.quantile(0.5);
        totals.wait_p95_ms = wait.quantile(0.95);
        totals.run_p50_ms = run.quantile(0.5);
        totals.run_p95_ms = run.quantile(0.95);
        Series {
            job_type: job_type.map(str::to_string),
            window: window.name(),
            bucket_seconds: window.bucket_ms() / 1000,
            from: points.first().map(|p| p.start).unwrap_or(now),
            to: now,
            complete,
            buckets: points,
            totals,
        }
    }

    /// Whether the jobs that finished before this start were read back from the store.
    pub fn is_complete(&self) -> bool {
        self.rebuilt.load(Ordering::Acquire)
    }

    /// Counts the jobs that finished in the 24 h before this start, read back from the
    /// store: one query, its rows visited one at a time. Jobs that finish from now on are
    /// counted live, so none is counted twice.
    pub fn rebuild_from(&self, store: &Store) -> Result<usize, crate::store::StoreError> {
        let until = self.started_at;
        let since = until - Window::Day.span_ms();
        let mut n = 0;
        let result = store.finished_jobs(since, until, &mut |job| {
            n += 1;
            self.finished(&Finished::of_stored(&job));
        });
        self.rebuilt.store(true, Ordering::Release);
        result.map(|_| n)
    }

    /// [`Trends::rebuild_from`] on a blocking thread, logging the outcome.
    pub async fn rebuild(self: Arc<Self>, store: Arc<Store>) {
        let started = std::time::Instant::now();
        let trends = self.clone();
        match tokio::task::spawn_blocking(move || trends.rebuild_from(&store)).await {
            Ok(Ok(jobs)) => tracing::info!(jobs, took_ms = started.elapsed().as_millis() as u64, "trends rebuilt"),
            Ok(Err(e)) => tracing::warn!(error = %e, "trends: cannot read the finished jobs of the last day"),
            Err(e) => {
                self.rebuilt.store(true, Ordering::Release);
                tracing::warn!(error = %e, "trends: the rebuild stopped");
            }
        }
    }

    /// Samples the gauges every [`SAMPLE_EVERY`] until `stop`.
    pub async fn run(self: Arc<Self>, dispatcher: Dispatcher, registry: Arc<Registry>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.sample(&dispatcher, &registry),
                _ = stop.cancelled() => break,
            }
        }
    }
}

impl Observer for Trends {
    fn observe(&self, kind: &EventKind) {
        if let EventKind::Job { job } = kind
            && let Some(f) = Finished::of_job(&job.0)
        {
            self.finished(&f);
        }
    }
}

#[cfg(test)]
mod tests;
