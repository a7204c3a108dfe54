//! A browser's worth of state for the `/plugin` pages over plain HTTP: the CSRF cookie and
//! token of a loaded page, form posts that carry both, and reading the flash status a
//! page action's redirect carries.

use crate::http::{self, Response};

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An `application/x-www-form-urlencoded` body.
pub fn form_body(pairs: &[(&str, &str)]) -> Vec<u8> {
    pairs.iter().map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v))).collect::<Vec<_>>().join("&").into_bytes()
}

/// The CSRF cookie and token of the last page loaded.
pub struct Client {
    pub addr: String,
    pub cookie: String,
    pub token: String,
}

impl Client {
    /// Loads `path` to pick up the CSRF cookie and token; returns the page too.
    pub async fn open(addr: &str, path: &str) -> (Client, Response) {
        let r = http::get(addr, path).await;
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        let cookie = r
            .headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("plughost_csrf="))
            .and_then(|v| v.split(';').next())
            .expect("the page sets the CSRF cookie")
            .to_string();
        let token = token_in(&r.text());
        (Client { addr: addr.to_string(), cookie, token }, r)
    }

    pub async fn get(&self, path: &str) -> Response {
        http::request(&self.addr, "GET", path, &[("cookie", &self.cookie)], Vec::new()).await
    }

    /// Posts a form with the cookie and the token, as the page's form would.
    pub async fn post(&self, path: &str, pairs: &[(&str, &str)]) -> Response {
        let mut all = vec![("csrf", self.token.as_str())];
        all.extend_from_slice(pairs);
        self.post_raw(path, &all, true).await
    }

    /// Posts exactly `pairs`, with or without the CSRF cookie.
    pub async fn post_raw(&self, path: &str, pairs: &[(&str, &str)], with_cookie: bool) -> Response {
        let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
        if with_cookie {
            headers.push(("cookie", &self.cookie));
        }
        http::request(&self.addr, "POST", path, &headers, form_body(pairs)).await
    }
}

/// The CSRF token in a page's forms.
pub fn token_in(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("the page has a form with a CSRF token");
    let rest = &html[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

/// Where a redirect points.
pub fn location(r: &Response) -> String {
    r.headers.get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

/// Decodes percent-encoding (and `+` as a space).
pub fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 3 <= bytes.len() {
            out.push(u8::from_str_radix(&raw[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// The flash status a redirect carries: `Ok(message)` for `?ok=`, `Err(message)` for
/// `?error=`, `None` when it carries neither.
pub fn flash_status(r: &Response) -> Option<Result<String, String>> {
    let loc = location(r);
    let loc = loc.split('#').next().unwrap_or_default();
    let query = loc.split_once('?').map(|(_, q)| q).unwrap_or_default();
    query.split('&').find_map(|kv| {
        kv.strip_prefix("ok=")
            .map(|m| Ok(percent_decode(m)))
            .or_else(|| kv.strip_prefix("error=").map(|m| Err(percent_decode(m))))
    })
}
