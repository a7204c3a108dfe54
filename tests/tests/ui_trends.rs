//! Trends and logs against a real admin with real workers: the series API counts jobs a
//! worker built on the SDK succeeds and fails, by window, and counts them again from the
//! store after a restart; a `script` job run by the bundled script runner has its output
//! in its log (the download and the job page's panel: oldest first, stream labels, the
//! truncation mark), and the activity feed leaves that output out.

use std::{sync::Arc, time::Duration};

use script_runner::{ScriptPolicy, ScriptRunner};
use serde_json::{Value, json};
use tests::{
    TempDir,
    harness::TestAdmin,
    http,
    plugins::{self, PluginWorker},
    wait_for,
};
use worker_sdk::{
    CancellationToken, CapabilityExt, Descriptor, DetectionSender, HandlerResult, JobHandler, ProgressSender, Runtime,
    capability, pb,
};

const PROBE: &str = "trend_probe";
const WAIT: Duration = Duration::from_secs(60);

/// Runs jobs enqueued by hand: fails those with the parameter `fail` set, succeeds the
/// others. No retries, so a failure is final at once.
struct Probe;

#[worker_sdk::async_trait]
impl JobHandler for Probe {
    fn capability(&self) -> pb::JobTypeCapability {
        capability(PROBE, "Trend probe").detect(1).execute(4)
    }

    fn descriptor(&self) -> pb::JobTypeDescriptor {
        Descriptor::new(PROBE, "Trend probe").runtime(Runtime::default().enabled(false).retry_limit(0)).build()
    }

    async fn detect(&self, _: pb::RunDetectionRequest, _: DetectionSender, _: CancellationToken) -> HandlerResult<()> {
        Ok(())
    }

    async fn execute(
        &self,
        request: pb::ExecuteJobRequest,
        progress: ProgressSender,
        _cancel: CancellationToken,
    ) -> HandlerResult<pb::JobResult> {
        let job = request.job.unwrap_or_default();
        let fail = matches!(
            job.parameters.get("fail").and_then(|v| v.kind.as_ref()),
            Some(pb::config_value::Kind::BoolValue(true))
        );
        progress.activity(format!("probing {}", job.job_id)).await;
        if fail {
            return Err("asked to fail".into());
        }
        Ok(pb::JobResult { summary: "probed".into(), ..Default::default() })
    }
}

async fn enqueue(admin: &TestAdmin, key: &str, fail: bool) -> String {
    let body = json!({ "dedupe_key": key, "summary": key, "parameters": { "fail": { "bool_value": fail } } });
    let r = http::post_json(&admin.http, &format!("/api/plugin/job-types/{PROBE}/jobs"), &body).await;
    assert_eq!(r.status, 201, "enqueue {key}: {}", r.text());
    r.json()["job_id"].as_str().unwrap().to_string()
}

/// Enqueues `ok` jobs that succeed and `bad` that fail, and waits until all finished.
async fn run_probes(admin: &TestAdmin, prefix: &str, ok: usize, bad: usize) {
    for i in 0..ok + bad {
        enqueue(admin, &format!("{prefix}-{i}"), i >= ok).await;
    }
    wait_for("the probe jobs to finish", WAIT, || async {
        let jobs = admin.jobs(&format!("job_type={PROBE}&limit=1000")).await;
        let done = |s: &str| jobs.iter().filter(|j| j["job_id"].is_string() && j["state"] == s).count();
        (done("job_state_succeeded") + done("job_state_failed") == jobs.len() && !jobs.is_empty()).then_some(())
    })
    .await;
}

fn total(series: &Value, key: &str) -> u64 {
    series["totals"][key].as_u64().unwrap_or_else(|| panic!("no totals.{key} in {series}"))
}

/// The sum of `key` over a series' buckets.
fn summed(series: &Value, key: &str) -> u64 {
    series["buckets"].as_array().unwrap().iter().map(|b| b[key].as_u64().unwrap()).sum()
}

/// A token with the viewer role, made with the admin token.
async fn viewer_token(admin: &TestAdmin) -> String {
    let r = http::post_json(&admin.http, "/api/plugin/tokens", &json!({ "name": "watcher", "role": "viewer" })).await;
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["token"].as_str().unwrap().to_string()
}

async fn get_as(admin: &TestAdmin, token: &str, path: &str) -> http::Response {
    http::request(&admin.http, "GET", path, &[("authorization", &format!("Bearer {token}"))], Vec::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_series_counts_jobs_that_succeed_and_fail_in_each_window() {
    tests::init_tracing();
    let dir = TempDir::new("trends-series");
    let admin = TestAdmin::start(&dir.path().join("admin"), |_| {}).await;
    let worker = PluginWorker::start(admin.grpc, "probe-worker", &dir.path().join("worker"), vec![Arc::new(Probe)]);
    plugins::wait_descriptor(&admin, PROBE).await;
    let viewer = viewer_token(&admin).await;
    let path = format!("/api/plugin/job-types/{PROBE}/series");

    let before = get_as(&admin, &viewer, &path).await;
    assert_eq!(before.status, 200, "a viewer reads the series: {}", before.text());
    assert_eq!(total(&before.json(), "succeeded"), 0);

    run_probes(&admin, "a", 3, 2).await;
    // The series follows the event bus, so it may trail the job listing by a moment.
    let hour = wait_for("the series to count every job", WAIT, || async {
        let s = get_as(&admin, &viewer, &path).await.json();
        (total(&s, "succeeded") == 3 && total(&s, "failed") == 2).then_some(s)
    })
    .await;
    assert_eq!((hour["window"].as_str(), hour["bucket_seconds"].as_u64()), (Some("1h"), Some(60)));
    assert_eq!(hour["job_type"], PROBE);
    assert_eq!(hour["buckets"].as_array().unwrap().len(), 60);
    assert_eq!((summed(&hour, "succeeded"), summed(&hour, "failed"), summed(&hour, "canceled")), (3, 2, 0));
    assert!(hour["totals"]["run_p50_ms"].is_u64() && hour["totals"]["wait_p95_ms"].is_u64(), "{hour}");
    let starts: Vec<i64> = hour["buckets"].as_array().unwrap().iter().map(|b| b["start"].as_i64().unwrap()).collect();
    assert!(starts.windows(2).all(|w| w[1] - w[0] == 60_000), "minutes, oldest first");
    assert_eq!(hour["from"].as_i64(), Some(starts[0]));

    let day = get_as(&admin, &viewer, &format!("{path}?window=24h")).await.json();
    assert_eq!((day["window"].as_str(), day["bucket_seconds"].as_u64()), (Some("24h"), Some(900)));
    assert_eq!(day["buckets"].as_array().unwrap().len(), 96);
    assert_eq!((total(&day, "succeeded"), total(&day, "failed")), (3, 2));
    let overall = get_as(&admin, &viewer, "/api/plugin/series?window=24h").await.json();
    assert_eq!((total(&overall, "succeeded"), total(&overall, "failed")), (3, 2), "{overall}");
    assert!(overall.get("job_type").is_none());
    assert_eq!(overall["buckets"].as_array().unwrap().len(), 96);
    assert!(hour["totals"]["slots_total_now"].as_u64().is_some_and(|n| n >= 4), "the worker offers 4 slots: {hour}");

    for bad in ["7d", "1H", "60"] {
        let r = get_as(&admin, &viewer, &format!("{path}?window={bad}")).await;
        assert_eq!(r.status, 400, "window={bad}: {}", r.text());
        assert!(r.json()["error"].as_str().unwrap().contains("window must be 1h or 24h"), "{}", r.text());
    }
    assert_eq!(get_as(&admin, &viewer, "/api/plugin/series?window=week").await.status, 400);
    let unknown = get_as(&admin, &viewer, "/api/plugin/job-types/no_such_type/series").await;
    assert_eq!(unknown.status, 404, "{}", unknown.text());
    assert_eq!(get_as(&admin, &viewer, "/api/plugin/job-types/bad%20name/series").await.status, 400);
    let anonymous = http::request_without_auth(&admin.http, "GET", &path, &[], Vec::new()).await;
    assert_eq!(anonymous.status, 401);

    // The pages chart the same numbers, readable without a script, and switch windows by
    // plain links.
    let page = http::get(&admin.http, &format!("/plugin/job-types/{PROBE}")).await.text();
    assert!(page.contains(r#"id="lr-trends" data-live="job""#), "the charts are a live region");
    assert!(page.contains(r#"<strong data-figure="succeeded">3</strong>"#), "{page}");
    assert!(page.contains(r#"<strong data-figure="failed">2</strong>"#));
    assert!(page.contains("<title id=\"trend-finished-svg-title\">Finished jobs per minute</title>"));
    assert!(page.contains(r#"href="/plugin/job-types/trend_probe?window=24h""#));
    assert!(
        page.contains(r#"id="window-1h" aria-current="true""#)
            || page.contains(r#"aria-current="true" id="window-1h""#)
    );
    let day_page = http::get(&admin.http, &format!("/plugin/job-types/{PROBE}?window=24h")).await.text();
    assert!(day_page.contains("Finished jobs per 15 minutes"), "the 24 h window has 15-minute bars");
    assert!(day_page.contains(r#"aria-current="true" id="window-24h""#));
    let overview = http::get(&admin.http, "/plugin?window=24h").await.text();
    assert!(overview.contains(r#"<strong data-figure="succeeded">3</strong>"#), "the overview charts all job types");

    worker.stop().await;
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_series_is_rebuilt_from_the_store_after_a_restart() {
    tests::init_tracing();
    let dir = TempDir::new("trends-restart");
    let data = dir.path().join("admin");
    let admin = TestAdmin::start(&data, |_| {}).await;
    let worker = PluginWorker::start(admin.grpc, "probe-worker", &dir.path().join("worker"), vec![Arc::new(Probe)]);
    plugins::wait_descriptor(&admin, PROBE).await;
    run_probes(&admin, "r", 4, 1).await;
    let path = format!("/api/plugin/job-types/{PROBE}/series?window=24h");
    let before = wait_for("the series to count every job", WAIT, || async {
        let s = admin.get(&path).await;
        (total(&s, "succeeded") == 4 && total(&s, "failed") == 1).then_some(s)
    })
    .await;
    worker.stop().await;
    admin.stop().await;

    let admin = TestAdmin::start(&data, |_| {}).await;
    let after = wait_for("the rebuild from the store", WAIT, || async {
        let s = admin.get(&path).await;
        (s["complete"] == true).then_some(s)
    })
    .await;
    assert_eq!((total(&after, "succeeded"), total(&after, "failed")), (4, 1), "{after}");
    let counts = |s: &Value| {
        s["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| (b["succeeded"].clone(), b["failed"].clone()))
            .collect::<Vec<_>>()
    };
    // The 15-minute buckets are the same unless the restart crossed into a new one.
    if before["buckets"][95]["start"] == after["buckets"][95]["start"] {
        assert_eq!(counts(&before), counts(&after));
    }
    assert_eq!(after["totals"]["run_p50_ms"], before["totals"]["run_p50_ms"], "the same durations: {after}");
    assert_eq!(after["totals"]["wait_p50_ms"], before["totals"]["wait_p50_ms"]);
    let hour = admin.get(&format!("/api/plugin/job-types/{PROBE}/series")).await;
    assert_eq!(total(&hour, "succeeded"), 4, "the last hour too");
    admin.stop().await;
}

const SCRIPT: &str = "script";

struct ScriptSetup {
    _dir: TempDir,
    admin: TestAdmin,
    worker: PluginWorker,
}

async fn script_setup(name: &str) -> ScriptSetup {
    tests::init_tracing();
    let dir = TempDir::new(name);
    let admin = TestAdmin::start(&dir.path().join("admin"), |_| {}).await;
    let runner = ScriptRunner::new(ScriptPolicy::allowed(dir.path().join("scripts")));
    let worker = PluginWorker::start(admin.grpc, "script-worker", &dir.path().join("worker"), vec![Arc::new(runner)]);
    plugins::wait_descriptor(&admin, SCRIPT).await;
    ScriptSetup { _dir: dir, admin, worker }
}

/// Saves `script` (sh, inline) under `name`, runs it and waits for its job to succeed;
/// returns the job id.
async fn run_script(admin: &TestAdmin, name: &str, script: &str, output_limit: i64) -> String {
    plugins::configure(
        admin,
        SCRIPT,
        json!({
            "name": plugins::string(name),
            "interpreter": plugins::string("sh"),
            "source": plugins::string("inline"),
            "script": plugins::string(script),
            "output_limit_bytes": plugins::int(output_limit),
        }),
    )
    .await;
    plugins::run(admin, SCRIPT).await;
    wait_for(&format!("script {name} to succeed"), WAIT, || async {
        let jobs = admin.jobs(&format!("job_type={SCRIPT}")).await;
        jobs.iter()
            .find(|j| j["summary"] == format!("run script {name}") && j["state"] == "job_state_succeeded")
            .map(|j| j["job_id"].as_str().unwrap().to_string())
    })
    .await
}

/// The log's entries after its header: (stream, text).
fn entries(log: &str) -> Vec<(String, String)> {
    log.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (_time, rest) = l.split_once(' ').unwrap();
            let (stream, text) = rest.split_once(' ').unwrap();
            (stream.to_string(), text.trim_start().to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_jobs_log_is_served_oldest_first_with_its_streams_and_a_truncation_mark() {
    let s = script_setup("trends-log").await;
    let admin = &s.admin;

    // Two streams, in order within each.
    let small = run_script(admin, "small", "echo 'out one'\necho 'err one' >&2\necho 'out two'\n", 65_536).await;
    let r = http::get(&admin.http, &format!("/api/plugin/jobs/{small}/log")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let header = |name: &str| r.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    assert_eq!(header("content-type"), "text/plain; charset=utf-8");
    assert_eq!(header("content-disposition"), format!("attachment; filename=\"{small}.log\""));
    assert_eq!(header("x-content-type-options"), "nosniff");
    let log = r.text();
    assert!(log.starts_with(&format!("# Log of job {small} (script), oldest first: 3 lines\n")), "{log}");
    assert!(!log.contains("Earlier lines are left out"), "{log}");
    let lines = entries(&log);
    let stdout: Vec<&str> = lines.iter().filter(|l| l.0 == "stdout").map(|l| l.1.as_str()).collect();
    assert_eq!(stdout, ["out one", "out two"], "{log}");
    assert!(lines.contains(&("stderr".into(), "err one".into())), "{log}");

    // Past the worker's own output cap: its note is a worker activity, the last line.
    let capped =
        run_script(admin, "capped", "i=0\nwhile [ $i -lt 200 ]; do echo \"filler $i\"; i=$((i+1)); done\n", 256).await;
    let log = http::get(&admin.http, &format!("/api/plugin/jobs/{capped}/log")).await.text();
    let lines = entries(&log);
    let (last_stream, last_text) = lines.last().unwrap();
    assert_eq!(last_stream, "worker", "{log}");
    assert_eq!(last_text, "[running] output truncated at 256 bytes; the rest is dropped");
    assert_eq!(lines[0], ("stdout".to_string(), "filler 0".to_string()));
    assert!(lines.iter().all(|l| l.0 == "stdout" || l.0 == "worker"));

    // More than the log keeps: the newest lines, with the mark.
    let long =
        run_script(admin, "long", "i=1000\nwhile [ $i -lt 7000 ]; do echo \"line $i\"; i=$((i+1)); done\n", 65_536)
            .await;
    let log = http::get(&admin.http, &format!("/api/plugin/jobs/{long}/log")).await.text();
    assert!(
        log.contains("# Earlier lines are left out: this log keeps the newest 5000 lines, at most 512 KiB.\n"),
        "{}",
        &log[..300]
    );
    let lines = entries(&log);
    assert_eq!(lines.len(), 5000);
    assert_eq!(lines[0], ("stdout".to_string(), "line 2000".to_string()), "the newest 5000 of 6000 lines");
    assert_eq!(lines[4999], ("stdout".to_string(), "line 6999".to_string()));

    // The job page's panel: the newest 200 lines, oldest first, labelled, with the mark.
    let page = http::get(&admin.http, &format!("/plugin/jobs/{long}")).await.text();
    assert!(page.contains(r#"id="lr-job-log" data-live="activity""#), "the log is a live region");
    assert!(page.contains(r#"id="log-truncated""#), "the panel says it left lines out");
    assert!(page.contains("this log keeps the newest 200 lines, at most 64 KiB"));
    assert!(page.contains(&format!(r#"href="/api/plugin/jobs/{long}/log" id="log-download" download"#)));
    assert_eq!(page.matches(r#"data-stream="stdout""#).count(), 200);
    let (first, last) = (page.find(">line 6800<").expect("line 6800"), page.find(">line 6999<").expect("line 6999"));
    assert!(first < last, "oldest first");
    assert!(!page.contains(">line 6799<"), "older lines are left out of the panel");
    let small_page = http::get(&admin.http, &format!("/plugin/jobs/{small}")).await.text();
    assert!(!small_page.contains(r#"id="log-truncated""#));
    assert!(small_page.contains(r#"<tr class="log-stderr" data-stream="stderr">"#));
    assert!(
        small_page.contains(r#"<td class="log-stream">stderr</td><td class="log-text">err one</td>"#),
        "{small_page}"
    );
    let capped_page = http::get(&admin.http, &format!("/plugin/jobs/{capped}")).await.text();
    assert!(capped_page.contains(r#"<span class="log-stage">[running]</span> output truncated at 256 bytes"#));

    assert_eq!(http::get(&admin.http, "/api/plugin/jobs/j999999/log").await.status, 404);
    assert_eq!(http::get(&admin.http, "/api/plugin/jobs/nope/log").await.status, 404);

    s.worker.stop().await;
    s.admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_lines_stay_out_of_the_activity_feed_and_in_storage() {
    let s = script_setup("trends-feed").await;
    let admin = &s.admin;
    let job = run_script(
        admin,
        "chatty",
        "echo 'chatty-out-1'\necho 'chatty-err-1' >&2\nyes chatty-flood | head -n 100\n",
        256,
    )
    .await;
    admin.components().store.settle().await;

    // Stored: the JSON API's activities (and the log) still have them.
    let stored = admin.get(&format!("/api/plugin/activities?job_id={job}")).await;
    let messages: Vec<&str> = stored.as_array().unwrap().iter().filter_map(|a| a["message"].as_str()).collect();
    assert!(messages.iter().any(|m| m.starts_with("stdout: ")), "{messages:?}");
    assert!(messages.iter().any(|m| m.starts_with("output truncated at 256 bytes")), "{messages:?}");

    // The feed: the overview's recent activity and the activities page, with or without
    // a filter, show the worker's note but no output line.
    for path in [
        "/plugin".to_string(),
        "/plugin/activities".to_string(),
        format!("/plugin/activities?job_id={job}"),
        format!("/plugin/activities?job_type={SCRIPT}"),
    ] {
        let page = http::get(&admin.http, &path).await.text();
        assert!(!page.contains("chatty-out-1") && !page.contains("chatty-err-1"), "{path} shows output");
        assert!(!page.contains("chatty-flood"), "{path} shows output");
        assert!(!page.contains("stdout: "), "{path} shows output");
        if path != "/plugin" {
            assert!(page.contains("output truncated at 256 bytes"), "{path} lost the worker's note");
        }
    }
    let overview = http::get(&admin.http, "/plugin").await.text();
    let feed = &overview[overview.find(r#"id="lr-activity""#).unwrap()..];
    assert!(feed.starts_with(r#"id="lr-activity" data-live="activity" data-live-no-output"#));
    assert!(feed.contains("output truncated at 256 bytes"), "the newest non-output activities are listed");

    // And the job's log has every one of them.
    let log = http::get(&admin.http, &format!("/api/plugin/jobs/{job}/log")).await.text();
    assert!(log.contains("stdout  chatty-out-1") || log.contains("stderr  chatty-err-1"), "{log}");

    s.worker.stop().await;
    s.admin.stop().await;
}
