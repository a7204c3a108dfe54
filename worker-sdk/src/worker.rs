//! `Worker`: registers handlers, then keeps a session with the admin alive: walks the
//! admin addresses to find the leader (`rotation`), reconnects with backoff after a
//! round without a session, stops for good on fatal errors, drains on shutdown.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, OnceLock},
    time::Duration,
};

use tokio::sync::{mpsc, watch};

use crate::{
    CancellationToken, Error, JobHandler, WorkerConfig, WorkerStatus,
    backoff::Backoff,
    connect::Dialer,
    execution, identity,
    rotation::{Pace, Rotation},
    session::{self, SessionContext},
    shared::{Body, OUTBOX_CAPACITY, Shared},
    slots::Slots,
    tracker::Tracker,
};

/// Stops a task of the worker's when `serve` returns, whichever way.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The reconnect delay before any AdminHello said otherwise.
const INITIAL_RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// A worker process's connection to the admin, with its job handlers.
pub struct Worker {
    config: WorkerConfig,
    handlers: Vec<Arc<dyn JobHandler>>,
    instance_id: String,
    worker_id: OnceLock<String>,
    status: watch::Sender<WorkerStatus>,
}

impl Worker {
    pub fn new(config: WorkerConfig) -> Self {
        Worker {
            config,
            handlers: Vec::new(),
            instance_id: identity::new_instance_id(),
            worker_id: OnceLock::new(),
            status: watch::Sender::new(WorkerStatus::Starting),
        }
    }

    /// Adds the handler for one job type.
    pub fn handler(self, handler: impl JobHandler) -> Self {
        self.handler_arc(Arc::new(handler))
    }

    /// Adds a shared handler for one job type.
    pub fn handler_arc(mut self, handler: Arc<dyn JobHandler>) -> Self {
        self.handlers.push(handler);
        self
    }

    /// This worker's stable id: the configured one, or the one saved in the working
    /// dir, or a new one (saved there now).
    pub fn worker_id(&self) -> Result<String, Error> {
        if let Some(id) = self.worker_id.get() {
            return Ok(id.clone());
        }
        let id = identity::resolve_worker_id(self.config.worker_id.as_deref(), &self.config.working_dir)?;
        Ok(self.worker_id.get_or_init(|| id).clone())
    }

    /// The id of this process start (sent in the hello; never persisted).
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// Follows the connection state; take it before calling [`run`](Self::run).
    pub fn status(&self) -> watch::Receiver<WorkerStatus> {
        self.status.subscribe()
    }

    /// Connects and serves the admin until `shutdown` fires or the admin sends
    /// `shutdown` (both: `Ok` after running work drained), or a fatal error (the admin
    /// rejected the worker, bad configuration or TLS settings). Dropped streams are
    /// retried with exponential backoff and full jitter; running work carries on and
    /// its messages go out on the next stream. With several admin addresses, the worker
    /// moves on at once from one that is down or a standby, and backs off only after a
    /// round of all of them (see the crate docs).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let status = self.status.clone();
        let result = self.serve(shutdown).await;
        if let Err(e) = &result {
            tracing::error!(error = %e, "worker stopped");
        }
        status.send_replace(WorkerStatus::Stopped { error: result.as_ref().err().map(|e| e.to_string()) });
        result
    }

    async fn serve(self, shutdown: CancellationToken) -> Result<(), Error> {
        let worker_id = self.worker_id()?;
        let (handlers, capabilities) = register(&self.handlers)?;
        let dialers = Dialer::list(&self.config.admin, self.config.tls.clone(), self.config.token.clone())?;
        let (outbox, mut outbox_rx) = mpsc::channel(OUTBOX_CAPACITY);
        let max_delay = self.config.max_reconnect_delay;
        let shared = Arc::new(Shared {
            worker_id,
            instance_id: self.instance_id,
            slots: Slots::new(&capabilities),
            handlers,
            capabilities,
            config: self.config,
            tracker: Tracker::default(),
            outbox,
            draining: CancellationToken::new(),
            status: self.status,
        });
        tracing::info!(worker_id = %shared.worker_id, admin = %shared.config.admin, "worker starting");
        let _running_reports = AbortOnDrop(tokio::spawn(execution::report_long_running(shared.clone())));

        let mut backoff = Backoff::new(INITIAL_RECONNECT_DELAY, max_delay);
        let mut rotation = Rotation::new(dialers.len());
        let mut carry = VecDeque::new();
        let mut failures = 0u32;
        // A standby answered in this round: the group is up and a leader is at most one
        // lease away, so the round's wait is short instead of the growing backoff.
        let mut standby_seen = false;
        loop {
            if shutdown.is_cancelled() || shared.draining.is_cancelled() {
                drain_offline(&shared, &mut outbox_rx).await;
                return Ok(());
            }
            let dialer = &dialers[rotation.current()];
            shared.status.send_replace(WorkerStatus::Connecting { attempt: failures + 1 });
            let mut cx = SessionContext {
                shared: &shared,
                dialer,
                outbox: &mut outbox_rx,
                carry: &mut carry,
                stop: &shutdown,
                accepted: None,
            };
            let result = session::run(&mut cx).await;
            let accepted = cx.accepted.take();
            let error = match result {
                Ok(()) => return Ok(()),
                Err(e) if e.is_fatal() => return Err(e),
                Err(e) => e,
            };
            if shutdown.is_cancelled() || shared.draining.is_cancelled() {
                continue;
            }
            let leader = named_leader(&dialers, &error);
            let (pace, why) = match accepted {
                Some(hello) => {
                    let base = u64::try_from(hello.reconnect_delay_seconds).ok().filter(|s| *s > 0);
                    backoff.reset(base.map_or(INITIAL_RECONNECT_DELAY, Duration::from_secs));
                    failures = 0;
                    standby_seen = false;
                    (rotation.ended(leader), "the session ended")
                }
                None if error.is_not_the_leader() => {
                    standby_seen = true;
                    (rotation.failed(leader), "not the leader")
                }
                None => (rotation.failed(leader), "no session"),
            };
            failures += 1;
            let next = dialers[rotation.current()].label();
            if pace == Pace::Now {
                tracing::info!(admin = %dialer.label(), %why, error = %error, %next, "trying the next admin address");
                shared.status.send_replace(WorkerStatus::Disconnected {
                    error: error.to_string(),
                    retry_in: Duration::ZERO,
                    failures,
                });
                continue;
            }
            let retry_in = if std::mem::take(&mut standby_seen) { standby_round_delay() } else { backoff.next_delay() };
            if dialers.len() == 1 {
                tracing::warn!(error = %error, ?retry_in, "no stream to the admin; retrying");
            } else {
                tracing::warn!(
                    admin = %dialer.label(), %why, error = %error, ?retry_in, %next,
                    "no admin address gave a session this round; retrying"
                );
            }
            shared.status.send_replace(WorkerStatus::Disconnected { error: error.to_string(), retry_in, failures });
            tokio::select! {
                _ = tokio::time::sleep(retry_in) => {}
                _ = shutdown.cancelled() => {}
            }
        }
    }
}

/// The wait after a round in which a standby answered (no leader yet, but one is coming
/// within a lease): a quarter to one second, jittered so the workers spread out.
fn standby_round_delay() -> Duration {
    Duration::from_millis(250 + (crate::random::unit() * 750.0) as u64)
}

/// The index of the admin address a not-the-leader answer named, when it is one of ours.
fn named_leader(dialers: &[Dialer], error: &Error) -> Option<usize> {
    let hint = error.leader_hint()?;
    let index = dialers.iter().position(|d| d.is_at(hint));
    if index.is_none() && dialers.len() > 1 {
        tracing::info!(leader = %hint, "the admin named a leader that is not among the admin addresses");
    }
    index
}

/// Handlers by job type, and their capabilities, checked: at least one handler, valid
/// and distinct job type names.
#[allow(clippy::type_complexity)]
fn register(
    handlers: &[Arc<dyn JobHandler>],
) -> Result<(HashMap<String, Arc<dyn JobHandler>>, Vec<crate::pb::JobTypeCapability>), Error> {
    if handlers.is_empty() {
        return Err(Error::Config("no job handlers registered".into()));
    }
    let mut by_type = HashMap::new();
    let mut capabilities = Vec::new();
    for handler in handlers {
        let capability = handler.capability();
        let name = capability.job_type.clone();
        let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !valid {
            return Err(Error::Config(format!("job type {name:?} must match ^[A-Za-z0-9_.-]+$")));
        }
        if by_type.insert(name.clone(), handler.clone()).is_some() {
            return Err(Error::Config(format!("two handlers for job type {name}")));
        }
        capabilities.push(capability);
    }
    Ok((by_type, capabilities))
}

/// Shutdown without a stream: refuse nothing (nothing can arrive), give running work
/// the local grace period, cancel the rest, and wait for it. Its messages have nowhere
/// to go and are dropped so that no task waits on a full outbox.
async fn drain_offline(shared: &Shared, outbox: &mut mpsc::Receiver<Body>) {
    shared.draining.cancel();
    shared.status.send_replace(WorkerStatus::Draining);
    let grace = shared.config.shutdown_grace;
    let wait = async {
        if tokio::time::timeout(grace, shared.tracker.idle()).await.is_err() {
            let n = shared.tracker.cut_short_all("worker is shutting down");
            tracing::info!(canceled = n, "shutdown grace period over; canceled running work");
            shared.tracker.idle().await;
        }
    };
    let discard = async {
        while let Some(body) = outbox.recv().await {
            tracing::debug!(?body, "dropping a message: no stream during shutdown");
        }
    };
    tokio::select! {
        _ = wait => {}
        _ = discard => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_that_met_a_standby_waits_a_quarter_to_one_second() {
        for _ in 0..1000 {
            let d = standby_round_delay();
            assert!(d >= Duration::from_millis(250) && d <= Duration::from_millis(1000), "{d:?}");
        }
    }
}
