//! High availability: several admins share one PostgreSQL store and one of them leads.
//!
//! - **One leader at a time, fenced.** The admins compete for the lease row
//!   ([`lease`]). Only the holder serves workers, schedules, dispatches and accepts
//!   commands: it runs an ordinary [`Admin`] term whose store fences every batch with the
//!   lease's epoch, so a former leader that was paused or cut off cannot commit anything
//!   after another admin took over, even before it notices.
//! - **A leader that cannot renew stops first.** The [`LeaseGate`] closes a fifth of the
//!   time to live before the lease could expire by this admin's clock; the dispatcher
//!   checks it before each pass and again before its messages go out. When the lease is
//!   lost (not renewed by then, taken over, or a write refused by the fence), the term
//!   steps down: worker streams are closed with "not the leader", uncommitted writes are
//!   dropped, and the admin becomes a standby again.
//! - **Standbys** ([`standby`]) keep both listeners: their HTTP side answers reads from
//!   the database and says who leads; mutations get 503 with the leader's address; their
//!   gRPC side refuses every call with `UNAVAILABLE` "not the leader", with the metadata
//!   `plughost-role: standby` and `plughost-leader: <the leader's gRPC address>`, so
//!   workers given several addresses move on at once.
//! - **Takeover** is an ordinary start from the store: jobs that were out on the old
//!   leader's workers were never written as running, so they load as pending and are
//!   dispatched again without using an attempt, as after a restart.

pub mod lease;
mod standby;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use serde::Serialize;
use tokio::{sync::watch, task::JoinHandle, time::Instant};
use tokio_util::sync::CancellationToken;

use self::lease::{Held, Lease, LeaseState};
use crate::{
    AdminConfig,
    clock::SharedClock,
    components::Components,
    config::StoreLocation,
    server::{Admin, AdminError, Prepared},
    store::PgTarget,
};

/// gRPC metadata that says a refusal came from a standby.
pub const ROLE_HEADER: &str = "plughost-role";
/// gRPC metadata with the leader's gRPC address, when a standby knows it.
pub const LEADER_HEADER: &str = "plughost-leader";

/// Whether this admin may still act as the leader. With SQLite it always may; with
/// PostgreSQL until the deadline its last lease renewal gives (this process's monotonic
/// clock, which a `SIGSTOP` does not stop).
#[derive(Debug)]
pub struct LeaseGate {
    base: std::time::Instant,
    /// Nanoseconds after `base`; `u64::MAX`: no deadline; 0: revoked.
    until: AtomicU64,
}

impl LeaseGate {
    pub fn always() -> Arc<LeaseGate> {
        Arc::new(LeaseGate { base: std::time::Instant::now(), until: AtomicU64::new(u64::MAX) })
    }

    /// Moves the deadline to `deadline` (a renewal).
    pub fn extend(&self, deadline: Instant) {
        let nanos = deadline.into_std().saturating_duration_since(self.base).as_nanos();
        self.until.store(u64::try_from(nanos).unwrap_or(u64::MAX - 1).max(1), Ordering::Release);
    }

    /// Closes the gate for good (the term is over).
    pub fn revoke(&self) {
        self.until.store(0, Ordering::Release);
    }

    pub fn holds(&self) -> bool {
        match self.until.load(Ordering::Acquire) {
            u64::MAX => true,
            0 => false,
            until => (self.base.elapsed().as_nanos() as u64) < until,
        }
    }
}

/// What this admin knows of the group, for the status API, `/readyz` and the pages.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct GroupView {
    /// `leader` or `standby`.
    pub role: &'static str,
    /// The lease's epoch: this admin's while it leads, else the last one seen.
    pub epoch: i64,
    /// The leader's advertised HTTP and gRPC addresses (empty while nobody leads).
    pub leader_http: String,
    pub leader_grpc: String,
    /// The database answered the last lease query.
    pub database_reachable: bool,
    /// The last lease or database error, when there was one since it last answered.
    pub error: Option<String>,
}

/// The state this admin keeps across its terms: what it knows of the group, and the lease
/// counters the metrics show.
#[derive(Debug)]
pub struct Group {
    view: Mutex<GroupView>,
    changed: watch::Sender<u64>,
    pub acquisitions: AtomicU64,
    pub losses: AtomicU64,
}

impl Group {
    fn new() -> Arc<Group> {
        Arc::new(Group {
            view: Mutex::new(GroupView {
                role: "standby",
                epoch: 0,
                leader_http: String::new(),
                leader_grpc: String::new(),
                database_reachable: false,
                error: None,
            }),
            changed: watch::channel(0).0,
            acquisitions: AtomicU64::new(0),
            losses: AtomicU64::new(0),
        })
    }

    pub fn view(&self) -> GroupView {
        self.view.lock().expect("group view lock").clone()
    }

    fn update(&self, f: impl FnOnce(&mut GroupView)) {
        let mut view = self.view.lock().expect("group view lock");
        let before = view.clone();
        f(&mut view);
        if *view != before {
            drop(view);
            self.changed.send_modify(|n| *n += 1);
        }
    }

    /// Changes to the view (a counter).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// One term as leader: its epoch, and the group it belongs to.
#[derive(Debug, Clone)]
pub struct Term {
    pub epoch: i64,
    pub group: Arc<Group>,
}

/// The status a standby (or a leader stepping down) answers worker calls with.
pub fn not_leader(reason: &str, leader_grpc: Option<&str>) -> tonic::Status {
    let message = match leader_grpc.filter(|l| !l.is_empty()) {
        Some(leader) => format!("not the leader: {reason}; the leader is {leader}"),
        None => format!("not the leader: {reason}"),
    };
    let mut status = tonic::Status::unavailable(message);
    status.metadata_mut().insert(ROLE_HEADER, tonic::metadata::MetadataValue::from_static("standby"));
    if let Some(value) = leader_grpc.filter(|l| !l.is_empty()).and_then(|l| l.parse().ok()) {
        status.metadata_mut().insert(LEADER_HEADER, value);
    }
    status
}

/// The lease's metrics: whether this admin leads, the epoch, and how often it took and
/// lost the lease since it started.
pub fn lease_metrics(group: &Group) -> Vec<crate::monitor::MetricFamily> {
    use crate::monitor::{MetricFamily, MetricKind};
    let view = group.view();
    vec![
        MetricFamily::new("plughost_leader", MetricKind::Gauge, "1 while this admin holds the leader lease, else 0")
            .with(&[], if view.role == "leader" { 1.0 } else { 0.0 }),
        MetricFamily::new(
            "plughost_lease_epoch",
            MetricKind::Gauge,
            "the leader lease's epoch, as this admin last saw it",
        )
        .with(&[], view.epoch as f64),
        MetricFamily::new(
            "plughost_lease_acquisitions_total",
            MetricKind::Counter,
            "times this admin took the leader lease",
        )
        .with(&[], group.acquisitions.load(Ordering::Relaxed) as f64),
        MetricFamily::new(
            "plughost_lease_losses_total",
            MetricKind::Counter,
            "times this admin lost the leader lease and stepped down",
        )
        .with(&[], group.losses.load(Ordering::Relaxed) as f64),
    ]
}

/// The Prometheus text a standby serves: the lease's metrics.
pub(crate) fn metrics_text(group: &Group) -> String {
    crate::monitor::MetricsSnapshot { metrics: lease_metrics(group) }.to_prometheus()
}

/// An admin that is one of several on one PostgreSQL store: a standby until it takes the
/// lease, then the leader until it loses it or stops.
pub struct HaAdmin {
    prepared: Arc<Prepared>,
    group: Arc<Group>,
    leader: watch::Receiver<Option<Arc<Components>>>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl HaAdmin {
    /// Binds both listeners and starts competing for the lease; returns at once, as a
    /// standby (it becomes the leader in the background).
    pub async fn start(config: AdminConfig, clock: SharedClock) -> Result<HaAdmin, AdminError> {
        let StoreLocation::Postgres { url, ca } = &config.store else {
            return Err(AdminError::Task { what: "high availability", message: "needs a PostgreSQL store".into() });
        };
        let target = PgTarget::parse(url, ca.as_deref()).map_err(|source| crate::store::StoreError::Backend {
            path: crate::store::postgres::redacted(url).into(),
            source,
        })?;
        let prepared = Arc::new(Prepared::open(&config, &clock).await?);
        let http = config.advertise_http.clone().unwrap_or_else(|| prepared.http_addr.to_string());
        let grpc = advertised_grpc(&http, prepared.grpc_addr);
        let holder = format!("{}:{}:{}", hostname(), std::process::id(), crate::random::hex(8));
        let lease = Lease::new(holder, config.lease_ttl, http, grpc);
        let group = Group::new();
        let (leader_tx, leader) = watch::channel(None);
        let stop = CancellationToken::new();
        let campaign = Campaign {
            config,
            clock,
            prepared: prepared.clone(),
            target,
            lease,
            group: group.clone(),
            leader: leader_tx,
            stop: stop.clone(),
            db: None,
        };
        let task = tokio::spawn(campaign.run());
        Ok(HaAdmin { prepared, group, leader, stop, task })
    }

    pub fn http_addr(&self) -> std::net::SocketAddr {
        self.prepared.http_addr
    }

    pub fn grpc_addr(&self) -> std::net::SocketAddr {
        self.prepared.grpc_addr
    }

    pub fn group(&self) -> &Arc<Group> {
        &self.group
    }

    /// The components of the current term while this admin leads.
    pub fn leader(&self) -> watch::Receiver<Option<Arc<Components>>> {
        self.leader.clone()
    }

    /// When this start created the first admin token: where it is.
    pub fn sign_in_hint(&self) -> Option<String> {
        let token = self.prepared.first_token.as_ref()?;
        Some(format!("first start: an admin token was created ({token}); sign in at /plugin/login with it"))
    }

    /// Stops: a leader finishes its term as a single admin would (tells its workers,
    /// flushes the store) and gives the lease up at once, so a standby need not wait for
    /// it to expire.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// The gRPC address to advertise: the advertised HTTP host with the gRPC listener's port.
fn advertised_grpc(http: &str, grpc: std::net::SocketAddr) -> String {
    let authority = http.split("://").last().unwrap_or(http).trim_end_matches('/');
    match authority.rsplit_once(':') {
        Some((host, _)) if !host.is_empty() => format!("{host}:{}", grpc.port()),
        _ => grpc.to_string(),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "admin".into())
}

/// How a term ended.
enum Ended {
    /// The admin is stopping.
    Stop,
    /// The lease is gone, or may be: step down.
    Lost(String),
}

struct Campaign {
    config: AdminConfig,
    clock: SharedClock,
    prepared: Arc<Prepared>,
    target: PgTarget,
    lease: Lease,
    group: Arc<Group>,
    leader: watch::Sender<Option<Arc<Components>>>,
    stop: CancellationToken,
    /// The lease's own connection (not the store's), made again after an error.
    db: Option<tokio_postgres::Client>,
}

impl Campaign {
    /// How often a standby looks at the lease.
    fn poll(&self) -> Duration {
        (self.lease.ttl() / 10).clamp(Duration::from_millis(100), Duration::from_secs(1))
    }

    async fn run(mut self) {
        loop {
            let Some(held) = self.stand_by().await else { return };
            self.group.acquisitions.fetch_add(1, Ordering::Relaxed);
            let term = Term { epoch: held.epoch, group: self.group.clone() };
            let deadline = self.lease.must_stop_by(&held);
            self.group.update(|v| {
                v.role = "leader";
                v.epoch = held.epoch;
                v.leader_http = self.lease.http_addr().to_string();
                v.leader_grpc = self.lease.grpc_addr().to_string();
            });
            tracing::info!(epoch = held.epoch, "took the leader lease");
            // Loading a large store can take longer than the lease: keep renewing meanwhile.
            let start = Admin::start_term(
                self.config.clone(),
                self.clock.clone(),
                self.prepared.clone(),
                Some((term, deadline)),
            );
            tokio::pin!(start);
            let mut held = held;
            let started = loop {
                let deadline = self.lease.must_stop_by(&held);
                if Instant::now() >= deadline {
                    // Too late to keep it: the term steps down as soon as it has started.
                    break (&mut start).await;
                }
                tokio::select! {
                    started = &mut start => break started,
                    _ = tokio::time::sleep_until((held.since + self.lease.renew_every()).min(deadline)) => {}
                }
                // A failed renewal is not acted on here: the term's first check sees the
                // deadline passed, or the lease taken, and steps down.
                if let Ok(Ok(Some(renewed))) = tokio::time::timeout_at(deadline, self.renew(&held)).await {
                    held = renewed;
                }
            };
            let admin = match started {
                Ok(admin) => {
                    admin.components().lease.extend(self.lease.must_stop_by(&held));
                    admin
                }
                Err(error) => {
                    tracing::error!(error = %error, "cannot start as the leader; giving the lease up");
                    self.release(&held).await;
                    self.group.update(|v| v.error = Some(format!("cannot start as the leader: {error}")));
                    tokio::select! {
                        _ = self.stop.cancelled() => return,
                        _ = tokio::time::sleep(self.lease.ttl()) => continue,
                    }
                }
            };
            let _ = self.leader.send(Some(admin.components().clone()));
            let ended = self.lead(held, &admin).await;
            let _ = self.leader.send(None);
            match ended {
                Ended::Stop => {
                    let epoch = admin.components().term().map(|t| t.epoch);
                    admin.shutdown().await;
                    if let Some(epoch) = epoch {
                        self.release(&Held { epoch, since: Instant::now() }).await;
                    }
                    return;
                }
                Ended::Lost(reason) => {
                    self.group.losses.fetch_add(1, Ordering::Relaxed);
                    self.group.update(|v| {
                        v.role = "standby";
                        v.error = Some(reason.clone());
                        // Not this admin any more; the next look at the lease says who.
                        (v.leader_http, v.leader_grpc) = (String::new(), String::new());
                    });
                    admin.step_down(&reason).await;
                }
            }
        }
    }

    /// Serves as a standby until this admin takes the lease (`None`: it is stopping).
    async fn stand_by(&mut self) -> Option<Held> {
        self.group.update(|v| v.role = "standby");
        let server = match standby::serve(
            &self.prepared,
            &self.config,
            self.clock.clone(),
            self.group.clone(),
            self.target.clone(),
        ) {
            Ok(server) => server,
            Err(error) => {
                tracing::error!(error = %error, "cannot serve as a standby");
                return None;
            }
        };
        let held = loop {
            match self.try_acquire().await {
                Ok(Some(held)) => break Some(held),
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(error = %error, "leader lease: database unreachable");
                    self.db = None;
                    self.group.update(|v| {
                        v.database_reachable = false;
                        v.error = Some(error);
                    });
                }
            }
            tokio::select! {
                _ = self.stop.cancelled() => break None,
                _ = tokio::time::sleep(self.poll()) => {}
            }
        };
        server.stop().await;
        held
    }

    /// Connects the lease's connection unless it is up.
    async fn connect(&mut self) -> Result<(), String> {
        if self.db.as_ref().is_none_or(|c| c.is_closed()) {
            let client = tokio::time::timeout(self.lease.ttl(), self.target.connect())
                .await
                .map_err(|_| format!("no connection to {} within {:?}", self.target.redacted(), self.lease.ttl()))?
                .map_err(|e| e.to_string())?;
            crate::store::postgres::ensure_lease_table(&client).await.map_err(|e| e.to_string())?;
            self.db = Some(client);
        }
        Ok(())
    }

    async fn try_acquire(&mut self) -> Result<Option<Held>, String> {
        let ttl = self.lease.ttl();
        self.connect().await?;
        let client = self.db.as_ref().expect("connected");
        let attempt = async {
            if let Some(held) = self.lease.try_acquire(client).await? {
                return Ok(Some((held, None)));
            }
            Ok::<_, lease::LeaseError>(Some((Held { epoch: 0, since: Instant::now() }, lease::current(client).await?)))
        };
        let outcome = tokio::time::timeout(ttl, attempt)
            .await
            .map_err(|_| format!("the lease query took longer than {ttl:?}"))?
            .map_err(|e| e.to_string())?;
        match outcome {
            Some((held, None)) => Ok(Some(held)),
            Some((_, Some(state))) => {
                self.seen(&state);
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    fn seen(&self, state: &LeaseState) {
        self.group.update(|v| {
            v.database_reachable = true;
            v.error = None;
            v.epoch = state.epoch;
            (v.leader_http, v.leader_grpc) = if state.live {
                (state.http_addr.clone(), state.grpc_addr.clone())
            } else {
                (String::new(), String::new())
            };
        });
    }

    /// Leads until the admin stops or the lease is lost: renews it every third of its
    /// time to live, moving the dispatcher's deadline with each renewal.
    async fn lead(&mut self, mut held: Held, admin: &Admin) -> Ended {
        let components = admin.components().clone();
        let mut fenced = components.store.fenced();
        let mut retry_at = None;
        loop {
            let deadline = self.lease.must_stop_by(&held);
            let next = retry_at.unwrap_or(held.since + self.lease.renew_every()).min(deadline);
            tokio::select! {
                _ = self.stop.cancelled() => return Ended::Stop,
                changed = fenced.changed() => {
                    if changed.is_err() || *fenced.borrow() {
                        return Ended::Lost("the store refused a write: another admin holds the lease".into());
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(next) => {}
            }
            if Instant::now() >= deadline {
                return Ended::Lost("the leader lease could not be renewed in time".into());
            }
            let renewed = match tokio::time::timeout_at(deadline, self.renew(&held)).await {
                Ok(renewed) => renewed,
                Err(_) => return Ended::Lost("the leader lease could not be renewed in time".into()),
            };
            match renewed {
                Ok(Some(renewed)) => {
                    held = renewed;
                    retry_at = None;
                    components.lease.extend(self.lease.must_stop_by(&held));
                    self.group.update(|v| {
                        v.database_reachable = true;
                        v.error = None;
                    });
                }
                Ok(None) => return Ended::Lost("another admin took the leader lease".into()),
                Err(error) => {
                    tracing::warn!(error = %error, "cannot renew the leader lease; retrying");
                    self.db = None;
                    self.group.update(|v| {
                        v.database_reachable = false;
                        v.error = Some(error);
                    });
                    retry_at = Some(Instant::now() + self.poll());
                }
            }
        }
    }

    async fn renew(&mut self, held: &Held) -> Result<Option<Held>, String> {
        self.connect().await?;
        let client = self.db.as_ref().expect("connected");
        self.lease.renew(client, held).await.map_err(|e| e.to_string())
    }

    async fn release(&mut self, held: &Held) {
        let done = async {
            self.connect().await?;
            let client = self.db.as_ref().expect("connected");
            self.lease.release(client, held).await.map_err(|e| e.to_string())
        };
        match tokio::time::timeout(Duration::from_secs(5), done).await {
            Ok(Ok(())) => tracing::info!(epoch = held.epoch, "gave the leader lease up"),
            Ok(Err(error)) => tracing::warn!(error = %error, "cannot give the leader lease up; it expires by itself"),
            Err(_) => tracing::warn!("cannot give the leader lease up in time; it expires by itself"),
        }
    }
}

#[cfg(test)]
mod tests;
