//! The store's writer thread, generic over the backend: it takes everything queued,
//! coalesces it, has the backend apply it in one transaction (retrying with backoff until
//! it commits), then marks the tickets durable and publishes the batch's events.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use tokio::sync::watch;

use super::backend::{Backend, Op, Pruned, Write};
use crate::{
    backoff::Backoff,
    events::{EventBus, EventKind},
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
}

impl Queue {
    pub(super) fn new() -> Queue {
        Queue {
            state: Mutex::new(QueueState { items: Vec::new(), next_ticket: 1, closed: false }),
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
            tracing::warn!(ticket, "state store is closed; a write was dropped");
            return ticket;
        }
        q.items.push(Queued { ticket, op, event });
        if q.items.len() == 1 {
            self.ready.notify_one();
        }
        ticket
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

    fn is_closed(&self) -> bool {
        self.state.lock().expect("store queue lock").closed
    }

    /// Waits for work and swaps it into `batch` (which must be empty). False once the
    /// queue is closed and drained.
    fn take(&self, batch: &mut Vec<Queued>) -> bool {
        let mut q = self.state.lock().expect("store queue lock");
        while q.items.is_empty() && !q.closed {
            q = self.ready.wait(q).expect("store queue lock");
        }
        if q.items.is_empty() {
            return false;
        }
        std::mem::swap(&mut q.items, batch);
        true
    }
}

/// Starts the writer thread. `backend` must already be loaded.
pub(super) fn spawn<B: Backend>(
    backend: B,
    queue: Arc<Queue>,
    healthy: Arc<AtomicBool>,
    committed: watch::Sender<u64>,
    events: Arc<EventBus>,
    path: PathBuf,
) -> std::io::Result<JoinHandle<()>> {
    let writer = Writer { backend, queue, healthy, committed, events, path };
    std::thread::Builder::new().name("plughost-store".into()).spawn(move || writer.run())
}

struct Writer<B> {
    backend: B,
    queue: Arc<Queue>,
    /// False while a batch cannot commit.
    healthy: Arc<AtomicBool>,
    /// The newest committed ticket.
    committed: watch::Sender<u64>,
    events: Arc<EventBus>,
    /// Where the store lives, for the log.
    path: PathBuf,
}

impl<B: Backend> Writer<B> {
    fn run(mut self) {
        let mut batch: Vec<Queued> = Vec::with_capacity(1024);
        let mut coalescer = Coalescer::default();
        while self.queue.take(&mut batch) {
            let last_ticket = batch.last().map(|q| q.ticket).unwrap_or(0);
            let mut writes = Vec::with_capacity(batch.len());
            coalescer.coalesce(&batch, &mut writes);
            let Some(pruned) = self.commit(&writes, batch.len()) else {
                return;
            };
            drop(writes);
            self.healthy.store(true, Ordering::Relaxed);
            let _ = self.committed.send(last_ticket);
            // Every prune is in `writes`, so the reports line up with the prunes in order.
            let mut reports = pruned.into_iter();
            for q in batch.drain(..) {
                if let Some(Op::Prune { report, .. }) = q.op {
                    let pruned = reports.next().unwrap_or_default();
                    if let Some(tx) = report {
                        let _ = tx.send(pruned);
                    }
                }
                if let Some(event) = q.event {
                    self.events.publish(event);
                }
            }
        }
    }

    /// Applies a batch until it commits. A batch is durable only once it commits: on
    /// failure (disk full, I/O error) it is retried with backoff, and until then nothing
    /// after it counts as durable, so no new job is dispatched and no event claims a change
    /// that was not stored. None when it gives up at shutdown.
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
                Err(e) => e,
            };
            attempt = attempt.saturating_add(1);
            let delay_ms = COMMIT_RETRY.ceiling_ms(attempt);
            let retry_in = Duration::from_millis(delay_ms.max(0) as u64);
            self.healthy.store(false, Ordering::Relaxed);
            tracing::error!(path = %self.path.display(), error = %e, ops, ?retry_in, "state store write failed");
            if self.queue.is_closed() && delay_ms >= COMMIT_RETRY.cap_ms {
                tracing::error!(path = %self.path.display(), ops, "giving up on a batch at shutdown");
                return None;
            }
            std::thread::sleep(retry_in);
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
    jobs: HashMap<i64, JobSlot>,
    attempts: HashMap<(i64, i32), usize>,
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
            }
        }
    }
}
