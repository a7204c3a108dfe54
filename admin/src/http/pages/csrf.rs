//! CSRF protection for the pages' forms: a double-submitted random token.
//!
//! The admin draws one random token per process. Every HTML page sets it in a
//! `SameSite=Strict`, `HttpOnly` cookie scoped to `/plugin` and puts it in a hidden field
//! of every form; a POST is accepted only when both the cookie and the field hold the
//! token, compared in constant time. Another site can make a browser send the cookie (in
//! browsers without SameSite) but cannot read the page, so it cannot know the field's
//! value. No HMAC or session store is needed: the token proves "this form came from one
//! of this admin's pages", which is all a single-operator admin needs. A restart draws a
//! new token, so a form left open across a restart gets a clear 403 asking to reload.

use std::sync::OnceLock;

use axum::http::{HeaderMap, StatusCode, header};

use super::PageError;

const COOKIE: &str = "plughost_csrf";
/// The hidden form field's name.
pub const FIELD: &str = "csrf";

/// The process's token: 32 random bytes as hex.
pub fn token() -> &'static str {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN.get_or_init(|| crate::random::hex(32))
}

/// The `Set-Cookie` value every page sends.
pub fn cookie() -> String {
    format!("{COOKIE}={}; Path=/plugin; SameSite=Strict; HttpOnly", token())
}

/// Accepts a form post whose cookie and hidden field both carry the token.
pub fn check(headers: &HeaderMap, form: &[(String, String)]) -> Result<(), PageError> {
    let expected = token().as_bytes();
    let field = form.iter().find(|(k, _)| k == FIELD).map(|(_, v)| v.as_str());
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix(COOKIE).and_then(|rest| rest.strip_prefix('=')))
        .any(|v| crate::secrets::constant_time_eq(v.as_bytes(), expected));
    let field_ok = field.is_some_and(|f| crate::secrets::constant_time_eq(f.as_bytes(), expected));
    if cookie && field_ok {
        return Ok(());
    }
    Err(PageError {
        status: StatusCode::FORBIDDEN,
        heading: "This form could not be accepted",
        message: "The form did not carry this admin's security token, so nothing was changed. This happens when \
                  the page was opened before the admin restarted, or when the form came from another site. Reload \
                  the page and try again."
            .into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(token: &str) -> Vec<(String, String)> {
        vec![(FIELD.to_string(), token.to_string())]
    }

    fn headers(cookie: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, cookie.parse().unwrap());
        h
    }

    #[test]
    fn the_token_is_long_random_hex_and_stable_within_the_process() {
        assert_eq!(token().len(), 64);
        assert!(token().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(token(), token());
    }

    #[test]
    fn a_post_needs_the_token_in_both_cookie_and_field() {
        let good_cookie = format!("other=1; {COOKIE}={}", token());
        assert!(check(&headers(&good_cookie), &form(token())).is_ok());
        assert!(check(&headers(&good_cookie), &form("nope")).is_err());
        assert!(check(&headers(&good_cookie), &[]).is_err());
        assert!(check(&headers(&format!("{COOKIE}=nope")), &form(token())).is_err());
        assert!(check(&HeaderMap::new(), &form(token())).is_err());
        assert_eq!(check(&HeaderMap::new(), &[]).unwrap_err().status, StatusCode::FORBIDDEN);
    }
}
