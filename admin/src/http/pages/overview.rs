//! The overview at `/plugin`: workers, job types with their scheduling and job counts,
//! the dead-letter count, every active hold with the controls of the global pauses, all
//! job types' trends (`?window=1h|24h`, `charts.rs`), and the latest activities (the feed:
//! without jobs' output lines), all kept live over SSE by the page script.

use askama::Template;
use askama_web::WebTemplate;
use axum::{
    extract::{Query, State},
    response::{IntoResponse, Response},
};
use proto::pb::JobState;
use serde::Deserialize;

use super::{
    Chrome, Flash, PageError, Time,
    activities::ActivityRow,
    charts::TrendsView,
    holds::{HoldRow, HoldView},
    human_duration,
    workers::WorkerRow,
};
use crate::{holds::HoldKind, http::AppState, job::RunView, scheduler::SchedulerStateView};

/// One detection run or execution, as the run history and the overview show it.
pub struct RunRow {
    pub kind: String,
    /// `kind` as the pages say it.
    pub kind_label: String,
    pub success: bool,
    pub ended: Time,
    pub took: String,
    pub worker_id: String,
    pub job_id: String,
    pub message: String,
    pub proposals: i64,
    pub jobs_created: i64,
}

impl RunRow {
    pub fn from_view(r: &RunView) -> RunRow {
        RunRow {
            kind: r.kind.clone(),
            kind_label: super::run_kind_label(&r.kind),
            success: r.success,
            ended: Time::at(r.ended_at),
            took: if r.ended_at > 0 { human_duration(r.ended_at - r.started_at) } else { "running".into() },
            worker_id: r.worker_id.clone(),
            job_id: r.job_id.clone(),
            message: r.message.clone(),
            proposals: r.proposals,
            jobs_created: r.jobs_created,
        }
    }
}

/// Job counts of one job type, by state.
#[derive(Default)]
pub struct Counts {
    pub pending: i64,
    pub assigned: i64,
    pub running: i64,
    pub succeeded: i64,
    pub failed: i64,
}

impl Counts {
    pub fn of(state: &AppState, job_type: &str) -> Counts {
        let t = &state.dispatcher;
        Counts {
            pending: t.count_of(job_type, JobState::Pending),
            assigned: t.count_of(job_type, JobState::Assigned),
            running: t.count_of(job_type, JobState::Running),
            succeeded: t.count_of(job_type, JobState::Succeeded),
            failed: t.count_of(job_type, JobState::Failed),
        }
    }
}

pub struct JobTypeRow {
    pub job_type: String,
    pub display_name: String,
    pub has_descriptor: bool,
    pub enabled: bool,
    /// Off until an operator enables it: its worker declared no runtime defaults.
    pub awaits_operator: bool,
    pub detector: String,
    pub detectors: usize,
    pub executors: usize,
    pub detection_running: bool,
    pub next_detection: Time,
    pub counts: Counts,
    pub last_run: Option<RunRow>,
    pub detection_held: bool,
    pub dispatch_held: bool,
    /// No connected worker offers it.
    pub no_worker: bool,
    /// Labels of the required settings still empty: the job type cannot work until they
    /// are set.
    pub needs_configuration: Vec<String>,
}

impl JobTypeRow {
    pub fn build(state: &AppState, s: &SchedulerStateView) -> JobTypeRow {
        let descriptor = state.configs.descriptor(&s.job_type);
        let display_name = descriptor
            .as_ref()
            .map(|d| d.display_name.clone())
            .filter(|n| !n.is_empty())
            .or_else(|| state.registry.job_types().get(&s.job_type).map(|c| c.display_name.clone()))
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| s.job_type.clone());
        JobTypeRow {
            job_type: s.job_type.clone(),
            display_name,
            has_descriptor: descriptor.is_some(),
            enabled: s.enabled,
            awaits_operator: state.configs.awaits_operator(&s.job_type),
            detector: s.detector_worker_id.clone(),
            detectors: s.detectors,
            executors: s.executors,
            detection_running: s.detection_running,
            next_detection: Time::at(if s.enabled && s.detectors > 0 { s.next_detection_at } else { 0 }),
            counts: Counts::of(state, &s.job_type),
            last_run: s.last_run.as_ref().map(RunRow::from_view),
            detection_held: state.holds.is_held(HoldKind::Detection, &s.job_type),
            dispatch_held: state.holds.is_held(HoldKind::JobDispatch, &s.job_type),
            no_worker: s.detectors == 0 && s.executors == 0,
            needs_configuration: descriptor
                .as_ref()
                .zip(state.configs.config(&s.job_type))
                .map(|(d, c)| crate::validator::missing_required(d, &c))
                .unwrap_or_default(),
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "overview.html")]
pub struct OverviewPage {
    pub page: Chrome,
    pub workers: Vec<WorkerRow>,
    pub job_types: Vec<JobTypeRow>,
    pub activities: Vec<ActivityRow>,
    pub active_jobs: usize,
    pub failed_jobs: i64,
    pub slots_used: i64,
    pub slots_total: i64,
    /// Jobs that failed every attempt, of every job type.
    pub dead_letters: i64,
    /// Every active hold, global ones first.
    pub holds: Vec<HoldRow>,
    /// The global pause of dispatch, if set.
    pub dispatch_hold: Option<HoldView>,
    /// The global pause of schedules, if set.
    pub schedules_hold: Option<HoldView>,
    /// Some job type needs configuration before it can work (the "Start here" list).
    pub configure_first: bool,
    /// All job types' trends over the chosen window.
    pub trends: TrendsView,
}

/// `?window=1h|24h` of the pages with trends; anything else shows the last hour.
#[derive(Debug, Default, Deserialize)]
pub struct WindowQuery {
    pub window: Option<String>,
}

impl WindowQuery {
    pub fn window(&self) -> crate::trends::Window {
        self.window.as_deref().and_then(crate::trends::Window::parse).unwrap_or(crate::trends::Window::Hour)
    }
}

pub async fn page(
    State(state): State<AppState>,
    Query(flash): Query<Flash>,
    Query(window): Query<WindowQuery>,
) -> Result<Response, PageError> {
    let chrome = Chrome::new(&state, "Overview", "overview", &flash);
    let window = window.window();
    let series = crate::http::trends::series(&state, None, window);
    let mut workers: Vec<WorkerRow> = state.registry.views().iter().map(WorkerRow::from_view).collect();
    WorkerRow::add_drains(&mut workers, &state.holds);
    let job_types: Vec<JobTypeRow> =
        state.scheduler.scheduler_states().iter().map(|s| JobTypeRow::build(&state, s)).collect();
    state.store.settle().await;
    // The feed: the jobs' output lines are in their logs, not here.
    let activities = state.store.feed(None, None, None, 15)?;
    let active_jobs = state.dispatcher.active_len();
    let dead_letters = state.store.dead_letters()?.iter().map(|(_, n)| n).sum();
    let page = OverviewPage {
        page: chrome,
        failed_jobs: job_types.iter().map(|t| t.counts.failed).sum(),
        configure_first: job_types.iter().any(|t| !t.needs_configuration.is_empty()),
        slots_used: workers.iter().map(|w| i64::from(w.execution_used)).sum(),
        slots_total: workers.iter().map(|w| i64::from(w.execution_total)).sum(),
        workers,
        job_types,
        activities: activities.iter().map(ActivityRow::from_view).collect(),
        active_jobs,
        dead_letters,
        holds: state.holds.list().iter().map(HoldRow::from_hold).collect(),
        dispatch_hold: HoldView::of(state.holds.get(HoldKind::Dispatch, "")),
        schedules_hold: HoldView::of(state.holds.get(HoldKind::Schedules, "")),
        trends: TrendsView::build(&series, window, "/plugin", "/api/plugin/series"),
    };
    Ok(page.into_response())
}
