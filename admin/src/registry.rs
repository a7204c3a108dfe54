//! The registry of live worker sessions: who is connected, what each can do, when each
//! was last heard from, and whether it is draining. One session per worker_id: a second
//! stream with the same id replaces the first. It also remembers the workers that left
//! during the last day and each worker's slot use over the last hour (`worker_history`).

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

use dashmap::DashMap;
use proto::pb;
use serde::Serialize;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::{
    clock::SharedClock,
    liveness::{self, Cadence},
    worker_history::{Departure, Departures, LeftBecause, SlotSeries, SlotUse},
};

/// What goes into a worker's outbound queue. Boxed, so the queue's buffer holds pointers:
/// an idle stream's preallocated block is half a KiB instead of ~20 KiB of messages.
pub type Outgoing = Result<Box<pb::AdminToWorkerMessage>, Box<Status>>;
pub type Outbound = mpsc::Sender<Outgoing>;

/// One worker's stream.
pub struct WorkerSession {
    pub session_id: u64,
    pub worker_id: String,
    pub hello: pb::WorkerHello,
    pub capabilities: HashMap<String, pb::JobTypeCapability>,
    pub connected_at: i64,
    /// The TCP peer the stream came from (unknown only for sessions made in tests).
    pub peer: Option<SocketAddr>,
    last_seen: AtomicI64,
    heartbeat: Mutex<pb::WorkerHeartbeat>,
    /// When its heartbeats arrive, which liveness judges it by.
    cadence: Mutex<Cadence>,
    tx: Outbound,
    /// Cancelled to end the stream (replaced, lost, not reading).
    pub kill: CancellationToken,
    kill_reason: Mutex<Option<(LeftBecause, String)>>,
}

impl WorkerSession {
    pub fn new(session_id: u64, hello: pb::WorkerHello, tx: Outbound, now: i64) -> Self {
        let capabilities = hello.capabilities.iter().map(|c| (c.job_type.clone(), c.clone())).collect();
        WorkerSession {
            session_id,
            worker_id: hello.worker_id.clone(),
            hello,
            capabilities,
            connected_at: now,
            peer: None,
            last_seen: AtomicI64::new(now),
            heartbeat: Mutex::new(pb::WorkerHeartbeat::default()),
            cadence: Mutex::new(Cadence::new(now)),
            tx,
            kill: CancellationToken::new(),
            kill_reason: Mutex::new(None),
        }
    }

    /// The session with the TCP peer its stream came from.
    pub fn with_peer(mut self, peer: Option<SocketAddr>) -> Self {
        self.peer = peer;
        self
    }

    pub fn touch(&self, now: i64) {
        self.last_seen.store(now, Ordering::Relaxed);
    }

    pub fn last_seen(&self) -> i64 {
        self.last_seen.load(Ordering::Relaxed)
    }

    /// Records a heartbeat's arrival (valid or not: it shows the worker's cadence either way).
    pub fn beat(&self, now: i64) {
        self.cadence.lock().expect("cadence lock").beat(now);
    }

    pub fn cadence(&self) -> Cadence {
        *self.cadence.lock().expect("cadence lock")
    }

    pub fn set_heartbeat(&self, hb: pb::WorkerHeartbeat) {
        *self.heartbeat.lock().expect("heartbeat lock") = hb;
    }

    pub fn heartbeat(&self) -> pb::WorkerHeartbeat {
        self.heartbeat.lock().expect("heartbeat lock").clone()
    }

    pub fn can_execute(&self, job_type: &str) -> bool {
        self.capabilities.get(job_type).is_some_and(|c| c.can_execute)
    }

    pub fn can_detect(&self, job_type: &str) -> bool {
        self.capabilities.get(job_type).is_some_and(|c| c.can_detect)
    }

    /// Execution slots this worker offers for a job type (0 in the capability means 1).
    pub fn execution_slots(&self, job_type: &str) -> i64 {
        self.capabilities.get(job_type).map(|c| i64::from(c.max_execution_concurrency.max(1))).unwrap_or(0)
    }

    /// Ends the stream; the first reason given is the one reported.
    pub fn close(&self, because: LeftBecause, reason: &str) {
        self.close_with(because, reason, Status::aborted(reason.to_string()));
    }

    /// Ends the stream with `status` as the worker's answer.
    pub fn close_with(&self, because: LeftBecause, reason: &str, status: Status) {
        let mut r = self.kill_reason.lock().expect("kill reason lock");
        if r.is_none() {
            *r = Some((because, reason.to_string()));
        }
        drop(r);
        let _ = self.tx.try_send(Err(Box::new(status)));
        self.kill.cancel();
    }

    pub fn close_reason(&self) -> Option<String> {
        self.close_cause().map(|(_, reason)| reason)
    }

    /// Why the admin closed the stream, and its words for it.
    pub fn close_cause(&self) -> Option<(LeftBecause, String)> {
        self.kill_reason.lock().expect("kill reason lock").clone()
    }

    /// Queues a message. A full queue gets `send_timeout` to drain; a worker that does not
    /// read for that long is disconnected. Returns false when the stream is gone.
    pub fn send(self: &Arc<Self>, msg: pb::AdminToWorkerMessage, send_timeout: Duration) -> bool {
        match self.tx.try_send(Ok(Box::new(msg))) {
            Ok(()) => true,
            Err(TrySendError::Closed(_)) => false,
            Err(TrySendError::Full(Ok(msg))) => {
                let session = self.clone();
                tokio::spawn(async move {
                    if session.tx.send_timeout(Ok(msg), send_timeout).await.is_err() && !session.kill.is_cancelled() {
                        tracing::warn!(worker_id = %session.worker_id, "worker is not reading its stream; disconnecting");
                        session.close(LeftBecause::Lost, "worker did not read its stream in time");
                    }
                });
                true
            }
            Err(TrySendError::Full(Err(_))) => true,
        }
    }
}

/// A worker as the API and the pages show it.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerView {
    pub worker_id: String,
    pub worker_instance_id: String,
    /// The address its hello gave (empty when it gave none: see `peer_address`).
    pub address: String,
    /// The TCP peer its stream came from.
    pub peer_address: String,
    pub worker_version: String,
    pub protocol_version: String,
    pub job_types: Vec<String>,
    pub capabilities: Vec<CapabilityView>,
    pub connected_at: i64,
    /// When the worker was last heard from (any message counts).
    pub last_heartbeat: i64,
    /// The interval its heartbeats keep (see `liveness::Cadence`); absent before the first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval_observed_ms: Option<i64>,
    /// Silence after which it is lost; `last_heartbeat` plus this is its deadline.
    pub lost_after_silence_ms: i64,
    pub draining: bool,
    pub detection_slots_used: i32,
    pub detection_slots_total: i32,
    pub execution_slots_used: i32,
    pub execution_slots_total: i32,
    pub running_work: usize,
    pub metadata: HashMap<String, String>,
    /// Its execution slot use over the last hour, from its heartbeats.
    #[serde(rename = "slot_use_last_hour")]
    pub slot_use: SlotUse,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CapabilityView {
    pub job_type: String,
    pub can_detect: bool,
    pub can_execute: bool,
    pub max_detection_concurrency: i32,
    pub max_execution_concurrency: i32,
    pub display_name: String,
    pub weight: i32,
}

pub struct Registry {
    sessions: DashMap<String, Arc<WorkerSession>>,
    draining: Mutex<HashSet<String>>,
    next_session: AtomicU64,
    /// The heartbeat interval the admin advertises (at least 1 s).
    heartbeat_interval: Duration,
    /// For the departures and the slot-use series.
    clock: SharedClock,
    departures: Departures,
    /// worker_id -> slot use per minute, kept an hour past the worker's last heartbeat.
    slot_use: DashMap<String, SlotSeries>,
}

impl Default for Registry {
    /// A registry advertising the admin's default interval of 5 s.
    fn default() -> Self {
        Registry::new(Duration::from_secs(5))
    }
}

impl Registry {
    /// A registry on the wall clock.
    pub fn new(heartbeat_interval: Duration) -> Registry {
        Registry::with_clock(heartbeat_interval, crate::clock::system())
    }

    pub fn with_clock(heartbeat_interval: Duration, clock: SharedClock) -> Registry {
        Registry {
            sessions: DashMap::new(),
            draining: Mutex::new(HashSet::new()),
            next_session: AtomicU64::new(0),
            heartbeat_interval: heartbeat_interval.max(Duration::from_secs(1)),
            clock,
            departures: Departures::default(),
            slot_use: DashMap::new(),
        }
    }

    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval
    }

    /// How long this worker may stay silent before liveness declares it lost.
    pub fn silence_limit_ms(&self, s: &WorkerSession) -> i64 {
        liveness::silence_limit_ms(self.heartbeat_interval, &s.cadence())
    }

    pub fn next_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Registers a session and returns the one it replaces, if any.
    pub fn register(&self, session: Arc<WorkerSession>) -> Option<Arc<WorkerSession>> {
        self.sessions.insert(session.worker_id.clone(), session)
    }

    /// Removes the worker's session if it is still this one (not already replaced).
    pub fn remove_if_current(&self, worker_id: &str, session_id: u64) -> bool {
        self.sessions.remove_if(worker_id, |_, s| s.session_id == session_id).is_some()
    }

    pub fn get(&self, worker_id: &str) -> Option<Arc<WorkerSession>> {
        self.sessions.get(worker_id).map(|s| s.clone())
    }

    pub fn sessions(&self) -> Vec<Arc<WorkerSession>> {
        self.sessions.iter().map(|e| e.value().clone()).collect()
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    pub fn is_draining(&self, worker_id: &str) -> bool {
        self.draining.lock().expect("draining lock").contains(worker_id)
    }

    /// Draining is kept by worker_id, so it survives the worker reconnecting.
    pub fn set_draining(&self, worker_id: &str, draining: bool) {
        let mut d = self.draining.lock().expect("draining lock");
        if draining {
            d.insert(worker_id.to_string());
        } else {
            d.remove(worker_id);
        }
    }

    /// Connected, non-draining workers that can execute this job type.
    pub fn executors(&self, job_type: &str) -> Vec<Arc<WorkerSession>> {
        self.execution_candidates(job_type).into_iter().filter(|(_, draining)| !draining).map(|(s, _)| s).collect()
    }

    /// Connected workers that can execute this job type, each with whether it is draining.
    pub fn execution_candidates(&self, job_type: &str) -> Vec<(Arc<WorkerSession>, bool)> {
        let draining = self.draining.lock().expect("draining lock").clone();
        self.sessions
            .iter()
            .filter(|e| e.value().can_execute(job_type))
            .map(|e| (e.value().clone(), draining.contains(e.key())))
            .collect()
    }

    /// Records a heartbeat's execution slot use in the worker's series.
    pub fn record_slot_use(&self, worker_id: &str, used: i32, total: i32) {
        let now = self.clock.now_ms();
        match self.slot_use.get_mut(worker_id) {
            Some(mut series) => series.record(used, total, now),
            None => self.slot_use.entry(worker_id.to_string()).or_default().record(used, total, now),
        }
    }

    /// Remembers a session whose stream ended, and forgets the slot use of workers gone
    /// for more than the series' window.
    pub fn record_departure(&self, s: &WorkerSession, because: LeftBecause, reason: &str) {
        let now = self.clock.now_ms();
        let mut job_types: Vec<String> = s.capabilities.keys().cloned().collect();
        job_types.sort();
        let departure = Departure {
            worker_id: s.worker_id.clone(),
            address: s.hello.address.clone(),
            peer_address: s.peer.map(|p| p.to_string()).unwrap_or_default(),
            job_types,
            connected_at: s.connected_at,
            last_seen: s.last_seen(),
            left_at: now,
            because,
            reason: reason.to_string(),
        };
        self.departures.record(departure, now);
        self.slot_use.retain(|id, series| series.is_recent(now) || self.sessions.contains_key(id));
    }

    /// The workers that left during the last day, newest first.
    pub fn departures(&self) -> Vec<Departure> {
        self.departures.list(self.clock.now_ms())
    }

    /// Connected, non-draining workers that can detect this job type.
    pub fn detectors(&self, job_type: &str) -> Vec<Arc<WorkerSession>> {
        let draining = self.draining.lock().expect("draining lock").clone();
        self.sessions
            .iter()
            .filter(|e| e.value().can_detect(job_type) && !draining.contains(e.key()))
            .map(|e| e.value().clone())
            .collect()
    }

    /// Every job type some connected worker offers, with the best display name seen.
    pub fn job_types(&self) -> HashMap<String, pb::JobTypeCapability> {
        let mut out: HashMap<String, pb::JobTypeCapability> = HashMap::new();
        for s in self.sessions.iter() {
            for (t, c) in &s.capabilities {
                out.entry(t.clone()).or_insert_with(|| c.clone());
            }
        }
        out
    }

    pub fn view(&self, s: &WorkerSession) -> WorkerView {
        let hb = s.heartbeat();
        let mut caps: Vec<CapabilityView> = s
            .capabilities
            .values()
            .map(|c| CapabilityView {
                job_type: c.job_type.clone(),
                can_detect: c.can_detect,
                can_execute: c.can_execute,
                max_detection_concurrency: c.max_detection_concurrency,
                max_execution_concurrency: c.max_execution_concurrency,
                display_name: c.display_name.clone(),
                weight: c.weight,
            })
            .collect();
        caps.sort_by(|a, b| a.job_type.cmp(&b.job_type));
        WorkerView {
            worker_id: s.worker_id.clone(),
            worker_instance_id: s.hello.worker_instance_id.clone(),
            address: s.hello.address.clone(),
            peer_address: s.peer.map(|p| p.to_string()).unwrap_or_default(),
            worker_version: s.hello.worker_version.clone(),
            protocol_version: s.hello.protocol_version.clone(),
            job_types: caps.iter().map(|c| c.job_type.clone()).collect(),
            capabilities: caps,
            connected_at: s.connected_at,
            last_heartbeat: s.last_seen(),
            heartbeat_interval_observed_ms: s.cadence().observed_ms(),
            lost_after_silence_ms: self.silence_limit_ms(s),
            draining: self.is_draining(&s.worker_id),
            detection_slots_used: hb.detection_slots_used,
            detection_slots_total: hb.detection_slots_total,
            execution_slots_used: hb.execution_slots_used,
            execution_slots_total: hb.execution_slots_total,
            running_work: hb.running_work.len(),
            metadata: s.hello.metadata.clone(),
            slot_use: self
                .slot_use
                .get(&s.worker_id)
                .map(|series| series.summary(self.clock.now_ms()))
                .unwrap_or_else(|| SlotSeries::default().summary(self.clock.now_ms())),
        }
    }

    pub fn views(&self) -> Vec<WorkerView> {
        let mut v: Vec<WorkerView> = self.sessions.iter().map(|e| self.view(e.value())).collect();
        v.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        v
    }
}
