//! Bounded input and connection limits, against a real admin over real gRPC: oversized
//! hellos, proposals, descriptors and messages are refused with a reason and neither kept
//! nor logged in full; stray connections are shed and timed out without taking `/healthz`
//! or established workers down; a worker_id stays with the credential that registered it.
//! (Findings 2, 3, 4, 6 and 7 of the security probe.)

use std::{
    collections::HashMap,
    io::Read,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use proto::pb::{
    self, admin_to_worker_message::Body as AdminBody, plugin_control_service_client::PluginControlServiceClient,
    worker_to_admin_message::Body,
};
use tests::{
    TempDir,
    certs::{CertPair, TestPki},
    fake_worker::{FakeWorker, FakeWorkerSpec, envelope, open_stream, proposal},
    harness::{TestAdmin, free_port},
    http, wait_for, within,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::mpsc,
};
use tokio_stream::wrappers::ReceiverStream;

const T: &str = "limited";
const WAIT: Duration = Duration::from_secs(30);

type Stream = (mpsc::Sender<pb::WorkerToAdminMessage>, tonic::Streaming<pb::AdminToWorkerMessage>);

fn hello(worker_id: &str) -> pb::WorkerHello {
    pb::WorkerHello {
        worker_id: worker_id.into(),
        worker_instance_id: format!("{worker_id}-1"),
        address: "127.0.0.1:0".into(),
        protocol_version: proto::PROTOCOL_VERSION.into(),
        ..Default::default()
    }
}

fn capability(job_type: &str) -> pb::JobTypeCapability {
    pb::JobTypeCapability { job_type: job_type.into(), can_detect: true, can_execute: true, ..Default::default() }
}

/// Sends `hello` on an open stream and returns the admin's answer.
async fn say_hello(stream: &mut Stream, hello: pb::WorkerHello) -> pb::AdminHello {
    let id = hello.worker_id.clone();
    stream.0.send(envelope(&id, Body::Hello(hello))).await.expect("send hello");
    let reply = within("admin hello", WAIT, stream.1.message()).await.expect("admin stream").expect("a reply");
    match reply.body {
        Some(AdminBody::Hello(h)) => h,
        other => panic!("expected AdminHello, got {other:?}"),
    }
}

/// Waits for the stream to end and returns how (the status, or `None` for a clean end).
async fn ended(rx: &mut tonic::Streaming<pb::AdminToWorkerMessage>) -> Option<tonic::Status> {
    within("the stream ends", WAIT, async {
        loop {
            match rx.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(status) => return Some(status),
            }
        }
    })
    .await
}

fn job_type_dirs(data: &Path) -> usize {
    std::fs::read_dir(data.join("plugin/job_types")).map(|d| d.count()).unwrap_or(0)
}

/// Whether `bytes` holds a run of `len` copies of `b` (the refused input, in full or near).
fn has_run(bytes: &[u8], b: u8, len: usize) -> bool {
    bytes.windows(len).step_by(len / 2).any(|w| w.iter().all(|x| *x == b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_names_and_too_many_job_types_are_refused_with_a_short_reason_and_create_no_folders() {
    let dir = TempDir::new("limits-hello");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;

    let mut long_name = hello("w-long-name");
    long_name.capabilities = vec![capability(&"n".repeat(3 << 20))];
    let mut many = hello("w-many");
    many.capabilities = (0..300).map(|i| capability(&format!("t{i}"))).collect();
    let mut long_id = hello(&"i".repeat(10_000));
    long_id.capabilities = vec![capability(T)];
    let mut metadata = hello("w-metadata");
    metadata.metadata = (0..100).map(|i| (format!("k{i}"), "v".to_string())).collect::<HashMap<_, _>>();
    let mut long_version = hello("w-version");
    long_version.worker_version = "v".repeat(100_000);

    let cases = [
        (long_name, "3145728 bytes"),
        (many, "300 job types, over the limit of 256"),
        (long_id, "worker_id is 10000 bytes, over the limit of 256"),
        (metadata, "100 metadata entries, over the limit of 64"),
        (long_version, "worker_version is 100000 bytes"),
    ];
    for (h, expected) in cases {
        let mut stream = open_stream(admin.grpc, None).await.expect("open stream");
        let reply = say_hello(&mut stream, h).await;
        assert!(!reply.accepted);
        assert!(reply.message.contains(expected), "{}", reply.message);
        assert!(reply.message.len() < 300, "the reason does not echo the input: {} bytes", reply.message.len());
        ended(&mut stream.1).await;
    }
    assert!(admin.components().registry.is_empty(), "no refused worker was registered");
    assert_eq!(job_type_dirs(dir.path()), 0, "no job type folder for a refused hello");
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proposal_over_the_parameter_limit_is_recorded_as_invalid_with_its_reason_and_never_stored() {
    let dir = TempDir::new("limits-proposal");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let spec = FakeWorkerSpec::new("w1", T, 1).detect(|_| {
        let mut big = proposal("big");
        let blob = pb::ConfigValue { kind: Some(pb::config_value::Kind::StringValue("P".repeat(200 * 1024))) };
        big.parameters.insert("blob".into(), blob);
        vec![vec![proposal("small"), big]]
    });
    // Parked so the created job stays put for the check.
    let _w = FakeWorker::start(admin.grpc, spec.exec(|_| tests::fake_worker::Exec::Ignore)).await;
    let c = admin.components().clone();
    let latest = wait_for("the detection's proposals", WAIT, || async {
        let l = c.scheduler.latest_proposals(T);
        (l.len() == 2).then_some(l)
    })
    .await;
    assert_eq!(latest[0].outcome, "created");
    assert_eq!(latest[1].outcome, "invalid");
    assert!(latest[1].reason.contains("over the limit of 65536"), "{}", latest[1].reason);
    let run = wait_for("the detection's run recorded", WAIT, || async {
        c.scheduler.scheduler_states().into_iter().find(|s| s.job_type == T).and_then(|s| s.last_run)
    })
    .await;
    assert!(run.message.contains("1 refused as invalid"), "{}", run.message);
    assert_eq!(run.jobs_created, 1);
    admin.stop().await;
    let mut stored = Vec::new();
    for f in ["state.db", "state.db-wal"] {
        if let Ok(mut file) = std::fs::File::open(dir.path().join("plugin").join(f)) {
            file.read_to_end(&mut stored).unwrap();
        }
    }
    assert!(!stored.is_empty());
    assert!(!has_run(&stored, b'P', 4096), "the refused parameters are not in the store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detection_creates_no_more_jobs_than_the_admin_ceiling_whatever_the_descriptor_asks() {
    let dir = TempDir::new("limits-ceiling");
    let admin = TestAdmin::start(dir.path(), |c| c.limits.max_proposals_per_detection = 3).await;
    // The descriptor asks for 1000 jobs per detection; the admin allows 3.
    let spec = FakeWorkerSpec::new("w1", T, 1)
        .detect(|_| vec![(0..10).map(|i| proposal(&format!("k{i}"))).collect()])
        .exec(|_| tests::fake_worker::Exec::Ignore);
    let w = FakeWorker::start(admin.grpc, spec).await;
    let request = w
        .inbox
        .wait_for("a detection request", WAIT, |m| matches!(m.body, Some(AdminBody::RunDetectionRequest(_))))
        .await;
    let Some(AdminBody::RunDetectionRequest(r)) = request.body else { unreachable!() };
    assert_eq!(r.max_results, 3);
    let c = admin.components().clone();
    let outcomes = wait_for("the proposals", WAIT, || async {
        let l = c.scheduler.latest_proposals(T);
        (l.len() == 10).then(|| l.iter().map(|p| p.outcome).collect::<Vec<_>>())
    })
    .await;
    assert_eq!(outcomes.iter().filter(|o| **o == "created").count(), 3, "{outcomes:?}");
    assert_eq!(outcomes.iter().filter(|o| **o == "over_limit").count(), 7, "{outcomes:?}");
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_descriptor_over_the_limits_fails_the_schema_request_with_the_reason_and_is_not_stored() {
    let dir = TempDir::new("limits-descriptor");
    let admin = TestAdmin::start(dir.path(), |c| c.limits.max_descriptor_bytes = 4096).await;
    let mut spec = FakeWorkerSpec::new("w1", T, 1);
    spec.descriptors.get_mut(T).unwrap().description = "d".repeat(10_000);
    let _w = FakeWorker::start(admin.grpc, spec).await;
    let err = admin.components().schemas.refresh_schema(T, true).await.expect_err("refused");
    let message = err.to_string();
    assert!(message.contains("over the limit of 4096"), "{message}");
    assert!(admin.components().configs.descriptor(T).is_none());
    assert_eq!(job_type_dirs(dir.path()), 0);
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_size_limit_ends_the_stream_with_resource_exhausted() {
    let dir = TempDir::new("limits-size");
    let admin = TestAdmin::start(dir.path(), |c| c.max_message_bytes = 64 * 1024).await;

    let mut stream = open_stream(admin.grpc, None).await.unwrap();
    assert!(say_hello(&mut stream, hello("w1")).await.accepted);
    let mut hb = pb::WorkerHeartbeat { worker_id: "w1".into(), ..Default::default() };
    hb.metadata.insert("big".into(), "x".repeat(100 * 1024));
    stream.0.send(envelope("w1", Body::Heartbeat(hb))).await.unwrap();
    let status = ended(&mut stream.1).await.expect("ended with a status");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    let c = admin.components().clone();
    wait_for("the worker is gone", WAIT, || async { c.registry.is_empty().then_some(()) }).await;

    // The same for an over-size hello.
    let mut stream = open_stream(admin.grpc, None).await.unwrap();
    let mut big = hello("w2");
    big.address = "a".repeat(100 * 1024);
    stream.0.send(envelope("w2", Body::Hello(big))).await.unwrap();
    let status = ended(&mut stream.1).await.expect("ended with a status");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_id_bound_to_one_token_cannot_be_taken_over_with_another_even_after_a_restart() {
    let dir = TempDir::new("limits-takeover");
    let tokens = vec!["alpha".to_string(), "beta".to_string(), "gamma@vacuum-*".to_string()];
    let admin = TestAdmin::start(dir.path(), |c| c.worker_tokens = tokens.clone()).await;
    let mut spec = FakeWorkerSpec::new("victim", T, 1).exec(|_| tests::fake_worker::Exec::Ignore);
    spec.token = Some("alpha".into());
    let victim = FakeWorker::start(admin.grpc, spec).await;
    assert!(victim.hello.accepted);
    let session = admin.components().registry.get("victim").expect("registered").session_id;

    let mut thief = open_stream(admin.grpc, Some("beta")).await.unwrap();
    let reply = say_hello(&mut thief, hello("victim")).await;
    assert!(!reply.accepted);
    assert!(reply.message.contains("bound to another credential"), "{}", reply.message);
    let current = admin.components().registry.get("victim").expect("still registered");
    assert_eq!(current.session_id, session, "the victim's stream was not replaced");

    // The same credential may reconnect (and replaces its own stream, as before).
    let mut again = open_stream(admin.grpc, Some("alpha")).await.unwrap();
    assert!(say_hello(&mut again, hello("victim")).await.accepted);

    // A token limited to a pattern registers only matching worker ids.
    let mut other = open_stream(admin.grpc, Some("gamma")).await.unwrap();
    let reply = say_hello(&mut other, hello("archive-1")).await;
    assert!(!reply.accepted && reply.message.contains("not allowed for this worker token"), "{}", reply.message);
    let mut matching = open_stream(admin.grpc, Some("gamma")).await.unwrap();
    assert!(say_hello(&mut matching, hello("vacuum-1")).await.accepted);
    drop((victim, again, matching));
    admin.stop().await;

    let bindings = std::fs::read_to_string(dir.path().join("plugin/worker_bindings.json")).unwrap();
    assert!(!bindings.contains("alpha"), "only fingerprints are stored: {bindings}");
    let admin = TestAdmin::start(dir.path(), |c| c.worker_tokens = tokens.clone()).await;
    let mut thief = open_stream(admin.grpc, Some("beta")).await.unwrap();
    assert!(!say_hello(&mut thief, hello("victim")).await.accepted, "the binding survived the restart");
    admin.stop().await;
}

/// A worker stream over mutual TLS with `client`'s certificate.
async fn open_tls_stream(grpc: SocketAddr, ca_pem: &str, client: &CertPair) -> Stream {
    use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .identity(Identity::from_pem(&client.cert_pem, &client.key_pem))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://{grpc}")).unwrap().tls_config(tls).unwrap().connect().await;
    let mut client = PluginControlServiceClient::new(channel.expect("mTLS connect"));
    let (tx, rx) = mpsc::channel(16);
    let response = client.worker_stream(ReceiverStream::new(rx)).await.expect("stream");
    (tx, response.into_inner())
}

fn write_pki(dir: &Path, pki: &TestPki) -> admin::TlsFiles {
    for (name, pem) in
        [("ca.pem", &pki.ca_pem), ("server.pem", &pki.server.cert_pem), ("server.key", &pki.server.key_pem)]
    {
        std::fs::write(dir.join(name), pem).unwrap();
    }
    admin::TlsFiles { cert: dir.join("server.pem"), key: dir.join("server.key"), client_ca: Some(dir.join("ca.pem")) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_mtls_a_worker_id_stays_with_its_certificate_and_partial_tls_records_are_closed_in_time() {
    let pki = TestPki::generate();
    let dir = TempDir::new("limits-mtls");
    let files = write_pki(dir.path(), &pki);
    let admin = TestAdmin::start(&dir.path().join("data"), |c| {
        c.grpc_tls = Some(files);
        c.connections.handshake_timeout = Duration::from_secs(1);
    })
    .await;

    // Stray connections that send the first byte of a TLS record and stall (no certificate needed).
    let mut strays = Vec::new();
    for _ in 0..50 {
        let mut s = tokio::net::TcpStream::connect(admin.grpc).await.unwrap();
        let _ = s.write_all(&[0x16]).await;
        strays.push(s);
    }
    let victim = pki.client.clone();
    let mut first = open_tls_stream(admin.grpc, &pki.ca_pem, &victim).await;
    assert!(say_hello(&mut first, hello("secure-1")).await.accepted);
    let other = pki.ca.client("another-worker");
    let mut thief = open_tls_stream(admin.grpc, &pki.ca_pem, &other).await;
    let reply = say_hello(&mut thief, hello("secure-1")).await;
    assert!(!reply.accepted && reply.message.contains("bound to another credential"), "{}", reply.message);

    // Timeout plus a margin for a loaded machine; the check is that they close, not when.
    within("every stalled TLS connection is closed", Duration::from_secs(1) + WAIT, async {
        for mut s in strays {
            let mut buf = [0u8; 64];
            while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
        }
    })
    .await;
    assert!(admin.components().registry.get("secure-1").is_some(), "the established worker stays");
    admin.stop().await;
}

/// A real `plughost admin` process with its log in a file and, optionally, a low open-file
/// limit (set by the shell before it execs the admin).
struct LoggedAdmin {
    child: Child,
    http: String,
    grpc: SocketAddr,
    log: PathBuf,
}

impl LoggedAdmin {
    async fn spawn(dir: &Path, nofile: Option<u32>, extra: &[&str]) -> LoggedAdmin {
        let bin = env!("CARGO_BIN_EXE_plughost-under-test");
        let (http_port, grpc_port) = (free_port(), free_port());
        let log = dir.join("admin.log");
        let ulimit = nofile.map(|n| format!("ulimit -n {n} && ")).unwrap_or_default();
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("{ulimit}exec \"$0\" \"$@\""))
            .arg(bin)
            .args(["admin", "--data-dir"])
            .arg(dir.join("data"))
            .args(["--http-addr", &format!("127.0.0.1:{http_port}"), "--grpc-addr", &format!("127.0.0.1:{grpc_port}")])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn the admin");
        let http = format!("127.0.0.1:{http_port}");
        wait_for("the admin process is ready", WAIT, || async {
            let up =
                tokio::net::TcpStream::connect(&http).await.is_ok() && http::get(&http, "/readyz").await.status == 200;
            up.then_some(())
        })
        .await;
        LoggedAdmin { child, http, grpc: SocketAddr::from(([127, 0, 0, 1], grpc_port)), log }
    }

    fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
    }

    fn log(&self) -> Vec<u8> {
        std::fs::read(&self.log).unwrap_or_default()
    }

    fn terminate(&self) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    }
}

impl Drop for LoggedAdmin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_addresses_and_job_type_names_leave_neither_memory_nor_log_behind() {
    let dir = TempDir::new("limits-memory");
    let admin = LoggedAdmin::spawn(dir.path(), None, &[]).await;
    let before = admin.rss_bytes();
    let address = "x".repeat(12 << 20);
    for i in 0..30 {
        let mut h = hello(&format!("w{i}"));
        h.address = address.clone();
        let mut stream = open_stream(admin.grpc, None).await.unwrap();
        let reply = say_hello(&mut stream, h).await;
        assert!(!reply.accepted && reply.message.contains("address is 12582912 bytes"), "{}", reply.message);
    }
    let name = "y".repeat(3 << 20);
    for i in 0..20 {
        let mut h = hello(&format!("n{i}"));
        h.capabilities = vec![capability(&name)];
        let mut stream = open_stream(admin.grpc, None).await.unwrap();
        assert!(!say_hello(&mut stream, h).await.accepted);
    }
    let grown = admin.rss_bytes().saturating_sub(before);
    // Keeping the addresses alone would be 360 MiB; decoding one at a time needs a few tens.
    assert!(grown < 160 << 20, "resident memory grew by {} MiB", grown >> 20);
    let log = admin.log();
    assert!(log.len() < 256 * 1024, "the log grew to {} bytes", log.len());
    assert!(!has_run(&log, b'x', 1024) && !has_run(&log, b'y', 1024), "no refused input is logged in full");
    assert!(String::from_utf8_lossy(&log).contains("worker rejected"), "the refusals are logged");
    assert_eq!(job_type_dirs(&dir.path().join("data")), 0);
}

/// Raises this process's soft open-file limit to its hard limit (the stray connections
/// below need more than a default 1,024).
fn raise_open_files() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let _ = setrlimit(Resource::Nofile, Rlimit { current: limit.maximum, maximum: limit.maximum });
    let now = getrlimit(Resource::Nofile).current;
    assert!(now.is_none_or(|n| n >= 4096), "this test needs 4,096 open files, the hard limit is {now:?}");
}

/// Opens `n` connections to `addr` that each send `first` and then stall.
async fn stall(addr: SocketAddr, n: usize, first: &'static [u8]) -> Vec<tokio::net::TcpStream> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        // A write may fail once the admin shed the connection; that is the point.
        let _ = s.write_all(first).await;
        out.push(s);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_connections_under_a_low_descriptor_limit_keep_healthz_and_workers_up_and_are_closed_in_time() {
    raise_open_files();
    let dir = TempDir::new("limits-stall");
    let timeouts = ["--handshake-timeout-seconds", "2", "--header-read-timeout-seconds", "2"];
    let admin = LoggedAdmin::spawn(dir.path(), Some(512), &timeouts).await;

    // An established worker before the flood.
    let mut worker = open_stream(admin.grpc, None).await.unwrap();
    assert!(say_hello(&mut worker, hello("steady")).await.accepted);

    let http_addr: SocketAddr = admin.http.parse().unwrap();
    let mut strays = stall(http_addr, 550, b"G").await;
    strays.extend(stall(http_addr, 550, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n").await);
    strays.extend(stall(admin.grpc, 1100, b"P").await);

    // While they are open, /healthz answers and a new worker is accepted.
    assert_eq!(http::get(&admin.http, "/healthz").await.status, 200);
    let mut newcomer = open_stream(admin.grpc, None).await.unwrap();
    assert!(say_hello(&mut newcomer, hello("newcomer")).await.accepted);

    // Every stray connection is closed by the admin: the 2 s timeout plus a margin.
    within("every stray connection is closed", Duration::from_secs(2) + WAIT, async {
        for mut s in strays {
            let mut buf = [0u8; 256];
            while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
        }
    })
    .await;
    assert_eq!(http::get(&admin.http, "/healthz").await.status, 200);

    // The established worker's stream survived the flood: it is told about the shutdown.
    admin.terminate();
    within("the steady worker hears the shutdown", WAIT, async {
        loop {
            match worker.1.message().await {
                Ok(Some(m)) if matches!(m.body, Some(AdminBody::Shutdown(_))) => return,
                Ok(Some(_)) => continue,
                other => panic!("the steady worker's stream ended before the shutdown: {other:?}"),
            }
        }
    })
    .await;
    let log = String::from_utf8_lossy(&admin.log()).into_owned();
    assert!(log.contains("connection limit hit"), "the admin says why it sheds connections: {log}");
}
