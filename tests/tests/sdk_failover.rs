//! Workers follow the leader: a worker given several admin addresses (one leader, the
//! others standbys refusing streams with "not the leader", or down) attaches to the
//! leader, tries each address once per round, moves on at once from a standby or a
//! dead address, and after the leader steps down moves to the new one. Fake admins
//! over real gRPC on 127.0.0.1 play the standbys; their shared journal gives the order
//! of the worker's attempts. Events and deadlines only: no sleeps.

use std::sync::{Arc, Mutex};

use proto::pb;
use tests::{
    TempDir,
    fake_admin::{Attempt, DEADLINE, FakeAdmin, FakeSession},
    within,
};
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};
use worker_sdk::{
    CancellationToken, CapabilityExt, Descriptor, DetectionSender, Error, HandlerResult, JobHandler, ProgressSender,
    Worker, WorkerConfig, WorkerStatus, capability,
};

struct Idle;

#[worker_sdk::async_trait]
impl JobHandler for Idle {
    fn capability(&self) -> pb::JobTypeCapability {
        capability("failover_job", "Failover job").detect(1).execute(1)
    }

    fn descriptor(&self) -> pb::JobTypeDescriptor {
        Descriptor::new("failover_job", "Failover job").build()
    }

    async fn detect(&self, _: pb::RunDetectionRequest, _: DetectionSender, _: CancellationToken) -> HandlerResult<()> {
        Ok(())
    }

    async fn execute(
        &self,
        _: pb::ExecuteJobRequest,
        _: ProgressSender,
        _: CancellationToken,
    ) -> HandlerResult<pb::JobResult> {
        Ok(pb::JobResult::default())
    }
}

struct RunningWorker {
    _dir: TempDir,
    shutdown: CancellationToken,
    run: JoinHandle<Result<(), Error>>,
    status: watch::Receiver<WorkerStatus>,
}

impl RunningWorker {
    fn start(admins: &[String]) -> Self {
        let dir = TempDir::new("sdk-failover");
        let mut config = WorkerConfig::new(admins.join(", "), dir.path());
        config.shutdown_grace = std::time::Duration::ZERO;
        let worker = Worker::new(config).handler(Idle);
        let status = worker.status();
        let shutdown = CancellationToken::new();
        let run = tokio::spawn(worker.run(shutdown.clone()));
        RunningWorker { _dir: dir, shutdown, run, status }
    }

    async fn connected(&mut self) {
        within(
            "the worker to be connected",
            DEADLINE,
            self.status.wait_for(|s| matches!(s, WorkerStatus::Connected { .. })),
        )
        .await
        .expect("the worker publishes its status");
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let result = within("run() to return", DEADLINE, self.run).await.expect("run() does not panic");
        result.expect("run() ends with Ok on shutdown");
    }
}

/// The next stream `admin` took: its hello, answered with an accept (1 s heartbeat and
/// reconnect delay).
async fn accept(admin: &mut FakeAdmin) -> FakeSession {
    let mut session = admin.next_session().await;
    session.expect_hello().await;
    session.accept(1, 1).await;
    session
}

async fn next_attempt(journal: &mut mpsc::UnboundedReceiver<Attempt>) -> Attempt {
    within("a stream call", DEADLINE, journal.recv()).await.expect("the fake admins keep the journal open")
}

fn refused(admin: &str) -> Attempt {
    Attempt { admin: admin.into(), refused: true }
}

fn opened(admin: &str) -> Attempt {
    Attempt { admin: admin.into(), refused: false }
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn the_worker_skips_a_standby_and_follows_the_leader_when_it_steps_down() {
    let (journal_tx, mut journal) = mpsc::unbounded_channel();
    let mut a = FakeAdmin::plain().await;
    let mut b = FakeAdmin::plain().await;
    a.record_attempts("a", journal_tx.clone());
    b.record_attempts("b", journal_tx);
    a.set_standby(None);

    let mut worker = RunningWorker::start(&[a.grpc_url(), b.grpc_url()]);
    let session = accept(&mut b).await;
    worker.connected().await;
    assert_eq!(next_attempt(&mut journal).await, refused("a"));
    assert_eq!(next_attempt(&mut journal).await, opened("b"));
    assert!(journal.try_recv().is_err(), "nothing else was tried");

    // b loses its lease with no successor yet: its stream ends with "not the leader", and
    // both refuse, round after round, each once per round, a first (the next address).
    b.set_standby(None);
    let mut seen = Vec::new();
    while seen.len() < 4 {
        seen.push(next_attempt(&mut journal).await);
    }
    assert_eq!(seen, vec![refused("a"), refused("b"), refused("a"), refused("b")]);
    drop(session);

    // a wins the election: the worker attaches there, still alternating until then.
    a.set_leader();
    let _session = accept(&mut a).await;
    worker.connected().await;
    let mut last = seen.last().cloned().expect("attempts seen");
    loop {
        let attempt = next_attempt(&mut journal).await;
        let expected = if last.admin == "a" { "b" } else { "a" };
        assert_eq!(attempt.admin, expected, "one attempt per admin per round, in turn");
        if !attempt.refused {
            assert_eq!(attempt, opened("a"));
            break;
        }
        last = attempt;
    }
    assert!(journal.try_recv().is_err(), "nothing was tried after the session opened");
    worker.stop().await;
}

#[tokio::test]
async fn a_standby_that_names_the_leader_sends_the_worker_there_next() {
    let (journal_tx, mut journal) = mpsc::unbounded_channel();
    let a = FakeAdmin::plain().await;
    let mut b = FakeAdmin::plain().await;
    let mut c = FakeAdmin::plain().await;
    for (label, admin) in [("a", &a), ("b", &b), ("c", &c)] {
        admin.record_attempts(label, journal_tx.clone());
    }
    a.set_standby(Some(&c.addr().to_string()));
    b.set_standby(None);

    let mut worker = RunningWorker::start(&[a.grpc_url(), b.grpc_url(), c.grpc_url()]);
    let mut session = accept(&mut c).await;
    worker.connected().await;
    assert_eq!(next_attempt(&mut journal).await, refused("a"));
    assert_eq!(next_attempt(&mut journal).await, opened("c"), "b is skipped: a named c");

    // c steps down naming b (which has taken over): the worker goes to b, not to a.
    b.set_leader();
    c.set_standby(Some(&b.addr().to_string()));
    let _session = accept(&mut b).await;
    assert_eq!(next_attempt(&mut journal).await, opened("b"));
    session.expect_closed(DEADLINE).await;
    worker.connected().await;
    worker.stop().await;
}

#[tokio::test]
async fn when_the_leader_goes_away_the_worker_moves_to_the_next_address_at_once() {
    let (journal_tx, mut journal) = mpsc::unbounded_channel();
    let mut a = FakeAdmin::plain().await;
    let mut b = FakeAdmin::plain().await;
    a.record_attempts("a", journal_tx.clone());
    b.record_attempts("b", journal_tx);

    let mut worker = RunningWorker::start(&[a.grpc_url(), b.grpc_url()]);
    let _first = accept(&mut a).await;
    worker.connected().await;
    assert_eq!(next_attempt(&mut journal).await, opened("a"));

    // a's process ends (its streams end with UNAVAILABLE, its port closes); b takes over.
    a.stop().await;
    let _second = accept(&mut b).await;
    assert_eq!(next_attempt(&mut journal).await, opened("b"), "b took the stream");
    worker.connected().await;
    worker.stop().await;
}

/// `worker_sdk` log events at info level and above, in order: (message, `admin` field).
type Events = Arc<Mutex<Vec<(String, String)>>>;

thread_local! {
    /// Where the events of the test running on this thread go.
    static SINK: std::cell::RefCell<Option<Events>> = const { std::cell::RefCell::new(None) };
}

/// Collects this thread's `worker_sdk` events from now on. A test's worker runs on the
/// test's thread (a current-thread runtime), so that is all of its worker's events. The
/// collecting subscriber is this binary's global one (its tests call no
/// `init_tracing`): a thread-local subscriber misses events whose callsites another
/// thread's subscriber registered first.
fn capture_events() -> Events {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        use tracing_subscriber::layer::SubscriberExt;
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Capture))
            .expect("no other global subscriber in this test binary");
    });
    let events = Events::default();
    SINK.with(|sink| *sink.borrow_mut() = Some(events.clone()));
    events
}

struct Capture;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let meta = event.metadata();
        if !meta.target().starts_with("worker_sdk") || *meta.level() > tracing::Level::INFO {
            return;
        }
        #[derive(Default)]
        struct Fields {
            message: String,
            admin: String,
        }
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                match field.name() {
                    "message" => self.message = format!("{value:?}"),
                    "admin" => self.admin = format!("{value:?}"),
                    _ => {}
                }
            }
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        SINK.with(|sink| {
            if let Some(events) = &*sink.borrow() {
                events.lock().unwrap().push((fields.message, fields.admin));
            }
        });
    }
}

#[tokio::test]
async fn a_dead_first_address_costs_no_backoff_before_the_second() {
    let captured = capture_events();
    let mut leader = FakeAdmin::plain().await;
    let dead = format!("grpc://127.0.0.1:{}", closed_port());
    let mut worker = RunningWorker::start(&[dead.clone(), leader.grpc_url()]);
    let _session = accept(&mut leader).await;
    worker.connected().await;

    let events = captured.lock().unwrap().clone();
    let connected = events
        .iter()
        .position(|(m, _)| m == "connected to the admin")
        .unwrap_or_else(|| panic!("the connect was logged: {events:#?}"));
    let started = events.iter().position(|(m, _)| m == "worker starting").expect("the start was logged");
    let before: Vec<_> = events[started + 1..connected].iter().collect();
    assert_eq!(
        before,
        vec![&("trying the next admin address".to_string(), dead.clone())],
        "one move from the dead address, and no backoff, before the session: {events:#?}"
    );
    assert_eq!(events[connected].1, format!("http://{}", leader.addr()), "connected to the second address");
    worker.stop().await;
}
