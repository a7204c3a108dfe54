//! The /plugin pages over real HTTP against a real admin with real (fake-over-gRPC)
//! workers: every page renders, form posts validate and persist, errors land next to
//! their fields with the input kept, CSRF is enforced, sensitive values never come back
//! out, and worker-supplied markup is escaped.

use std::{collections::HashMap, time::Duration};

use proto::pb::{self, config_value::Kind};
use tests::{
    TempDir,
    fake_worker::{Exec, FakeWorker, FakeWorkerSpec, proposal, simple_descriptor},
    harness::TestAdmin,
    http::{self, Response, Sse},
    page_client::{Client, flash_status, location},
    wait_for,
};

const T: &str = "test_job";
const WAIT: Duration = Duration::from_secs(30);

// ---- helpers --------------------------------------------------------------------------

/// The flash message a redirect carries, decoded (ok or error alike).
fn flash(r: &Response) -> String {
    flash_status(r).map(|m| m.unwrap_or_else(|e| e)).unwrap_or_default()
}

/// The HTML of the form field whose input is named `name`.
fn field_block<'a>(html: &'a str, name: &str) -> &'a str {
    let at = html.find(&format!("name=\"{name}\"")).unwrap_or_else(|| panic!("no input named {name}"));
    let start = html[..at].rfind("<div class=\"field").expect("field start");
    let end = html[at..].find("<div class=\"field").or_else(|| html[at..].find("</fieldset>")).map(|e| at + e);
    &html[start..end.unwrap_or(html.len())]
}

fn is_html(r: &Response) -> bool {
    r.headers.get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("text/html"))
}

fn saved(admin: &TestAdmin, t: &str) -> pb::PersistedJobTypeConfig {
    (*admin.components().configs.config(t).expect("saved config")).clone()
}

fn int_of(v: Option<&pb::ConfigValue>) -> Option<i64> {
    match v.and_then(|v| v.kind.as_ref()) {
        Some(Kind::Int64Value(i)) => Some(*i),
        _ => None,
    }
}

async fn admin_with(spec: FakeWorkerSpec) -> (TempDir, TestAdmin, FakeWorker) {
    let dir = TempDir::new("ui-pages");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let job_type = spec.capabilities[0].job_type.clone();
    let worker = FakeWorker::start(admin.grpc, spec).await;
    wait_for("the descriptor is stored", WAIT, || async { admin.components().configs.config(&job_type).map(|_| ()) })
        .await;
    (dir, admin, worker)
}

fn field(name: &str, label: &str, t: pb::ConfigFieldType, w: pb::ConfigWidget) -> pb::ConfigField {
    pb::ConfigField {
        name: name.into(),
        label: label.into(),
        field_type: t as i32,
        widget: w as i32,
        ..Default::default()
    }
}

fn value(kind: Kind) -> pb::ConfigValue {
    pb::ConfigValue { kind: Some(kind) }
}

// ---- tests ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_renders_as_html_with_a_worker_attached() {
    let spec = FakeWorkerSpec::new("w1", T, 2)
        .detect(|_| vec![vec![proposal("alpha"), proposal("beta")]])
        .exec(|_| Exec::Succeed(vec![50.0]));
    let (_dir, admin, _worker) = admin_with(spec).await;
    let jobs = admin.wait_jobs("two jobs succeeded", &format!("job_type={T}"), 2, "succeeded").await;
    let job_id = jobs[0]["job_id"].as_str().unwrap().to_string();

    let pages: Vec<(String, &str)> = vec![
        ("/plugin".into(), "Test test_job"),
        (format!("/plugin/job-types/{T}"), "Detect only"),
        (format!("/plugin/job-types/{T}?tab=configuration"), "Threshold"),
        (format!("/plugin/job-types/{T}?tab=runtime"), "Runtime settings"),
        (format!("/plugin/job-types/{T}?tab=history"), "Run history"),
        ("/plugin/jobs".into(), "job for alpha"),
        (format!("/plugin/jobs?job_type={T}&state=succeeded&text=alpha"), "job for alpha"),
        ("/plugin/jobs?dead_letter=true".into(), "No job matches these filters."),
        (format!("/plugin/jobs/{job_id}"), "Attempts"),
        ("/plugin/workers".into(), "w1"),
        ("/plugin/activities".into(), "Activities"),
        (format!("/plugin/activities?job_type={T}&job_id={job_id}"), &job_id),
    ];
    for (path, expected) in &pages {
        let r = http::get(&admin.http, path).await;
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        assert!(is_html(&r), "GET {path} is HTML");
        let html = r.text();
        assert!(html.contains(expected), "GET {path} shows {expected:?}");
        assert!(html.contains("/plugin/static/app.js"), "GET {path} loads the page script");
        assert!(r.headers.get("content-security-policy").is_some(), "GET {path} has a CSP");
    }
    let job_page = http::get(&admin.http, &format!("/plugin/jobs/{job_id}")).await.text();
    assert!(job_page.contains("succeeded") && job_page.contains("data-job-row"), "job detail shows state and progress");
    assert!(job_page.contains("<progress max=\"100\" value=\"100\""), "a finished job's progress bar is full");

    for (file, kind) in [("app.css", "text/css"), ("app.js", "text/javascript"), ("favicon.svg", "image/svg+xml")] {
        let r = http::get(&admin.http, &format!("/plugin/static/{file}")).await;
        assert_eq!(r.status, 200, "{file}");
        assert!(r.headers["content-type"].to_str().unwrap().starts_with(kind), "{file} content type");
    }

    for (path, sentence) in [
        ("/plugin/job-types/no_such_type", "There is no job type “no_such_type”."),
        ("/plugin/jobs/j999999", "There is no job “j999999”."),
        ("/plugin/jobs/not-a-job", "There is no job “not-a-job”."),
        ("/plugin/nothing/here", "There is no page at this address."),
        ("/plugin/static/missing.css", "There is no such file."),
    ] {
        let r = http::get(&admin.http, path).await;
        assert_eq!(r.status, 404, "GET {path}");
        assert!(is_html(&r) && r.text().contains(sentence), "GET {path} explains itself: {}", r.text());
    }
    let bad_filter = http::get(&admin.http, "/plugin/jobs?state=sleeping").await;
    assert_eq!(bad_filter.status, 200);
    assert!(bad_filter.text().contains("Unknown job state"), "a bad filter is a sentence on the page");
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saving_the_configuration_form_persists_the_values() {
    let (_dir, admin, _worker) = admin_with(FakeWorkerSpec::new("w1", T, 1)).await;
    let (client, page) = Client::open(&admin.http, &format!("/plugin/job-types/{T}?tab=configuration")).await;
    let html = page.text();
    assert!(field_block(&html, "admin.threshold").contains("value=\"10\""), "the default is shown");
    assert!(field_block(&html, "admin.threshold").contains("min=\"0\" max=\"100\""), "the range is on the input");

    let mut events = Sse::open(&admin.http, "/api/plugin/events", None).await;
    let r = client.post(&format!("/plugin/job-types/{T}/config"), &[("admin.threshold", "42")]).await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert!(location(&r).starts_with(&format!("/plugin/job-types/{T}?tab=configuration&ok=")), "{}", location(&r));
    assert_eq!(flash(&r), "Configuration saved.");
    assert_eq!(int_of(saved(&admin, T).admin_config_values.get("threshold")), Some(42));
    assert_eq!(saved(&admin, T).updated_by, "admin", "the actor is the name of the token the page was used with");
    events.next_matching("config_saved event", WAIT, |e| e.event == "config_saved").await;

    let api = admin.get(&format!("/api/plugin/job-types/{T}/config")).await;
    let threshold = &api["admin_config_values"]["threshold"]["int64_value"];
    assert!(threshold == "42" || threshold == 42, "the API sees the saved value: {api}");

    let page = client.get(&format!("/plugin/job-types/{T}?tab=configuration")).await.text();
    assert!(field_block(&page, "admin.threshold").contains("value=\"42\""), "the page shows the saved value");
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_value_is_shown_next_to_its_field_with_the_input_kept_and_nothing_saved() {
    let (_dir, admin, _worker) = admin_with(FakeWorkerSpec::new("w1", T, 1)).await;
    let (client, _) = Client::open(&admin.http, &format!("/plugin/job-types/{T}")).await;

    let r = client.post(&format!("/plugin/job-types/{T}/config"), &[("admin.threshold", "500")]).await;
    assert_eq!(r.status, 422);
    let html = r.text();
    let block = field_block(&html, "admin.threshold");
    assert!(block.contains("Must be at most 100."), "the error is next to the field: {block}");
    assert!(block.contains("value=\"500\""), "the operator's input is kept: {block}");
    assert!(block.contains("aria-invalid=\"true\""));
    assert!(html.contains("Nothing was saved: one value needs fixing"), "the page says nothing was saved");
    assert_eq!(int_of(saved(&admin, T).admin_config_values.get("threshold")), Some(10), "nothing was saved");

    let r = client.post(&format!("/plugin/job-types/{T}/config"), &[("admin.threshold", "lots")]).await;
    assert_eq!(r.status, 422);
    let html = r.text();
    let block = field_block(&html, "admin.threshold");
    assert!(block.contains("Must be a whole number."), "{block}");
    assert!(block.contains("value=\"lots\""), "{block}");
    assert_eq!(int_of(saved(&admin, T).admin_config_values.get("threshold")), Some(10));
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_settings_save_and_out_of_range_values_are_refused() {
    let (_dir, admin, _worker) = admin_with(FakeWorkerSpec::new("w1", T, 1)).await;
    let (client, page) = Client::open(&admin.http, &format!("/plugin/job-types/{T}?tab=runtime")).await;
    assert!(page.text().contains("name=\"runtime.retry_limit\" value=\"2\""), "the descriptor's default shows");

    let path = format!("/plugin/job-types/{T}/runtime");
    let base = [
        ("runtime.enabled", "false"),
        ("runtime.enabled", "true"),
        ("runtime.detection_interval_minutes", "15"),
        ("runtime.retry_limit", "5"),
    ];
    let r = client.post(&path, &base).await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(flash(&r), "Runtime settings saved.");
    let runtime = saved(&admin, T).admin_runtime.expect("runtime saved");
    assert_eq!((runtime.enabled, runtime.detection_interval_minutes, runtime.retry_limit), (true, 15, 5));
    assert_eq!(int_of(saved(&admin, T).admin_config_values.get("threshold")), Some(10), "other values are kept");

    let r = client.post(&path, &[("runtime.enabled", "false"), ("runtime.retry_limit", "1000")]).await;
    assert_eq!(r.status, 422);
    let html = r.text();
    let at = html.find("name=\"runtime.retry_limit\"").unwrap();
    let around = &html[at..at + 400];
    assert!(around.contains("value=\"1000\"") && around.contains("Must be at most 100."), "{around}");
    assert_eq!(saved(&admin, T).admin_runtime.unwrap().retry_limit, 5, "nothing was saved");

    let r = client.post(&path, &[("runtime.enabled", "false")]).await;
    assert_eq!(r.status, 303);
    assert!(!saved(&admin, T).admin_runtime.unwrap().enabled, "an unchecked box disables the job type");
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_post_without_the_csrf_token_is_rejected_and_changes_nothing() {
    let (_dir, admin, _worker) = admin_with(FakeWorkerSpec::new("w1", T, 1)).await;
    let (client, _) = Client::open(&admin.http, &format!("/plugin/job-types/{T}")).await;
    let config = format!("/plugin/job-types/{T}/config");

    let token = client.token.as_str();
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], bool);
    let cases: [Case; 3] = [
        ("no token", &[("admin.threshold", "1")], true),
        ("wrong token", &[("csrf", "0000"), ("admin.threshold", "1")], true),
        ("no cookie", &[("csrf", token), ("admin.threshold", "1")], false),
    ];
    for (what, pairs, cookie) in cases {
        let r = client.post_raw(&config, pairs, cookie).await;
        assert_eq!(r.status, 403, "{what}");
        assert!(is_html(&r), "{what}");
        assert!(r.text().contains("security token"), "{what}: the page says why: {}", r.text());
    }
    assert_eq!(int_of(saved(&admin, T).admin_config_values.get("threshold")), Some(10));

    for path in [
        format!("/plugin/job-types/{T}/runtime"),
        format!("/plugin/job-types/{T}/run"),
        format!("/plugin/job-types/{T}/detect"),
        format!("/plugin/job-types/{T}/schema"),
        "/plugin/workers/w1/drain".to_string(),
        "/plugin/jobs/j1/cancel".to_string(),
    ] {
        let r = client.post_raw(&path, &[("draining", "true")], true).await;
        assert_eq!(r.status, 403, "POST {path} without a token");
    }
    assert!(!admin.components().registry.is_draining("w1"));
    admin.stop().await;
}

fn secret_descriptor() -> pb::JobTypeDescriptor {
    let mut d = simple_descriptor(T);
    let mut token = field("api_token", "API token", pb::ConfigFieldType::String, pb::ConfigWidget::Password);
    token.sensitive = true;
    token.required = true;
    let endpoint = field("endpoint", "Endpoint", pb::ConfigFieldType::String, pb::ConfigWidget::Text);
    d.worker_config_form = Some(pb::ConfigForm {
        form_id: "worker".into(),
        title: "Credentials".into(),
        sections: vec![pb::ConfigSection {
            section_id: "auth".into(),
            title: "Auth".into(),
            fields: vec![token, endpoint],
            ..Default::default()
        }],
        ..Default::default()
    });
    d.worker_default_values.insert("api_token".into(), value(Kind::StringValue("DEFAULT-SECRET-1234".into())));
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sensitive_value_never_appears_in_pages_api_or_events() {
    const SECRET: &str = "hunter2-TOP-SECRET-value";
    let mut spec = FakeWorkerSpec::new("w1", T, 1);
    spec.descriptors.insert(T.into(), secret_descriptor());
    let (_dir, admin, _worker) = admin_with(spec).await;
    let (client, page) = Client::open(&admin.http, &format!("/plugin/job-types/{T}?tab=configuration")).await;
    let html = page.text();
    assert!(!html.contains("DEFAULT-SECRET-1234"), "the bootstrapped secret is not shown");
    let block = field_block(&html, "worker.api_token");
    assert!(block.contains("type=\"password\"") && block.contains("value=\"\""), "{block}");
    assert!(block.contains("saved, unchanged"), "a saved secret is announced, not shown: {block}");

    let mut events = Sse::open(&admin.http, "/api/plugin/events", None).await;
    let path = format!("/plugin/job-types/{T}/config");
    let r =
        client.post(&path, &[("admin.threshold", "10"), ("worker.api_token", SECRET), ("worker.endpoint", "e1")]).await;
    assert_eq!(r.status, 303, "{}", r.text());
    let stored = saved(&admin, T);
    assert_eq!(stored.worker_config_values["api_token"].kind, Some(Kind::StringValue(SECRET.into())));
    let ev = events.next_matching("config_saved event", WAIT, |e| e.event == "config_saved").await;
    assert!(!ev.data.contains(SECRET));

    // Blank means unchanged.
    let r = client.post(&path, &[("admin.threshold", "11"), ("worker.api_token", ""), ("worker.endpoint", "e2")]).await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(saved(&admin, T).worker_config_values["api_token"].kind, Some(Kind::StringValue(SECRET.into())));

    // A failed save does not echo a newly typed secret back either.
    let r = client.post(&path, &[("admin.threshold", "999"), ("worker.api_token", "NEW-SECRET-typed")]).await;
    assert_eq!(r.status, 422);
    let html = r.text();
    assert!(!html.contains("NEW-SECRET-typed") && !html.contains(SECRET));
    assert!(field_block(&html, "worker.api_token").contains("Enter the new value again"));
    assert_eq!(saved(&admin, T).worker_config_values["api_token"].kind, Some(Kind::StringValue(SECRET.into())));

    for path in [
        "/plugin".to_string(),
        format!("/plugin/job-types/{T}"),
        format!("/plugin/job-types/{T}?tab=configuration"),
        format!("/plugin/job-types/{T}?tab=runtime"),
        format!("/plugin/job-types/{T}?tab=history"),
        "/plugin/activities".to_string(),
        "/plugin/workers".to_string(),
        "/plugin/jobs".to_string(),
        format!("/api/plugin/job-types/{T}/config"),
        "/api/plugin/activities".to_string(),
        "/api/plugin/job-types".to_string(),
    ] {
        let body = http::get(&admin.http, &path).await.text();
        assert!(!body.contains(SECRET), "GET {path} leaks the secret");
    }
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_descriptor_with_markup_in_its_text_renders_inert() {
    const SCRIPT: &str = "<script>alert('x')</script>";
    let mut d = simple_descriptor(T);
    d.display_name = format!("Evil {SCRIPT}");
    d.description = "<img src=x onerror=alert(1)>".into();
    let form = d.admin_config_form.as_mut().unwrap();
    form.title = format!("Form {SCRIPT}");
    form.sections[0].title = format!("Section {SCRIPT}");
    let f = &mut form.sections[0].fields[0];
    f.label = format!("Label {SCRIPT}");
    f.description = format!("Description {SCRIPT}");
    f.help_text = "\"><script>alert(2)</script>".into();
    f.placeholder = "\" autofocus onfocus=\"alert(3)".into();
    let mut mode = field("mode", SCRIPT, pb::ConfigFieldType::Enum, pb::ConfigWidget::Select);
    mode.options = vec![pb::ConfigOption {
        value: "\"><script>alert(4)</script>".into(),
        label: SCRIPT.into(),
        ..Default::default()
    }];
    form.sections[0].fields.push(mode);
    let mut spec = FakeWorkerSpec::new("w1", T, 1)
        .detect(|_| {
            let mut p = proposal("k");
            p.summary = SCRIPT.into();
            vec![vec![p]]
        })
        .exec(|_| Exec::Fail(SCRIPT.into()));
    spec.capabilities[0].display_name = SCRIPT.into();
    spec.descriptors.insert(T.into(), d);
    let (_dir, admin, _worker) = admin_with(spec).await;
    let jobs = admin.wait_jobs("the job failed", &format!("job_type={T}"), 1, "failed").await;
    let job_id = jobs[0]["job_id"].as_str().unwrap().to_string();

    for (path, shows_it) in [
        ("/plugin".to_string(), true),
        (format!("/plugin/job-types/{T}"), true),
        (format!("/plugin/job-types/{T}?tab=configuration"), true),
        (format!("/plugin/job-types/{T}?tab=runtime"), true),
        (format!("/plugin/job-types/{T}?tab=history"), true),
        ("/plugin/jobs".to_string(), true),
        (format!("/plugin/jobs/{job_id}"), true),
        ("/plugin/workers".to_string(), true),
        ("/plugin/activities".to_string(), false),
    ] {
        let html = http::get(&admin.http, &path).await.text();
        assert!(!html.contains("<script>alert"), "GET {path} contains live script markup");
        assert!(!html.contains("<img src=x"), "GET {path} contains a live img tag");
        assert!(!html.contains("\" autofocus onfocus=\""), "GET {path} lets an attribute escape its quotes");
        if shows_it {
            let escaped = html.contains("&lt;script&gt;alert(") || html.contains("&#60;script&#62;alert(");
            assert!(escaped, "GET {path} shows the text, escaped");
        }
    }
    admin.stop().await;
}

fn all_types_descriptor() -> pb::JobTypeDescriptor {
    use pb::{ConfigFieldType as Ty, ConfigWidget as W};
    let mut d = simple_descriptor(T);
    let mut mode = field("mode", "Mode", Ty::Enum, W::Select);
    mode.options = ["fast", "safe"]
        .iter()
        .map(|v| pb::ConfigOption { value: v.to_string(), label: v.to_string(), ..Default::default() })
        .collect();
    let mut bucket = field("bucket", "Bucket", Ty::String, W::Text);
    bucket.visible_when_field = "mode".into();
    bucket.visible_when_equals = Some(value(Kind::StringValue("fast".into())));
    bucket.required = true;
    let mut zones = field("zones", "Zones", Ty::List, W::MultiSelect);
    zones.options = ["a", "b", "c"]
        .iter()
        .map(|v| pb::ConfigOption { value: v.to_string(), label: format!("Zone {v}"), ..Default::default() })
        .collect();
    let mut fixed = field("fixed", "Fixed", Ty::String, W::Text);
    fixed.read_only = true;
    let fields = vec![
        field("flag", "Flag", Ty::Bool, W::Toggle),
        field("ratio", "Ratio", Ty::Double, W::Number),
        field("notes", "Notes", Ty::String, W::Textarea),
        mode,
        bucket,
        field("wait", "Wait", Ty::Duration, W::Duration),
        field("tags", "Tags", Ty::List, W::Unspecified),
        zones,
        field("extra", "Extra", Ty::Object, W::Unspecified),
        field("blob", "Blob", Ty::Bytes, W::Unspecified),
        fixed,
    ];
    let form = d.admin_config_form.as_mut().unwrap();
    form.sections.push(pb::ConfigSection {
        section_id: "more".into(),
        title: "More".into(),
        fields,
        ..Default::default()
    });
    form.default_values.insert("fixed".into(), value(Kind::StringValue("constant".into())));
    form.default_values.insert("mode".into(), value(Kind::StringValue("safe".into())));
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_field_type_renders_its_control_and_round_trips_through_the_form() {
    let mut spec = FakeWorkerSpec::new("w1", T, 1);
    spec.descriptors.insert(T.into(), all_types_descriptor());
    let (_dir, admin, _worker) = admin_with(spec).await;
    let (client, page) = Client::open(&admin.http, &format!("/plugin/job-types/{T}?tab=configuration")).await;
    let html = page.text();
    assert!(field_block(&html, "admin.flag").contains("type=\"checkbox\""));
    // Found by a screenshot: a toggle once also rendered an empty textarea of its name.
    assert_eq!(html.matches("name=\"admin.flag\"").count(), 2, "a toggle is a hidden false plus the box");
    assert!(
        field_block(&html, "admin.ratio").contains("type=\"number\"")
            && field_block(&html, "admin.ratio").contains("step=\"any\"")
    );
    assert!(field_block(&html, "admin.notes").contains("<textarea"));
    assert!(
        field_block(&html, "admin.mode").contains("<select")
            && field_block(&html, "admin.mode").contains("value=\"safe\" selected")
    );
    let bucket = field_block(&html, "admin.bucket");
    assert!(
        bucket.contains("data-visible-when-field=\"admin.mode\"")
            && bucket.contains("data-visible-when-value=\"fast\"")
    );
    assert!(field_block(&html, "admin.wait").contains("name=\"unit:admin.wait\""));
    assert!(field_block(&html, "admin.tags").contains("One item per line."));
    assert!(
        field_block(&html, "admin.zones").contains("value=\"b\"")
            && field_block(&html, "admin.zones").contains("Zone b")
    );
    assert!(field_block(&html, "admin.extra").contains("A JSON object"));
    assert!(field_block(&html, "admin.blob").contains("base64"));
    let fixed = field_block(&html, "admin.fixed");
    assert!(fixed.contains("readonly") && fixed.contains("value=\"constant\""));

    let path = format!("/plugin/job-types/{T}/config");
    // The bucket is hidden (mode is safe), so its requirement does not apply.
    let r = client
        .post(
            &path,
            &[
                ("admin.threshold", "7"),
                ("admin.flag", "false"),
                ("admin.flag", "true"),
                ("admin.ratio", "0.5"),
                ("admin.notes", "line one\nline two"),
                ("admin.mode", "safe"),
                ("admin.bucket", ""),
                ("admin.wait", "2"),
                ("unit:admin.wait", "h"),
                ("admin.tags", "x\ny\n"),
                ("admin.zones", ""),
                ("admin.zones", "a"),
                ("admin.zones", "c"),
                ("admin.extra", r#"{"depth": 3, "name": "n"}"#),
                ("admin.blob", "aGVsbG8="),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.text());
    let v: HashMap<String, pb::ConfigValue> = saved(&admin, T).admin_config_values;
    let kind = |n: &str| v.get(n).and_then(|x| x.kind.clone());
    assert_eq!(kind("threshold"), Some(Kind::Int64Value(7)));
    assert_eq!(kind("flag"), Some(Kind::BoolValue(true)));
    assert_eq!(kind("ratio"), Some(Kind::DoubleValue(0.5)));
    assert_eq!(kind("notes"), Some(Kind::StringValue("line one\nline two".into())));
    assert_eq!(kind("wait"), Some(Kind::DurationValue(pb::Duration { seconds: 7200, nanos: 0 })));
    assert_eq!(kind("tags"), Some(Kind::StringList(pb::StringList { values: vec!["x".into(), "y".into()] })));
    assert_eq!(kind("zones"), Some(Kind::StringList(pb::StringList { values: vec!["a".into(), "c".into()] })));
    assert!(matches!(kind("extra"), Some(Kind::MapValue(m)) if m.fields.len() == 2));
    assert_eq!(kind("blob"), Some(Kind::BytesValue(b"hello".to_vec())));
    assert_eq!(kind("fixed"), Some(Kind::StringValue("constant".into())), "read-only keeps its value");

    // Shown again, every value comes back in its control.
    let html = client.get(&format!("/plugin/job-types/{T}?tab=configuration")).await.text();
    assert!(field_block(&html, "admin.flag").contains(" checked"));
    let wait = field_block(&html, "admin.wait");
    assert!(wait.contains("value=\"2\"") && wait.contains("value=\"h\" selected"), "{wait}");
    assert!(field_block(&html, "admin.tags").contains(">x\ny</textarea>"));
    assert!(field_block(&html, "admin.zones").contains("value=\"a\" checked"));
    assert!(field_block(&html, "admin.blob").contains(">aGVsbG8=</textarea>"));

    // Visible now, the bucket is required; bad JSON and bad base64 are errors too.
    let r = client
        .post(&path, &[("admin.mode", "fast"), ("admin.bucket", ""), ("admin.extra", "[1,"), ("admin.blob", "!!")])
        .await;
    assert_eq!(r.status, 422);
    let html = r.text();
    assert!(field_block(&html, "admin.bucket").contains("Is required."), "{}", field_block(&html, "admin.bucket"));
    assert!(field_block(&html, "admin.extra").contains("Must be a JSON object"));
    assert!(field_block(&html, "admin.blob").contains("Must be base64"));
    assert!(field_block(&html, "admin.mode").contains("value=\"fast\" selected"), "the choice is kept");
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_answer_with_a_redirect_and_a_human_status() {
    // Only the first detection proposes, so later ones cannot race the retry below.
    let detections = std::sync::atomic::AtomicUsize::new(0);
    let spec = FakeWorkerSpec::new("w1", T, 1)
        .detect(move |_| {
            if detections.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                vec![vec![proposal("one")]]
            } else {
                vec![]
            }
        })
        .exec(|_| Exec::HangUntilCancel);
    let (_dir, admin, _worker) = admin_with(spec).await;
    let jobs = admin.wait_jobs("the job runs", &format!("job_type={T}"), 1, "running").await;
    let job_id = jobs[0]["job_id"].as_str().unwrap().to_string();
    let jt = format!("/plugin/job-types/{T}");
    let (client, _) = Client::open(&admin.http, &jt).await;

    let r = client.post(&format!("{jt}/detect"), &[]).await;
    // Without a `back`, an action goes to the tab its form is on.
    assert_eq!((r.status, location(&r).starts_with(&format!("{jt}?tab=status&ok="))), (303, true), "{}", location(&r));
    assert!(flash(&r).starts_with("Detection started"), "{}", flash(&r));
    let r = client.post(&format!("{jt}/run"), &[]).await;
    assert_eq!(r.status, 303);
    assert!(flash(&r).starts_with("Run started"), "{}", flash(&r));
    let r = client.post(&format!("{jt}/schema"), &[]).await;
    assert_eq!(r.status, 303);
    assert_eq!(flash(&r), "Schema refreshed: descriptor version 1.");

    // Draining asks first: the first post changes nothing and shows what will happen.
    let r = client.post("/plugin/workers/w1/drain", &[("draining", "true")]).await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("Drain worker w1?") && r.text().contains("Drain the worker"), "{}", r.text());
    assert!(!admin.components().registry.is_draining("w1"), "nothing changed before the confirmation");
    let r = client.post("/plugin/workers/w1/drain", &[("draining", "true"), ("confirm", "yes")]).await;
    assert_eq!(r.status, 303);
    assert_eq!(location(&r).split('?').next(), Some("/plugin/workers"));
    assert!(admin.components().registry.is_draining("w1"));
    let r = client.post("/plugin/workers/w1/drain", &[("draining", "false"), ("back", "/plugin")]).await;
    assert_eq!(location(&r).split('?').next(), Some("/plugin"));
    assert!(!admin.components().registry.is_draining("w1"));
    let r = client.post("/plugin/workers/nobody/drain", &[("draining", "true"), ("confirm", "yes")]).await;
    assert!(location(&r).contains("error=") && flash(&r).contains("is not connected"), "{}", location(&r));
    let r = client
        .post(
            "/plugin/workers/w1/drain",
            &[("draining", "true"), ("back", "https://evil.example/"), ("confirm", "yes")],
        )
        .await;
    assert_eq!(location(&r).split('?').next(), Some("/plugin/workers"), "no open redirect");
    client.post("/plugin/workers/w1/drain", &[("draining", "false")]).await;

    // So does cancel (and expire).
    let r = client.post(&format!("/plugin/jobs/{job_id}/cancel"), &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains(&format!("Cancel job {job_id}?")), "{}", r.text());
    let r = client.post(&format!("/plugin/jobs/{job_id}/expire"), &[]).await;
    assert!(r.text().contains(&format!("Expire job {job_id}?")), "{}", r.text());
    assert_eq!(admin.jobs(&format!("job_type={T}&state=canceled")).await.len(), 0, "nothing changed yet");
    let r = client.post(&format!("/plugin/jobs/{job_id}/cancel"), &[("confirm", "yes")]).await;
    assert_eq!(r.status, 303);
    assert_eq!(location(&r).split('?').next(), Some(format!("/plugin/jobs/{job_id}").as_str()));
    admin.wait_jobs("the job is canceled", &format!("job_type={T}"), 1, "canceled").await;
    let r = client.post(&format!("/plugin/jobs/{job_id}/cancel"), &[("confirm", "yes")]).await;
    assert!(flash(&r).contains("has already finished"), "a second cancel is explained: {}", flash(&r));
    let r = client.post(&format!("/plugin/jobs/{job_id}/retry"), &[("back", "/plugin/jobs?state=canceled")]).await;
    assert_eq!(location(&r).split("&ok=").next(), Some("/plugin/jobs?state=canceled"));
    assert!(flash(&r).contains("requeued"), "{}", flash(&r));
    let r = client.post(&format!("/plugin/jobs/{job_id}/explode"), &[]).await;
    assert_eq!(r.status, 404);
    assert!(r.text().contains("Jobs have no action"));
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jobs_list_filters_and_pages_by_job_id() {
    let spec = FakeWorkerSpec::new("w1", T, 8)
        .detect(|_| vec![(0..60).map(|i| proposal(&format!("key-{i:02}"))).collect()])
        .exec(|_| Exec::Succeed(vec![]));
    let (_dir, admin, _worker) = admin_with(spec).await;
    admin.wait_jobs("sixty jobs succeeded", &format!("job_type={T}&limit=100"), 60, "succeeded").await;

    let first = http::get(&admin.http, "/plugin/jobs").await.text();
    assert_eq!(first.matches("data-job-row=").count(), 50, "a page holds 50 jobs");
    let at = first.find("id=\"older\"").expect("a link to older jobs");
    let start = first[..at].rfind("href=\"").unwrap() + "href=\"".len();
    let href = first[start..].split('"').next().unwrap().replace("&amp;", "&");
    assert!(href.starts_with("/plugin/jobs?before=j"), "{href}");
    let second = http::get(&admin.http, &href).await.text();
    assert_eq!(second.matches("data-job-row=").count(), 10, "the second page holds the rest");
    assert!(second.contains("← Newest"));
    assert!(!second.contains("id=\"older\""), "no third page");

    let filtered =
        http::get(&admin.http, &format!("/plugin/jobs?job_type={T}&state=succeeded&text=key-07")).await.text();
    assert_eq!(filtered.matches("data-job-row=").count(), 1);
    assert!(filtered.contains("job for key-07"));
    let none = http::get(&admin.http, "/plugin/jobs?state=failed").await.text();
    assert!(none.contains("No job matches these filters."));
    admin.stop().await;
}
