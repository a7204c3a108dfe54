//! Bulk replay of dead letters from the jobs list: the rows an operator ticked, or every
//! dead letter the list's filters match. The first POST shows a confirmation with the
//! command's dry run (how many match, how many are eligible, how many are over the
//! limit, and why the others are not eligible); Confirm replays for real and goes back
//! to the list with "Replayed N jobs".
//!
//! With an approval token configured, the replay needs the token typed into the
//! confirmation form. The dry run on the confirmation page changes nothing, so it needs
//! no approval (the operator sees what would happen before giving the token); it is
//! still a command, recorded in the audit trail.

use axum::{
    Extension, Form,
    extract::{State, rejection::FormRejection},
    http::HeaderMap,
    response::{Redirect, Response},
};

use super::{
    PageError, back_or,
    confirm::{self, Confirmation, ReplayView},
    csrf,
    forms::Posted,
    jobs::posted,
    see_other, sentence,
};
use crate::{
    commands::{Command, Outcome, ReplayFilter, ReplayReport},
    http::{AppState, auth::Caller},
    job::parse_job_id,
    store::{JobQuery, MAX_PAGE, StoreError},
};

/// Counting matching dead letters for the jobs list stops here.
const COUNT_CAP: usize = 10_000;

/// Dead letters of `job_type` (any when None) whose summary, dedupe key or id contains
/// `text`; with `true` when the count stopped at [`COUNT_CAP`].
pub fn count_dead_letters(
    state: &AppState,
    job_type: Option<&str>,
    text: Option<&str>,
) -> Result<(usize, bool), StoreError> {
    let text = text.map(str::trim).filter(|t| !t.is_empty());
    if text.is_none() {
        let n: i64 = state
            .store
            .dead_letters()?
            .iter()
            .filter(|(t, _)| job_type.is_none_or(|want| want == t))
            .map(|(_, n)| n)
            .sum();
        return Ok((usize::try_from(n).unwrap_or(0), false));
    }
    let mut query = JobQuery {
        job_type: job_type.map(String::from),
        dead_letter: Some(true),
        text: text.map(String::from),
        limit: MAX_PAGE,
        ..Default::default()
    };
    let mut n = 0;
    loop {
        let page = state.store.jobs(&query)?;
        n += page.len();
        if page.len() < MAX_PAGE {
            return Ok((n, false));
        }
        if n >= COUNT_CAP {
            return Ok((n, true));
        }
        query.before_seq = page.last().and_then(|j| parse_job_id(&j.job_id));
    }
}

/// `GET /plugin/jobs/replay`: a replay is a form post; show the dead letters instead.
pub async fn show() -> Redirect {
    Redirect::to("/plugin/jobs?dead_letter=true")
}

/// `POST /plugin/jobs/replay` with `scope=selected` and the ticked `id`s, or
/// `scope=all` with the list's `job_type` and `text`; `confirm=yes` replays.
pub async fn replay(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Result<Response, PageError> {
    let pairs = posted(form)?;
    csrf::check(&headers, &pairs)?;
    let field = |k: &str| Posted(&pairs).first(k).map(str::trim).filter(|v| !v.is_empty()).map(String::from);
    let back = back_or(field("back").as_deref(), "/plugin/jobs?dead_letter=true");
    let filter = match field("scope").as_deref() {
        Some("selected") => {
            let mut ids = Vec::new();
            for (_, id) in pairs.iter().filter(|(k, _)| k == "id") {
                let seq = parse_job_id(id).ok_or_else(|| PageError::bad_request(format!("“{id}” is not a job id.")))?;
                if !ids.contains(&seq) {
                    ids.push(seq);
                }
            }
            if ids.is_empty() {
                let message = "Nothing was replayed: tick the dead letters to replay in the list first.";
                return Ok(see_other(&back, Err(message.to_string())));
            }
            ReplayFilter { ids, ..Default::default() }
        }
        Some("all") => ReplayFilter { job_type: field("job_type"), text: field("text"), ..Default::default() },
        _ => return Err(PageError::bad_request("The form must say scope=selected or scope=all.")),
    };
    if !confirm::confirmed(&pairs) {
        return confirmation(&state, &caller, &pairs, filter, &back, None).await;
    }
    let command = Command::ReplayJobs { filter: filter.clone(), limit: 0, dry_run: false };
    match state.execute(&confirm::approved_caller(&caller, &pairs), command).await {
        Ok(Outcome::Replay(report)) => Ok(see_other(&back, Ok(replayed(&report)))),
        Ok(_) => Ok(see_other(&back, Err("The replay gave no report.".into()))),
        Err(e) if confirm::is_approval_refusal(&e) => {
            confirmation(&state, &caller, &pairs, filter, &back, Some(confirm::approval_message(&e))).await
        }
        Err(e) => Ok(see_other(&back, Err(sentence(&e.to_string())))),
    }
}

/// The flash after a replay: "Replayed N jobs." and what was left out.
fn replayed(r: &ReplayReport) -> String {
    let n = r.replayed.len();
    let mut message = format!("Replayed {n} job{}.", if n == 1 { "" } else { "s" });
    let left = r.ineligible_count;
    if left > 0 {
        message.push_str(&format!(" {left} {} not eligible.", if left == 1 { "was" } else { "were" }));
    }
    if r.over_limit > 0 {
        let verb = if r.over_limit == 1 { "was" } else { "were" };
        message.push_str(&format!(
            " {} eligible {verb} over the limit of one replay; replay again for the rest.",
            r.over_limit
        ));
    }
    message
}

/// The confirmation page with the dry run of the replay.
async fn confirmation(
    state: &AppState,
    caller: &Caller,
    pairs: &[(String, String)],
    filter: ReplayFilter,
    back: &str,
    error: Option<String>,
) -> Result<Response, PageError> {
    let selected = filter.ids.len();
    let scope = if filter.ids.is_empty() {
        let mut about = Vec::new();
        if let Some(t) = &filter.job_type {
            about.push(format!("of job type “{t}”"));
        }
        if let Some(t) = &filter.text {
            about.push(format!("matching “{t}”"));
        }
        if about.is_empty() {
            "every dead letter".to_string()
        } else {
            format!("every dead letter {}", about.join(" "))
        }
    } else {
        format!("the {selected} selected job{}", if selected == 1 { "" } else { "s" })
    };
    let dry_run = Command::ReplayJobs { filter, limit: 0, dry_run: true };
    let report = match state.execute(caller, dry_run).await {
        Ok(Outcome::Replay(report)) => report,
        Ok(_) => return Ok(see_other(back, Err("The dry run gave no report.".into()))),
        Err(e) => return Ok(see_other(back, Err(sentence(&e.to_string())))),
    };
    let view = ReplayView::from_report(&report, state.config.replay_max);
    let n = view.to_replay;
    let jobs = |n: usize| format!("{n} job{}", if n == 1 { "" } else { "s" });
    let mut what = vec![format!(
        "This replays {scope}: each eligible dead letter becomes a new pending job of the same job type, with the \
         same parameters, labels, dedupe key, summary and priority, and the new job links to the one it replays. \
         The dead letters themselves stay as they are."
    )];
    what.push(if n == 0 {
        "Nothing can be replayed: no matching job is eligible (see why below).".to_string()
    } else {
        format!("Confirming creates {} now.", jobs(n))
    });
    let c = Confirmation {
        heading: if n == 0 { "Nothing to replay".into() } else { format!("Replay {}?", jobs(n)) },
        what,
        action: "/plugin/jobs/replay".into(),
        hidden: confirm::carried(pairs),
        confirm_label: format!("Replay {}", jobs(n)),
        danger: false,
        cancel: back.to_string(),
        cancel_label: "Jobs".into(),
        needs_approval: confirm::approval_configured(state),
        replay: Some(view),
        can_confirm: n > 0,
    };
    Ok(confirm::render(state, "jobs", c, error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flash_after_a_replay_says_what_was_left_out() {
        assert_eq!(replayed(&ReplayReport::default()), "Replayed 0 jobs.");
        let r = ReplayReport { ineligible_count: 1, over_limit: 2, ..Default::default() };
        assert_eq!(
            replayed(&r),
            "Replayed 0 jobs. 1 was not eligible. 2 eligible were over the limit of one replay; replay again for the rest."
        );
    }
}
