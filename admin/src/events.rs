//! The event bus: every state change the UI or a script may want to follow, published
//! after it is persisted. Subscribers get a broadcast; a bounded ring buffer serves
//! `Last-Event-ID` replay for SSE clients that reconnect.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
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
    Activity {
        activity: ActivityView,
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
        run: RunView,
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

pub struct EventBus {
    tx: broadcast::Sender<Arc<Event>>,
    ring: Mutex<Ring>,
}

struct Ring {
    next_id: u64,
    events: VecDeque<Arc<Event>>,
    capacity: usize,
}

impl EventBus {
    /// `capacity` bounds both the replay buffer and how far a slow subscriber may lag
    /// before it is told it missed events.
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(16));
        EventBus {
            tx,
            ring: Mutex::new(Ring {
                next_id: 1,
                events: VecDeque::with_capacity(capacity),
                capacity: capacity.max(16),
            }),
        }
    }

    pub fn publish(&self, kind: EventKind) {
        let mut ring = self.ring.lock().expect("event ring lock");
        let event = Arc::new(Event { id: ring.next_id, at: crate::job::now_ms(), kind });
        ring.next_id += 1;
        if ring.events.len() == ring.capacity {
            ring.events.pop_front();
        }
        ring.events.push_back(event.clone());
        // Sent under the lock so subscribers see ids in order.
        let _ = self.tx.send(event);
    }

    /// A live subscription plus the buffered events after `last_id` (none for `None`: a
    /// new client wants only what comes next). `replay_complete` is false when events
    /// after `last_id` already fell out of the buffer.
    pub fn subscribe_after(&self, last_id: Option<u64>) -> Subscription {
        let ring = self.ring.lock().expect("event ring lock");
        let rx = self.tx.subscribe();
        let (replay, replay_complete) = match last_id {
            None => (Vec::new(), true),
            Some(last) => {
                let oldest = ring.events.front().map(|e| e.id).unwrap_or(ring.next_id);
                let complete = last + 1 >= oldest;
                (ring.events.iter().filter(|e| e.id > last).cloned().collect(), complete)
            }
        };
        Subscription { replay, replay_complete, rx }
    }

    pub fn last_id(&self) -> u64 {
        self.ring.lock().expect("event ring lock").next_id - 1
    }
}

pub struct Subscription {
    pub replay: Vec<Arc<Event>>,
    pub replay_complete: bool,
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
        for i in 0..5 {
            bus.publish(cfg(&format!("t{i}")));
        }
        let sub = bus.subscribe_after(Some(3));
        assert_eq!(sub.replay.iter().map(|e| e.id).collect::<Vec<_>>(), vec![4, 5]);
        assert!(sub.replay_complete);
    }

    #[test]
    fn replay_reports_a_gap_once_the_buffer_has_wrapped() {
        let bus = EventBus::new(16);
        for i in 0..40 {
            bus.publish(cfg(&format!("t{i}")));
        }
        let sub = bus.subscribe_after(Some(2));
        assert!(!sub.replay_complete);
        assert_eq!(sub.replay.len(), 16);
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
