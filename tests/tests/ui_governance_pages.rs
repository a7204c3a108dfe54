//! The operator-governance pages over plain HTTP (no browser) against a real admin with
//! fake-over-gRPC workers: the audit page filters and pages like the API and links the
//! export with the same filters; the enqueue form creates a job the worker receives and
//! explains every refusal with the input kept; a job type's holds and schedule forms
//! act through the command layer; the global pauses and removing a cron schedule go
//! through their confirmation step; drains show who set them and when.

use std::time::Duration;

use serde_json::{Value, json};
use tests::{
    TempDir,
    fake_worker::{Exec, FakeWorker, FakeWorkerSpec},
    harness::TestAdmin,
    http::{self, Response},
    page_client::{Client, flash_status, location},
    wait_for,
};

const T: &str = "test_job";
const WAIT: Duration = Duration::from_secs(30);

// ---- helpers --------------------------------------------------------------------------

async fn admin_with(spec: FakeWorkerSpec) -> (TempDir, TestAdmin, FakeWorker) {
    let dir = TempDir::new("ui-governance-pages");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let job_type = spec.capabilities[0].job_type.clone();
    let worker = FakeWorker::start(admin.grpc, spec).await;
    wait_for("the descriptor is stored", WAIT, || async { admin.components().configs.config(&job_type).map(|_| ()) })
        .await;
    (dir, admin, worker)
}

/// Undoes askama's HTML escaping.
fn unescape(html: &str) -> String {
    html.replace("&#34;", "\"")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&#60;", "<")
        .replace("&gt;", ">")
        .replace("&#62;", ">")
        .replace("&amp;", "&")
        .replace("&#38;", "&")
}

/// The page, which must be 200 HTML.
async fn page(admin: &TestAdmin, path: &str) -> String {
    let r = http::get(&admin.http, path).await;
    assert_eq!(r.status, 200, "GET {path}: {}", r.text());
    r.text()
}

/// One audit row of the page: (id, action, target, outcome, reason).
#[derive(Debug, Clone, PartialEq)]
struct Row {
    id: i64,
    action: String,
    target: String,
    outcome: String,
    reason: String,
}

/// The text of the first `<td` … `</td>` cell at or after `from`, tags removed.
fn cell(html: &str, from: usize) -> (String, usize) {
    let start = from + html[from..].find("<td").expect("a cell");
    let open_end = start + html[start..].find('>').unwrap() + 1;
    let end = open_end + html[open_end..].find("</td>").unwrap();
    let mut text = String::new();
    let mut in_tag = false;
    for c in html[open_end..end].chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    (unescape(text.trim()), end + "</td>".len())
}

fn audit_rows(html: &str) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut at = 0;
    while let Some(found) = html[at..].find("<tr data-audit-id=\"") {
        let start = at + found + "<tr data-audit-id=\"".len();
        let id: i64 = html[start..start + html[start..].find('"').unwrap()].parse().unwrap();
        let (_time, next) = cell(html, start);
        let (_actor, next) = cell(html, next);
        let (action, next) = cell(html, next);
        let (target, next) = cell(html, next);
        let outcome_start = next;
        let (_outcome_text, next) = cell(html, next);
        let outcome_cell = &html[outcome_start..next];
        let outcome = if outcome_cell.contains("badge bad\">refused") { "refused" } else { "done" };
        let reason = outcome_cell
            .find("data-field=\"reason\">")
            .map(|r| {
                let s = r + "data-field=\"reason\">".len();
                unescape(&outcome_cell[s..s + outcome_cell[s..].find("</div>").unwrap()])
            })
            .unwrap_or_default();
        rows.push(Row { id, action, target, outcome: outcome.into(), reason });
        at = next;
    }
    rows
}

/// The `href` of the element with this id, decoded from the HTML.
fn href_of(html: &str, id: &str) -> Option<String> {
    let at = html.find(&format!("id=\"{id}\""))?;
    let tag_start = html[..at].rfind('<').unwrap();
    let tag = &html[tag_start..at + html[at..].find('>').unwrap()];
    let h = tag.find("href=\"")? + "href=\"".len();
    Some(unescape(&tag[h..h + tag[h..].find('"').unwrap()]))
}

fn flash(r: &Response) -> Result<String, String> {
    flash_status(r).unwrap_or_else(|| panic!("a flash status in the redirect: {} {}", r.status, location(r)))
}

async fn hold(admin: &TestAdmin, t: &str, body: Value) -> Response {
    http::post_json(&admin.http, &format!("/api/plugin/job-types/{t}/hold"), &body).await
}

// ---- tests ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_page_filters_like_the_api_pages_by_id_and_links_the_export() {
    let (_dir, admin, _worker) = admin_with(FakeWorkerSpec::new("w1", T, 1)).await;
    assert_eq!(hold(&admin, T, json!({ "detection": true })).await.status, 200);
    assert_eq!(hold(&admin, T, json!({ "detection": false })).await.status, 200);
    assert_eq!(hold(&admin, "no_such_type", json!({ "dispatch": true })).await.status, 404);
    let r = http::post_json(&admin.http, "/api/plugin/jobs/j999/cancel", &json!({})).await;
    assert_eq!(r.status, 404, "{}", r.text());
    for paused in [true, false] {
        let r = http::post_json(&admin.http, &format!("/api/plugin/schedules/pause?paused={paused}"), &json!({})).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let api = admin.get("/api/plugin/audit").await;
    let api_events = api["events"].as_array().unwrap().clone();
    assert_eq!(api_events.len(), 6, "{api}");

    // Everything, newest first, as the API lists it; refusals marked with their reason.
    let html = page(&admin, "/plugin/audit").await;
    assert!(html.contains("<a href=\"/plugin/audit\" aria-current=\"page\">Audit</a>"), "the navigation has the page");
    let rows = audit_rows(&html);
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let api_ids: Vec<i64> = api_events.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, api_ids, "the page lists what the API lists, newest first");
    for (row, event) in rows.iter().zip(&api_events) {
        assert_eq!(row.action, event["action"].as_str().unwrap());
        assert_eq!(row.target, event["target"].as_str().unwrap());
        assert_eq!(row.outcome, event["outcome"].as_str().unwrap());
        assert_eq!(row.reason, event["reason"].as_str().unwrap(), "the refusal's reason is shown");
    }
    let refused: Vec<&Row> = rows.iter().filter(|r| r.outcome == "refused").collect();
    assert_eq!(refused.len(), 2, "{rows:?}");
    assert!(refused.iter().all(|r| !r.reason.is_empty()), "{refused:?}");
    assert!(
        html.contains("<span class=\"strong\">admin</span><div class=\"sub\">token</div>"),
        "the actor and its kind"
    );
    assert!(html.contains("<code>{&#34;detection&#34;:true,&#34;dispatch&#34;:null}</code>"), "compact parameters");
    assert!(html.contains("<a href=\"/plugin/jobs/j999\">j999</a>"), "a job target links to the job");

    // The filters of the API, alone and together.
    let only = |html: &str| audit_rows(html);
    let holds = only(&page(&admin, "/plugin/audit?action=hold_job_type").await);
    assert_eq!(holds.len(), 3);
    assert!(holds.iter().all(|r| r.action == "hold_job_type"));
    let refusals = only(&page(&admin, "/plugin/audit?outcome=refused").await);
    assert_eq!(refusals.iter().map(|r| r.id).collect::<Vec<_>>(), refused.iter().map(|r| r.id).collect::<Vec<_>>());
    let both = only(&page(&admin, "/plugin/audit?action=hold_job_type&outcome=refused").await);
    assert_eq!(both.len(), 1);
    assert_eq!(both[0].target, "no_such_type");
    let mine = only(&page(&admin, &format!("/plugin/audit?actor=admin&target={T}")).await);
    assert_eq!(mine.len(), 2, "{mine:?}");
    let filtered =
        page(&admin, "/plugin/audit?action=pause_schedules&since=2000-01-01&until=2999-01-01%2000%3A00").await;
    assert_eq!(only(&filtered).len(), 2);
    assert!(filtered.contains("value=\"2000-01-01T00:00:00Z\""), "a typed date is read as UTC and shown as such");
    assert!(filtered.contains("<option value=\"pause_schedules\" selected>"), "the filter stays selected");
    let future = page(&admin, "/plugin/audit?since=2999-01-01T00:00:00Z").await;
    assert!(only(&future).is_empty());
    assert!(future.contains("No event matches these filters."));
    let bad = page(&admin, "/plugin/audit?since=yesterday").await;
    assert!(bad.contains("id=\"filter-error\""), "a bad time is explained on the page");
    assert!(unescape(&bad).contains("Since: \"yesterday\" is not a time"), "{bad}");

    // The export links carry the filters; the export holds exactly the filtered events.
    let holds_page = page(&admin, "/plugin/audit?action=hold_job_type&outcome=done").await;
    for format in ["jsonl", "json", "csv"] {
        let href = href_of(&holds_page, &format!("export-{format}")).expect("an export link");
        assert_eq!(href, format!("/api/plugin/audit/export?format={format}&action=hold_job_type&outcome=done"));
    }
    let csv = http::get(&admin.http, &href_of(&holds_page, "export-csv").unwrap()).await;
    assert_eq!(csv.status, 200);
    let lines: Vec<String> = csv.text().lines().map(String::from).collect();
    assert!(lines[0].starts_with("id,at,actor,actor_kind,action,target"), "{lines:?}");
    assert_eq!(lines.len(), 3, "the header and the two holds that were carried out: {lines:?}");
    assert!(lines[1..].iter().all(|l| l.contains(",hold_job_type,") && l.contains(",done,")), "{lines:?}");

    // Keyset paging: 100 a page, "Older" continues below the last id, nothing twice.
    for i in 0..110 {
        assert_eq!(hold(&admin, T, json!({ "dispatch": i % 2 == 0 })).await.status, 200);
    }
    let first = page(&admin, "/plugin/audit").await;
    let first_rows = audit_rows(&first);
    assert_eq!(first_rows.len(), 100);
    assert!(first_rows.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    let older = href_of(&first, "older").expect("an Older link");
    assert_eq!(older, format!("/plugin/audit?before={}", first_rows[99].id));
    assert!(href_of(&first, "export-csv").unwrap().ends_with("format=csv"), "no filter, no filter in the export");
    let second = page(&admin, &older).await;
    let second_rows = audit_rows(&second);
    assert_eq!(second_rows.len(), 116 - 100, "six events and 110 holds in all");
    assert!(second_rows[0].id < first_rows[99].id);
    assert!(second.contains(">← Newest</a>") && href_of(&second, "older").is_none());
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_enqueue_form_creates_a_job_the_worker_runs_and_explains_refusals() {
    let spec = FakeWorkerSpec::new("w1", T, 1).exec(|_| Exec::HangUntilCancel);
    let (_dir, admin, worker) = admin_with(spec).await;
    let path = format!("/plugin/job-types/{T}");
    let (client, r) = Client::open(&admin.http, &path).await;
    let html = r.text();
    assert!(html.contains("id=\"enqueue-form\"") && html.contains(">Enqueue job</button>"), "the form is on the page");
    assert!(html.contains("<option value=\"normal\" selected>normal</option>"), "normal priority by default");

    let jobs = format!("{path}/jobs");
    let params = r#"{"path": {"string_value": "/data"}, "limit": {"int64_value": "7"}}"#;
    let form = [
        ("summary", "Copy /data by hand"),
        ("dedupe_key", "copy-data"),
        ("priority", "high"),
        ("not_before", ""),
        ("parameters", params),
    ];
    let r = client.post(&jobs, &form).await;
    assert_eq!(r.status, 303, "{}", r.text());
    let to = location(&r);
    let job_id = to.strip_prefix("/plugin/jobs/").and_then(|rest| rest.split('?').next()).unwrap().to_string();
    assert_eq!(flash(&r), Ok(format!("Job {job_id} created: it waits as pending until a worker takes it.")));
    let view = admin.get(&format!("/api/plugin/jobs/{job_id}")).await;
    assert_eq!(
        (&view["summary"], &view["dedupe_key"], &view["priority"]),
        (&json!("Copy /data by hand"), &json!("copy-data"), &json!("high"))
    );
    let exec = worker
        .inbox
        .wait_for("the worker gets the job", WAIT, |m| {
            matches!(&m.body, Some(proto::pb::admin_to_worker_message::Body::ExecuteJobRequest(e))
                if e.job.as_ref().is_some_and(|j| j.job_id == job_id))
        })
        .await;
    let Some(proto::pb::admin_to_worker_message::Body::ExecuteJobRequest(e)) = exec.body else { unreachable!() };
    let got = &e.job.unwrap().parameters;
    assert_eq!(
        got.get("path").and_then(|v| v.kind.clone()),
        Some(proto::pb::config_value::Kind::StringValue("/data".into()))
    );
    assert_eq!(got.get("limit").and_then(|v| v.kind.clone()), Some(proto::pb::config_value::Kind::Int64Value(7)));
    assert!(page(&admin, &to).await.contains("Copy /data by hand"), "the redirect leads to the new job's page");

    // The same dedupe key while that job is active: refused, naming the job, input kept.
    let r = client.post(&jobs, &[("summary", "again"), ("dedupe_key", "copy-data"), ("parameters", "{}")]).await;
    assert_eq!(r.status, 409);
    let html = r.text();
    assert!(
        unescape(&html).contains("An active job of this type already has the dedupe key “copy-data”:"),
        "the refusal says why"
    );
    assert!(html.contains(&format!("<a href=\"/plugin/jobs/{job_id}\" id=\"enqueue-duplicate\">{job_id}</a>")));
    assert!(html.contains("value=\"again\"") && html.contains("value=\"copy-data\""), "the input is kept");
    assert!(html.contains("No job was created: see the form below."));

    // Input the admin cannot take: 422, the reason on the page, nothing created.
    let before = admin.jobs(&format!("job_type={T}")).await.len();
    for (params, priority, not_before, why) in [
        ("[1, 2]", "normal", "", "Give the parameters as a JSON object"),
        ("{\"path\": ", "normal", "", "The parameters are not JSON"),
        ("{\"path\": 3}", "normal", "", "The job is not valid"),
        ("{}", "urgent", "", "priority \"urgent\" is not low, normal, high or critical"),
        ("{}", "normal", "soon", "not_before: \"soon\" is not a time"),
    ] {
        let r = client.post(&jobs, &[("parameters", params), ("priority", priority), ("not_before", not_before)]).await;
        assert_eq!(r.status, 422, "{params} {priority} {not_before}");
        let text = unescape(&r.text());
        let error = &text[text.find("id=\"enqueue-error\">").expect("the form's error")..];
        let shown: String = error.chars().take(300).collect();
        assert!(shown.to_lowercase().contains(&why.to_lowercase()), "{why:?} in {shown}");
        assert!(text.contains(&format!(">{params}</textarea>")), "the parameters are kept");
    }
    assert_eq!(admin.jobs(&format!("job_type={T}")).await.len(), before, "nothing was created");

    // A typed date and time is read as UTC.
    let r = client.post(&jobs, &[("not_before", "2030-01-02 03:04"), ("parameters", "")]).await;
    assert_eq!(r.status, 303, "{}", r.text());
    let later = location(&r).trim_start_matches("/plugin/jobs/").split('?').next().unwrap().to_string();
    assert_eq!(
        tests::time_ms(&admin.get(&format!("/api/plugin/jobs/{later}")).await["not_before"].clone()).unwrap(),
        1_893_553_440_000i64
    );

    // Each try is in the audit trail, done or refused.
    let audit = admin.get("/api/plugin/audit?action=enqueue_job").await;
    let outcomes: Vec<&str> =
        audit["events"].as_array().unwrap().iter().map(|e| e["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["done", "refused", "done"], "input the form refuses never reaches the command");
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_schedules_and_global_pauses_act_from_the_pages_with_confirmation_where_wide() {
    let (_dir, admin, worker) = admin_with(FakeWorkerSpec::new("w1", T, 1)).await;
    let path = format!("/plugin/job-types/{T}");
    let (client, r) = Client::open(&admin.http, &path).await;
    assert!(r.text().contains("id=\"hold-dispatch\""));

    // A job type's dispatch hold: at once, shown with who and when, released again.
    let r = client.post(&format!("{path}/hold"), &[("dispatch", "true")]).await;
    assert_eq!(
        flash(&r),
        Ok(format!("Dispatch of “{T}” is held: its pending jobs stay pending and running ones finish."))
    );
    let holds = admin.get("/api/plugin/holds").await;
    assert_eq!(holds["holds"][0]["kind"], "job_dispatch", "{holds}");
    assert_eq!(holds["holds"][0]["set_by"], "admin");
    let html = page(&admin, &path).await;
    assert!(html.contains("id=\"release-dispatch\"") && html.contains("by admin since <time"), "who and when");
    let overview = page(&admin, "/plugin").await;
    assert!(overview.contains(&format!("data-hold=\"job_dispatch\" data-hold-target=\"{T}\"")));
    assert!(overview.contains("dispatch held</span>"), "the job type's row says so");
    let r = client.post(&format!("{path}/hold"), &[("dispatch", "false")]).await;
    assert_eq!(flash(&r), Ok(format!("Dispatch of “{T}” is released: its pending jobs start again.")));
    assert_eq!(admin.get("/api/plugin/holds").await["holds"], json!([]));

    // A bad cron expression: 422, the reason beside the form, input kept, nothing saved.
    let r = client
        .post(&format!("{path}/schedule"), &[("kind", "cron"), ("cron", "61 * * * *"), ("time_zone", "UTC")])
        .await;
    assert_eq!(r.status, 422);
    let html = r.text();
    assert!(unescape(&html).contains("id=\"schedule-error\">Cron expression \"61 * * * *\" is invalid"), "{html}");
    assert!(html.contains("value=\"61 * * * *\""), "the input is kept");
    let schedules = admin.get("/api/plugin/schedules").await;
    assert_eq!(schedules["schedules"][0]["kind"], "interval", "nothing saved: {schedules}");
    let r = client
        .post(&format!("{path}/schedule"), &[("kind", "cron"), ("cron", "0 3 * * *"), ("time_zone", "Mars/Olympus")])
        .await;
    assert_eq!(r.status, 422);
    assert!(unescape(&r.text()).contains("Time zone \"Mars/Olympus\" is unknown"));

    // A good one is saved and shown with its next fire time.
    let r = client
        .post(&format!("{path}/schedule"), &[("kind", "cron"), ("cron", "0 3 * * *"), ("time_zone", "Europe/Berlin")])
        .await;
    assert_eq!(
        flash(&r),
        Ok(format!("Schedule saved: “{T}” detects on the cron expression “0 3 * * *” (Europe/Berlin)."))
    );
    let s = &admin.get("/api/plugin/schedules").await["schedules"][0];
    assert_eq!(
        (&s["kind"], &s["cron"], &s["time_zone"]),
        (&json!("cron"), &json!("0 3 * * *"), &json!("Europe/Berlin"))
    );
    let html = page(&admin, &format!("{path}?tab=runtime")).await;
    assert!(html.contains("<dd class=\"mono\" id=\"schedule-cron\">0 3 * * *</dd>"));
    assert!(html.contains(&format!("data-ms=\"{}\"", s["next_fire_at"].as_i64().unwrap())), "the next fire time");

    // Removing it goes through a confirmation that changes nothing until confirmed.
    let r = client.post(&format!("{path}/schedule/delete"), &[]).await;
    assert_eq!(r.status, 200);
    let html = unescape(&r.text());
    assert!(html.contains(&format!("<h1>Remove the cron schedule of “{T}”?</h1>")));
    assert!(
        html.contains(
            "stops detecting on the cron expression “0 3 * * *” (Europe/Berlin) and detects every 60 minutes"
        )
    );
    assert!(!html.contains("id=\"approval\""), "no approval token is configured");
    assert_eq!(admin.get("/api/plugin/schedules").await["schedules"][0]["kind"], "cron", "not yet removed");
    let r = client.post(&format!("{path}/schedule/delete"), &[("confirm", "yes")]).await;
    assert_eq!(flash(&r), Ok(format!("Cron schedule removed: “{T}” detects every 60 minutes again.")));
    assert_eq!(admin.get("/api/plugin/schedules").await["schedules"][0]["kind"], "interval");
    let r = client.post(&format!("{path}/schedule"), &[("kind", "interval"), ("interval_minutes", "15")]).await;
    assert_eq!(flash(&r), Ok(format!("Schedule saved: “{T}” detects every 15 minutes.")));
    assert_eq!(admin.get("/api/plugin/schedules").await["schedules"][0]["interval_minutes"], 15);

    // All schedules: the first post only asks; the confirmed one pauses, persisted.
    let r = client.post("/plugin/schedules/pause", &[("paused", "true"), ("back", "/plugin")]).await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("<h1>Pause all schedules?</h1>") && r.text().contains("id=\"confirm-cancel\""));
    assert_eq!(admin.get("/api/plugin/holds").await["schedules_paused"], false);
    let r =
        client.post("/plugin/schedules/pause", &[("paused", "true"), ("back", "/plugin"), ("confirm", "yes")]).await;
    assert_eq!(flash(&r), Ok("All schedules are paused: no scheduled detection runs until they are resumed.".into()));
    assert!(location(&r).starts_with("/plugin?"));
    assert_eq!(admin.get("/api/plugin/holds").await["schedules_paused"], true);
    let overview = page(&admin, "/plugin").await;
    assert!(overview.contains("data-hold=\"schedules\"") && overview.contains("id=\"resume-schedules\""));
    let html = page(&admin, &path).await;
    assert!(html.contains("id=\"global-schedules-paused\""), "the job type page says all schedules are paused");
    let r = client.post("/plugin/schedules/pause", &[("paused", "false"), ("confirm", "yes")]).await;
    assert_eq!(flash(&r), Ok("Schedules resumed: scheduled detections run again.".into()));
    assert_eq!(admin.get("/api/plugin/holds").await["schedules_paused"], false);

    // A drained worker shows who drained it and since when.
    let (workers_client, _) = Client::open(&admin.http, "/plugin/workers").await;
    let r = workers_client
        .post(&format!("/plugin/workers/{}/drain", worker.worker_id), &[("draining", "true"), ("confirm", "yes")])
        .await;
    assert!(flash(&r).is_ok(), "{:?}", flash(&r));
    let html = page(&admin, "/plugin/workers").await;
    let drain = &html[html.find("data-field=\"drain\"").expect("the drain's who and when")..];
    assert!(drain[..drain.find("</div>").unwrap()].contains("</time> by admin"), "{drain}");

    // Every one of these was a command of the admin's token.
    let audit = admin.get("/api/plugin/audit?actor=admin").await;
    let actions: Vec<&str> =
        audit["events"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    for action in ["hold_job_type", "set_schedule", "delete_schedule", "pause_schedules", "set_draining"] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }
    admin.stop().await;
}
