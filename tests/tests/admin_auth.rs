//! Authentication and roles, from outside: the API refuses callers without a valid token
//! (401, JSON, an audit entry) and callers whose role is too low (403); the pages send
//! anonymous visitors to a login form that turns a token into a session cookie; tokens
//! made with `plughost token` work in a running admin until revoked; scripts need the
//! admin role; `--auth off` is only accepted where it cannot expose anything.
//! Written for the security probe's finding 1: a plain local `curl` saved and ran an
//! inline script.

use std::time::Duration;

use admin::auth::AuthMode;
use proto::pb;
use serde_json::{Value, json};
use tests::{
    TempDir,
    fake_worker::{FakeWorker, FakeWorkerSpec, proposal},
    harness::TestAdmin,
    http::{self, Response},
    wait_for,
};

const T: &str = "test_job";
const WAIT: Duration = Duration::from_secs(30);

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn get_as(addr: &str, path: &str, token: &str) -> Response {
    http::request(addr, "GET", path, &[("authorization", &bearer(token))], Vec::new()).await
}

async fn post_as(addr: &str, path: &str, token: &str, body: &Value) -> Response {
    let headers = [("authorization", bearer(token)), ("content-type", "application/json".to_string())];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    http::request(addr, "POST", path, &headers, body.to_string().into_bytes()).await
}

async fn put_as(addr: &str, path: &str, token: &str, body: &Value) -> Response {
    let headers = [("authorization", bearer(token)), ("content-type", "application/json".to_string())];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    http::request(addr, "PUT", path, &headers, body.to_string().into_bytes()).await
}

/// Creates a token with the admin's own token; returns its plaintext.
async fn token(admin: &TestAdmin, name: &str, role: &str) -> String {
    let r = http::post_json(&admin.http, "/api/plugin/tokens", &json!({ "name": name, "role": role })).await;
    assert_eq!(r.status, 201, "create {name}: {}", r.text());
    r.json()["token"].as_str().unwrap().to_string()
}

fn error_of(r: &Response) -> String {
    r.json()["error"].as_str().unwrap_or_default().to_string()
}

async fn auth_activities(admin: &TestAdmin) -> Vec<String> {
    let list = admin.get("/api/plugin/activities?limit=200").await;
    list.as_array()
        .unwrap()
        .iter()
        .filter(|a| a["stage"] == "auth")
        .map(|a| a["message"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_without_a_valid_token_are_refused_with_401_json_and_an_audit_entry() {
    let dir = TempDir::new("auth-401");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    for (method, path) in
        [("GET", "/api/plugin/jobs"), ("POST", "/api/plugin/dispatch?paused=true"), ("GET", "/metrics")]
    {
        let r = http::request_without_auth(&admin.http, method, path, &[], Vec::new()).await;
        assert_eq!(r.status, 401, "{method} {path}: {}", r.text());
        assert!(error_of(&r).contains("authentication required"), "{}", r.text());
        assert_eq!(r.headers.get("www-authenticate").unwrap(), "Bearer");
    }
    let r = get_as(&admin.http, "/api/plugin/jobs", "pht_not-a-token").await;
    assert_eq!(r.status, 401);
    assert!(!admin.get("/api/plugin/status").await["dispatch_paused"].as_bool().unwrap(), "nothing changed");
    wait_for("the refusal is in the activity timeline", WAIT, || async {
        auth_activities(&admin).await.iter().any(|m| m.starts_with("unauthenticated request refused")).then_some(())
    })
    .await;
    // What a worker needs to dial in stays readable without a token, and nothing more.
    let status = http::request_without_auth(&admin.http, "GET", "/api/plugin/status", &[], Vec::new()).await.json();
    assert_eq!(status["worker_grpc_port"], admin.grpc.port());
    assert!(status.get("jobs_by_state").is_none(), "{status}");
    assert_eq!(http::request_without_auth(&admin.http, "GET", "/healthz", &[], Vec::new()).await.status, 200);
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_may_do_what_it_is_for_and_is_refused_the_rest_with_403() {
    let dir = TempDir::new("auth-roles");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let _worker = FakeWorker::start(admin.grpc, FakeWorkerSpec::new("w1", T, 1)).await;
    wait_for("the config is stored", WAIT, || async { admin.components().configs.config(T).map(|_| ()) }).await;
    let viewer = token(&admin, "vera", "viewer").await;
    let operator = token(&admin, "otto", "operator").await;
    let admin_token = token(&admin, "ada", "admin").await;
    let config_path = format!("/api/plugin/job-types/{T}/config");
    let config = json!({ "admin_config_values": { "threshold": { "int64_value": "7" } } });

    // A viewer reads and changes nothing.
    assert_eq!(get_as(&admin.http, "/api/plugin/jobs", &viewer).await.status, 200);
    let r = post_as(&admin.http, "/api/plugin/dispatch?paused=true", &viewer, &json!({})).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(error_of(&r).contains("needs the operator role"), "{}", r.text());
    assert_eq!(get_as(&admin.http, "/api/plugin/tokens", &viewer).await.status, 403, "token names are admin business");

    // An operator runs and stops work, but does not change configs or tokens.
    assert_eq!(post_as(&admin.http, "/api/plugin/dispatch?paused=true", &operator, &json!({})).await.status, 200);
    let r = put_as(&admin.http, &config_path, &operator, &config).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = post_as(&admin.http, "/api/plugin/tokens", &operator, &json!({ "name": "x", "role": "admin" })).await;
    assert_eq!(r.status, 403, "an operator cannot make itself an admin");

    // An admin does both; the saved config names the token that saved it.
    let r = put_as(&admin.http, &config_path, &admin_token, &config).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(admin.components().configs.config(T).unwrap().updated_by, "ada");
    let listed = get_as(&admin.http, "/api/plugin/tokens", &admin_token).await.json();
    let names: Vec<&str> = listed["tokens"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["admin", "vera", "otto", "ada"]);
    assert!(!listed.to_string().contains("pht_"), "a listing never carries a token");

    // A command is answered only once its audit event is durable: the 403s are there.
    let refused = admin.get("/api/plugin/audit?outcome=refused&limit=1000").await;
    let reasons: Vec<(&str, &str)> = refused["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["actor"].as_str().unwrap(), e["reason"].as_str().unwrap()))
        .collect();
    assert!(reasons.iter().any(|(a, r)| *a == "vera" && r.contains("vera has the viewer role")), "{reasons:?}");
    assert!(reasons.contains(&("otto", "save_config needs the admin role; otto has the operator role")), "{reasons:?}");
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inline_script_cannot_be_saved_or_run_without_the_admin_role() {
    let dir = TempDir::new("auth-script");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let mut spec = FakeWorkerSpec::new("w1", "script", 1).detect(|_| vec![vec![proposal("run-it")]]);
    // Disabled: only an explicit run detects, so every detection here is someone's command.
    spec.descriptors.get_mut("script").unwrap().admin_runtime_defaults.as_mut().unwrap().enabled = false;
    let worker = FakeWorker::start(admin.grpc, spec).await;
    wait_for("the script config is stored", WAIT, || async { admin.components().configs.config("script").map(|_| ()) })
        .await;
    let operator = token(&admin, "otto", "operator").await;
    let script = json!({ "admin_config_values": { "threshold": { "int64_value": "1" } } });

    let anonymous = http::request_without_auth(
        &admin.http,
        "PUT",
        "/api/plugin/job-types/script/config",
        &[("content-type", "application/json")],
        script.to_string().into_bytes(),
    )
    .await;
    assert_eq!(anonymous.status, 401, "a plain local curl saves nothing");
    assert_eq!(put_as(&admin.http, "/api/plugin/job-types/script/config", &operator, &script).await.status, 403);
    let r = post_as(&admin.http, "/api/plugin/job-types/script/run", &operator, &json!({})).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(error_of(&r).contains("run needs the admin role"), "{}", r.text());
    assert!(worker.inbox.executions().is_empty());
    assert!(
        !worker
            .inbox
            .all()
            .iter()
            .any(|m| matches!(m.body, Some(pb::admin_to_worker_message::Body::RunDetectionRequest(_)))),
        "no detection ran for the operator"
    );
    // The admin role runs it.
    let r = http::post_json(&admin.http, "/api/plugin/job-types/script/run?wait=false", &json!({})).await;
    assert_eq!(r.status, 202, "{}", r.text());
    worker
        .inbox
        .wait_for("the execution", WAIT, |m| {
            matches!(m.body, Some(pb::admin_to_worker_message::Body::ExecuteJobRequest(_)))
        })
        .await;
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_form_turns_a_token_into_a_strict_http_only_session_that_sign_out_ends() {
    let dir = TempDir::new("auth-login");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let anonymous = http::request_without_auth(&admin.http, "GET", "/plugin/jobs", &[], Vec::new()).await;
    assert_eq!(anonymous.status, 303);
    assert_eq!(anonymous.headers.get("location").unwrap(), "/plugin/login?next=%2Fplugin%2Fjobs");

    // The login page carries the CSRF cookie and token like every form.
    let page =
        http::request_without_auth(&admin.http, "GET", "/plugin/login?next=%2Fplugin%2Fjobs", &[], Vec::new()).await;
    assert_eq!(page.status, 200);
    let csrf_cookie = set_cookie(&page, "plughost_csrf").split(';').next().unwrap().to_string();
    let html = page.text();
    let at = html.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    let csrf = &html[at..at + html[at..].find('"').unwrap()];
    let login = |token: String| {
        let body = format!("csrf={csrf}&next=%2Fplugin%2Fjobs&token={token}").into_bytes();
        let headers = [("content-type", "application/x-www-form-urlencoded"), ("cookie", csrf_cookie.as_str())];
        let headers: Vec<(String, String)> = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let addr = admin.http.clone();
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            http::request_without_auth(&addr, "POST", "/plugin/login", &h, body).await
        }
    };
    let wrong = login("pht_wrong".into()).await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.text().contains("That token is not valid here"));

    let token = std::fs::read_to_string(dir.path().join("plugin/admin.token")).unwrap();
    let ok = login(token.trim().to_string()).await;
    assert_eq!(ok.status, 303, "{}", ok.text());
    assert!(ok.headers.get("location").unwrap().to_str().unwrap().starts_with("/plugin/jobs?ok="));
    let session = set_cookie(&ok, "plughost_session");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(session.contains(attribute), "{attribute} in {session}");
    }
    assert!(!session.contains("Secure"), "plain HTTP: a Secure cookie would never come back");
    let cookie = format!("{}; {csrf_cookie}", session.split(';').next().unwrap());

    let jobs = http::request_without_auth(&admin.http, "GET", "/plugin/jobs", &[("cookie", &cookie)], Vec::new()).await;
    assert_eq!(jobs.status, 200, "the session opens the pages");
    let api =
        http::request_without_auth(&admin.http, "GET", "/api/plugin/jobs", &[("cookie", &cookie)], Vec::new()).await;
    assert_eq!(api.status, 200, "and the live updates' API calls");

    let body = format!("csrf={csrf}").into_bytes();
    let headers = [("content-type", "application/x-www-form-urlencoded"), ("cookie", cookie.as_str())];
    let out = http::request_without_auth(&admin.http, "POST", "/plugin/logout", &headers, body).await;
    assert_eq!(out.status, 303);
    assert!(set_cookie(&out, "plughost_session").contains("Max-Age=0"));
    let after =
        http::request_without_auth(&admin.http, "GET", "/plugin/jobs", &[("cookie", &cookie)], Vec::new()).await;
    assert_eq!(after.status, 303, "the session is gone on the server too");
    admin.stop().await;
}

fn set_cookie(r: &Response, name: &str) -> String {
    r.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie set"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_made_by_the_cli_work_in_a_running_admin_until_revoked() {
    let dir = TempDir::new("auth-cli");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let bin = env!("CARGO_BIN_EXE_plughost-under-test");
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(bin)
            .arg("token")
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .expect("run plughost token");
        assert!(out.status.success(), "plughost token {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let token = cli(&["create", "--name", "ci-bot", "--role", "operator"]).trim().to_string();
    assert!(token.starts_with("pht_"));
    assert_eq!(get_as(&admin.http, "/api/plugin/jobs", &token).await.status, 200, "seen without a restart");
    let listed = cli(&["list"]);
    assert!(listed.contains("ci-bot\toperator") && !listed.contains("pht_"), "{listed}");
    assert!(!std::fs::read_to_string(dir.path().join("plugin/tokens.json")).unwrap().contains(&token), "kept hashed");
    cli(&["revoke", "--name", "ci-bot"]);
    assert_eq!(get_as(&admin.http, "/api/plugin/jobs", &token).await.status, 401);
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_off_is_refused_where_it_would_expose_the_admin_and_says_so_where_it_is_allowed() {
    let dir = TempDir::new("auth-off-public");
    let mut config = admin::AdminConfig::ephemeral(dir.path());
    config.auth = AuthMode::Off;
    config.http_addr = "0.0.0.0:0".parse().unwrap();
    let err = admin::Admin::start(config).await.err().expect("refused on a public listener");
    assert!(err.to_string().contains("only when both listeners are on loopback"), "{err}");
    let mut config = admin::AdminConfig::ephemeral(dir.path());
    config.auth = AuthMode::Off;
    config.scripts_allowed = true;
    let err = admin::Admin::start(config).await.err().expect("refused with scripts");
    assert!(err.to_string().contains("not allowed while scripts are allowed"), "{err}");

    let dir = TempDir::new("auth-off");
    let admin = TestAdmin::start(dir.path(), |c| c.auth = AuthMode::Off).await;
    assert!(!dir.path().join("plugin/admin.token").exists(), "no token is made when none is needed");
    let page = http::request_without_auth(&admin.http, "GET", "/plugin", &[], Vec::new()).await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("Authentication is off"), "the pages say so");
    // A worker offering scripts is refused: anyone who reaches the admin could run code.
    let refused = FakeWorker::start(admin.grpc, FakeWorkerSpec::new("w-script", "script", 1)).await;
    assert!(!refused.hello.accepted);
    assert!(refused.hello.message.contains("--auth off"), "{}", refused.hello.message);
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_query_string_is_answered_with_a_json_error_like_every_other() {
    let dir = TempDir::new("query-json");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    for path in
        ["/api/plugin/jobs?limit=many", "/api/plugin/activities?before=yesterday", "/api/plugin/events?last_event_id=x"]
    {
        let r = http::get(&admin.http, path).await;
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert!(error_of(&r).starts_with("query string:"), "{path}: {}", r.text());
    }
    let r = http::post_json(&admin.http, "/api/plugin/dispatch?paused=maybe", &json!({})).await;
    assert_eq!(r.status, 400);
    assert!(error_of(&r).contains("paused"), "{}", r.text());
    admin.stop().await;
}

/// One HTTPS request presenting `client` (a certificate and key, PEM) and trusting `ca`.
async fn https_with_client_cert(
    addr: &str,
    ca_pem: &str,
    client: &tests::certs::CertPair,
    method: &str,
    path: &str,
    body: &Value,
) -> (u16, String) {
    use http_body_util::BodyExt;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let certs: Vec<_> = rustls_pemfile::certs(&mut client.cert_pem.as_bytes()).map(|c| c.unwrap()).collect();
    let key = rustls_pemfile::private_key(&mut client.key_pem.as_bytes()).unwrap().unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.expect("http handshake");
    tokio::spawn(conn);
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr)
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(hyper::body::Bytes::from(body.to_string())))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_mapped_to_an_identity_acts_with_its_role_and_an_unmapped_one_is_refused() {
    let pki = tests::certs::TestPki::generate();
    let dir = TempDir::new("auth-mtls");
    let files = dir.path().join("pki");
    std::fs::create_dir_all(&files).unwrap();
    for (name, pem) in [
        ("ca.pem", &pki.ca_pem),
        ("server.pem", &pki.server.cert_pem),
        ("server.key", &pki.server.key_pem),
        ("client.pem", &pki.client.cert_pem),
    ] {
        std::fs::write(files.join(name), pem).unwrap();
    }
    let data = dir.path().join("data");
    let tls = admin::TlsFiles {
        cert: files.join("server.pem"),
        key: files.join("server.key"),
        client_ca: Some(files.join("ca.pem")),
    };
    let admin = TestAdmin::start(&data, |c| c.http_tls = Some(tls.clone())).await;
    let _worker = FakeWorker::start(admin.grpc, FakeWorkerSpec::new("w1", T, 1)).await;
    wait_for("the config is stored", WAIT, || async { admin.components().configs.config(T).map(|_| ()) }).await;
    let config = json!({ "admin_config_values": { "threshold": { "int64_value": "9" } } });
    let path = format!("/api/plugin/job-types/{T}/config");

    let (status, text) = https_with_client_cert(&admin.http, &pki.ca_pem, &pki.client, "PUT", &path, &config).await;
    assert_eq!(status, 401, "a certificate the admin knows no identity for is not enough: {text}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_plughost-under-test"))
        .args(["token", "create", "--name", "deploy-bot", "--role", "admin", "--certificate"])
        .arg(files.join("client.pem"))
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (status, text) = https_with_client_cert(&admin.http, &pki.ca_pem, &pki.client, "PUT", &path, &config).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(admin.components().configs.config(T).unwrap().updated_by, "deploy-bot", "the actor is the identity");

    // Another certificate from the same CA is still nobody.
    let other = pki.ca.client("someone-else");
    let (status, _) =
        https_with_client_cert(&admin.http, &pki.ca_pem, &other, "GET", "/api/plugin/jobs", &json!({})).await;
    assert_eq!(status, 401);
    admin.stop().await;
}
