//! The admin's shared state: every component's data behind one `Arc`, plus the small
//! helpers they share (ids, activities). Components add their behaviour in their own
//! modules as `impl AdminState` blocks, so each file holds one concept.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
};

use proto::pb;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{
    config::AdminConfig,
    config_store::ConfigStore,
    dispatcher::JobTable,
    events::{EventBus, EventKind},
    job::{ActivityView, now_ms, source_name},
    monitor::Metrics,
    registry::Registry,
    scheduler::DetectorTable,
    schema::SchemaRequests,
    store::{Op, Store},
};

pub struct AdminState {
    pub config: AdminConfig,
    pub registry: Registry,
    pub configs: Arc<ConfigStore>,
    pub store: Arc<Store>,
    pub events: Arc<EventBus>,
    pub metrics: Metrics,
    pub jobs: Mutex<JobTable>,
    pub detectors: Mutex<DetectorTable>,
    pub schemas: Mutex<SchemaRequests>,
    pub wake_dispatch: Notify,
    pub wake_scheduler: Notify,
    /// Set when the admin begins to stop: no new dispatches or detections.
    pub shutdown: CancellationToken,
    pub dispatch_paused: AtomicBool,
    pub ready: AtomicBool,
    /// The gRPC port workers should dial (after binding, so port 0 resolves).
    pub grpc_port: std::sync::atomic::AtomicU16,
    nonce: String,
    next_request: AtomicU64,
    next_activity: AtomicI64,
    next_run: AtomicI64,
}

impl AdminState {
    pub(crate) fn new(
        config: AdminConfig,
        configs: Arc<ConfigStore>,
        store: Arc<Store>,
        events: Arc<EventBus>,
        jobs: JobTable,
        next_activity: i64,
        next_run: i64,
    ) -> Self {
        // Request ids differ across admin restarts, so a late reply to a request of a
        // previous run can never match a new one.
        let nonce = format!("{:x}", now_ms() as u64 ^ u64::from(std::process::id()) << 40);
        AdminState {
            config,
            registry: Registry::default(),
            configs,
            store,
            events,
            metrics: Metrics::default(),
            jobs: Mutex::new(jobs),
            detectors: Mutex::new(DetectorTable::default()),
            schemas: Mutex::new(SchemaRequests::default()),
            wake_dispatch: Notify::new(),
            wake_scheduler: Notify::new(),
            shutdown: CancellationToken::new(),
            dispatch_paused: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            grpc_port: std::sync::atomic::AtomicU16::new(0),
            nonce,
            next_request: AtomicU64::new(1),
            next_activity: AtomicI64::new(next_activity),
            next_run: AtomicI64::new(next_run),
        }
    }

    pub fn new_request_id(&self, prefix: &str) -> String {
        format!("{prefix}-{}-{}", self.nonce, self.next_request.fetch_add(1, Ordering::Relaxed))
    }

    pub fn new_run_id(&self) -> i64 {
        self.next_run.fetch_add(1, Ordering::Relaxed)
    }

    /// Records an activity (persisted, then published).
    pub fn activity(&self, job_type: &str, job_id: &str, source: pb::ActivitySource, stage: &str, message: &str) {
        let a = ActivityView {
            id: self.next_activity.fetch_add(1, Ordering::Relaxed),
            created_at: now_ms(),
            job_type: job_type.to_string(),
            job_id: job_id.to_string(),
            source: source_name(source as i32),
            stage: stage.to_string(),
            message: message.to_string(),
        };
        self.store.submit(Some(Op::Activity(a.clone())), Some(EventKind::Activity { activity: a }));
    }

    /// Records the activities a worker attached to a progress update or completion.
    pub fn worker_activities(
        &self,
        job_type: &str,
        job_id: &str,
        list: &[pb::ActivityEvent],
        default_source: pb::ActivitySource,
    ) {
        for e in list {
            let source = pb::ActivitySource::try_from(e.source)
                .ok()
                .filter(|s| *s != pb::ActivitySource::Unspecified)
                .unwrap_or(default_source);
            self.activity(job_type, job_id, source, &clip(&e.stage, 200), &clip(&e.message, 4096));
        }
    }

    /// Saves a job type's config (the config store validates it) and tells everyone who
    /// cares: the event bus, the activity timeline, the scheduler and the dispatcher. The
    /// API and the pages both save through here.
    pub async fn save_config(
        &self,
        config: pb::PersistedJobTypeConfig,
        updated_by: &str,
    ) -> Result<Arc<pb::PersistedJobTypeConfig>, crate::config_store::ConfigStoreError> {
        let job_type = config.job_type.clone();
        let configs = self.configs.clone();
        let by = updated_by.to_string();
        let saved = tokio::task::spawn_blocking(move || configs.save_config(config, &by)).await.map_err(|e| {
            crate::config_store::ConfigStoreError::Io {
                path: Default::default(),
                source: std::io::Error::other(e.to_string()),
            }
        })??;
        self.events.publish(EventKind::ConfigSaved { job_type: job_type.clone(), updated_by: updated_by.to_string() });
        self.activity(
            &job_type,
            "",
            pb::ActivitySource::Admin,
            "config",
            &format!("configuration saved by {updated_by}"),
        );
        self.wake_scheduler.notify_one();
        self.wake_dispatch.notify_one();
        Ok(saved)
    }

    /// Drains a worker (it keeps its running jobs and gets no new work) or undrains it.
    pub fn set_draining(&self, worker_id: &str, draining: bool) {
        self.registry.set_draining(worker_id, draining);
        self.events.publish(EventKind::WorkerDrain { worker_id: worker_id.to_string(), draining });
        self.wake_dispatch.notify_one();
        self.wake_scheduler.notify_one();
    }

    pub fn is_stopping(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    pub fn cluster_context(&self) -> pb::ClusterContext {
        pb::ClusterContext { metadata: self.config.cluster_metadata.clone(), ..Default::default() }
    }

    pub fn send_timeout(&self) -> std::time::Duration {
        self.config.send_timeout
    }

    /// Wraps a request body in the admin's envelope.
    pub fn envelope(request_id: &str, body: pb::admin_to_worker_message::Body) -> pb::AdminToWorkerMessage {
        pb::AdminToWorkerMessage { request_id: request_id.to_string(), sent_at: Some(proto::now()), body: Some(body) }
    }
}

/// Cuts worker-supplied text to a sane length (on a char boundary).
pub fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
