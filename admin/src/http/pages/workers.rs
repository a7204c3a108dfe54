//! The workers page, and draining: a draining worker keeps its running jobs but gets no
//! new ones, until it is undrained.

use askama::Template;
use askama_web::WebTemplate;
use axum::{
    Extension, Form,
    extract::{Path, Query, State, rejection::FormRejection},
    http::HeaderMap,
    response::{IntoResponse, Response},
};

use super::{
    Chrome, Flash, PageError, Time, back_or, confirm, csrf, forms::Posted, holds::HoldView, jobs::posted,
    percent_encode, see_other,
};
use crate::{
    commands::{Command, Refusal},
    holds::{HoldKind, Holds},
    http::{AppState, auth::Caller},
    registry::WorkerView,
    worker_history::{Departure, SlotUse},
};

pub struct WorkerRow {
    pub worker_id: String,
    pub instance: String,
    /// The address its hello gave, else the TCP peer its stream came from.
    pub address: String,
    /// Whether `address` is the TCP peer (the worker gave none).
    pub address_is_peer: bool,
    pub version: String,
    pub protocol: String,
    pub job_types: Vec<String>,
    pub capabilities: Vec<CapabilityRow>,
    pub execution_used: i32,
    pub execution_total: i32,
    pub detection_used: i32,
    pub detection_total: i32,
    pub running_work: usize,
    pub connected: Time,
    pub last_heartbeat: Time,
    /// How liveness judges the worker: the interval it keeps and the silence that loses it.
    pub liveness: String,
    pub draining: bool,
    /// Who drained the worker and when (the persisted drain hold), when draining.
    pub drain: Option<HoldView>,
    pub metadata: Vec<(String, String)>,
    /// Its slot use over the last hour, in words and as a figure.
    pub slot_use: SlotUseView,
}

/// A worker's execution slot use over the last hour: a line of numbers and a small bar
/// chart (one bar per minute, its height the minute's peak against the slots offered).
pub struct SlotUseView {
    /// "peak 3 of 4 · average 1.5", or empty before the first heartbeat.
    pub text: String,
    pub bars: Vec<Bar>,
}

/// One minute's bar of a [`SlotUseView`], in the figure's units (120 x 24).
pub struct Bar {
    pub x: i64,
    pub y: i64,
    pub height: i64,
}

/// The figure's height in its units.
const FIGURE_HEIGHT: i64 = 24;

impl SlotUseView {
    pub fn of(u: &SlotUse) -> SlotUseView {
        if u.samples == 0 {
            return SlotUseView { text: String::new(), bars: Vec::new() };
        }
        let average = if (u.average_used - u.average_used.round()).abs() < 0.05 {
            format!("{}", u.average_used.round())
        } else {
            format!("{:.1}", u.average_used)
        };
        let bars = u
            .per_minute
            .iter()
            .enumerate()
            .filter_map(|(i, peak)| {
                let peak = i64::from((*peak)?);
                let total = i64::from(u.total.max(1));
                // An idle minute still gets a sliver: it had heartbeats, unlike a gap.
                let height = (peak.min(total) * FIGURE_HEIGHT / total).max(1);
                Some(Bar { x: i as i64 * 2, y: FIGURE_HEIGHT - height, height })
            })
            .collect();
        SlotUseView { text: format!("peak {} of {} · average {average}", u.peak_used, u.total), bars }
    }
}

/// A worker that left during the last day.
pub struct DepartedRow {
    pub worker_id: String,
    pub address: String,
    pub peer_address: String,
    pub job_types: Vec<String>,
    pub connected: Time,
    pub last_seen: Time,
    pub left: Time,
    /// A code (`lost`, `replaced`, ...) and its words.
    pub because: &'static str,
    pub because_label: &'static str,
    /// The admin's own words.
    pub reason: String,
}

impl DepartedRow {
    fn from_departure(d: &Departure) -> DepartedRow {
        DepartedRow {
            worker_id: d.worker_id.clone(),
            address: d.address.clone(),
            peer_address: d.peer_address.clone(),
            job_types: d.job_types.clone(),
            connected: Time::at(d.connected_at),
            last_seen: Time::at(d.last_seen),
            left: Time::at(d.left_at),
            because: d.because.as_str(),
            because_label: d.because.label(),
            reason: d.reason.clone(),
        }
    }
}

pub struct CapabilityRow {
    pub job_type: String,
    pub display_name: String,
    pub roles: String,
    pub slots: String,
    pub weight: i32,
}

impl WorkerRow {
    pub fn from_view(w: &WorkerView) -> WorkerRow {
        let mut metadata: Vec<(String, String)> = w.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        metadata.sort();
        WorkerRow {
            worker_id: w.worker_id.clone(),
            instance: w.worker_instance_id.clone(),
            address: if w.address.is_empty() { w.peer_address.clone() } else { w.address.clone() },
            address_is_peer: w.address.is_empty() && !w.peer_address.is_empty(),
            version: w.worker_version.clone(),
            protocol: w.protocol_version.clone(),
            job_types: w.job_types.clone(),
            capabilities: w
                .capabilities
                .iter()
                .map(|c| CapabilityRow {
                    job_type: c.job_type.clone(),
                    display_name: c.display_name.clone(),
                    roles: match (c.can_detect, c.can_execute) {
                        (true, true) => "detect, execute",
                        (true, false) => "detect",
                        (false, true) => "execute",
                        (false, false) => "none",
                    }
                    .into(),
                    slots: format!(
                        "{} detection, {} execution",
                        c.max_detection_concurrency.max(1),
                        c.max_execution_concurrency.max(1)
                    ),
                    weight: c.weight,
                })
                .collect(),
            execution_used: w.execution_slots_used,
            // Until the first heartbeat says otherwise, the hello's capabilities tell.
            execution_total: if w.execution_slots_total > 0 {
                w.execution_slots_total
            } else {
                w.capabilities.iter().filter(|c| c.can_execute).map(|c| c.max_execution_concurrency.max(1)).sum()
            },
            detection_used: w.detection_slots_used,
            detection_total: w.detection_slots_total,
            running_work: w.running_work,
            connected: Time::at(w.connected_at),
            last_heartbeat: Time::at(w.last_heartbeat),
            liveness: liveness_line(w),
            draining: w.draining,
            drain: None,
            metadata,
            slot_use: SlotUseView::of(&w.slot_use),
        }
    }

    /// Adds who drained each draining worker and when.
    pub fn add_drains(rows: &mut [WorkerRow], holds: &Holds) {
        for row in rows.iter_mut().filter(|r| r.draining) {
            row.drain = HoldView::of(holds.get(HoldKind::Drain, &row.worker_id));
        }
    }
}

/// "beats every 15.3 s · lost after 45.9 s of silence", from the same rule liveness applies.
fn liveness_line(w: &WorkerView) -> String {
    let lost = format!("lost after {} of silence", seconds(w.lost_after_silence_ms));
    match w.heartbeat_interval_observed_ms {
        Some(ms) => format!("beats every {} · {lost}", seconds(ms)),
        None => format!("no heartbeat yet · {lost}"),
    }
}

/// Milliseconds as seconds, with a tenth when it is not a whole second.
fn seconds(ms: i64) -> String {
    if ms % 1000 == 0 { format!("{} s", ms / 1000) } else { format!("{:.1} s", ms as f64 / 1000.0) }
}

#[derive(Template, WebTemplate)]
#[template(path = "workers.html")]
pub struct WorkersPage {
    pub page: Chrome,
    pub workers: Vec<WorkerRow>,
    /// Workers that left during the last day, newest first.
    pub departed: Vec<DepartedRow>,
}

pub async fn page(State(state): State<AppState>, Query(flash): Query<Flash>) -> Response {
    let page = Chrome::new(&state, "Workers", "workers", &flash);
    let mut workers: Vec<WorkerRow> = state.registry.views().iter().map(WorkerRow::from_view).collect();
    WorkerRow::add_drains(&mut workers, &state.holds);
    let departed = state.registry.departures().iter().map(DepartedRow::from_departure).collect();
    WorkersPage { page, workers, departed }.into_response()
}

/// `POST /plugin/workers/{id}/drain` with `draining=true|false`.
pub async fn drain(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Result<Response, PageError> {
    let pairs = posted(form)?;
    csrf::check(&headers, &pairs)?;
    let field = |k: &str| Posted(&pairs).first(k);
    let back = back_or(field("back"), "/plugin/workers");
    let draining = field("draining") != Some("false");
    let command = Command::SetDraining { worker_id: id.clone(), draining };
    // Draining takes a worker out of service: the first post only asks.
    if draining && !confirm::confirmed(&pairs) {
        let c = confirm::Confirmation {
            heading: format!("Drain worker {id}?"),
            what: vec![
                format!("Worker “{id}” finishes the jobs it is running and gets no new ones until it is undrained."),
                "Job types it alone executes wait as pending meanwhile.".into(),
            ],
            action: format!("/plugin/workers/{}/drain", percent_encode(&id)),
            hidden: confirm::carried(&pairs),
            confirm_label: "Drain the worker".into(),
            danger: true,
            cancel: back.clone(),
            cancel_label: "Keep it working".into(),
            needs_approval: command.needs_approval() && confirm::approval_configured(&state),
            replay: None,
            can_confirm: true,
        };
        return Ok(confirm::render(&state, "workers", c, None));
    }
    if let Err(Refusal::NotConnected(_)) = state.execute(&confirm::approved_caller(&caller, &pairs), command).await {
        return Ok(see_other(&back, Err(format!("Worker “{id}” is not connected, so it cannot be drained."))));
    }
    let message = if draining {
        format!("Worker “{id}” is draining: it finishes its running jobs and gets no new ones.")
    } else {
        format!("Worker “{id}” takes new jobs again.")
    };
    Ok(see_other(&back, Ok(message)))
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;
    use crate::registry::{Registry, WorkerSession};

    #[test]
    fn the_liveness_line_shows_the_kept_interval_and_the_silence_that_loses_the_worker() {
        let registry = Registry::new(Duration::from_secs(5));
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        let hello = proto::pb::WorkerHello { worker_id: "w".into(), ..Default::default() };
        let session = Arc::new(WorkerSession::new(1, hello, tx, 0));
        assert_eq!(liveness_line(&registry.view(&session)), "no heartbeat yet · lost after 60 s of silence");
        session.beat(15_300);
        assert_eq!(liveness_line(&registry.view(&session)), "beats every 15.3 s · lost after 45.9 s of silence");
        session.beat(20_300);
        session.beat(25_300);
        let view = registry.view(&session);
        assert_eq!(view.heartbeat_interval_observed_ms, Some(15_300), "the longest recent gap");
        assert_eq!(view.lost_after_silence_ms, 45_900);
    }

    #[test]
    fn slot_use_reads_as_peak_and_average_and_draws_a_bar_per_minute_with_heartbeats() {
        let mut per_minute = vec![None; 60];
        per_minute[58] = Some(0);
        per_minute[59] = Some(2);
        let u = SlotUse { peak_used: 2, average_used: 1.5, total: 4, samples: 4, per_minute };
        let v = SlotUseView::of(&u);
        assert_eq!(v.text, "peak 2 of 4 · average 1.5");
        let bars: Vec<(i64, i64, i64)> = v.bars.iter().map(|b| (b.x, b.y, b.height)).collect();
        assert_eq!(bars, vec![(116, 23, 1), (118, 12, 12)], "an idle minute is a sliver, a gap is nothing");
        assert!(SlotUseView::of(&SlotUse::default()).text.is_empty());
    }
}
