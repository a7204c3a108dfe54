//! The JSON shapes of the routes Plughost shares with SeaweedFS's admin
//! (`weed/admin/dash/plugin_api.go`): each answer is a superset of SeaweedFS's, so a
//! script written against SeaweedFS's admin reads Plughost's unchanged. SeaweedFS's field
//! names, types and values win (RFC 3339 times, omitted when unset; `job_state_*`
//! states; Go's field names where SeaweedFS serialises a struct without JSON tags);
//! Plughost's own fields are added beside them under their own names, and their times are
//! RFC 3339 too, so one answer never mixes two time formats.
//!
//! The pages and the event stream keep the typed views (`JobView`, `WorkerView`, ...);
//! only the JSON API goes through here.

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::{
    job::{ActivityView, JobView, RunView},
    observations::ObservationView,
    registry::WorkerView,
    scheduler::SchedulerStateView,
};

/// SeaweedFS's scheduler lanes, in its order. Plughost schedules every job type on its
/// own timer, so no lane waits for another; the lanes only group job types for callers.
pub const LANES: [&str; 4] = ["default", "iceberg", "lifecycle", "lance"];

/// The job types SeaweedFS assigns to a lane other than `default`; every other job type
/// is in `default`, as in SeaweedFS.
const LANE_OF: [(&str, &str); 5] = [
    ("iceberg_maintenance", "iceberg"),
    ("s3_lifecycle", "lifecycle"),
    ("lance_compact", "lance"),
    ("lance_optimize_indices", "lance"),
    ("lance_cleanup_versions", "lance"),
];

/// The job types SeaweedFS itself places in the default lane (it lists them for `lanes`).
const DEFAULT_LANE_TYPES: [&str; 5] = ["admin_script", "ec_balance", "erasure_coding", "vacuum", "volume_balance"];

/// The lane of a job type, as SeaweedFS assigns it.
pub fn lane_of(job_type: &str) -> &'static str {
    LANE_OF.iter().find(|(t, _)| *t == job_type).map(|(_, lane)| *lane).unwrap_or("default")
}

/// A `lane` query parameter: absent or empty is every lane; an unknown lane is refused.
pub fn parse_lane(lane: Option<&str>) -> Result<Option<&'static str>, String> {
    match lane.map(str::trim).filter(|l| !l.is_empty()) {
        None => Ok(None),
        Some(l) => LANES
            .iter()
            .find(|known| **known == l)
            .map(|known| Some(*known))
            .ok_or_else(|| format!("unknown lane {l:?}; the lanes are {}", LANES.join(", "))),
    }
}

/// Whether a job type is in the lane asked for (`None`: every lane).
pub fn in_lane(job_type: &str, lane: Option<&str>) -> bool {
    lane.is_none_or(|l| lane_of(job_type) == l)
}

/// SeaweedFS's job types of a lane and the known job types Plughost places in it, sorted.
pub fn lane_job_types(lane: &str, known: &[String]) -> Vec<String> {
    let mut types: Vec<String> = LANE_OF
        .iter()
        .filter(|(_, l)| *l == lane)
        .map(|(t, _)| t.to_string())
        .chain(DEFAULT_LANE_TYPES.iter().filter(|_| lane == "default").map(|t| t.to_string()))
        .chain(known.iter().filter(|t| lane_of(t) == lane).cloned())
        .collect();
    types.sort();
    types.dedup();
    types
}

/// Unix milliseconds as RFC 3339 in UTC; `None` for 0 (unset) and out-of-range values.
pub fn time(ms: i64) -> Option<String> {
    if ms <= 0 {
        return None;
    }
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// Sets `key` to the RFC 3339 form of `ms`, or removes it when unset.
fn put_time(o: &mut Map<String, Value>, key: &str, ms: i64) {
    match time(ms) {
        Some(t) => o.insert(key.to_string(), Value::String(t)),
        None => o.remove(key),
    };
}

/// A job state as SeaweedFS writes it: the proto enum name in lower case.
pub fn state(name: &str) -> String {
    format!("job_state_{name}")
}

fn object<T: Serialize>(v: &T) -> Map<String, Value> {
    match serde_json::to_value(v) {
        Ok(Value::Object(o)) => o,
        _ => Map::new(),
    }
}

/// A job as SeaweedFS's `TrackedJob` (`job_id`, `job_type`, `request_id`, `worker_id`,
/// `dedupe_key`, `summary`, `detail`, `parameters`, `labels`, `state`, `progress`,
/// `stage`, `message`, `attempt`, `created_at`, `updated_at`, `completed_at`,
/// `error_message`, `result_summary`, `result_output_values`), with Plughost's fields
/// (`priority`, `progress_percent`, `dead_letter`, `not_before`, `expires_at`,
/// `replay_of`, `lane`).
pub fn job(view: &JobView) -> Value {
    let mut o = object(view);
    o.insert("state".into(), Value::String(state(view.state)));
    o.insert("progress".into(), json!(view.progress_percent));
    o.insert("lane".into(), Value::String(lane_of(&view.job_type).into()));
    put_time(&mut o, "created_at", view.created_at);
    put_time(&mut o, "updated_at", view.updated_at);
    put_time(&mut o, "completed_at", view.completed_at);
    put_time(&mut o, "not_before", view.not_before);
    put_time(&mut o, "expires_at", view.expires_at);
    if view.replay_of.is_none() {
        o.remove("replay_of");
    }
    Value::Object(o)
}

/// A job with its parameters and result values (proto JSON of each `ConfigValue`, keyed
/// by name, as SeaweedFS serves them for one job).
pub fn job_with_values(view: &JobView, parameters: Value, result_output_values: Value) -> Value {
    let mut v = job(view);
    let o = v.as_object_mut().expect("a job is an object");
    for (key, values) in [("parameters", parameters), ("result_output_values", result_output_values)] {
        if values.as_object().is_some_and(|m| !m.is_empty()) {
            o.insert(key.into(), values);
        }
    }
    v
}

/// An activity as SeaweedFS's `JobActivity` (`job_id`, `job_type`, `source`, `message`,
/// `stage`, `occurred_at`), with Plughost's `id` (the paging cursor) and `created_at`.
pub fn activity(a: &ActivityView) -> Value {
    let mut o = object(a);
    put_time(&mut o, "occurred_at", a.created_at);
    put_time(&mut o, "created_at", a.created_at);
    Value::Object(o)
}

/// A worker as SeaweedFS's `WorkerSession`, which it serialises with Go's field names
/// (`WorkerID`, `WorkerInstance`, `Address`, `WorkerVersion`, `ProtocolVersion`,
/// `ConnectedAt`, `LastSeenAt`, `Capabilities` keyed by job type, `Heartbeat`), with
/// Plughost's snake_case view beside them.
pub fn worker(w: &WorkerView) -> Value {
    let mut o = object(w);
    let capabilities: Map<String, Value> =
        w.capabilities.iter().map(|c| (c.job_type.clone(), Value::Object(object(c)))).collect();
    let heartbeat = json!({
        "worker_id": w.worker_id,
        "detection_slots_used": w.detection_slots_used,
        "detection_slots_total": w.detection_slots_total,
        "execution_slots_used": w.execution_slots_used,
        "execution_slots_total": w.execution_slots_total,
        "metadata": w.metadata,
    });
    o.insert("WorkerID".into(), json!(w.worker_id));
    o.insert("WorkerInstance".into(), json!(w.worker_instance_id));
    o.insert("Address".into(), json!(w.address));
    o.insert("WorkerVersion".into(), json!(w.worker_version));
    o.insert("ProtocolVersion".into(), json!(w.protocol_version));
    o.insert("ConnectedAt".into(), json!(time(w.connected_at)));
    o.insert("LastSeenAt".into(), json!(time(w.last_heartbeat)));
    o.insert("Capabilities".into(), Value::Object(capabilities));
    o.insert("Heartbeat".into(), heartbeat);
    put_time(&mut o, "connected_at", w.connected_at);
    put_time(&mut o, "last_heartbeat", w.last_heartbeat);
    Value::Object(o)
}

/// A run as SeaweedFS's `JobRunRecord` (`run_id`, `job_id`, `job_type`, `worker_id`,
/// `outcome` `success` or `error`, `message`, `duration_ms`, `completed_at`), with
/// Plughost's fields (`id`, `kind`, `started_at`, `ended_at`, `success`, `proposals`,
/// `jobs_created`).
pub fn run_record(r: &RunView) -> Value {
    let mut o = object(r);
    o.insert("run_id".into(), Value::String(r.id.to_string()));
    o.insert("outcome".into(), Value::String(if r.success { "success" } else { "error" }.into()));
    if r.ended_at > 0 && r.started_at > 0 {
        o.insert("duration_ms".into(), json!((r.ended_at - r.started_at).max(0)));
    }
    put_time(&mut o, "completed_at", r.ended_at);
    put_time(&mut o, "started_at", r.started_at);
    put_time(&mut o, "ended_at", r.ended_at);
    Value::Object(o)
}

/// An observation as SeaweedFS's (`object_id`, `object_kind`, `format`, `attributes` as
/// plain values, `job_type`, `worker_id`, `observed_at`), with Plughost's `received_at`.
pub fn observation(ob: &ObservationView) -> Value {
    let mut o = object(ob);
    let attributes: Map<String, Value> =
        ob.attributes.iter().map(|(name, value)| (name.clone(), plain_value(value))).collect();
    o.insert("attributes".into(), Value::Object(attributes));
    let observed = if ob.observed_at > 0 { ob.observed_at } else { ob.received_at };
    put_time(&mut o, "observed_at", observed);
    put_time(&mut o, "received_at", ob.received_at);
    Value::Object(o)
}

/// The value inside a `ConfigValue`'s proto JSON (`{"int64_value": "16"}` is 16), as
/// SeaweedFS flattens attributes; anything else is kept as it is.
fn plain_value(v: &Value) -> Value {
    let Some((kind, inner)) = v.as_object().filter(|m| m.len() == 1).and_then(|m| m.iter().next()) else {
        return v.clone();
    };
    match (kind.as_str(), inner) {
        ("int64_value", Value::String(s)) => s.parse::<i64>().map(Value::from).unwrap_or_else(|_| inner.clone()),
        _ => inner.clone(),
    }
}

/// A job type's scheduler state as SeaweedFS's `SchedulerJobTypeState` (`job_type`,
/// `lane`, `enabled`, `detection_in_flight`, `next_detection_at`, the runtime settings,
/// `detector_available`, `detector_worker_id`, `executor_worker_count`,
/// `last_run_started_at`, `last_run_completed_at`, `last_run_status`), with Plughost's
/// view beside them.
pub fn scheduler_state(s: &SchedulerStateView, runtime: &proto::pb::AdminRuntimeConfig) -> Value {
    let mut o = object(s);
    o.insert("lane".into(), json!(lane_of(&s.job_type)));
    o.insert("detection_in_flight".into(), json!(s.detection_running));
    o.insert("detection_timeout_seconds".into(), json!(runtime.detection_timeout_seconds));
    o.insert("execution_timeout_seconds".into(), json!(runtime.execution_timeout_seconds));
    o.insert("job_type_max_runtime_seconds".into(), json!(runtime.job_type_max_runtime_seconds));
    o.insert("max_jobs_per_detection".into(), json!(runtime.max_jobs_per_detection));
    o.insert("global_execution_concurrency".into(), json!(runtime.global_execution_concurrency));
    o.insert("per_worker_execution_concurrency".into(), json!(runtime.per_worker_execution_concurrency));
    o.insert("retry_limit".into(), json!(runtime.retry_limit));
    o.insert("retry_backoff_seconds".into(), json!(runtime.retry_backoff_seconds));
    o.insert("detector_available".into(), json!(s.detectors > 0));
    o.insert("executor_worker_count".into(), json!(s.executors));
    if s.detector_worker_id.is_empty() {
        o.remove("detector_worker_id");
    }
    put_time(&mut o, "next_detection_at", s.next_detection_at);
    put_time(&mut o, "last_success_at", s.last_success_at);
    match &s.last_run {
        Some(run) => {
            put_time(&mut o, "last_run_started_at", run.started_at);
            put_time(&mut o, "last_run_completed_at", run.ended_at);
            if run.ended_at > 0 {
                o.insert("last_run_status".into(), json!(if run.success { "success" } else { "error" }));
            }
            o.insert("last_run".into(), run_record(run));
        }
        None => {
            o.remove("last_run");
        }
    }
    if s.running_mode.is_none() {
        o.remove("running_mode");
    }
    Value::Object(o)
}

/// A job type's line in SeaweedFS's `SchedulerStatus.job_types` (`job_type`, `enabled`,
/// `detection_in_flight`, `next_detection_at`, `detection_interval_minutes`,
/// `last_detected_at`, `last_detected_count`, `last_detection_error`).
pub fn scheduler_job_type_status(s: &SchedulerStateView) -> Value {
    let mut o = Map::new();
    o.insert("job_type".into(), json!(s.job_type));
    o.insert("enabled".into(), json!(s.enabled));
    o.insert("detection_in_flight".into(), json!(s.detection_running));
    put_time(&mut o, "next_detection_at", s.next_detection_at);
    o.insert("detection_interval_minutes".into(), json!(s.detection_interval_minutes));
    if let Some(run) = s.last_run.as_ref().filter(|r| r.ended_at > 0) {
        if run.success {
            put_time(&mut o, "last_detected_at", run.ended_at);
            o.insert("last_detected_count".into(), json!(run.proposals));
        } else {
            o.insert("last_detection_error".into(), json!(run.message));
        }
    }
    Value::Object(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_follow_seaweedfs_and_everything_else_is_default() {
        assert_eq!(lane_of("lance_compact"), "lance");
        assert_eq!(lane_of("s3_lifecycle"), "lifecycle");
        assert_eq!(lane_of("sqlite_vacuum"), "default");
        assert_eq!(parse_lane(Some(" iceberg ")), Ok(Some("iceberg")));
        assert_eq!(parse_lane(Some("")), Ok(None));
        assert!(parse_lane(Some("fast")).unwrap_err().contains("default, iceberg, lifecycle, lance"));
        let default = lane_job_types("default", &["sqlite_vacuum".into(), "lance_compact".into()]);
        assert!(default.contains(&"vacuum".to_string()) && default.contains(&"sqlite_vacuum".to_string()));
        assert!(!default.contains(&"lance_compact".to_string()));
    }

    #[test]
    fn times_are_rfc3339_in_utc_and_unset_is_none() {
        assert_eq!(time(1_700_000_123_456).as_deref(), Some("2023-11-14T22:15:23.456Z"));
        assert_eq!(time(0), None);
        assert_eq!(time(-5), None);
    }

    #[test]
    fn attributes_lose_their_config_value_envelope() {
        assert_eq!(plain_value(&json!({"int64_value": "16"})), json!(16));
        assert_eq!(plain_value(&json!({"string_value": "lance"})), json!("lance"));
        assert_eq!(plain_value(&json!({"bool_value": true})), json!(true));
        assert_eq!(plain_value(&json!({"a": 1, "b": 2})), json!({"a": 1, "b": 2}));
    }
}
