//! Dispatcher: owns the table of active jobs and makes every change to a job after its
//! creation: admitting new jobs, matching ready jobs to executor slots (`placement`),
//! following attempts (`attempts`), operators' stops and retries (`actions`), and
//! saying why a job waits (`explain`). Each
//! change is one step of the pure state machine (`machine`); this module applies the
//! step's effects.
//!
//! All of it happens under one private `Mutex<JobTable>`, held briefly and never across
//! an `.await`: state changes and their store writes are made under the lock (so the
//! store sees them in order); messages to workers are sent after it is released.

mod actions;
mod attempts;
mod explain;
pub mod machine;
mod placement;
mod table;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use proto::pb::{self, JobState};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use actions::JobActionError;
pub use explain::{Explanation, WaitReason};
pub use table::JobTable;

use crate::{
    clock::SharedClock,
    config_store::ConfigStore,
    events::{EventKind, JobEvent},
    holds::Holds,
    ids::Ids,
    job::{AttemptView, Job, JobSpecData, JobView},
    journal::Journal,
    monitor::{Monitor, inc},
    registry::{Registry, WorkerSession},
    store::{JobQuery, Loaded, Op, Store, StoreError},
};
use machine::{At, Effect, Input, NotStartedCause, Policy, Refused};
use table::Placed;

/// The reply an executor gives when it has no free slot; it means "not started".
pub const AT_CAPACITY: &str = "executor is at capacity";

/// What the dispatcher needs from the rest of the admin.
pub struct DispatcherParts {
    pub registry: Arc<Registry>,
    pub configs: Arc<ConfigStore>,
    pub store: Arc<Store>,
    pub journal: Journal,
    pub monitor: Arc<Monitor>,
    pub clock: SharedClock,
    pub ids: Arc<Ids>,
    /// The operator's holds: the global dispatch pause and per-type dispatch holds.
    pub holds: Holds,
    pub cancel_grace: Duration,
    pub send_timeout: Duration,
    /// Read for each execute request (a snapshot: an `Arc` clone).
    pub cluster_context: Arc<crate::cluster_context::ClusterContextSource>,
    /// Cancelled when the admin begins to stop: nothing new is dispatched.
    pub stopping: CancellationToken,
    /// Whether this admin still leads (always, with SQLite): checked before each pass
    /// assigns jobs and again before its messages go out.
    pub lease: Arc<crate::ha::LeaseGate>,
}

/// A handle to the dispatcher; clones share it.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    table: Mutex<JobTable>,
    wake: Notify,
    parts: DispatcherParts,
}

/// Messages to send once the table's lock is released.
type Outbox = Vec<(Arc<WorkerSession>, pb::AdminToWorkerMessage)>;

/// What became of one proposal offered to [`Dispatcher::admit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Created {
        job_id: String,
    },
    /// An active job has the same dedupe key.
    Duplicate,
    /// The detection's job limit was reached.
    OverLimit,
}

/// A job to create: its spec, with the dedupe key empty when the job id should be used.
pub struct NewJob {
    pub spec: JobSpecData,
}

impl Dispatcher {
    /// Builds the dispatcher from what the store held. Jobs that were ASSIGNED or RUNNING
    /// when the admin stopped are requeued without using up an attempt (or finished, if an
    /// operator was stopping them); returns how many were requeued.
    pub fn new(parts: DispatcherParts, loaded: &mut Loaded) -> (Dispatcher, usize) {
        let table = JobTable::new(loaded.next_job_seq, std::mem::take(&mut loaded.counts));
        let d = Dispatcher { inner: Arc::new(Inner { table: Mutex::new(table), wake: Notify::new(), parts }) };
        let now = d.now();
        let mut requeued = 0;
        let mut t = d.lock();
        let mut out = Outbox::new();
        for mut job in std::mem::take(&mut loaded.active) {
            job.stop = job.stop.take().filter(|_| job.state != JobState::Pending);
            let seq = job.seq;
            let in_attempt = job.state != JobState::Pending;
            t.insert_loaded(Arc::new(job));
            if in_attempt {
                let input = Input::NotStarted { cause: NotStartedCause::AdminRestarted, why: "admin restarted" };
                if d.transition(&mut t, seq, input, now, &mut out).is_ok() {
                    requeued += usize::from(t.job(seq).is_some_and(|j| j.state == JobState::Pending));
                }
            }
            t.make_ready(seq, now);
        }
        drop(t);
        (d, requeued)
    }

    fn parts(&self) -> &DispatcherParts {
        &self.inner.parts
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, JobTable> {
        self.inner.table.lock().expect("job table lock")
    }

    fn now(&self) -> i64 {
        self.parts().clock.now_ms()
    }

    /// Asks the dispatch loop for a pass now (new work, freed slots, new workers).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Whether an operator paused all dispatch (a persisted hold).
    pub fn is_paused(&self) -> bool {
        self.parts().holds.dispatch_paused()
    }

    fn is_stopping(&self) -> bool {
        self.parts().stopping.is_cancelled()
    }

    fn policy(&self, job_type: &str) -> Policy {
        let runtime = self.parts().configs.runtime(job_type);
        Policy::from_runtime(&runtime, self.parts().cancel_grace.as_millis() as i64)
    }

    /// One step of an active job's state machine, with its effects applied: the job and
    /// its attempt records are written, counters moved, cancels queued in `out`. Returns
    /// whether the step asks for an execute request (the caller, placement, sends it).
    fn transition(
        &self,
        t: &mut JobTable,
        seq: i64,
        input: Input<'_>,
        now: i64,
        out: &mut Outbox,
    ) -> Result<bool, Refused> {
        self.transition_with(t, seq, input, None, now, out)
    }

    /// [`Dispatcher::transition`] with the job type's policy already at hand (placement
    /// has it per job type, so an assignment does not look the settings up again).
    fn transition_with(
        &self,
        t: &mut JobTable,
        seq: i64,
        input: Input<'_>,
        policy: Option<&Policy>,
        now: i64,
        out: &mut Outbox,
    ) -> Result<bool, Refused> {
        let (mut job, placed) = t.take(seq).ok_or(Refused::Stale)?;
        let spec = job.spec.clone();
        // Only a failed attempt draws jitter (for its retry backoff): progress and success
        // are the hot path.
        let jitter = match input {
            Input::Completed { success: false, .. } | Input::DeadlinePassed => crate::random::u64(),
            _ => 0,
        };
        let at = At { now, jitter };
        let policy = || policy.copied().unwrap_or_else(|| self.policy(&spec.job_type));
        let effects = match machine::step(Arc::make_mut(&mut job), input, &policy, at) {
            Ok(effects) => effects,
            Err(refused) => {
                t.restore(job);
                return Err(refused);
            }
        };
        Ok(self.apply(t, job, placed, effects, now, out))
    }

    fn apply(
        &self,
        t: &mut JobTable,
        job: Arc<Job>,
        placed: Placed,
        effects: machine::Effects,
        now: i64,
        out: &mut Outbox,
    ) -> bool {
        let p = self.parts();
        let stored = self.write_job(&job, false);
        let mut execute = false;
        // Progress, the most frequent step, has no effects and so no metrics to look up.
        let metrics = (!effects.is_empty()).then(|| t.metrics(&job.spec.job_type, &p.monitor));
        for effect in effects {
            match effect {
                // An attempt's record is written with the job's state: when it ends (or the
                // job is requeued or stopped), not when it starts (see `Job::must_be_stored`).
                Effect::Attempt(attempt) => {
                    if attempt.ended_at > 0
                        && attempt.outcome != machine::REQUEUED
                        && let Some(m) = &metrics
                    {
                        m.run_duration.observe_ms(attempt.ended_at - attempt.started_at);
                    }
                    // A succeeded attempt is rebuilt from the job's row: no record of its own.
                    if stored && !crate::store::implied_by_job_row(&attempt) {
                        p.store.write(Op::Attempt { job_seq: job.seq, attempt: Box::new(attempt) });
                    }
                }
                Effect::Execute => execute = true,
                Effect::Cancel { worker_id, request_id, reason } => {
                    if let Some(session) = p.registry.get(&worker_id) {
                        let msg = crate::wire::cancel(
                            &p.ids.request("cancel"),
                            pb::WorkKind::Execution,
                            &request_id,
                            &reason,
                        );
                        out.push((session, msg));
                    }
                }
                Effect::Count(counter) => {
                    if let Some(m) = &metrics {
                        m.count(counter);
                    }
                }
            }
        }
        t.put(job, placed, now);
        execute
    }

    /// Queues the job's new state: written to the store unless it is an attempt in flight
    /// (see [`Job::must_be_stored`]), and published as an event once everything queued
    /// before it is committed. Returns whether it is written.
    fn write_job(&self, job: &Arc<Job>, insert: bool) -> bool {
        // The table's own job is the snapshot the store writes and the event carries: the
        // next change copies it if either still holds it.
        let snapshot = job.clone();
        let store = insert || job.must_be_stored();
        let op = match (store, insert) {
            (false, _) => None,
            (true, true) => Some(Op::InsertJob(snapshot.clone())),
            (true, false) => Some(Op::UpdateJob(snapshot.clone())),
        };
        self.parts().store.submit(op, Some(EventKind::Job { job: JobEvent(snapshot) }));
        store
    }

    fn flush(&self, out: Outbox) {
        if !self.parts().lease.holds() {
            // The lease may have passed to another admin since the pass began: a message
            // from here could start a job that admin starts too.
            if !out.is_empty() {
                tracing::warn!(messages = out.len(), "leader lease not confirmed; messages to workers are dropped");
            }
            return;
        }
        let timeout = self.parts().send_timeout;
        for (session, msg) in out {
            session.send(msg, timeout);
        }
    }

    /// The one way into the job table: offers new jobs of one job type, in order. Each
    /// is deduplicated against active jobs (and the ones before it), refused once
    /// `limit` jobs were created, or inserted and written. The created jobs become
    /// dispatchable once their writes are durable.
    pub fn admit(&self, jobs: Vec<NewJob>, limit: i64) -> Vec<Admission> {
        let now = self.now();
        let mut created = Vec::new();
        let mut outcomes = Vec::with_capacity(jobs.len());
        {
            let mut t = self.lock();
            for NewJob { mut spec } in jobs {
                if created.len() as i64 >= limit {
                    outcomes.push(Admission::OverLimit);
                    continue;
                }
                let m = t.metrics(&spec.job_type, &self.parts().monitor);
                if !spec.dedupe_key.is_empty() && t.holder_of(&spec.job_type, &spec.dedupe_key).is_some() {
                    inc(&m.deduplicated);
                    outcomes.push(Admission::Duplicate);
                    continue;
                }
                let seq = t.next_seq();
                if spec.dedupe_key.is_empty() {
                    spec.dedupe_key = crate::job::job_id(seq).into();
                }
                let job = Arc::new(Job::pending(seq, spec, now));
                self.write_job(&job, true);
                outcomes.push(Admission::Created { job_id: job.id() });
                t.insert_new(job);
                inc(&m.created);
                created.push(seq);
            }
        }
        if !created.is_empty() {
            // Persisted before announced: the jobs become dispatchable once durable.
            let ticket = self.parts().store.last_ticket();
            let d = self.clone();
            tokio::spawn(async move {
                if d.parts().store.durable(ticket).await.is_ok() {
                    d.enqueue(&created);
                }
            });
        }
        outcomes
    }

    /// Makes durable new jobs dispatchable.
    fn enqueue(&self, seqs: &[i64]) {
        let now = self.now();
        {
            let mut t = self.lock();
            for &seq in seqs {
                t.make_ready(seq, now);
            }
        }
        self.wake();
    }

    /// Whether an active job holds this dedupe key.
    pub fn is_active_key(&self, job_type: &str, dedupe_key: &str) -> bool {
        self.active_with_key(job_type, dedupe_key).is_some()
    }

    /// The active job holding this dedupe key, if any.
    pub fn active_with_key(&self, job_type: &str, dedupe_key: &str) -> Option<i64> {
        self.lock().holder_of(job_type, dedupe_key)
    }

    /// A job from memory (active or recently finished), else from the store.
    pub fn job(&self, seq: i64) -> Option<Job> {
        if let Some(j) = self.lock().job(seq) {
            return Some(j.clone());
        }
        self.parts().store.job(seq).ok().flatten()
    }

    /// Lists jobs as `query` asks, newest first, each in its current state. The store
    /// lags memory by at most one group commit, and keeps a job whose attempt is in flight
    /// as PENDING (see [`Job::must_be_stored`]), so: ASSIGNED and RUNNING jobs are listed
    /// from memory (they are all there); a PENDING listing reads on past the in-flight
    /// jobs it drops; and every listed job still in memory shows its live state.
    pub fn list_jobs(&self, query: &JobQuery) -> Result<Vec<JobView>, StoreError> {
        let limit = query.page_size();
        if matches!(query.state, Some(JobState::Assigned | JobState::Running)) {
            let t = self.lock();
            let mut found: Vec<&Job> = t.in_flight_jobs().filter(|j| query.matches(j)).collect();
            found.sort_unstable_by_key(|j| std::cmp::Reverse(j.seq));
            return Ok(found.into_iter().take(limit).map(Job::view).collect());
        }
        let mut page = query.clone();
        let mut listed = Vec::with_capacity(limit);
        loop {
            let mut rows = self.parts().store.jobs(&page)?;
            let exhausted = rows.len() < page.page_size();
            page.before_seq = rows.last().and_then(|v| crate::job::parse_job_id(&v.job_id));
            self.refresh_views(&mut rows);
            if let Some(s) = query.state {
                let name = crate::job::state_name(s);
                rows.retain(|v| v.state == name);
            }
            listed.extend(rows.into_iter().take(limit - listed.len()));
            if exhausted || listed.len() >= limit || page.before_seq.is_none() {
                return Ok(listed);
            }
        }
    }

    /// A job's attempt records, oldest first: the store's, and the attempt in flight,
    /// which the store holds only once it ends.
    pub fn attempts(&self, seq: i64) -> Result<Vec<AttemptView>, StoreError> {
        let mut attempts = self.parts().store.attempts(seq)?;
        let t = self.lock();
        if let Some(job) = t.job(seq).filter(|j| matches!(j.state, JobState::Assigned | JobState::Running))
            && !attempts.iter().any(|a| a.attempt == job.attempts_total)
        {
            attempts.push(machine::attempt(job, "running", "", 0));
        }
        Ok(attempts)
    }

    /// Replaces listed jobs that are still in memory with their current state (the store
    /// lags memory by at most one group commit).
    fn refresh_views(&self, views: &mut [JobView]) {
        let t = self.lock();
        for v in views.iter_mut() {
            if let Some(seq) = crate::job::parse_job_id(&v.job_id)
                && let Some(live) = t.job(seq)
            {
                *v = live.view();
            }
        }
    }

    /// Jobs per (job_type, state), over all jobs in the store.
    pub fn counts(&self) -> Vec<((String, JobState), i64)> {
        let t = self.lock();
        let mut rows: Vec<((String, JobState), i64)> =
            t.counts().map(|(job_type, state, n)| ((job_type.to_string(), state), n)).collect();
        rows.sort_by(|a, b| (&a.0.0, a.0.1 as i32).cmp(&(&b.0.0, b.0.1 as i32)));
        rows
    }

    pub fn count_of(&self, job_type: &str, state: JobState) -> i64 {
        self.lock().count_of(job_type, state)
    }

    /// Jobs not yet final.
    pub fn active_len(&self) -> usize {
        self.lock().active_len()
    }

    /// Jobs out on executors (ASSIGNED or RUNNING).
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight()
    }

    /// Takes jobs deleted by retention out of the counts.
    pub fn forget_pruned(&self, pruned: &crate::store::Pruned) {
        self.lock().forget_pruned(pruned);
    }

    /// Runs dispatch passes until `stop`: deadlines, promotions, expiries, assignments.
    pub async fn run(self, stop: CancellationToken) {
        loop {
            self.check_deadlines();
            let next = self.dispatch_pass();
            let wait = next.map(|n| (n - self.now()).clamp(1, 250)).unwrap_or(250) as u64;
            tokio::select! {
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
                _ = stop.cancelled() => break,
            }
        }
    }
}

#[cfg(test)]
mod tests;
