//! The admin's typed views as `plughost.admin.v1` messages: the same values the JSON API
//! shows, with enums where it has state and priority names and Timestamps where it has
//! Unix milliseconds (unset for 0). Nothing here reads state; the service reads it.

use std::collections::HashMap;

use proto::{admin_pb as api, pb};
use serde_json::Value;

use crate::{
    audit::AuditEvent,
    commands::ReplayReport,
    events::{Event, EventKind},
    holds::{Hold, HoldKind},
    http::{api::JobTypeSummary, shapes::lane_of},
    job::{ActivityView, AttemptView, Job, JobView, RunView, ms_to_timestamp, parse_state},
    registry::WorkerView,
};

/// Unix milliseconds as a Timestamp; unset for 0 (none).
pub fn time(ms: i64) -> Option<pb::Timestamp> {
    (ms > 0).then(|| ms_to_timestamp(ms))
}

fn priority(name: &str) -> pb::JobPriority {
    match name {
        "low" => pb::JobPriority::Low,
        "normal" => pb::JobPriority::Normal,
        "high" => pb::JobPriority::High,
        "critical" => pb::JobPriority::Critical,
        _ => pb::JobPriority::Unspecified,
    }
}

fn source(name: &str) -> pb::ActivitySource {
    match name {
        "admin" => pb::ActivitySource::Admin,
        "detector" => pb::ActivitySource::Detector,
        "executor" => pb::ActivitySource::Executor,
        _ => pb::ActivitySource::Unspecified,
    }
}

pub fn job(v: &JobView) -> api::Job {
    api::Job {
        job_id: v.job_id.clone(),
        job_type: v.job_type.clone(),
        dedupe_key: v.dedupe_key.clone(),
        state: parse_state(v.state).unwrap_or(pb::JobState::Unspecified) as i32,
        priority: priority(v.priority) as i32,
        summary: v.summary.clone(),
        detail: v.detail.clone(),
        worker_id: v.worker_id.clone(),
        request_id: v.request_id.clone(),
        progress_percent: v.progress_percent,
        stage: v.stage.clone(),
        message: v.message.clone(),
        error_message: v.error_message.clone(),
        result_summary: v.result_summary.clone(),
        attempt: v.attempt,
        dead_letter: v.dead_letter,
        created_at: time(v.created_at),
        updated_at: time(v.updated_at),
        not_before: time(v.not_before),
        expires_at: time(v.expires_at),
        completed_at: time(v.completed_at),
        labels: v.labels.clone(),
        replay_of: v.replay_of.clone().unwrap_or_default(),
        lane: lane_of(&v.job_type).to_string(),
        parameters: HashMap::new(),
        result_output_values: HashMap::new(),
    }
}

/// A job with its parameters and result values (as `GET jobs/{id}` shows them).
pub fn full_job(j: &Job) -> api::Job {
    api::Job {
        parameters: j.spec.parameters.to_map(),
        result_output_values: j.result_values.to_map(),
        ..job(&j.view())
    }
}

pub fn attempt(a: &AttemptView) -> api::Attempt {
    api::Attempt {
        attempt: a.attempt,
        worker_id: a.worker_id.clone(),
        request_id: a.request_id.clone(),
        started_at: time(a.started_at),
        ended_at: time(a.ended_at),
        outcome: a.outcome.clone(),
        error_message: a.error_message.clone(),
    }
}

pub fn activity(a: &ActivityView) -> api::Activity {
    api::Activity {
        id: a.id,
        created_at: time(a.created_at),
        job_type: a.job_type.clone(),
        job_id: a.job_id.clone(),
        source: source(a.source) as i32,
        stage: a.stage.clone(),
        message: a.message.clone(),
    }
}

pub fn run_record(r: &RunView) -> api::RunRecord {
    api::RunRecord {
        id: r.id,
        job_type: r.job_type.clone(),
        kind: r.kind.clone(),
        job_id: r.job_id.clone(),
        worker_id: r.worker_id.clone(),
        started_at: time(r.started_at),
        ended_at: time(r.ended_at),
        success: r.success,
        message: r.message.clone(),
        proposals: r.proposals,
        jobs_created: r.jobs_created,
    }
}

pub fn worker(w: &WorkerView) -> api::Worker {
    api::Worker {
        worker_id: w.worker_id.clone(),
        worker_instance_id: w.worker_instance_id.clone(),
        address: w.address.clone(),
        worker_version: w.worker_version.clone(),
        protocol_version: w.protocol_version.clone(),
        capabilities: w
            .capabilities
            .iter()
            .map(|c| pb::JobTypeCapability {
                job_type: c.job_type.clone(),
                can_detect: c.can_detect,
                can_execute: c.can_execute,
                max_detection_concurrency: c.max_detection_concurrency,
                max_execution_concurrency: c.max_execution_concurrency,
                display_name: c.display_name.clone(),
                description: String::new(),
                weight: c.weight,
            })
            .collect(),
        connected_at: time(w.connected_at),
        last_heartbeat: time(w.last_heartbeat),
        heartbeat_interval_observed_ms: w.heartbeat_interval_observed_ms.unwrap_or(0),
        lost_after_silence_ms: w.lost_after_silence_ms,
        draining: w.draining,
        detection_slots_used: w.detection_slots_used,
        detection_slots_total: w.detection_slots_total,
        execution_slots_used: w.execution_slots_used,
        execution_slots_total: w.execution_slots_total,
        running_work: w.running_work as i64,
        metadata: w.metadata.clone(),
    }
}

pub fn job_type(s: &JobTypeSummary) -> api::JobType {
    api::JobType {
        job_type: s.job_type.clone(),
        display_name: s.display_name.clone(),
        weight: s.weight,
        lane: s.lane.to_string(),
        description: s.description.clone(),
        descriptor_version: s.descriptor_version,
        has_descriptor: s.has_descriptor,
        enabled: s.enabled,
        detectors: s.detectors as i64,
        executors: s.executors as i64,
        pending: s.pending,
        assigned: s.assigned,
        running: s.running,
        succeeded: s.succeeded,
        failed: s.failed,
        canceled: s.canceled,
    }
}

pub fn hold(h: &Hold) -> api::Hold {
    let kind = match h.kind {
        HoldKind::Dispatch => api::HoldKind::Dispatch,
        HoldKind::Schedules => api::HoldKind::Schedules,
        HoldKind::Detection => api::HoldKind::Detection,
        HoldKind::JobDispatch => api::HoldKind::JobDispatch,
        HoldKind::Drain => api::HoldKind::Drain,
    };
    api::Hold { kind: kind as i32, target: h.target.clone(), set_by: h.set_by.clone(), set_at: time(h.set_at) }
}

pub fn replay_report(r: &ReplayReport) -> api::ReplayJobsResponse {
    api::ReplayJobsResponse {
        dry_run: r.dry_run,
        matched: r.matched as u64,
        eligible: r.eligible as u64,
        over_limit: r.over_limit as u64,
        replayed: r
            .replayed
            .iter()
            .map(|j| api::ReplayedJob { job_id: j.job_id.clone(), replay_of: j.replay_of.clone() })
            .collect(),
        ineligible: r
            .ineligible
            .iter()
            .map(|j| api::IneligibleJob { job_id: j.job_id.clone(), reason: j.reason.clone() })
            .collect(),
        ineligible_count: r.ineligible_count as u64,
        scan_truncated: r.scan_truncated,
    }
}

pub fn audit_event(e: &AuditEvent) -> api::AuditEvent {
    api::AuditEvent {
        id: e.id,
        at: time(e.at),
        actor: e.actor.clone(),
        actor_kind: e.actor_kind.clone(),
        action: e.action.clone(),
        target: e.target.clone(),
        params: match proto_value(&e.params).kind {
            Some(prost_types::value::Kind::StructValue(s)) => Some(s),
            _ => None,
        },
        outcome: e.outcome.clone(),
        reason: e.reason.clone(),
        request_id: e.request_id.clone(),
    }
}

/// A JSON value as a `google.protobuf.Value` (numbers become doubles, as in proto JSON).
fn proto_value(v: &Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        Value::Null => Kind::NullValue(prost_types::NullValue::NullValue as i32),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(list) => {
            Kind::ListValue(prost_types::ListValue { values: list.iter().map(proto_value).collect() })
        }
        Value::Object(map) => Kind::StructValue(prost_types::Struct {
            fields: map.iter().map(|(k, v)| (k.clone(), proto_value(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

/// An event of the bus as the stream sends it.
pub fn event(e: &Event) -> api::Event {
    use api::event::Kind;
    let kind = match &e.kind {
        EventKind::Job { job } => Kind::Job(self::job(&job.0.view())),
        EventKind::Activity { activity } => Kind::Activity(self::activity(activity)),
        EventKind::WorkerJoined { worker_id, address, job_types } => Kind::WorkerJoined(api::WorkerJoined {
            worker_id: worker_id.clone(),
            address: address.clone(),
            job_types: job_types.clone(),
        }),
        EventKind::WorkerLeft { worker_id, reason } => {
            Kind::WorkerLeft(api::WorkerLeft { worker_id: worker_id.clone(), reason: reason.clone() })
        }
        EventKind::WorkerDrain { worker_id, draining } => {
            Kind::WorkerDrain(api::WorkerDrain { worker_id: worker_id.clone(), draining: *draining })
        }
        EventKind::Heartbeat { workers, execution_slots_used, execution_slots_total } => {
            Kind::Heartbeat(api::SlotSummary {
                workers: *workers as i64,
                execution_slots_used: *execution_slots_used,
                execution_slots_total: *execution_slots_total,
            })
        }
        EventKind::DetectionStarted { job_type, run_id, worker_id } => Kind::DetectionStarted(api::DetectionStarted {
            job_type: job_type.clone(),
            run_id: *run_id,
            worker_id: worker_id.clone(),
        }),
        EventKind::DetectionFinished { run } => Kind::DetectionFinished(run_record(run)),
        EventKind::ConfigSaved { job_type, updated_by } => {
            Kind::ConfigSaved(api::ConfigSaved { job_type: job_type.clone(), updated_by: updated_by.clone() })
        }
        EventKind::DescriptorSaved { job_type, descriptor_version } => Kind::DescriptorSaved(api::DescriptorSaved {
            job_type: job_type.clone(),
            descriptor_version: *descriptor_version,
        }),
    };
    api::Event { id: e.id, at: time(e.at), kind: Some(kind) }
}

/// "Reload your view": the events after the client's id cannot be replayed.
pub fn reset(reason: String) -> api::Event {
    api::Event { id: 0, at: time(crate::job::now_ms()), kind: Some(api::event::Kind::Reset(api::Reset { reason })) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_times_stay_unset_and_names_become_enums() {
        assert_eq!(time(0), None);
        assert_eq!(time(1_500).map(|t| (t.seconds, t.nanos)), Some((1, 500_000_000)));
        assert_eq!(priority("critical"), pb::JobPriority::Critical);
        assert_eq!(source("detector"), pb::ActivitySource::Detector);
    }

    #[test]
    fn audit_params_become_a_struct() {
        let params = serde_json::json!({ "reason": "r", "limit": 3, "ids": ["j1"], "dry_run": true, "x": null });
        let Some(prost_types::value::Kind::StructValue(s)) = proto_value(&params).kind else { panic!("a struct") };
        assert_eq!(s.fields["reason"].kind, Some(prost_types::value::Kind::StringValue("r".into())));
        assert_eq!(s.fields["limit"].kind, Some(prost_types::value::Kind::NumberValue(3.0)));
        assert_eq!(s.fields["dry_run"].kind, Some(prost_types::value::Kind::BoolValue(true)));
        assert!(matches!(s.fields["ids"].kind, Some(prost_types::value::Kind::ListValue(_))));
    }
}
