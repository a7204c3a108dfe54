//! A small W3C WebDriver client for the browser tests: it starts ChromeDriver on a free
//! port (Debian's `chromium-driver`, which drives `/usr/bin/chromium` headless) and
//! speaks WebDriver's JSON over HTTP with the tests' own HTTP client. Only what the tests
//! use: navigate, find, type, click, run a script, take a screenshot.
//!
//! Dropping a [`Browser`] ends the session (which closes Chromium) and kills ChromeDriver,
//! even when the test panicked.

use std::{
    io::{Read, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::{Value, json};

use crate::{TempDir, harness::free_port, http};

/// The key W3C WebDriver uses for element references.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Where Debian installs the browser and its driver (see scripts/test).
pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A headless Chromium session.
pub struct Browser {
    driver: Child,
    addr: String,
    session: String,
    _profile: TempDir,
}

/// An element reference within the session.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// Starts ChromeDriver and a headless Chromium with a fresh profile and a 1440x1000
    /// window.
    pub async fn start() -> Browser {
        let profile = TempDir::new("chromium-profile");
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {CHROMEDRIVER} ({e}); scripts/test installs Debian's chromium-driver")
            });
        let addr = format!("127.0.0.1:{port}");
        let mut browser = Browser { driver, addr, session: String::new(), _profile: profile };
        let addr = browser.addr.clone();
        crate::wait_for("chromedriver to listen", Duration::from_secs(30), || async {
            if tokio::net::TcpStream::connect(&addr).await.is_err() {
                return None;
            }
            let r = http::get(&addr, "/status").await;
            (r.status == 200 && r.json()["value"]["ready"] == true).then_some(())
        })
        .await;
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--disable-extensions",
            "--no-first-run",
            "--no-default-browser-check",
            "--hide-scrollbars",
            "--window-size=1440,1000",
            &format!("--user-data-dir={}", browser._profile.path().display()),
        ];
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
                    "pageLoadStrategy": "normal",
                    "timeouts": { "pageLoad": 30_000, "script": 30_000, "implicit": 0 }
                }
            }
        });
        let r = http::post_json(&browser.addr, "/session", &caps).await;
        let v = r.json();
        assert_eq!(r.status, 200, "new WebDriver session: {v}");
        browser.session = v["value"]["sessionId"].as_str().expect("session id").to_string();
        browser
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// One WebDriver command; `Err` holds the driver's error (e.g. a script run while a
    /// page unloads).
    async fn try_call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let path = format!("/session/{}{path}", self.session);
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let headers: &[(&str, &str)] =
            if method == "GET" { &[] } else { &[("content-type", "application/json; charset=utf-8")] };
        let r = http::request(&self.addr, method, &path, headers, body).await;
        let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        if r.status == 200 { Ok(v["value"].clone()) } else { Err(format!("WebDriver {method} {path}: {v}")) }
    }

    /// Opens `url` and waits for it to load.
    pub async fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url }))).await;
    }

    pub async fn url(&self) -> String {
        self.call("GET", "/url", None).await.as_str().unwrap_or_default().to_string()
    }

    pub async fn title(&self) -> String {
        self.call("GET", "/title", None).await.as_str().unwrap_or_default().to_string()
    }

    /// The elements matching a CSS selector (none is not an error).
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        let v = self.call("POST", "/elements", Some(json!({ "using": "css selector", "value": css }))).await;
        v.as_array()
            .map(|list| list.iter().filter_map(|e| e[ELEMENT_KEY].as_str()).map(|id| Element(id.to_string())).collect())
            .unwrap_or_default()
    }

    /// The first element matching a CSS selector; panics when there is none.
    pub async fn find(&self, css: &str) -> Element {
        self.find_all(css).await.into_iter().next().unwrap_or_else(|| panic!("no element matches {css:?}"))
    }

    pub async fn click(&self, e: &Element) {
        self.call("POST", &format!("/element/{}/click", e.0), Some(json!({}))).await;
    }

    pub async fn clear(&self, e: &Element) {
        self.call("POST", &format!("/element/{}/clear", e.0), Some(json!({}))).await;
    }

    /// Types `text` into an element, as a user would.
    pub async fn type_into(&self, e: &Element, text: &str) {
        self.call("POST", &format!("/element/{}/value", e.0), Some(json!({ "text": text }))).await;
    }

    /// The element's rendered text.
    pub async fn text(&self, e: &Element) -> String {
        self.call("GET", &format!("/element/{}/text", e.0), None).await.as_str().unwrap_or_default().to_string()
    }

    /// A DOM property of the element (`value`, `checked`, ...).
    pub async fn property(&self, e: &Element, name: &str) -> Value {
        self.call("GET", &format!("/element/{}/property/{name}", e.0), None).await
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its result.
    pub async fn script(&self, script: &str, args: Vec<Value>) -> Value {
        self.call("POST", "/execute/sync", Some(json!({ "script": script, "args": args }))).await
    }

    /// Polls `script` until it returns something truthy (not null, false, 0 or ""), and
    /// returns that; panics with `what` after `deadline`. Errors count as "not yet": a
    /// page that is still navigating cannot run scripts.
    pub async fn wait_for_script(&self, what: &str, deadline: Duration, script: &str) -> Value {
        crate::wait_for(what, deadline, || async {
            let body = json!({ "script": script, "args": [] });
            let v = self.try_call("POST", "/execute/sync", Some(body)).await.unwrap_or(Value::Null);
            let truthy = match &v {
                Value::Null | Value::Bool(false) => false,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            truthy.then_some(v)
        })
        .await
    }

    pub async fn set_window_size(&self, width: u32, height: u32) {
        self.call("POST", "/window/rect", Some(json!({ "width": width, "height": height }))).await;
    }

    /// Saves a PNG of the whole page (the window is resized to the page's height, up to
    /// `max_height`, then back).
    pub async fn screenshot_page(&self, path: &Path, max_height: u32) {
        let height = self
            .script("return Math.ceil(document.documentElement.scrollHeight)", Vec::new())
            .await
            .as_u64()
            .unwrap_or(1000) as u32;
        self.set_window_size(1440, height.clamp(600, max_height) + 120).await;
        self.screenshot(path).await;
        self.set_window_size(1440, 1000).await;
    }

    /// Emulates the system colour scheme (`"dark"` or `"light"`) for
    /// `prefers-color-scheme`, through ChromeDriver's DevTools command endpoint.
    pub async fn emulate_color_scheme(&self, scheme: &str) {
        let params = json!({ "features": [{ "name": "prefers-color-scheme", "value": scheme }] });
        self.call("POST", "/goog/cdp/execute", Some(json!({ "cmd": "Emulation.setEmulatedMedia", "params": params })))
            .await;
    }

    /// Presses and releases one key as a user would (WebDriver actions), on whatever
    /// has the focus.
    pub async fn press_key(&self, key: &str) {
        let actions = json!({ "actions": [{ "type": "key", "id": "keyboard", "actions": [
            { "type": "keyDown", "value": key }, { "type": "keyUp", "value": key }
        ]}]});
        self.call("POST", "/actions", Some(actions)).await;
    }

    /// Signs in on `base`'s login page with an API token and waits until the page says so.
    pub async fn sign_in(&self, base: &str, token: &str) {
        self.goto(&format!("{base}/plugin/login")).await;
        self.type_into(&self.find("input[name='token']").await, token.trim()).await;
        self.click(&self.find("form[action='/plugin/login'] button").await).await;
        self.wait_for_script(
            "signed in",
            Duration::from_secs(30),
            "return (document.getElementById('flash') || {}).textContent.startsWith('Signed in as')",
        )
        .await;
    }

    /// Saves a PNG of the viewport.
    pub async fn screenshot(&self, path: &Path) {
        let b64 = self.call("GET", "/screenshot", None).await;
        let png = decode_base64(b64.as_str().expect("screenshot is base64 text"));
        assert!(png.starts_with(b"\x89PNG"), "screenshot is a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("create screenshot dir");
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Ends the session and stops ChromeDriver (dropping does the same).
    pub fn quit(self) {}
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            // Blocking on purpose: Drop cannot await, and this must also run when a test
            // panics, so that Chromium does not outlive the test.
            let _ = delete_session(&self.addr, &self.session);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn delete_session(addr: &str, session: &str) -> std::io::Result<()> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "DELETE /session/{session} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);
    Ok(())
}

/// Standard base64 (what WebDriver's screenshot returns), padding and whitespace
/// tolerated. Small enough to keep the tests crate free of another dependency.
pub fn decode_base64(text: &str) -> Vec<u8> {
    fn sextet(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter_map(sextet) {
        acc = (acc << 6) | c;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// `target/screenshots/<name>` under the workspace root.
pub fn screenshot_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target").join("screenshots").join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_with_and_without_padding() {
        assert_eq!(decode_base64("aGVsbG8="), b"hello");
        assert_eq!(decode_base64("aGVsbG8"), b"hello");
        assert_eq!(decode_base64("aGk=\n"), b"hi");
    }
}
