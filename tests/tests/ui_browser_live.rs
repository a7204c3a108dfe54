//! Trends and logs in a real headless Chromium (over WebDriver, as `ui_browser.rs`),
//! against a real admin and the bundled script runner on a real SDK worker: an operator
//! watches a running script's log tail grow on its job page, then watches the job type's
//! chart count the job once it finishes, neither page reloading; and reads a waiting
//! job's reason change when the worker attaches. Screenshots land in target/screenshots/.

use std::{path::Path, sync::Arc, time::Duration};

use script_runner::{ScriptPolicy, ScriptRunner};
use serde_json::{Value, json};
use tests::{
    TempDir,
    browser::{Browser, screenshot_path},
    harness::TestAdmin,
    plugins::{self, PluginWorker},
    wait_for,
};

const WAIT: Duration = Duration::from_secs(30);

/// Writes a line, waits for the test's `gate1`, writes one to stderr, waits for `gate2`.
const GATED: &str = "echo 'tick one'
while [ ! -f gate1 ]; do sleep 0.05; done
echo 'tick two' >&2
while [ ! -f gate2 ]; do sleep 0.05; done
echo 'tick three'
";

/// `return <expr>` polled until truthy.
async fn until(browser: &Browser, what: &str, expr: &str) -> Value {
    browser.wait_for_script(what, WAIT, &format!("return {expr};")).await
}

async fn sign_in(browser: &Browser, base: &str, data_dir: &Path) {
    let token = std::fs::read_to_string(data_dir.join("plugin/admin.token")).expect("the first admin token");
    browser.sign_in(base, &token).await;
}

/// The texts of the log panel's lines, as "stream text".
const LOG_LINES: &str = "Array.from(document.querySelectorAll('#lr-job-log tr[data-stream]')).map(function (r) { \
     return r.dataset.stream + ' ' + r.querySelector('.log-text').textContent; }).join('|')";

/// The job type page's count of succeeded jobs under its chart.
const SUCCEEDED: &str = "(document.querySelector('#trend-finished [data-figure=\"succeeded\"]') || {}).textContent";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_tail_and_a_chart_update_live_while_a_script_runs_and_finishes() {
    tests::init_tracing();
    let dir = TempDir::new("ui-live");
    let data = dir.path().join("admin");
    let scripts = dir.path().join("scripts");
    let admin = TestAdmin::start(&data, |_| {}).await;
    let runner = ScriptRunner::new(ScriptPolicy::allowed(&scripts));
    let worker = PluginWorker::start(admin.grpc, "script-worker", &dir.path().join("worker"), vec![Arc::new(runner)]);
    plugins::wait_descriptor(&admin, "script").await;
    plugins::configure(
        &admin,
        "script",
        json!({
            "name": plugins::string("gated"),
            "interpreter": plugins::string("sh"),
            "source": plugins::string("inline"),
            "script": plugins::string(GATED),
        }),
    )
    .await;

    let browser = Browser::start().await;
    let base = format!("http://{}", admin.http);
    sign_in(&browser, &base, &data).await;

    plugins::run(&admin, "script").await;
    let job_id = wait_for("the script to run", WAIT, || async {
        let jobs = admin.jobs("job_type=script&state=running").await;
        jobs.first().map(|j| j["job_id"].as_str().unwrap().to_string())
    })
    .await;

    // The job page's log shows the first line, then the next one as the script writes it.
    browser.goto(&format!("{base}/plugin/jobs/{job_id}")).await;
    until(&browser, "the first line in the log", &format!("{LOG_LINES} === 'stdout tick one'")).await;
    browser.script("window.plughostMarker = 'not reloaded'; return true", vec![]).await;
    until(&browser, "the live connection", "document.getElementById('live-status').textContent === 'live'").await;
    std::fs::write(scripts.join("gate1"), b"").unwrap();
    until(&browser, "the stderr line in the log, live", &format!("{LOG_LINES} === 'stdout tick one|stderr tick two'"))
        .await;
    assert_eq!(browser.script("return window.plughostMarker", vec![]).await, "not reloaded");
    let download = browser.find("#log-download").await;
    assert_eq!(browser.property(&download, "href").await, format!("{base}/api/plugin/jobs/{job_id}/log"));
    browser.script("document.getElementById('lr-job-log').scrollIntoView(); return true", vec![]).await;
    browser.screenshot(&screenshot_path("job_log.png")).await;

    // The job type's chart counts the job when it finishes.
    browser.goto(&format!("{base}/plugin/job-types/script")).await;
    until(&browser, "the trends", &format!("{SUCCEEDED} === '0'")).await;
    browser.script("window.plughostMarker = 'not reloaded'; return true", vec![]).await;
    until(&browser, "the live connection", "document.getElementById('live-status').textContent === 'live'").await;
    assert_eq!(browser.script("return document.querySelectorAll('#trend-finished rect').length", vec![]).await, 0);
    std::fs::write(scripts.join("gate2"), b"").unwrap();
    until(&browser, "the chart to count the job, live", &format!("{SUCCEEDED} === '1'")).await;
    until(
        &browser,
        "a bar for it",
        "document.querySelector('#trend-finished rect.ok title').textContent.endsWith(': 1 succeeded, 0 failed, 0 canceled')",
    )
    .await;
    assert_eq!(browser.script("return window.plughostMarker", vec![]).await, "not reloaded");
    browser.script("document.getElementById('lr-trends').scrollIntoView(); return true", vec![]).await;
    browser.screenshot(&screenshot_path("job_type_trends.png")).await;

    // The day's window is a plain link.
    browser.click(&browser.find("#window-24h").await).await;
    until(&browser, "the day's window", "document.querySelector('#lr-trends').dataset.window === '24h'").await;
    assert_eq!(browser.script(&format!("return {SUCCEEDED}"), vec![]).await, "1");
    browser.goto(&format!("{base}/plugin")).await;
    until(&browser, "the overview's trends", &format!("{SUCCEEDED} === '1'")).await;
    browser.screenshot_page(&screenshot_path("overview_trends.png"), 2400).await;

    browser.quit();
    worker.stop().await;
    admin.stop().await;
}

/// The reason code of the job page's "why is this job waiting" box ("" once it is gone).
const WHY: &str = "((document.getElementById('why-waiting') || { dataset: {} }).dataset.reason || '')";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_jobs_reason_changes_live_when_a_worker_attaches() {
    let dir = TempDir::new("ui-why");
    let data = dir.path().join("admin");
    let scripts = dir.path().join("scripts");
    let admin = TestAdmin::start(&data, |_| {}).await;
    let start_worker = || {
        let runner = ScriptRunner::new(ScriptPolicy::allowed(&scripts));
        PluginWorker::start(admin.grpc, "script-worker", &dir.path().join("worker"), vec![Arc::new(runner)])
    };
    // The worker brings the job type and its one slot, then leaves.
    let worker = start_worker();
    plugins::wait_descriptor(&admin, "script").await;
    let script = json!({
        "name": plugins::string("gated"),
        "interpreter": plugins::string("sh"),
        "source": plugins::string("inline"),
        "script": plugins::string(GATED),
    });
    plugins::configure(&admin, "script", script).await;
    worker.stop().await;
    wait_for("the worker gone", WAIT, || async {
        admin.get("/api/plugin/workers").await.as_array().is_some_and(|w| w.is_empty()).then_some(())
    })
    .await;

    // Two jobs by hand: nobody can run them.
    let mut ids = Vec::new();
    for key in ["first", "second"] {
        let body = json!({ "parameters": {}, "dedupe_key": key, "summary": format!("job {key}") });
        let r = tests::http::post_json(&admin.http, "/api/plugin/job-types/script/jobs", &body).await;
        assert_eq!(r.status, 201, "{}", r.text());
        ids.push(r.json()["job"]["job_id"].as_str().unwrap().to_string());
    }

    let browser = Browser::start().await;
    let base = format!("http://{}", admin.http);
    sign_in(&browser, &base, &data).await;
    browser.goto(&format!("{base}/plugin/jobs/{}", ids[1])).await;
    until(&browser, "no executor", &format!("{WHY} === 'no_executor'")).await;
    let message =
        browser.script("return document.querySelector('#why-waiting .why-message').textContent", vec![]).await;
    assert!(message.as_str().unwrap().to_lowercase().contains("no connected worker"), "{message}");
    browser.screenshot(&screenshot_path("job_waiting_no_executor.png")).await;
    browser.script("window.plughostMarker = 'not reloaded'; return true", vec![]).await;
    until(&browser, "the live connection", "document.getElementById('live-status').textContent === 'live'").await;

    // The worker attaches: the first job takes its only slot, and the second one's page
    // says so without a reload.
    let worker = start_worker();
    // Its one slot is taken, which is also the job type's global concurrency of 1: the
    // page says what the dispatcher says, without a reload.
    let reason = wait_for("the first job running", WAIT, || async {
        let e = admin.get(&format!("/api/plugin/jobs/{}/explain", ids[1])).await;
        let reason = e["reason"].as_str()?.to_string();
        ["concurrency_reached", "slots_full"].contains(&reason.as_str()).then_some(reason)
    })
    .await;
    until(&browser, "the reason to change", &format!("{WHY} === '{reason}'")).await;
    let message =
        browser.script("return document.querySelector('#why-waiting .why-message').textContent", vec![]).await;
    assert!(message.as_str().unwrap().contains("1 of 1"), "{message}");
    assert_eq!(browser.script("return window.plughostMarker", vec![]).await, "not reloaded");
    browser.screenshot(&screenshot_path("job_waiting_busy.png")).await;

    worker.stop().await;
    admin.stop().await;
}
