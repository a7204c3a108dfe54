//! SchemaCoordinator: asks a capable worker for a job type's descriptor when the job type
//! first appears (or a new worker instance offers it, which is how a larger
//! `descriptor_version` is noticed), or on demand with force refresh, and stores what
//! comes back through the config store.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use proto::pb::{self, admin_to_worker_message::Body};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::{
    clock::SharedClock,
    config_store::{ConfigStore, ConfigStoreError},
    events::{EventBus, EventKind},
    ids::Ids,
    journal::Journal,
    registry::{Registry, WorkerSession},
    scheduler::Scheduler,
    wire,
};

/// How long a worker has to answer a schema request.
const SCHEMA_TIMEOUT_MS: i64 = 30_000;

#[derive(Debug, Clone, thiserror::Error)]
pub enum SchemaError {
    #[error("no connected worker offers job type {0:?}")]
    NoWorker(String),
    #[error("worker {worker_id} could not describe {job_type:?}: {message}")]
    Worker { worker_id: String, job_type: String, message: String },
    #[error("no descriptor for {0:?} arrived in time")]
    Timeout(String),
    #[error("descriptor could not be stored: {0}")]
    Store(String),
}

type Waiter = oneshot::Sender<Result<Arc<pb::JobTypeDescriptor>, SchemaError>>;

/// What the schema coordinator needs from the rest of the admin.
pub struct SchemaParts {
    pub registry: Arc<Registry>,
    pub configs: Arc<ConfigStore>,
    pub events: Arc<EventBus>,
    pub journal: Journal,
    /// Told when a new descriptor is stored, so the job type's detection can start.
    pub scheduler: Scheduler,
    pub clock: SharedClock,
    pub ids: Arc<Ids>,
    pub send_timeout: Duration,
}

/// A handle to the schema coordinator; clones share it.
#[derive(Clone)]
pub struct SchemaCoordinator {
    inner: Arc<(Mutex<SchemaRequests>, SchemaParts)>,
}

#[derive(Default)]
struct SchemaRequests {
    pending: HashMap<String, PendingSchema>,
    /// Worker instances already asked, so a reconnect does not ask again.
    asked_instances: HashMap<String, String>,
}

struct PendingSchema {
    job_type: String,
    worker_id: String,
    session_id: u64,
    force: bool,
    deadline: i64,
    waiters: Vec<Waiter>,
}

impl SchemaCoordinator {
    pub fn new(parts: SchemaParts) -> SchemaCoordinator {
        SchemaCoordinator { inner: Arc::new((Mutex::new(SchemaRequests::default()), parts)) }
    }

    fn p(&self) -> &SchemaParts {
        &self.inner.1
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SchemaRequests> {
        self.inner.0.lock().expect("schema lock")
    }

    /// Fails overdue requests every second until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => self.expire_schema_requests(None),
                _ = stop.cancelled() => break,
            }
        }
    }

    /// Called after a worker's hello: asks it for the descriptors the admin lacks, and,
    /// for a worker instance not seen before, for all of its job types (a newer
    /// descriptor_version replaces the stored one).
    pub fn on_hello(&self, session: &Arc<WorkerSession>) {
        let new_instance = {
            let mut s = self.lock();
            let previous =
                s.asked_instances.insert(session.worker_id.clone(), session.hello.worker_instance_id.clone());
            previous.as_deref() != Some(session.hello.worker_instance_id.as_str())
        };
        for job_type in session.capabilities.keys() {
            if new_instance || self.p().configs.needs_descriptor(job_type, None) {
                self.ask_schema(session, job_type, false, None);
            }
        }
    }

    fn ask_schema(&self, session: &Arc<WorkerSession>, job_type: &str, force: bool, waiter: Option<Waiter>) {
        let request_id = self.p().ids.request("schema");
        {
            let mut s = self.lock();
            // One request per job type at a time; later askers wait for its answer.
            // Not a request on another stream: it may be lost with that stream.
            if let Some(p) = s
                .pending
                .values_mut()
                .find(|p| p.job_type == job_type && (p.force || !force) && p.session_id == session.session_id)
            {
                if let Some(w) = waiter {
                    p.waiters.push(w);
                }
                return;
            }
            s.pending.insert(
                request_id.clone(),
                PendingSchema {
                    job_type: job_type.to_string(),
                    worker_id: session.worker_id.clone(),
                    session_id: session.session_id,
                    force,
                    deadline: self.p().clock.now_ms() + SCHEMA_TIMEOUT_MS,
                    waiters: waiter.into_iter().collect(),
                },
            );
        }
        let msg = wire::envelope(
            &request_id,
            Body::RequestConfigSchema(pb::RequestConfigSchema { job_type: job_type.to_string(), force_refresh: force }),
        );
        session.send(msg, self.p().send_timeout);
    }

    /// Fetches a job type's descriptor now from a capable worker and stores it.
    pub async fn refresh_schema(&self, job_type: &str, force: bool) -> Result<Arc<pb::JobTypeDescriptor>, SchemaError> {
        let worker = self
            .p()
            .registry
            .sessions()
            .into_iter()
            .filter(|s| s.capabilities.contains_key(job_type))
            .min_by_key(|s| s.worker_id.clone())
            .ok_or_else(|| SchemaError::NoWorker(job_type.to_string()))?;
        let (tx, rx) = oneshot::channel();
        self.ask_schema(&worker, job_type, force, Some(tx));
        match tokio::time::timeout(Duration::from_millis(SCHEMA_TIMEOUT_MS as u64 + 1000), rx).await {
            Ok(Ok(result)) => result,
            _ => Err(SchemaError::Timeout(job_type.to_string())),
        }
    }

    pub async fn on_schema_response(&self, session: &WorkerSession, resp: pb::ConfigSchemaResponse) {
        let pending = self.lock().pending.remove(&resp.request_id);
        let Some(pending) = pending else {
            tracing::debug!(worker_id = %session.worker_id, request_id = %resp.request_id, "schema response for an unknown request ignored");
            return;
        };
        let result = self.store_descriptor(session, &pending, resp).await;
        if let Err(e) = &result {
            tracing::warn!(job_type = %pending.job_type, error = %crate::text::clip(&e.to_string(), 300), "descriptor not stored");
        }
        for w in pending.waiters {
            let _ = w.send(result.clone());
        }
    }

    async fn store_descriptor(
        &self,
        session: &WorkerSession,
        pending: &PendingSchema,
        resp: pb::ConfigSchemaResponse,
    ) -> Result<Arc<pb::JobTypeDescriptor>, SchemaError> {
        let job_type = pending.job_type.clone();
        let worker_error = |message: String| SchemaError::Worker {
            worker_id: session.worker_id.clone(),
            job_type: job_type.clone(),
            message,
        };
        if !resp.success {
            return Err(worker_error(if resp.error_message.is_empty() {
                "no reason given".into()
            } else {
                resp.error_message
            }));
        }
        let Some(mut descriptor) = resp.job_type_descriptor else {
            return Err(worker_error("the response carried no descriptor".into()));
        };
        if descriptor.job_type.is_empty() {
            descriptor.job_type = job_type.clone();
        }
        if descriptor.job_type != job_type {
            return Err(worker_error(format!("descriptor is for {:?}", descriptor.job_type)));
        }
        if let Some(stored) = self.p().configs.descriptor(&job_type)
            && !pending.force
            && descriptor.descriptor_version <= stored.descriptor_version
        {
            return Ok(stored);
        }
        let version = descriptor.descriptor_version;
        let configs = self.p().configs.clone();
        let saved = tokio::task::spawn_blocking(move || configs.save_descriptor(descriptor))
            .await
            .map_err(|e| SchemaError::Store(e.to_string()))?;
        match saved {
            Ok(_) => {
                self.p()
                    .events
                    .publish(EventKind::DescriptorSaved { job_type: job_type.clone(), descriptor_version: version });
                self.p().journal.record(
                    &job_type,
                    "",
                    pb::ActivitySource::Admin,
                    "schema",
                    &format!("descriptor v{version} stored from {}", session.worker_id),
                );
                self.p().scheduler.wake();
                self.p().configs.descriptor(&job_type).ok_or_else(|| SchemaError::Store("descriptor vanished".into()))
            }
            Err(e @ ConfigStoreError::BadDescriptor { .. }) | Err(e @ ConfigStoreError::InvalidJobType(_)) => {
                Err(worker_error(e.to_string()))
            }
            Err(e) => Err(SchemaError::Store(e.to_string())),
        }
    }

    /// A worker refused a schema request.
    pub fn on_schema_rejected(&self, request_id: &str, worker_id: &str, message: &str) -> bool {
        let pending = self.lock().pending.remove(request_id);
        let Some(p) = pending else { return false };
        let err = SchemaError::Worker {
            worker_id: worker_id.to_string(),
            job_type: p.job_type.clone(),
            message: message.to_string(),
        };
        for w in p.waiters {
            let _ = w.send(Err(err.clone()));
        }
        true
    }

    /// Fails schema requests that took too long, or that were sent on a stream that ended
    /// (`gone`: worker id and session id).
    pub fn expire_schema_requests(&self, gone: Option<(&str, u64)>) {
        let now = self.p().clock.now_ms();
        let expired: Vec<PendingSchema> = {
            let mut s = self.lock();
            let ids: Vec<String> = s
                .pending
                .iter()
                .filter(|(_, p)| p.deadline <= now || gone == Some((p.worker_id.as_str(), p.session_id)))
                .map(|(k, _)| k.clone())
                .collect();
            ids.into_iter().filter_map(|id| s.pending.remove(&id)).collect()
        };
        for p in expired {
            for w in p.waiters {
                let _ = w.send(Err(SchemaError::Timeout(p.job_type.clone())));
            }
        }
    }
}
