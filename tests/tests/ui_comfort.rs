//! Every /plugin page in a real headless Chromium, as an operator on any screen sees it:
//! light and dark (the system's colour scheme, emulated), and 400 px wide (nothing wider
//! than the screen; tables scroll inside their card), with a screenshot of each into
//! target/screenshots/ (`page-<name>.png`, `page-<name>-dark.png`, `page-<name>-400.png`;
//! each tab of the job type page as `page-job-type-<tab>`, and the script job type's
//! configuration with its key/value rows as `page-job-type-script-configuration`); and `/`
//! focuses the job search, on the jobs page its own filter.

use std::{sync::Arc, time::Duration};

use script_runner::{ScriptPolicy, ScriptRunner};
use serde_json::json;
use tests::{
    TempDir,
    browser::{Browser, screenshot_path},
    harness::TestAdmin,
    plugins::{self, PluginWorker},
    wait_for,
};

const WAIT: Duration = Duration::from_secs(30);
const T: &str = "sqlite_vacuum";

/// The page's background colour as the browser computed it.
const BACKGROUND: &str = "return getComputedStyle(document.body).backgroundColor";
/// `--bg` of the light and of the dark palette (admin/static/app.css).
const LIGHT_BG: &str = "rgb(245, 247, 250)";
const DARK_BG: &str = "rgb(15, 20, 27)";
/// The outermost elements that reach past the screen's right edge, for the failure
/// message.
const WIDEST: &str = "const w = document.documentElement.clientWidth; \
    const name = e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') \
      + (e.className ? '.' + String(e.className).trim().replace(/ +/g, '.') : ''); \
    return Array.from(document.querySelectorAll('body *')) \
      .filter(e => e.getBoundingClientRect().right > w + 0.5 && e.parentElement.getBoundingClientRect().right <= w + 0.5) \
      .slice(0, 4) \
      .map(e => { const path = []; for (let a = e; a && a !== document.body; a = a.parentElement) path.push(name(a)); \
        return path.reverse().join(' > ') + ' ' + Math.round(e.getBoundingClientRect().right); });";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_reads_in_light_and_dark_and_at_400_px_and_slash_focuses_the_job_search() {
    let dir = TempDir::new("ui-comfort");
    let admin = TestAdmin::start(&dir.path().join("admin"), |_| {}).await;
    let data = dir.path().join("databases");
    std::fs::create_dir_all(&data).unwrap();
    plugins::fragmented_database(&data.join("app.db"), 200, 2000);
    let scripts = ScriptRunner::new(ScriptPolicy::allowed(dir.path().join("scripts")));
    let worker = PluginWorker::start(
        admin.grpc,
        "vacuum-worker-1",
        &dir.path().join("worker"),
        vec![Arc::new(sqlite_vacuum::SqliteVacuum), Arc::new(scripts)],
    );
    plugins::wait_descriptor(&admin, T).await;
    plugins::wait_descriptor(&admin, "script").await;
    // Saved environment and secrets, so the key/value rows show entries, not only blanks.
    let script = json!({
        "name": plugins::string("nightly-report"),
        "interpreter": plugins::string("sh"),
        "source": plugins::string("inline"),
        "script": plugins::string("echo report"),
        "env": plugins::string_map(&[("REPORT_DAYS", "7"), ("REPORT_FORMAT", "a rather long value to see it wrap")]),
        "secrets": plugins::string_map(&[("api_token", "not-shown")]),
    });
    plugins::configure(&admin, "script", script).await;
    let values = json!({ "paths": plugins::string_list(&[data.to_str().unwrap()]), "min_size_bytes": plugins::int(1) });
    plugins::configure(&admin, T, values).await;
    plugins::run(&admin, T).await;
    let job = admin.wait_jobs("the vacuum job succeeded", &format!("job_type={T}"), 1, "succeeded").await;
    let job_id = job[0]["job_id"].as_str().unwrap().to_string();

    let browser = Browser::start().await;
    let base = format!("http://{}", admin.http);
    let token = std::fs::read_to_string(dir.path().join("admin/plugin/admin.token")).expect("the first admin token");
    browser.sign_in(&base, &token).await;

    let pages = [
        ("overview", "/plugin".to_string()),
        ("job-type-status", format!("/plugin/job-types/{T}?tab=status")),
        ("job-type-configuration", format!("/plugin/job-types/{T}?tab=configuration")),
        ("job-type-runtime", format!("/plugin/job-types/{T}?tab=runtime")),
        ("job-type-history", format!("/plugin/job-types/{T}?tab=history")),
        ("job-type-script-configuration", "/plugin/job-types/script?tab=configuration".to_string()),
        ("jobs", "/plugin/jobs".to_string()),
        ("job", format!("/plugin/jobs/{job_id}")),
        ("workers", "/plugin/workers".to_string()),
        ("activities", "/plugin/activities".to_string()),
        ("audit", "/plugin/audit".to_string()),
        ("replay", "/plugin/jobs/replay".to_string()),
    ];
    for (name, path) in &pages {
        let url = format!("{base}{path}");
        browser.set_window_size(1440, 1000).await;
        browser.emulate_color_scheme("light").await;
        browser.goto(&url).await;
        assert_eq!(browser.script(BACKGROUND, vec![]).await, LIGHT_BG, "{name} in the light scheme");
        browser.screenshot_page(&screenshot_path(&format!("page-{name}.png")), 2400).await;

        browser.emulate_color_scheme("dark").await;
        browser.goto(&url).await;
        assert_eq!(browser.script(BACKGROUND, vec![]).await, DARK_BG, "{name} follows the dark scheme");
        let text = browser.script("return getComputedStyle(document.body).color", vec![]).await;
        assert_eq!(text, "rgb(228, 232, 238)", "{name}: light text on the dark background");
        browser.screenshot_page(&screenshot_path(&format!("page-{name}-dark.png")), 2400).await;

        browser.emulate_color_scheme("light").await;
        browser.set_window_size(400, 900).await;
        browser.goto(&url).await;
        let overflow = browser
            .script("return document.documentElement.scrollWidth - document.documentElement.clientWidth", vec![])
            .await;
        if overflow != 0 {
            let wide = browser.script(WIDEST, vec![]).await;
            panic!("{name} is {overflow} px wider than a 400 px screen; widest elements: {wide}");
        }
        browser.screenshot(&screenshot_path(&format!("page-{name}-400.png"))).await;
    }

    // The key/value editor's button adds a row to type a new entry into, and it saves.
    browser.set_window_size(1440, 1000).await;
    browser.goto(&format!("{base}/plugin/job-types/script?tab=configuration")).await;
    let env_rows = "return document.querySelectorAll('input[name=\"key:admin.env\"]').length";
    let before = browser.script(env_rows, vec![]).await.as_u64().unwrap();
    let add = browser.find("[data-kv-add]").await;
    assert_eq!(browser.property(&add, "hidden").await, false, "the script shows the button");
    browser.click(&add).await;
    browser.wait_for_script("a new row", WAIT, &format!("{env_rows} === {}", before + 1)).await;
    let focused = "return document.activeElement && document.activeElement.name";
    assert_eq!(browser.script(focused, vec![]).await, "key:admin.env", "the new row's name has the focus");
    let keys = browser.find_all("input[name='key:admin.env']").await;
    let values = browser.find_all("input[name='value:admin.env']").await;
    browser.type_into(keys.last().unwrap(), "ADDED_BY_ROW").await;
    browser.type_into(values.last().unwrap(), "yes").await;
    browser.click(&browser.find("#save-config").await).await;
    browser
        .wait_for_script(
            "the saved notice",
            WAIT,
            "return (document.getElementById('flash') || {}).textContent === 'Configuration saved.'",
        )
        .await;
    let saved = admin.get("/api/plugin/job-types/script/config").await;
    let env = &saved["admin_config_values"]["env"]["map_value"]["fields"];
    assert_eq!(env["ADDED_BY_ROW"]["string_value"], "yes", "{saved}");
    assert_eq!(env["REPORT_DAYS"]["string_value"], "7", "the other entries stay");
    assert!(!saved.to_string().contains("not-shown"), "the secret stays redacted");

    // "/" focuses the header's job search on any page, and the jobs page's own filter there.
    browser.set_window_size(1440, 1000).await;
    browser.goto(&format!("{base}/plugin")).await;
    browser.press_key("/").await;
    let focused = "return document.activeElement && document.activeElement.id";
    assert_eq!(browser.script(focused, vec![]).await, "job-search");
    browser.goto(&format!("{base}/plugin/jobs")).await;
    browser.press_key("/").await;
    assert_eq!(browser.script(focused, vec![]).await, "filter-text");
    // The header's search works without JavaScript too: it is a plain GET form.
    browser.goto(&format!("{base}/plugin/workers")).await;
    browser.press_key("/").await;
    browser.type_into(&browser.find("#job-search").await, &format!("{job_id}\n")).await;
    let listed = wait_for("the jobs page with the search", WAIT, || async {
        let url = browser.url().await;
        url.contains("/plugin/jobs?text=").then_some(url)
    })
    .await;
    assert!(listed.ends_with(&format!("text={job_id}")), "{listed}");

    browser.quit();
    worker.stop().await;
    admin.stop().await;
}
