//! The admin's components, assembled: a handle to each, built once at start with the
//! handles it needs. Each component owns its state behind its own private lock; none
//! takes another's. HTTP handlers and the gRPC service hold a `Components` and talk to
//! the components through their methods and the command layer (`commands.rs`).

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU16, Ordering},
};

use tokio_util::sync::CancellationToken;

use crate::{
    audit::AuditTrail,
    auth::Auth,
    clock::SharedClock,
    cluster_context::ClusterContextSource,
    commands::RunNowLimiter,
    config::AdminConfig,
    config_store::ConfigStore,
    dispatcher::{Dispatcher, DispatcherParts},
    events::EventBus,
    holds::{HoldKind, Holds},
    ids::Ids,
    journal::Journal,
    liveness::Liveness,
    monitor::Monitor,
    registry::Registry,
    scheduler::{Scheduler, SchedulerParts},
    schedules::Schedules,
    schema::{SchemaCoordinator, SchemaParts},
    store::{Loaded, Store},
    trends::Trends,
};

pub struct Components {
    pub config: AdminConfig,
    pub auth: Arc<Auth>,
    pub clock: SharedClock,
    /// The cluster context every detection and execution request carries.
    pub cluster_context: Arc<ClusterContextSource>,
    pub registry: Arc<Registry>,
    pub configs: Arc<ConfigStore>,
    pub schemas: SchemaCoordinator,
    pub scheduler: Scheduler,
    pub dispatcher: Dispatcher,
    pub store: Arc<Store>,
    pub events: Arc<EventBus>,
    pub monitor: Arc<Monitor>,
    pub journal: Journal,
    pub ids: Arc<Ids>,
    /// Operators' holds: pauses, per-type holds, drains.
    pub holds: Holds,
    /// Cron schedules.
    pub schedules: Schedules,
    /// What workers observed about their objects, and previews in flight.
    pub observations: crate::observations::Observations,
    pub audit: AuditTrail,
    /// The charts' series per job type, fed by the event bus (`trends.rs`).
    pub trends: Arc<Trends>,
    /// Files returned by job runs, kept per job (`artifacts.rs`).
    pub artifacts: Arc<crate::artifacts::Artifacts>,
    pub(crate) run_now: RunNowLimiter,
    /// Cancelled when the admin begins to stop: no new dispatches or detections.
    pub shutdown: CancellationToken,
    ready: AtomicBool,
    /// The gRPC port workers should dial (after binding, so port 0 resolves).
    grpc_port: AtomicU16,
    /// Whether this admin may still act as the leader (always, with SQLite).
    pub lease: Arc<crate::ha::LeaseGate>,
    /// With PostgreSQL: this term's epoch and the group's lease counters.
    ha: std::sync::OnceLock<crate::ha::Term>,
    /// On a standby's read-only view: what the pages say about it.
    standby: std::sync::OnceLock<String>,
}

impl Components {
    /// Wires the components over an opened config store and state store. Returns how many
    /// jobs that were out on executors when the admin stopped were requeued.
    pub fn assemble(
        config: AdminConfig,
        auth: Arc<Auth>,
        clock: SharedClock,
        configs: Arc<ConfigStore>,
        store: Arc<Store>,
        events: Arc<EventBus>,
        mut loaded: Loaded,
    ) -> (Components, usize) {
        let registry = Arc::new(Registry::with_clock(config.heartbeat_interval, clock.clone()));
        let lease = crate::ha::LeaseGate::always();
        let monitor = Arc::new(Monitor::default());
        let ids = Arc::new(Ids::new(loaded.next_run_id));
        let journal = Journal::new(store.clone(), clock.clone(), loaded.next_activity_id);
        let audit = AuditTrail::new(store.clone(), clock.clone(), loaded.next_audit_id);
        let holds = Holds::new(std::mem::take(&mut loaded.holds));
        for worker_id in holds.targets(HoldKind::Drain) {
            registry.set_draining(&worker_id, true);
        }
        let schedules = Schedules::new(std::mem::take(&mut loaded.schedules));
        let shutdown = CancellationToken::new();
        // Before the dispatcher: it may finish jobs (stopped ones) as it loads them.
        let trends = Trends::new(clock.clone());
        if events.observe_with(trends.clone()).is_err() {
            tracing::warn!("the event bus already has an observer; the trends follow nothing");
        }
        let cluster_context = Arc::new(ClusterContextSource::new(
            crate::cluster_context::from_flags(
                &config.master_addresses,
                &config.filer_addresses,
                &config.cluster_metadata,
            ),
            config.cluster_context_file.clone(),
        ));
        let (dispatcher, requeued) = Dispatcher::new(
            DispatcherParts {
                registry: registry.clone(),
                configs: configs.clone(),
                store: store.clone(),
                journal: journal.clone(),
                monitor: monitor.clone(),
                clock: clock.clone(),
                ids: ids.clone(),
                holds: holds.clone(),
                cancel_grace: config.cancel_grace,
                send_timeout: config.send_timeout,
                cluster_context: cluster_context.clone(),
                stopping: shutdown.clone(),
                lease: lease.clone(),
            },
            &mut loaded,
        );
        let scheduler = Scheduler::new(SchedulerParts {
            registry: registry.clone(),
            configs: configs.clone(),
            dispatcher: dispatcher.clone(),
            store: store.clone(),
            journal: journal.clone(),
            monitor: monitor.clone(),
            clock: clock.clone(),
            ids: ids.clone(),
            holds: holds.clone(),
            schedules: schedules.clone(),
            first_detection_delay: config.first_detection_delay,
            send_timeout: config.send_timeout,
            cluster_context: cluster_context.clone(),
            stopping: shutdown.clone(),
            limits: config.limits.clone(),
        });
        let schemas = SchemaCoordinator::new(SchemaParts {
            registry: registry.clone(),
            configs: configs.clone(),
            events: events.clone(),
            journal: journal.clone(),
            scheduler: scheduler.clone(),
            clock: clock.clone(),
            ids: ids.clone(),
            send_timeout: config.send_timeout,
        });
        let run_now_max = config.run_now_max;
        let artifacts = Arc::new(crate::artifacts::Artifacts::new(&config.data_dir, config.artifacts.clone()));
        let components = Components {
            config,
            auth,
            clock,
            cluster_context,
            registry,
            configs,
            schemas,
            scheduler,
            dispatcher,
            store,
            events,
            monitor,
            journal,
            ids,
            holds,
            schedules,
            observations: Default::default(),
            audit,
            trends,
            artifacts,
            run_now: RunNowLimiter::new(run_now_max),
            shutdown,
            ready: AtomicBool::new(false),
            grpc_port: AtomicU16::new(0),
            lease,
            ha: std::sync::OnceLock::new(),
            standby: std::sync::OnceLock::new(),
        };
        (components, requeued)
    }

    /// The audit trail's bounds, from the config.
    pub fn audit_retention(&self) -> crate::audit::AuditRetention {
        crate::audit::AuditRetention {
            days: self.config.audit_retention_days,
            max_events: self.config.audit_max_events,
            archive_dir: self.config.audit_archive_dir.clone(),
        }
    }

    /// The liveness checker over this admin's workers.
    pub fn liveness(&self) -> Liveness {
        Liveness::new(self.registry.clone(), self.events.clone(), self.clock.clone())
    }

    pub fn is_stopping(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && !self.is_stopping()
    }

    pub(crate) fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    pub fn grpc_port(&self) -> u16 {
        self.grpc_port.load(Ordering::Relaxed)
    }

    pub(crate) fn set_grpc_port(&self, port: u16) {
        self.grpc_port.store(port, Ordering::Relaxed);
    }

    /// With PostgreSQL: the term this admin leads in (None with SQLite).
    pub fn term(&self) -> Option<&crate::ha::Term> {
        self.ha.get()
    }

    pub(crate) fn set_term(&self, term: crate::ha::Term) {
        let _ = self.ha.set(term);
    }

    /// On a standby's read-only view of the store, the words the pages show about it
    /// ("standby; the leader is ..."); None on an admin that serves.
    pub fn standby(&self) -> Option<&str> {
        self.standby.get().map(String::as_str)
    }

    pub(crate) fn set_standby(&self, words: String) {
        let _ = self.standby.set(words);
    }
}
