//! What a new user meets in the first hour, checked word for word: the errors of a port
//! in use (naming the listener and its flag), of a data dir that cannot be created (said
//! as such), and of a worker that dials the admin's HTTP port as gRPC (told what to dial
//! instead); and the README's Rust worker, which is the `examples/echo-worker` crate the
//! workspace builds.

use std::{
    io::{BufRead, BufReader},
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use tests::{TempDir, harness::TestAdmin};

const WAIT: Duration = Duration::from_secs(30);

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_plughost-under-test"))
}

/// Kills the process when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `plughost admin` with `args`, which must fail; returns its stderr.
fn admin_fails(data: &Path, args: &[&str]) -> String {
    admin_fails_under(Command::new(binary()), data, args)
}

/// As [`admin_fails`], with the binary run by `command` (which may wrap it).
fn admin_fails_under(mut command: Command, data: &Path, args: &[&str]) -> String {
    let out = command
        .arg("admin")
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .output()
        .expect("run plughost admin");
    assert!(!out.status.success(), "the admin must refuse to start: {out:?}");
    String::from_utf8(out.stderr).expect("stderr is UTF-8")
}

/// A loopback port that stays taken while the listener lives.
fn taken_port() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind a port")
}

#[test]
fn an_http_port_in_use_names_the_http_listener_and_its_flag_and_the_cause_once() {
    let dir = TempDir::new("first-hour-http-port");
    let taken = taken_port();
    let addr = taken.local_addr().unwrap();
    let stderr = admin_fails(&dir.path().join("data"), &["--http-addr", &addr.to_string()]);
    assert_eq!(
        stderr,
        format!(
            "plughost: cannot listen on {addr} for the HTTP listener (set --http-addr): \
             Address already in use (os error 98)\n"
        )
    );
}

#[test]
fn a_grpc_port_in_use_says_it_is_the_http_port_plus_ten_thousand_and_which_flag_sets_it() {
    let dir = TempDir::new("first-hour-grpc-port");
    // A taken port that is some free-looking HTTP port + 10000.
    let taken = loop {
        let l = taken_port();
        if l.local_addr().unwrap().port() > 11_000 {
            break l;
        }
    };
    let grpc = taken.local_addr().unwrap();
    let http = format!("127.0.0.1:{}", grpc.port() - 10_000);
    let stderr = admin_fails(&dir.path().join("data"), &["--http-addr", &http]);
    assert_eq!(
        stderr,
        format!(
            "plughost: cannot listen on {grpc} for the gRPC listener (HTTP port + 10000; set --grpc-addr): \
             Address already in use (os error 98)\n"
        )
    );

    // Set by the flag, it says so.
    let stderr =
        admin_fails(&dir.path().join("data"), &["--http-addr", "127.0.0.1:0", "--grpc-addr", &grpc.to_string()]);
    assert_eq!(
        stderr,
        format!(
            "plughost: cannot listen on {grpc} for the gRPC listener (set --grpc-addr): \
             Address already in use (os error 98)\n"
        )
    );
}

#[test]
fn a_data_dir_that_cannot_be_created_is_said_as_such_naming_the_flag() {
    let dir = TempDir::new("first-hour-data-dir");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let data = file.join("data");
    let stderr = admin_fails(&data, &["--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"]);
    assert_eq!(
        stderr,
        format!(
            "plughost: cannot create {} (--data-dir): Not a directory (os error 20)\n",
            data.join("plugin").display()
        )
    );
}

#[test]
fn an_unwritable_data_dir_is_said_as_such_naming_the_flag() {
    // A read-only bind mount makes the directory unwritable even for root.
    let dir = TempDir::new("first-hour-read-only");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut bwrap = Command::new("bwrap");
    bwrap.args(["--bind", "/", "/", "--ro-bind"]).arg(&data).arg(&data);
    bwrap.args(["--dev", "/dev", "--proc", "/proc", "--die-with-parent", "--"]).arg(binary());
    let stderr = admin_fails_under(bwrap, &data, &["--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"]);
    assert_eq!(
        stderr,
        format!(
            "plughost: cannot create {} (--data-dir): Read-only file system (os error 30)\n",
            data.join("plugin").display()
        )
    );
}

/// The stderr lines of a child, as they come.
fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().expect("stderr is piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_dialing_the_http_port_as_grpc_is_told_what_to_dial() {
    let dir = TempDir::new("first-hour-wrong-port");
    let admin = TestAdmin::start(&dir.path().join("admin"), |_| {}).await;
    let mut worker = Killed(
        Command::new(binary())
            .args(["worker", "--admin", &format!("grpc://{}", admin.http), "--job-types", "sqlite_vacuum"])
            .arg("--working-dir")
            .arg(dir.path().join("worker"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let lines = stderr_lines(&mut worker.0);
    let expected = format!(
        "{http} is the admin's HTTP port, not its gRPC port: use --admin http://{http} \
         (the gRPC port is looked up) or grpc://{grpc}",
        http = admin.http,
        grpc = admin.grpc
    );
    let line = tokio::task::spawn_blocking(move || {
        let until = std::time::Instant::now() + WAIT;
        loop {
            let left = until.saturating_duration_since(std::time::Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if line.contains("no stream to the admin") => return line,
                Ok(_) => {}
                Err(e) => panic!("no warning about the failed stream within {WAIT:?}: {e}"),
            }
        }
    })
    .await
    .unwrap();
    assert!(line.contains(&expected), "the warning says what to dial:\n{line}\nexpected: {expected}");
    assert!(!line.contains("transport error: transport error"), "each cause once:\n{line}");
}

/// The fenced block of `lang` that follows the line `marker` in README.md.
fn readme_block(readme: &str, marker: &str, lang: &str) -> String {
    let after = readme.split_once(marker).unwrap_or_else(|| panic!("README has no {marker:?}")).1;
    let start =
        after.split_once(&format!("```{lang}\n")).unwrap_or_else(|| panic!("no {lang} block after {marker:?}")).1;
    start.split_once("\n```").expect("the block ends").0.to_string() + "\n"
}

#[test]
fn the_readme_rust_worker_is_the_example_crate_the_workspace_builds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let manifest = std::fs::read_to_string(root.join("examples/echo-worker/Cargo.toml")).unwrap();
    let main = std::fs::read_to_string(root.join("examples/echo-worker/src/main.rs")).unwrap();
    assert_eq!(readme_block(&readme, "`Cargo.toml`:", "toml"), manifest, "README's Cargo.toml is the example's");
    assert_eq!(readme_block(&readme, "`src/main.rs`:", "rust"), main, "README's main.rs is the example's");
    let workspace = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    assert!(
        workspace.contains("\"examples/echo-worker\""),
        "the workspace builds the example, so it compiles as written"
    );
}
