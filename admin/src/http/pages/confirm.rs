//! The confirmation step of wide or destructive page actions (global pauses, removing a
//! cron schedule, bulk replay): the first POST, without `confirm=yes`, changes nothing
//! and answers with a page that says exactly what will happen, with Confirm and Cancel;
//! the Confirm button posts the same fields again with `confirm=yes`. When the admin has
//! an approval token configured (`--approval-token-file`), the confirmation form asks for
//! it and the action passes it to the command layer, which checks it.
//!
//! A refused approval shows the confirmation page again, with the refusal as its flash
//! error, so the operator can type the token again; every other outcome is a 303 with a
//! flash status, like every other page action.

use askama::Template;
use askama_web::WebTemplate;
use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};

use super::{Chrome, Flash, Time, forms::Posted};
use crate::{
    commands::{Caller, Refusal, ReplayReport},
    http::AppState,
};

/// The form field that carries the approval token.
pub const APPROVAL_FIELD: &str = "approval";

/// What a confirmation page shows and posts.
pub struct Confirmation {
    pub heading: String,
    /// What will happen, one paragraph each.
    pub what: Vec<String>,
    /// Where the Confirm button posts.
    pub action: String,
    /// The fields the first POST carried (without CSRF, `confirm` and the approval).
    pub hidden: Vec<(String, String)>,
    pub confirm_label: String,
    /// Style the Confirm button as destructive.
    pub danger: bool,
    /// Where Cancel leads (a page of this admin).
    pub cancel: String,
    pub cancel_label: String,
    /// The admin has an approval token configured: ask for it.
    pub needs_approval: bool,
    /// A bulk replay's dry run.
    pub replay: Option<ReplayView>,
    /// False when there is nothing to confirm (a dry run found nothing eligible).
    pub can_confirm: bool,
}

/// A dry run of a bulk replay, as the confirmation page shows it.
pub struct ReplayView {
    pub matched: usize,
    pub eligible: usize,
    pub over_limit: usize,
    pub limit: usize,
    /// Of the eligible ones, how many the replay would create.
    pub to_replay: usize,
    pub ineligible: Vec<(String, String)>,
    pub ineligible_count: usize,
    pub scan_truncated: bool,
}

/// Most ineligible jobs listed on the confirmation page.
const SHOWN_INELIGIBLE: usize = 50;

impl ReplayView {
    pub fn from_report(r: &ReplayReport, limit: usize) -> ReplayView {
        ReplayView {
            matched: r.matched,
            eligible: r.eligible,
            over_limit: r.over_limit,
            limit,
            to_replay: r.eligible - r.over_limit,
            ineligible: r
                .ineligible
                .iter()
                .take(SHOWN_INELIGIBLE)
                .map(|i| (i.job_id.clone(), i.reason.clone()))
                .collect(),
            ineligible_count: r.ineligible_count,
            scan_truncated: r.scan_truncated,
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "confirm.html")]
pub struct ConfirmPage {
    pub page: Chrome,
    pub c: Confirmation,
    /// When the page was made, for "as of" under a dry run.
    pub at: Time,
}

/// The confirmation page, with `error` (a refusal of the last try) as its flash error.
pub fn render(state: &AppState, nav: &'static str, c: Confirmation, error: Option<String>) -> Response {
    let status = if error.is_some() { StatusCode::FORBIDDEN } else { StatusCode::OK };
    let flash = Flash { ok: None, error };
    let page =
        ConfirmPage { page: Chrome::new(state, c.heading.clone(), nav, &flash), at: Time::at(state.clock.now_ms()), c };
    (status, page).into_response()
}

/// Whether the post is the confirmed second step.
pub fn confirmed(pairs: &[(String, String)]) -> bool {
    pairs.iter().any(|(k, v)| k == "confirm" && v == "yes")
}

/// Whether the admin asks for an approval token on wide actions.
pub fn approval_configured(state: &AppState) -> bool {
    state.config.approval_token.is_some()
}

/// The caller, presenting the approval token typed into the confirmation form.
pub fn approved_caller(caller: &Caller, pairs: &[(String, String)]) -> Caller {
    let typed = Posted(pairs).first(APPROVAL_FIELD).map(|v| v.trim().to_string());
    caller.clone().with_approval(typed)
}

/// Refusals the operator can fix on the confirmation page by typing the token again.
pub fn is_approval_refusal(e: &Refusal) -> bool {
    matches!(e, Refusal::ApprovalRequired { .. } | Refusal::ApprovalWrong { .. })
}

/// An approval refusal in the page's words (the command layer's speak of the API's
/// header).
pub fn approval_message(e: &Refusal) -> String {
    match e {
        Refusal::ApprovalRequired { .. } => {
            "Nothing was changed: this action needs the approval token. Type it into the Approval token field.".into()
        }
        Refusal::ApprovalWrong { .. } => "Nothing was changed: the approval token is wrong.".into(),
        other => super::sentence(&other.to_string()),
    }
}

/// The fields of a first POST worth carrying to the confirmation form: everything but
/// the CSRF token, `confirm` and the approval token.
pub fn carried(pairs: &[(String, String)]) -> Vec<(String, String)> {
    pairs.iter().filter(|(k, _)| k != super::csrf::FIELD && k != "confirm" && k != APPROVAL_FIELD).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_confirmation_carries_the_request_but_not_its_token_or_approval() {
        let posted = pairs(&[
            ("csrf", "t"),
            ("scope", "selected"),
            ("id", "j3"),
            ("id", "j4"),
            ("approval", "secret"),
            ("confirm", "yes"),
        ]);
        assert_eq!(carried(&posted), pairs(&[("scope", "selected"), ("id", "j3"), ("id", "j4")]));
        assert!(confirmed(&posted));
        assert!(!confirmed(&pairs(&[("confirm", "no")])));
    }

    #[test]
    fn a_typed_approval_reaches_the_command_and_an_empty_one_does_not() {
        let caller = Caller::new(crate::commands::Actor::Local("ui"));
        assert_eq!(approved_caller(&caller, &pairs(&[("approval", " s3cret ")])).approval.as_deref(), Some("s3cret"));
        assert_eq!(approved_caller(&caller, &pairs(&[("approval", "")])).approval, None);
        assert_eq!(approved_caller(&caller, &[]).approval, None);
        let wrong = Refusal::ApprovalWrong { command: "pause_dispatch" };
        assert!(is_approval_refusal(&wrong));
        assert_eq!(approval_message(&wrong), "Nothing was changed: the approval token is wrong.");
        assert!(!is_approval_refusal(&Refusal::Invalid("x".into())));
    }
}
