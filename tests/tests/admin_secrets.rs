//! Secrets in a real admin with real (fake-over-gRPC) workers: a saved sensitive value
//! stays redacted when a later descriptor drops the flag, is in no file of the data dir
//! (sealed with the admin's key) yet reaches the worker in clear, an older build's clear
//! config is encrypted at the next start, and a wrong key is refused at start.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use admin::{Admin, AdminConfig, SecretKeySource};
use prost::Message;
use proto::pb::{self, admin_to_worker_message::Body as AdminBody, config_value::Kind};
use serde_json::json;
use tests::{
    TempDir,
    fake_worker::{FakeWorker, FakeWorkerSpec, proposal, simple_descriptor},
    harness::TestAdmin,
    http, wait_for,
};

const T: &str = "test_job";
const WAIT: Duration = Duration::from_secs(30);
const KEY_A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const KEY_B: &str = "ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// `simple_descriptor` plus an admin field `api_token`, sensitive or not.
fn descriptor(version: u32, sensitive: bool) -> pb::JobTypeDescriptor {
    let mut d = simple_descriptor(T);
    d.descriptor_version = version;
    let widget = if sensitive { pb::ConfigWidget::Password } else { pb::ConfigWidget::Text };
    d.admin_config_form.as_mut().unwrap().sections[0].fields.push(pb::ConfigField {
        name: "api_token".into(),
        label: "API token".into(),
        field_type: pb::ConfigFieldType::String as i32,
        widget: widget as i32,
        sensitive,
        ..Default::default()
    });
    d
}

fn spec(worker_id: &str, d: pb::JobTypeDescriptor) -> FakeWorkerSpec {
    let mut spec = FakeWorkerSpec::new(worker_id, T, 1);
    spec.descriptors.insert(T.into(), d);
    spec
}

/// A worker that proposes one job only when its detection request carries `canary` as
/// the `api_token`, so a job exists only once the secret reached the worker.
fn canary_worker(canary: &'static str) -> FakeWorkerSpec {
    spec("w1", descriptor(1, true)).detect(move |request| {
        let token = request.admin_config_values.get("api_token").and_then(|v| v.kind.as_ref());
        if token == Some(&Kind::StringValue(canary.into())) { vec![vec![proposal("canary-job")]] } else { Vec::new() }
    })
}

fn with_key(key: &str) -> impl FnOnce(&mut AdminConfig) {
    let key = key.to_string();
    move |c| c.secret_key = SecretKeySource::Text(key)
}

fn config_path() -> String {
    format!("/api/plugin/job-types/{T}/config")
}

async fn descriptor_version(admin: &TestAdmin, version: u32) {
    wait_for("the descriptor is stored", WAIT, || async {
        let r = http::get(&admin.http, &format!("/api/plugin/job-types/{T}/descriptor")).await;
        (r.status == 200 && r.json()["descriptor_version"] == version).then_some(())
    })
    .await;
}

async fn save_token(admin: &TestAdmin, token: &str) {
    let body =
        json!({"admin_config_values": {"threshold": {"int64_value": "10"}, "api_token": {"string_value": token}}});
    let r = http::put_json(&admin.http, &config_path(), &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Whether the descriptor the admin shows marks `api_token` sensitive.
async fn is_sensitive(admin: &TestAdmin) -> bool {
    let d = admin.get(&format!("/api/plugin/job-types/{T}/descriptor")).await;
    let fields = d["admin_config_form"]["sections"][0]["fields"].as_array().cloned().unwrap_or_default();
    fields.iter().any(|f| f["name"] == "api_token" && f["sensitive"] == true)
}

/// What an operator can see of the job type: the config API and the job type's page, all
/// of its tabs.
async fn visible(admin: &TestAdmin) -> String {
    let api = http::get(&admin.http, &config_path()).await;
    assert_eq!(api.status, 200, "{}", api.text());
    let mut shown = api.text();
    for tab in ["status", "configuration", "runtime", "history"] {
        let page = http::get(&admin.http, &format!("/plugin/job-types/{T}?tab={tab}")).await;
        assert_eq!(page.status, 200, "{}", page.text());
        shown.push('\n');
        shown.push_str(&page.text());
    }
    shown
}

/// The HTML of the form field whose input is named `name`.
fn field_block<'a>(html: &'a str, name: &str) -> &'a str {
    let at = html.find(&format!("name=\"{name}\"")).unwrap_or_else(|| panic!("no input named {name}"));
    let start = html[..at].rfind("<div class=\"field").expect("field start");
    let end = html[at..].find("<div class=\"field").or_else(|| html[at..].find("</fieldset>")).map(|e| at + e);
    &html[start..end.unwrap_or(html.len())]
}

/// Kills the process when dropped (if it is still running).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every file under `dir`, recursively.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The files under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    walk(dir)
        .into_iter()
        .filter(|p| std::fs::read(p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes())))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_descriptor_that_drops_the_sensitive_flag_does_not_reveal_the_saved_secret() {
    const CANARY: &str = "canary-dropped-flag-7d1f";
    let dir = TempDir::new("secrets-flag");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let _w1 = FakeWorker::start(admin.grpc, spec("w1", descriptor(1, true))).await;
    descriptor_version(&admin, 1).await;
    save_token(&admin, CANARY).await;

    // A new worker instance sends version 2, where api_token is a plain text field.
    let _w2 = FakeWorker::start(admin.grpc, spec("w2", descriptor(2, false))).await;
    descriptor_version(&admin, 2).await;
    let shown = visible(&admin).await;
    assert!(!shown.contains(CANARY), "the secret stays hidden in the API and the page");
    assert!(is_sensitive(&admin).await, "the field is still shown as sensitive");
    let page = http::get(&admin.http, &format!("/plugin/job-types/{T}?tab=configuration")).await.text();
    let block = field_block(&page, "admin.api_token");
    assert!(block.contains("type=\"password\"") && block.contains("value=\"\""), "never filled in: {block}");

    // Saving other values (the API copies the saved config, secret included) keeps it.
    let r = http::put_json(&admin.http, &config_path(), &json!({"admin_runtime": {"retry_limit": 3}})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!r.text().contains(CANARY));
    let r = http::put_json(
        &admin.http,
        &config_path(),
        &json!({"admin_config_values": {"threshold": {"int64_value": "12"}}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!visible(&admin).await.contains(CANARY));
    let token = admin.components().configs.config(T).unwrap().admin_config_values["api_token"].clone();
    assert_eq!(token.kind, Some(Kind::StringValue(CANARY.into())), "the secret is kept");
    admin.stop().await;

    // Across a restart too: the sealed value itself records that it is a secret.
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    assert!(!visible(&admin).await.contains(CANARY));
    assert!(is_sensitive(&admin).await);

    // An operator re-enters the field: it follows the worker's descriptor again.
    save_token(&admin, "now-a-plain-value").await;
    assert!(!is_sensitive(&admin).await);
    let config = admin.get(&config_path()).await;
    assert_eq!(config["admin_config_values"]["api_token"]["string_value"], "now-a-plain-value");
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_secret_is_in_no_file_of_the_data_dir_yet_reaches_the_worker() {
    const CANARY: &str = "canary-at-rest-5b9e0c";
    let dir = TempDir::new("secrets-at-rest");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let worker = FakeWorker::start(admin.grpc, canary_worker(CANARY)).await;
    descriptor_version(&admin, 1).await;
    save_token(&admin, CANARY).await;

    let r = http::post_json(&admin.http, &format!("/api/plugin/job-types/{T}/run?wait=false"), &json!({})).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let exec = worker
        .inbox
        .wait_for("the execute request", WAIT, |m| matches!(m.body, Some(AdminBody::ExecuteJobRequest(_))))
        .await;
    let Some(AdminBody::ExecuteJobRequest(exec)) = exec.body else { unreachable!() };
    let token = exec.admin_config_values["api_token"].kind.clone();
    assert_eq!(token, Some(Kind::StringValue(CANARY.into())), "the worker gets the plaintext");
    admin.wait_jobs("the canary job succeeded", &format!("job_type={T}"), 1, "succeeded").await;

    // While the admin runs (state.db, its WAL and shared memory are all there) ...
    let files = walk(dir.path());
    for name in ["state.db", "secret.key", "config.pb", "config.json", "descriptor.pb", "descriptor.json"] {
        assert!(files.iter().any(|f| f.ends_with(name)), "{name} is among the files checked: {files:?}");
    }
    assert_eq!(files_containing(dir.path(), CANARY), Vec::<PathBuf>::new());
    let config_dir = dir.path().join("plugin/job_types").join(T);
    assert_eq!(
        files_containing(dir.path(), "plughost-enc:v1:"),
        [config_dir.join("config.json"), config_dir.join("config.pb")]
    );
    let activities = http::get(&admin.http, "/api/plugin/activities").await.text();
    assert!(!activities.contains(CANARY));

    // ... and after it stopped (checkpointed).
    admin.stop().await;
    assert_eq!(files_containing(dir.path(), CANARY), Vec::<PathBuf>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_saved_in_clear_by_an_older_build_is_encrypted_at_the_next_start() {
    const CANARY: &str = "canary-older-build-31aa";
    let dir = TempDir::new("secrets-older");
    let job_dir = dir.path().join("plugin/job_types").join(T);
    std::fs::create_dir_all(&job_dir).unwrap();
    let d = descriptor(1, true);
    let mut values = d.admin_config_form.as_ref().unwrap().default_values.clone();
    values.insert("api_token".into(), pb::ConfigValue { kind: Some(Kind::StringValue(CANARY.into())) });
    let clear = pb::PersistedJobTypeConfig {
        job_type: T.into(),
        descriptor_version: 1,
        admin_config_values: values,
        updated_by: "alice".into(),
        ..Default::default()
    };
    std::fs::write(job_dir.join("descriptor.pb"), d.encode_to_vec()).unwrap();
    std::fs::write(job_dir.join("descriptor.json"), proto::json::to_string_pretty(&d).unwrap()).unwrap();
    std::fs::write(job_dir.join("config.pb"), clear.encode_to_vec()).unwrap();
    std::fs::write(job_dir.join("config.json"), proto::json::to_string_pretty(&clear).unwrap()).unwrap();
    assert_eq!(files_containing(dir.path(), CANARY).len(), 2);

    let admin = TestAdmin::start(dir.path(), with_key(KEY_A)).await;
    assert_eq!(files_containing(dir.path(), CANARY), Vec::<PathBuf>::new(), "encrypted at start");
    assert_eq!(
        files_containing(&job_dir, "plughost-enc:v1:"),
        [job_dir.join("config.json"), job_dir.join("config.pb")]
    );
    assert!(!visible(&admin).await.contains(CANARY));

    // The value itself survived: the worker receives it.
    let worker = FakeWorker::start(admin.grpc, canary_worker(CANARY)).await;
    let r = http::post_json(&admin.http, &format!("/api/plugin/job-types/{T}/run?wait=false"), &json!({})).await;
    assert_eq!(r.status, 202, "{}", r.text());
    worker
        .inbox
        .wait_for("the execute request", WAIT, |m| matches!(m.body, Some(AdminBody::ExecuteJobRequest(_))))
        .await;
    admin.stop().await;
    assert_eq!(files_containing(dir.path(), CANARY), Vec::<PathBuf>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_started_with_the_wrong_key_refuses_with_a_clear_error() {
    const CANARY: &str = "canary-wrong-key-e40d";
    let dir = TempDir::new("secrets-wrong-key");
    let admin = TestAdmin::start(dir.path(), with_key(KEY_A)).await;
    let _w = FakeWorker::start(admin.grpc, spec("w1", descriptor(1, true))).await;
    descriptor_version(&admin, 1).await;
    save_token(&admin, CANARY).await;
    admin.stop().await;
    assert!(!dir.path().join("plugin/secret.key").exists(), "a key given as text creates no key file");

    let mut config = AdminConfig::ephemeral(dir.path());
    with_key(KEY_B)(&mut config);
    let err = Admin::start(config).await.err().expect("the wrong key is refused").to_string();
    let file = dir.path().join("plugin/job_types").join(T).join("config.pb");
    for part in [file.display().to_string().as_str(), T, "api_token", "PLUGHOST_SECRET_KEY", "wrong secret key"] {
        assert!(err.contains(part), "{part:?} in {err}");
    }
    assert!(!err.contains(CANARY) && !err.contains(KEY_B) && !err.contains(KEY_A), "{err}");

    let mut config = AdminConfig::ephemeral(dir.path());
    config.secret_key = SecretKeySource::Text("not a key".into());
    let err = Admin::start(config).await.err().expect("a malformed key is refused").to_string();
    assert!(err.contains("PLUGHOST_SECRET_KEY") && err.contains("64 hex digits or base64"), "{err}");

    // The right key still opens everything.
    let admin = TestAdmin::start(dir.path(), with_key(KEY_A)).await;
    let token = admin.components().configs.config(T).unwrap().admin_config_values["api_token"].clone();
    assert_eq!(token.kind, Some(Kind::StringValue(CANARY.into())));
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plughost_admin_with_another_key_file_exits_naming_the_file_it_cannot_decrypt() {
    let dir = TempDir::new("secrets-cli");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let _w = FakeWorker::start(admin.grpc, spec("w1", descriptor(1, true))).await;
    descriptor_version(&admin, 1).await;
    save_token(&admin, "canary-cli-9f0a").await;
    admin.stop().await;
    let other_key = dir.path().join("other.key");
    std::fs::write(&other_key, format!("{KEY_B}\n")).unwrap();

    let mut child = Killed(
        Command::new(env!("CARGO_BIN_EXE_plughost-under-test"))
            .args(["admin", "--data-dir"])
            .arg(dir.path())
            .args(["--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"])
            .env("PLUGHOST_SECRET_KEY_FILE", &other_key)
            .env_remove("PLUGHOST_SECRET_KEY")
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn plughost admin"),
    );
    let status = wait_for("plughost admin exits", WAIT, || {
        let status = child.0.try_wait().expect("wait for plughost admin");
        async move { status }
    })
    .await;
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    let config = dir.path().join("plugin/job_types").join(T).join("config.pb");
    for part in [config.display().to_string(), other_key.display().to_string(), "wrong secret key".into()] {
        assert!(stderr.contains(&part), "{part:?} in {stderr}");
    }
    assert!(!stderr.contains("canary-cli-9f0a"));
}
