//! One admin per data dir, with real processes: a second `plughost admin` on a data dir
//! in use exits at once and says which dir and which process holds it, while the first
//! keeps serving; and an admin killed with SIGKILL leaves no stale lock behind.

use std::{
    io::Read,
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    time::Duration,
};

use tests::{
    harness::{AdminProcess, data_dir, free_port},
    http, wait_for,
};

const WAIT: Duration = Duration::from_secs(30);

/// The tests take turns: `free_port` hands out ports that are free now, and two tests
/// picking ports at once could both be handed one before either admin binds it.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_plughost-under-test"))
}

/// A child process that is killed and reaped when dropped, whatever the test did.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `plughost admin` on `data` with fresh ports, capturing stderr (read on a
/// thread so a chatty child can never block on a full pipe).
fn start_admin(data: &Path) -> (Reaped, std::thread::JoinHandle<String>) {
    let mut child = Command::new(binary())
        .args(["admin", "--data-dir"])
        .arg(data)
        .args(["--http-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--grpc-addr", &format!("127.0.0.1:{}", free_port())])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn plughost admin");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    (Reaped(child), reader)
}

/// Waits for the child to exit, within `WAIT`.
async fn exit_status(child: &mut Reaped, what: &str) -> ExitStatus {
    wait_for(what, WAIT, || {
        let status = child.0.try_wait().expect("try_wait");
        async move { status }
    })
    .await
}

fn lock_holder(data: &Path) -> String {
    std::fs::read_to_string(data.join("plugin/admin.lock")).expect("the lock file").trim().to_string()
}

/// Starts a second admin on `data`, which must refuse; returns its stderr.
async fn refused_admin(data: &Path) -> String {
    let (mut second, stderr) = start_admin(data);
    let status = exit_status(&mut second, "the second admin exits").await;
    let stderr = stderr.join().expect("stderr reader");
    assert!(!status.success(), "the second admin fails: {status}; stderr: {stderr}");
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_admin_on_a_data_dir_in_use_exits_naming_the_dir_and_the_holders_pid_and_the_first_keeps_serving() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (_dir, data) = data_dir("datadir-busy");
    let first = AdminProcess::spawn(binary(), &data, free_port(), free_port()).await;
    let pid = first.child.id();
    assert_eq!(lock_holder(&data), pid.to_string(), "the lock file names its holder");

    let stderr = refused_admin(&data).await;
    let expected = format!(
        "data dir {} is in use by another admin (pid {pid}); stop that admin or use another --data-dir",
        data.display()
    );
    assert!(stderr.contains(&expected), "stderr says who holds the data dir:\n{stderr}");

    assert_eq!(http::get(&first.http, "/readyz").await.status, 200, "the first admin keeps serving");
    assert_eq!(http::get(&first.http, "/api/plugin/status").await.status, 200);
    assert_eq!(lock_holder(&data), pid.to_string(), "the refused admin left the lock file alone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_killed_with_sigkill_leaves_no_stale_lock_and_the_restarted_admin_holds_the_data_dir() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (_dir, data) = data_dir("datadir-killed");
    let mut first = AdminProcess::spawn(binary(), &data, free_port(), free_port()).await;
    let old_pid = first.child.id();
    first.kill();
    assert_eq!(lock_holder(&data), old_pid.to_string(), "the killed admin's pid is still in the file");

    let restarted = AdminProcess::spawn(binary(), &data, free_port(), free_port()).await;
    assert_eq!(http::get(&restarted.http, "/readyz").await.status, 200, "the restarted admin is ready");
    let pid = restarted.child.id();
    assert_eq!(lock_holder(&data), pid.to_string(), "the lock file names the new holder");

    // The restarted admin holds the lock for real: another one is refused, naming it.
    let stderr = refused_admin(&data).await;
    assert!(stderr.contains(&format!("in use by another admin (pid {pid})")), "{stderr}");
    assert_eq!(http::get(&restarted.http, "/readyz").await.status, 200);
}
