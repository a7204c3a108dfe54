//! Holds on the pages: the global pauses of dispatch and of schedules (wide: they go
//! through the confirmation step), and a job type's holds on detection and dispatch
//! (narrow: at once). Each is a command, so it is authorised, audited and persisted
//! like from the API; the pages show every active hold with who set it and when.

use axum::{
    Extension, Form,
    extract::{Path, State, rejection::FormRejection},
    http::HeaderMap,
    response::Response,
};

use super::{
    PageError, Time, back_or,
    confirm::{self, Confirmation},
    csrf,
    forms::Posted,
    job_type_page,
    jobs::posted,
    percent_encode, see_other, sentence,
};
use crate::{
    commands::{Command, Outcome},
    holds::{Hold, HoldKind},
    http::{AppState, auth::Caller},
};

/// One active hold as the pages show it.
pub struct HoldRow {
    /// `dispatch`, `schedules`, `detection`, `job_dispatch` or `drain`.
    pub kind: &'static str,
    /// What is held, in words.
    pub what: String,
    /// The job type or worker it is on (empty for the global ones).
    pub target: String,
    /// Where the target's page is (empty for the global ones).
    pub link: String,
    pub set_by: String,
    pub since: Time,
}

impl HoldRow {
    pub fn from_hold(h: &Hold) -> HoldRow {
        let (what, link) = match h.kind {
            HoldKind::Dispatch => ("All dispatch paused".to_string(), String::new()),
            HoldKind::Schedules => ("All schedules paused".to_string(), String::new()),
            HoldKind::Detection => {
                ("Detection held".to_string(), format!("/plugin/job-types/{}", percent_encode(&h.target)))
            }
            HoldKind::JobDispatch => {
                ("Dispatch held".to_string(), format!("/plugin/job-types/{}", percent_encode(&h.target)))
            }
            HoldKind::Drain => ("Worker draining".to_string(), "/plugin/workers".to_string()),
        };
        HoldRow {
            kind: h.kind.as_str(),
            what,
            target: h.target.clone(),
            link,
            set_by: h.set_by.clone(),
            since: Time::at(h.set_at),
        }
    }
}

/// Who set a hold and since when, for the pages that show one hold.
pub struct HoldView {
    pub set_by: String,
    pub since: Time,
}

impl HoldView {
    pub fn of(hold: Option<Hold>) -> Option<HoldView> {
        hold.map(|h| HoldView { set_by: h.set_by, since: Time::at(h.set_at) })
    }
}

/// Which global pause a form is about.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Global {
    Dispatch,
    Schedules,
}

impl Global {
    fn action(self) -> &'static str {
        match self {
            Global::Dispatch => "/plugin/dispatch",
            Global::Schedules => "/plugin/schedules/pause",
        }
    }

    fn confirmation(self, paused: bool, needs_approval: bool, back: &str) -> Confirmation {
        let (heading, what, label): (&str, &[&str], &str) = match (self, paused) {
            (Global::Dispatch, true) => (
                "Pause all dispatch?",
                &[
                    "No pending job of any job type will be started until dispatch is resumed. Jobs that are running \
                     now finish; detections keep running, and the jobs they create wait as pending.",
                    "The pause is kept across restarts of the admin, and the overview shows who set it and when.",
                ],
                "Pause all dispatch",
            ),
            (Global::Dispatch, false) => (
                "Resume all dispatch?",
                &["Pending jobs start again as workers have free slots. Job types whose own dispatch is held stay \
                   held."],
                "Resume dispatch",
            ),
            (Global::Schedules, true) => (
                "Pause all schedules?",
                &[
                    "No scheduled detection of any job type will run until schedules are resumed. Run now still \
                     works, and pending jobs are still started.",
                    "The pause is kept across restarts of the admin, and the overview shows who set it and when.",
                ],
                "Pause all schedules",
            ),
            (Global::Schedules, false) => (
                "Resume all schedules?",
                &["Scheduled detections run again, on each job type's interval or cron schedule. Job types whose \
                   detection is held stay held."],
                "Resume schedules",
            ),
        };
        Confirmation {
            heading: heading.into(),
            what: what.iter().map(|s| s.to_string()).collect(),
            action: self.action().into(),
            hidden: vec![("paused".into(), paused.to_string()), ("back".into(), back.to_string())],
            confirm_label: label.into(),
            danger: paused,
            cancel: back.to_string(),
            cancel_label: "Overview".into(),
            needs_approval,
            replay: None,
            can_confirm: true,
        }
    }

    fn done(self, paused: bool) -> &'static str {
        match (self, paused) {
            (Global::Dispatch, true) => "All dispatch is paused: no job is started until dispatch is resumed.",
            (Global::Dispatch, false) => "Dispatch resumed: pending jobs start again.",
            (Global::Schedules, true) => {
                "All schedules are paused: no scheduled detection runs until they are resumed."
            }
            (Global::Schedules, false) => "Schedules resumed: scheduled detections run again.",
        }
    }
}

/// `POST /plugin/dispatch` with `paused=true|false`: pause or resume all dispatch.
pub async fn dispatch(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Result<Response, PageError> {
    global(state, caller, headers, form, Global::Dispatch).await
}

/// `POST /plugin/schedules/pause` with `paused=true|false`: pause or resume all schedules.
pub async fn schedules(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Result<Response, PageError> {
    global(state, caller, headers, form, Global::Schedules).await
}

async fn global(
    state: AppState,
    caller: Caller,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
    which: Global,
) -> Result<Response, PageError> {
    let pairs = posted(form)?;
    csrf::check(&headers, &pairs)?;
    let field = |k: &str| Posted(&pairs).first(k);
    let back = back_or(field("back"), "/plugin");
    let paused = match field("paused") {
        Some("true") => true,
        Some("false") => false,
        _ => return Err(PageError::bad_request("The form must say paused=true or paused=false.")),
    };
    let confirmation = || which.confirmation(paused, confirm::approval_configured(&state), &back);
    if !confirm::confirmed(&pairs) {
        return Ok(confirm::render(&state, "overview", confirmation(), None));
    }
    let command = match which {
        Global::Dispatch => Command::PauseDispatch { paused },
        Global::Schedules => Command::PauseSchedules { paused },
    };
    match state.execute(&confirm::approved_caller(&caller, &pairs), command).await {
        Ok(_) => Ok(see_other(&back, Ok(which.done(paused).to_string()))),
        Err(e) if confirm::is_approval_refusal(&e) => {
            Ok(confirm::render(&state, "overview", confirmation(), Some(confirm::approval_message(&e))))
        }
        Err(e) => Ok(see_other(&back, Err(sentence(&e.to_string())))),
    }
}

/// `POST /plugin/job-types/{t}/hold` with `detection=true|false` and/or
/// `dispatch=true|false`: holds or releases one job type, at once, and goes `back` (else
/// to the job type's Status tab).
pub async fn job_type(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(t): Path<String>,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Result<Response, PageError> {
    let pairs = posted(form)?;
    csrf::check(&headers, &pairs)?;
    let flag = |k: &str| match Posted(&pairs).first(k) {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(_) => Err(PageError::bad_request(format!("The form's {k} must be true or false."))),
    };
    let (detection, dispatch) = (flag("detection")?, flag("dispatch")?);
    let page = back_or(Posted(&pairs).first("back"), &job_type_page(&t, "status"));
    let outcome = match state.execute(&caller, Command::HoldJobType { job_type: t.clone(), detection, dispatch }).await
    {
        Ok(Outcome::JobTypeHolds { .. }) => {
            let mut said = Vec::new();
            match detection {
                Some(true) => said.push(format!(
                    "Detection of “{t}” is held: no detection runs, scheduled or on demand, until it is released."
                )),
                Some(false) => said.push(format!("Detection of “{t}” is released.")),
                None => {}
            }
            match dispatch {
                Some(true) => said
                    .push(format!("Dispatch of “{t}” is held: its pending jobs stay pending and running ones finish.")),
                Some(false) => said.push(format!("Dispatch of “{t}” is released: its pending jobs start again.")),
                None => {}
            }
            Ok(said.join(" "))
        }
        Ok(_) => Err("The hold gave no job type.".to_string()),
        Err(e) => Err(sentence(&e.to_string())),
    };
    Ok(see_other(&page, outcome))
}
