//! A job's row in SQLite: the columns a query filters, sorts or indexes on, and two
//! encoded blobs for the rest, `spec` (fixed at creation) and `status` (what an update
//! overwrites).
//!
//! The store writer binds and steps every job's row (its insert, and its update when it
//! ends): a row of 12 values costs it far less than the 32 columns each job had before,
//! and an update rewrites 7. The blobs are protobuf messages ([`SpecBlob`],
//! [`StatusBlob`]); the writer encodes them straight from the job into a reused buffer,
//! the readers decode them with the derived messages. A field left at its zero value is
//! not written, as in any protobuf message, so a blob holds only what a job has.

use std::{collections::HashMap, sync::Arc};

use prost::{
    Message,
    encoding::{self, WireType, encode_key, encode_varint},
};
use proto::pb::{self, JobState};
use rusqlite::Row;

use crate::job::{Job, JobSpecData};
use crate::store::columns::{self, Table};

/// The jobs, in the order the insert and [`row_to_job`] use. `seq` through `replay_of`
/// are what the queries and indexes read; `spec` and `status` hold the rest.
pub(super) const JOBS: Table = Table {
    name: "jobs",
    columns: "seq, job_type, dedupe_key, summary, state, error, updated_at, completed_at, dead_letter, replay_of, \
     spec, status",
    key: "seq",
};

/// Values in a row of [`JOBS`].
pub(super) const JOB_WIDTH: usize = 12;

/// The upsert of `rows` jobs in one statement: parameters `?1` to `?12` are the first
/// job's row, `?13` to `?24` the second's, and so on.
pub(super) fn insert_sql(rows: usize) -> String {
    let row = |r: usize| {
        let values: Vec<String> = (1..=JOB_WIDTH).map(|c| format!("?{}", r * JOB_WIDTH + c)).collect();
        format!("({})", values.join(", "))
    };
    let values: Vec<String> = (0..rows).map(row).collect();
    JOBS.upsert_from(&format!("VALUES {}", values.join(", ")))
}

/// What an update overwrites: every column but the spec's.
pub(super) const UPDATE_JOB: &str = "UPDATE jobs SET state = ?2, error = ?3, updated_at = ?4, completed_at = ?5, \
     dead_letter = ?6, status = ?7 WHERE seq = ?1";

/// The `spec` blob: the spec's fields that are not columns.
#[derive(Clone, PartialEq, Message)]
pub(super) struct SpecBlob {
    #[prost(int32, tag = "1")]
    pub priority: i32,
    #[prost(string, tag = "2")]
    pub detail: String,
    #[prost(map = "string, message", tag = "3")]
    pub parameters: HashMap<String, pb::ConfigValue>,
    #[prost(map = "string, string", tag = "4")]
    pub labels: HashMap<String, String>,
    #[prost(int64, tag = "5")]
    pub created_at: i64,
    #[prost(int64, tag = "6")]
    pub not_before: i64,
    #[prost(int64, tag = "7")]
    pub expires_at: i64,
    #[prost(int64, tag = "8")]
    pub detection_run: i64,
    #[prost(message, optional, tag = "9")]
    pub cluster_context: Option<pb::ClusterContext>,
}

/// The `status` blob: the job's mutable fields that are not columns. Tag 15 is the
/// writer's padding ([`RowBudget`]), left undeclared so that it is skipped.
#[derive(Clone, PartialEq, Message)]
pub(super) struct StatusBlob {
    #[prost(int32, tag = "1")]
    pub attempts: i32,
    #[prost(int32, tag = "2")]
    pub attempts_total: i32,
    #[prost(string, tag = "3")]
    pub worker_id: String,
    #[prost(string, tag = "4")]
    pub request_id: String,
    #[prost(double, tag = "5")]
    pub progress: f64,
    #[prost(string, tag = "6")]
    pub stage: String,
    #[prost(string, tag = "7")]
    pub message: String,
    #[prost(string, tag = "8")]
    pub result_summary: String,
    #[prost(map = "string, message", tag = "9")]
    pub result: HashMap<String, pb::ConfigValue>,
    #[prost(int64, tag = "10")]
    pub ready_at: i64,
    #[prost(int64, tag = "11")]
    pub assigned_at: i64,
    #[prost(string, repeated, tag = "12")]
    pub failed_on: Vec<String>,
    #[prost(int32, tag = "13")]
    pub stop_outcome: i32,
    #[prost(string, tag = "14")]
    pub stop_reason: String,
}

/// The `status` blob's padding: a field of zero bytes that [`StatusBlob`] does not declare,
/// so every reader skips it (see [`RowBudget`]).
const PADDING_TAG: u32 = 15;

/// The most bytes a job's changing columns may be given ([`RowBudget`]): a job whose
/// status grows past it (a long message, a result) is written at its own length.
const MOST_BUDGET: usize = 256;

/// The budget moves in steps of this many bytes.
const BUDGET_STEP: usize = 16;

/// Updates per window over which [`RowBudget`] learns what the updates need.
const BUDGET_WINDOW: u32 = 1024;

/// Room kept in each job's row for what the row gains before it ends.
///
/// SQLite overwrites a row in place when its new record is exactly as long as the old one.
/// Otherwise it deletes the old cell and inserts the new one, and a row that grows in a
/// full page splits the page. A job's row is inserted small and grows when the job ends
/// (its worker, its request, its times): in a profile of `throughput`, reinserting the
/// cell and rebalancing pages took 13% of the store writer's CPU. So the writer pads each
/// job's status blob until the columns that change ([`changing_len`]) take exactly `bytes`
/// bytes, at the insert and at every update; a row that keeps within the budget is then
/// the same length from its insert to its end, and every update of it is an overwrite in
/// place (0.6% and 1.6% of the writer now; the `writer` bench's CPU per job is about 13%
/// lower at 2 cores' pace). The price is a longer row at the insert, so more bytes written
/// per job when a batch holds thousands of jobs.
///
/// The budget is learned from the updates, in steps of [`BUDGET_STEP`] bytes up to
/// [`MOST_BUDGET`]: the first update sets it, then each window of [`BUDGET_WINDOW`]
/// updates sets it to what 99% of them needed, so a few jobs with a long message or
/// error do not lengthen every row after them. It rises as soon as a window needs more,
/// and falls only when a window needs at least two steps less, so a need on the edge of
/// a step does not make it swing from window to window. It is not stored: after a restart
/// the same work brings it back to the same value. A row whose length misses the budget
/// (written under another budget, or grown past it) is written as any row would be: this
/// only decides how fast an update is, never what is stored.
#[derive(Default)]
pub(super) struct RowBudget {
    bytes: usize,
    /// This window's updates by the steps they needed (the last: more than the cap).
    needed: [u32; MOST_BUDGET / BUDGET_STEP + 2],
    seen: u32,
}

impl RowBudget {
    /// For an update: counts what `job`'s changing columns take (`status` being its
    /// encoded status blob) towards the budget, then pads.
    pub(super) fn fit_update(&mut self, job: &Job, status: &mut Vec<u8>) {
        let steps = changing_len(job, status.len()).div_ceil(BUDGET_STEP);
        if self.bytes == 0 && steps * BUDGET_STEP <= MOST_BUDGET {
            self.bytes = steps * BUDGET_STEP;
        }
        self.needed[steps.min(self.needed.len() - 1)] += 1;
        self.seen += 1;
        if self.seen == BUDGET_WINDOW {
            self.learn();
        }
        self.pad(job, status);
    }

    /// Ends a window: moves the budget to what 99% of its updates needed.
    fn learn(&mut self) {
        let cover = self.seen - self.seen / 100;
        let mut covered = 0;
        let steps = self.needed.iter().position(|&n| {
            covered += n;
            covered >= cover
        });
        let bytes = (steps.unwrap_or(self.needed.len()) * BUDGET_STEP).min(MOST_BUDGET);
        if bytes > self.bytes || bytes + 2 * BUDGET_STEP <= self.bytes {
            self.bytes = bytes;
        }
        (self.needed, self.seen) = Default::default();
    }

    /// Pads `status`, `job`'s encoded status blob, so that the job's changing columns
    /// take exactly the budget. Leaves it as it is when they take the budget or more, or
    /// when no padding field has the length needed (a field is at least 2 bytes long, and
    /// its length prefix grows a byte at 128).
    pub(super) fn pad(&self, job: &Job, status: &mut Vec<u8>) {
        let have = changing_len(job, status.len());
        if have >= self.bytes {
            return;
        }
        // The blob's share of the budget, header byte(s) included: find its length.
        let want = self.bytes - (have - blob_len(status.len()));
        let Some(len) = (want.saturating_sub(3)..want).find(|&len| blob_len(len) == want) else {
            return;
        };
        let pad = len - status.len();
        // A padding field of `pad` bytes: its key (1 byte), its length, then zeros.
        let zeros = match pad {
            2..=129 => pad - 2,
            131.. => pad - 3,
            _ => return,
        };
        encode_key(PADDING_TAG, WireType::LengthDelimited, status);
        encode_varint(zeros as u64, status);
        status.resize(len, 0);
    }
}

/// The bytes that the columns of a job's row that change after its insert (state, error,
/// updated_at, completed_at, dead_letter, status) take in SQLite's record: for each, its
/// type code in the record's header and its value. `status_len` is the status blob's
/// length. (The record's header length is one byte whatever the values: 12 columns of at
/// most 9 bytes of type code each.)
pub(super) fn changing_len(job: &Job, status_len: usize) -> usize {
    int_len(job.state as i64)
        + text_len(job.error.len())
        + int_len(job.updated_at)
        + int_len(job.completed_at)
        + int_len(job.dead_letter as i64)
        + blob_len(status_len)
}

/// An integer in a record: one byte of type code (no more for any integer), then the
/// fewest bytes that hold it (none for 0 and 1).
fn int_len(v: i64) -> usize {
    1 + match v {
        0 | 1 => 0,
        -0x80..=0x7f => 1,
        -0x8000..=0x7fff => 2,
        -0x80_0000..=0x7f_ffff => 3,
        -0x8000_0000..=0x7fff_ffff => 4,
        -0x8000_0000_0000..=0x7fff_ffff_ffff => 6,
        _ => 8,
    }
}

/// A text value of `n` bytes in a record: its type code (2n+13) and its bytes.
fn text_len(n: usize) -> usize {
    varint_len(2 * n + 13) + n
}

/// A blob of `n` bytes in a record: its type code (2n+12) and its bytes.
fn blob_len(n: usize) -> usize {
    varint_len(2 * n + 12) + n
}

/// Bytes of a varint of 7 bits a byte: SQLite's (below 2^56) are as long as protobuf's.
fn varint_len(v: usize) -> usize {
    encoding::encoded_len_varint(v as u64)
}

/// Writes `spec`'s blob into `buf` (cleared first), as [`SpecBlob`] would encode it.
pub(super) fn encode_spec(spec: &JobSpecData, buf: &mut Vec<u8>) {
    use encoding::{hash_map, message, string};
    buf.clear();
    put_i32(1, spec.priority, buf);
    put_str(2, &spec.detail, buf);
    if let Some(m) = spec.parameters.as_map() {
        hash_map::encode(string::encode, string::encoded_len, message::encode, message::encoded_len, 3, m, buf);
    }
    if let Some(m) = spec.labels.as_map() {
        hash_map::encode(string::encode, string::encoded_len, string::encode, string::encoded_len, 4, m, buf);
    }
    put_i64(5, spec.created_at, buf);
    put_i64(6, spec.not_before, buf);
    put_i64(7, spec.expires_at, buf);
    put_i64(8, spec.detection_run, buf);
    if let Some(context) = &spec.cluster_context {
        message::encode(9, &**context, buf);
    }
}

/// Writes `job`'s status blob into `buf` (cleared first), as [`StatusBlob`] would encode it.
pub(super) fn encode_status(job: &Job, buf: &mut Vec<u8>) {
    use encoding::{hash_map, message, string};
    buf.clear();
    put_i32(1, job.attempts, buf);
    put_i32(2, job.attempts_total, buf);
    put_str(3, &job.worker_id, buf);
    put_str(4, &job.request_id, buf);
    if job.progress.to_bits() != 0 {
        encoding::double::encode(5, &job.progress, buf);
    }
    put_str(6, &job.stage, buf);
    put_str(7, &job.message, buf);
    put_str(8, &job.result_summary, buf);
    if let Some(m) = job.result_values.as_map() {
        hash_map::encode(string::encode, string::encoded_len, message::encode, message::encoded_len, 9, m, buf);
    }
    put_i64(10, job.ready_at, buf);
    put_i64(11, job.assigned_at, buf);
    for worker in &job.failed_on {
        put_delimited(12, worker, buf);
    }
    let (outcome, reason) = columns::stop_columns(job);
    put_i32(13, outcome, buf);
    put_str(14, reason, buf);
}

fn put_i32(tag: u32, value: i32, buf: &mut Vec<u8>) {
    if value != 0 {
        encoding::int32::encode(tag, &value, buf);
    }
}

fn put_i64(tag: u32, value: i64, buf: &mut Vec<u8>) {
    if value != 0 {
        encoding::int64::encode(tag, &value, buf);
    }
}

/// A string field, from a `&str` (prost's own takes a `&String`).
fn put_str(tag: u32, value: &str, buf: &mut Vec<u8>) {
    if !value.is_empty() {
        put_delimited(tag, value, buf);
    }
}

/// A string, even an empty one (an element of a repeated field).
fn put_delimited(tag: u32, value: &str, buf: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(value.len() as u64, buf);
    buf.extend_from_slice(value.as_bytes());
}

/// Decodes a blob column of a row whose first column is the job's id. A damaged blob is
/// read as empty and logged, as older builds read theirs: one damaged job must not keep
/// the store from opening or a listing from answering.
pub(super) fn decode<M: Message + Default>(r: &Row<'_>, index: usize) -> rusqlite::Result<M> {
    let bytes = r.get_ref(index)?.as_blob()?;
    Ok(M::decode(bytes).unwrap_or_else(|e| {
        let column = r.as_ref().column_name(index).unwrap_or("?");
        tracing::warn!(seq = r.get::<_, i64>(0).ok(), column, error = %e, "a job's stored blob is damaged; read as empty");
        M::default()
    }))
}

/// A job from a row of [`JOBS`]' columns.
pub(super) fn row_to_job(r: &Row<'_>) -> rusqlite::Result<Job> {
    let spec: SpecBlob = decode(r, 10)?;
    let status: StatusBlob = decode(r, 11)?;
    let state: i32 = r.get(4)?;
    Ok(Job {
        seq: r.get(0)?,
        spec: Arc::new(JobSpecData {
            job_type: r.get(1)?,
            dedupe_key: r.get::<_, String>(2)?.into(),
            priority: spec.priority,
            summary: r.get::<_, String>(3)?.into(),
            detail: spec.detail.into(),
            parameters: spec.parameters.into(),
            labels: spec.labels.into(),
            created_at: spec.created_at,
            not_before: spec.not_before,
            expires_at: spec.expires_at,
            detection_run: spec.detection_run,
            replay_of: r.get(9)?,
            cluster_context: spec.cluster_context.map(Arc::new),
        }),
        state: JobState::try_from(state).unwrap_or(JobState::Unspecified),
        attempts: status.attempts,
        attempts_total: status.attempts_total,
        worker_id: status.worker_id.into(),
        request_id: status.request_id.into(),
        progress: status.progress,
        stage: status.stage.into(),
        message: status.message.into(),
        error: r.get::<_, String>(5)?.into(),
        result_summary: status.result_summary.into(),
        result_values: status.result.into(),
        updated_at: r.get(6)?,
        ready_at: status.ready_at,
        assigned_at: status.assigned_at,
        completed_at: r.get(7)?,
        dead_letter: r.get(8)?,
        failed_on: status.failed_on,
        stop: columns::stop_request(status.stop_outcome, status.stop_reason),
        queued_at: Default::default(),
        deadline: 0,
        session_id: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::StopRequest;

    fn value(s: &str) -> pb::ConfigValue {
        pb::ConfigValue { kind: Some(pb::config_value::Kind::StringValue(s.into())) }
    }

    #[test]
    fn a_row_is_as_wide_as_the_table_and_a_statement_of_rows_numbers_them_on() {
        assert_eq!(JOB_WIDTH, JOBS.columns.split(',').count());
        assert_eq!(insert_sql(1), JOBS.upsert('?'));
        assert!(insert_sql(2).contains("(?13, ?14, "), "{}", insert_sql(2));
        assert!(insert_sql(16).contains("?192)"), "{}", insert_sql(16));
    }

    /// Ends `job` with a message of `message` bytes through `budget`; returns the step its
    /// changing columns needed, in bytes.
    fn end(budget: &mut RowBudget, job: &mut Job, message: usize) -> usize {
        job.message = "m".repeat(message).into();
        let mut blob = Vec::new();
        encode_status(job, &mut blob);
        let step = changing_len(job, blob.len()).next_multiple_of(BUDGET_STEP);
        budget.fit_update(job, &mut blob);
        step
    }

    /// The first update sets the budget; then each window sets it to what 99% of its
    /// updates needed: a few long ends do not raise it, a window that needs more raises it
    /// at once, one that needs a step less leaves it, and one that needs two steps less
    /// lowers it.
    #[test]
    fn the_budget_follows_what_most_updates_need() {
        let mut job = crate::store::tests::job(7, JobState::Succeeded, 1_800_000_000_000);
        let mut budget = RowBudget::default();
        let first = end(&mut budget, &mut job, 0);
        assert_eq!(budget.bytes, first);
        let mut window = |budget: &mut RowBudget, message: usize, long_every: u32| {
            for i in 1..=BUDGET_WINDOW - budget.seen {
                end(budget, &mut job, if i % long_every == 0 { 120 } else { message });
            }
            budget.bytes
        };
        assert_eq!(window(&mut budget, 0, 200), first, "5 long ends in 1,024 do not raise it");
        let (mut probe, mut unused) =
            (crate::store::tests::job(7, JobState::Succeeded, 1_800_000_000_000), RowBudget::default());
        let high = end(&mut unused, &mut probe, 60);
        assert!(high >= first + 3 * BUDGET_STEP, "{high} {first}");
        assert_eq!(window(&mut budget, 60, u32::MAX), high, "a window that needs more raises it");
        let one_less = (0..60).find(|&m| end(&mut unused, &mut probe, m) == high - BUDGET_STEP).unwrap();
        assert_eq!(window(&mut budget, one_less, u32::MAX), high, "a step less leaves it");
        assert_eq!(window(&mut budget, 0, u32::MAX), first, "two steps less lowers it");
        let long = end(&mut unused, &mut probe, 120);
        assert!(long <= MOST_BUDGET, "{long}");
        assert_eq!(window(&mut budget, 0, 50), long, "20 long ends in 1,024 raise it to theirs");
    }

    /// Padding brings a job's changing columns to exactly the budget, or leaves the blob
    /// as it was (when they take the budget already, or no padding field is as long as the
    /// gap), and a padded blob decodes as the blob did before.
    #[test]
    fn padding_reaches_the_budget_exactly_or_leaves_the_blob_alone() {
        let mut job = crate::store::tests::job(7, JobState::Succeeded, 1_800_000_000_000);
        let (mut hit, mut missed) = (0, 0);
        for message in 0..200 {
            job.message = "m".repeat(message).into();
            let mut unpadded = Vec::new();
            encode_status(&job, &mut unpadded);
            let before = changing_len(&job, unpadded.len());
            for bytes in 0..=MOST_BUDGET {
                let mut blob = unpadded.clone();
                RowBudget { bytes, ..Default::default() }.pad(&job, &mut blob);
                let after = changing_len(&job, blob.len());
                if after == before {
                    assert_eq!(blob, unpadded);
                    if before < bytes {
                        missed += 1;
                    }
                } else {
                    assert_eq!(after, bytes, "message {message}, budget {bytes}");
                    assert_eq!(
                        StatusBlob::decode(blob.as_slice()).unwrap(),
                        StatusBlob::decode(unpadded.as_slice()).unwrap()
                    );
                    hit += 1;
                }
            }
        }
        // A gap of one byte, and the few that a blob's or a field's length prefix steps over.
        assert!(missed * 50 < hit, "{missed} gaps missed, {hit} reached");
    }

    /// The hand-written encoders and the derived messages agree on every field, and a
    /// field at its zero value costs no byte.
    #[test]
    fn the_blobs_decode_as_their_messages() {
        let mut job = crate::store::tests::job(7, JobState::Failed, 1_000);
        let spec = Arc::make_mut(&mut job.spec);
        spec.priority = -2;
        spec.detail = "detail".into();
        spec.parameters = [("p".into(), value("1"))].into();
        spec.labels = [("team".into(), "storage".into())].into();
        spec.created_at = 11;
        spec.not_before = 12;
        spec.expires_at = 13;
        spec.detection_run = 14;
        let context = pb::ClusterContext { master_grpc_addresses: vec!["m:9333".into()], ..Default::default() };
        spec.cluster_context = Some(Arc::new(context.clone()));
        let mut buf = Vec::new();
        encode_spec(&job.spec, &mut buf);
        assert_eq!(
            SpecBlob::decode(buf.as_slice()).unwrap(),
            SpecBlob {
                priority: -2,
                detail: "detail".into(),
                parameters: [("p".into(), value("1"))].into(),
                labels: [("team".into(), "storage".into())].into(),
                created_at: 11,
                not_before: 12,
                expires_at: 13,
                detection_run: 14,
                cluster_context: Some(context),
            }
        );

        job.attempts = 2;
        job.attempts_total = 3;
        job.worker_id = "w".into();
        job.request_id = "r".into();
        job.progress = 42.5;
        job.stage = "stage".into();
        job.message = "message".into();
        job.result_summary = "summary".into();
        job.result_values = HashMap::from([("out".into(), value("x"))]).into();
        job.ready_at = 21;
        job.assigned_at = 22;
        job.failed_on = vec!["a".into(), String::new(), "b".into()];
        job.stop = Some(Box::new(StopRequest { reason: "why".into(), outcome: JobState::Canceled, deadline: 9 }));
        encode_status(&job, &mut buf);
        assert_eq!(
            StatusBlob::decode(buf.as_slice()).unwrap(),
            StatusBlob {
                attempts: 2,
                attempts_total: 3,
                worker_id: "w".into(),
                request_id: "r".into(),
                progress: 42.5,
                stage: "stage".into(),
                message: "message".into(),
                result_summary: "summary".into(),
                result: HashMap::from([("out".into(), value("x"))]),
                ready_at: 21,
                assigned_at: 22,
                failed_on: vec!["a".into(), String::new(), "b".into()],
                stop_outcome: JobState::Canceled as i32,
                stop_reason: "why".into(),
            }
        );

        let blank = JobSpecData {
            job_type: "t".into(),
            dedupe_key: "k".into(),
            priority: 0,
            summary: "s".into(),
            detail: "".into(),
            parameters: Default::default(),
            labels: Default::default(),
            created_at: 0,
            not_before: 0,
            expires_at: 0,
            detection_run: 0,
            replay_of: 0,
            cluster_context: None,
        };
        encode_spec(&blank, &mut buf);
        assert!(buf.is_empty(), "{buf:?}");
        encode_status(&Job::pending(8, blank, 0), &mut buf);
        assert!(buf.is_empty(), "{buf:?}");
    }
}
