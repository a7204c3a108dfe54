//! The audit trail at `/plugin/audit`: every operator command, carried out or refused,
//! newest first, with the filters of `GET /api/plugin/audit` (action, actor, target,
//! outcome, since, until), keyset paging by event id, and links to the export in each
//! format with the same filters.

use askama::Template;
use askama_web::WebTemplate;
use axum::{
    extract::{Query, State},
    response::{IntoResponse, Response},
};

use super::{Chrome, Flash, PageError, Time, jobs::Choice, percent_encode, sentence};
use crate::{
    audit::AuditEvent,
    http::{ApiError, AppState, governance::AuditParams},
    job::parse_job_id,
};

/// Events per page.
const PAGE_SIZE: usize = 100;

/// The longest parameters shown in full; the export has them all.
const PARAMS_SHOWN: usize = 400;

/// Every command the trail records, for the action filter.
const ACTIONS: &[&str] = &[
    "cancel_job",
    "create_token",
    "delete_schedule",
    "detect",
    "enqueue_job",
    "expire_job",
    "hold_job_type",
    "pause_dispatch",
    "pause_schedules",
    "refresh_schema",
    "replay_jobs",
    "retry_job",
    "revoke_token",
    "run",
    "save_config",
    "set_draining",
    "set_schedule",
];

pub struct AuditRow {
    pub id: i64,
    pub at: Time,
    pub actor: String,
    pub actor_kind: String,
    pub action: String,
    pub target: String,
    /// Where the target's page is, when it has one.
    pub target_link: String,
    pub refused: bool,
    pub reason: String,
    pub params: String,
    pub request_id: String,
}

impl AuditRow {
    fn from_event(state: &AppState, e: &AuditEvent) -> AuditRow {
        let target_link = if parse_job_id(&e.target).is_some() {
            format!("/plugin/jobs/{}", e.target)
        } else if state.configs.entry(&e.target).is_some() {
            format!("/plugin/job-types/{}", percent_encode(&e.target))
        } else {
            String::new()
        };
        let params = match &e.params {
            serde_json::Value::Object(m) if m.is_empty() => String::new(),
            serde_json::Value::Null => String::new(),
            p => crate::text::clip(&p.to_string(), PARAMS_SHOWN),
        };
        AuditRow {
            id: e.id,
            at: Time::at(e.at),
            actor: e.actor.clone(),
            actor_kind: e.actor_kind.clone(),
            action: e.action.clone(),
            target: e.target.clone(),
            target_link,
            refused: e.outcome == "refused",
            reason: e.reason.clone(),
            params,
            request_id: e.request_id.clone(),
        }
    }
}

pub struct ExportLink {
    pub format: &'static str,
    pub href: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "audit.html")]
pub struct AuditPage {
    pub page: Chrome,
    pub events: Vec<AuditRow>,
    pub actions: Vec<Choice>,
    pub outcomes: Vec<Choice>,
    pub actor: String,
    pub target: String,
    pub since: String,
    pub until: String,
    pub filtered: bool,
    pub older: String,
    pub newest: String,
    pub exports: Vec<ExportLink>,
    pub filter_error: String,
}

/// A time typed into a filter or form: RFC 3339 and Unix ms as the API takes them, and
/// also the shorter forms people type (`2026-01-02`, `2026-01-02 03:04`,
/// `2026-01-02T03:04:05`, as a browser's datetime-local sends), read as UTC.
pub fn typed_time(text: &str) -> String {
    let t = text.trim();
    let b = t.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let date_like =
        t.is_ascii() && b.len() >= 10 && b[4] == b'-' && b[7] == b'-' && digits(0..4) && digits(5..7) && digits(8..10);
    if !date_like {
        return t.to_string();
    }
    let (date, rest) = t.split_at(10);
    let clock = rest.trim_start_matches(['T', 't', ' ']);
    // A zone already given (Z, +01:00, -01:00) is the API's to read.
    if clock.contains(['Z', 'z', '+', '-']) {
        return t.to_string();
    }
    match clock.len() {
        0 => format!("{date}T00:00:00Z"),
        5 => format!("{date}T{clock}:00Z"),
        _ => format!("{date}T{clock}Z"),
    }
}

pub async fn page(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<crate::commands::Caller>,
    Query(params): Query<AuditParams>,
    Query(flash): Query<Flash>,
) -> Result<Response, PageError> {
    crate::http::governance::may_read_audit(&caller)?;
    let chrome = Chrome::new(&state, "Audit trail", "audit", &flash);
    let text = |v: &Option<String>| v.as_deref().map(str::trim).unwrap_or_default().to_string();
    let (action, actor, target, outcome) =
        (text(&params.action), text(&params.actor), text(&params.target), text(&params.outcome));
    let (since, until) = (typed_time(&text(&params.since)), typed_time(&text(&params.until)));
    let shown = AuditParams {
        action: Some(action.clone()),
        actor: Some(actor.clone()),
        target: Some(target.clone()),
        outcome: Some(outcome.clone()),
        since: Some(since.clone()),
        until: Some(until.clone()),
        before: params.before,
        limit: Some(PAGE_SIZE),
        format: None,
    };
    let mut filter_error = String::new();
    let events = match shown.query() {
        Ok(query) => {
            state.store.settle().await;
            state.store.audit(&query)?
        }
        Err(ApiError::BadRequest(m)) => {
            filter_error = sentence(&m);
            Vec::new()
        }
        Err(e) => return Err(e.into()),
    };
    let mut base = Vec::new();
    for (k, v) in [
        ("action", &action),
        ("actor", &actor),
        ("target", &target),
        ("outcome", &outcome),
        ("since", &since),
        ("until", &until),
    ] {
        if !v.is_empty() {
            base.push(format!("{k}={}", percent_encode(v)));
        }
    }
    let link = |extra: Option<String>| {
        let q: Vec<String> = base.iter().cloned().chain(extra).collect();
        if q.is_empty() { "/plugin/audit".to_string() } else { format!("/plugin/audit?{}", q.join("&")) }
    };
    let older = (events.len() == PAGE_SIZE)
        .then(|| events.last().map(|e| link(Some(format!("before={}", e.id)))))
        .flatten()
        .unwrap_or_default();
    let exports = ["jsonl", "json", "csv"]
        .into_iter()
        .map(|format| {
            let q: Vec<String> = std::iter::once(format!("format={format}")).chain(base.iter().cloned()).collect();
            ExportLink { format, href: format!("/api/plugin/audit/export?{}", q.join("&")) }
        })
        .collect();
    let choice = |value: &str, label: &str, selected: bool| Choice {
        value: value.to_string(),
        label: label.to_string(),
        selected,
    };
    let page = AuditPage {
        page: chrome,
        events: events.iter().map(|e| AuditRow::from_event(&state, e)).collect(),
        actions: ACTIONS.iter().map(|a| choice(a, a, *a == action)).collect(),
        outcomes: vec![choice("done", "done", outcome == "done"), choice("refused", "refused", outcome == "refused")],
        filtered: !base.is_empty(),
        actor,
        target,
        since,
        until,
        older,
        newest: if params.before.is_some() { link(None) } else { String::new() },
        exports,
        filter_error,
    };
    Ok(page.into_response())
}

#[cfg(test)]
mod tests {
    use super::typed_time;

    #[test]
    fn typed_times_become_rfc3339_in_utc_and_others_pass_through() {
        assert_eq!(typed_time("2026-01-02"), "2026-01-02T00:00:00Z");
        assert_eq!(typed_time("2026-01-02T03:04"), "2026-01-02T03:04:00Z");
        assert_eq!(typed_time("2026-01-02 03:04:05"), "2026-01-02T03:04:05Z");
        assert_eq!(typed_time(" 2026-01-02T03:04:05Z "), "2026-01-02T03:04:05Z");
        assert_eq!(typed_time("2026-01-02T03:04:05+01:00"), "2026-01-02T03:04:05+01:00");
        assert_eq!(typed_time("2026-01-02T03:04:05-01:00"), "2026-01-02T03:04:05-01:00");
        assert_eq!(typed_time("1767323045000"), "1767323045000");
        assert_eq!(typed_time("yesterday"), "yesterday");
        assert_eq!(typed_time(""), "");
        assert_eq!(crate::text::parse_time(&typed_time("2026-01-02T03:04:05")), Ok(1_767_323_045_000));
    }
}
