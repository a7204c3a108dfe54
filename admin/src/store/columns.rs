//! How a job's fields that are not plain columns are encoded in its row, the same for
//! every backend: parameters and labels as a `JobSpec`, result values as a `JobResult`,
//! the workers it failed on one per line, the stop request as (outcome, reason), and the
//! cluster context as its protobuf (empty: none).

use std::sync::Arc;

use prost::Message;
use proto::pb::{self, JobState};

use crate::job::{Job, JobSpecData, StopRequest};

/// The `payload` column: the spec's parameters and labels.
pub(super) fn spec_payload(spec: &JobSpecData) -> Vec<u8> {
    pb::JobSpec { parameters: spec.parameters.clone(), labels: spec.labels.clone(), ..Default::default() }
        .encode_to_vec()
}

/// The `result` column: the result's output values (empty when there are none).
pub(super) fn result_bytes(job: &Job) -> Vec<u8> {
    if job.result_values.is_empty() {
        return Vec::new();
    }
    pb::JobResult { output_values: job.result_values.clone(), summary: String::new() }.encode_to_vec()
}

/// The `failed_on` column: workers a job failed on, one per line.
pub(super) fn encode_failed_on(list: &[String]) -> String {
    list.join("\n")
}

pub(super) fn decode_failed_on(text: &str) -> Vec<String> {
    text.split('\n').filter(|s| !s.is_empty()).map(String::from).collect()
}

/// The `stop_outcome` and `stop_reason` columns (0 and "": no stop requested).
pub(super) fn stop_columns(job: &Job) -> (i32, &str) {
    job.stop.as_ref().map_or((0, ""), |st| (st.outcome as i32, st.reason.as_str()))
}

pub(super) fn stop_request(outcome: i32, reason: String) -> Option<StopRequest> {
    (outcome != 0).then(|| StopRequest {
        reason,
        outcome: JobState::try_from(outcome).unwrap_or(JobState::Canceled),
        deadline: 0,
    })
}

/// The `cluster_context` column (empty: none).
pub(super) fn context_bytes(spec: &JobSpecData) -> Vec<u8> {
    spec.cluster_context.as_ref().map(|c| c.encode_to_vec()).unwrap_or_default()
}

pub(super) fn decode_context(bytes: &[u8]) -> Option<Arc<pb::ClusterContext>> {
    (!bytes.is_empty()).then(|| Arc::new(pb::ClusterContext::decode(bytes).unwrap_or_default()))
}

/// An activity's `source` column as the view's static name.
pub(super) fn activity_source(s: &str) -> &'static str {
    match s {
        "admin" => "admin",
        "detector" => "detector",
        "executor" => "executor",
        _ => "unspecified",
    }
}
