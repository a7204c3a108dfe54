//! The store's writer thread, generic over the backend: it takes everything queued,
//! coalesces it, has the backend apply it in one transaction (retrying with backoff until
//! it commits), marks its tickets durable, and hands the committed batch to its publisher
//! thread, which publishes the batch's events and frees it while the writer goes on with
//! the next batch.

use std::{
    path::PathBuf,
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use tokio::sync::watch;

use super::backend::{Backend, Op, Pruned, Write};
use crate::{
    backoff::Backoff,
    events::{EventBus, EventKind},
    id_hash::IdMap,
};

/// Delays between attempts to commit a batch that failed: 100 ms doubling to 5 s.
const COMMIT_RETRY: Backoff = Backoff::new(100, 5_000);

/// One queued operation and the event to publish once it is committed.
struct Queued {
    ticket: u64,
    op: Option<Op>,
    event: Option<EventKind>,
}

/// The writer's inbox: producers push under the lock, the writer swaps the whole vector
/// out, so a batch costs one lock round trip and no per-item channel allocation.
pub(super) struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

struct QueueState {
    items: Vec<Queued>,
    next_ticket: u64,
    closed: bool,
    /// The writer gives up the batch it is retrying ([`Queue::abandon`]).
    abandoned: bool,
    /// Open [`Bundle`]s: while one is open the writer takes nothing, so everything pushed
    /// inside it lands in one batch.
    bundles: usize,
}

/// Keeps the writer from taking a batch while it lives (see [`Queue::bundle`]).
pub(super) struct Bundle<'a>(&'a Queue);

impl Drop for Bundle<'_> {
    fn drop(&mut self) {
        let mut q = self.0.state.lock().expect("store queue lock");
        q.bundles -= 1;
        if q.bundles == 0 {
            self.0.ready.notify_one();
        }
    }
}

impl Queue {
    pub(super) fn new() -> Queue {
        Queue {
            state: Mutex::new(QueueState {
                items: Vec::new(),
                next_ticket: 1,
                closed: false,
                abandoned: false,
                bundles: 0,
            }),
            ready: Condvar::new(),
        }
    }

    /// Queues an operation; returns its ticket. Once closed, the operation is dropped
    /// (and logged) but still gets a ticket, which will never become durable.
    pub(super) fn push(&self, op: Option<Op>, event: Option<EventKind>) -> u64 {
        let mut q = self.state.lock().expect("store queue lock");
        let ticket = q.next_ticket;
        q.next_ticket += 1;
        if q.closed {
            if !q.abandoned {
                tracing::warn!(ticket, "state store is closed; a write was dropped");
            }
            return ticket;
        }
        q.items.push(Queued { ticket, op, event });
        if q.items.len() == 1 {
            self.ready.notify_one();
        }
        ticket
    }

    /// Opens a bundle: operations pushed until it is dropped are committed in one batch
    /// (one transaction). Hold it only for synchronous work of a few microseconds, never
    /// across an `.await` or a wait for durability: the writer waits for it.
    pub(super) fn bundle(&self) -> Bundle<'_> {
        self.state.lock().expect("store queue lock").bundles += 1;
        Bundle(self)
    }

    /// The newest ticket handed out.
    pub(super) fn last_ticket(&self) -> u64 {
        self.state.lock().expect("store queue lock").next_ticket - 1
    }

    /// Refuses new operations; the writer stops once it has written what is queued.
    pub(super) fn close(&self) {
        self.state.lock().expect("store queue lock").closed = true;
        self.ready.notify_one();
    }

    /// Closes the queue and drops everything in it: none of it will ever be durable (its
    /// tickets' waiters see the store closed, prune reports are never sent).
    fn discard(&self) -> usize {
        let dropped = {
            let mut q = self.state.lock().expect("store queue lock");
            q.closed = true;
            std::mem::take(&mut q.items)
        };
        dropped.len()
    }

    fn is_closed(&self) -> bool {
        self.state.lock().expect("store queue lock").closed
    }

    /// Closes the queue, drops everything in it and tells the writer to give up the batch
    /// it is retrying: the admin stepped down and its writes no longer matter.
    pub(super) fn abandon(&self) -> usize {
        let dropped = {
            let mut q = self.state.lock().expect("store queue lock");
            q.closed = true;
            q.abandoned = true;
            std::mem::take(&mut q.items)
        };
        self.ready.notify_one();
        dropped.len()
    }

    fn is_abandoned(&self) -> bool {
        self.state.lock().expect("store queue lock").abandoned
    }

    /// Waits for work and swaps it into `batch` (which must be empty). False once the
    /// queue is closed and drained.
    fn take(&self, batch: &mut Vec<Queued>) -> bool {
        let mut q = self.state.lock().expect("store queue lock");
        while (q.items.is_empty() || q.bundles > 0) && !q.closed {
            q = self.ready.wait(q).expect("store queue lock");
        }
        if q.items.is_empty() {
            return false;
        }
        std::mem::swap(&mut q.items, batch);
        true
    }
}

/// What the writer committed since the store opened, for the metrics: batches
/// (transactions), the operations queued into them, and the rows those became once
/// coalesced. Operations per batch is what a job's share of a commit follows.
#[derive(Default)]
pub struct Committed {
    pub batches: AtomicU64,
    pub operations: AtomicU64,
    pub writes: AtomicU64,
}

/// Starts the writer thread (and its publisher). `backend` must already be loaded.
#[allow(clippy::too_many_arguments)]
pub(super) fn spawn<B: Backend>(
    backend: B,
    queue: Arc<Queue>,
    counters: Arc<Committed>,
    healthy: watch::Sender<bool>,
    fenced: watch::Sender<bool>,
    committed: watch::Sender<u64>,
    events: Arc<EventBus>,
    path: PathBuf,
) -> std::io::Result<JoinHandle<()>> {
    let publisher = Arc::new(Publisher::default());
    let publishing = {
        let (publisher, events) = (publisher.clone(), events.clone());
        std::thread::Builder::new().name("plughost-events".into()).spawn(move || publisher.run(&events))?
    };
    let writer = Writer { backend, queue, counters, healthy, fenced, publisher, path };
    std::thread::Builder::new().name("plughost-store".into()).spawn(move || {
        writer.run(&committed);
        let _ = publishing.join();
        // Only now do the tickets' waiters see the store closed: after every event.
        drop(committed);
    })
}

struct Writer<B> {
    backend: B,
    queue: Arc<Queue>,
    counters: Arc<Committed>,
    /// False while a batch cannot commit; its receivers (`/readyz`, the gRPC health
    /// service) are told when it changes.
    healthy: watch::Sender<bool>,
    /// Set once the backend refused a batch as fenced (another admin holds the lease):
    /// the writer has stopped and dropped everything queued.
    fenced: watch::Sender<bool>,
    /// Takes each committed batch: publishes its events, frees it.
    publisher: Arc<Publisher>,
    /// Where the store lives, for the log.
    path: PathBuf,
}

impl<B: Backend> Writer<B> {
    /// Marks each batch durable (`committed`: its last ticket) as soon as it commits,
    /// here rather than on the publisher's thread: a waiter for durability (a new job
    /// waiting to be dispatched, a finished one waiting to be reported) is then one
    /// thread wake-up from the commit, not two.
    fn run(mut self, committed: &watch::Sender<u64>) {
        let mut batch: Vec<Queued> = Vec::with_capacity(1024);
        let mut coalescer = Coalescer::default();
        while self.queue.take(&mut batch) {
            let mut writes = Vec::with_capacity(batch.len());
            coalescer.coalesce(&batch, &mut writes);
            let Some(pruned) = self.commit(&writes, batch.len()) else {
                break;
            };
            self.counters.batches.fetch_add(1, Ordering::Relaxed);
            self.counters.operations.fetch_add(batch.len() as u64, Ordering::Relaxed);
            self.counters.writes.fetch_add(writes.len() as u64, Ordering::Relaxed);
            drop(writes);
            self.set_healthy(true);
            if let Some(last) = batch.last() {
                let _ = committed.send(last.ticket);
            }
            let done = std::mem::replace(&mut batch, self.publisher.spare());
            self.publisher.hand_over(CommittedBatch { batch: done, pruned });
        }
        self.publisher.close();
    }

    /// Only a change wakes the receivers; the writer is the one sender, so reading first
    /// cannot race.
    fn set_healthy(&self, healthy: bool) {
        if *self.healthy.borrow() != healthy {
            self.healthy.send_replace(healthy);
        }
    }

    /// Applies a batch until it commits. A batch is durable only once it commits: on
    /// failure (disk full, I/O error) it is retried with backoff, and until then nothing
    /// after it counts as durable, so no new job is dispatched and no event claims a change
    /// that was not stored. None when it gives up at shutdown, or when the batch is fenced:
    /// then it is never retried, and the writer drops it and everything queued after it.
    fn commit(&mut self, writes: &[Write<'_>], ops: usize) -> Option<Vec<Pruned>> {
        let mut attempt = 0i32;
        loop {
            let e = match self.backend.apply(writes) {
                Ok(pruned) => {
                    debug_assert_eq!(
                        pruned.len(),
                        writes.iter().filter(|w| matches!(w, Write::Prune { .. })).count(),
                        "one prune report per prune"
                    );
                    return Some(pruned);
                }
                Err(e) if e.is_fenced() => {
                    self.set_healthy(false);
                    // Before the queue is dropped and the publisher stops, so a waiter that
                    // sees the store close already sees why.
                    self.fenced.send_replace(true);
                    let dropped = self.queue.discard();
                    tracing::error!(
                        path = %self.path.display(), error = %e, ops, dropped,
                        "state store write fenced: another admin holds the lease; this batch and everything \
                         queued after it are dropped, and the store takes no more writes"
                    );
                    return None;
                }
                Err(e) => e,
            };
            attempt = attempt.saturating_add(1);
            let delay_ms = COMMIT_RETRY.ceiling_ms(attempt);
            let retry_in = Duration::from_millis(delay_ms.max(0) as u64);
            self.set_healthy(false);
            tracing::error!(path = %self.path.display(), error = %e, ops, ?retry_in, "state store write failed");
            if self.queue.is_abandoned() {
                tracing::warn!(path = %self.path.display(), ops, "a batch that could not commit is dropped: the store was abandoned");
                return None;
            }
            if self.queue.is_closed() && delay_ms >= COMMIT_RETRY.cap_ms {
                tracing::error!(path = %self.path.display(), ops, "giving up on a batch at shutdown");
                return None;
            }
            std::thread::sleep(retry_in);
        }
    }
}

/// A batch that committed, with one report per prune in it.
struct CommittedBatch {
    batch: Vec<Queued>,
    pruned: Vec<Pruned>,
}

/// The second half of the writer, on a thread of its own so the writer can start on the
/// next batch at once: for each committed batch (already marked durable), in commit
/// order, it sends the prune reports and publishes the events, then frees the operations
/// (their job snapshots and strings) and hands the emptied vector back.
#[derive(Default)]
struct Publisher {
    state: Mutex<PublisherState>,
    ready: Condvar,
    /// Emptied batch vectors, reused so a batch's vector is allocated once.
    spares: Mutex<Vec<Vec<Queued>>>,
}

#[derive(Default)]
struct PublisherState {
    committed: std::collections::VecDeque<CommittedBatch>,
    closed: bool,
}

/// Emptied batch vectors kept for reuse.
const SPARES: usize = 4;

impl Publisher {
    fn hand_over(&self, committed: CommittedBatch) {
        let mut s = self.state.lock().expect("publisher lock");
        s.committed.push_back(committed);
        if s.committed.len() == 1 {
            self.ready.notify_one();
        }
    }

    /// Stops the publisher once it has published everything handed over.
    fn close(&self) {
        self.state.lock().expect("publisher lock").closed = true;
        self.ready.notify_one();
    }

    fn spare(&self) -> Vec<Queued> {
        self.spares.lock().expect("publisher lock").pop().unwrap_or_else(|| Vec::with_capacity(1024))
    }

    fn run(&self, events: &EventBus) {
        // A committed batch's events, published together (reused from batch to batch).
        let mut kinds = Vec::new();
        loop {
            let next = {
                let mut s = self.state.lock().expect("publisher lock");
                loop {
                    if let Some(next) = s.committed.pop_front() {
                        break next;
                    }
                    if s.closed {
                        return;
                    }
                    s = self.ready.wait(s).expect("publisher lock");
                }
            };
            let CommittedBatch { mut batch, pruned } = next;
            // Every prune is in the batch's writes, so the reports line up with the prunes.
            let mut reports = pruned.into_iter();
            for q in batch.drain(..) {
                if let Some(Op::Prune { report, .. }) = q.op {
                    // What came before the prune is published before its report goes.
                    events.publish_all(&mut kinds);
                    let pruned = reports.next().unwrap_or_default();
                    if let Some(tx) = report {
                        let _ = tx.send(pruned);
                    }
                }
                kinds.extend(q.event);
            }
            events.publish_all(&mut kinds);
            let mut spares = self.spares.lock().expect("publisher lock");
            if spares.len() < SPARES {
                spares.push(batch);
            }
        }
    }
}

/// Turns a batch of operations into the writes a backend applies. Each job is written
/// once, with its newest state: as an insert at its first insert when the batch inserts
/// it, else as an update at its last update. Each attempt record is written once, at its
/// newest version. Activities, runs and prunes are written as they are, in order. The
/// maps are kept between batches so their memory is reused.
#[derive(Default)]
struct Coalescer {
    jobs: IdMap<i64, JobSlot>,
    attempts: IdMap<(i64, i32), usize>,
}

/// Where a job occurs in a batch (indices into it).
#[derive(Clone, Copy)]
struct JobSlot {
    first_insert: Option<usize>,
    last: usize,
}

impl Coalescer {
    fn coalesce<'a>(&mut self, batch: &'a [Queued], out: &mut Vec<Write<'a>>) {
        self.jobs.clear();
        self.attempts.clear();
        for (i, q) in batch.iter().enumerate() {
            match &q.op {
                Some(Op::InsertJob(job)) => {
                    let slot = self.jobs.entry(job.seq).or_insert(JobSlot { first_insert: Some(i), last: i });
                    slot.first_insert.get_or_insert(i);
                    slot.last = i;
                }
                Some(Op::UpdateJob(job)) => {
                    self.jobs.entry(job.seq).or_insert(JobSlot { first_insert: None, last: i }).last = i;
                }
                Some(Op::Attempt { job_seq, attempt }) => {
                    self.attempts.insert((*job_seq, attempt.attempt), i);
                }
                _ => {}
            }
        }
        for (i, q) in batch.iter().enumerate() {
            let Some(op) = &q.op else { continue };
            match op {
                Op::InsertJob(job) | Op::UpdateJob(job) => {
                    let Some(slot) = self.jobs.get(&job.seq) else { continue };
                    let newest = match &batch[slot.last].op {
                        Some(Op::InsertJob(newest) | Op::UpdateJob(newest)) => newest,
                        _ => job,
                    };
                    match slot.first_insert {
                        Some(first) if first == i => out.push(Write::InsertJob(newest)),
                        None if slot.last == i => out.push(Write::UpdateJob(newest)),
                        _ => {}
                    }
                }
                Op::Attempt { job_seq, attempt } => {
                    if self.attempts.get(&(*job_seq, attempt.attempt)) == Some(&i) {
                        out.push(Write::Attempt { job_seq: *job_seq, attempt });
                    }
                }
                Op::Activity(a) => out.push(Write::Activity(a)),
                Op::Run(r) => out.push(Write::Run(r)),
                Op::Prune { before_ms, .. } => out.push(Write::Prune { before_ms: *before_ms }),
                Op::EventIds { up_to } => out.push(Write::EventIds { up_to: *up_to }),
                Op::Audit(e) => out.push(Write::Audit(e)),
                Op::Hold { hold, active } => out.push(Write::Hold { hold, active: *active }),
                Op::Schedule { job_type, cron } => out.push(Write::Schedule { job_type, cron: cron.as_deref() }),
                Op::ScheduleFired { job_type, at } => out.push(Write::ScheduleFired { job_type, at: *at }),
                Op::PruneAudit { up_to_id } => out.push(Write::PruneAudit { up_to_id: *up_to_id }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::HashMap,
        sync::atomic::{AtomicU32, Ordering},
    };

    use proto::pb::JobState;

    use super::*;
    use crate::{
        audit::{AuditEvent, AuditQuery},
        job::{ActivityView, AttemptView, Job, JobView, RunView, now_ms},
        store::{
            BackendError, FinishedJob, JobQuery, Loaded, Reader, Store,
            tests::{attempt, job},
        },
    };

    fn queued(ops: Vec<Op>) -> Vec<Queued> {
        ops.into_iter().enumerate().map(|(i, op)| Queued { ticket: i as u64 + 1, op: Some(op), event: None }).collect()
    }

    /// The writes as (kind, id, state or outcome) for comparing.
    fn describe(writes: &[Write<'_>]) -> Vec<(&'static str, i64, String)> {
        writes
            .iter()
            .map(|w| match w {
                Write::InsertJob(j) => ("insert", j.seq, format!("{:?}/{}", j.state, j.progress)),
                Write::UpdateJob(j) => ("update", j.seq, format!("{:?}/{}", j.state, j.progress)),
                Write::Attempt { job_seq, attempt } => ("attempt", *job_seq, attempt.outcome.clone()),
                Write::Activity(a) => ("activity", a.id, a.message.clone()),
                Write::Run(r) => ("run", r.id, r.message.clone()),
                Write::Prune { before_ms } => ("prune", *before_ms, String::new()),
                Write::EventIds { up_to } => ("event_ids", *up_to as i64, String::new()),
                other => ("other", 0, format!("{other:?}")),
            })
            .collect()
    }

    fn coalesced(ops: Vec<Op>) -> Vec<(&'static str, i64, String)> {
        let batch = queued(ops);
        let mut out = Vec::new();
        Coalescer::default().coalesce(&batch, &mut out);
        describe(&out)
    }

    fn with(seq: i64, state: JobState, progress: f64) -> Arc<Job> {
        let mut j = job(seq, state, 1);
        j.progress = progress;
        Arc::new(j)
    }

    /// Every job write waits in the queue until its batch commits, and a burst of
    /// proposals queues them by the hundred thousand: the admin's memory per queued job
    /// (which the benchmark reports) includes this item, so it must stay small. Large
    /// operations and events are boxed (see [`Op`]).
    #[test]
    fn a_queued_item_is_small() {
        assert!(size_of::<Op>() <= 48, "Op is {} bytes", size_of::<Op>());
        assert!(size_of::<EventKind>() <= 80, "EventKind is {} bytes", size_of::<EventKind>());
        assert!(size_of::<Queued>() <= 128, "a queued item is {} bytes", size_of::<Queued>());
    }

    #[test]
    fn an_insert_followed_by_updates_is_one_insert_of_the_newest_state() {
        let got = coalesced(vec![
            Op::InsertJob(with(1, JobState::Pending, 0.0)),
            Op::UpdateJob(with(1, JobState::Running, 40.0)),
            Op::InsertJob(with(2, JobState::Pending, 0.0)),
            Op::UpdateJob(with(1, JobState::Succeeded, 100.0)),
        ]);
        assert_eq!(
            got,
            vec![("insert", 1, "Succeeded/100".to_string()), ("insert", 2, "Pending/0".to_string())],
            "job 1 is written once, at its insert, with its newest state"
        );
    }

    #[test]
    fn updates_alone_are_one_update_of_the_newest_state_at_the_last_one() {
        let got = coalesced(vec![
            Op::UpdateJob(with(1, JobState::Assigned, 0.0)),
            Op::Activity(Box::new(ActivityView {
                id: 9,
                created_at: 1,
                job_type: "t".into(),
                job_id: "j1".into(),
                source: "admin",
                stage: String::new(),
                message: "between".into(),
            })),
            Op::UpdateJob(with(1, JobState::Running, 10.0)),
            Op::UpdateJob(with(3, JobState::Running, 5.0)),
        ]);
        assert_eq!(
            got,
            vec![
                ("activity", 9, "between".to_string()),
                ("update", 1, "Running/10".to_string()),
                ("update", 3, "Running/5".to_string()),
            ]
        );
    }

    #[test]
    fn a_job_inserted_again_ends_in_its_newest_state_as_if_applied_in_order() {
        let got = coalesced(vec![
            Op::UpdateJob(with(1, JobState::Running, 1.0)),
            Op::InsertJob(with(1, JobState::Pending, 2.0)),
            Op::UpdateJob(with(1, JobState::Running, 3.0)),
            Op::InsertJob(with(1, JobState::Pending, 4.0)),
        ]);
        assert_eq!(got, vec![("insert", 1, "Pending/4".to_string())]);
    }

    #[test]
    fn attempts_keep_their_newest_record_and_history_and_prunes_are_kept_in_order() {
        let got = coalesced(vec![
            Op::Attempt { job_seq: 1, attempt: Box::new(attempt(1, "")) },
            Op::Attempt { job_seq: 1, attempt: Box::new(attempt(2, "")) },
            Op::Prune { before_ms: 77, report: None },
            Op::Attempt { job_seq: 1, attempt: Box::new(attempt(1, "failed")) },
            Op::Attempt { job_seq: 2, attempt: Box::new(attempt(1, "")) },
            Op::Run(Box::new(RunView {
                id: 4,
                job_type: "t".into(),
                kind: "detection".into(),
                job_id: String::new(),
                worker_id: "w".into(),
                started_at: 1,
                ended_at: 2,
                success: true,
                message: "ran".into(),
                proposals: 0,
                jobs_created: 0,
            })),
            Op::Prune { before_ms: 88, report: None },
        ]);
        assert_eq!(
            got,
            vec![
                ("attempt", 1, String::new()),
                ("prune", 77, String::new()),
                ("attempt", 1, "failed".to_string()),
                ("attempt", 2, String::new()),
                ("run", 4, "ran".to_string()),
                ("prune", 88, String::new()),
            ]
        );
    }

    #[test]
    fn the_coalescer_forgets_the_previous_batch() {
        let mut c = Coalescer::default();
        let first = queued(vec![Op::UpdateJob(with(1, JobState::Running, 1.0))]);
        let mut out = Vec::new();
        c.coalesce(&first, &mut out);
        assert_eq!(out.len(), 1);
        let second = queued(vec![Op::Activity(Box::new(ActivityView {
            id: 1,
            created_at: 1,
            job_type: "t".into(),
            job_id: String::new(),
            source: "admin",
            stage: String::new(),
            message: String::new(),
        }))]);
        let mut out = Vec::new();
        c.coalesce(&second, &mut out);
        assert_eq!(describe(&out), vec![("activity", 1, String::new())]);
    }

    /// A backend in memory that records what it is asked to apply and can be told to
    /// fail, so the writer is tested without a database.
    #[derive(Clone, Default)]
    struct Memory {
        inner: Arc<Mutex<MemoryState>>,
        failures_left: Arc<AtomicU32>,
        /// Refuse every batch as fenced.
        fenced: Arc<std::sync::atomic::AtomicBool>,
    }

    #[derive(Default)]
    struct MemoryState {
        jobs: HashMap<i64, Job>,
        batches: Vec<Vec<(&'static str, i64, String)>>,
        prunes: usize,
        fenced_tries: usize,
    }

    impl Backend for Memory {
        fn load(&mut self) -> Result<Loaded, BackendError> {
            Ok(Loaded {
                active: Vec::new(),
                counts: HashMap::new(),
                next_job_seq: 1,
                next_activity_id: 1,
                next_run_id: 1,
                next_audit_id: 1,
                ..Default::default()
            })
        }

        fn apply(&mut self, writes: &[Write<'_>]) -> Result<Vec<Pruned>, BackendError> {
            if self.fenced.load(Ordering::SeqCst) {
                self.inner.lock().unwrap().fenced_tries += 1;
                return Err(BackendError::fenced(1, Some(2)));
            }
            if self.failures_left.load(Ordering::SeqCst) > 0 {
                self.failures_left.fetch_sub(1, Ordering::SeqCst);
                return Err(BackendError::with_source("cannot write a batch", std::io::Error::other("injected")));
            }
            let mut s = self.inner.lock().unwrap();
            s.batches.push(describe(writes));
            let mut reports = Vec::new();
            for w in writes {
                match w {
                    Write::InsertJob(j) | Write::UpdateJob(j) => {
                        s.jobs.insert(j.seq, (*j).clone());
                    }
                    Write::Prune { .. } => {
                        s.prunes += 1;
                        reports.push([(("t".to_string(), JobState::Succeeded as i32), s.prunes as i64)].into());
                    }
                    _ => {}
                }
            }
            Ok(reports)
        }
    }

    impl Reader for Memory {
        fn job(&self, seq: i64) -> Result<Option<Job>, BackendError> {
            Ok(self.inner.lock().unwrap().jobs.get(&seq).cloned())
        }
        fn jobs(&self, _: &JobQuery) -> Result<Vec<JobView>, BackendError> {
            Ok(Vec::new())
        }
        fn attempts(&self, _: i64) -> Result<Vec<AttemptView>, BackendError> {
            Ok(Vec::new())
        }
        fn activities(
            &self,
            _: Option<&str>,
            _: Option<&str>,
            _: Option<i64>,
            _: usize,
        ) -> Result<Vec<ActivityView>, BackendError> {
            Ok(Vec::new())
        }
        fn feed(
            &self,
            _: Option<&str>,
            _: Option<&str>,
            _: Option<i64>,
            _: usize,
        ) -> Result<Vec<ActivityView>, BackendError> {
            Ok(Vec::new())
        }
        fn finished_jobs(&self, _: i64, _: i64, _: &mut dyn FnMut(FinishedJob)) -> Result<(), BackendError> {
            Ok(())
        }
        fn detection_runs(&self, _: &str, _: bool, _: usize) -> Result<Vec<RunView>, BackendError> {
            Ok(Vec::new())
        }
        fn audit(&self, _: &AuditQuery) -> Result<Vec<AuditEvent>, BackendError> {
            Ok(Vec::new())
        }
        fn audit_count(&self, _: &AuditQuery) -> Result<i64, BackendError> {
            Ok(0)
        }
        fn audit_oldest(&self, _: i64, _: i64, _: usize) -> Result<Vec<AuditEvent>, BackendError> {
            Ok(Vec::new())
        }
        fn audit_cutoff(&self, _: Option<i64>, _: Option<i64>) -> Result<Option<(i64, i64)>, BackendError> {
            Ok(None)
        }
        fn dead_letters(&self) -> Result<Vec<(String, i64)>, BackendError> {
            Ok(Vec::new())
        }
        fn replayed_as(&self, _: i64) -> Result<Option<i64>, BackendError> {
            Ok(None)
        }
        fn newest_with_keys(&self, _: &str, _: i64, _: &[String]) -> Result<HashMap<String, i64>, BackendError> {
            Ok(HashMap::new())
        }
    }

    fn start(memory: &Memory, events: Arc<EventBus>) -> Arc<Store> {
        Store::start(PathBuf::from("memory"), memory.clone(), memory.clone(), events).unwrap().0
    }

    #[tokio::test]
    async fn what_is_queued_inside_a_bundle_commits_in_one_batch() {
        let memory = Memory::default();
        let store = start(&memory, Arc::new(EventBus::new(64)));
        // Without the bundle the writer takes the first job as soon as it is queued; with
        // it, each pair lands in one batch however the threads interleave.
        for pair in 0..100 {
            let second = store.atomically(|| {
                store.write(Op::InsertJob(with(2 * pair + 1, JobState::Pending, 0.0)));
                std::thread::yield_now();
                store.write(Op::InsertJob(with(2 * pair + 2, JobState::Pending, 0.0)))
            });
            store.durable(second).await.unwrap();
        }
        let batches = memory.inner.lock().unwrap().batches.clone();
        for pair in 0..100i64 {
            let (a, b) = (2 * pair + 1, 2 * pair + 2);
            let holds_a = |batch: &&Vec<(&str, i64, String)>| batch.iter().any(|w| w.1 == a);
            let batch = batches.iter().find(holds_a).expect("written");
            assert!(batch.iter().any(|w| w.1 == b), "jobs {a} and {b} were committed apart: {batches:?}");
        }
        store.close();
    }

    #[tokio::test]
    async fn the_backend_gets_coalesced_batches_and_events_follow_the_commit() {
        let memory = Memory::default();
        let events = Arc::new(EventBus::new(64));
        let store = start(&memory, events.clone());
        let mut sub = events.subscribe_after(None);
        let j = with(5, JobState::Pending, 0.0);
        store.submit(Some(Op::InsertJob(j.clone())), Some(EventKind::Job { job: crate::events::JobEvent(j) }));
        let event = sub.rx.recv().await.unwrap();
        assert_eq!(event.kind.name(), "job");
        assert!(store.job(5).unwrap().is_some(), "the event came after the write was applied");
        store.close();

        // A batch queued before the writer runs is written as one coalesced batch.
        let memory = Memory::default();
        let queue = Arc::new(Queue::new());
        queue.push(Some(Op::InsertJob(with(1, JobState::Pending, 0.0))), None);
        queue.push(Some(Op::UpdateJob(with(1, JobState::Running, 50.0))), None);
        let last = queue.push(Some(Op::UpdateJob(with(1, JobState::Succeeded, 100.0))), None);
        let (committed_tx, mut committed) = watch::channel(0);
        let counters = Arc::new(Committed::default());
        let handle = spawn(
            memory.clone(),
            queue.clone(),
            counters.clone(),
            watch::channel(true).0,
            watch::channel(false).0,
            committed_tx,
            Arc::new(EventBus::new(4)),
            PathBuf::from("memory"),
        )
        .unwrap();
        committed.wait_for(|c| *c >= last).await.unwrap();
        queue.close();
        handle.join().unwrap();
        assert_eq!(memory.inner.lock().unwrap().batches, vec![vec![("insert", 1, "Succeeded/100".to_string())]]);
        // The metrics count the batch, its three operations and the one row they became.
        let count = |n: &AtomicU64| n.load(Ordering::Relaxed);
        assert_eq!((count(&counters.batches), count(&counters.operations), count(&counters.writes)), (1, 3, 1));
    }

    #[tokio::test]
    async fn a_failing_backend_is_retried_and_nothing_is_durable_or_published_before_it_commits() {
        let memory = Memory::default();
        memory.failures_left.store(3, Ordering::SeqCst);
        let events = Arc::new(EventBus::new(64));
        let store = start(&memory, events.clone());
        let mut sub = events.subscribe_after(None);
        let j = with(1, JobState::Pending, 0.0);
        let ticket =
            store.submit(Some(Op::InsertJob(j.clone())), Some(EventKind::Job { job: crate::events::JobEvent(j) }));
        // The first three tries fail; the fourth comes 100 + 200 + 400 ms after the first.
        let early = tokio::time::timeout(Duration::from_millis(250), store.durable(ticket)).await;
        assert!(early.is_err(), "not durable while the commit fails");
        assert!(!store.is_healthy());
        assert!(sub.rx.try_recv().is_err(), "no event before the commit");
        tokio::time::timeout(Duration::from_secs(10), store.durable(ticket)).await.unwrap().unwrap();
        assert!(store.is_healthy());
        assert_eq!(sub.rx.recv().await.unwrap().kind.name(), "job");
        assert_eq!(memory.inner.lock().unwrap().batches.len(), 1, "one batch committed, after the failures");
        store.close();
    }

    #[tokio::test]
    async fn a_fenced_batch_is_never_retried_and_it_and_everything_after_it_are_dropped() {
        let memory = Memory::default();
        let events = Arc::new(EventBus::new(64));
        let store = start(&memory, events.clone());
        let mut sub = events.subscribe_after(None);
        let first = store.write(Op::InsertJob(with(1, JobState::Pending, 0.0)));
        store.durable(first).await.unwrap();
        assert!(!*store.fenced().borrow());

        memory.fenced.store(true, Ordering::SeqCst);
        let j = with(2, JobState::Pending, 0.0);
        let refused =
            store.submit(Some(Op::InsertJob(j.clone())), Some(EventKind::Job { job: crate::events::JobEvent(j) }));
        let result = tokio::time::timeout(Duration::from_secs(10), store.durable(refused)).await.unwrap();
        assert!(matches!(result, Err(crate::store::StoreError::Fenced)), "{result:?}");
        assert!(*store.fenced().borrow());
        assert!(!store.is_healthy());
        let late = store.write(Op::InsertJob(with(3, JobState::Pending, 0.0)));
        assert!(matches!(store.durable(late).await, Err(crate::store::StoreError::Fenced)));

        // A writer still retrying would commit now, and close would wait for it.
        memory.fenced.store(false, Ordering::SeqCst);
        store.close();
        let s = memory.inner.lock().unwrap();
        assert_eq!(s.fenced_tries, 1, "a fenced batch is tried once");
        assert_eq!(s.batches.len(), 1, "only the batch before the fence committed");
        assert!(sub.rx.try_recv().is_err(), "nothing of the fenced batch is published");
        assert!(!store.is_healthy(), "a fenced store stays unhealthy");
    }

    #[tokio::test]
    async fn prune_reports_go_to_their_own_prunes() {
        let memory = Memory::default();
        let store = start(&memory, Arc::new(EventBus::new(4)));
        let (tx1, rx1) = tokio::sync::oneshot::channel();
        let (tx2, rx2) = tokio::sync::oneshot::channel();
        store.write(Op::Prune { before_ms: now_ms(), report: Some(tx1) });
        store.write(Op::Prune { before_ms: now_ms(), report: None });
        store.write(Op::Prune { before_ms: now_ms(), report: Some(tx2) });
        store.settle().await;
        let key = ("t".to_string(), JobState::Succeeded as i32);
        assert_eq!(rx1.await.unwrap(), [(key.clone(), 1)].into());
        assert_eq!(rx2.await.unwrap(), [(key, 3)].into());
        store.close();
    }

    #[tokio::test]
    async fn after_close_writes_are_dropped_and_never_durable() {
        let memory = Memory::default();
        let store = start(&memory, Arc::new(EventBus::new(4)));
        let ticket = store.write(Op::InsertJob(with(1, JobState::Pending, 0.0)));
        store.close();
        store.durable(ticket).await.unwrap();
        let late = store.write(Op::InsertJob(with(2, JobState::Pending, 0.0)));
        assert!(matches!(store.durable(late).await, Err(crate::store::StoreError::Closed)));
        assert!(store.job(2).unwrap().is_none());
    }
}
