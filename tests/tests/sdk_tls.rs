//! The worker SDK over TLS: mutual TLS against a fake admin that requires client
//! certificates, and the refusals when a certificate is missing or untrusted.

use proto::pb::{self, admin_to_worker_message::Body as Req, worker_to_admin_message::Body as Msg};
use tests::{
    TempDir,
    certs::{TestCa, TestPki},
    fake_admin::{DEADLINE, FakeAdmin, FakeAdminOptions, ServerTls},
    within,
};
use tokio::{sync::watch, task::JoinHandle};
use worker_sdk::{
    CancellationToken, CapabilityExt, Descriptor, DetectionSender, Error, HandlerResult, JobHandler, ProgressSender,
    TlsConfig, Worker, WorkerConfig, WorkerStatus, capability,
};

/// Does nothing; these tests are about the connection.
struct Idle;

#[worker_sdk::async_trait]
impl JobHandler for Idle {
    fn capability(&self) -> pb::JobTypeCapability {
        capability("idle", "Idle").execute(1)
    }

    fn descriptor(&self) -> pb::JobTypeDescriptor {
        Descriptor::new("idle", "Idle").build()
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

struct Running {
    _dir: TempDir,
    shutdown: CancellationToken,
    status: watch::Receiver<WorkerStatus>,
    run: JoinHandle<Result<(), Error>>,
}

fn start(admin: &str, tls: TlsConfig) -> Running {
    let dir = TempDir::new("sdk-tls");
    let mut config = WorkerConfig::new(admin, dir.path());
    config.tls = Some(tls);
    let worker = Worker::new(config).handler(Idle);
    let status = worker.status();
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(worker.run(shutdown.clone()));
    Running { _dir: dir, shutdown, status, run }
}

async fn mtls_admin(pki: &TestPki) -> FakeAdmin {
    FakeAdmin::start(FakeAdminOptions { tls: Some(ServerTls::from_pki(pki, true)), port: 0 }).await
}

/// Waits until the worker has failed twice to get a session, so at least one full
/// attempt (dial, handshake, stream) ended before the assertions; returns the error.
async fn failed_attempts(worker: &mut Running) -> String {
    let status = within(
        "failed connection attempts",
        DEADLINE,
        worker.status.wait_for(|s| matches!(s, WorkerStatus::Disconnected { failures, .. } if *failures >= 2)),
    )
    .await
    .expect("the worker publishes its status")
    .clone();
    match status {
        WorkerStatus::Disconnected { error, .. } => error,
        other => panic!("expected Disconnected, got {other:?}"),
    }
}

async fn stop(worker: Running) {
    worker.shutdown.cancel();
    within("run() to return", DEADLINE, worker.run)
        .await
        .expect("run() does not panic")
        .expect("run() ends with Ok on shutdown");
}

#[tokio::test]
async fn a_worker_with_a_client_certificate_connects_to_an_mtls_admin() {
    tests::init_tracing();
    let pki = TestPki::generate();
    let mut admin = mtls_admin(&pki).await;
    let tls =
        TlsConfig::new(pki.ca_pem.clone()).client_identity(pki.client.cert_pem.clone(), pki.client.key_pem.clone());
    let worker = start(&admin.grpc_url(), tls);

    let mut session = admin.next_session().await;
    let hello = session.expect_hello().await;
    assert_eq!(hello.capabilities[0].job_type, "idle");
    session.accept(5, 1).await;
    // The stream works both ways over TLS.
    let id = session
        .request(Req::RequestConfigSchema(pb::RequestConfigSchema { job_type: "idle".into(), force_refresh: false }))
        .await;
    let response = session
        .recv_matching("the schema response", DEADLINE, |m| match &m.body {
            Some(Msg::ConfigSchemaResponse(r)) if r.request_id == id => Some(r.clone()),
            _ => None,
        })
        .await;
    assert!(response.success);
    stop(worker).await;
}

#[tokio::test]
async fn a_worker_without_a_client_certificate_is_refused_by_an_mtls_admin() {
    let pki = TestPki::generate();
    let mut admin = mtls_admin(&pki).await;
    let mut worker = start(&admin.grpc_url(), TlsConfig::new(pki.ca_pem.clone()));

    let error = failed_attempts(&mut worker).await;
    assert!(error.starts_with("cannot reach the admin at https://127.0.0.1:"), "{error}");
    assert!(admin.try_next_session().is_none(), "the admin must not see a stream without a client certificate");
    assert!(!worker.run.is_finished(), "a refused handshake is retried, not fatal");
    stop(worker).await;
}

#[tokio::test]
async fn a_worker_that_does_not_trust_the_admins_certificate_does_not_connect() {
    let pki = TestPki::generate();
    let mut admin = mtls_admin(&pki).await;
    let stranger = TestCa::new("some other ca");
    let client = stranger.client("stranger");
    let tls = TlsConfig::new(stranger.cert_pem()).client_identity(client.cert_pem, client.key_pem);
    let mut worker = start(&admin.grpc_url(), tls);

    let error = failed_attempts(&mut worker).await;
    assert!(error.starts_with("cannot reach the admin at https://127.0.0.1:"), "{error}");
    assert!(admin.try_next_session().is_none());
    stop(worker).await;
}

#[tokio::test]
async fn unreadable_tls_settings_stop_the_worker_with_a_fatal_error() {
    let dir = TempDir::new("sdk-tls-bad");
    let mut config = WorkerConfig::new("grpcs://127.0.0.1:1", dir.path());
    config.tls = Some(TlsConfig::new("this is not pem"));
    let err = Worker::new(config).handler(Idle).run(CancellationToken::new()).await.unwrap_err();
    assert!(matches!(err, Error::Tls(_)), "{err}");
    assert!(err.is_fatal());

    let pki = TestPki::generate();
    let err = TlsConfig::from_files(dir.path().join("missing-ca.pem"), None, None).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, &pki.ca_pem).unwrap();
    let tls = TlsConfig::from_files(&ca_path, None, None).unwrap();
    assert_eq!(tls.ca_pem, pki.ca_pem.as_bytes());
}
