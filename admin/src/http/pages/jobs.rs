//! The jobs pages: the list with filters (job type, state, text, dead-lettered) and keyset
//! pagination that stays fast for 100k+ jobs, the job detail page (with the job's log,
//! `job_log.rs`, as a live panel), and the cancel, retry
//! and expire actions. Dead letters in the list can be selected for a bulk replay
//! (`replay.rs`).

use askama::Template;
use askama_web::WebTemplate;
use axum::{
    Extension, Form,
    extract::{Path, Query, State, rejection::FormRejection},
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use proto::pb::JobState;
use serde::Deserialize;

use super::{
    Chrome, Flash, PageError, Time, back_or, confirm, csrf,
    forms::{self, Posted},
    human_duration, percent, percent_encode, see_other, sentence,
};
use crate::{
    commands::{Command, Outcome},
    http::{AppState, api, auth::Caller},
    job::{AttemptView, JobView, Pairs, is_final, parse_job_id, parse_state},
    job_log::{self, JobLog, LogLine},
};

/// Jobs per page of the list.
const PAGE_SIZE: usize = 50;

/// One job in a table; rows carry `data-job-row` so the script can update them live.
pub struct JobRow {
    pub job_id: String,
    pub job_type: String,
    pub summary: String,
    pub dedupe_key: String,
    pub state: &'static str,
    pub priority: &'static str,
    pub progress: String,
    pub stage: String,
    pub message: String,
    pub error: String,
    pub worker_id: String,
    pub attempt: i32,
    pub dead_letter: bool,
    pub created: Time,
    pub updated: Time,
    pub active: bool,
    pub can_retry: bool,
    /// The job this one replays (empty when it is no replay).
    pub replay_of: String,
    /// For a PENDING job: what keeps it waiting, in a few words, and as a sentence.
    pub why: String,
    pub why_long: String,
    /// Whether `why` is a blocker (false: it is ready).
    pub why_blocked: bool,
    /// `attempt` with its noun: "1 attempt", "2 attempts".
    pub attempts_text: String,
}

impl JobRow {
    pub fn from_view(j: &JobView) -> JobRow {
        let state = parse_state(j.state).unwrap_or(JobState::Unspecified);
        JobRow {
            job_id: j.job_id.clone(),
            job_type: j.job_type.clone(),
            summary: if j.summary.is_empty() { j.dedupe_key.clone() } else { j.summary.clone() },
            dedupe_key: j.dedupe_key.clone(),
            state: j.state,
            priority: j.priority,
            progress: percent(j.progress_percent),
            // A finished job's stage is no longer true (jobs stored before the dispatcher
            // cleared it at the end still carry one).
            stage: if is_final(state) { String::new() } else { j.stage.clone() },
            message: j.message.clone(),
            error: j.error_message.clone(),
            worker_id: j.worker_id.clone(),
            attempt: j.attempt,
            dead_letter: j.dead_letter,
            created: Time::at(j.created_at),
            updated: Time::at(j.updated_at),
            active: !is_final(state),
            can_retry: matches!(state, JobState::Failed | JobState::Canceled),
            replay_of: j.replay_of.clone().unwrap_or_default(),
            why: String::new(),
            why_long: String::new(),
            why_blocked: false,
            attempts_text: crate::text::plural(i64::from(j.attempt), "attempt"),
        }
    }

    /// Rows for `views`, the PENDING ones with what keeps them waiting (one look at the
    /// dispatcher for the whole list).
    pub fn with_why(state: &AppState, views: &[JobView]) -> Vec<JobRow> {
        let pending: Vec<i64> =
            views.iter().filter(|v| v.state == "pending").filter_map(|v| parse_job_id(&v.job_id)).collect();
        let why = state.dispatcher.explain_pending(&pending);
        views
            .iter()
            .map(|v| {
                let mut row = JobRow::from_view(v);
                if let Some(e) = parse_job_id(&v.job_id).and_then(|seq| why.get(&seq)) {
                    row.why = e.reason.short();
                    row.why_long = sentence(&e.message());
                    row.why_blocked = e.blocked();
                }
                row
            })
            .collect()
    }
}

/// The "why is this job waiting?" box of a PENDING job's page.
pub struct WhyBox {
    pub code: &'static str,
    pub blocked: bool,
    pub message: String,
    pub until: Time,
    /// What else holds it back, as sentences.
    pub also: Vec<String>,
}

impl WhyBox {
    fn of(e: &crate::dispatcher::Explanation) -> WhyBox {
        WhyBox {
            code: e.reason.code(),
            blocked: e.blocked(),
            message: sentence(&e.message()),
            until: Time::at(e.reason.until().unwrap_or(0)),
            also: e.also.iter().map(|r| sentence(&e.message_of(r))).collect(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct JobsFilter {
    pub job_type: Option<String>,
    pub state: Option<String>,
    pub text: Option<String>,
    pub dead_letter: Option<String>,
    pub before: Option<String>,
}

impl JobsFilter {
    fn dead_letter_only(&self) -> bool {
        self.dead_letter.as_deref().is_some_and(|v| matches!(v, "true" | "on" | "1"))
    }

    /// The filter as a query string (without `before`), for links that keep it.
    fn query(&self) -> String {
        let mut parts = Vec::new();
        for (k, v) in [("job_type", &self.job_type), ("state", &self.state), ("text", &self.text)] {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                parts.push(format!("{k}={}", percent_encode(v)));
            }
        }
        if self.dead_letter_only() {
            parts.push("dead_letter=true".into());
        }
        parts.join("&")
    }
}

pub struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "jobs.html")]
pub struct JobsPage {
    pub page: Chrome,
    pub jobs: Vec<JobRow>,
    pub job_types: Vec<Choice>,
    pub states: Vec<Choice>,
    pub text: String,
    pub dead_letter: bool,
    /// The link to the next (older) page, if there is one.
    pub older: String,
    /// The link back to the newest page, when this is not it.
    pub newest: String,
    pub first_page: bool,
    pub filter_job_type: String,
    pub filtered: bool,
    /// The quick filter this page is (all, running, pending, failed, dead), if any.
    pub tab: &'static str,
    /// This page's address, for the actions' way back.
    pub here: String,
    pub filter_error: String,
    /// Some row on this page is a dead letter (it gets a box to select it for replay).
    pub dead_on_page: bool,
    /// Dead letters matching the filters (any page), for "Replay all N matching".
    pub replay_all: usize,
    /// `replay_all` as shown: "1,000+" when the count stopped at its cap.
    pub replay_all_label: String,
}

pub async fn list(
    State(state): State<AppState>,
    Query(filter): Query<JobsFilter>,
    Query(flash): Query<Flash>,
) -> Result<Response, PageError> {
    let chrome = Chrome::new(&state, "Jobs", "jobs", &flash);
    let q = api::JobsQuery {
        job_type: filter.job_type.clone().filter(|t| !t.is_empty()),
        state: filter.state.clone().filter(|s| !s.is_empty()),
        text: filter.text.clone().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()),
        dead_letter: filter.dead_letter_only().then_some(true),
        before: filter.before.clone().filter(|b| !b.is_empty()),
        limit: Some(PAGE_SIZE),
        lane: None,
    };
    let (jobs, next, filter_error) = match api::list_jobs(&state, &q).await {
        Ok((jobs, next)) => (jobs, next, String::new()),
        Err(crate::http::ApiError::BadRequest(m)) => (Vec::new(), None, sentence(&m)),
        Err(e) => return Err(e.into()),
    };
    let base = filter.query();
    let link = |extra: &str| {
        let q = [base.as_str(), extra].iter().filter(|s| !s.is_empty()).copied().collect::<Vec<_>>().join("&");
        if q.is_empty() { "/plugin/jobs".to_string() } else { format!("/plugin/jobs?{q}") }
    };
    let mut here = link(&q.before.as_ref().map(|b| format!("before={}", percent_encode(b))).unwrap_or_default());
    if here.len() > 1500 {
        here = "/plugin/jobs".into();
    }
    let selected_type = q.job_type.clone().unwrap_or_default();
    let selected_state = q.state.as_deref().and_then(parse_state);
    let (replay_all, capped) = if !filter_error.is_empty() || selected_state.is_some_and(|s| s != JobState::Failed) {
        (0, false)
    } else {
        super::replay::count_dead_letters(&state, q.job_type.as_deref(), q.text.as_deref())?
    };
    let page = JobsPage {
        dead_on_page: jobs.iter().any(|j| j.dead_letter && j.state == "failed"),
        replay_all,
        replay_all_label: if capped { format!("{replay_all}+") } else { replay_all.to_string() },
        page: chrome,
        jobs: JobRow::with_why(&state, &jobs),
        job_types: job_type_choices(&state, &selected_type),
        states: [
            JobState::Pending,
            JobState::Assigned,
            JobState::Running,
            JobState::Succeeded,
            JobState::Failed,
            JobState::Canceled,
        ]
        .iter()
        .map(|s| {
            let name = crate::job::state_name(*s);
            Choice { value: name.into(), label: name.into(), selected: selected_state == Some(*s) }
        })
        .collect(),
        text: q.text.clone().unwrap_or_default(),
        dead_letter: filter.dead_letter_only(),
        older: next.map(|b| link(&format!("before={}", percent_encode(&b)))).unwrap_or_default(),
        newest: if q.before.is_some() { link("") } else { String::new() },
        first_page: q.before.is_none(),
        filter_job_type: selected_type,
        filtered: !base.is_empty(),
        tab: match (base.as_str(), filter.dead_letter_only()) {
            ("", _) => "all",
            ("dead_letter=true", true) => "dead",
            ("state=running", _) => "running",
            ("state=pending", _) => "pending",
            ("state=failed", _) => "failed",
            _ => "",
        },
        here,
        filter_error,
    };
    Ok(page.into_response())
}

/// Every job type the admin knows (stored or offered), for filter selects.
pub fn job_type_choices(state: &AppState, selected: &str) -> Vec<Choice> {
    let mut names = state.configs.job_types();
    for t in state.registry.job_types().into_keys() {
        if !names.contains(&t) {
            names.push(t);
        }
    }
    names.sort();
    names.into_iter().map(|n| Choice { selected: n == selected, label: n.clone(), value: n }).collect()
}

pub struct AttemptRow {
    pub attempt: i32,
    pub worker_id: String,
    pub started: Time,
    pub ended: Time,
    pub took: String,
    pub outcome: String,
    /// `outcome` in words.
    pub outcome_label: String,
    pub error: String,
}

impl AttemptRow {
    fn from_view(a: &AttemptView) -> AttemptRow {
        AttemptRow {
            attempt: a.attempt,
            worker_id: a.worker_id.clone(),
            started: Time::at(a.started_at),
            ended: Time::at(a.ended_at),
            took: if a.ended_at > 0 && a.started_at > 0 {
                human_duration(a.ended_at - a.started_at)
            } else {
                "—".into()
            },
            outcome: a.outcome.clone(),
            outcome_label: super::words(&a.outcome),
            error: a.error_message.clone(),
        }
    }
}

/// One line of a job's log panel.
pub struct LogRow {
    pub at: Time,
    /// stdout, stderr, worker or admin
    pub stream: &'static str,
    pub stage: String,
    pub text: String,
}

impl LogRow {
    fn from_line(l: &LogLine) -> LogRow {
        LogRow {
            at: Time::at(l.at),
            stream: l.stream.name(),
            stage: if l.stream == job_log::Stream::Worker { l.stage.clone() } else { String::new() },
            text: l.text.clone(),
        }
    }
}

pub struct Pair {
    pub key: String,
    pub value: String,
}

fn pairs<V>(map: &Pairs<V>, show: impl Fn(&str, &V) -> String) -> Vec<Pair> {
    let mut list: Vec<Pair> = map.iter().map(|(k, v)| Pair { key: k.clone(), value: show(k, v) }).collect();
    list.sort_by(|a, b| a.key.cmp(&b.key));
    list
}

/// Parameters and result values, each shown as its name suggests (bytes, ratios,
/// durations; see [`super::display_named`]).
fn named_pairs(map: &Pairs<proto::pb::ConfigValue>) -> Vec<Pair> {
    pairs(map, |name, v| super::display_named(name, v, forms::display))
}

#[derive(Template, WebTemplate)]
#[template(path = "job.html")]
pub struct JobPage {
    pub page: Chrome,
    pub job: JobRow,
    pub display_name: String,
    pub detail: String,
    pub labels: Vec<Pair>,
    pub parameters: Vec<Pair>,
    pub result_summary: String,
    pub result_values: Vec<Pair>,
    /// The files the run returned, with their download links.
    pub artifacts: Vec<ArtifactRow>,
    pub not_before: Time,
    pub expires_at: Time,
    pub completed: Time,
    pub attempts: Vec<AttemptRow>,
    /// The newest lines of the job's log (at most [`job_log::PANEL`]), oldest first.
    pub log: Vec<LogRow>,
    /// Older lines of the log were left out; `log_note` says how much it keeps.
    pub log_truncated: bool,
    pub log_note: String,
    pub here: String,
    /// The replay of this job, if it was replayed.
    pub replayed_as: String,
    /// Why it waits, for a PENDING job.
    pub why: Option<WhyBox>,
}

/// A file a job's run returned.
pub struct ArtifactRow {
    pub name: String,
    pub size_bytes: u64,
    /// The size as people read it.
    pub size: String,
}

pub async fn detail(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(flash): Query<Flash>,
) -> Result<Response, PageError> {
    let chrome = Chrome::new(&state, format!("Job {id}"), "jobs", &flash);
    let missing = || PageError::not_found(format!("There is no job “{id}”."));
    let seq = parse_job_id(&id).ok_or_else(missing)?;
    let job = state.dispatcher.job(seq).ok_or_else(missing)?;
    state.store.settle().await;
    let attempts = state.dispatcher.attempts(seq)?;
    let log = JobLog::read(&state.store, &job.id(), job_log::PANEL)?;
    let replayed_as = state.store.replayed_as(seq)?.map(crate::job::job_id).unwrap_or_default();
    let view = job.view();
    let why = (job.state == JobState::Pending).then(|| state.dispatcher.explain(seq)).flatten().map(|e| WhyBox::of(&e));
    let artifacts = state
        .artifacts
        .list(&view.job_id)
        .into_iter()
        .map(|a| ArtifactRow { size: super::human_bytes(a.size_bytes), size_bytes: a.size_bytes, name: a.name })
        .collect();
    let display_name = state
        .configs
        .descriptor(&view.job_type)
        .map(|d| d.display_name.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| view.job_type.clone());
    let page = JobPage {
        page: chrome,
        display_name,
        detail: String::from(&*job.spec.detail),
        labels: pairs(&job.spec.labels, |_, v: &String| v.clone()),
        parameters: named_pairs(&job.spec.parameters),
        result_summary: String::from(&*job.result_summary),
        result_values: named_pairs(&job.result_values),
        artifacts,
        why,
        not_before: Time::at(job.spec.not_before),
        expires_at: Time::at(job.spec.expires_at),
        completed: Time::at(job.completed_at),
        attempts: attempts.iter().map(AttemptRow::from_view).collect(),
        log: log.lines.iter().map(LogRow::from_line).collect(),
        log_truncated: log.truncated,
        log_note: log.truncation_note(),
        here: format!("/plugin/jobs/{}", view.job_id),
        replayed_as,
        job: JobRow::from_view(&view),
    };
    Ok(page.into_response())
}

/// The pages' way of reading a posted form: a clear page instead of a bare rejection.
pub fn posted(form: Result<Form<Vec<(String, String)>>, FormRejection>) -> Result<Vec<(String, String)>, PageError> {
    form.map(|Form(pairs)| pairs)
        .map_err(|e| PageError::bad_request(format!("The form could not be read: {}", sentence(&e.body_text()))))
}

/// `POST /plugin/jobs/{id}/{cancel|retry|expire}`.
pub async fn action(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Result<Response, PageError> {
    let pairs = posted(form)?;
    csrf::check(&headers, &pairs)?;
    let back = back_or(Posted(&pairs).first("back"), &format!("/plugin/jobs/{id}"));
    let Some(seq) = parse_job_id(&id) else {
        return Err(PageError::not_found(format!("There is no job “{id}”.")));
    };
    let command = match action.as_str() {
        "cancel" => Command::CancelJob { seq, reason: "canceled by operator".into() },
        "expire" => Command::ExpireJob { seq, reason: "expired by operator".into() },
        "retry" => Command::RetryJob { seq },
        _ => return Err(PageError::not_found(format!("Jobs have no action “{action}”."))),
    };
    // Cancel and expire end the job: the first post only asks.
    if action != "retry" && !confirm::confirmed(&pairs) {
        let c = stop_confirmation(
            &action,
            &id,
            &back,
            &pairs,
            command.needs_approval() && confirm::approval_configured(&state),
        );
        return Ok(confirm::render(&state, "jobs", c, None));
    }
    let view = match state.execute(&confirm::approved_caller(&caller, &pairs), command).await {
        Ok(Outcome::Job(view)) => Ok(view),
        Ok(_) => Err("The action gave no job.".to_string()),
        Err(e) => Err(sentence(&e.to_string())),
    };
    let outcome = view.map(|v| match action.as_str() {
        "cancel" => {
            if v.state == "canceled" {
                format!("Job {id} was canceled.")
            } else {
                format!("Cancel requested: job {id} ends when worker {} confirms.", v.worker_id)
            }
        }
        "expire" => {
            if v.state == "failed" {
                format!("Job {id} was expired; it will not be retried.")
            } else {
                format!("Expiry requested: job {id} ends when worker {} confirms.", v.worker_id)
            }
        }
        _ => format!("Job {id} was requeued for a new round of attempts."),
    });
    Ok(see_other(&back, outcome))
}

/// What the confirmation of a cancel or an expiry says.
fn stop_confirmation(
    action: &str,
    id: &str,
    back: &str,
    pairs: &[(String, String)],
    needs_approval: bool,
) -> confirm::Confirmation {
    let (heading, what, label) = if action == "cancel" {
        (
            format!("Cancel job {id}?"),
            "The job ends as canceled: a running attempt is told to stop, and a pending job is not started. It is \
             not retried, but an operator can retry it later.",
            "Cancel the job",
        )
    } else {
        (
            format!("Expire job {id}?"),
            "The job ends as failed, without further retries: a running attempt is told to stop, and a pending job \
             is not started.",
            "Expire the job",
        )
    };
    confirm::Confirmation {
        heading,
        what: vec![what.into()],
        action: format!("/plugin/jobs/{}/{action}", percent_encode(id)),
        hidden: confirm::carried(pairs),
        confirm_label: label.into(),
        danger: true,
        cancel: back.to_string(),
        cancel_label: "Keep the job".into(),
        needs_approval,
        replay: None,
        can_confirm: true,
    }
}
