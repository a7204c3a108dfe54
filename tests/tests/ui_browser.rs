//! The /plugin pages in a real headless Chromium (driven over WebDriver), against a real
//! admin with a real worker built on the worker SDK: an operator opens the overview, goes
//! to the job type, switches its tabs in place, saves a setting, gets an out-of-range value
//! refused next to its field, runs the job type and watches the job's state and progress
//! change without reloading, and a tab switched to in place keeps following events.
//! Screenshots land in target/screenshots/.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use serde_json::{Value, json};
use tests::{
    TempDir,
    browser::{Browser, screenshot_path},
    harness::TestAdmin,
    http, wait_for,
};
use tokio::sync::watch;
use worker_sdk::{
    CancellationToken, CapabilityExt, Descriptor, DetectionSender, Field, Form, HandlerResult, JobHandler,
    ProgressSender, Runtime, Section, Worker, WorkerConfig, capability, pb,
};

const JT: &str = "volume_balance";
const WAIT: Duration = Duration::from_secs(30);

/// A job type whose detection proposes one job when the test arms it, and whose
/// execution reports 25 %, waits for the test, reports 75 %, waits again, then succeeds.
struct Balance {
    propose: Arc<AtomicBool>,
    step: watch::Receiver<u32>,
}

#[worker_sdk::async_trait]
impl JobHandler for Balance {
    fn capability(&self) -> pb::JobTypeCapability {
        capability(JT, "Volume balance").detect(1).execute(2).description("Evens out disk use across racks")
    }

    fn descriptor(&self) -> pb::JobTypeDescriptor {
        Descriptor::new(JT, "Volume balance")
            .description("Moves volumes between racks so that disk use evens out.")
            .admin_form(
                Form::new("admin", "Balancing").section(
                    Section::new("scope", "Scope")
                        .field(
                            Field::int("batch_size", "Batch size")
                                .range(1, 100)
                                .default_value(10)
                                .description("Volumes moved per job."),
                        )
                        .field(
                            Field::select("mode", "Mode", &[("safe", "Safe: verify every copy"), ("fast", "Fast")])
                                .default_value("safe"),
                        )
                        .field(
                            Field::string("report_path", "Verification report")
                                .placeholder("/var/log/balance-report.txt")
                                .visible_when("mode", "safe"),
                        )
                        .field(Field::boolean("dry_run", "Dry run").description("Propose moves without making them."))
                        .field(Field::duration("pause", "Pause between moves").default_value(Duration::from_secs(30)))
                        .field(Field::multi_select(
                            "racks",
                            "Racks",
                            &[("a", "Rack A"), ("b", "Rack B"), ("c", "Rack C")],
                        )),
                ),
            )
            .worker_form(
                Form::new("worker", "Connection").section(
                    Section::new("cluster", "Cluster access")
                        .field(Field::string("endpoint", "Master endpoint").default_value("http://127.0.0.1:9333"))
                        .field(Field::string("api_token", "API token").sensitive()),
                ),
            )
            .runtime(Runtime::default().interval_minutes(60).retry_limit(1).execution_timeout_seconds(300))
            .build()
    }

    async fn detect(
        &self,
        _request: pb::RunDetectionRequest,
        out: DetectionSender,
        _cancel: CancellationToken,
    ) -> HandlerResult<()> {
        if self.propose.swap(false, Ordering::SeqCst) {
            out.activity("rack A is 31 % fuller than rack B").await;
            out.send(vec![pb::JobProposal {
                proposal_id: "p-7".into(),
                dedupe_key: "move-volume-7".into(),
                summary: "Move volume 7 from rack A to rack B".into(),
                ..Default::default()
            }])
            .await?;
        }
        Ok(())
    }

    async fn execute(
        &self,
        _request: pb::ExecuteJobRequest,
        progress: ProgressSender,
        cancel: CancellationToken,
    ) -> HandlerResult<pb::JobResult> {
        let mut step = self.step.clone();
        progress.progress(25.0, "copying", "copying volume 7").await;
        progress.activity("copying 1.2 GiB from rack A to rack B").await;
        tokio::select! {
            _ = step.wait_for(|s| *s >= 1) => {}
            _ = cancel.cancelled() => return Err("canceled".into()),
        }
        progress.progress(75.0, "verifying", "verifying the copy").await;
        progress.activity("checksums match").await;
        tokio::select! {
            _ = step.wait_for(|s| *s >= 2) => {}
            _ = cancel.cancelled() => return Err("canceled".into()),
        }
        Ok(pb::JobResult { summary: "moved volume 7".into(), ..Default::default() })
    }
}

/// `return <expr>` polled until truthy.
async fn until(browser: &Browser, what: &str, expr: &str) -> Value {
    browser.wait_for_script(what, WAIT, &format!("return {expr};")).await
}

/// "state progress" of the first job row in the job type page's jobs table.
const FIRST_JOB: &str = "(function () { var r = document.querySelector('#lr-jobs [data-job-row]'); \
     if (!r) return ''; return r.querySelector('[data-field=\"state\"]').textContent + ' ' + \
     r.querySelector('[data-field=\"progress-text\"]').textContent; })()";

fn batch_size(config: &Value) -> Option<i64> {
    let v = &config["admin_config_values"]["batch_size"]["int64_value"];
    v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_edits_settings_and_watches_a_run_live_in_a_real_browser() {
    tests::init_tracing();
    let dir = TempDir::new("ui-browser");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let propose = Arc::new(AtomicBool::new(false));
    let (step, step_rx) = watch::channel(0u32);
    let worker_dir = TempDir::new("ui-browser-worker");
    let mut config = WorkerConfig::new(format!("grpc://{}", admin.grpc), worker_dir.path());
    config.worker_id = Some("rack-worker-1".into());
    config.address = "10.0.4.17:7001".into();
    config.version = "1.4.2".into();
    let shutdown = CancellationToken::new();
    let worker = Worker::new(config).handler(Balance { propose: propose.clone(), step: step_rx });
    let worker_run = tokio::spawn(worker.run(shutdown.clone()));
    wait_for("the worker's descriptor is stored", WAIT, || async { admin.components().configs.config(JT).map(|_| ()) })
        .await;

    let browser = Browser::start().await;
    let base = format!("http://{}", admin.http);

    // An anonymous visitor is sent to the login page; the admin token signs in.
    browser.goto(&format!("{base}/plugin")).await;
    until(&browser, "the login page", "document.querySelector('input[name=\"token\"]')").await;
    assert!(browser.url().await.contains("/plugin/login"), "an anonymous visitor is sent to the login page");
    let token = std::fs::read_to_string(dir.path().join("plugin/admin.token")).expect("the first admin token");
    browser.type_into(&browser.find("input[name='token']").await, token.trim()).await;
    browser.click(&browser.find("form[action='/plugin/login'] button").await).await;
    until(
        &browser,
        "signed in",
        "(document.getElementById('flash') || {}).textContent === 'Signed in as admin (admin).'",
    )
    .await;

    // The overview lists the worker and the job type; the job type's link opens its page.
    browser.goto(&format!("{base}/plugin")).await;
    assert_eq!(browser.title().await, "Overview · Plughost");
    until(&browser, "the overview lists the worker", "document.querySelector('[data-worker=\"rack-worker-1\"]')").await;
    let link = browser.find(&format!("#lr-types a[href=\"/plugin/job-types/{JT}\"]")).await;
    browser.click(&link).await;
    until(&browser, "the job type page", "document.querySelector('#tab-status[aria-current=\"page\"]')").await;
    assert!(browser.url().await.ends_with(&format!("/plugin/job-types/{JT}")));

    // Its tabs switch without a reload, and the address says which one is shown.
    browser.script("window.plughostMarker = 'not reloaded'; return true", vec![]).await;
    browser.click(&browser.find("#tab-configuration").await).await;
    until(&browser, "the configuration tab", "document.querySelector('[name=\"admin.batch_size\"]')").await;
    assert!(browser.url().await.ends_with(&format!("/plugin/job-types/{JT}?tab=configuration")));
    assert_eq!(browser.script("return window.plughostMarker", vec![]).await, "not reloaded");
    assert_eq!(
        browser.script("return document.querySelector('#job-type-tabs [aria-current]').id", vec![]).await,
        "tab-configuration"
    );
    assert!(browser.find_all("#action-run").await.is_empty(), "the status tab's content is gone");

    // Change a field and save: persisted.
    let input = browser.find("[name='admin.batch_size']").await;
    assert_eq!(browser.property(&input, "value").await, "10");
    browser.clear(&input).await;
    browser.type_into(&input, "42").await;
    browser.click(&browser.find("#save-config").await).await;
    until(
        &browser,
        "the saved notice",
        "(document.getElementById('flash') || {}).textContent === 'Configuration saved.'",
    )
    .await;
    let saved = admin.get(&format!("/api/plugin/job-types/{JT}/config")).await;
    assert_eq!(batch_size(&saved), Some(42), "the API sees the saved value: {saved}");
    let input = browser.find("[name='admin.batch_size']").await;
    assert_eq!(browser.property(&input, "value").await, "42", "the page shows the saved value");

    // An out-of-range value is refused, next to its field, with the input kept.
    browser.clear(&input).await;
    browser.type_into(&input, "500").await;
    browser.click(&browser.find("#save-config").await).await;
    let error = until(
        &browser,
        "the error next to the field",
        "(document.querySelector('[name=\"admin.batch_size\"]').closest('.field').querySelector('.error') || {}).textContent",
    )
    .await;
    assert_eq!(error, "Must be at most 100.");
    let input = browser.find("[name='admin.batch_size']").await;
    assert_eq!(browser.property(&input, "value").await, "500", "the operator's input is kept");
    assert_eq!(batch_size(&admin.get(&format!("/api/plugin/job-types/{JT}/config")).await), Some(42));
    browser
        .script(
            "document.querySelector('[name=\"admin.batch_size\"]').scrollIntoView({block: 'center'}); return true",
            vec![],
        )
        .await;
    browser.screenshot(&screenshot_path("job_type_error.png")).await;

    // visible_when: the report path shows only while the mode is "safe".
    browser.goto(&format!("{base}/plugin/job-types/{JT}?tab=configuration")).await;
    let report_hidden = "document.querySelector('[name=\"admin.report_path\"]').closest('.field').hidden";
    assert_eq!(browser.script(&format!("return {report_hidden};"), vec![]).await, false);
    browser.click(&browser.find("[name='admin.mode'] option[value='fast']").await).await;
    until(&browser, "the report path to hide", report_hidden).await;
    browser.click(&browser.find("[name='admin.mode'] option[value='safe']").await).await;
    until(&browser, "the report path to show", &format!("!{report_hidden}")).await;

    // Run: the job appears, and its state and progress change on the page, live.
    propose.store(true, Ordering::SeqCst);
    browser.click(&browser.find("#tab-status").await).await;
    until(&browser, "the status tab", "document.getElementById('action-run')").await;
    browser.click(&browser.find("#action-run").await).await;
    until(
        &browser,
        "the run notice",
        "((document.getElementById('flash') || {}).textContent || '').startsWith('Run started')",
    )
    .await;
    browser.script("window.plughostMarker = 'not reloaded'; return true", vec![]).await;
    until(&browser, "the live connection", "document.getElementById('live-status').textContent === 'live'").await;
    until(&browser, "the job to run at 25 %", &format!("{FIRST_JOB} === 'running 25%'")).await;
    step.send(1).unwrap();
    until(&browser, "the progress to reach 75 %", &format!("{FIRST_JOB} === 'running 75%'")).await;
    step.send(2).unwrap();
    until(&browser, "the job to succeed", &format!("{FIRST_JOB} === 'succeeded 100%'")).await;
    assert_eq!(
        browser.script("return window.plughostMarker", vec![]).await,
        "not reloaded",
        "the page changed without a reload"
    );
    assert!(browser.url().await.contains(&format!("/plugin/job-types/{JT}?tab=status")), "back on the status tab");
    until(
        &browser,
        "the page to settle after the run",
        "document.querySelector('#lr-status [data-stat=\"succeeded\"]').textContent === '1' \
         && !document.querySelector('#lr-jobs .col-actions form')",
    )
    .await;

    // Screenshots of the pages as an operator sees them.
    browser.script("window.scrollTo(0, 0); return true", vec![]).await;
    browser.screenshot_page(&screenshot_path("job_type.png"), 3200).await;
    // The history tab, switched to in place, has the run.
    browser.click(&browser.find("#tab-history").await).await;
    until(
        &browser,
        "the run in the history tab",
        "(document.querySelector('#lr-runs') || {textContent: ''}).textContent.includes('job run')",
    )
    .await;
    assert_eq!(browser.script("return window.plughostMarker", vec![]).await, "not reloaded");
    // Its live region follows events like one the page was loaded with.
    let detections = "document.querySelectorAll('#lr-runs .badge.ok').length";
    let before = browser.script(&format!("return {detections}"), vec![]).await.as_u64().unwrap();
    let r = http::post_json(&admin.http, &format!("/api/plugin/job-types/{JT}/detect?wait=false"), &json!({})).await;
    assert_eq!(r.status, 202, "{}", r.text());
    until(&browser, "the new detection in the history, live", &format!("{detections} > {before}")).await;
    assert_eq!(browser.script("return window.plughostMarker", vec![]).await, "not reloaded");
    let job_id = admin.jobs(&format!("job_type={JT}")).await[0]["job_id"].as_str().unwrap().to_string();
    browser.goto(&format!("{base}/plugin/jobs/{job_id}")).await;
    until(&browser, "the job page", "document.querySelector('#lr-attempts .badge')").await;
    browser.screenshot_page(&screenshot_path("job.png"), 2400).await;
    browser.goto(&format!("{base}/plugin/jobs")).await;
    until(&browser, "the jobs page", "document.querySelector('#lr-jobs [data-job-row]')").await;
    browser.screenshot_page(&screenshot_path("jobs.png"), 2400).await;
    browser.goto(&format!("{base}/plugin/workers")).await;
    until(&browser, "the workers page", "document.querySelector('[data-worker=\"rack-worker-1\"]')").await;
    browser.screenshot_page(&screenshot_path("workers.png"), 2400).await;
    browser.goto(&format!("{base}/plugin")).await;
    until(&browser, "the overview's live connection", "document.getElementById('live-status').textContent === 'live'")
        .await;
    browser.screenshot_page(&screenshot_path("overview.png"), 2400).await;

    browser.quit();
    shutdown.cancel();
    let _ = tests::within("the worker to stop", WAIT, worker_run).await;
    admin.stop().await;
}
