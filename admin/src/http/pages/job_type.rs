//! The job type page, in four tabs (`?tab=`, plain links; Status when absent or
//! unknown), each rendered on its own by the server:
//!
//! - **Status**: the scheduling status and the notices (needs configuration, no worker,
//!   waits for an operator), Run now and Detect only with the latest detection results
//!   beside them, the holds, the trends (`?window=1h|24h`, `charts.rs`), the latest jobs
//!   and a form to enqueue a job by hand;
//! - **Configuration**: the admin and worker forms rendered from the descriptor, and
//!   Refresh schema;
//! - **Runtime**: the runtime settings and the schedule (cron or interval);
//! - **History**: the run history and the observations.
//!
//! Every form on a tab posts `back`, that tab's address, and its action sends the browser
//! back there (else to the tab the form belongs to); a form refused with errors comes back
//! on its own tab. The page script switches tabs without a reload by fetching the tab's
//! page and swapping its panel (and the address, with `history.replaceState`).
//!
//! Saving validates with the admin's one validator (through the config store); when it
//! fails, the page comes back with status 422, each error next to its field and the
//! operator's input kept (except typed secrets, which are never sent back).

use std::{collections::HashMap, sync::Arc};

use askama::Template;
use askama_web::WebTemplate;
use axum::{
    Extension, Form,
    extract::{Path, Query, State, rejection::FormRejection},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use proto::pb;

use serde::Deserialize;

use super::{
    Chrome, Flash, PageError, Time,
    audit::typed_time,
    back_or,
    charts::TrendsView,
    confirm::{self, Confirmation},
    csrf,
    forms::{self, FormView, Posted, RuntimeView, Source, UnitChoice, Which, duration_in, unit_choices},
    holds::HoldView,
    job_type_page,
    jobs::{Choice, JobRow, posted},
    overview::{Counts, RunRow, WindowQuery},
    percent_encode, see_other, sentence,
};
use crate::{
    commands::{Command, Outcome, Refusal, ScheduleSpec, ScheduleView},
    config_store::ConfigStoreError,
    config_value::{duration_display_in, duration_units_from, in_words},
    holds::HoldKind,
    http::{ApiError, AppState, api, auth::Caller, governance::parse_new_job},
    runtime_config::Unit,
    scheduler::DetectionMode,
    schedules::MAX_INTERVAL_MINUTES,
    trends::Window,
    validator::{FieldError, is_valid_job_type, validate_config},
};

/// A tab of the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Status,
    Configuration,
    Runtime,
    History,
}

impl Tab {
    pub const ALL: [Tab; 4] = [Tab::Status, Tab::Configuration, Tab::Runtime, Tab::History];

    /// Its name in `?tab=`.
    pub fn name(self) -> &'static str {
        match self {
            Tab::Status => "status",
            Tab::Configuration => "configuration",
            Tab::Runtime => "runtime",
            Tab::History => "history",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Tab::Status => "Status",
            Tab::Configuration => "Configuration",
            Tab::Runtime => "Runtime",
            Tab::History => "History",
        }
    }

    /// The tab `?tab=` names; Status for none or an unknown name.
    pub fn parse(name: Option<&str>) -> Tab {
        Tab::ALL.into_iter().find(|t| Some(t.name()) == name).unwrap_or(Tab::Status)
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct TabQuery {
    pub tab: Option<String>,
}

/// A link of the tab bar.
pub struct TabLink {
    pub name: &'static str,
    pub label: &'static str,
    pub href: String,
    pub current: bool,
    /// A word beside the label that needs the operator ("" for none).
    pub note: &'static str,
}

pub struct ProposalRow {
    pub summary: String,
    pub dedupe_key: String,
    pub priority: &'static str,
    pub outcome: &'static str,
    /// `outcome` in words.
    pub outcome_label: String,
    pub job_id: String,
}

/// The scheduler's and dispatcher's view of the job type (a live region of the page).
pub struct StatusView {
    pub enabled: bool,
    /// Off until an operator enables it: its worker declared no runtime defaults.
    pub awaits_operator: bool,
    pub detector: String,
    pub detectors: usize,
    pub executors: usize,
    pub detection_running: bool,
    pub running_mode: &'static str,
    pub next_detection: Time,
    pub interval_minutes: i32,
    pub last_success: Time,
    pub counts: Counts,
    /// Labels of the required settings still empty: detections are refused until set.
    pub needs_configuration: Vec<String>,
    /// No connected worker offers the job type.
    pub no_worker: bool,
    /// Its dispatch or detection is held, or all dispatch is paused.
    pub paused: bool,
}

/// The job type's schedule, as its card shows it.
pub struct ScheduleCard {
    /// `cron` or `interval`.
    pub kind: &'static str,
    pub cron: String,
    pub time_zone: String,
    pub interval_minutes: i64,
    pub previous: Time,
    pub next: Time,
    /// Its detection is held, or all schedules are paused.
    pub held: bool,
    pub enabled: bool,
    /// Who set the cron schedule, and when.
    pub set_by: String,
    pub set_at: Time,
}

impl ScheduleCard {
    fn from_view(v: ScheduleView) -> ScheduleCard {
        ScheduleCard {
            kind: v.kind,
            cron: v.cron.unwrap_or_default(),
            time_zone: v.time_zone.unwrap_or_default(),
            interval_minutes: v.interval_minutes,
            previous: Time::at(v.previous_fire_at.unwrap_or(0)),
            next: Time::at(v.next_fire_at.unwrap_or(0)),
            held: v.held,
            enabled: v.enabled,
            set_by: v.set_by.unwrap_or_default(),
            set_at: Time::at(v.set_at.unwrap_or(0)),
        }
    }
}

/// The schedule forms' values and the error of the last try.
#[derive(Default)]
pub struct ScheduleForm {
    pub cron: String,
    pub time_zone: String,
    /// The interval's amount, in the unit selected in `interval_units`.
    pub interval: String,
    pub interval_units: Vec<UnitChoice>,
    /// The longest interval, in words.
    pub max_interval: String,
    /// Which form failed: `cron`, `interval` or empty.
    pub failed: &'static str,
    pub error: String,
}

/// The enqueue form's values and the error of the last try.
#[derive(Default)]
pub struct EnqueueForm {
    pub summary: String,
    pub dedupe_key: String,
    pub priorities: Vec<Choice>,
    pub not_before: String,
    pub parameters: String,
    pub error: String,
    /// The active job that holds the dedupe key, when that is why it was refused.
    pub duplicate_of: String,
}

fn priority_choices(selected: &str) -> Vec<Choice> {
    ["low", "normal", "high", "critical"]
        .into_iter()
        .map(|p| Choice { value: p.into(), label: p.into(), selected: p == selected })
        .collect()
}

#[derive(Template, WebTemplate)]
#[template(path = "job_type.html")]
pub struct JobTypePage {
    pub page: Chrome,
    pub job_type: String,
    /// The job type, percent-encoded for links.
    pub job_type_q: String,
    /// The tab shown: status, configuration, runtime or history.
    pub tab: &'static str,
    pub tabs: Vec<TabLink>,
    /// This tab's address: every form on it posts it as `back`.
    pub here: String,
    pub display_name: String,
    pub description: String,
    pub has_descriptor: bool,
    pub descriptor_version: u32,
    pub updated: Time,
    pub updated_by: String,
    pub status: StatusView,
    pub admin_form: Option<FormView>,
    pub worker_form: Option<FormView>,
    pub runtime: RuntimeView,
    /// Errors of the last save that no field shows.
    pub general_errors: Vec<String>,
    /// Which form the errors belong to: "config", "runtime" or "".
    pub failed_form: &'static str,
    pub proposals: Vec<ProposalRow>,
    pub proposals_total: usize,
    pub successes: Vec<RunRow>,
    pub failures: Vec<RunRow>,
    pub recent_jobs: Vec<JobRow>,
    pub detection_hold: Option<HoldView>,
    pub dispatch_hold: Option<HoldView>,
    /// All dispatch is paused (a global hold, set on the overview).
    pub dispatch_paused: bool,
    /// All schedules are paused (a global hold, set on the overview).
    pub schedules_paused: bool,
    /// None without a descriptor.
    pub schedule: Option<ScheduleCard>,
    pub schedule_form: ScheduleForm,
    pub enqueue: EnqueueForm,
    /// What its workers last observed of each object (the newest first).
    pub observations: Vec<super::observations::ObservationRow>,
    pub observations_total: usize,
    /// The job type's trends over the chosen window (Status only).
    pub trends: Option<TrendsView>,
}

/// A save that failed: what was posted and why it was refused.
struct Rejected<'a> {
    form: &'static str,
    posted: Posted<'a>,
    errors: Vec<FieldError>,
}

fn page_path(t: &str) -> String {
    format!("/plugin/job-types/{}", percent_encode(t))
}

fn unknown(t: &str) -> PageError {
    PageError::not_found(format!(
        "There is no job type “{t}”. Job types appear when a worker that offers them connects."
    ))
}

/// Whether the admin knows the job type: stored, or offered by a connected worker.
fn known(state: &AppState, t: &str) -> bool {
    is_valid_job_type(t) && (state.configs.entry(t).is_some() || state.registry.job_types().contains_key(t))
}

pub async fn page(
    State(state): State<AppState>,
    Path(t): Path<String>,
    Query(flash): Query<Flash>,
    Query(window): Query<WindowQuery>,
    Query(tab): Query<TabQuery>,
) -> Result<Response, PageError> {
    let tab = Tab::parse(tab.tab.as_deref());
    Ok(build(&state, &t, &flash, None, window.window(), tab).await?.into_response())
}

/// The address of tab `tab` (Status keeps the trends' window when it is not the default).
fn tab_path(t: &str, tab: Tab, window: Window) -> String {
    let path = job_type_page(t, tab.name());
    if tab == Tab::Status && window != Window::Hour { format!("{path}&window={}", window.name()) } else { path }
}

/// Where a form of tab `home` sends the browser back to: its posted `back`, else `home`.
fn back_to(t: &str, pairs: &[(String, String)], home: Tab) -> String {
    back_or(Posted(pairs).first("back"), &job_type_page(t, home.name()))
}

/// The schedule's interval form: `minutes` in the largest unit that shows it exactly.
fn interval_input(minutes: i64) -> (String, Vec<UnitChoice>) {
    let units = duration_units_from("min");
    let (amount, unit) = Unit::Minutes.nanos(minutes).map(|n| duration_display_in(n, units)).unwrap_or_default();
    (amount, unit_choices(units, unit))
}

/// The job type's trends section over `window`.
fn trends(state: &AppState, t: &str, window: Window) -> TrendsView {
    let series = crate::http::trends::series(state, Some(t), window);
    TrendsView::build(&series, window, &page_path(t), &format!("/api/plugin/job-types/{}/series", percent_encode(t)))
}

async fn build(
    state: &AppState,
    t: &str,
    flash: &Flash,
    rejected: Option<Rejected<'_>>,
    window: Window,
    tab: Tab,
) -> Result<JobTypePage, PageError> {
    if !known(state, t) {
        return Err(unknown(t));
    }
    let mut chrome = Chrome::new(state, t, "overview", flash);
    let entry = state.configs.entry(t).unwrap_or_default();
    let descriptor = entry.descriptor.clone();
    let config = entry.config.clone().unwrap_or_else(|| Arc::new(pb::PersistedJobTypeConfig::default()));
    let capability = state.registry.job_types().remove(t);

    let (errors, general_errors, failed_form) = match &rejected {
        Some(r) => {
            let known_inputs = descriptor.as_deref().map(forms::input_names).unwrap_or_default();
            let (by_field, general) = forms::split_errors(&r.errors, &known_inputs);
            (by_field, general, r.form)
        }
        None => (HashMap::new(), Vec::new(), ""),
    };
    let config_source = match &rejected {
        Some(r) if r.form == "config" => Source::Posted(r.posted),
        _ => Source::Saved,
    };
    let runtime_posted = rejected.as_ref().filter(|r| r.form == "runtime").map(|r| r.posted);
    let form = |which: Which| {
        descriptor.as_deref().and_then(|d| forms::form_view(which, d, which.saved(&config), config_source, &errors))
    };

    let scheduler = state.scheduler.scheduler_states().into_iter().find(|s| s.job_type == t);
    let runtime = state.configs.runtime(t);
    let status = StatusView {
        enabled: runtime.enabled,
        awaits_operator: state.configs.awaits_operator(t),
        detector: scheduler.as_ref().map(|s| s.detector_worker_id.clone()).unwrap_or_default(),
        detectors: scheduler.as_ref().map(|s| s.detectors).unwrap_or(0),
        executors: scheduler.as_ref().map(|s| s.executors).unwrap_or(0),
        detection_running: scheduler.as_ref().is_some_and(|s| s.detection_running),
        running_mode: match scheduler.as_ref().and_then(|s| s.running_mode) {
            Some(DetectionMode::Run) => "run",
            Some(DetectionMode::Preview) => "preview",
            Some(DetectionMode::Scheduled) => "scheduled",
            None => "",
        },
        next_detection: Time::at(
            scheduler.as_ref().filter(|s| s.enabled && s.detectors > 0).map(|s| s.next_detection_at).unwrap_or(0),
        ),
        interval_minutes: runtime.detection_interval_minutes,
        last_success: Time::at(scheduler.as_ref().map(|s| s.last_success_at).unwrap_or(0)),
        counts: Counts::of(state, t),
        needs_configuration: descriptor
            .as_deref()
            .filter(|_| entry.config.is_some())
            .map(|d| crate::validator::missing_required(d, &config))
            .unwrap_or_default(),
        no_worker: capability.is_none(),
        paused: state.holds.dispatch_paused()
            || state.holds.is_held(HoldKind::JobDispatch, t)
            || state.holds.is_held(HoldKind::Detection, t),
    };

    // Each tab reads only what it shows.
    state.store.settle().await;
    let (successes, failures) = if tab == Tab::History { state.store.runs(t, 10)? } else { Default::default() };
    let proposals = if tab == Tab::Status { state.scheduler.latest_proposals(t) } else { Vec::new() };
    let recent_jobs = if tab == Tab::Status {
        let query = api::JobsQuery { job_type: Some(t.to_string()), limit: Some(10), ..Default::default() };
        JobRow::with_why(state, &api::list_jobs(state, &query).await?.0)
    } else {
        Vec::new()
    };

    let display_name = descriptor
        .as_ref()
        .map(|d| d.display_name.clone())
        .filter(|n| !n.is_empty())
        .or_else(|| capability.as_ref().map(|c| c.display_name.clone()).filter(|n| !n.is_empty()))
        .unwrap_or_else(|| t.to_string());
    chrome.title = display_name.clone();
    let schedule = state.schedule_view(t).map(ScheduleCard::from_view);
    let (interval, interval_units) = interval_input(schedule.as_ref().map(|s| s.interval_minutes).unwrap_or(0));
    let schedule_form = ScheduleForm {
        cron: schedule.as_ref().map(|s| s.cron.clone()).unwrap_or_default(),
        time_zone: schedule.as_ref().map(|s| s.time_zone.clone()).filter(|z| !z.is_empty()).unwrap_or("UTC".into()),
        interval: if schedule.is_some() { interval } else { String::new() },
        interval_units,
        max_interval: Unit::Minutes
            .nanos(MAX_INTERVAL_MINUTES)
            .map(|n| {
                let (amount, unit) = duration_display_in(n, duration_units_from("min"));
                in_words(&amount, unit)
            })
            .unwrap_or_default(),
        failed: "",
        error: String::new(),
    };
    let (observations, observations_total) =
        if tab == Tab::History { super::observations::rows(state, t) } else { (Vec::new(), 0) };
    let tabs = Tab::ALL
        .into_iter()
        .map(|each| TabLink {
            name: each.name(),
            label: each.label(),
            href: tab_path(t, each, window),
            current: each == tab,
            note: match each {
                Tab::Configuration if !status.needs_configuration.is_empty() => "needs configuration",
                Tab::Runtime if status.awaits_operator => "enable it",
                _ => "",
            },
        })
        .collect();
    Ok(JobTypePage {
        trends: (tab == Tab::Status).then(|| trends(state, t, window)),
        tab: tab.name(),
        tabs,
        observations,
        observations_total,
        detection_hold: HoldView::of(state.holds.get(HoldKind::Detection, t)),
        dispatch_hold: HoldView::of(state.holds.get(HoldKind::JobDispatch, t)),
        dispatch_paused: state.holds.dispatch_paused(),
        schedules_paused: state.holds.schedules_paused(),
        schedule,
        schedule_form,
        enqueue: EnqueueForm { priorities: priority_choices("normal"), parameters: "{}".into(), ..Default::default() },
        page: chrome,
        job_type: t.to_string(),
        job_type_q: percent_encode(t),
        here: tab_path(t, tab, window),
        description: descriptor
            .as_ref()
            .map(|d| d.description.clone())
            .filter(|s| !s.is_empty())
            .or_else(|| capability.as_ref().map(|c| c.description.clone()))
            .unwrap_or_default(),
        display_name,
        has_descriptor: descriptor.is_some(),
        descriptor_version: descriptor.as_ref().map(|d| d.descriptor_version).unwrap_or(0),
        updated: Time::at(config.updated_at.as_ref().map(crate::job::timestamp_to_ms).unwrap_or(0)),
        updated_by: config.updated_by.clone(),
        status,
        admin_form: form(Which::Admin),
        worker_form: form(Which::Worker),
        runtime: forms::runtime_view(&runtime, runtime_posted, &errors),
        general_errors,
        failed_form,
        proposals_total: proposals.len(),
        proposals: proposals
            .iter()
            .take(50)
            .map(|p| ProposalRow {
                summary: if p.summary.is_empty() { p.dedupe_key.clone() } else { p.summary.clone() },
                dedupe_key: p.dedupe_key.clone(),
                // The admin gives a proposal without a priority the normal one.
                priority: if p.priority == "unspecified" { "normal" } else { p.priority },
                outcome: p.outcome,
                outcome_label: super::words(p.outcome),
                job_id: p.job_id.clone(),
            })
            .collect(),
        successes: successes.iter().map(RunRow::from_view).collect(),
        failures: failures.iter().map(RunRow::from_view).collect(),
        recent_jobs,
    })
}

/// What a save needs: the descriptor and the saved config.
fn current(
    state: &AppState,
    t: &str,
) -> Result<(Arc<pb::JobTypeDescriptor>, Arc<pb::PersistedJobTypeConfig>), PageError> {
    if !known(state, t) {
        return Err(unknown(t));
    }
    let entry = state.configs.entry(t).unwrap_or_default();
    match (entry.descriptor, entry.config) {
        (Some(d), Some(c)) => Ok((d, c)),
        _ => Err(PageError::bad_request(format!(
            "Job type “{t}” has no descriptor yet, so there is nothing to save. Refresh its schema first."
        ))),
    }
}

/// `POST /plugin/job-types/{t}/config`: the admin and worker forms.
pub async fn save_config(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(t): Path<String>,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Result<Response, PageError> {
    let pairs = posted(form)?;
    csrf::check(&headers, &pairs)?;
    let (descriptor, saved) = current(&state, &t)?;
    let posted = Posted(&pairs);
    let (admin, mut errors) = forms::parse_form(Which::Admin, &descriptor, &saved.admin_config_values, posted);
    let (worker, worker_errors) = forms::parse_form(Which::Worker, &descriptor, &saved.worker_config_values, posted);
    errors.extend(worker_errors);
    let mut next = (*saved).clone();
    next.admin_config_values = admin;
    next.worker_config_values = worker;
    // Absent: the config store keeps the saved runtime settings.
    next.admin_runtime = None;
    let rejected = Rejected { form: "config", posted, errors };
    let back = back_to(&t, &pairs, Tab::Configuration);
    finish_save(
        &state,
        &caller,
        &t,
        &descriptor,
        &saved,
        next,
        rejected,
        (Tab::Configuration, &back),
        "Configuration saved.",
    )
    .await
}

/// `POST /plugin/job-types/{t}/runtime`: the runtime settings form.
pub async fn save_runtime(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(t): Path<String>,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Result<Response, PageError> {
    let pairs = posted(form)?;
    csrf::check(&headers, &pairs)?;
    let (descriptor, saved) = current(&state, &t)?;
    let posted = Posted(&pairs);
    let (runtime, errors) = forms::parse_runtime(posted);
    let mut next = (*saved).clone();
    next.admin_runtime = Some(runtime);
    let rejected = Rejected { form: "runtime", posted, errors };
    let back = back_to(&t, &pairs, Tab::Runtime);
    finish_save(
        &state,
        &caller,
        &t,
        &descriptor,
        &saved,
        next,
        rejected,
        (Tab::Runtime, &back),
        "Runtime settings saved.",
    )
    .await
}

/// Saves `next` when parsing found no errors and goes `back`; otherwise (or when the
/// validator refuses) shows the form's tab again with every error in one round.
#[allow(clippy::too_many_arguments)]
async fn finish_save(
    state: &AppState,
    caller: &Caller,
    t: &str,
    descriptor: &pb::JobTypeDescriptor,
    saved: &pb::PersistedJobTypeConfig,
    next: pb::PersistedJobTypeConfig,
    rejected: Rejected<'_>,
    (tab, back): (Tab, &str),
    done: &str,
) -> Result<Response, PageError> {
    let Rejected { form: which, posted, mut errors } = rejected;
    if errors.is_empty() {
        match save(state, caller, t, next).await {
            Ok(()) => return Ok(see_other(back, Ok(done.to_string()))),
            Err(Refusal::Config(ConfigStoreError::Invalid(fields))) => errors = fields,
            Err(Refusal::Config(ConfigStoreError::UnknownJobType(_))) => return Err(unknown(t)),
            Err(e @ Refusal::Forbidden { .. }) => {
                return Err(PageError {
                    status: StatusCode::FORBIDDEN,
                    heading: "Not allowed",
                    message: sentence(&e.to_string()),
                });
            }
            Err(e) => return Err(PageError::internal(e)),
        }
    } else {
        // Input that could not be parsed is reported, and so is everything the validator
        // finds in the rest, so the operator fixes it all at once.
        let mut candidate = next;
        keep_unchanged_for_validation(descriptor, saved, &mut candidate);
        if let Err(more) = validate_config(descriptor, &candidate, Some(saved)) {
            for e in more {
                if !errors.iter().any(|x| x.field == e.field) {
                    errors.push(e);
                }
            }
        }
    }
    let flash = Flash { ok: None, error: Some(format!("Nothing was saved: {}", fix_message(errors.len()))) };
    let page = build(state, t, &flash, Some(Rejected { form: which, posted, errors }), Window::Hour, tab).await?;
    Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
}

fn fix_message(n: usize) -> String {
    if n == 1 { "one value needs fixing (see below).".into() } else { format!("{n} values need fixing (see below).") }
}

/// Mirrors the config store: sensitive and read-only fields left out of a submission keep
/// their saved values, so validating the candidate does not report them missing.
fn keep_unchanged_for_validation(
    d: &pb::JobTypeDescriptor,
    saved: &pb::PersistedJobTypeConfig,
    c: &mut pb::PersistedJobTypeConfig,
) {
    crate::config_value::keep_unchanged_config(d, Some(saved), c);
}

/// Persists a config through the admin's one save path (validation, event, activity).
async fn save(state: &AppState, caller: &Caller, t: &str, mut next: pb::PersistedJobTypeConfig) -> Result<(), Refusal> {
    next.job_type = t.to_string();
    state.execute(caller, Command::SaveConfig { config: next }).await.map(|_| ())
}

/// `POST /plugin/job-types/{t}/schema`: asks a worker for the descriptor again.
pub async fn refresh_schema(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(t): Path<String>,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Result<Response, PageError> {
    let pairs = posted(form)?;
    csrf::check(&headers, &pairs)?;
    if !known(&state, &t) {
        return Err(unknown(&t));
    }
    let outcome = match state.execute(&caller, Command::RefreshSchema { job_type: t.clone(), force: true }).await {
        Ok(Outcome::SchemaRefreshed(d)) => {
            Ok(format!("Schema refreshed: descriptor version {}.", d.descriptor_version))
        }
        Ok(_) => Err("The schema refresh gave no descriptor.".to_string()),
        Err(e) => Err(sentence(&e.to_string())),
    };
    Ok(see_other(&back_to(&t, &pairs, Tab::Configuration), outcome))
}

/// `POST /plugin/job-types/{t}/detect`: a detection whose proposals are only shown.
pub async fn detect(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(t): Path<String>,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Result<Response, PageError> {
    start(state, caller, t, headers, form, DetectionMode::Preview).await
}

/// `POST /plugin/job-types/{t}/run`: a detection whose proposals become jobs.
pub async fn run(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(t): Path<String>,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Result<Response, PageError> {
    start(state, caller, t, headers, form, DetectionMode::Run).await
}

async fn start(
    state: AppState,
    caller: Caller,
    t: String,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
    mode: DetectionMode,
) -> Result<Response, PageError> {
    let pairs = posted(form)?;
    csrf::check(&headers, &pairs)?;
    if !known(&state, &t) {
        return Err(unknown(&t));
    }
    let outcome = match state
        .execute(&caller, Command::Detect { job_type: t.clone(), mode, options: Default::default() })
        .await
    {
        Ok(outcome) => {
            let queued = matches!(outcome, Outcome::DetectionRequested { queued: true, .. });
            let what = if mode == DetectionMode::Run {
                "Run started: the detection's proposals become jobs, which show up under Latest jobs as they progress"
            } else {
                "Detection started: its proposals show up under Latest detection results; no jobs are created"
            };
            if queued {
                Ok(format!("{what}, after the detection that is running now."))
            } else {
                Ok(format!("{what}."))
            }
        }
        Err(e) => Err(sentence(&e.to_string())),
    };
    Ok(see_other(&back_to(&t, &pairs, Tab::Status), outcome))
}

/// The page again on `tab`, with the status of a form that was refused and the flash
/// error that points at it.
async fn again(
    state: &AppState,
    t: &str,
    status: StatusCode,
    flash_error: String,
    tab: Tab,
    adjust: impl FnOnce(&mut JobTypePage),
) -> Result<Response, PageError> {
    let flash = Flash { ok: None, error: Some(flash_error) };
    let mut page = build(state, t, &flash, None, Window::Hour, tab).await?;
    adjust(&mut page);
    Ok((status, page).into_response())
}

/// `POST /plugin/job-types/{t}/schedule` with `kind=cron` (`cron`, `time_zone`) or
/// `kind=interval` (`interval_minutes`, an amount of `unit:interval_minutes`: min, h or
/// d; minutes when absent).
pub async fn set_schedule(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(t): Path<String>,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Result<Response, PageError> {
    let pairs = posted(form)?;
    csrf::check(&headers, &pairs)?;
    if !known(&state, &t) {
        return Err(unknown(&t));
    }
    let field = |k: &str| Posted(&pairs).first(k).map(|v| v.trim().to_string()).unwrap_or_default();
    let (cron, time_zone, interval) = (field("cron"), field("time_zone"), field("interval_minutes"));
    let unit = Posted(&pairs).first("unit:interval_minutes").unwrap_or("min").to_string();
    let back = back_to(&t, &pairs, Tab::Runtime);
    let kind: &'static str = match field("kind").as_str() {
        "cron" => "cron",
        "interval" => "interval",
        _ => return Err(PageError::bad_request("The form must say kind=cron or kind=interval.")),
    };
    let spec = if kind == "cron" {
        let zone = if time_zone.is_empty() { serde_json::Value::Null } else { time_zone.clone().into() };
        ScheduleSpec::from_json(&serde_json::json!({ "cron": cron, "time_zone": zone })).map_err(|e| e.to_string())
    } else {
        // The runtime settings' duration input, read the same way (the interval is the
        // runtime setting `detection_interval_minutes`).
        match duration_in(&interval, &unit, Unit::Minutes) {
            Ok(Some(minutes)) => Ok(ScheduleSpec::Interval { minutes }),
            Ok(None) => Err("the interval is empty: give a number of minutes, hours or days".to_string()),
            Err(message) => Err(format!("the interval {message}")),
        }
    };
    let minutes = match &spec {
        Ok(ScheduleSpec::Interval { minutes }) => *minutes,
        _ => 0,
    };
    let result = match spec {
        Ok(schedule) => state.execute(&caller, Command::SetSchedule { job_type: t.clone(), schedule }).await,
        Err(message) => Err(Refusal::Invalid(message)),
    };
    let error = match result {
        Ok(_) => {
            let message = if kind == "cron" {
                let zone = if time_zone.is_empty() { "UTC" } else { time_zone.as_str() };
                format!("Schedule saved: “{t}” detects on the cron expression “{cron}” ({zone}).")
            } else {
                let (amount, unit) = interval_input(minutes);
                let unit = unit.iter().find(|u| u.selected).map(|u| u.value).unwrap_or("min");
                format!("Schedule saved: “{t}” detects every {}.", in_words(&amount, unit))
            };
            return Ok(see_other(&back, Ok(message)));
        }
        Err(Refusal::Config(ConfigStoreError::Invalid(fields))) => {
            fields.iter().map(|f| f.to_string()).collect::<Vec<_>>().join("; ")
        }
        Err(e @ (Refusal::Schedule(_) | Refusal::Invalid(_))) => e.to_string(),
        Err(e) => return Ok(see_other(&back, Err(sentence(&e.to_string())))),
    };
    again(
        &state,
        &t,
        StatusCode::UNPROCESSABLE_ENTITY,
        "Nothing was saved: the schedule needs fixing (see below).".into(),
        Tab::Runtime,
        |page| {
            page.schedule_form.failed = kind;
            page.schedule_form.error = sentence(&error);
            if kind == "cron" {
                page.schedule_form.cron = cron;
                page.schedule_form.time_zone = time_zone;
            } else {
                let units = duration_units_from("min");
                let shown = units.iter().map(|(u, _)| *u).find(|u| *u == unit).unwrap_or("min");
                page.schedule_form.interval = interval;
                page.schedule_form.interval_units = unit_choices(units, shown);
            }
        },
    )
    .await
}

/// `POST /plugin/job-types/{t}/schedule/delete`: removes the cron schedule (the job type
/// detects on its interval again), after the confirmation step.
pub async fn delete_schedule(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(t): Path<String>,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Result<Response, PageError> {
    let pairs = posted(form)?;
    csrf::check(&headers, &pairs)?;
    if !known(&state, &t) {
        return Err(unknown(&t));
    }
    let page = back_to(&t, &pairs, Tab::Runtime);
    let Some(view) = state.schedule_view(&t).filter(|v| v.kind == "cron") else {
        return Ok(see_other(&page, Err(format!("Job type “{t}” has no cron schedule to remove."))));
    };
    let every = format!("every {} minute{}", view.interval_minutes, if view.interval_minutes == 1 { "" } else { "s" });
    let confirmation = || Confirmation {
        heading: format!("Remove the cron schedule of “{t}”?"),
        what: vec![format!(
            "“{t}” stops detecting on the cron expression “{}” ({}) and detects {every} again, as its runtime \
             settings say.",
            view.cron.as_deref().unwrap_or_default(),
            view.time_zone.as_deref().unwrap_or("UTC"),
        )],
        action: format!("/plugin/job-types/{}/schedule/delete", percent_encode(&t)),
        hidden: confirm::carried(&pairs),
        confirm_label: "Remove cron schedule".into(),
        danger: true,
        cancel: page.clone(),
        cancel_label: t.clone(),
        needs_approval: confirm::approval_configured(&state),
        replay: None,
        can_confirm: true,
    };
    if !confirm::confirmed(&pairs) {
        return Ok(confirm::render(&state, "overview", confirmation(), None));
    }
    let command = Command::DeleteSchedule { job_type: t.clone() };
    match state.execute(&confirm::approved_caller(&caller, &pairs), command).await {
        Ok(_) => Ok(see_other(&page, Ok(format!("Cron schedule removed: “{t}” detects {every} again.")))),
        Err(e) if confirm::is_approval_refusal(&e) => {
            Ok(confirm::render(&state, "overview", confirmation(), Some(confirm::approval_message(&e))))
        }
        Err(e) => Ok(see_other(&page, Err(sentence(&e.to_string())))),
    }
}

/// `POST /plugin/job-types/{t}/jobs`: one job by hand (`summary`, `dedupe_key`,
/// `priority`, `not_before`, and `parameters` as a JSON object in proto JSON form). On
/// success the browser goes to the new job; otherwise the page comes back with the
/// form's input and what is wrong.
pub async fn enqueue(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(t): Path<String>,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Result<Response, PageError> {
    let pairs = posted(form)?;
    csrf::check(&headers, &pairs)?;
    if !known(&state, &t) {
        return Err(unknown(&t));
    }
    let field = |k: &str| Posted(&pairs).first(k).map(|v| v.trim().to_string()).unwrap_or_default();
    let kept = EnqueueForm {
        summary: field("summary"),
        dedupe_key: field("dedupe_key"),
        priorities: priority_choices(&field("priority")),
        not_before: field("not_before"),
        parameters: Posted(&pairs).first("parameters").unwrap_or_default().to_string(),
        error: String::new(),
        duplicate_of: String::new(),
    };
    let (status, error, duplicate_of) = match new_job(&kept, &field("priority")) {
        Err(message) => (StatusCode::UNPROCESSABLE_ENTITY, message, String::new()),
        Ok(proposal) => match state
            .execute(&caller, Command::EnqueueJob { job_type: t.clone(), proposal, cluster_context: None })
            .await
        {
            Ok(Outcome::Job(view)) => {
                let message = format!("Job {} created: it waits as pending until a worker takes it.", view.job_id);
                return Ok(see_other(&format!("/plugin/jobs/{}", view.job_id), Ok(message)));
            }
            Ok(_) => (StatusCode::INTERNAL_SERVER_ERROR, "The admin gave no job.".to_string(), String::new()),
            Err(Refusal::Duplicate { job_id }) => (
                StatusCode::CONFLICT,
                format!("An active job of this type already has the dedupe key “{}”:", kept.dedupe_key),
                job_id,
            ),
            Err(e @ Refusal::Forbidden { .. }) => (StatusCode::FORBIDDEN, sentence(&e.to_string()), String::new()),
            Err(e) => (StatusCode::UNPROCESSABLE_ENTITY, sentence(&e.to_string()), String::new()),
        },
    };
    again(&state, &t, status, "No job was created: see the form below.".into(), Tab::Status, |page| {
        page.enqueue = EnqueueForm { error, duplicate_of, ..kept };
    })
    .await
}

/// The job the enqueue form describes, as `POST /api/plugin/job-types/{t}/jobs` reads it.
fn new_job(form: &EnqueueForm, priority: &str) -> Result<proto::pb::JobProposal, String> {
    let text = form.parameters.trim();
    let parameters = if text.is_empty() {
        serde_json::Value::Object(Default::default())
    } else {
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(v @ serde_json::Value::Object(_)) => v,
            Ok(_) => return Err(PARAMETERS_SHAPE.into()),
            Err(e) => return Err(format!("The parameters are not JSON ({e}). {PARAMETERS_SHAPE}")),
        }
    };
    let mut body = serde_json::Map::new();
    body.insert("parameters".into(), parameters);
    for (key, value) in [("summary", &form.summary), ("dedupe_key", &form.dedupe_key)] {
        if !value.is_empty() {
            body.insert(key.into(), value.clone().into());
        }
    }
    if !priority.is_empty() {
        body.insert("priority".into(), priority.into());
    }
    if !form.not_before.is_empty() {
        body.insert("not_before".into(), typed_time(&form.not_before).into());
    }
    parse_new_job(serde_json::Value::Object(body)).map_err(|e| match e {
        ApiError::BadRequest(m) | ApiError::Unprocessable(m) => sentence(&m),
        other => sentence(&format!("{other:?}")),
    })
}

const PARAMETERS_SHAPE: &str =
    "Give the parameters as a JSON object of proto JSON values, such as {\"path\": {\"string_value\": \"/data\"}}.";

#[cfg(test)]
mod tests {
    use super::*;

    fn form(parameters: &str, not_before: &str) -> EnqueueForm {
        EnqueueForm {
            summary: "copy /data".into(),
            dedupe_key: "k1".into(),
            parameters: parameters.into(),
            not_before: not_before.into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_enqueue_form_becomes_the_apis_job_and_says_what_is_wrong() {
        let p = new_job(&form(r#"{"path": {"string_value": "/data"}}"#, "2026-01-02 03:04:05"), "high").unwrap();
        assert_eq!((p.summary.as_str(), p.dedupe_key.as_str()), ("copy /data", "k1"));
        assert_eq!(p.priority, proto::pb::JobPriority::High as i32);
        assert_eq!(p.not_before.unwrap().seconds, 1_767_323_045);
        assert!(p.parameters.contains_key("path"));
        let p = new_job(&form("", ""), "").unwrap();
        assert!(p.parameters.is_empty() && p.not_before.is_none());
        assert!(new_job(&form("[1]", ""), "").unwrap_err().starts_with("Give the parameters as a JSON object"));
        assert!(new_job(&form("{nope", ""), "").unwrap_err().starts_with("The parameters are not JSON"));
        assert!(new_job(&form(r#"{"path": 3}"#, ""), "").unwrap_err().starts_with("The job is not valid"));
        assert!(new_job(&form("{}", ""), "urgent").unwrap_err().contains("urgent"));
        assert!(new_job(&form("{}", "tomorrow"), "").unwrap_err().starts_with("Not_before"));
    }
}
