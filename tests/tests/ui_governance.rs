//! Operator governance in a real headless Chromium (over WebDriver) against a real admin
//! with a fake-over-gRPC worker whose every execution fails: an operator pauses all
//! dispatch from the overview through the confirmation step and sees the hold with who
//! set it, resumes it, and replays two ticked dead letters after seeing the dry run;
//! with an approval token configured, confirming without the token is refused on the
//! page and confirming with it works. Screenshots land in target/screenshots/.

use std::time::Duration;

use serde_json::{Value, json};
use tests::{
    TempDir,
    browser::{Browser, screenshot_path},
    fake_worker::{Exec, FakeWorker, FakeWorkerSpec},
    harness::TestAdmin,
    http, wait_for,
};

const T: &str = "flaky_copy";
const WAIT: Duration = Duration::from_secs(30);
const APPROVAL: &str = "two-person-rule";

/// `return <expr>` polled until truthy.
async fn until(browser: &Browser, what: &str, expr: &str) -> Value {
    browser.wait_for_script(what, WAIT, &format!("return {expr};")).await
}

/// The flash message's text, once the page shows one.
const FLASH: &str = "(document.getElementById('flash') || {}).textContent";

/// An admin (tweaked), a worker that fails every job, retry limit 0 set over the config
/// API, and `n` dead letters made through `POST job-types/{t}/jobs`. Returns their ids,
/// newest first.
async fn admin_with_dead_letters(
    dir: &TempDir,
    n: usize,
    tweak: impl FnOnce(&mut admin::AdminConfig),
) -> (TestAdmin, FakeWorker, Vec<String>) {
    let admin = TestAdmin::start(dir.path(), tweak).await;
    let spec = FakeWorkerSpec::new("copier-1", T, 2).exec(|_| Exec::Fail("disk full on /dst".into()));
    let worker = FakeWorker::start(admin.grpc, spec).await;
    wait_for("the worker's descriptor is stored", WAIT, || async { admin.components().configs.config(T).map(|_| ()) })
        .await;
    let config_path = format!("/api/plugin/job-types/{T}/config");
    let mut runtime = admin.get(&config_path).await["admin_runtime"].clone();
    runtime["retry_limit"] = json!(0);
    let r = http::put_json(&admin.http, &config_path, &json!({ "admin_runtime": runtime })).await;
    assert_eq!(r.status, 200, "retry limit 0: {}", r.text());
    for i in 0..n {
        let job = json!({
            "summary": format!("copy shard {i}"),
            "dedupe_key": format!("shard-{i}"),
            "parameters": { "shard": { "int64_value": i.to_string() } },
        });
        let r = http::post_json(&admin.http, &format!("/api/plugin/job-types/{T}/jobs"), &job).await;
        assert_eq!(r.status, 201, "enqueue: {}", r.text());
    }
    let query = format!("job_type={T}&dead_letter=true");
    let dead = admin.wait_jobs("the jobs to become dead letters", &query, n, "failed").await;
    let ids = dead.iter().map(|j| j["job_id"].as_str().unwrap().to_string()).collect();
    (admin, worker, ids)
}

/// Opens the login page and signs in with the admin's first token.
async fn sign_in(browser: &Browser, base: &str, dir: &TempDir) {
    browser.goto(&format!("{base}/plugin/login")).await;
    until(browser, "the login page", "document.querySelector('input[name=\"token\"]')").await;
    let token = std::fs::read_to_string(dir.path().join("plugin/admin.token")).expect("the first admin token");
    browser.type_into(&browser.find("input[name='token']").await, token.trim()).await;
    browser.click(&browser.find("form[action='/plugin/login'] button").await).await;
    until(browser, "signed in", &format!("{FLASH} === 'Signed in as admin (admin).'")).await;
}

/// Clicks `css` and waits for the next page's `h1` to read `heading`.
async fn click_to(browser: &Browser, css: &str, heading: &str) {
    browser.click(&browser.find(css).await).await;
    let expr = format!("(document.querySelector('h1') || {{}}).textContent === {}", json!(heading));
    until(browser, &format!("the page “{heading}”"), &expr).await;
}

async fn holds(admin: &TestAdmin) -> Value {
    admin.get("/api/plugin/holds").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_pauses_dispatch_and_replays_ticked_dead_letters_through_confirmations() {
    tests::init_tracing();
    let dir = TempDir::new("ui-governance");
    let (admin, _worker, dead) = admin_with_dead_letters(&dir, 3, |_| {}).await;
    let browser = Browser::start().await;
    let base = format!("http://{}", admin.http);
    sign_in(&browser, &base, &dir).await;

    // The overview counts the dead letters and links to them.
    browser.goto(&format!("{base}/plugin")).await;
    let count =
        until(&browser, "the dead-letter count", "(document.getElementById('stat-dead-letters') || {}).textContent")
            .await;
    assert_eq!(count, "3");
    assert_eq!(
        browser.script("return document.getElementById('stat-dead-letters').getAttribute('href')", vec![]).await,
        "/plugin/jobs?dead_letter=true"
    );

    // Pause all dispatch: the first press only asks, saying what will happen.
    click_to(&browser, "#pause-dispatch", "Pause all dispatch?").await;
    let what = browser.text(&browser.find("#confirm").await).await;
    assert!(what.contains("No pending job of any job type will be started until dispatch is resumed."), "{what}");
    assert!(browser.find_all("#approval").await.is_empty(), "no approval token is configured");
    assert_eq!(holds(&admin).await["dispatch_paused"], false, "asking changes nothing");
    browser.screenshot(&screenshot_path("confirm_pause.png")).await;
    browser.click(&browser.find("#confirm-button").await).await;
    until(
        &browser,
        "the pause's flash",
        &format!("{FLASH} === 'All dispatch is paused: no job is started until dispatch is resumed.'"),
    )
    .await;
    // (The page script drops the flash from the address.)
    assert_eq!(browser.url().await, format!("{base}/plugin"), "back on the overview");
    let set_by = until(
        &browser,
        "the hold listed with who set it",
        "(document.querySelector('#holds-list tr[data-hold=\"dispatch\"] [data-field=\"set-by\"]') || {}).textContent",
    )
    .await;
    assert_eq!(set_by, "ui:admin");
    let h = holds(&admin).await;
    assert_eq!(h["dispatch_paused"], true, "{h}");
    assert_eq!((&h["holds"][0]["kind"], &h["holds"][0]["set_by"]), (&json!("dispatch"), &json!("ui:admin")));
    assert!(admin.components().holds.dispatch_paused(), "the dispatcher sees the pause");
    browser.screenshot_page(&screenshot_path("overview_paused.png"), 2400).await;

    // Resume: the same two steps; the hold is gone.
    click_to(&browser, "#resume-dispatch", "Resume all dispatch?").await;
    browser.click(&browser.find("#confirm-button").await).await;
    until(&browser, "the resume's flash", &format!("{FLASH} === 'Dispatch resumed: pending jobs start again.'")).await;
    assert!(browser.find_all("#holds-list").await.is_empty(), "no hold is listed");
    assert_eq!(holds(&admin).await["holds"], json!([]));
    let audit = admin.get("/api/plugin/audit?action=pause_dispatch").await;
    let events: Vec<(Value, Value, Value)> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["actor"].clone(), e["params"]["paused"].clone(), e["outcome"].clone()))
        .collect();
    assert_eq!(
        events,
        [(json!("ui:admin"), json!(false), json!("done")), (json!("ui:admin"), json!(true), json!("done"))],
        "both are in the audit trail as the page session's"
    );

    // Replay: tick two dead letters on the jobs page, see the dry run, confirm.
    browser.goto(&format!("{base}/plugin/jobs?dead_letter=true")).await;
    let all = until(&browser, "the replay controls", "(document.getElementById('replay-all') || {}).textContent").await;
    assert_eq!(all, "Replay all 3 matching…");
    let picked = [dead[0].clone(), dead[2].clone()];
    for id in &picked {
        let b = browser.find(&format!("#select-{id}")).await;
        browser.click(&b).await;
        assert_eq!(browser.property(&b, "checked").await, true, "{id} ticked");
    }
    browser.screenshot_page(&screenshot_path("jobs_replay.png"), 2400).await;
    click_to(&browser, "#replay-selected", "Replay 2 jobs?").await;
    let counts = browser
        .script(
            "return ['replay-matched', 'replay-eligible', 'replay-over-limit', 'replay-ineligible']\
             .map(function (id) { return document.getElementById(id).textContent; })",
            vec![],
        )
        .await;
    assert_eq!(counts, json!(["2", "2", "0", "0"]), "the dry run's counts");
    assert_eq!(browser.text(&browser.find("#confirm-button").await).await, "Replay 2 jobs");
    assert_eq!(admin.jobs(&format!("job_type={T}")).await.len(), 3, "the dry run created nothing");
    browser.screenshot_page(&screenshot_path("confirm_replay.png"), 2400).await;
    browser.click(&browser.find("#confirm-button").await).await;
    until(&browser, "the replay's flash", &format!("{FLASH} === 'Replayed 2 jobs.'")).await;
    assert_eq!(browser.url().await, format!("{base}/plugin/jobs?dead_letter=true"), "back on the jobs list");

    // Exactly two new jobs, each the replay of one ticked dead letter.
    let jobs = admin.jobs(&format!("job_type={T}&limit=100")).await;
    assert_eq!(jobs.len(), 5, "three dead letters and two replays");
    let mut replays: Vec<(String, String)> = jobs
        .iter()
        .filter_map(|j| j["replay_of"].as_str().map(|of| (of.to_string(), j["job_id"].as_str().unwrap().to_string())))
        .collect();
    replays.sort();
    let mut originals: Vec<String> = replays.iter().map(|(of, _)| of.clone()).collect();
    originals.sort();
    let mut expected = picked.to_vec();
    expected.sort();
    assert_eq!(originals, expected, "the replays are of the ticked jobs: {replays:?}");
    for (of, new) in &replays {
        let job = admin.get(&format!("/api/plugin/jobs/{new}")).await;
        let original = admin.get(&format!("/api/plugin/jobs/{of}")).await;
        assert_eq!(job["dedupe_key"], original["dedupe_key"], "a replay keeps the dedupe key");
    }

    // The replay's page links to the job it replays, and that one to its replay.
    let (of, new) = &replays[0];
    browser.goto(&format!("{base}/plugin/jobs/{new}")).await;
    let text = until(&browser, "the replay link", "(document.getElementById('replay-of') || {}).textContent").await;
    assert_eq!(text, format!("Replay of {of}"));
    browser.click(&browser.find("#replay-of a").await).await;
    let text =
        until(&browser, "the replayed-as link", "(document.getElementById('replayed-as') || {}).textContent").await;
    assert_eq!(text, format!("Replayed as {new}"));

    browser.goto(&format!("{base}/plugin/job-types/{T}")).await;
    until(&browser, "the job type page", "document.getElementById('enqueue-form')").await;
    browser.screenshot_page(&screenshot_path("job_type_governance.png"), 3600).await;
    browser.goto(&format!("{base}/plugin/audit")).await;
    until(&browser, "the audit page", "document.querySelector('#audit-events tr[data-audit-id]')").await;
    browser.screenshot_page(&screenshot_path("audit.png"), 2400).await;
    browser.quit();
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_approval_token_a_wide_action_is_refused_without_it_and_done_with_it() {
    tests::init_tracing();
    let dir = TempDir::new("ui-governance-approval");
    let (admin, _worker, dead) =
        admin_with_dead_letters(&dir, 2, |c| c.approval_token = Some(APPROVAL.to_string())).await;
    let browser = Browser::start().await;
    let base = format!("http://{}", admin.http);
    sign_in(&browser, &base, &dir).await;

    // Pause all dispatch: confirming without the token is refused on the confirmation
    // page, with a wrong one too; nothing changes until the right one is given.
    browser.goto(&format!("{base}/plugin")).await;
    click_to(&browser, "#pause-dispatch", "Pause all dispatch?").await;
    assert_eq!(browser.property(&browser.find("#approval").await, "type").await, "password");
    browser.click(&browser.find("#confirm-button").await).await;
    until(
        &browser,
        "the refusal without a token",
        &format!(
            "{FLASH} === 'Nothing was changed: this action needs the approval token. Type it into the Approval token field.'"
        ),
    )
    .await;
    assert_eq!(browser.title().await, "Pause all dispatch? · Plughost", "still the confirmation page");
    assert_eq!(holds(&admin).await["dispatch_paused"], false);
    browser.type_into(&browser.find("#approval").await, "guess").await;
    browser.click(&browser.find("#confirm-button").await).await;
    until(
        &browser,
        "the refusal of a wrong token",
        &format!("{FLASH} === 'Nothing was changed: the approval token is wrong.'"),
    )
    .await;
    assert_eq!(holds(&admin).await["dispatch_paused"], false);
    browser.type_into(&browser.find("#approval").await, APPROVAL).await;
    browser.click(&browser.find("#confirm-button").await).await;
    until(
        &browser,
        "the pause with the token",
        &format!("{FLASH} === 'All dispatch is paused: no job is started until dispatch is resumed.'"),
    )
    .await;
    assert_eq!(holds(&admin).await["dispatch_paused"], true);
    let audit = admin.get("/api/plugin/audit?action=pause_dispatch").await;
    let outcomes: Vec<&str> =
        audit["events"].as_array().unwrap().iter().map(|e| e["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["done", "refused", "refused"], "the refusals are in the audit trail too");
    assert!(!audit.to_string().contains(APPROVAL), "the token is never recorded");

    // Replay all matching: the dry run shows before the token is asked for; the replay
    // itself needs it.
    browser.goto(&format!("{base}/plugin/jobs?dead_letter=true")).await;
    until(&browser, "the replay controls", "document.getElementById('replay-all')").await;
    click_to(&browser, "#replay-all", "Replay 2 jobs?").await;
    assert_eq!(browser.text(&browser.find("#replay-eligible").await).await, "2");
    browser.click(&browser.find("#confirm-button").await).await;
    until(
        &browser,
        "the replay refused without a token",
        &format!(
            "{FLASH} === 'Nothing was changed: this action needs the approval token. Type it into the Approval token field.'"
        ),
    )
    .await;
    assert_eq!(browser.text(&browser.find("#replay-eligible").await).await, "2", "the dry run is shown again");
    assert!(admin.jobs(&format!("job_type={T}")).await.iter().all(|j| j["replay_of"].is_null()), "nothing replayed");
    browser.type_into(&browser.find("#approval").await, APPROVAL).await;
    browser.click(&browser.find("#confirm-button").await).await;
    until(&browser, "the replay with the token", &format!("{FLASH} === 'Replayed 2 jobs.'")).await;
    let mut replayed: Vec<String> = admin
        .jobs(&format!("job_type={T}"))
        .await
        .iter()
        .filter_map(|j| j["replay_of"].as_str().map(String::from))
        .collect();
    replayed.sort();
    let mut expected = dead.clone();
    expected.sort();
    assert_eq!(replayed, expected, "every dead letter was replayed once");
    // Dispatch is still paused: the replays wait as pending.
    let pending = admin.jobs(&format!("job_type={T}&state=pending")).await;
    assert_eq!(pending.len(), 2, "{pending:?}");
    browser.quit();
    admin.stop().await;
}
