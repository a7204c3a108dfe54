//! The Python example worker (`plugins/python-example`, grpcio and the project's
//! proto only), spawned as a real `python3` process against a real admin: it attaches,
//! heartbeats, its descriptor is stored, its detection proposes, its job completes with
//! progress, a cancel from the admin stops its job, and SIGTERM ends it with a clean close
//! of its stream.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::{Value, json};
use tests::{TempDir, harness::TestAdmin, http, plugins, wait_for};

const T: &str = "disk_usage";
const WAIT: Duration = Duration::from_secs(60);

/// A `python3 worker.py` process; killed when dropped. Its log is printed if the test
/// fails.
struct PythonWorker {
    child: Child,
    log: PathBuf,
}

impl PythonWorker {
    fn spawn(admin: &TestAdmin, worker_id: &str, dir: &Path) -> PythonWorker {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/python-example/worker.py");
        let log = dir.join(format!("{worker_id}.log"));
        let child = Command::new("python3")
            .arg(script)
            .args(["--admin", &format!("grpc://{}", admin.grpc), "--worker-id", worker_id])
            .arg("--working-dir")
            .arg(dir.join(worker_id))
            .arg("--stub-dir")
            .arg(dir.join("stubs"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("python3 runs (scripts/test installs plugins/python-example/requirements.txt)");
        PythonWorker { child, log }
    }
}

impl Drop for PythonWorker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- python worker log ---\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
        }
    }
}

async fn worker_view(admin: &TestAdmin, id: &str) -> Option<Value> {
    let workers = admin.get("/api/plugin/workers").await;
    workers.as_array()?.iter().find(|w| w["worker_id"] == id).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_worker_attaches_heartbeats_and_its_descriptor_is_stored() {
    let dir = TempDir::new("python-attach");
    let admin = TestAdmin::start(&dir.path().join("admin"), |_| {}).await;
    let _worker = PythonWorker::spawn(&admin, "py-attach", dir.path());

    let view = wait_for("the python worker attached", WAIT, || worker_view(&admin, "py-attach")).await;
    assert_eq!(view["protocol_version"], "plugin.v1");
    assert_eq!(view["job_types"], json!([T]));
    let descriptor = plugins::wait_descriptor(&admin, T).await;
    assert_eq!(descriptor["display_name"], "Disk usage report (Python)");
    let sections = descriptor["admin_config_form"]["sections"].as_array().unwrap();
    assert_eq!(sections.len(), 2);
    assert_eq!(sections[0]["fields"][0]["name"], "paths");

    // Heartbeats arrive (and carry the slots) at the admin's 1 s interval.
    let first = tests::time_ms(&view["last_heartbeat"]).unwrap();
    wait_for("a heartbeat after the hello", WAIT, || async {
        let v = worker_view(&admin, "py-attach").await?;
        (tests::time_ms(&v["last_heartbeat"])? > first && v["execution_slots_total"] == 2).then_some(())
    })
    .await;
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_detection_proposes_and_its_job_completes_with_progress() {
    let dir = TempDir::new("python-job");
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::write(data.join("a.bin"), vec![1u8; 3000]).unwrap();
    std::fs::write(data.join("sub/b.bin"), vec![2u8; 5000]).unwrap();
    let admin = TestAdmin::start(&dir.path().join("admin"), |_| {}).await;
    let _worker = PythonWorker::spawn(&admin, "py-job", dir.path());
    plugins::wait_descriptor(&admin, T).await;

    plugins::configure(&admin, T, json!({ "paths": plugins::string_list(&[data.to_str().unwrap()]) })).await;
    plugins::run(&admin, T).await;
    let jobs = admin.wait_jobs("the python job succeeded", &format!("job_type={T}"), 1, "succeeded").await;
    assert_eq!(jobs[0]["worker_id"], "py-job");
    assert_eq!(jobs[0]["dedupe_key"], std::fs::canonicalize(&data).unwrap().to_str().unwrap());
    assert_eq!(jobs[0]["progress_percent"], 100.0);

    let detail = plugins::detail(&admin, jobs[0]["job_id"].as_str().unwrap()).await;
    assert_eq!(plugins::int_output(&detail["result"], "total_bytes"), 8000);
    assert_eq!(plugins::int_output(&detail["result"], "entries"), 2);
    assert!(detail["result"]["summary"].as_str().unwrap().contains("largest: sub"), "{}", detail["result"]);
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_from_the_admin_stops_a_python_job() {
    let dir = TempDir::new("python-cancel");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    for name in ["a", "b", "c"] {
        std::fs::write(data.join(name), name).unwrap();
    }
    let admin = TestAdmin::start(&dir.path().join("admin"), |_| {}).await;
    let _worker = PythonWorker::spawn(&admin, "py-cancel", dir.path());
    plugins::wait_descriptor(&admin, T).await;

    // A long pause per entry keeps the job running until it is canceled.
    let values =
        json!({ "paths": plugins::string_list(&[data.to_str().unwrap()]), "pause_per_entry": plugins::seconds(60) });
    plugins::configure(&admin, T, values).await;
    plugins::run(&admin, T).await;
    let jobs = admin.wait_jobs("the python job running", &format!("job_type={T}"), 1, "running").await;
    let id = jobs[0]["job_id"].as_str().unwrap();
    let r = http::post_json(&admin.http, &format!("/api/plugin/jobs/{id}/cancel"), &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    admin.wait_jobs("the python job canceled", &format!("job_type={T}"), 1, "canceled").await;
    let detail = plugins::detail(&admin, id).await;
    let attempts = detail["attempts"].as_array().unwrap();
    assert_eq!(attempts.last().unwrap()["outcome"], "canceled", "{attempts:?}");
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_the_python_worker_with_a_clean_close_and_it_sent_its_address() {
    let dir = TempDir::new("python-sigterm");
    let admin = TestAdmin::start(&dir.path().join("admin"), |_| {}).await;
    let mut worker = PythonWorker::spawn(&admin, "py-term", dir.path());
    let view = wait_for("the python worker attached", WAIT, || worker_view(&admin, "py-term")).await;
    assert_eq!(view["address"], "127.0.0.1", "its address toward the admin: {view}");

    let mut events = admin.components().events.subscribe_after(None).rx;
    let pid = rustix::process::Pid::from_child(&worker.child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    let reason = tests::within("the admin sees the worker leave", WAIT, async {
        loop {
            let event = events.recv().await.expect("the event bus is open");
            if let admin::events::EventKind::WorkerLeft { worker_id, reason } = &event.kind
                && worker_id == "py-term"
            {
                break reason.clone();
            }
        }
    })
    .await;
    assert_eq!(reason, "stream closed by the worker", "a half-close, not a broken connection");
    let status = wait_for("the python worker exits", WAIT, || {
        let status = worker.child.try_wait().expect("try_wait");
        async move { status }
    })
    .await;
    assert!(status.success(), "SIGTERM is a clean exit: {status}");
    admin.stop().await;
}
