//! Helpers shared by the admin's unit tests.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicU64, Ordering},
};

/// The secret box unit tests seal config values with (a fixed key).
pub(crate) fn sealer() -> crate::secret_box::SecretBox {
    crate::secret_box::SecretBox::from_key(&[7; 32], "test key")
}

/// A fresh directory under the system temp dir, removed when dropped. `.0` is its path.
pub(crate) struct TempDir(pub PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "plughost-admin-{tag}-{}-{nanos}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    /// `<dir>/plugin/job_types/<job_type>`, where the config store keeps a job type.
    pub(crate) fn job_dir(&self, job_type: &str) -> PathBuf {
        self.0.join("plugin/job_types").join(job_type)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The spec of a test job: type `t`, dedupe key `key`, normal priority, created at `at`,
/// no parameters, no `not_before` or `expires_at`.
pub(crate) fn spec(key: &str, at: i64) -> crate::job::JobSpecData {
    crate::job::JobSpecData {
        replay_of: 0,
        cluster_context: None,
        job_type: "t".into(),
        dedupe_key: key.into(),
        priority: proto::pb::JobPriority::Normal as i32,
        summary: format!("job {key}").into(),
        detail: Box::default(),
        parameters: Default::default(),
        labels: Default::default(),
        created_at: at,
        not_before: 0,
        expires_at: 0,
        detection_run: 1,
    }
}

/// A descriptor of job type `t` whose admin form has `fields` in one section.
pub(crate) fn descriptor_with(fields: Vec<proto::pb::ConfigField>) -> proto::pb::JobTypeDescriptor {
    use proto::pb;
    pb::JobTypeDescriptor {
        job_type: "t".into(),
        admin_config_form: Some(pb::ConfigForm {
            form_id: "admin".into(),
            sections: vec![pb::ConfigSection { section_id: "s".into(), fields, ..Default::default() }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A full set of components over a real config store and SQLite store in a temp dir,
/// with a manual clock, for tests of one component's behaviour over time.
pub(crate) struct Rig {
    /// Shared, as the gRPC service and the HTTP app hold it.
    pub c: std::sync::Arc<crate::components::Components>,
    pub clock: std::sync::Arc<crate::clock::ManualClock>,
    _dir: TempDir,
}

/// A worker session registered with the rig's registry; `rx` is what the admin sends it.
pub(crate) struct TestWorker {
    pub session: std::sync::Arc<crate::registry::WorkerSession>,
    pub rx: tokio::sync::mpsc::Receiver<crate::registry::Outgoing>,
}

impl Rig {
    pub(crate) const T0: i64 = 1_700_000_000_000;

    /// Components with one job type `t` whose descriptor is stored, and `tweak` applied
    /// to its runtime settings.
    pub(crate) fn new(tweak: impl FnOnce(&mut proto::pb::AdminRuntimeDefaults)) -> Rig {
        Rig::with_config(tweak, |_| {})
    }

    /// [`Rig::new`] with `config` applied to the admin's config as well.
    pub(crate) fn with_config(
        tweak: impl FnOnce(&mut proto::pb::AdminRuntimeDefaults),
        config: impl FnOnce(&mut crate::config::AdminConfig),
    ) -> Rig {
        let dir = TempDir::new("rig");
        let clock = crate::clock::ManualClock::new(Self::T0);
        let rig_config = Self::config(&dir, config);
        Self::save_descriptor(&dir, tweak);
        Self::assemble(dir, clock, rig_config)
    }

    fn config(dir: &TempDir, tweak: impl FnOnce(&mut crate::config::AdminConfig)) -> crate::config::AdminConfig {
        let mut config = crate::config::AdminConfig::ephemeral(&dir.0);
        config.first_detection_delay = std::time::Duration::ZERO;
        tweak(&mut config);
        config
    }

    fn save_descriptor(dir: &TempDir, tweak: impl FnOnce(&mut proto::pb::AdminRuntimeDefaults)) {
        let configs = crate::config_store::ConfigStore::open(&dir.0, sealer()).expect("config store");
        let mut defaults = proto::pb::AdminRuntimeDefaults {
            enabled: true,
            detection_interval_minutes: 10,
            detection_timeout_seconds: 60,
            max_jobs_per_detection: 100,
            global_execution_concurrency: 10,
            retry_limit: 1,
            retry_backoff_seconds: 10,
            execution_timeout_seconds: 60,
            ..Default::default()
        };
        tweak(&mut defaults);
        configs
            .save_descriptor(proto::pb::JobTypeDescriptor {
                job_type: "t".into(),
                descriptor_version: 1,
                admin_runtime_defaults: Some(defaults),
                ..Default::default()
            })
            .expect("descriptor");
    }

    fn assemble(
        dir: TempDir,
        clock: std::sync::Arc<crate::clock::ManualClock>,
        config: crate::config::AdminConfig,
    ) -> Rig {
        use std::sync::Arc;
        let configs = Arc::new(crate::config_store::ConfigStore::open(&dir.0, sealer()).expect("config store"));
        let events = Arc::new(crate::events::EventBus::new(64));
        let (store, loaded) = crate::store::Store::open(&dir.0, events.clone()).expect("store");
        let (auth, _) = crate::auth::Auth::open(&dir.0, crate::auth::AuthMode::On, Self::T0).expect("auth");
        let (c, _) =
            crate::components::Components::assemble(config, auth, clock.clone(), configs, store, events, loaded);
        Rig { c: Arc::new(c), clock, _dir: dir }
    }

    /// The same admin after a stop and a start on the same data dir and clock (what was
    /// queued is committed first; what lived only in memory is gone).
    pub(crate) fn restart(self) -> Rig {
        self.c.store.close();
        let Rig { c, clock, _dir: dir } = self;
        let config = c.config.clone();
        drop(c);
        Self::assemble(dir, clock, config)
    }

    /// A connected worker that can detect and execute `t` with `slots` slots.
    pub(crate) fn worker(&self, id: &str, slots: i32) -> TestWorker {
        use crate::clock::Clock;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let hello = proto::pb::WorkerHello {
            worker_id: id.into(),
            capabilities: vec![proto::pb::JobTypeCapability {
                job_type: "t".into(),
                can_detect: true,
                can_execute: true,
                max_execution_concurrency: slots,
                max_detection_concurrency: 1,
                ..Default::default()
            }],
            ..Default::default()
        };
        let session = std::sync::Arc::new(crate::registry::WorkerSession::new(
            self.c.registry.next_session_id(),
            hello,
            tx,
            self.clock.now_ms(),
        ));
        self.c.registry.register(session.clone());
        TestWorker { session, rx }
    }
}

impl TestWorker {
    /// The next message the admin sent this worker, waiting up to 10 s for it.
    pub(crate) async fn next(&mut self) -> proto::pb::AdminToWorkerMessage {
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), self.rx.recv()).await;
        *got.expect("a message within 10 s").expect("stream open").expect("a message, not an error")
    }

    /// Whether the admin has sent nothing more so far.
    pub(crate) fn is_quiet(&mut self) -> bool {
        self.rx.try_recv().is_err()
    }
}

/// Config values for tests, by kind: `s("x")`, `i(1)`, `d(1.5)`, `b(true)`, `secs(90)`,
/// `strs(&["a"])`, `ints(&[1])`.
pub(crate) mod cv {
    use proto::pb::{self, config_value::Kind};

    pub(crate) fn v(kind: Kind) -> pb::ConfigValue {
        pb::ConfigValue { kind: Some(kind) }
    }
    pub(crate) fn s(x: &str) -> pb::ConfigValue {
        v(Kind::StringValue(x.into()))
    }
    pub(crate) fn i(x: i64) -> pb::ConfigValue {
        v(Kind::Int64Value(x))
    }
    pub(crate) fn d(x: f64) -> pb::ConfigValue {
        v(Kind::DoubleValue(x))
    }
    pub(crate) fn b(x: bool) -> pb::ConfigValue {
        v(Kind::BoolValue(x))
    }
    pub(crate) fn secs(x: i64) -> pb::ConfigValue {
        v(Kind::DurationValue(pb::Duration { seconds: x, nanos: 0 }))
    }
    pub(crate) fn strs(xs: &[&str]) -> pb::ConfigValue {
        v(Kind::StringList(pb::StringList { values: xs.iter().map(|x| x.to_string()).collect() }))
    }
    pub(crate) fn ints(xs: &[i64]) -> pb::ConfigValue {
        v(Kind::Int64List(pb::Int64List { values: xs.to_vec() }))
    }
}

/// A fresh, empty database on the test PostgreSQL server (`PLUGHOST_TEST_POSTGRES`, which
/// `scripts/test` starts), named after `tag`; returns its URL. Each call makes a new one,
/// so tests never see each other's rows.
pub(crate) fn postgres_database(tag: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let server = std::env::var("PLUGHOST_TEST_POSTGRES").expect(
        "PLUGHOST_TEST_POSTGRES is not set: run the tests through ./scripts/test, which starts a PostgreSQL \
         server for them, or set it to a server's URL (postgres://user@host:port/db)",
    );
    let tag: String =
        tag.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
    let name = format!("t_{tag}_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    let create = format!("CREATE DATABASE {name}");
    let url = server.clone();
    // A thread of its own: the caller may be inside a tokio runtime already.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let (client, connection) =
                tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect to the test PostgreSQL");
            let driver = tokio::spawn(connection);
            client.batch_execute(&create).await.expect("create a test database");
            drop(client);
            let _ = driver.await;
        })
    })
    .join()
    .expect("create a test database");
    let (base, _) = server.rsplit_once('/').expect("PLUGHOST_TEST_POSTGRES ends in /<database>");
    format!("{base}/{name}")
}
