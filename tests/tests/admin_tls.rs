//! The admin's worker listener with mutual TLS: a real SDK worker with a client
//! certificate from the right CA attaches and runs a job; one without a certificate never
//! gets a session.

use std::time::Duration;

use tests::{TempDir, certs::TestPki, harness::TestAdmin, wait_for};
use worker_sdk::{WorkerStatus, prelude::*, tls::TlsConfig};

struct Once;

#[worker_sdk::async_trait]
impl JobHandler for Once {
    fn capability(&self) -> pb::JobTypeCapability {
        capability("secure", "Secure").detect(1).execute(1)
    }
    fn descriptor(&self) -> pb::JobTypeDescriptor {
        Descriptor::new("secure", "Secure").build()
    }
    async fn detect(
        &self,
        _r: pb::RunDetectionRequest,
        out: DetectionSender,
        _c: CancellationToken,
    ) -> HandlerResult<()> {
        out.send(vec![pb::JobProposal { dedupe_key: "one".into(), ..Default::default() }]).await?;
        Ok(())
    }
    async fn execute(
        &self,
        _r: pb::ExecuteJobRequest,
        _p: ProgressSender,
        _c: CancellationToken,
    ) -> HandlerResult<pb::JobResult> {
        Ok(pb::JobResult::default())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sdk_worker_with_a_client_certificate_runs_jobs_through_an_mtls_admin_and_one_without_is_refused() {
    let pki = TestPki::generate();
    let dir = TempDir::new("mtls");
    let files = dir.path().join("pki");
    std::fs::create_dir_all(&files).unwrap();
    for (name, pem) in
        [("ca.pem", &pki.ca_pem), ("server.pem", &pki.server.cert_pem), ("server.key", &pki.server.key_pem)]
    {
        std::fs::write(files.join(name), pem).unwrap();
    }
    let data = dir.path().join("data");
    let admin = TestAdmin::start(&data, |c| {
        c.grpc_tls = Some(admin::TlsFiles {
            cert: files.join("server.pem"),
            key: files.join("server.key"),
            client_ca: Some(files.join("ca.pem")),
        })
    })
    .await;

    let anonymous_dir = TempDir::new("mtls-anon");
    let mut anonymous = WorkerConfig::new(format!("grpcs://{}", admin.grpc), anonymous_dir.path());
    anonymous.tls = Some(TlsConfig::new(pki.ca_pem.clone()).server_name("localhost"));
    anonymous.max_reconnect_delay = Duration::from_millis(200);
    let anon_worker = Worker::new(anonymous).handler(Once);
    let mut anon_status = anon_worker.status();
    let anon_stop = CancellationToken::new();
    let anon_task = tokio::spawn(anon_worker.run(anon_stop.clone()));
    // Deterministic: wait until the worker has failed to connect twice.
    tests::within("two refused attempts", Duration::from_secs(30), async {
        loop {
            if let WorkerStatus::Disconnected { failures, .. } = &*anon_status.borrow_and_update()
                && *failures >= 2
            {
                return;
            }
            anon_status.changed().await.unwrap();
        }
    })
    .await;
    assert!(admin.get("/api/plugin/workers").await.as_array().unwrap().is_empty());
    anon_stop.cancel();
    let _ = anon_task.await;

    let work = TempDir::new("mtls-worker");
    let mut config = WorkerConfig::new(format!("grpcs://{}", admin.grpc), work.path());
    config.tls = Some(
        TlsConfig::new(pki.ca_pem.clone())
            .client_identity(pki.client.cert_pem.clone(), pki.client.key_pem.clone())
            .server_name("localhost"),
    );
    let stop = CancellationToken::new();
    let task = tokio::spawn(Worker::new(config).handler(Once).run(stop.clone()));
    wait_for("the job ran over mTLS", Duration::from_secs(30), || async {
        let jobs = admin.jobs("job_type=secure").await;
        (jobs.len() == 1 && jobs[0]["state"] == "job_state_succeeded").then_some(())
    })
    .await;
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_given_the_https_address_finds_the_grpc_port_and_attaches_over_tls() {
    let pki = TestPki::generate();
    let dir = TempDir::new("https");
    let files = dir.path().join("pki");
    std::fs::create_dir_all(&files).unwrap();
    for (name, pem) in
        [("ca.pem", &pki.ca_pem), ("server.pem", &pki.server.cert_pem), ("server.key", &pki.server.key_pem)]
    {
        std::fs::write(files.join(name), pem).unwrap();
    }
    let tls = admin::TlsFiles { cert: files.join("server.pem"), key: files.join("server.key"), client_ca: None };
    let admin = TestAdmin::start(&dir.path().join("data"), |c| {
        c.grpc_tls = Some(tls.clone());
        c.http_tls = Some(tls.clone());
    })
    .await;
    // Plain HTTP is not served on a TLS listener.
    let plain = tokio::time::timeout(Duration::from_secs(5), async {
        let mut s = tokio::net::TcpStream::connect(&admin.http).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        buf
    })
    .await
    .unwrap_or_default();
    assert!(!String::from_utf8_lossy(&plain).contains("200 OK"));

    let work = TempDir::new("https-worker");
    let mut config = WorkerConfig::new(format!("https://{}", admin.http), work.path());
    config.tls = Some(TlsConfig::new(pki.ca_pem.clone()).server_name("localhost"));
    let stop = CancellationToken::new();
    let task = tokio::spawn(Worker::new(config).handler(Once).run(stop.clone()));
    wait_for("worker attached and job ran", Duration::from_secs(30), || async {
        let n = admin.components().registry.len();
        let done = admin.components().dispatcher.count_of("secure", pb::JobState::Succeeded);
        (n == 1 && done == 1).then_some(())
    })
    .await;
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sdk_worker_with_a_wrong_token_stops_with_a_fatal_error_instead_of_retrying() {
    let dir = TempDir::new("bad-token");
    let admin = TestAdmin::start(&dir.path().join("data"), |c| c.worker_tokens = vec!["right".into()]).await;
    let work = TempDir::new("bad-token-worker");
    let mut config = WorkerConfig::new(format!("grpc://{}", admin.grpc), work.path());
    config.token = Some("wrong".into());
    let result = tests::within(
        "the worker gives up",
        Duration::from_secs(30),
        Worker::new(config).handler(Once).run(CancellationToken::new()),
    )
    .await;
    let err = result.expect_err("a refused token ends run()");
    assert!(err.is_fatal(), "{err}");
    admin.stop().await;
}
