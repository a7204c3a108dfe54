//! The operator's pages under `/plugin`: server-rendered askama templates (in the
//! workspace's `templates/`), one module per area with its template structs beside the
//! handlers that fill them, plus what they share here: the page chrome, the HTML error
//! page, redirects with a flash status, and time formatting.
//!
//! **Invariant:** every page works without JavaScript (plain links and forms); the one
//! embedded script only adds live updates over SSE, field visibility, switching the job
//! type page's tabs in place (each tab is a server-rendered page of its own) and an "Add
//! row" button for key/value editors.
//!
//! **Invariant:** every mutating form carries the CSRF token ([`csrf`]) and answers with
//! a 303 redirect carrying a flash status, or with the page itself and inline errors;
//! never with a blank page.
//!
//! **Invariant:** worker-supplied text reaches the HTML only through askama's escaping;
//! no template uses `|safe`.

mod activities;
mod assets;
mod audit;
mod charts;
mod confirm;
mod csrf;
mod forms;
mod holds;
mod job_type;
mod jobs;
mod login;
mod observations;
mod overview;
mod replay;
mod workers;

use askama::Template;
use askama_web::WebTemplate;
use axum::{
    Router,
    http::{HeaderValue, StatusCode, header},
    middleware,
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use serde::Deserialize;

use super::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/plugin", get(overview::page))
        .route("/plugin/", get(|| async { Redirect::permanent("/plugin") }))
        .route("/plugin/job-types/{t}", get(job_type::page))
        .route("/plugin/job-types/{t}/config", post(job_type::save_config))
        .route("/plugin/job-types/{t}/runtime", post(job_type::save_runtime))
        .route("/plugin/job-types/{t}/schema", post(job_type::refresh_schema))
        .route("/plugin/job-types/{t}/detect", post(job_type::detect))
        .route("/plugin/job-types/{t}/run", post(job_type::run))
        .route("/plugin/job-types/{t}/hold", post(holds::job_type))
        .route("/plugin/job-types/{t}/schedule", post(job_type::set_schedule))
        .route("/plugin/job-types/{t}/schedule/delete", post(job_type::delete_schedule))
        .route("/plugin/job-types/{t}/jobs", post(job_type::enqueue))
        .route("/plugin/job-types/{t}/preview", post(observations::preview))
        .route("/plugin/dispatch", post(holds::dispatch))
        .route("/plugin/schedules/pause", post(holds::schedules))
        .route("/plugin/jobs", get(jobs::list))
        .route("/plugin/jobs/replay", get(replay::show).post(replay::replay))
        .route("/plugin/jobs/{id}", get(jobs::detail))
        .route("/plugin/jobs/{id}/{action}", post(jobs::action))
        .route("/plugin/workers", get(workers::page))
        .route("/plugin/workers/{id}/drain", post(workers::drain))
        .route("/plugin/activities", get(activities::page))
        .route("/plugin/audit", get(audit::page))
        .route("/plugin/login", get(login::page).post(login::sign_in))
        .route("/plugin/logout", post(login::sign_out))
        .route("/plugin/static/{file}", get(assets::serve))
        .route("/plugin/{*rest}", get(not_found))
        .layer(middleware::map_response(page_headers))
}

/// Headers every page response gets: the CSRF cookie (HTML only), no caching of pages
/// that hold live data, and a content security policy that allows only the admin's own
/// script and style sheet (defence in depth behind the escaping).
async fn page_headers(mut response: Response) -> Response {
    let is_html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    let h = response.headers_mut();
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if is_html {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                 connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Ok(cookie) = HeaderValue::from_str(&csrf::cookie()) {
            h.append(header::SET_COOKIE, cookie);
        }
    }
    response
}

/// What every page's frame (`base.html`) needs: title, active nav entry, CSRF token,
/// flash status, and what the live-update script should listen to.
pub struct Chrome {
    pub title: String,
    /// overview, jobs, workers, activities or audit
    pub nav: &'static str,
    pub csrf: &'static str,
    pub flash_ok: String,
    pub flash_error: String,
    pub version: &'static str,
    /// The event bus's last id before the page's data was read: the script subscribes
    /// from there, so nothing that happens between rendering and subscribing is missed.
    pub last_event_id: u64,
    /// Authentication is off: every visitor is an admin (the page says so).
    pub auth_off: bool,
    /// Show the sign-out button.
    pub can_sign_out: bool,
    /// On a standby: "standby; the leader is ..." (the page is a read-only view).
    pub standby: Option<String>,
}

impl Chrome {
    /// Call before reading the data the page shows (see `last_event_id`).
    pub fn new(state: &AppState, title: impl Into<String>, nav: &'static str, flash: &Flash) -> Self {
        let mut chrome = Chrome::bare(title, nav, flash);
        chrome.last_event_id = state.events.last_id();
        chrome.auth_off = state.auth.mode == crate::auth::AuthMode::Off;
        chrome.can_sign_out = !chrome.auth_off && !nav.is_empty();
        chrome.standby = state.standby().map(str::to_string);
        chrome
    }

    /// For pages without live data (errors).
    pub fn bare(title: impl Into<String>, nav: &'static str, flash: &Flash) -> Self {
        Chrome {
            title: title.into(),
            nav,
            csrf: csrf::token(),
            flash_ok: flash.ok.as_deref().map(|s| clip(s, 300)).unwrap_or_default(),
            flash_error: flash.error.as_deref().map(|s| clip(s, 300)).unwrap_or_default(),
            version: env!("CARGO_PKG_VERSION"),
            last_event_id: 0,
            auth_off: false,
            can_sign_out: false,
            standby: None,
        }
    }
}

/// The status an action left for the page it redirected to (`?ok=...` or `?error=...`).
#[derive(Debug, Default, Deserialize)]
pub struct Flash {
    pub ok: Option<String>,
    pub error: Option<String>,
}

fn clip(s: &str, max: usize) -> String {
    crate::text::clip(s.trim(), max)
}

/// A 303 to `path` with a flash status. `path` may already carry a query string.
pub fn see_other(path: &str, outcome: Result<String, String>) -> Response {
    let (key, message) = match &outcome {
        Ok(m) => ("ok", m),
        Err(m) => ("error", m),
    };
    // The status goes into the query, before a fragment (`...?tab=history#observations`).
    let (path, fragment) = path.split_at(path.find('#').unwrap_or(path.len()));
    let sep = if path.contains('?') { '&' } else { '?' };
    let location = format!("{path}{sep}{key}={}{fragment}", percent_encode(message));
    match HeaderValue::from_str(&location) {
        Ok(v) => (StatusCode::SEE_OTHER, [(header::LOCATION, v)]).into_response(),
        Err(_) => Redirect::to("/plugin").into_response(),
    }
}

/// The address of a job type's page on one of its tabs (`status`, `configuration`,
/// `runtime`, `history`): where its forms send the browser back to.
pub fn job_type_page(job_type: &str, tab: &str) -> String {
    format!("/plugin/job-types/{}?tab={tab}", percent_encode(job_type))
}

/// Where an action may send the browser back to: a page of this admin (`/plugin...`),
/// else `fallback`. Keeps a posted `back` field from becoming an open redirect.
pub fn back_or(back: Option<&str>, fallback: &str) -> String {
    match back {
        Some(b)
            if b.starts_with("/plugin")
                && !b.contains("//")
                && !b.contains('\\')
                && !b.chars().any(|c| c.is_control())
                && b.len() <= 2000 =>
        {
            b.to_string()
        }
        _ => fallback.to_string(),
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A message as a sentence: capitalised, ending in a full stop. Errors inside the admin
/// are lowercase fragments (house style); the pages show them to people.
pub fn sentence(s: &str) -> String {
    let s = s.trim();
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return String::new();
    };
    let mut out: String = first.to_uppercase().chain(chars).collect();
    if !out.ends_with(['.', '!', '?']) {
        out.push('.');
    }
    out
}

#[derive(Template, WebTemplate)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub page: Chrome,
    pub heading: String,
    pub message: String,
}

/// A page that could not be shown, as an HTML page with a human sentence.
#[derive(Debug)]
pub struct PageError {
    pub status: StatusCode,
    pub heading: &'static str,
    pub message: String,
}

impl PageError {
    pub fn not_found(message: impl Into<String>) -> Self {
        PageError { status: StatusCode::NOT_FOUND, heading: "Not found", message: message.into() }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        PageError {
            status: StatusCode::BAD_REQUEST,
            heading: "That request cannot be handled",
            message: message.into(),
        }
    }

    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error while rendering a page");
        PageError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            heading: "Something went wrong",
            message: "The admin could not complete this request. Its log has the details.".into(),
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let page = ErrorPage {
            page: Chrome::bare(self.heading, "", &Flash::default()),
            heading: self.heading.to_string(),
            message: self.message,
        };
        (self.status, page).into_response()
    }
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::BadRequest(m) => PageError::bad_request(sentence(&m)),
            ApiError::NotFound(m) => PageError::not_found(sentence(&m)),
            ApiError::Conflict(m) | ApiError::Unavailable(m) | ApiError::ConflictWithJob { message: m, .. } => {
                PageError { status: StatusCode::CONFLICT, heading: "That cannot be done now", message: sentence(&m) }
            }
            ApiError::Unprocessable(m) => PageError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                heading: "That cannot be done as asked",
                message: sentence(&m),
            },
            ApiError::TooMany { message, .. } => PageError {
                status: StatusCode::TOO_MANY_REQUESTS,
                heading: "Too many requests",
                message: sentence(&message),
            },
            ApiError::Invalid(fields) => {
                PageError::bad_request(sentence(&fields.iter().map(|f| f.to_string()).collect::<Vec<_>>().join("; ")))
            }
            ApiError::Forbidden(m) => {
                PageError { status: StatusCode::FORBIDDEN, heading: "Not allowed", message: sentence(&m) }
            }
            ApiError::Internal(m) => PageError::internal(m),
        }
    }
}

impl From<crate::store::StoreError> for PageError {
    fn from(e: crate::store::StoreError) -> Self {
        PageError::internal(e)
    }
}

async fn not_found() -> PageError {
    PageError::not_found("There is no page at this address. The links at the top lead to every page of the admin.")
}

/// A point in time as the pages show it: UTC text for readers without JavaScript, the
/// milliseconds for the script, which rewrites it in local time or as "5 s ago".
#[derive(Debug, Clone)]
pub struct Time {
    pub ms: i64,
    pub text: String,
    pub iso: String,
}

impl Time {
    pub fn at(ms: i64) -> Time {
        if ms <= 0 {
            return Time { ms: 0, text: "—".into(), iso: String::new() };
        }
        let (date, clock) = utc_parts(ms);
        Time { ms, text: format!("{date} {clock} UTC"), iso: format!("{date}T{clock}Z") }
    }

    pub fn is_set(&self) -> bool {
        self.ms > 0
    }
}

/// `("YYYY-MM-DD", "HH:MM:SS")` in UTC, from Unix milliseconds (Howard Hinnant's
/// civil-from-days algorithm; no date crate needed for this one conversion).
fn utc_parts(ms: i64) -> (String, String) {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (format!("{year:04}-{month:02}-{day:02}"), format!("{:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60))
}

/// A duration in milliseconds as "1.2 s", "3 min 4 s", "2 h 5 min".
pub fn human_duration(ms: i64) -> String {
    if ms < 0 {
        return "—".into();
    }
    if ms < 1000 {
        return format!("{ms} ms");
    }
    let s = ms / 1000;
    if s < 60 {
        return format!("{:.1} s", ms as f64 / 1000.0);
    }
    if s < 3600 {
        return format!("{} min {} s", s / 60, s % 60);
    }
    format!("{} h {} min", s / 3600, s % 3600 / 60)
}

/// A byte count as people read it: `512 B`, `1.5 KiB`, `12.3 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// A whole number with thousands separators: `1,572,864`.
pub fn grouped(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A named value (a job's parameter or result) shown as its name says: byte counts
/// (`*_bytes`) as sizes, ratios (`*ratio*`) as percentages, durations as durations,
/// `*_unix_nanos` and `*_unix_ms` as times; anything else as `fallback` shows it.
pub fn display_named(
    name: &str,
    v: &proto::pb::ConfigValue,
    fallback: fn(&proto::pb::ConfigValue) -> String,
) -> String {
    use proto::pb::config_value::Kind;
    let name = name.to_ascii_lowercase();
    let is_bytes = name == "bytes" || name.ends_with("_bytes") || name.starts_with("bytes_");
    match &v.kind {
        Some(Kind::Int64Value(n)) if is_bytes && *n >= 1024 => {
            format!("{} ({} bytes)", human_bytes(n.unsigned_abs()), grouped(*n))
        }
        Some(Kind::Int64Value(n)) if is_bytes => format!("{n} B"),
        Some(Kind::DoubleValue(r)) if name.contains("ratio") && r.is_finite() => {
            let pct = r * 100.0;
            if (pct - pct.round()).abs() < 0.05 { format!("{} %", pct.round()) } else { format!("{pct:.1} %") }
        }
        Some(Kind::Int64Value(n)) if name.ends_with("_unix_nanos") => Time::at(n / 1_000_000).text,
        Some(Kind::Int64Value(n)) if name.ends_with("_unix_ms") => Time::at(*n).text,
        Some(Kind::DurationValue(d)) => {
            human_duration(d.seconds.saturating_mul(1000).saturating_add(i64::from(d.nanos) / 1_000_000))
        }
        _ => fallback(v),
    }
}

/// An internal code (`over_limit`, `timed_out`) in words.
pub fn words(code: &str) -> String {
    code.replace('_', " ")
}

/// A run record's kind as the pages say it.
pub fn run_kind_label(kind: &str) -> String {
    match kind {
        "detection_preview" => "preview".into(),
        "execution" => "job run".into(),
        other => words(other),
    }
}

/// A progress percentage for display and for a `<progress>` element.
pub fn percent(p: f64) -> String {
    if !p.is_finite() {
        return "0".into();
    }
    let p = p.clamp(0.0, 100.0);
    if (p - p.round()).abs() < 0.05 { format!("{}", p.round() as i64) } else { format!("{p:.1}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_format_as_utc_dates() {
        assert_eq!(utc_parts(0), ("1970-01-01".into(), "00:00:00".into()));
        assert_eq!(utc_parts(1_700_000_123_456), ("2023-11-14".into(), "22:15:23".into()));
        assert_eq!(utc_parts(951_782_400_000), ("2000-02-29".into(), "00:00:00".into()));
        assert_eq!(Time::at(0).text, "—");
    }

    #[test]
    fn a_redirects_status_goes_into_the_query_before_the_fragment() {
        let at = |r: Response| r.headers()[header::LOCATION].to_str().unwrap().to_string();
        assert_eq!(
            at(see_other("/plugin/x?tab=history#observations", Ok("ok".into()))),
            "/plugin/x?tab=history&ok=ok#observations"
        );
        assert_eq!(at(see_other("/plugin/x", Err("no".into()))), "/plugin/x?error=no");
        assert_eq!(job_type_page("a b", "runtime"), "/plugin/job-types/a%20b?tab=runtime");
    }

    #[test]
    fn back_links_stay_on_the_admins_pages() {
        assert_eq!(back_or(Some("/plugin/jobs?state=failed"), "/plugin"), "/plugin/jobs?state=failed");
        assert_eq!(back_or(Some("https://evil.example/"), "/plugin"), "/plugin");
        assert_eq!(back_or(Some("/plugin//evil.example"), "/plugin"), "/plugin");
        assert_eq!(back_or(Some("/plugin\\..\\x"), "/plugin"), "/plugin");
        assert_eq!(back_or(None, "/plugin/workers"), "/plugin/workers");
    }

    #[test]
    fn numbers_read_as_sizes_ratios_durations_and_words() {
        use proto::pb::{self, config_value::Kind};
        let v = |k: Kind| pb::ConfigValue { kind: Some(k) };
        let shown = |name: &str, k: Kind| display_named(name, &v(k), |_| "raw".into());
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(12_900_000), "12.3 MiB");
        assert_eq!(grouped(1_572_864), "1,572,864");
        assert_eq!(grouped(-1000), "-1,000");
        assert_eq!(shown("reclaimed_bytes", Kind::Int64Value(1_572_864)), "1.5 MiB (1,572,864 bytes)");
        assert_eq!(shown("bytes_before", Kind::Int64Value(100)), "100 B");
        assert_eq!(shown("free_ratio", Kind::DoubleValue(0.375)), "37.5 %");
        assert_eq!(shown("ratio", Kind::DoubleValue(0.5)), "50 %");
        assert_eq!(shown("elapsed", Kind::DurationValue(pb::Duration { seconds: 75, nanos: 0 })), "1 min 15 s");
        assert_eq!(
            shown("modified_unix_nanos", Kind::Int64Value(1_700_000_123_456_000_000)),
            "2023-11-14 22:15:23 UTC"
        );
        assert_eq!(shown("page_size", Kind::Int64Value(4096)), "raw");
        assert_eq!(run_kind_label("detection_preview"), "preview");
        assert_eq!(run_kind_label("execution"), "job run");
        assert_eq!(words("over_limit"), "over limit");
    }

    #[test]
    fn messages_become_sentences_and_flashes_are_encoded() {
        assert_eq!(sentence("no connected worker can detect \"x\""), "No connected worker can detect \"x\".");
        assert_eq!(sentence("Done."), "Done.");
        assert_eq!(percent_encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        assert_eq!(percent(33.333), "33.3");
        assert_eq!(percent(150.0), "100");
    }
}
