//! The `plughost` binary's plugin commands as real processes: `plughost worker` serves
//! the bundled plugins to an admin (dialing its gRPC address, or its HTTP address
//! written as SeaweedFS users write it) and refuses scripts without the opt-in, and
//! `plughost up --demo` shows jobs of every bundled type succeeding on its demo files,
//! leaves a running instance's demo alone, and keeps the operator's settings on restart.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use serde_json::{Value, json};
use tests::{
    TempDir,
    harness::{TestAdmin, free_port},
    http, plugins, wait_for,
};

const WAIT: Duration = Duration::from_secs(60);

fn plughost() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_plughost-under-test"));
    c.env("RUST_LOG", "warn").stdout(Stdio::null());
    c
}

/// Kills the process when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plughost_worker_serves_the_bundled_plugins_to_an_admin() {
    let dir = TempDir::new("cli-worker");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::write(logs.join("old.log"), "old news\n".repeat(1000)).unwrap();
    let admin = TestAdmin::start(&dir.path().join("admin"), |_| {}).await;
    let _worker = Killed(
        plughost()
            .args(["worker", "--admin", &format!("grpc://{}", admin.grpc), "--worker-id", "cli-worker"])
            .args(["--job-types", "sqlite_vacuum,file_archive", "--working-dir"])
            .arg(dir.path().join("worker"))
            .spawn()
            .unwrap(),
    );
    let view: Value = wait_for("the worker attached", WAIT, || async {
        let workers = admin.get("/api/plugin/workers").await;
        workers.as_array()?.iter().find(|w| w["worker_id"] == "cli-worker").cloned()
    })
    .await;
    let mut types: Vec<&str> = view["job_types"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    types.sort();
    assert_eq!(types, ["file_archive", "sqlite_vacuum"], "no script without --allow-scripts");
    plugins::wait_descriptor(&admin, "sqlite_vacuum").await;
    plugins::wait_descriptor(&admin, "file_archive").await;

    let values = json!({ "paths": plugins::string_list(&[logs.to_str().unwrap()]), "min_age": plugins::seconds(0) });
    plugins::configure(&admin, "file_archive", values).await;
    plugins::run(&admin, "file_archive").await;
    admin.wait_jobs("the archive job succeeded", "job_type=file_archive", 1, "succeeded").await;
    assert!(logs.join("old.log.zst").exists());
    admin.stop().await;
}

/// `plughost worker --admin localhost:PORT` names the admin's HTTP address, as
/// `weed worker -admin=localhost:23646` does: the gRPC port comes from the admin's status
/// (this admin's ports are both random, so HTTP port + 10000 would miss it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plughost_worker_takes_the_admins_http_address_without_a_scheme() {
    let dir = TempDir::new("cli-worker-bare");
    let admin = TestAdmin::start(&dir.path().join("admin"), |_| {}).await;
    let port = admin.http.rsplit_once(':').unwrap().1.to_string();
    assert_ne!(admin.grpc.port().to_string(), port);
    let _worker = Killed(
        plughost()
            .args(["worker", "--admin", &format!("localhost:{port}"), "--worker-id", "cli-bare"])
            .args(["--job-types", "sqlite_vacuum", "--working-dir"])
            .arg(dir.path().join("worker"))
            .spawn()
            .unwrap(),
    );
    wait_for("the worker attached through the HTTP address", WAIT, || async {
        let workers = admin.get("/api/plugin/workers").await;
        workers.as_array()?.iter().find(|w| w["worker_id"] == "cli-bare").map(|_| ())
    })
    .await;
    admin.stop().await;
}

#[test]
fn plughost_worker_refuses_an_admin_address_without_a_port() {
    let out = plughost().args(["worker", "--admin", "localhost"]).stderr(Stdio::piped()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("has no port") && stderr.contains("localhost:23646"), "{stderr}");
}

#[test]
fn plughost_worker_refuses_scripts_without_the_opt_in() {
    let out = plughost()
        .args(["worker", "--admin", "grpc://127.0.0.1:1", "--job-types", "script"])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--allow-scripts"), "{stderr}");
}

async fn succeeded(http_addr: &str, job_type: &str) -> usize {
    let r = http::get(http_addr, &format!("/api/plugin/jobs?job_type={job_type}&state=succeeded")).await;
    if r.status != 200 {
        return 0;
    }
    r.json().as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plughost_up_demo_runs_real_jobs_of_every_bundled_type() {
    let dir = TempDir::new("cli-demo");
    let data = dir.path().join("data");
    let (http_port, grpc_port) = (free_port(), free_port());
    let http_addr = format!("127.0.0.1:{http_port}");
    let _up = Killed(
        plughost()
            .args(["up", "--demo", "--data-dir"])
            .arg(&data)
            .args(["--http-addr", &http_addr, "--grpc-addr", &format!("127.0.0.1:{grpc_port}")])
            .args(["--heartbeat-seconds", "1"])
            .spawn()
            .unwrap(),
    );
    let demo = data.join("demo");
    wait_for("the admin listening", WAIT, || async {
        tokio::net::TcpStream::connect(&http_addr).await.ok().map(|_| ())
    })
    .await;
    // The admin wrote its first token before it started listening.
    http::register_admin_token(&http_addr, &data);
    // The demo script works for about 30 seconds, reporting progress as it goes.
    let script_progress = wait_for("the demo script reporting progress", WAIT, || async {
        let jobs = http::get(&http_addr, "/api/plugin/jobs?job_type=script&state=running").await;
        let job = jobs.json().as_array()?.first()?.clone();
        let progress = job["progress"].as_f64()?;
        (progress > 0.0 && progress < 100.0).then_some(progress)
    })
    .await;
    assert_eq!(script_progress % 10.0, 0.0, "the script reports whole steps of ten percent: {script_progress}");
    wait_for("jobs of every bundled type succeeded", 2 * WAIT, || async {
        let vacuums = succeeded(&http_addr, "sqlite_vacuum").await;
        let archives = succeeded(&http_addr, "file_archive").await;
        let scripts = succeeded(&http_addr, "script").await;
        (vacuums >= 1 && archives >= 3 && scripts >= 1).then_some(())
    })
    .await;
    // Nothing repeats every minute: each demo type detects hourly or less often.
    for job_type in ["sqlite_vacuum", "file_archive", "script"] {
        let config = http::get(&http_addr, &format!("/api/plugin/job-types/{job_type}/config")).await.json();
        let minutes = config["admin_runtime"]["detection_interval_minutes"].as_i64().unwrap_or(0);
        assert!(minutes >= 60, "{job_type} detects every {minutes} minutes: {config}");
    }
    let logs = demo.join("logs");
    for n in 1..=3 {
        assert!(logs.join(format!("app-{n}.log.zst")).exists());
        assert!(!logs.join(format!("app-{n}.log")).exists());
    }
    assert!(logs.join("current.log").exists(), "today's log is not old enough");
    // Each bundled descriptor renders as a form, and the demo's secret stays inside.
    for (job_type, label) in
        [("sqlite_vacuum", "Free-page ratio"), ("file_archive", "Older than"), ("script", "Secrets")]
    {
        let page = http::get(&http_addr, &format!("/plugin/job-types/{job_type}?tab=configuration")).await;
        assert_eq!(page.status, 200, "{job_type}: {}", page.text());
        assert!(page.text().contains(label), "the {job_type} page shows its {label:?} field");
        assert!(!page.text().contains("demo-token-not-for-production"), "the secret is never rendered");
    }
    let r = http::get(&http_addr, "/api/plugin/jobs?job_type=sqlite_vacuum").await.json();
    let vacuumed: Vec<&str> = r.as_array().unwrap().iter().map(|j| j["dedupe_key"].as_str().unwrap()).collect();
    assert!(
        vacuumed.iter().all(|k| Path::new(k).ends_with("app.db")),
        "the healthy database is left alone: {vacuumed:?}"
    );
}

/// `plughost up --demo` on `data` with the given ports.
fn up_demo(data: &Path, http_port: u16, grpc_port: u16) -> Command {
    let mut c = plughost();
    c.args(["up", "--demo", "--data-dir"])
        .arg(data)
        .args(["--http-addr", &format!("127.0.0.1:{http_port}"), "--grpc-addr", &format!("127.0.0.1:{grpc_port}")])
        .args(["--heartbeat-seconds", "1"]);
    c
}

/// Runs a command that must fail, with a deadline; returns its stderr.
async fn fails(mut command: Command) -> String {
    command.stderr(Stdio::piped());
    let out = tests::within("the second up to exit", WAIT, tokio::task::spawn_blocking(move || command.output()))
        .await
        .unwrap()
        .unwrap();
    assert!(!out.status.success(), "it must fail: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

// Bug: a second `up --demo` recreated the demo files (deleting what the running instance
// was working on) before it found the data dir or the port taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_up_demo_fails_before_touching_any_demo_directory() {
    let dir = TempDir::new("cli-demo-twice");
    let data = dir.path().join("data");
    let (http_port, grpc_port) = (free_port(), free_port());
    let _first = Killed(up_demo(&data, http_port, grpc_port).spawn().unwrap());
    let logs = data.join("demo/logs");
    wait_for("the first demo prepared", WAIT, || async { logs.join("current.log").exists().then_some(()) }).await;
    std::fs::write(logs.join("mine.txt"), "the running instance's file").unwrap();

    let stderr = fails(up_demo(&data, free_port(), free_port())).await;
    assert!(stderr.contains("in use by another admin"), "{stderr}");
    let stderr = fails(up_demo(&dir.path().join("other"), http_port, free_port())).await;
    assert!(stderr.contains("cannot listen"), "{stderr}");

    assert!(logs.join("mine.txt").exists(), "the running instance's demo directory was not recreated");
    assert!(!dir.path().join("other/demo").exists(), "no demo directory for an up that could not start");
}

/// The stdout lines of a child, as they come.
fn lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout is piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

async fn file_archive_config(http_addr: &str) -> serde_json::Value {
    let r = http::get(http_addr, "/api/plugin/job-types/file_archive/config").await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["admin_config_values"].clone()
}

// Bug: every start of `up --demo` saved the demo settings again, over the operator's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_up_demo_keeps_the_settings_the_operator_changed() {
    let dir = TempDir::new("cli-demo-restart");
    let data = dir.path().join("data");
    let (http_port, grpc_port) = (free_port(), free_port());
    let http_addr = format!("127.0.0.1:{http_port}");
    let mut first = Killed(up_demo(&data, http_port, grpc_port).stdout(Stdio::piped()).spawn().unwrap());
    let out = lines(&mut first.0);
    let said = tests::within("the first up's demo line", WAIT, async {
        tokio::task::spawn_blocking(move || out.iter().find(|l| l.contains("demo files")).unwrap()).await.unwrap()
    })
    .await;
    assert!(said.contains("jobs appear within a minute"), "{said}");
    http::register_admin_token(&http_addr, &data);
    // The first start has saved every demo setting once its marker file is gone (it goes
    // after the last one, so a start stopped halfway saves them again).
    let marker = data.join("demo").join(".settings-pending");
    wait_for("the demo settings saved", WAIT, || async { (!marker.exists()).then_some(()) }).await;
    let paths = file_archive_config(&http_addr).await["paths"]["string_list"]["values"].as_array().map_or(0, Vec::len);
    assert!(paths > 0, "the demo's file_archive settings are saved");
    let mut values = file_archive_config(&http_addr).await;
    values["format"] = json!({ "string_value": "gz" });
    let r = http::put_json(
        &http_addr,
        "/api/plugin/job-types/file_archive/config",
        &json!({ "admin_config_values": values }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    drop(first);

    let restarted_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let mut second = Killed(up_demo(&data, http_port, grpc_port).stdout(Stdio::piped()).spawn().unwrap());
    let out = lines(&mut second.0);
    let said = tests::within("the second up's demo line", WAIT, async {
        tokio::task::spawn_blocking(move || out.iter().find(|l| l.contains("demo files")).unwrap()).await.unwrap()
    })
    .await;
    assert!(said.contains("the saved settings are kept"), "{said}");
    // Once the second run's worker has detected, a demo configuration would have run.
    wait_for("a file_archive detection of the second run", WAIT, || async {
        let r = http::get(&http_addr, "/api/plugin/job-types/file_archive/runs").await;
        if r.status != 200 {
            return None;
        }
        let runs = r.json();
        let detected = runs["successes"]
            .as_array()?
            .iter()
            .any(|r| r["kind"] == "detection" && tests::time_ms(&r["started_at"]).is_some_and(|at| at >= restarted_at));
        detected.then_some(())
    })
    .await;
    assert_eq!(file_archive_config(&http_addr).await["format"]["string_value"], "gz");
    // The second start recreated the demo's logs (it clears the directory first). By now
    // that run's own archive job may have archived the first of them, with the kept
    // format: either file says it was recreated, and one of them is always there.
    let logs = data.join("demo/logs");
    assert!(
        logs.join("app-1.log").exists() || logs.join("app-1.log.gz").exists(),
        "the demo files were recreated: {:?}",
        std::fs::read_dir(&logs).map(|d| d.filter_map(|e| e.ok().map(|e| e.file_name())).collect::<Vec<_>>())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plughost_up_on_an_empty_data_dir_says_on_the_overview_what_to_configure_first() {
    let dir = TempDir::new("cli-up-empty");
    let data = dir.path().join("data");
    let (http_port, grpc_port) = (free_port(), free_port());
    let http_addr = format!("127.0.0.1:{http_port}");
    let _up = Killed(
        plughost()
            .args(["up", "--data-dir"])
            .arg(&data)
            .args(["--http-addr", &http_addr, "--grpc-addr", &format!("127.0.0.1:{grpc_port}")])
            .args(["--heartbeat-seconds", "1"])
            .spawn()
            .unwrap(),
    );
    wait_for("the admin listening", WAIT, || async {
        tokio::net::TcpStream::connect(&http_addr).await.ok().map(|_| ())
    })
    .await;
    http::register_admin_token(&http_addr, &data);
    let page = wait_for("both bundled descriptors on the overview", WAIT, || async {
        let page = http::get(&http_addr, "/plugin").await.text();
        (page.contains(">SQLite vacuum</a>: set Directories") && page.contains(">File archive</a>: set Directories"))
            .then_some(page)
    })
    .await;
    assert!(page.contains("Start here: configure these first"), "{page}");
    assert!(page.contains("needs configuration"), "each such job type is marked in the table: {page}");

    // Once its directories are set, a job type leaves the list.
    let config = http::get(&http_addr, "/api/plugin/job-types/sqlite_vacuum/config").await.json();
    let mut values = config["admin_config_values"].clone();
    values["paths"] = plugins::string_list(&[dir.path().to_str().unwrap()]);
    let body = json!({ "admin_config_values": values });
    let r = http::put_json(&http_addr, "/api/plugin/job-types/sqlite_vacuum/config", &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let page = http::get(&http_addr, "/plugin").await.text();
    assert!(!page.contains(">SQLite vacuum</a>: set Directories"), "{page}");
    assert!(page.contains(">File archive</a>: set Directories"), "{page}");
}
