//! The tables a batch inserts into, with the upsert each backend writes them with; and
//! how a job's fields that are not plain columns are encoded in a row of one column per
//! field (PostgreSQL's jobs, and SQLite's before its compact row, `sqlite::rows`):
//! parameters and labels as a `JobSpec`, result values as a `JobResult`, the workers it
//! failed on one per line, the stop request as (outcome, reason), and the cluster context
//! as its protobuf (empty: none).

use std::sync::Arc;

use prost::Message;
use proto::pb::{self, JobState};

use crate::job::{ATTEMPT_SUCCEEDED, AttemptView, Job, JobSpecData, StopRequest};

/// A table a batch inserts rows into, the same in both backends: its columns in the
/// order the writes bind them, and its key.
pub(super) struct Table {
    pub name: &'static str,
    pub columns: &'static str,
    pub key: &'static str,
}

/// The jobs as PostgreSQL keeps them, a column per field, in the order its insert and row
/// mapping use (SQLite's compact row is `sqlite::rows::JOBS`).
pub(super) const JOBS: Table = Table {
    name: "jobs",
    columns: "seq, job_type, dedupe_key, priority, summary, detail, payload, created_at, not_before, \
     expires_at, detection_run, state, attempts, attempts_total, worker_id, request_id, progress, stage, message, \
     error, result_summary, result, updated_at, ready_at, assigned_at, completed_at, dead_letter, failed_on, \
     stop_outcome, stop_reason, replay_of, cluster_context",
    key: "seq",
};
pub(super) const ATTEMPTS: Table = Table {
    name: "attempts",
    columns: "job_seq, attempt, worker_id, request_id, started_at, ended_at, outcome, error",
    key: "job_seq, attempt",
};
pub(super) const ACTIVITIES: Table =
    Table { name: "activities", columns: "id, created_at, job_type, job_id, source, stage, message", key: "id" };
pub(super) const RUNS: Table = Table {
    name: "runs",
    columns: "id, job_type, kind, job_id, worker_id, started_at, ended_at, success, message, proposals, jobs_created",
    key: "id",
};
pub(super) const AUDIT: Table = Table {
    name: "audit",
    columns: "id, at, actor, actor_kind, action, target, params, outcome, reason, request_id",
    key: "id",
};
pub(super) const HOLDS: Table = Table { name: "holds", columns: "kind, target, set_by, set_at", key: "kind, target" };
pub(super) const SCHEDULES: Table =
    Table { name: "schedules", columns: "job_type, cron, time_zone, set_by, set_at, last_fired_at", key: "job_type" };

impl Table {
    /// `INSERT INTO table (columns) VALUES (<one placeholder per column>)` that, where a
    /// row with the same key is already there, updates every other column instead: the
    /// row ends as written. `placeholder` is the dialect's parameter sign (`?` for SQLite,
    /// `$` for PostgreSQL). On SQLite this is also cheaper than `INSERT OR REPLACE`, which
    /// deletes and re-inserts the row and its index entries and keeps a statement journal
    /// in case it must (measured: a tenth of a job's insert and end together, with the
    /// jobs' four indexes).
    pub(super) fn upsert(&self, placeholder: char) -> String {
        let count = self.columns.split(',').count();
        let values: Vec<String> = (1..=count).map(|i| format!("{placeholder}{i}")).collect();
        self.upsert_from(&format!("VALUES ({})", values.join(", ")))
    }

    /// The same upsert of the rows `source` gives (`VALUES (...)`, or a `SELECT` with
    /// every column in order).
    pub(super) fn upsert_from(&self, source: &str) -> String {
        let columns: Vec<&str> = self.columns.split(',').map(str::trim).collect();
        let keys: Vec<&str> = self.key.split(',').map(str::trim).collect();
        let set: Vec<String> =
            columns.iter().filter(|c| !keys.contains(c)).map(|c| format!("{c} = excluded.{c}")).collect();
        format!(
            "INSERT INTO {} ({}) {source} ON CONFLICT ({}) DO UPDATE SET {}",
            self.name,
            columns.join(", "),
            self.key,
            set.join(", ")
        )
    }
}

/// The `payload` column: the spec's parameters and labels, encoded as a `pb::JobSpec`
/// with only those two fields (7 and 8), straight from the spec's maps rather than from a
/// copy of them: this runs on the store writer's thread for every new job.
pub(super) fn spec_payload(spec: &JobSpecData) -> Vec<u8> {
    use prost::encoding::{hash_map, message, string};
    let (parameters, labels) = (spec.parameters.as_map(), spec.labels.as_map());
    let len = parameters.map_or(0, |m| hash_map::encoded_len(string::encoded_len, message::encoded_len, 7, m))
        + labels.map_or(0, |m| hash_map::encoded_len(string::encoded_len, string::encoded_len, 8, m));
    let mut buf = Vec::with_capacity(len);
    if let Some(m) = parameters {
        hash_map::encode(string::encode, string::encoded_len, message::encode, message::encoded_len, 7, m, &mut buf);
    }
    if let Some(m) = labels {
        hash_map::encode(string::encode, string::encoded_len, string::encode, string::encoded_len, 8, m, &mut buf);
    }
    buf
}

/// The `result` column: the result's output values (empty when there are none), encoded
/// as a `pb::JobResult` with only field 1, without copying the map.
pub(super) fn result_bytes(job: &Job) -> Vec<u8> {
    use prost::encoding::{hash_map, message, string};
    let Some(values) = job.result_values.as_map() else {
        return Vec::new();
    };
    let mut buf = Vec::with_capacity(hash_map::encoded_len(string::encoded_len, message::encoded_len, 1, values));
    hash_map::encode(string::encode, string::encoded_len, message::encode, message::encoded_len, 1, values, &mut buf);
    buf
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

pub(super) fn stop_request(outcome: i32, reason: String) -> Option<Box<StopRequest>> {
    (outcome != 0).then(|| {
        Box::new(StopRequest {
            reason,
            outcome: JobState::try_from(outcome).unwrap_or(JobState::Canceled),
            deadline: 0,
        })
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

/// Whether an attempt record needs no row of its own: a succeeded attempt is the job's
/// last, and the job's row holds every field of it (attempts_total, worker, request,
/// assigned_at, completed_at), so both backends rebuild it from there. The dispatcher
/// does not even queue such a record.
pub fn implied_by_job_row(a: &AttemptView) -> bool {
    a.outcome == ATTEMPT_SUCCEEDED && a.error_message.is_empty()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::job::Pairs;

    fn value(s: &str) -> pb::ConfigValue {
        pb::ConfigValue { kind: Some(pb::config_value::Kind::StringValue(s.into())) }
    }

    #[test]
    fn the_payload_and_result_columns_are_the_messages_encodings() {
        let mut job = crate::store::tests::job(1, JobState::Pending, 1);
        let spec = Arc::make_mut(&mut job.spec);
        spec.parameters = Pairs::new();
        spec.labels = Pairs::new();
        assert!(spec_payload(spec).is_empty());
        spec.parameters = [("a".into(), value("1")), ("b".into(), value("2"))].into();
        spec.labels = [("team".into(), "storage".into())].into();
        let decoded = pb::JobSpec::decode(spec_payload(spec).as_slice()).unwrap();
        assert_eq!(decoded.parameters, spec.parameters.to_map());
        assert_eq!(decoded.labels, spec.labels.to_map());

        job.result_values = HashMap::new().into();
        assert!(result_bytes(&job).is_empty());
        job.result_values = HashMap::from([("out".into(), value("x"))]).into();
        let decoded = pb::JobResult::decode(result_bytes(&job).as_slice()).unwrap();
        assert_eq!(decoded.output_values, job.result_values.to_map());
    }
}
