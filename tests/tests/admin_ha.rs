//! High availability on PostgreSQL, with real admin processes, a real PostgreSQL server
//! and a real SDK worker given every admin's address: a standby takes over from a leader
//! killed mid-run (no job lost, none succeeding twice, attempts untouched), a paused
//! leader is fenced and steps down, a standby answers mutations with 503 and the
//! leader's address, and a database that goes away stops the admin until it returns.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::Value;
use tests::{
    certs::TestCa,
    harness::{AdminProcess, data_dir, free_port},
    http,
    postgres::{PgServer, database},
    wait_for,
};
use worker_sdk::prelude::*;

const JOBS: usize = 40;

fn bin() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_plughost-under-test"))
}

/// One admin of the group: a process on its own data dir, on PostgreSQL, with a 2 s lease.
struct Member {
    process: AdminProcess,
    _dir: tests::TempDir,
}

impl Member {
    fn spawn(url: &str, name: &str) -> Member {
        Member::spawn_with(url, name, &[])
    }

    fn spawn_with(url: &str, name: &str, extra: &[&str]) -> Member {
        let (dir, data) = data_dir(&format!("ha-{name}"));
        let (http_port, grpc_port) = (free_port(), free_port());
        let child = std::process::Command::new(bin())
            .args(["admin", "--data-dir"])
            .arg(&data)
            .args(["--http-addr", &format!("127.0.0.1:{http_port}"), "--grpc-addr", &format!("127.0.0.1:{grpc_port}")])
            .args(["--heartbeat-seconds", "1", "--store", url, "--lease-seconds", "2"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn plughost admin");
        let process = AdminProcess {
            child,
            http: format!("127.0.0.1:{http_port}"),
            grpc: std::net::SocketAddr::from(([127, 0, 0, 1], grpc_port)),
        };
        Member { process, _dir: dir }.with_token(&data)
    }

    fn with_token(self, data: &std::path::Path) -> Member {
        // The admin writes its first token before it listens.
        let token = data.join("plugin").join("admin.token");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !token.exists() {
            assert!(std::time::Instant::now() < deadline, "no admin token at {}", token.display());
            std::thread::sleep(Duration::from_millis(20));
        }
        http::register_admin_token(&self.process.http, data);
        self
    }

    fn http(&self) -> &str {
        &self.process.http
    }

    async fn status(&self) -> Option<Value> {
        let r = http::try_get(self.http(), "/api/plugin/status").await?;
        (r.status == 200).then(|| r.json())
    }

    /// Waits until this admin stands by and names `leader` as the leader.
    async fn wait_standby_behind(&self, leader: &Member) -> Value {
        let what = format!("{} to stand by behind {}", self.http(), leader.http());
        wait_for(&what, Duration::from_secs(60), || async {
            self.status().await.filter(|s| s["role"] == "standby" && s["leader_http"] == leader.http())
        })
        .await
    }

    /// Waits until this admin says it has `role`; returns its status.
    async fn wait_role(&self, role: &str) -> Value {
        wait_for(&format!("{} to be {role}", self.http()), Duration::from_secs(60), || async {
            self.status().await.filter(|s| s["role"] == role)
        })
        .await
    }

    fn signal(&self, signal: &str) {
        let ok = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.process.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success(), "kill -{signal}");
    }
}

/// Proposes JOBS jobs in its first detection only; records every execution by job.
struct Batch {
    proposed: std::sync::atomic::AtomicBool,
    executions: Arc<Mutex<HashMap<String, usize>>>,
    delay: Duration,
}

#[worker_sdk::async_trait]
impl JobHandler for Batch {
    fn capability(&self) -> pb::JobTypeCapability {
        capability("batch", "Batch").detect(1).execute(2)
    }

    fn descriptor(&self) -> pb::JobTypeDescriptor {
        Descriptor::new("batch", "Batch").runtime(Runtime::default().interval_minutes(600).retry_limit(0)).build()
    }

    async fn detect(
        &self,
        _r: pb::RunDetectionRequest,
        out: DetectionSender,
        _c: CancellationToken,
    ) -> HandlerResult<()> {
        if self.proposed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        let proposals = (0..JOBS)
            .map(|i| pb::JobProposal {
                dedupe_key: format!("item-{i}"),
                summary: format!("item {i}"),
                ..Default::default()
            })
            .collect();
        out.send(proposals).await?;
        Ok(())
    }

    async fn execute(
        &self,
        r: pb::ExecuteJobRequest,
        progress: ProgressSender,
        cancel: CancellationToken,
    ) -> HandlerResult<pb::JobResult> {
        let key = r.job.map(|j| j.dedupe_key).unwrap_or_default();
        *self.executions.lock().unwrap().entry(key).or_default() += 1;
        progress.progress(50.0, "working", "").await;
        tokio::select! {
            _ = tokio::time::sleep(self.delay) => {}
            _ = cancel.cancelled() => return Err("canceled".into()),
        }
        Ok(pb::JobResult { summary: "ok".into(), ..Default::default() })
    }
}

/// A running SDK worker: executions by dedupe key, its stop, its task and its dir.
type RunningWorker = (
    Arc<Mutex<HashMap<String, usize>>>,
    CancellationToken,
    tokio::task::JoinHandle<Result<(), worker_sdk::Error>>,
    tests::TempDir,
);

fn start_worker(members: &[&Member], delay: Duration) -> RunningWorker {
    let work = tests::TempDir::new("ha-worker");
    let admins: Vec<String> = members.iter().map(|m| format!("grpc://{}", m.process.grpc)).collect();
    let mut config = WorkerConfig::new(admins.join(","), work.path());
    config.max_reconnect_delay = Duration::from_secs(1);
    let executions = Arc::new(Mutex::new(HashMap::new()));
    let shutdown = CancellationToken::new();
    let worker =
        Worker::new(config).handler(Batch { proposed: Default::default(), executions: executions.clone(), delay });
    let task = tokio::spawn(worker.run(shutdown.clone()));
    (executions, shutdown, task, work)
}

async fn jobs(http_addr: &str) -> Vec<Value> {
    let r = http::get(http_addr, "/api/plugin/jobs?limit=1000").await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json().as_array().cloned().unwrap()
}

async fn succeeded(http_addr: &str) -> usize {
    jobs(http_addr).await.iter().filter(|j| j["state"] == "job_state_succeeded").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_from_a_killed_leader_and_every_job_succeeds_exactly_once() {
    let url = database("failover");
    let a = Member::spawn(&url, "a");
    let status = a.wait_role("leader").await;
    assert_eq!(status["epoch"], 1, "{status}");
    let mut b = Member::spawn(&url, "b");
    let standby = b.wait_standby_behind(&a).await;
    assert_eq!(standby["epoch"], 1, "{standby}");

    // A standby refuses changes with the leader's address, and is not ready.
    let r = http::post_json(b.http(), "/api/plugin/dispatch/pause", &serde_json::json!({})).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["leader"], format!("http://{}", a.http()));
    assert!(r.json()["error"].as_str().unwrap().contains("standby; the leader is http://"), "{}", r.text());
    let ready = http::get(b.http(), "/readyz").await;
    assert_eq!(ready.status, 503);
    assert!(ready.text().contains("standby"), "{}", ready.text());

    // The worker is given the standby first: it moves on to the leader at once.
    let (executions, shutdown, worker, _work) = start_worker(&[&b, &a], Duration::from_millis(200));
    let a_http = a.http().to_string();
    wait_for("a few jobs done on the first leader", Duration::from_secs(60), || async {
        (succeeded(&a_http).await >= 5).then_some(())
    })
    .await;
    // A config saved on the leader is the next leader's: the job types live in the database.
    let config = http::get(a.http(), "/api/plugin/job-types/batch/config").await.json();
    let mut runtime = config["admin_runtime"].clone();
    runtime["detection_timeout_seconds"] = serde_json::json!(4321);
    let r = http::put_json(
        a.http(),
        "/api/plugin/job-types/batch/config",
        &serde_json::json!({ "admin_runtime": runtime }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The standby shows it too (its view reads the database).
    let b_http = b.http().to_string();
    wait_for("the standby's view to show the saved config", Duration::from_secs(30), || async {
        let c = http::get(&b_http, "/api/plugin/job-types/batch/config").await;
        (c.status == 200 && c.json()["admin_runtime"]["detection_timeout_seconds"] == 4321).then_some(())
    })
    .await;
    // A page's event stream open on the standby ends when the standby takes over (its
    // read-only view is shut down with it).
    let mut stream = http::Sse::open(b.http(), "/api/plugin/events", None).await;
    let mut a = a;
    a.process.kill();

    let status = b.wait_role("leader").await;
    assert_eq!(status["epoch"], 2, "the takeover bumped the epoch: {status}");
    let ended = tests::within("the standby's event stream to end", Duration::from_secs(30), async {
        while stream.next().await.is_some() {}
    });
    ended.await;
    let config = http::get(b.http(), "/api/plugin/job-types/batch/config").await.json();
    assert_eq!(config["admin_runtime"]["detection_timeout_seconds"], 4321, "saved on the old leader: {config}");
    let finished = wait_for("every job finished on the new leader", Duration::from_secs(120), || async {
        let j = jobs(&b_http).await;
        (j.len() == JOBS && j.iter().all(|j| j["state"] == "job_state_succeeded")).then_some(j)
    })
    .await;
    let keys: std::collections::HashSet<&str> = finished.iter().map(|j| j["dedupe_key"].as_str().unwrap()).collect();
    assert_eq!(keys.len(), JOBS, "no job lost, none doubled");
    for j in &finished {
        assert_eq!(j["attempt"], 1, "the failover used no attempt: {j}");
    }
    let runs = executions.lock().unwrap().clone();
    assert_eq!(runs.len(), JOBS, "every job ran");
    let workers = http::get(b.http(), "/api/plugin/workers").await.json();
    assert_eq!(workers.as_array().unwrap().len(), 1, "the worker followed the new leader: {workers}");
    let metrics = http::get(b.http(), "/metrics").await.text();
    assert!(metrics.contains("plughost_lease_acquisitions_total 1"), "{metrics}");
    assert!(metrics.contains("plughost_leader 1"), "{metrics}");
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(20), worker).await;
    b.process.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_is_fenced_out_and_steps_down_when_it_resumes() {
    let url = database("fence");
    let a = Member::spawn(&url, "a");
    a.wait_role("leader").await;
    let b = Member::spawn(&url, "b");
    b.wait_standby_behind(&a).await;
    let (executions, shutdown, worker, _work) = start_worker(&[&a, &b], Duration::from_millis(300));
    let a_http = a.http().to_string();
    wait_for("jobs running on the first leader", Duration::from_secs(60), || async {
        (succeeded(&a_http).await >= 3).then_some(())
    })
    .await;

    a.signal("STOP");
    let status = b.wait_role("leader").await;
    assert_eq!(status["epoch"], 2, "{status}");
    a.signal("CONT");
    // The old leader finds its lease gone (or its next write refused), steps down, and
    // names the new leader.
    let status = a.wait_standby_behind(&b).await;
    assert_eq!(status["epoch"], 2, "{status}");
    let b_http = b.http().to_string();
    let metrics = http::get(a.http(), "/metrics").await.text();
    assert!(metrics.contains("plughost_lease_losses_total 1"), "{metrics}");
    assert!(metrics.contains("plughost_leader 0"), "{metrics}");

    let finished = wait_for("every job finished on the new leader", Duration::from_secs(120), || async {
        let j = jobs(&b_http).await;
        (j.len() == JOBS && j.iter().all(|j| j["state"] == "job_state_succeeded")).then_some(j)
    })
    .await;
    let keys: std::collections::HashSet<&str> = finished.iter().map(|j| j["dedupe_key"].as_str().unwrap()).collect();
    assert_eq!(keys.len(), JOBS, "no job lost, none doubled");
    // The standby's reads come from the database (a view at most a few seconds old): the
    // same jobs through the JSON API, and the pages with a notice naming the leader.
    let a_http = a.http().to_string();
    let from_standby = wait_for("the standby's view to show every job finished", Duration::from_secs(30), || async {
        let r = http::get(&a_http, "/api/plugin/jobs?limit=1000").await;
        assert_eq!(r.status, 200, "{}", r.text());
        let j = r.json().as_array().cloned().unwrap();
        (j.len() == JOBS && j.iter().all(|j| j["state"] == "job_state_succeeded")).then_some(j)
    })
    .await;
    assert_eq!(from_standby.len(), JOBS);
    let one = from_standby[0]["job_id"].as_str().unwrap();
    let job = http::get(a.http(), &format!("/api/plugin/jobs/{one}")).await;
    assert_eq!(job.status, 200, "{}", job.text());
    for page in ["/plugin", "/plugin/jobs", &format!("/plugin/jobs/{one}"), "/plugin/audit"] {
        let r = http::get(a.http(), page).await;
        assert_eq!(r.status, 200, "{page}: {}", r.text());
        assert!(r.text().contains(&format!("standby; the leader is http://{}", b.http())), "{page}: {}", r.text());
    }
    assert_eq!(executions.lock().unwrap().len(), JOBS);
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(20), worker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_goes_away_stops_the_admin_until_it_returns() {
    let server = PgServer::start();
    let a = Member::spawn(&server.url(), "alone");
    a.wait_role("leader").await;
    assert_eq!(http::get(a.http(), "/readyz").await.status, 200);

    server.stop();
    let a_http = a.http().to_string();
    let text = wait_for("/readyz to fail", Duration::from_secs(60), || async {
        let r = http::try_get(&a_http, "/readyz").await?;
        (r.status == 503).then(|| r.text())
    })
    .await;
    assert!(text.contains("not ready"), "{text}");
    let status = a.wait_role("standby").await;
    assert_eq!(status["database_reachable"], false, "{status}");

    server.resume();
    let status = a.wait_role("leader").await;
    assert_eq!(status["epoch"], 2, "it took the lease again: {status}");
    wait_for("/readyz to pass again", Duration::from_secs(60), || async {
        let r = http::try_get(&a_http, "/readyz").await?;
        (r.status == 200).then_some(())
    })
    .await;
    // It dispatches again: a worker's jobs run to the end.
    let (_executions, shutdown, worker, _work) = start_worker(&[&a], Duration::from_millis(10));
    wait_for("every job finished after the database returned", Duration::from_secs(120), || async {
        (succeeded(&a_http).await == JOBS).then_some(())
    })
    .await;
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(20), worker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_connection_uses_tls_verified_against_the_given_ca() {
    let server = PgServer::start();
    let ca = TestCa::new("database CA");
    server.enable_tls(&ca.server(&["127.0.0.1"]));
    let files = tests::TempDir::new("ha-tls");
    let (good, other) = (files.path().join("ca.pem"), files.path().join("other-ca.pem"));
    std::fs::write(&good, ca.cert_pem()).unwrap();
    std::fs::write(&other, TestCa::new("another CA").cert_pem()).unwrap();
    let url = format!("{}?sslmode=require", server.url());

    let a = Member::spawn_with(&url, "tls", &["--store-ca", good.to_str().unwrap()]);
    a.wait_role("leader").await;
    // The server sees the admin's connections (the lease's and the store's) encrypted.
    let encrypted = server.query(
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE s.ssl AND a.pid <> pg_backend_pid() AND a.backend_type = 'client backend'",
    );
    assert!(encrypted.parse::<i64>().unwrap() >= 2, "TLS connections: {encrypted}");
    let plain = server.query(
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE NOT s.ssl AND a.pid <> pg_backend_pid() AND a.backend_type = 'client backend'",
    );
    assert_eq!(plain, "0", "no connection of the admin is in clear");

    // A CA that did not sign the server's certificate: no connection, and it says why.
    let b = Member::spawn_with(&url, "tls-other-ca", &["--store-ca", other.to_str().unwrap()]);
    let status = wait_for("the admin with the wrong CA to report the database", Duration::from_secs(60), || async {
        b.status().await.filter(|s| s["role"] == "standby" && s["error"].as_str().is_some_and(|e| !e.is_empty()))
    })
    .await;
    assert_eq!(status["database_reachable"], false, "{status}");
    let error = status["error"].as_str().unwrap();
    assert!(error.contains("certificate"), "the error names the certificate problem: {error}");
}
