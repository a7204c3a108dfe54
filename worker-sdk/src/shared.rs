//! The worker-wide state that outlives any one stream: handlers, slots, the running
//! work table and the outbox that work tasks write their messages to.

use std::{collections::HashMap, sync::Arc};

use tokio::sync::{mpsc, watch};

use crate::{CancellationToken, JobHandler, WorkerConfig, WorkerStatus, pb, slots::Slots, tracker::Tracker};

/// A message body on its way to the admin; the session adds the envelope.
pub(crate) type Body = pb::worker_to_admin_message::Body;

/// Where work tasks put their messages. Bounded: when no stream drains it (between
/// reconnects) tasks wait rather than pile up messages without limit.
pub(crate) type Outbox = mpsc::Sender<Body>;

/// How many messages may wait for a stream.
pub(crate) const OUTBOX_CAPACITY: usize = 256;

/// Queues the body `make` builds once the outbox has room; false once the worker has
/// stopped. The body is built after the wait, so it is moved once, into the outbox,
/// instead of living in the caller's future: a body is about 560 bytes, and a future
/// that holds one makes every task that awaits it that much larger to spawn and move.
pub(crate) async fn post(outbox: &Outbox, make: impl FnOnce() -> Body) -> bool {
    match outbox.reserve().await {
        Ok(room) => {
            room.send(make());
            true
        }
        Err(_) => false,
    }
}

pub(crate) struct Shared {
    pub(crate) worker_id: String,
    pub(crate) instance_id: String,
    pub(crate) config: WorkerConfig,
    pub(crate) handlers: HashMap<String, Arc<dyn JobHandler>>,
    pub(crate) capabilities: Vec<pb::JobTypeCapability>,
    pub(crate) slots: Slots,
    pub(crate) tracker: Tracker,
    pub(crate) outbox: Outbox,
    /// Fired once shutdown begins (admin's or local): new requests are refused.
    pub(crate) draining: CancellationToken,
    pub(crate) status: watch::Sender<WorkerStatus>,
}

impl Shared {
    /// The handler and its capability for `job_type`.
    pub(crate) fn handler(&self, job_type: &str) -> Option<(&Arc<dyn JobHandler>, &pb::JobTypeCapability)> {
        let handler = self.handlers.get(job_type)?;
        let capability = self.capabilities.iter().find(|c| c.job_type == job_type)?;
        Some((handler, capability))
    }
}
