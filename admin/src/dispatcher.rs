//! JobDispatcher: the table of active jobs and every transition of a job's life after it
//! is created: matching ready jobs to executor slots, progress, completion, retries with
//! backoff, dead-lettering, timeouts, cancellation, and requeueing on worker loss.
//!
//! All of it happens under one `Mutex<JobTable>`, held briefly and never across an
//! `.await`: state changes and their store writes are made under the lock (so the store
//! sees them in order), messages to workers are sent after it is released.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    sync::Arc,
};

use proto::pb::{self, JobState, admin_to_worker_message::Body};

use crate::{
    events::EventKind,
    job::{AttemptView, Job, StopRequest, is_final, job_id, now_ms, state_name},
    monitor::inc,
    registry::WorkerSession,
    state::{AdminState, clip},
    store::{Loaded, Op},
};

/// The reply an executor gives when it has no free slot; it means "not started".
pub const AT_CAPACITY: &str = "executor is at capacity";
/// How long an executor that said it is full is skipped (or until it finishes a job).
const FULL_BACKOFF_MS: i64 = 1000;
/// Recently finished jobs kept in memory, so a read right after completion does not
/// depend on the store's batch having been committed.
const RECENT_FINAL: usize = 4096;
/// Upper bound of one retry backoff.
const MAX_BACKOFF_MS: i64 = 3_600_000;

#[derive(Default)]
pub struct JobTable {
    /// Boxed, so a transition moves a pointer rather than the whole job.
    active: HashMap<i64, Box<Job>>,
    /// (job_type, dedupe_key) of every active job.
    dedupe: HashMap<(String, String), i64>,
    /// Ready PENDING jobs per job type: highest priority first, then oldest.
    queues: BTreeMap<String, BTreeSet<(Reverse<i32>, i64)>>,
    /// PENDING jobs waiting for not_before or a retry backoff: (ready_at, seq).
    delayed: BTreeSet<(i64, i64)>,
    /// PENDING jobs with an expiry: (expires_at, seq).
    expiries: BTreeSet<(i64, i64)>,
    /// ASSIGNED/RUNNING jobs' execution deadlines and stop grace ends: (deadline, seq).
    deadlines: BTreeSet<(i64, i64)>,
    by_request: HashMap<String, i64>,
    /// worker_id -> job_type -> jobs the admin has in flight there.
    inflight: HashMap<String, HashMap<String, i64>>,
    /// job_type -> ASSIGNED + RUNNING jobs.
    running: HashMap<String, i64>,
    full_until: HashMap<String, i64>,
    /// (job_type, state) -> jobs, over all jobs in the store.
    counts: HashMap<(String, i32), i64>,
    recent: HashMap<i64, Box<Job>>,
    recent_order: VecDeque<i64>,
    next_seq: i64,
    rotate: usize,
}

/// Why an operator action on a job was refused.
#[derive(Debug, thiserror::Error)]
pub enum JobActionError {
    #[error("no job {0}")]
    NotFound(String),
    #[error("job {id} is {state}: {why}")]
    Conflict { id: String, state: &'static str, why: &'static str },
    #[error("job {id} cannot be retried: active job {other} has the same dedupe key")]
    Duplicate { id: String, other: String },
}

impl JobTable {
    /// Builds the table from what the store held. Jobs that were ASSIGNED or RUNNING when
    /// the admin stopped are requeued without using up an attempt; the returned writes
    /// record that.
    pub fn from_loaded(loaded: &mut Loaded) -> (JobTable, Vec<Op>) {
        let now = now_ms();
        let mut t = JobTable {
            next_seq: loaded.next_job_seq,
            counts: std::mem::take(&mut loaded.counts),
            ..Default::default()
        };
        let mut writes = Vec::new();
        for mut job in std::mem::take(&mut loaded.active) {
            if let Some(stop) = job.stop.take().filter(|_| job.state != JobState::Pending) {
                // An operator was stopping it when the admin went down: finish the stop
                // rather than run the job again.
                writes.push(attempt_op(&job, "canceled", "admin restarted while the stop was pending", now));
                t.count(&job.spec.job_type, job.state, -1);
                t.count(&job.spec.job_type, stop.outcome, 1);
                job.state = stop.outcome;
                job.error = stop.reason;
                job.updated_at = now;
                job.completed_at = now;
                writes.push(Op::UpdateJob(Arc::new(job.clone())));
                t.remember_final(Box::new(job));
                continue;
            }
            if job.state != JobState::Pending {
                writes.push(attempt_op(&job, "requeued", "admin restarted", now));
                t.count(&job.spec.job_type, job.state, -1);
                t.count(&job.spec.job_type, JobState::Pending, 1);
                job.attempts = (job.attempts - 1).max(0);
                job.state = JobState::Pending;
                job.worker_id.clear();
                job.request_id.clear();
                job.progress = 0.0;
                job.stage.clear();
                job.message = "requeued after admin restart".into();
                job.updated_at = now;
                writes.push(Op::UpdateJob(Arc::new(job.clone())));
            }
            t.dedupe.insert((job.spec.job_type.clone(), job.spec.dedupe_key.clone()), job.seq);
            let seq = job.seq;
            t.active.insert(seq, Box::new(job));
            t.make_ready_or_delay(seq, now);
        }
        (t, writes)
    }

    fn count(&mut self, job_type: &str, state: JobState, delta: i64) {
        *self.counts.entry((job_type.to_string(), state as i32)).or_insert(0) += delta;
    }

    fn set_state(&mut self, job: &mut Job, state: JobState) {
        if job.state == state {
            return;
        }
        self.count(&job.spec.job_type, job.state, -1);
        self.count(&job.spec.job_type, state, 1);
        job.state = state;
    }

    /// Puts a PENDING job in its queue, or in the delayed set while it must wait.
    fn make_ready_or_delay(&mut self, seq: i64, now: i64) {
        let Some(job) = self.active.get_mut(&seq) else { return };
        if job.spec.expires_at > 0 {
            self.expiries.insert((job.spec.expires_at, seq));
        }
        let ready_at = job.ready_at.max(job.spec.not_before);
        if ready_at > now {
            self.delayed.insert((ready_at, seq));
        } else {
            job.queued_at = now;
            let key = (Reverse(job.spec.priority), seq);
            self.queues.entry(job.spec.job_type.clone()).or_default().insert(key);
        }
    }

    fn unqueue(&mut self, job: &Job) {
        if let Some(q) = self.queues.get_mut(&job.spec.job_type) {
            q.remove(&(Reverse(job.spec.priority), job.seq));
        }
        self.delayed.remove(&(job.ready_at.max(job.spec.not_before), job.seq));
        self.expiries.remove(&(job.spec.expires_at, job.seq));
    }

    fn release_slot(&mut self, job: &Job) {
        self.by_request.remove(&job.request_id);
        self.deadlines.remove(&(job.deadline, job.seq));
        if let Some(m) = self.inflight.get_mut(&job.worker_id) {
            if let Some(n) = m.get_mut(&job.spec.job_type) {
                *n -= 1;
                if *n <= 0 {
                    m.remove(&job.spec.job_type);
                }
            }
            if m.is_empty() {
                self.inflight.remove(&job.worker_id);
            }
        }
        if let Some(n) = self.running.get_mut(&job.spec.job_type) {
            *n = (*n - 1).max(0);
        }
    }

    pub fn active_job(&self, seq: i64) -> Option<&Job> {
        self.active.get(&seq).or_else(|| self.recent.get(&seq)).map(|j| &**j)
    }

    /// Takes jobs deleted by retention out of the counts.
    pub fn forget_pruned(&mut self, pruned: &crate::store::Pruned) {
        for (key, n) in pruned {
            if let Some(c) = self.counts.get_mut(key) {
                *c = (*c - n).max(0);
            }
        }
    }

    pub fn counts(&self) -> &HashMap<(String, i32), i64> {
        &self.counts
    }

    pub fn count_of(&self, job_type: &str, state: JobState) -> i64 {
        self.counts.get(&(job_type.to_string(), state as i32)).copied().unwrap_or(0)
    }

    pub fn active_len(&self) -> usize {
        self.active.len()
    }

    /// Active jobs, for the API when it asks for non-final states (fresher than the store).
    pub fn active_jobs(&self) -> impl Iterator<Item = &Job> {
        self.active.values().map(|j| &**j)
    }

    pub fn is_active_key(&self, job_type: &str, dedupe_key: &str) -> bool {
        self.dedupe.contains_key(&(job_type.to_string(), dedupe_key.to_string()))
    }

    pub fn next_seq(&mut self) -> i64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    fn remember_final(&mut self, job: Box<Job>) {
        self.recent_order.push_back(job.seq);
        self.recent.insert(job.seq, job);
        while self.recent_order.len() > RECENT_FINAL {
            if let Some(old) = self.recent_order.pop_front() {
                self.recent.remove(&old);
            }
        }
    }
}

/// The record of a job's current attempt ending (or, with `ended_at` 0, starting).
fn attempt_op(job: &Job, outcome: &str, error: &str, ended_at: i64) -> Op {
    Op::Attempt {
        job_seq: job.seq,
        attempt: AttemptView {
            attempt: job.attempts_total,
            worker_id: job.worker_id.clone(),
            request_id: job.request_id.clone(),
            started_at: job.assigned_at,
            ended_at,
            outcome: outcome.to_string(),
            error_message: error.to_string(),
        },
    }
}

/// Messages to send once the table's lock is released.
type Outbox = Vec<(Arc<WorkerSession>, pb::AdminToWorkerMessage)>;

fn backoff_ms(base_seconds: i32, attempt: i32) -> i64 {
    let base = i64::from(base_seconds.max(0)) * 1000;
    let exp = base.saturating_mul(1i64 << (attempt - 1).clamp(0, 20)).min(MAX_BACKOFF_MS);
    // Equal jitter: at least half the delay, so retries never stampede and never run early.
    let half = exp / 2;
    half + (jitter() % (half + 1))
}

fn jitter() -> i64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut x = STATE.load(Ordering::Relaxed);
    if x == 0 {
        x = (now_ms() as u64) | 1;
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    STATE.store(x, Ordering::Relaxed);
    (x >> 1) as i64
}

impl AdminState {
    fn write_job(&self, job: &Job, insert: bool) {
        // One snapshot serves the store write and the event.
        let snapshot = Arc::new(job.clone());
        let op = if insert { Op::InsertJob(snapshot.clone()) } else { Op::UpdateJob(snapshot.clone()) };
        self.store.submit(Some(op), Some(EventKind::Job { job: crate::events::JobEvent(snapshot) }));
    }

    fn write_attempt(&self, job: &Job, outcome: &str, error: &str, ended_at: i64) {
        self.store.write(attempt_op(job, outcome, error, ended_at));
    }

    /// Adds a new PENDING job to the table (dedupe already checked by the caller, who
    /// holds the lock) and queues its insert. It is not dispatchable until `enqueue`.
    pub(crate) fn insert_new_job(&self, t: &mut JobTable, job: Job) {
        t.count(&job.spec.job_type, JobState::Pending, 1);
        t.dedupe.insert((job.spec.job_type.clone(), job.spec.dedupe_key.clone()), job.seq);
        self.write_job(&job, true);
        t.active.insert(job.seq, Box::new(job));
    }

    /// Makes durable new jobs dispatchable.
    pub fn enqueue(&self, seqs: &[i64]) {
        let now = now_ms();
        {
            let mut t = self.jobs.lock().expect("job table lock");
            for &seq in seqs {
                if t.active.get(&seq).is_some_and(|j| j.state == JobState::Pending) {
                    t.make_ready_or_delay(seq, now);
                }
            }
        }
        self.wake_dispatch.notify_one();
    }

    /// One dispatch pass: promotes delayed jobs, expires what expired, and assigns ready
    /// jobs to executors. Returns when the next delayed job becomes ready, if any.
    pub fn dispatch_pass(&self) -> Option<i64> {
        let now = now_ms();
        let mut out: Outbox = Vec::new();
        let next_wake;
        {
            let mut t = self.jobs.lock().expect("job table lock");
            self.promote_and_expire(&mut t, now);
            if !self.is_stopping() && !self.dispatch_paused.load(std::sync::atomic::Ordering::Relaxed) {
                self.assign_ready(&mut t, now, &mut out);
            }
            next_wake =
                [t.delayed.first().map(|d| d.0), t.expiries.first().map(|d| d.0), t.deadlines.first().map(|d| d.0)]
                    .into_iter()
                    .flatten()
                    .min();
        }
        self.flush(out);
        next_wake
    }

    fn flush(&self, out: Outbox) {
        for (session, msg) in out {
            session.send(msg, self.send_timeout());
        }
    }

    fn promote_and_expire(&self, t: &mut JobTable, now: i64) {
        while let Some(&(at, seq)) = t.delayed.first() {
            if at > now {
                break;
            }
            t.delayed.remove(&(at, seq));
            if let Some(job) = t.active.get_mut(&seq) {
                job.ready_at = 0;
                job.queued_at = now;
                let key = (Reverse(job.spec.priority), seq);
                let job_type = job.spec.job_type.clone();
                t.queues.entry(job_type).or_default().insert(key);
            }
        }
        while let Some(&(at, seq)) = t.expiries.first() {
            if at > now {
                break;
            }
            t.expiries.remove(&(at, seq));
            let pending = t.active.get(&seq).is_some_and(|j| j.state == JobState::Pending);
            if pending {
                let mut job = t.active.remove(&seq).expect("checked above");
                t.unqueue(&job);
                job.error = "expired before it started".into();
                inc(&self.metrics.jobs_expired);
                self.finish(t, job, JobState::Failed, now);
            }
        }
    }

    fn assign_ready(&self, t: &mut JobTable, now: i64, out: &mut Outbox) {
        let types: Vec<String> = t.queues.iter().filter(|(_, q)| !q.is_empty()).map(|(k, _)| k.clone()).collect();
        if types.is_empty() {
            return;
        }
        struct Lane {
            job_type: String,
            runtime: pb::AdminRuntimeConfig,
            weight: usize,
            executors: Vec<(Arc<WorkerSession>, i64)>,
        }
        let mut lanes: Vec<Lane> = Vec::with_capacity(types.len());
        for job_type in types {
            let runtime = self.configs.runtime(&job_type);
            let per_worker = i64::from(runtime.per_worker_execution_concurrency);
            let mut weight = 1;
            let executors: Vec<(Arc<WorkerSession>, i64)> = self
                .registry
                .executors(&job_type)
                .into_iter()
                .filter(|s| t.full_until.get(&s.worker_id).is_none_or(|until| *until <= now))
                .filter_map(|s| {
                    weight = weight.max(s.capabilities.get(&job_type).map(|c| c.weight.max(1) as usize).unwrap_or(1));
                    let used = t.inflight.get(&s.worker_id).and_then(|m| m.get(&job_type)).copied().unwrap_or(0);
                    let mut cap = s.execution_slots(&job_type);
                    if per_worker > 0 {
                        cap = cap.min(per_worker);
                    }
                    (cap - used > 0).then(|| (s, cap - used))
                })
                .collect();
            if !executors.is_empty() {
                lanes.push(Lane { job_type, runtime, weight, executors });
            }
        }
        // Weighted round robin over job types until nothing more fits.
        let mut progress = true;
        while progress {
            progress = false;
            for lane in lanes.iter_mut() {
                for _ in 0..lane.weight {
                    let limit = i64::from(lane.runtime.global_execution_concurrency);
                    if t.running.get(&lane.job_type).copied().unwrap_or(0) >= limit {
                        break;
                    }
                    let Some(&key) = t.queues.get(&lane.job_type).and_then(|q| q.first()) else { break };
                    let seq = key.1;
                    let Some(job) = t.active.get(&seq) else {
                        t.queues.get_mut(&lane.job_type).map(|q| q.remove(&key));
                        continue;
                    };
                    // Prefer an executor that has not failed this job already.
                    let avoid = &job.failed_on;
                    let pick = |allow_failed: bool| -> Option<usize> {
                        let best = lane
                            .executors
                            .iter()
                            .filter(|(s, free)| *free > 0 && (allow_failed || !avoid.contains(&s.worker_id)))
                            .map(|(_, free)| *free)
                            .max()?;
                        let ties: Vec<usize> = lane
                            .executors
                            .iter()
                            .enumerate()
                            .filter(|(_, (s, free))| *free == best && (allow_failed || !avoid.contains(&s.worker_id)))
                            .map(|(i, _)| i)
                            .collect();
                        Some(ties[t.rotate % ties.len()])
                    };
                    let Some(idx) = pick(false).or_else(|| pick(true)) else { break };
                    t.rotate = t.rotate.wrapping_add(1);
                    t.queues.get_mut(&lane.job_type).map(|q| q.remove(&key));
                    let session = lane.executors[idx].0.clone();
                    lane.executors[idx].1 -= 1;
                    let msg = self.assign(t, seq, &session, &lane.runtime, now);
                    out.push((session, msg));
                    progress = true;
                }
            }
            lanes.retain(|l| l.executors.iter().any(|(_, f)| *f > 0));
        }
    }

    /// ASSIGNED: records the attempt and builds the execute request.
    fn assign(
        &self,
        t: &mut JobTable,
        seq: i64,
        session: &WorkerSession,
        runtime: &pb::AdminRuntimeConfig,
        now: i64,
    ) -> pb::AdminToWorkerMessage {
        let mut job = t.active.remove(&seq).expect("assign takes a queued job");
        t.expiries.remove(&(job.spec.expires_at, seq));
        self.metrics.dispatch_latency.observe((now - job.queued_at).max(0) as f64 / 1000.0);
        inc(&self.metrics.attempts_started);
        t.set_state(&mut job, JobState::Assigned);
        job.attempts += 1;
        job.attempts_total += 1;
        job.worker_id = session.worker_id.clone();
        job.session_id = session.session_id;
        job.request_id = self.new_request_id("exec");
        job.assigned_at = now;
        job.updated_at = now;
        job.progress = 0.0;
        job.stage.clear();
        job.message.clear();
        job.error.clear();
        let job_type = job.spec.job_type.clone();
        *t.inflight.entry(job.worker_id.clone()).or_default().entry(job_type.clone()).or_insert(0) += 1;
        *t.running.entry(job_type.clone()).or_insert(0) += 1;
        t.by_request.insert(job.request_id.clone(), seq);
        job.deadline = now + execution_timeout_ms(runtime);
        t.deadlines.insert((job.deadline, seq));
        self.write_job(&job, false);
        self.write_attempt(&job, "running", "", 0);
        let cfg = self.configs.config(&job_type);
        let request = pb::ExecuteJobRequest {
            request_id: job.request_id.clone(),
            job: Some(job.to_spec()),
            admin_runtime: Some(*runtime),
            admin_config_values: cfg.as_ref().map(|c| c.admin_config_values.clone()).unwrap_or_default(),
            worker_config_values: cfg.as_ref().map(|c| c.worker_config_values.clone()).unwrap_or_default(),
            cluster_context: Some(self.cluster_context()),
            attempt: job.attempts_total,
        };
        let msg = AdminState::envelope(&job.request_id, Body::ExecuteJobRequest(request));
        t.active.insert(seq, job);
        msg
    }

    /// Ends a job for good (or for this cycle): SUCCEEDED, FAILED or CANCELED.
    fn finish(&self, t: &mut JobTable, mut job: Box<Job>, state: JobState, now: i64) {
        t.set_state(&mut job, state);
        job.updated_at = now;
        job.completed_at = now;
        job.stop = None;
        t.dedupe.remove(&(job.spec.job_type.clone(), job.spec.dedupe_key.clone()));
        match state {
            JobState::Succeeded => inc(&self.metrics.jobs_succeeded),
            JobState::Canceled => inc(&self.metrics.jobs_canceled),
            _ => {}
        }
        self.write_job(&job, false);
        t.remember_final(job);
    }

    /// Puts a job that left its executor back in line (PENDING), after `delay_ms`.
    fn requeue(
        &self,
        t: &mut JobTable,
        mut job: Box<Job>,
        count_attempt: bool,
        delay_ms: i64,
        message: &str,
        now: i64,
    ) {
        if !count_attempt {
            job.attempts = (job.attempts - 1).max(0);
        }
        t.set_state(&mut job, JobState::Pending);
        job.worker_id.clear();
        job.request_id.clear();
        job.progress = 0.0;
        job.stage.clear();
        job.message = message.to_string();
        job.updated_at = now;
        job.ready_at = if delay_ms > 0 { now + delay_ms } else { 0 };
        job.stop = None;
        self.write_job(&job, false);
        let seq = job.seq;
        t.active.insert(seq, job);
        t.make_ready_or_delay(seq, now);
    }

    /// Takes the job an execution reply is about, if it is current and from its worker.
    fn take_current(
        &self,
        t: &mut JobTable,
        session: &WorkerSession,
        request_id: &str,
        job_id_hint: &str,
    ) -> Option<Box<Job>> {
        let seq = match t.by_request.get(request_id) {
            Some(seq) => *seq,
            None => {
                // Some workers reply with the job id only.
                let seq = crate::job::parse_job_id(job_id_hint)?;
                let job = t.active.get(&seq)?;
                if !request_id.is_empty() || !matches!(job.state, JobState::Assigned | JobState::Running) {
                    return None;
                }
                seq
            }
        };
        let job = t.active.get(&seq)?;
        if job.worker_id != session.worker_id || !matches!(job.state, JobState::Assigned | JobState::Running) {
            return None;
        }
        t.active.remove(&seq)
    }

    pub fn on_progress(&self, session: &WorkerSession, update: pb::JobProgressUpdate) {
        let now = now_ms();
        let mut t = self.jobs.lock().expect("job table lock");
        let Some(mut job) = self.take_current(&mut t, session, &update.request_id, &update.job_id) else {
            drop(t);
            inc(&self.metrics.ignored_messages);
            tracing::debug!(worker_id = %session.worker_id, request_id = %update.request_id, "progress for an unknown or finished job ignored");
            return;
        };
        t.set_state(&mut job, JobState::Running);
        if update.progress_percent.is_finite() {
            job.progress = update.progress_percent.clamp(0.0, 100.0);
        }
        if !update.stage.is_empty() {
            job.stage = clip(&update.stage, 200);
        }
        if !update.message.is_empty() {
            job.message = clip(&update.message, 2000);
        }
        job.updated_at = now;
        self.write_job(&job, false);
        let (job_type, id) = (job.spec.job_type.clone(), job.id());
        t.active.insert(job.seq, job);
        drop(t);
        self.worker_activities(&job_type, &id, &update.activities, pb::ActivitySource::Executor);
    }

    pub fn on_completed(&self, session: &WorkerSession, done: pb::JobCompleted) {
        let not_started = !done.success && done.error_message.trim() == AT_CAPACITY;
        self.complete(session, done, not_started);
    }

    /// Ends an attempt. `not_started` (at capacity, or the worker refused the request)
    /// requeues the job without using an attempt, unless an operator is stopping it.
    fn complete(&self, session: &WorkerSession, done: pb::JobCompleted, not_started: bool) {
        let now = now_ms();
        let mut t = self.jobs.lock().expect("job table lock");
        let Some(mut job) = self.take_current(&mut t, session, &done.request_id, &done.job_id) else {
            drop(t);
            inc(&self.metrics.ignored_messages);
            tracing::debug!(worker_id = %session.worker_id, request_id = %done.request_id, "completion for an unknown or finished attempt ignored");
            return;
        };
        t.release_slot(&job);
        t.full_until.remove(&session.worker_id);
        let (job_type, id) = (job.spec.job_type.clone(), job.id());
        if not_started && job.stop.is_none() {
            inc(&self.metrics.requeues_capacity);
            t.full_until.insert(session.worker_id.clone(), now + FULL_BACKOFF_MS);
            let why = clip(done.error_message.trim(), 500);
            self.write_attempt(&job, "requeued", &why, now);
            self.requeue(&mut t, job, false, 0, &format!("requeued: {why}"), now);
        } else if let Some(stop) = job.stop.clone().filter(|_| !done.success) {
            // A worker that finished the work before honouring the cancel reports the
            // truth: the job succeeded, and the branch below records that.
            self.write_attempt(&job, "canceled", &clip(&done.error_message, 2000), now);
            job.error = stop.reason.clone();
            self.finish(&mut t, job, stop.outcome, now);
        } else if done.success {
            job.progress = 100.0;
            if let Some(result) = &done.result {
                job.result_summary = clip(&result.summary, 2000);
                job.result_values = result.output_values.clone();
            }
            self.write_attempt(&job, "succeeded", "", now);
            self.finish(&mut t, job, JobState::Succeeded, now);
        } else {
            let error = if done.error_message.is_empty() {
                "failed without an error message".to_string()
            } else {
                clip(&done.error_message, 2000)
            };
            self.fail_attempt(&mut t, job, &error, "failed", now);
        }
        drop(t);
        self.worker_activities(&job_type, &id, &done.activities, pb::ActivitySource::Executor);
        self.wake_dispatch.notify_one();
    }

    /// A failed attempt: retried with backoff (preferably elsewhere) while attempts
    /// remain, else dead-lettered.
    fn fail_attempt(&self, t: &mut JobTable, mut job: Box<Job>, error: &str, outcome: &str, now: i64) {
        inc(&self.metrics.jobs_failed);
        self.write_attempt(&job, outcome, error, now);
        if !job.failed_on.contains(&job.worker_id) {
            job.failed_on.push(job.worker_id.clone());
        }
        job.error = error.to_string();
        let runtime = self.configs.runtime(&job.spec.job_type);
        if job.attempts <= runtime.retry_limit.max(0) {
            inc(&self.metrics.retries);
            let delay = backoff_ms(runtime.retry_backoff_seconds, job.attempts);
            let msg = format!("attempt {} failed; retrying in {} s", job.attempts_total, (delay + 999) / 1000);
            self.requeue(t, job, true, delay, &msg, now);
        } else {
            inc(&self.metrics.jobs_dead_lettered);
            job.dead_letter = true;
            job.message = format!("dead-lettered after {} attempts", job.attempts);
            self.finish(t, job, JobState::Failed, now);
        }
    }

    /// A worker refused an execute request (acknowledge with accepted: false), e.g. while
    /// it shuts down: the job never started there, so it is requeued without using an
    /// attempt, and the worker is skipped for a moment.
    pub fn on_execute_rejected(&self, session: &WorkerSession, request_id: &str, message: &str) {
        let done = pb::JobCompleted {
            request_id: request_id.to_string(),
            success: false,
            error_message: if message.is_empty() { "rejected by the worker".into() } else { message.to_string() },
            ..Default::default()
        };
        self.complete(session, done, true);
    }

    /// Is this request id a current execution?
    pub fn is_execution(&self, request_id: &str) -> bool {
        self.jobs.lock().expect("job table lock").by_request.contains_key(request_id)
    }

    /// Requeues every job sent to the worker on this stream, without using up attempts.
    /// Scoped to the stream: when a new stream replaced it, messages queued on the old one
    /// may never have arrived, while jobs sent on the new one are fine.
    pub fn on_worker_gone(&self, worker_id: &str, session_id: u64, reason: &str) {
        let now = now_ms();
        let mut t = self.jobs.lock().expect("job table lock");
        let seqs: Vec<i64> = t
            .active
            .values()
            .filter(|j| {
                j.worker_id == worker_id
                    && j.session_id == session_id
                    && matches!(j.state, JobState::Assigned | JobState::Running)
            })
            .map(|j| j.seq)
            .collect();
        for seq in seqs {
            let Some(job) = t.active.remove(&seq) else { continue };
            t.release_slot(&job);
            if let Some(stop) = job.stop.clone() {
                self.write_attempt(&job, "canceled", reason, now);
                let mut job = job;
                job.error = stop.reason.clone();
                self.finish(&mut t, job, stop.outcome, now);
                continue;
            }
            inc(&self.metrics.requeues_worker_lost);
            self.write_attempt(&job, "requeued", reason, now);
            self.requeue(&mut t, job, false, 0, &format!("requeued: {reason}"), now);
        }
        t.full_until.remove(worker_id);
        drop(t);
        self.wake_dispatch.notify_one();
    }

    /// Execution timeouts and stop grace periods that have run out.
    pub fn check_deadlines(&self) {
        let now = now_ms();
        let mut out: Outbox = Vec::new();
        {
            let mut t = self.jobs.lock().expect("job table lock");
            while let Some(&(at, seq)) = t.deadlines.first() {
                if at > now {
                    break;
                }
                t.deadlines.remove(&(at, seq));
                let current = t
                    .active
                    .get(&seq)
                    .is_some_and(|j| j.deadline == at && matches!(j.state, JobState::Assigned | JobState::Running));
                if !current {
                    continue; // stale entry: the attempt ended or got a new deadline
                }
                let mut job = t.active.remove(&seq).expect("checked above");
                t.release_slot(&job);
                if let Some(stop) = job.stop.clone() {
                    self.write_attempt(&job, "canceled", "the worker did not confirm within the grace period", now);
                    job.error = stop.reason.clone();
                    self.finish(&mut t, job, stop.outcome, now);
                    continue;
                }
                let runtime = self.configs.runtime(&job.spec.job_type);
                let secs = execution_timeout_ms(&runtime) / 1000;
                let reason = format!("execution timed out after {secs} s");
                inc(&self.metrics.execution_timeouts);
                if let Some(session) = self.registry.get(&job.worker_id) {
                    out.push((session, cancel_message(&self.new_request_id("cancel"), &job.request_id, &reason)));
                }
                self.fail_attempt(&mut t, job, &reason, "timed_out", now);
            }
        }
        // Freed slots are used by the dispatch pass that follows in the same loop turn.
        self.flush(out);
    }

    /// Cancels a job (CANCELED) or expires it (FAILED, no retry). A waiting job ends at
    /// once; a running one gets a cancel request and ends when its worker confirms or the
    /// grace period runs out.
    pub fn stop_job(&self, seq: i64, outcome: JobState, reason: &str) -> Result<crate::job::JobView, JobActionError> {
        let now = now_ms();
        let mut out: Outbox = Vec::new();
        let view;
        {
            let mut t = self.jobs.lock().expect("job table lock");
            let Some(mut job) = t.active.remove(&seq) else {
                drop(t);
                return Err(self.not_active(seq));
            };
            match job.state {
                JobState::Pending => {
                    t.unqueue(&job);
                    job.error = reason.to_string();
                    view = job.view();
                    self.finish(&mut t, job, outcome, now);
                }
                _ => {
                    if let Some(session) = self.registry.get(&job.worker_id) {
                        out.push((session, cancel_message(&self.new_request_id("cancel"), &job.request_id, reason)));
                    }
                    let deadline = now + self.config.cancel_grace.as_millis() as i64;
                    job.stop = Some(StopRequest { reason: reason.to_string(), outcome, deadline });
                    job.message = format!("{reason}: waiting for the worker to stop");
                    job.updated_at = now;
                    t.deadlines.remove(&(job.deadline, seq));
                    job.deadline = deadline;
                    t.deadlines.insert((deadline, seq));
                    self.write_job(&job, false);
                    view = job.view();
                    t.active.insert(seq, job);
                }
            }
        }
        self.flush(out);
        Ok(view)
    }

    /// Requeues a finished FAILED or CANCELED job (including dead-lettered ones) for a new
    /// cycle of attempts.
    pub fn retry_job(&self, seq: i64) -> Result<crate::job::JobView, JobActionError> {
        let now = now_ms();
        let stored = {
            let t = self.jobs.lock().expect("job table lock");
            if let Some(j) = t.active.get(&seq) {
                return Err(JobActionError::Conflict {
                    id: job_id(seq),
                    state: state_name(j.state),
                    why: "only a failed or canceled job can be retried",
                });
            }
            t.recent.get(&seq).cloned()
        };
        let job = match stored {
            Some(j) => j,
            None => Box::new(self.store.job(seq).ok().flatten().ok_or_else(|| JobActionError::NotFound(job_id(seq)))?),
        };
        if !matches!(job.state, JobState::Failed | JobState::Canceled) {
            return Err(JobActionError::Conflict {
                id: job_id(seq),
                state: state_name(job.state),
                why: "only a failed or canceled job can be retried",
            });
        }
        let mut t = self.jobs.lock().expect("job table lock");
        if t.active.contains_key(&seq) {
            return Err(JobActionError::Conflict { id: job_id(seq), state: "active", why: "it was requeued already" });
        }
        if let Some(other) = t.dedupe.get(&(job.spec.job_type.clone(), job.spec.dedupe_key.clone())) {
            return Err(JobActionError::Duplicate { id: job_id(seq), other: job_id(*other) });
        }
        let mut job = job;
        t.recent.remove(&seq);
        t.dedupe.insert((job.spec.job_type.clone(), job.spec.dedupe_key.clone()), seq);
        job.attempts = 0;
        job.dead_letter = false;
        job.error.clear();
        job.completed_at = 0;
        job.failed_on.clear();
        t.count(&job.spec.job_type, job.state, -1);
        job.state = JobState::Pending;
        t.count(&job.spec.job_type, JobState::Pending, 1);
        job.message = "retried by operator".into();
        job.updated_at = now;
        job.ready_at = 0;
        job.stop = None;
        self.write_job(&job, false);
        let view = job.view();
        t.active.insert(seq, job);
        t.make_ready_or_delay(seq, now);
        drop(t);
        self.wake_dispatch.notify_one();
        Ok(view)
    }

    fn not_active(&self, seq: i64) -> JobActionError {
        match self.get_job(seq) {
            Some(j) => {
                JobActionError::Conflict { id: job_id(seq), state: state_name(j.state), why: "it has already finished" }
            }
            None => JobActionError::NotFound(job_id(seq)),
        }
    }

    /// A job from memory (active or recently finished), else from the store.
    pub fn get_job(&self, seq: i64) -> Option<Job> {
        if let Some(j) = self.jobs.lock().expect("job table lock").active_job(seq) {
            return Some(j.clone());
        }
        self.store.job(seq).ok().flatten()
    }

    /// Stops dispatching and tells every job's stop in flight is moot; used at shutdown.
    pub fn in_flight(&self) -> usize {
        let t = self.jobs.lock().expect("job table lock");
        t.active.values().filter(|j| !is_final(j.state) && j.state != JobState::Pending).count()
    }
}

fn execution_timeout_ms(runtime: &pb::AdminRuntimeConfig) -> i64 {
    let mut secs = i64::from(runtime.execution_timeout_seconds.max(1));
    if runtime.job_type_max_runtime_seconds > 0 {
        secs = secs.min(i64::from(runtime.job_type_max_runtime_seconds));
    }
    secs * 1000
}

/// A cancel for an execution. The envelope gets its own request id, so the worker's
/// reply to the cancel can never be mistaken for a reply to the execution.
pub fn cancel_message(cancel_request_id: &str, target_request_id: &str, reason: &str) -> pb::AdminToWorkerMessage {
    AdminState::envelope(
        cancel_request_id,
        Body::CancelRequest(pb::CancelRequest {
            target_id: target_request_id.to_string(),
            target_kind: pb::WorkKind::Execution as i32,
            reason: reason.to_string(),
            force: false,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_within_half_to_full_delay() {
        for attempt in 1..6 {
            let full = 10_000i64 << (attempt - 1);
            for _ in 0..50 {
                let d = backoff_ms(10, attempt);
                assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d} not in [{}, {full}]", full / 2);
            }
        }
        assert!(backoff_ms(10, 40) <= MAX_BACKOFF_MS);
        assert_eq!(backoff_ms(0, 3), 0);
    }
}
