//! The job type page's layout over real HTTP against a real admin: its four tabs (each
//! renders its own content, every form goes back to the tab it came from, a refused form
//! comes back on its tab), the one duration input of the runtime settings and the
//! schedule (an amount and a unit, stored in the setting's own unit), and the key/value
//! editor of the bundled `script` job type's environment and secrets.

use std::{sync::Arc, time::Duration};

use proto::pb::{self, config_value::Kind};
use script_runner::{ScriptPolicy, ScriptRunner};
use tests::{
    TempDir,
    fake_worker::{FakeWorker, FakeWorkerSpec, proposal},
    harness::TestAdmin,
    http,
    page_client::{Client, flash_status, location},
    plugins::{self, PluginWorker},
    wait_for,
};

const T: &str = "layout_job";
const WAIT: Duration = Duration::from_secs(30);

async fn admin_with(spec: FakeWorkerSpec) -> (TempDir, TestAdmin, FakeWorker) {
    let dir = TempDir::new("ui-layout");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let worker = FakeWorker::start(admin.grpc, spec).await;
    wait_for("the descriptor is stored", WAIT, || async { admin.components().configs.config(T).map(|_| ()) }).await;
    (dir, admin, worker)
}

fn saved(admin: &TestAdmin, t: &str) -> pb::PersistedJobTypeConfig {
    (*admin.components().configs.config(t).expect("saved config")).clone()
}

fn flash(r: &http::Response) -> String {
    flash_status(r).map(|m| m.unwrap_or_else(|e| e)).unwrap_or_default()
}

/// The tab a page shows (its panel's `data-tab`).
fn tab_of(html: &str) -> &str {
    let at = html.find("id=\"tab-panel\" data-tab=\"").expect("the tab panel") + "id=\"tab-panel\" data-tab=\"".len();
    &html[at..at + html[at..].find('"').unwrap()]
}

/// The HTML from the element with `id` to the next form field, `<form` or `<section`.
fn block<'a>(html: &'a str, id: &str) -> &'a str {
    let at = html.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no element #{id}"));
    let rest = &html[at..];
    let end =
        ["<div class=\"field", "<form", "<section"].iter().filter_map(|m| rest.find(m)).min().unwrap_or(rest.len());
    &rest[..end]
}

/// The HTML around the input named `name`: from its field's start to the next field's.
fn field_block<'a>(html: &'a str, name: &str) -> &'a str {
    let at = html.find(&format!("name=\"{name}\"")).unwrap_or_else(|| panic!("no input named {name}"));
    let start = html[..at].rfind("<div class=\"field").expect("field start");
    let end = html[at..].find("<div class=\"field").or_else(|| html[at..].find("</form>")).map(|e| at + e);
    &html[start..end.unwrap_or(html.len())]
}

const PAGE: &str = "/plugin/job-types/layout_job";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tab_renders_its_own_content_and_the_status_tab_is_the_default() {
    let spec = FakeWorkerSpec::new("w1", T, 1).detect(|_| vec![vec![proposal("alpha")]]);
    let (_dir, admin, _worker) = admin_with(spec).await;
    admin.wait_jobs("the job succeeded", &format!("job_type={T}"), 1, "succeeded").await;

    // What each tab holds, and what it leaves to the others.
    let ids = |tab: &str| -> &'static [&'static str] {
        match tab {
            "status" => &[
                "lr-status",
                "action-run",
                "action-detect",
                "lr-detection",
                "holds",
                "lr-trends",
                "lr-jobs",
                "enqueue-form",
            ],
            "configuration" => &["config-form", "save-config", "action-schema"],
            "runtime" => &["runtime-form", "save-runtime", "schedule-cron-form", "schedule-interval-form"],
            _ => &["lr-runs", "observations"],
        }
    };
    let tabs = ["status", "configuration", "runtime", "history"];
    for tab in tabs {
        let html = http::get(&admin.http, &format!("{PAGE}?tab={tab}")).await.text();
        assert_eq!(tab_of(&html), tab);
        assert!(
            html.contains(&format!("id=\"tab-{tab}\" data-tab=\"{tab}\" aria-current=\"page\"")),
            "{tab} is current"
        );
        for other in tabs {
            assert!(html.contains(&format!("href=\"{PAGE}?tab={other}\"")), "{tab} links to {other}");
            for id in ids(other) {
                let shown = html.contains(&format!("id=\"{id}\""));
                assert_eq!(shown, other == tab, "#{id} on the {tab} tab");
            }
        }
        // Every form on the tab goes back to it.
        let panel = &html[html.find("id=\"tab-panel\"").unwrap()..];
        let forms = panel.matches("<form method=\"post\"").count();
        let back = panel.matches(&format!("name=\"back\" value=\"{PAGE}?tab={tab}")).count();
        assert_eq!(forms, back, "{tab}: every form posts its way back");
        assert!(forms > 0 || tab == "history", "{tab} has forms");
    }
    let default = http::get(&admin.http, PAGE).await.text();
    assert_eq!(tab_of(&default), "status", "no tab: Status");
    assert!(default.contains("job for alpha"), "the latest jobs");
    assert!(default.contains(">alpha</div>"), "the latest detection results beside Run now");
    assert_eq!(tab_of(&http::get(&admin.http, &format!("{PAGE}?tab=nope")).await.text()), "status", "unknown: Status");
    let history = http::get(&admin.http, &format!("{PAGE}?tab=history")).await.text();
    assert!(block(&history, "lr-runs").contains("job run"), "the run history");
    let day = http::get(&admin.http, &format!("{PAGE}?window=24h")).await.text();
    assert!(day.contains(&format!("name=\"back\" value=\"{PAGE}?tab=status&#38;window=24h\"")), "the window is kept");
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_form_goes_back_to_its_tab_and_a_refused_one_comes_back_on_it() {
    let (_dir, admin, _worker) = admin_with(FakeWorkerSpec::new("w1", T, 1)).await;
    let (client, _) = Client::open(&admin.http, PAGE).await;
    let tab = |t: &str| format!("{PAGE}?tab={t}");

    // Accepted: back to the tab the form was posted from.
    // (action, what its form posts, the tab it is on)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 6] = [
        ("config", &[("admin.threshold", "42")], "configuration"),
        ("runtime", &[("runtime.enabled", "true"), ("runtime.retry_limit", "4")], "runtime"),
        ("schedule", &[("kind", "interval"), ("interval_minutes", "30")], "runtime"),
        ("hold", &[("detection", "true")], "status"),
        ("detect", &[], "status"),
        ("schema", &[], "configuration"),
    ];
    for (action, pairs, home) in cases {
        let mut with_back = pairs.to_vec();
        let back = tab(home);
        with_back.push(("back", &back));
        let r = client.post(&format!("{PAGE}/{action}"), &with_back).await;
        assert_eq!(r.status, 303, "{action}: {}", r.text());
        assert!(location(&r).starts_with(&format!("{back}&")), "{action} goes back to {back}: {}", location(&r));
        // Without a `back` (or with one off the admin's pages), the form's own tab.
        let mut elsewhere = pairs.to_vec();
        elsewhere.push(("back", "https://evil.example/"));
        let r = client.post(&format!("{PAGE}/{action}"), &elsewhere).await;
        assert!(location(&r).starts_with(&format!("{back}&")), "{action} without a way back: {}", location(&r));
    }
    assert_eq!(
        flash(&client.post(&format!("{PAGE}/hold"), &[("detection", "false")]).await),
        format!("Detection of “{T}” is released.")
    );

    // Refused: the page again, on the form's tab, with the error there.
    let r =
        client.post(&format!("{PAGE}/config"), &[("admin.threshold", "500"), ("back", &tab("configuration"))]).await;
    assert_eq!(r.status, 422);
    let html = r.text();
    assert_eq!(tab_of(&html), "configuration");
    assert!(field_block(&html, "admin.threshold").contains("Must be at most 100."));
    let r = client.post(&format!("{PAGE}/runtime"), &[("runtime.retry_limit", "1000")]).await;
    assert_eq!((r.status, tab_of(&r.text())), (422, "runtime"));
    assert!(field_block(&r.text(), "runtime.retry_limit").contains("Must be at most 100."));
    let r = client.post(&format!("{PAGE}/schedule"), &[("kind", "cron"), ("cron", "61 * * * *")]).await;
    assert_eq!((r.status, tab_of(&r.text())), (422, "runtime"));
    assert!(r.text().contains("id=\"schedule-error\""));
    let r = client.post(&format!("{PAGE}/jobs"), &[("parameters", "[1]")]).await;
    assert_eq!((r.status, tab_of(&r.text())), (422, "status"));
    assert!(r.text().contains("<details class=\"card\" id=\"enqueue\" open>"), "the enqueue form is open to show why");
    assert!(r.text().contains("id=\"enqueue-error\""));
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_duration_is_typed_in_any_unit_stored_in_its_own_and_shown_again_in_the_largest() {
    let (_dir, admin, _worker) = admin_with(FakeWorkerSpec::new("w1", T, 1)).await;
    let (client, page) = Client::open(&admin.http, &format!("{PAGE}?tab=runtime")).await;
    let html = page.text();
    // The descriptor's 60 s execution timeout reads as 1 minute; the interval offers no seconds.
    let timeout = field_block(&html, "runtime.execution_timeout_seconds");
    assert!(
        timeout.contains("value=\"1\"") && timeout.contains("<option value=\"min\" selected>minutes</option>"),
        "{timeout}"
    );
    assert!(
        timeout.contains("<option value=\"s\">seconds</option>")
            && timeout.contains("<option value=\"d\">days</option>")
    );
    let interval = field_block(&html, "runtime.detection_interval_minutes");
    assert!(
        interval.contains("value=\"1\"") && interval.contains("<option value=\"h\" selected>hours</option>"),
        "{interval}"
    );
    assert!(!interval.contains("value=\"s\""), "whole minutes: no seconds to choose");
    assert!(
        field_block(&html, "runtime.retry_limit").contains("<span class=\"unit\">retries</span>"),
        "a count stays a number"
    );

    let path = format!("{PAGE}/runtime");
    let r = client
        .post(
            &path,
            &[
                ("runtime.enabled", "true"),
                ("runtime.execution_timeout_seconds", "2"),
                ("unit:runtime.execution_timeout_seconds", "h"),
                ("runtime.retry_backoff_seconds", "1.5"),
                ("unit:runtime.retry_backoff_seconds", "min"),
                ("runtime.detection_interval_minutes", "1"),
                ("unit:runtime.detection_interval_minutes", "d"),
                ("runtime.detection_timeout_seconds", "45"),
                ("unit:runtime.detection_timeout_seconds", "s"),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.text());
    let runtime = saved(&admin, T).admin_runtime.unwrap();
    assert_eq!(
        (
            runtime.execution_timeout_seconds,
            runtime.retry_backoff_seconds,
            runtime.detection_interval_minutes,
            runtime.detection_timeout_seconds
        ),
        (7200, 90, 1440, 45),
        "stored in the settings' own units"
    );
    let html = client.get(&format!("{PAGE}?tab=runtime")).await.text();
    let shown = |name: &str, amount: &str, unit: &str| {
        let b = field_block(&html, name);
        assert!(
            b.contains(&format!("value=\"{amount}\"")) && b.contains(&format!("value=\"{unit}\" selected")),
            "{name}: {b}"
        );
    };
    shown("runtime.execution_timeout_seconds", "2", "h");
    shown("runtime.retry_backoff_seconds", "90", "s");
    shown("runtime.detection_interval_minutes", "1", "d");
    shown("runtime.detection_timeout_seconds", "45", "s");

    // Not whole in the stored unit, not a number, too long: refused next to the field.
    let r = client
        .post(
            &path,
            &[
                ("runtime.enabled", "true"),
                ("runtime.execution_timeout_seconds", "8"),
                ("unit:runtime.execution_timeout_seconds", "d"),
                ("runtime.retry_backoff_seconds", "0.5"),
                ("unit:runtime.retry_backoff_seconds", "s"),
                ("runtime.detection_interval_minutes", "soon"),
                ("unit:runtime.detection_interval_minutes", "h"),
            ],
        )
        .await;
    assert_eq!((r.status, tab_of(&r.text())), (422, "runtime"));
    let html = r.text();
    let timeout = field_block(&html, "runtime.execution_timeout_seconds");
    assert!(timeout.contains("Must be at most 604800 seconds (7 days)."), "{timeout}");
    assert!(
        timeout.contains("value=\"8\"") && timeout.contains("value=\"d\" selected"),
        "the input is kept: {timeout}"
    );
    assert!(field_block(&html, "runtime.retry_backoff_seconds").contains("Must be a whole number of seconds."));
    assert!(field_block(&html, "runtime.detection_interval_minutes").contains("Must be a number of hours."));
    assert_eq!(saved(&admin, T).admin_runtime.unwrap(), runtime, "nothing was saved");

    // The schedule's interval is the same input.
    let r = client
        .post(
            &format!("{PAGE}/schedule"),
            &[("kind", "interval"), ("interval_minutes", "2"), ("unit:interval_minutes", "h")],
        )
        .await;
    assert_eq!(flash(&r), format!("Schedule saved: “{T}” detects every 2 hours."));
    assert_eq!(saved(&admin, T).admin_runtime.unwrap().detection_interval_minutes, 120);
    let html = client.get(&format!("{PAGE}?tab=runtime")).await.text();
    let form = &html[html.find("id=\"schedule-interval-form\"").unwrap()..];
    let form = &form[..form.find("</form>").unwrap()];
    assert!(form.contains("value=\"2\"") && form.contains("value=\"h\" selected"), "{form}");
    let r = client
        .post(
            &format!("{PAGE}/schedule"),
            &[("kind", "interval"), ("interval_minutes", "90"), ("unit:interval_minutes", "s")],
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(r.text().contains("id=\"schedule-error\">The interval must be a whole number of minutes."), "{}", r.text());
    admin.stop().await;
}

/// A map value of strings.
fn string_map(pairs: &[(&str, &str)]) -> Option<Kind> {
    Some(Kind::MapValue(pb::ValueMap {
        fields: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), pb::ConfigValue { kind: Some(Kind::StringValue(v.to_string())) }))
            .collect(),
    }))
}

/// What the config form posts: the script's required fields plus `rows`.
fn script_form<'a>(rows: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut pairs = vec![
        ("admin.name", "report"),
        ("admin.interpreter", "sh"),
        ("admin.source", "inline"),
        ("admin.script", "echo hi"),
        ("admin.timeout", "5"),
        ("unit:admin.timeout", "min"),
        ("admin.output_limit_bytes", "65536"),
    ];
    pairs.extend_from_slice(rows);
    pairs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_script_environment_and_secrets_are_key_value_rows_and_secrets_never_come_back() {
    const SECRET: &str = "tok-EN-5ecret-value";
    let dir = TempDir::new("ui-layout-kv");
    let admin = TestAdmin::start(&dir.path().join("admin"), |_| {}).await;
    let runner = ScriptRunner::new(ScriptPolicy::allowed(dir.path().join("scripts")));
    let worker = PluginWorker::start(admin.grpc, "script-worker", &dir.path().join("worker"), vec![Arc::new(runner)]);
    plugins::wait_descriptor(&admin, "script").await;
    let page = "/plugin/job-types/script?tab=configuration";
    let (client, r) = Client::open(&admin.http, page).await;
    let html = r.text();
    for name in ["admin.env", "admin.secrets"] {
        let rows = html.matches(&format!("name=\"key:{name}\"")).count();
        assert_eq!(rows, 3, "{name}: three empty rows to add entries");
        assert!(!html.contains(&format!("name=\"{name}\"")), "{name} is no JSON textarea");
    }
    assert!(html.contains("data-kv-add hidden>Add row</button>"), "the script's button, hidden without it");

    let path = "/plugin/job-types/script/config";
    let r = client
        .post(
            path,
            &script_form(&[
                ("key:admin.env", "REPORT_DAYS"),
                ("value:admin.env", "7"),
                ("key:admin.env", " MODE "),
                ("value:admin.env", "full run"),
                ("key:admin.env", ""),
                ("value:admin.env", ""),
                ("key:admin.secrets", "api_token"),
                ("value:admin.secrets", SECRET),
                ("key:admin.secrets", "other"),
                ("value:admin.secrets", "other-5ecret"),
                ("key:admin.secrets", ""),
                ("value:admin.secrets", ""),
            ]),
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert!(location(&r).starts_with("/plugin/job-types/script?tab=configuration&ok="), "{}", location(&r));
    let values = saved(&admin, "script").admin_config_values;
    assert_eq!(values["env"].kind, string_map(&[("REPORT_DAYS", "7"), ("MODE", "full run")]));
    assert_eq!(values["secrets"].kind, string_map(&[("api_token", SECRET), ("other", "other-5ecret")]));

    // Shown again: the environment's values, the secrets' names only.
    let html = client.get(page).await.text();
    assert!(
        html.contains("name=\"key:admin.env\" value=\"MODE\"")
            && html.contains("name=\"value:admin.env\" value=\"full run\"")
    );
    assert!(html.contains("name=\"key:admin.secrets\" value=\"api_token\""), "a secret's name is shown");
    assert!(!html.contains(SECRET) && !html.contains("other-5ecret"), "a secret's value never is");
    assert!(html.contains("name=\"remove:admin.secrets\" value=\"other\""), "each saved secret can be removed");
    assert!(!admin.get("/api/plugin/job-types/script/config").await.to_string().contains(SECRET));

    // A blank value keeps a secret, Remove deletes one, a new row adds one.
    let r = client
        .post(
            path,
            &script_form(&[
                ("key:admin.env", "REPORT_DAYS"),
                ("value:admin.env", "8"),
                ("key:admin.secrets", "api_token"),
                ("value:admin.secrets", ""),
                ("key:admin.secrets", "other"),
                ("value:admin.secrets", ""),
                ("remove:admin.secrets", "other"),
                ("key:admin.secrets", "added"),
                ("value:admin.secrets", "n3w"),
            ]),
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.text());
    let values = saved(&admin, "script").admin_config_values;
    assert_eq!(values["env"].kind, string_map(&[("REPORT_DAYS", "8")]), "a plain map is what the rows say");
    assert_eq!(values["secrets"].kind, string_map(&[("api_token", SECRET), ("added", "n3w")]));

    // Rows the admin cannot take: the errors next to the field, by row, on this tab;
    // nothing is saved and no typed secret comes back.
    let r = client
        .post(
            path,
            &script_form(&[
                ("key:admin.env", "A"),
                ("value:admin.env", "1"),
                ("key:admin.env", "A"),
                ("value:admin.env", "2"),
                ("key:admin.secrets", ""),
                ("value:admin.secrets", "typed-5ecret"),
            ]),
        )
        .await;
    assert_eq!((r.status, tab_of(&r.text())), (422, "configuration"));
    let html = r.text();
    let env = block(&html, "f-admin-6-field");
    assert!(env.contains("name=\"key:admin.env\""), "the environment's field: {env}");
    assert!(env.contains("Row 2 repeats the name of row 1."), "{env}");
    assert!(env.contains("kv-row kv-invalid"), "the row is marked: {env}");
    assert!(env.contains("name=\"value:admin.env\" value=\"2\""), "plain input is kept");
    let secrets = block(&html, "f-admin-7-field");
    assert!(secrets.contains("name=\"key:admin.secrets\""), "the secrets' field: {secrets}");
    assert!(secrets.contains("Row 1 has a value but no name."), "{secrets}");
    assert!(!html.contains("typed-5ecret"), "a typed secret is not sent back");
    assert!(secrets.contains("Enter the new values again"));
    assert_eq!(saved(&admin, "script").admin_config_values, values, "nothing was saved");
    worker.stop().await;
    admin.stop().await;
}
