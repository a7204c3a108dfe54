//! The event bus: every state change the UI or a script may want to follow, published
//! after it is persisted. Subscribers get a broadcast; a bounded ring buffer serves
//! `Last-Event-ID` replay for SSE clients that reconnect.
//!
//! Event ids are unique across runs of the admin, so an id from an earlier run is never
//! mistaken for one of this run: a run's ids are consecutive, starting above its
//! *origin*, the time it started in microseconds since the Unix epoch, or above the
//! highest id an earlier run remembered in the store, whichever is larger (the admin
//! remembers its origin at start and its last id at shutdown; see [`EventBus::resume_after`]).
//! After a crash, the next run's ids are above the crashed run's as long as that run
//! published fewer than one event per microsecond on average and the clock did not go
//! back. A client that presents an id which is not from this run, or whose successors
//! already left the buffer, is told to start over (see [`Subscription::reset`]).

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, OnceLock},
};

use serde::Serialize;
use tokio::sync::broadcast;

use crate::job::{ActivityView, Job, RunView};

/// What happened. Serialised with a `type` tag, which is also the SSE event name.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    Job {
        job: JobEvent,
    },
    /// Boxed, as the other large events are, so a queued event stays small.
    Activity {
        activity: Box<ActivityView>,
    },
    WorkerJoined {
        worker_id: String,
        address: String,
        job_types: Vec<String>,
    },
    WorkerLeft {
        worker_id: String,
        reason: String,
    },
    WorkerDrain {
        worker_id: String,
        draining: bool,
    },
    /// A summary of all workers' slot use, at most about once a second.
    Heartbeat {
        workers: usize,
        execution_slots_used: i64,
        execution_slots_total: i64,
    },
    DetectionStarted {
        job_type: String,
        run_id: i64,
        worker_id: String,
    },
    DetectionFinished {
        run: Box<RunView>,
    },
    ConfigSaved {
        job_type: String,
        updated_by: String,
    },
    DescriptorSaved {
        job_type: String,
        descriptor_version: u32,
    },
}

impl EventKind {
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Job { .. } => "job",
            EventKind::Activity { .. } => "activity",
            EventKind::WorkerJoined { .. } => "worker_joined",
            EventKind::WorkerLeft { .. } => "worker_left",
            EventKind::WorkerDrain { .. } => "worker_drain",
            EventKind::Heartbeat { .. } => "heartbeat",
            EventKind::DetectionStarted { .. } => "detection_started",
            EventKind::DetectionFinished { .. } => "detection_finished",
            EventKind::ConfigSaved { .. } => "config_saved",
            EventKind::DescriptorSaved { .. } => "descriptor_saved",
        }
    }
}

/// A job's state at one change. It shares the snapshot the store writes and becomes a
/// `JobView` only when someone serialises it (most events are never read).
#[derive(Debug, Clone)]
pub struct JobEvent(pub Arc<Job>);

impl Serialize for JobEvent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.view().serialize(s)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub id: u64,
    pub at: i64,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// Follows every event as it is published, on the publishing thread (for job events,
/// the store's publisher thread), before subscribers get it. It must be quick and must
/// not block: a slow observer holds up every event behind it. Unlike a subscriber, it
/// never lags and never misses an event.
pub trait Observer: Send + Sync + 'static {
    fn observe(&self, kind: &EventKind);
}

pub struct EventBus {
    tx: broadcast::Sender<Arc<Event>>,
    ring: Mutex<Ring>,
    /// The one observer (the trends, `trends.rs`), set once at start.
    observer: OnceLock<Arc<dyn Observer>>,
}

struct Ring {
    /// Every id of this run is above it; an id at or below it is from an earlier run,
    /// except the origin itself, which a client that saw no event of this run may hold
    /// (it is the `last_id` before the first event).
    origin: u64,
    next_id: u64,
    events: VecDeque<Arc<Event>>,
    capacity: usize,
}

impl EventBus {
    /// `capacity` bounds both the replay buffer and how far a slow subscriber may lag
    /// before it is told it missed events.
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(16));
        let origin = micros_now();
        EventBus {
            tx,
            ring: Mutex::new(Ring {
                origin,
                next_id: origin + 1,
                events: VecDeque::with_capacity(capacity),
                capacity: capacity.max(16),
            }),
            observer: OnceLock::new(),
        }
    }

    /// Sets the observer; called once at start, before anything is published. A second
    /// observer is refused (returned).
    pub fn observe_with(&self, observer: Arc<dyn Observer>) -> Result<(), Arc<dyn Observer>> {
        self.observer.set(observer)
    }

    /// Makes this run's ids start above `previous`, the highest id an earlier run is
    /// known to have handed out. Called at start, before anything is published; once
    /// events were published it changes nothing (their ids must not move).
    pub fn resume_after(&self, previous: u64) {
        let mut ring = self.ring.lock().expect("event ring lock");
        if ring.next_id != ring.origin + 1 {
            debug_assert!(false, "resume_after after events were published");
            return;
        }
        ring.origin = ring.origin.max(previous.saturating_add(1));
        ring.next_id = ring.origin + 1;
    }

    pub fn publish(&self, kind: EventKind) {
        // Outside the ring's lock: the observer's work never holds up subscribers.
        if let Some(observer) = self.observer.get() {
            observer.observe(&kind);
        }
        let at = crate::job::now_ms();
        self.ring.lock().expect("event ring lock").push(&self.tx, at, kind);
    }

    /// Publishes `kinds` in order, leaving the vector empty: one lock and one reading of
    /// the clock for all of them, which is what the store's publisher does with the
    /// events of each committed batch (several per job, every one of which would
    /// otherwise read the clock and take the lock).
    pub fn publish_all(&self, kinds: &mut Vec<EventKind>) {
        if kinds.is_empty() {
            return;
        }
        if let Some(observer) = self.observer.get() {
            kinds.iter().for_each(|kind| observer.observe(kind));
        }
        let at = crate::job::now_ms();
        let mut ring = self.ring.lock().expect("event ring lock");
        for kind in kinds.drain(..) {
            ring.push(&self.tx, at, kind);
        }
    }

    /// A live subscription plus the buffered events after `last_id` (none for `None`: a
    /// new client wants only what comes next). When events after `last_id` already fell
    /// out of the buffer, the subscription says so in `reset` and replays what is left;
    /// when `last_id` is not an id of this run (an earlier run's, or one never handed
    /// out), it says so and replays nothing.
    pub fn subscribe_after(&self, last_id: Option<u64>) -> Subscription {
        let ring = self.ring.lock().expect("event ring lock");
        let rx = self.tx.subscribe();
        let (replay, reset) = match last_id {
            None => (Vec::new(), None),
            Some(last) if last < ring.origin || last >= ring.next_id => {
                (Vec::new(), Some("the event id is not from this run of the admin".to_string()))
            }
            Some(last) => {
                let oldest = ring.events.front().map(|e| e.id).unwrap_or(ring.next_id);
                let missed = (last + 1 < oldest).then(|| "events were missed".to_string());
                (ring.events.iter().filter(|e| e.id > last).cloned().collect(), missed)
            }
        };
        // Sent under the same lock as publish: every event up to here is replayed or
        // deliberately skipped, every later one arrives on `rx`.
        Subscription { replay, reset, after: ring.next_id - 1, rx }
    }

    pub fn last_id(&self) -> u64 {
        self.ring.lock().expect("event ring lock").next_id - 1
    }
}

impl Ring {
    /// Numbers the event, buffers it and sends it to the subscribers; under the ring's
    /// lock, so subscribers see ids in order.
    fn push(&mut self, tx: &broadcast::Sender<Arc<Event>>, at: i64, kind: EventKind) {
        let event = Arc::new(Event { id: self.next_id, at, kind });
        self.next_id += 1;
        if self.events.len() == self.capacity {
            self.events.pop_front();
        }
        self.events.push_back(event.clone());
        let _ = tx.send(event);
    }
}

/// Now in microseconds since the Unix epoch (below 2^53 until the year 2255, so the ids
/// stay exact in JavaScript).
fn micros_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2))
}

pub struct Subscription {
    pub replay: Vec<Arc<Event>>,
    /// Why the client must reload its view instead of relying on the replay, if it must.
    pub reset: Option<String>,
    /// The newest id when subscribing: live events on `rx` at or below it were replayed
    /// (or skipped on purpose) and must not be sent again.
    pub after: u64,
    pub rx: broadcast::Receiver<Arc<Event>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(job_type: &str) -> EventKind {
        EventKind::ConfigSaved { job_type: job_type.into(), updated_by: "t".into() }
    }

    #[test]
    fn replay_returns_only_events_after_the_given_id() {
        let bus = EventBus::new(16);
        let origin = bus.last_id();
        for i in 0..5 {
            bus.publish(cfg(&format!("t{i}")));
        }
        let sub = bus.subscribe_after(Some(origin + 3));
        assert_eq!(sub.replay.iter().map(|e| e.id).collect::<Vec<_>>(), vec![origin + 4, origin + 5]);
        assert_eq!(sub.reset, None);
        assert_eq!(sub.after, origin + 5);
        let fresh = bus.subscribe_after(Some(origin));
        assert_eq!((fresh.replay.len(), fresh.reset), (5, None), "the id a page gets before any event");
    }

    #[test]
    fn replay_reports_a_gap_once_the_buffer_has_wrapped() {
        let bus = EventBus::new(16);
        let origin = bus.last_id();
        for i in 0..40 {
            bus.publish(cfg(&format!("t{i}")));
        }
        let sub = bus.subscribe_after(Some(origin + 2));
        assert!(sub.reset.is_some());
        assert_eq!(sub.replay.len(), 16);
    }

    #[test]
    fn ids_continue_above_an_earlier_run_and_its_ids_get_a_reset() {
        let earlier = EventBus::new(16);
        earlier.publish(cfg("a"));
        // An earlier run far ahead of this clock (it published a lot, or the clock went
        // back): its remembered last id is what this run's ids start above.
        let remembered = earlier.last_id() + 1_000_000_000;
        let bus = EventBus::new(16);
        bus.resume_after(remembered);
        bus.publish(cfg("b"));
        assert_eq!(bus.last_id(), remembered + 2, "the first id is above the origin");
        for stale in [earlier.last_id(), remembered, remembered + 3, u64::MAX] {
            let sub = bus.subscribe_after(Some(stale));
            assert!(sub.reset.is_some(), "{stale} is not from this run");
            assert!(sub.replay.is_empty());
            assert_eq!(sub.after, remembered + 2);
        }
    }

    #[test]
    fn a_run_numbers_its_events_from_its_start_time_in_microseconds() {
        let before = micros_now();
        let bus = EventBus::new(16);
        bus.resume_after(0);
        assert!(bus.last_id() >= before, "a later run starts above an earlier one by the clock alone");
        bus.publish(cfg("a"));
        assert_eq!(
            bus.subscribe_after(Some(before - 1)).reset.as_deref(),
            Some("the event id is not from this run of the admin")
        );
    }

    #[tokio::test]
    async fn a_batch_is_published_in_order_with_consecutive_ids_and_each_event_observed() {
        #[derive(Default)]
        struct Seen(Mutex<Vec<String>>);
        impl Observer for Seen {
            fn observe(&self, kind: &EventKind) {
                if let EventKind::ConfigSaved { job_type, .. } = kind {
                    self.0.lock().unwrap().push(job_type.clone());
                }
            }
        }
        let bus = EventBus::new(16);
        let seen = Arc::new(Seen::default());
        assert!(bus.observe_with(seen.clone()).is_ok());
        bus.publish(cfg("before"));
        let mut sub = bus.subscribe_after(None);
        let mut batch = vec![cfg("a"), cfg("b"), cfg("c")];
        bus.publish_all(&mut batch);
        assert!(batch.is_empty(), "the batch is drained");
        bus.publish_all(&mut batch);
        let first = sub.after + 1;
        let mut got = Vec::new();
        for _ in 0..3 {
            let e = sub.rx.recv().await.unwrap();
            let EventKind::ConfigSaved { job_type, .. } = &e.kind else { panic!("{e:?}") };
            got.push((e.id, job_type.clone(), e.at));
        }
        let at = got[0].2;
        assert_eq!(
            got,
            vec![(first, "a".to_string(), at), (first + 1, "b".to_string(), at), (first + 2, "c".to_string(), at)]
        );
        assert!(sub.rx.try_recv().is_err(), "an empty batch publishes nothing");
        assert_eq!(*seen.0.lock().unwrap(), ["before", "a", "b", "c"]);
        assert_eq!(bus.subscribe_after(Some(first - 1)).replay.len(), 3);
    }

    #[tokio::test]
    async fn subscribers_receive_events_published_after_subscribing() {
        let bus = EventBus::new(16);
        let mut sub = bus.subscribe_after(None);
        bus.publish(cfg("x"));
        let e = sub.rx.recv().await.unwrap();
        assert_eq!(e.kind.name(), "config_saved");
        assert!(sub.replay.is_empty());
    }
}
