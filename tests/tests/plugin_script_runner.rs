//! The `script` plugin with real processes: the secret reaches the script on stdin and
//! never its environment or command line (checked in `/proc`), output is cut at the
//! limit, a timeout or a cancel kills the script's children too, the exit code decides
//! success, and nothing runs on a worker without the opt-in.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use script_runner::{
    ScriptPolicy, ScriptRunner,
    command::{RunIdentity, ScriptCommand},
    run::{Ending, RunSpec, run},
    settings::{Interpreter, Source},
};
use serde_json::{Value, json};
use tests::{
    TempDir,
    harness::TestAdmin,
    http,
    plugins::{self, PluginWorker},
    wait_for,
};
use worker_sdk::CancellationToken;

const T: &str = "script";
const WAIT: Duration = Duration::from_secs(30);
const SECRET: &str = "s3cret-ba7f1c-token";

/// A script that records its pid and its children's, then waits for a `release` file.
const HOLD: &str = r#"cat > stdin.json
echo $$ > pid
sleep 300 &
echo $! > child.pid
while [ ! -f release ]; do sleep 0.05; done
"#;

async fn read_pid(dir: &Path, name: &str) -> i32 {
    let path = dir.join(name);
    wait_for(&format!("{name} written"), WAIT, || async {
        let text = std::fs::read_to_string(&path).ok()?;
        text.trim().parse().ok()
    })
    .await
}

/// Whether a process is gone: no /proc entry, or a zombie nobody has reaped yet.
fn is_dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

async fn wait_dead(pid: i32, what: &str) {
    wait_for(what, WAIT, || async { is_dead(pid).then_some(()) }).await;
}

fn spec(dir: &Path, script: &str, timeout: Duration, limit: usize) -> RunSpec {
    let who = RunIdentity { script_name: "test".into(), job_id: "j1".into(), attempt: 1 };
    let policy = ScriptPolicy::allowed(dir);
    let command = ScriptCommand::new(&policy, Interpreter::Sh, &Source::Inline(script.into()), &[], &who).unwrap();
    RunSpec { command, stdin: b"{}\n".to_vec(), timeout, output_limit: limit }
}

struct Setup {
    _dir: TempDir,
    scripts: PathBuf,
    admin: TestAdmin,
    worker: PluginWorker,
}

async fn setup(name: &str, allow: bool) -> Setup {
    tests::init_tracing();
    let dir = TempDir::new(name);
    let scripts = dir.path().join("scripts");
    let admin = TestAdmin::start(&dir.path().join("admin"), |_| {}).await;
    let policy = if allow { ScriptPolicy::allowed(&scripts) } else { ScriptPolicy::denied() };
    let runner = ScriptRunner::new(policy);
    let worker = PluginWorker::start(admin.grpc, "script-worker", &dir.path().join("worker"), vec![Arc::new(runner)]);
    plugins::wait_descriptor(&admin, T).await;
    Setup { _dir: dir, scripts, admin, worker }
}

async fn configure_script(admin: &TestAdmin, script: &str, extra: Value) {
    let mut values = json!({
        "name": plugins::string("probe"),
        "interpreter": plugins::string("sh"),
        "source": plugins::string("inline"),
        "script": plugins::string(script),
        "env": plugins::string_map(&[("GREETING", "hello")]),
        "secrets": plugins::string_map(&[("api_token", SECRET)]),
    });
    values.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    plugins::configure(admin, T, values).await;
}

async fn one_job(admin: &TestAdmin, state: &str) -> Value {
    admin.wait_jobs(&format!("the script job {state}"), &format!("job_type={T}"), 1, state).await.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_reaches_stdin_but_never_the_environment_or_the_command_line() {
    let s = setup("script-secret", true).await;
    configure_script(&s.admin, HOLD, json!({})).await;
    let saved = s.admin.get(&format!("/api/plugin/job-types/{T}/config")).await;
    assert!(!saved.to_string().contains(SECRET), "the admin never shows the secret again: {saved}");
    plugins::run(&s.admin, T).await;

    let pid = read_pid(&s.scripts, "pid").await;
    let child = read_pid(&s.scripts, "child.pid").await;
    for p in [pid, child] {
        let environ = std::fs::read(format!("/proc/{p}/environ")).unwrap();
        let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).unwrap();
        let environ = String::from_utf8_lossy(&environ);
        assert!(!environ.contains(SECRET), "secret in the environment of {p}");
        assert!(!String::from_utf8_lossy(&cmdline).contains(SECRET), "secret on the command line of {p}");
        assert!(environ.split('\0').any(|v| v == "GREETING=hello"), "parameters arrive as environment: {environ}");
    }
    let stdin: Value = serde_json::from_str(&std::fs::read_to_string(s.scripts.join("stdin.json")).unwrap()).unwrap();
    assert_eq!(stdin, json!({ "api_token": SECRET }), "the secret arrives on stdin as JSON");

    std::fs::write(s.scripts.join("release"), "").unwrap();
    let job = one_job(&s.admin, "succeeded").await;
    let detail = plugins::detail(&s.admin, job["job_id"].as_str().unwrap()).await;
    assert!(!detail.to_string().contains(SECRET), "the secret is not in the job record");
    wait_dead(child, "the script's background child is killed when it exits").await;
    s.worker.stop().await;
    s.admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_streamed_as_activities_and_cut_at_the_limit() {
    let s = setup("script-output", true).await;
    let script = r#"i=0; while [ $i -lt 200 ]; do printf 'line %03d %s\n' $i xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; i=$((i+1)); done; echo oops >&2"#;
    configure_script(&s.admin, script, json!({ "output_limit_bytes": plugins::int(1000) })).await;
    plugins::run(&s.admin, T).await;
    let job = one_job(&s.admin, "succeeded").await;

    let detail = plugins::detail(&s.admin, job["job_id"].as_str().unwrap()).await;
    let messages: Vec<String> = detail["activities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["message"].as_str().unwrap_or_default().to_string())
        .collect();
    let output: Vec<&str> = messages.iter().filter_map(|m| m.strip_prefix("stdout: ")).collect();
    assert!(output.contains(&"line 000 xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"), "{messages:?}");
    // Each forwarded line was charged its newline too, except a cut last line.
    let forwarded: usize = output.iter().map(|l| l.len()).sum::<usize>() + output.len() - 1;
    assert!((900..=1000).contains(&forwarded), "{forwarded} bytes forwarded");
    assert!(messages.iter().any(|m| m == "output truncated at 1000 bytes; the rest is dropped"), "{messages:?}");
    assert!(!messages.iter().any(|m| m.contains("line 199")));
    let result = &detail["result"];
    assert_eq!(result["output_values"]["output_truncated"]["bool_value"], true);
    assert!(plugins::int_output(result, "stdout_bytes") > 10_000, "all output was read: {result}");
    s.worker.stop().await;
    s.admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_kills_the_script_and_its_children() {
    let dir = TempDir::new("script-timeout");
    let script = "sleep 300 & echo $! > child.pid; sleep 300; echo never";
    let (tx, _rx) = tokio::sync::mpsc::channel(64);
    let spec = spec(dir.path(), script, Duration::from_millis(500), 4096);
    let child_pid = async { read_pid(dir.path(), "child.pid").await };
    let cancel = CancellationToken::new();
    let (outcome, child) = tokio::join!(run(&spec, &cancel, tx), child_pid);
    let outcome = outcome.unwrap();
    assert_eq!(outcome.ending, Ending::TimedOut(Duration::from_millis(500)));
    assert!(!outcome.success());
    assert!(outcome.failure("test").unwrap().contains("timed out"));
    wait_dead(outcome.pid as i32, "the script is killed").await;
    wait_dead(child, "the script's child is killed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_from_the_admin_kills_the_script_and_its_children() {
    let s = setup("script-cancel", true).await;
    configure_script(&s.admin, HOLD, json!({})).await;
    plugins::run(&s.admin, T).await;
    let pid = read_pid(&s.scripts, "pid").await;
    let child = read_pid(&s.scripts, "child.pid").await;
    let job = one_job(&s.admin, "running").await;

    let id = job["job_id"].as_str().unwrap();
    let r = http::post_json(&s.admin.http, &format!("/api/plugin/jobs/{id}/cancel"), &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    one_job(&s.admin, "canceled").await;
    wait_dead(pid, "the script is killed").await;
    wait_dead(child, "the script's child is killed").await;
    assert!(!s.scripts.join("release").exists());
    s.worker.stop().await;
    s.admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exit_code_decides_success() {
    let s = setup("script-exit", true).await;
    configure_script(&s.admin, "echo about to fail; exit 3", json!({})).await;
    plugins::run(&s.admin, T).await;
    let job = one_job(&s.admin, "failed").await;
    assert_eq!(job["error_message"], "script probe exited with code 3", "{job}");
    s.worker.stop().await;
    s.admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_runs_on_a_worker_without_the_opt_in() {
    let s = setup("script-denied", false).await;
    configure_script(&s.admin, "touch ran", json!({})).await;
    plugins::run(&s.admin, T).await;
    plugins::wait_detections(&s.admin, T, 2).await;
    assert!(s.admin.jobs(&format!("job_type={T}")).await.is_empty());
    let activities = s.admin.get(&format!("/api/plugin/activities?job_type={T}")).await;
    assert!(activities.to_string().contains("scripts are disabled on this worker"), "{activities}");
    s.worker.stop().await;
    s.admin.stop().await;
}
