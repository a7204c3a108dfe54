//! The `job_runner` plugin with real sources, real processes and the real sandbox:
//! git tags from a local bare repository (a branch is refused), tarballs over HTTPS
//! from a server on loopback with a test CA (checksum, size, hostile entries and hosts
//! refused), local tarballs only under their directory; each runtime's secret helper
//! (the secret never in an environment or a command line, checked in `/proc`); in
//! bubblewrap, writes outside the work dir fail, the network is off unless allowed, the
//! memory limit stops a hog and a timeout ends every process; without a sandbox a
//! definition that requires one is refused; and, through a real admin, a structured
//! result becomes output values and the artifacts are kept, capped and downloadable.
//!
//! These tests need `bwrap`, `git`, `python3` and `node`; `scripts/test` installs
//! them. The runner is built with `--sandbox on` (but for the one test of `--sandbox
//! off`), so a machine without a working bubblewrap fails here instead of running
//! unsandboxed.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use job_runner::{
    JobRunner, RunnerPolicy, SandboxChoice,
    definition::Definition,
    execute::{RunReport, RunRequest, Runner},
    sources,
};
use serde_json::{Value, json};
use tests::{
    TempDir,
    harness::TestAdmin,
    http,
    job_sources::{Answer, Entry, TarballServer, repository_with_tag_and_branch, sha256, tarball},
    plugins::{self, PluginWorker},
    wait_for,
};
use worker_sdk::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);
const SECRET: &str = "s3cret-4f1d9c-job-runner";
const T: &str = "job_runner";

fn policy(dir: &Path) -> RunnerPolicy {
    let mut p = RunnerPolicy::allowed(dir.join("runner"));
    p.sandbox = SandboxChoice::On;
    p.tarball_dir = Some(dir.join("tarballs"));
    p.download_timeout = Duration::from_secs(30);
    std::fs::create_dir_all(dir.join("tarballs")).unwrap();
    p
}

fn runner(policy: RunnerPolicy) -> Runner {
    Runner::new(policy).unwrap_or_else(|e| panic!("the job runner needs a working bubblewrap here: {e}"))
}

/// Writes a local tarball of `entries` under the tarball dir; returns its name.
fn local_tarball(dir: &Path, name: &str, entries: &[Entry<'_>]) -> String {
    std::fs::write(dir.join("tarballs").join(name), tarball(entries)).unwrap();
    name.to_string()
}

fn definition(name: &str, json: Value) -> Definition {
    Definition::parse(name, &json).unwrap_or_else(|e| panic!("{e}"))
}

fn request(secrets: &[(&str, &str)]) -> RunRequest {
    RunRequest {
        job_id: "j1".into(),
        attempt: 1,
        secrets: secrets.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        env: Vec::new(),
    }
}

async fn run(runner: &Runner, def: &Definition, req: &RunRequest) -> RunReport {
    runner.run(def, req, &CancellationToken::new(), None).await.unwrap_or_else(|e| panic!("run {}: {e}", def.name))
}

fn result(report: &RunReport) -> Value {
    Value::Object(report.result.as_ref().map(|r| r.fields.clone()).unwrap_or_default())
}

fn artifact<'a>(report: &'a RunReport, name: &str) -> &'a str {
    let (_, data) = report.artifacts.files.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no {name}"));
    std::str::from_utf8(data).unwrap()
}

// ---------------------------------------------------------------------------------
// Sources

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_git_tag_is_fetched_shallow_and_a_branch_is_refused() {
    let dir = TempDir::new("job-git");
    let bare = dir.path().join("jobs.git");
    repository_with_tag_and_branch(dir.path(), &bare, &[("run.sh", "echo v1")], &[("later.sh", "echo later")]);
    let repo = bare.to_string_lossy().into_owned();
    let mut p = policy(dir.path());
    p.repo_allowlist = vec![repo.clone()];

    let spec = job_runner::definition::SourceSpec::GitTag { repo: repo.clone(), tag: "v1".into(), path: String::new() };
    let fetched = sources::fetch(&spec, &p).await.unwrap();
    assert_eq!(std::fs::read_to_string(fetched.root.join("run.sh")).unwrap(), "echo v1");
    assert!(!fetched.root.join("later.sh").exists(), "the tag's tree, not the branch's");
    assert!(!fetched.root.join(".git").exists());
    assert_eq!(fetched.resolved.len(), 40, "the commit is reported: {}", fetched.resolved);
    let again = sources::fetch(&spec, &p).await.unwrap();
    assert_eq!(again, fetched, "cached by repository and tag");

    let branch =
        job_runner::definition::SourceSpec::GitTag { repo: repo.clone(), tag: "release".into(), path: String::new() };
    let err = sources::fetch(&branch, &p).await.unwrap_err();
    assert!(err.contains("only tags are accepted"), "{err}");

    p.repo_allowlist = vec!["/somewhere/else.git".into()];
    let err = sources::fetch(&spec, &p).await.unwrap_err();
    assert!(err.contains("--job-repo-allowlist"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_tarball_is_unpacked_only_when_it_is_what_was_pinned_and_safe() {
    let dir = TempDir::new("job-https");
    let good =
        tarball(&[Entry::Dir("app"), Entry::Exec("app/run.sh", b"echo hi"), Entry::Symlink("app/alias.sh", "run.sh")]);
    let escape_target = dir.path().join("escaped");
    let hostile: Vec<(&str, Vec<u8>)> = vec![
        ("/dotdot.tgz", tarball(&[Entry::File("ok.txt", b"ok"), Entry::File("../escaped", b"x")])),
        ("/absolute.tgz", tarball(&[Entry::File(&escape_target.to_string_lossy(), b"x")])),
        ("/symlink.tgz", tarball(&[Entry::Symlink("link", "../../../../../../etc"), Entry::File("link/passwd", b"x")])),
        ("/hardlink.tgz", tarball(&[Entry::Hardlink("passwd", "/etc/passwd")])),
        ("/hardlink-up.tgz", tarball(&[Entry::Hardlink("passwd", "../../etc/passwd")])),
        ("/through-link.tgz", tarball(&[Entry::Dir("d"), Entry::Symlink("alias", "d"), Entry::File("alias/x", b"x")])),
        ("/fifo.tgz", tarball(&[Entry::Fifo("pipe")])),
    ];
    let big = vec![7u8; 4096];
    let mut answers: HashMap<String, Answer> = HashMap::new();
    answers.insert("/good.tgz".into(), Answer::Body(good.clone()));
    answers.insert("/big.tgz".into(), Answer::Body(big.clone()));
    answers.insert("/big-unsized.tgz".into(), Answer::Unsized(big.clone()));
    for (path, data) in &hostile {
        answers.insert(path.to_string(), Answer::Body(data.clone()));
    }
    let server = TarballServer::start(dir.path(), answers).await;
    let mut p = policy(dir.path());
    p.tarball_allowlist = vec!["127.0.0.1".into()];
    p.extra_ca_file = Some(server.ca_file.clone());
    p.tarball_max_bytes = 2048;
    let url_source = |path: &str, sum: &str| job_runner::definition::SourceSpec::TarballUrl {
        url: server.url(path),
        sha256: sum.to_string(),
        path: "app".into(),
    };

    let fetched = sources::fetch(&url_source("/good.tgz", &sha256(&good)), &p).await.unwrap();
    assert_eq!(std::fs::read_to_string(fetched.work_dir.join("run.sh")).unwrap(), "echo hi");
    assert_eq!(std::fs::read_link(fetched.work_dir.join("alias.sh")).unwrap(), PathBuf::from("run.sh"));
    assert_eq!(fetched.resolved, format!("sha256:{}", sha256(&good)));

    let sources_dir = p.sources_dir();
    let before: Vec<_> = std::fs::read_dir(&sources_dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    let err = sources::fetch(&url_source("/good.tgz", &"0".repeat(64)), &p).await.unwrap_err();
    assert!(err.contains("checksum mismatch") && err.contains("nothing was unpacked"), "{err}");
    let after: Vec<_> = std::fs::read_dir(&sources_dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(before, after, "a mismatch leaves nothing behind");

    for path in ["/big.tgz", "/big-unsized.tgz"] {
        let err = sources::fetch(&url_source(path, &sha256(&big)), &p).await.unwrap_err();
        assert!(err.contains("over the limit of 2048"), "{path}: {err}");
    }
    for (path, data) in &hostile {
        let err = sources::fetch(&url_source(path, &sha256(data)), &p).await.unwrap_err();
        assert!(err.starts_with("tarball refused"), "{path}: {err}");
    }
    assert!(!escape_target.exists() && !dir.path().join("runner/escaped").exists(), "nothing was written outside");

    let mut other_host = p.clone();
    other_host.tarball_allowlist = vec!["localhost".into()];
    let err = sources::fetch(&url_source("/good.tgz", &sha256(&good)), &other_host).await.unwrap_err();
    assert!(err.contains("host 127.0.0.1 is not on the worker's --job-tarball-allowlist"), "{err}");

    let mut untrusted = p.clone();
    untrusted.extra_ca_file = None;
    untrusted.dir = dir.path().join("runner-untrusted");
    let err = sources::fetch(&url_source("/good.tgz", &sha256(&good)), &untrusted).await.unwrap_err();
    assert!(err.contains("TLS"), "a certificate of an unknown CA is refused: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_tarball_outside_the_tarball_dir_is_refused() {
    let dir = TempDir::new("job-local");
    let p = policy(dir.path());
    let name = local_tarball(dir.path(), "ok.tgz", &[Entry::File("run.sh", b"echo ok")]);
    std::fs::write(dir.path().join("outside.tgz"), tarball(&[Entry::File("run.sh", b"echo no")])).unwrap();
    let local = |file: &str| job_runner::definition::SourceSpec::TarballPath {
        file: file.to_string(),
        sha256: None,
        path: String::new(),
    };
    let fetched = sources::fetch(&local(&name), &p).await.unwrap();
    assert_eq!(std::fs::read_to_string(fetched.root.join("run.sh")).unwrap(), "echo ok");
    for outside in ["../outside.tgz", &dir.path().join("outside.tgz").to_string_lossy()] {
        let err = sources::fetch(&local(outside), &p).await.unwrap_err();
        assert!(err.contains("is outside --job-tarball-dir"), "{outside}: {err}");
    }
    let mut none = p.clone();
    none.tarball_dir = None;
    let err = sources::fetch(&local(&name), &none).await.unwrap_err();
    assert!(err.contains("--job-tarball-dir"), "{err}");
}

// ---------------------------------------------------------------------------------
// Runtimes and their secret helpers

const SHELL_PROBE: &str = r#". "$PLUGHOST_HELPERS/plughost.sh"
got=$(get_secret api_token)
touch "$PLUGHOST_WORK_DIR/ready"
while [ ! -f "$PLUGHOST_WORK_DIR/release" ]; do sleep 0.05; done
if [ "$got" = "SECRET" ]; then echo '{"secret_ok": true}'; else echo '{"secret_ok": false}'; fi
"#;

const PYTHON_PROBE: &str = r#"import json, os, time
from plughost import get_secret
got = get_secret("api_token")
work = os.environ["PLUGHOST_WORK_DIR"]
open(os.path.join(work, "ready"), "w").close()
while not os.path.exists(os.path.join(work, "release")):
    time.sleep(0.05)
print(json.dumps({"secret_ok": got == "SECRET"}))
"#;

const NODE_PROBE: &str = r#"const { getSecret } = require('plughost');
const fs = require('fs');
const path = require('path');
const got = getSecret('api_token');
const work = process.env.PLUGHOST_WORK_DIR;
fs.writeFileSync(path.join(work, 'ready'), '');
const wait = () => {
  if (fs.existsSync(path.join(work, 'release'))) console.log(JSON.stringify({ secret_ok: got === 'SECRET' }));
  else setTimeout(wait, 50);
};
wait();
"#;

/// Processes whose environment holds `marker`, with their environment and command line.
fn processes_with(marker: &str) -> Vec<(i32, String, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else { continue };
        let environ = String::from_utf8_lossy(&environ).into_owned();
        if environ.split('\0').any(|v| v == marker) {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            found.push((pid, environ, String::from_utf8_lossy(&cmdline).into_owned()));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_runtime_reads_its_secret_through_the_helper_and_never_sees_it_in_its_environment_or_argv() {
    let dir = TempDir::new("job-secrets");
    let p = policy(dir.path());
    let runs = p.runs_dir();
    let r = runner(p);
    let shell = SHELL_PROBE.replace("SECRET", SECRET);
    let python = PYTHON_PROBE.replace("SECRET", SECRET);
    let node = NODE_PROBE.replace("SECRET", SECRET);
    let name = local_tarball(
        dir.path(),
        "probes.tgz",
        &[
            Entry::File("probe.sh", shell.as_bytes()),
            Entry::File("probe.py", python.as_bytes()),
            Entry::File("probe.js", node.as_bytes()),
        ],
    );
    for (runtime, entry) in [("shell", "probe.sh"), ("python", "probe.py"), ("node", "probe.js")] {
        let marker = format!("PROBE_MARKER={runtime}-{}", std::process::id());
        let def = definition(
            &format!("probe-{runtime}"),
            json!({
                "source": {"kind": "tarball_path", "file": name},
                "entry": entry,
                "runtime": runtime,
                "env": {"PROBE_MARKER": marker.split_once('=').unwrap().1, "GREETING": "hello"},
                "secrets": ["api_token"],
                "timeout_seconds": 60,
            }),
        );
        let req = request(&[("api_token", SECRET)]);
        let check = async {
            let work = wait_for(&format!("the {runtime} probe read its secret"), WAIT, || async {
                let dirs = std::fs::read_dir(&runs).ok()?;
                dirs.filter_map(|d| d.ok()).map(|d| d.path().join("work")).find(|w| w.join("ready").exists())
            })
            .await;
            let procs = processes_with(&marker);
            assert!(!procs.is_empty(), "the {runtime} probe's processes are found by their marker");
            for (pid, environ, cmdline) in &procs {
                assert!(!environ.contains(SECRET), "{runtime}: secret in the environment of {pid}");
                assert!(!cmdline.contains(SECRET), "{runtime}: secret on the command line of {pid}: {cmdline:?}");
                assert!(environ.split('\0').any(|v| v == "GREETING=hello"), "the definition's env arrives");
            }
            std::fs::write(work.join("release"), "").unwrap();
        };
        let (report, ()) = tokio::join!(run(&r, &def, &req), check);
        assert!(report.outcome.success(), "{runtime}: {:?}\n{}", report.outcome, artifact(&report, "stderr.log"));
        assert!(report.sandboxed);
        assert_eq!(result(&report)["secret_ok"], true, "{runtime}: the helper returned the secret");
        assert!(!artifact(&report, "stdout.log").contains(SECRET));
    }
}

// ---------------------------------------------------------------------------------
// The sandbox

/// Tries to write everywhere. `$OUTSIDE` is a host directory under the host's /tmp:
/// in the sandbox that path is inside the private /tmp, so the write may succeed there
/// but must never reach the host.
const WRITES: &str = r#"w=no; u=no; s=no; e=no; t=no; r=no
touch "$PLUGHOST_WORK_DIR/ok" 2>/dev/null && w=yes
touch /usr/plughost-probe 2>/dev/null && u=yes
touch ./plughost-probe 2>/dev/null && s=yes
touch /plughost-probe 2>/dev/null && r=yes
touch /etc/plughost-probe 2>/dev/null && e=yes
mkdir -p "$OUTSIDE" 2>/dev/null; touch "$OUTSIDE/escaped" 2>/dev/null
touch /tmp/probe 2>/dev/null && t=yes
echo "{\"work\": \"$w\", \"usr\": \"$u\", \"source\": \"$s\", \"root\": \"$r\", \"etc\": \"$e\", \"tmp\": \"$t\"}"
"#;

const CONNECT: &str = r#"import json, os, socket
try:
    socket.create_connection(("127.0.0.1", int(os.environ["PORT"])), timeout=5).close()
    print(json.dumps({"connected": True}))
except OSError as e:
    print(json.dumps({"connected": False, "error": str(e)}))
"#;

const HOG: &str = r#"data = bytearray(768 * 1024 * 1024)
print('{"allocated": true}')
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_the_sandbox_only_the_work_dir_and_tmp_are_writable() {
    let dir = TempDir::new("job-sandbox-writes");
    let r = runner(policy(dir.path()));
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let name = local_tarball(dir.path(), "writes.tgz", &[Entry::File("writes.sh", WRITES.as_bytes())]);
    let def = definition(
        "writes",
        json!({
            "source": {"kind": "tarball_path", "file": name},
            "entry": "writes.sh",
            "runtime": "shell",
            "env": {"OUTSIDE": outside.to_string_lossy()},
        }),
    );
    let report = run(&r, &def, &request(&[])).await;
    assert!(report.outcome.success(), "{}", artifact(&report, "stderr.log"));
    assert_eq!(
        result(&report),
        json!({"work": "yes", "usr": "no", "source": "no", "root": "no", "etc": "no", "tmp": "yes"}),
        "{}",
        artifact(&report, "stderr.log")
    );
    assert!(!outside.join("escaped").exists(), "a write to a host path never reaches the host");
    let fetched = sources::fetch(&def.source, &r.policy).await.unwrap();
    assert!(!fetched.root.join("plughost-probe").exists(), "the cached source is untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_the_sandbox_the_network_is_unreachable_unless_the_definition_allows_it() {
    let dir = TempDir::new("job-sandbox-net");
    let r = runner(policy(dir.path()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let name = local_tarball(dir.path(), "net.tgz", &[Entry::File("connect.py", CONNECT.as_bytes())]);
    for network in [false, true] {
        let def = definition(
            "connect",
            json!({
                "source": {"kind": "tarball_path", "file": name},
                "entry": "connect.py",
                "runtime": "python",
                "env": {"PORT": port},
                "network": network,
            }),
        );
        let report = run(&r, &def, &request(&[])).await;
        assert!(report.outcome.success(), "{}", artifact(&report, "stderr.log"));
        assert_eq!(result(&report)["connected"], network, "network {network}: {}", result(&report));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_limit_stops_a_hog() {
    let dir = TempDir::new("job-sandbox-memory");
    let r = runner(policy(dir.path()));
    let name = local_tarball(dir.path(), "hog.tgz", &[Entry::File("hog.py", HOG.as_bytes())]);
    let def = definition(
        "hog",
        json!({
            "source": {"kind": "tarball_path", "file": name},
            "entry": "hog.py",
            "runtime": "python",
            "memory_mb": 256,
        }),
    );
    let report = run(&r, &def, &request(&[])).await;
    assert!(!report.outcome.success(), "the hog must not get its memory: {:?}", report.outcome);
    assert!(report.result.is_none(), "{}", result(&report));
    assert!(artifact(&report, "stderr.log").contains("MemoryError"), "{}", artifact(&report, "stderr.log"));

    let mut roomy = def.clone();
    roomy.memory_mb = 0;
    let report = run(&r, &roomy, &request(&[])).await;
    assert!(report.outcome.success(), "without the limit it runs: {}", artifact(&report, "stderr.log"));
}

/// Counts to `$N` in the shell (CPU all the way, in one process), then reports.
const SPIN: &str = "i=0; while [ \"$i\" -lt \"$N\" ]; do i=$((i + 1)); done; echo '{\"spun\": true}'\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cpu_time_limit_stops_a_spinner() {
    let dir = TempDir::new("job-sandbox-cpu");
    let r = runner(policy(dir.path()));
    let name = local_tarball(dir.path(), "spin.tgz", &[Entry::File("spin.sh", SPIN.as_bytes())]);
    let def = definition(
        "spin",
        json!({
            "source": {"kind": "tarball_path", "file": name},
            "entry": "spin.sh",
            "runtime": "shell",
            // Far more than a second of CPU: minutes.
            "env": {"N": 1_000_000_000u64},
            "cpu_seconds": 1,
            "timeout_seconds": 60,
        }),
    );
    let report = run(&r, &def, &request(&[])).await;
    assert!(!report.outcome.success(), "the spinner must not get its CPU: {:?}", report.outcome);
    assert!(
        !matches!(report.outcome.ending, script_runner::run::Ending::TimedOut(_)),
        "stopped by the CPU limit, not the timeout: {:?}",
        report.outcome
    );
    assert!(report.result.is_none(), "{}", result(&report));

    let mut unlimited = def.clone();
    unlimited.cpu_seconds = 0;
    unlimited.env = vec![("N".into(), "1000".into())];
    let report = run(&r, &unlimited, &request(&[])).await;
    assert!(report.outcome.success(), "without the limit it runs: {}", artifact(&report, "stderr.log"));
    assert_eq!(result(&report)["spun"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_ends_everything_the_sandboxed_run_started() {
    let dir = TempDir::new("job-sandbox-timeout");
    let r = runner(policy(dir.path()));
    let name = local_tarball(dir.path(), "slow.tgz", &[Entry::File("slow.sh", b"sleep 300 &\nsleep 300\n")]);
    let marker = format!("SLOW_MARKER=timeout-{}", std::process::id());
    let def = definition(
        "slow",
        json!({
            "source": {"kind": "tarball_path", "file": name},
            "entry": "slow.sh",
            "runtime": "shell",
            "env": {"SLOW_MARKER": marker.split_once('=').unwrap().1},
            "timeout_seconds": 1,
        }),
    );
    let report = run(&r, &def, &request(&[])).await;
    assert_eq!(report.outcome.ending, script_runner::run::Ending::TimedOut(Duration::from_secs(1)));
    wait_for("every process of the run is gone", WAIT, || async {
        let left: Vec<i32> = processes_with(&marker)
            .into_iter()
            .map(|(pid, _, _)| pid)
            .filter(|pid| {
                // A zombie nobody reaped yet is gone for this purpose.
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| !s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')))
            })
            .collect();
        left.is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_sandbox_definitions_that_require_it_are_refused_and_the_others_run_plainly() {
    let dir = TempDir::new("job-no-sandbox");
    let mut p = policy(dir.path());
    p.sandbox = SandboxChoice::Off;
    let r = runner(p);
    assert!(r.describe().contains("no sandbox"), "{}", r.describe());
    let name = local_tarball(
        dir.path(),
        "plain.tgz",
        &[Entry::File("plain.sh", br#"echo "{\"sandboxed\": $PLUGHOST_SANDBOXED}""#)],
    );
    let source = json!({"kind": "tarball_path", "file": name});
    let strict = definition("strict", json!({"source": source, "entry": "plain.sh", "runtime": "shell"}));
    let err = r.run(&strict, &request(&[]), &CancellationToken::new(), None).await.unwrap_err();
    assert!(err.contains("requires the sandbox and this worker has none"), "{err}");
    let lax =
        definition("lax", json!({"source": source, "entry": "plain.sh", "runtime": "shell", "require_sandbox": false}));
    let report = run(&r, &lax, &request(&[])).await;
    assert!(report.outcome.success(), "{}", artifact(&report, "stderr.log"));
    assert!(!report.sandboxed);
    assert_eq!(result(&report)["sandboxed"], 0);
}

// ---------------------------------------------------------------------------------
// Through the admin: results and artifacts

const REPORT: &str = r#". "$PLUGHOST_HELPERS/plughost.sh"
[ "$(get_secret api_token)" = "SECRET" ] || { echo "wrong secret" >&2; exit 4; }
printf 'name,rows\nusers,3\n' > "$PLUGHOST_ARTIFACTS/report.csv"
echo one > "$PLUGHOST_ARTIFACTS/a-extra.txt"
echo two > "$PLUGHOST_ARTIFACTS/b-extra.txt"
echo "working in $(pwd) for $PLUGHOST_DEFINITION"
echo "a warning" >&2
echo '{"rows": 3, "tables": ["users"], "summary": "3 rows in 1 table"}'
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_definition_run_from_the_admin_returns_its_result_and_downloadable_capped_artifacts() {
    tests::init_tracing();
    let dir = TempDir::new("job-admin");
    // The admin keeps at most 4 artifacts per job; the worker sends at most 2 files of
    // its own besides the logs and the result.
    let admin = TestAdmin::start(&dir.path().join("admin"), |c| c.artifacts.max_per_job = 4).await;
    let mut p = policy(dir.path());
    p.artifacts_max_count = 2;
    let report_sh = REPORT.replace("SECRET", SECRET);
    let name = local_tarball(
        dir.path(),
        "report.tgz",
        &[
            Entry::Dir("jobs"),
            Entry::File("jobs/report.sh", report_sh.as_bytes()),
            Entry::File("jobs/tick.sh", b"echo tick"),
        ],
    );
    let handler = JobRunner::new(p).unwrap_or_else(|e| panic!("{e}"));
    assert!(handler.runner().sandbox.is_ok(), "{}", handler.runner().describe());
    let worker = PluginWorker::start(admin.grpc, "job-worker", &dir.path().join("worker"), vec![Arc::new(handler)]);
    plugins::wait_descriptor(&admin, T).await;
    let source = json!({"kind": "tarball_path", "file": name, "path": "jobs"});
    let definitions = json!({
        "report": {"source": source, "entry": "report.sh", "runtime": "shell", "secrets": ["api_token"]},
        "tick": {"source": source, "entry": "tick.sh", "runtime": "shell", "schedule_minutes": 60},
    });
    plugins::configure(
        &admin,
        T,
        json!({
            "definitions": {"map_value": {"fields": to_proto_map(&definitions)}},
            "secrets": plugins::string_map(&[("api_token", SECRET)]),
        }),
    )
    .await;

    // On its schedule: detection proposes the due definition, naming it and its source.
    plugins::run(&admin, T).await;
    let tick = wait_for("the scheduled definition's job", WAIT, || async {
        admin.jobs(&format!("job_type={T}&state=succeeded")).await.into_iter().next()
    })
    .await;
    let tick_id = tick["job_id"].as_str().unwrap().to_string();
    let spec = &plugins::detail(&admin, &tick_id).await["spec"];
    assert_eq!(spec["parameters"]["definition"]["string_value"], "tick", "{spec}");
    assert_eq!(spec["parameters"]["source"]["string_value"], format!("tarball_path {name}"), "{spec}");

    // On demand: a hand-made job names the definition.
    let r = http::post_json(
        &admin.http,
        &format!("/api/plugin/job-types/{T}/jobs"),
        &json!({"parameters": {"definition": {"string_value": "report"}}, "summary": "run the report"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["job"]["job_id"].as_str().unwrap().to_string();
    let job = wait_for("the report job ends", WAIT, || async {
        let d = plugins::detail(&admin, &id).await;
        (d["final"] == true).then_some(d)
    })
    .await;
    assert_eq!(job["job"]["state"], "job_state_succeeded", "{job}");
    let result = &job["result"];
    assert_eq!(plugins::int_output(result, "rows"), 3, "{result}");
    assert_eq!(result["output_values"]["tables"]["list_value"]["values"][0]["string_value"], "users");
    assert_eq!(result["summary"], "3 rows in 1 table");
    assert_eq!(result["output_values"]["sandboxed"]["bool_value"], true);
    let dropped = result["output_values"]["artifacts_dropped"].to_string();
    assert!(dropped.contains("report.csv: over the cap of 2 files"), "the worker's cap: {dropped}");
    assert!(!result.to_string().contains("plughost.artifact/"), "artifacts leave the result: {result}");
    assert!(!job.to_string().contains(SECRET), "the secret is not in the job record");

    // The worker sent 5 (report.csv stayed behind); the admin kept the first 4 by name.
    let list = admin.get(&format!("/api/plugin/jobs/{id}/artifacts")).await;
    let names: Vec<&str> = list["artifacts"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a-extra.txt", "b-extra.txt", "result.json", "stderr.log"], "{list}");

    let r = http::get(&admin.http, &format!("/api/plugin/jobs/{id}/artifacts/stderr.log")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "a warning\n");
    assert_eq!(r.headers["content-disposition"], "attachment; filename=\"stderr.log\"");
    assert_eq!(r.headers["content-type"], "application/octet-stream");
    assert_eq!(r.headers["x-content-type-options"], "nosniff");
    let r = http::get(&admin.http, &format!("/api/plugin/jobs/{id}/artifacts/result.json")).await;
    assert_eq!(serde_json::from_slice::<Value>(&r.body).unwrap()["rows"], 3);
    for bad in ["..%2Fstate.db", "report.csv", "stdout.log", ".hidden", "a%20b"] {
        let r = http::get(&admin.http, &format!("/api/plugin/jobs/{id}/artifacts/{bad}")).await;
        assert_eq!(r.status, 404, "{bad}: {}", r.text());
    }
    assert_eq!(http::get(&admin.http, "/api/plugin/jobs/j999999/artifacts").await.status, 404);
    let page = http::get(&admin.http, &format!("/plugin/jobs/{id}")).await;
    assert!(page.text().contains(&format!("/api/plugin/jobs/{id}/artifacts/stderr.log")), "the job page links them");
    let messages = plugins::detail(&admin, &id).await["activities"].to_string();
    assert!(messages.contains("stdout: working in /job/src/jobs for report"), "output as activities: {messages}");

    worker.stop().await;
    admin.stop().await;
}

/// Plain JSON as proto JSON config values (objects as maps, arrays as lists).
fn to_proto(v: &Value) -> Value {
    match v {
        Value::String(s) => json!({ "string_value": s }),
        Value::Bool(b) => json!({ "bool_value": b }),
        Value::Number(n) => json!({ "int64_value": n.to_string() }),
        Value::Array(items) => json!({ "list_value": { "values": items.iter().map(to_proto).collect::<Vec<_>>() } }),
        Value::Object(_) => json!({ "map_value": { "fields": to_proto_map(v) } }),
        Value::Null => json!({}),
    }
}

fn to_proto_map(v: &Value) -> Value {
    Value::Object(v.as_object().unwrap().iter().map(|(k, v)| (k.clone(), to_proto(v))).collect())
}
