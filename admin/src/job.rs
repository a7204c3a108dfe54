//! The job model: one tracked job, its state names and its JSON views for the API.

use std::collections::HashMap;

use proto::pb::{self, JobState};
use serde::Serialize;

/// Milliseconds since the Unix epoch; the unit every timestamp in the admin uses.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

pub fn ms_to_timestamp(ms: i64) -> pb::Timestamp {
    pb::Timestamp { seconds: ms.div_euclid(1000), nanos: (ms.rem_euclid(1000) * 1_000_000) as i32 }
}

pub fn timestamp_to_ms(ts: &pb::Timestamp) -> i64 {
    ts.seconds.saturating_mul(1000).saturating_add(i64::from(ts.nanos) / 1_000_000)
}

/// Job ids are `j` followed by the store's row id, so lookups need no extra index.
/// The outcome of an attempt that succeeded (a store may keep it in the job's row alone).
pub const ATTEMPT_SUCCEEDED: &str = "succeeded";

pub fn job_id(seq: i64) -> String {
    format!("j{seq}")
}

/// The row id of a job id, or `None` for anything that is not one of ours.
pub fn parse_job_id(id: &str) -> Option<i64> {
    let digits = id.strip_prefix('j')?;
    if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub fn state_name(state: JobState) -> &'static str {
    match state {
        JobState::Unspecified => "unspecified",
        JobState::Pending => "pending",
        JobState::Assigned => "assigned",
        JobState::Running => "running",
        JobState::Succeeded => "succeeded",
        JobState::Failed => "failed",
        JobState::Canceled => "canceled",
    }
}

/// Accepts `pending`, `PENDING` and `JOB_STATE_PENDING`.
pub fn parse_state(text: &str) -> Option<JobState> {
    let lower = text.trim().to_ascii_lowercase();
    let name = lower.strip_prefix("job_state_").unwrap_or(&lower);
    Some(match name {
        "pending" => JobState::Pending,
        "assigned" => JobState::Assigned,
        "running" => JobState::Running,
        "succeeded" => JobState::Succeeded,
        "failed" => JobState::Failed,
        "canceled" | "cancelled" => JobState::Canceled,
        _ => return None,
    })
}

pub fn is_final(state: JobState) -> bool {
    matches!(state, JobState::Succeeded | JobState::Failed | JobState::Canceled)
}

pub fn priority_name(p: i32) -> &'static str {
    match pb::JobPriority::try_from(p).unwrap_or(pb::JobPriority::Unspecified) {
        pb::JobPriority::Unspecified => "unspecified",
        pb::JobPriority::Low => "low",
        pb::JobPriority::Normal => "normal",
        pb::JobPriority::High => "high",
        pb::JobPriority::Critical => "critical",
    }
}

/// One job as the admin tracks it. The immutable part (`spec`) is written once; the rest
/// changes with every state transition.
#[derive(Debug, Clone)]
pub struct Job {
    pub seq: i64,
    pub spec: std::sync::Arc<JobSpecData>,
    pub state: JobState,
    /// Attempts started in the current retry cycle (an operator retry starts a new cycle).
    pub attempts: i32,
    /// Attempts started over the job's whole life; numbers the attempt records.
    pub attempts_total: i32,
    // The texts are `Box<str>` (16 bytes, not a `String`'s 24): each is replaced whole,
    // never appended to, and these six were the bytes that kept `Arc<Job>` above 256.
    pub worker_id: Box<str>,
    pub request_id: Box<str>,
    pub progress: f64,
    pub stage: Box<str>,
    pub message: Box<str>,
    pub error: Box<str>,
    pub result_summary: Box<str>,
    pub result_values: Pairs<pb::ConfigValue>,
    pub updated_at: i64,
    /// When the job becomes dispatchable (not_before or retry backoff); 0 = now.
    pub ready_at: i64,
    pub assigned_at: i64,
    pub completed_at: i64,
    pub dead_letter: bool,
    /// Workers that already failed this job, so a retry prefers another executor.
    pub failed_on: Vec<String>,
    /// When the job last became ready to dispatch (for the dispatch latency); not stored.
    pub queued_at: Stamp,
    /// An operator's cancel or expire waiting for the worker to confirm; not stored (a
    /// restart requeues the job instead). Boxed: it is rare, and every queued job would
    /// carry its room otherwise.
    pub stop: Option<Box<StopRequest>>,
    /// The current attempt's execution deadline, or its stop grace end; not stored.
    pub deadline: i64,
    /// The worker stream the current attempt was sent on; not stored.
    pub session_id: u64,
}

/// How a running job is being stopped.
#[derive(Debug, Clone)]
pub struct StopRequest {
    pub reason: String,
    /// The final state once the worker confirms or the grace period ends.
    pub outcome: JobState,
    pub deadline: i64,
}

/// The part of a job fixed at creation.
#[derive(Debug, Clone)]
pub struct JobSpecData {
    pub job_type: String,
    // `Box<str>`, like the job's texts: fixed at creation, and the 24 bytes these three
    // save are what fit `Arc<JobSpecData>` in 160 bytes.
    pub dedupe_key: Box<str>,
    pub priority: i32,
    pub summary: Box<str>,
    pub detail: Box<str>,
    pub parameters: Pairs<pb::ConfigValue>,
    pub labels: Pairs<String>,
    pub created_at: i64,
    pub not_before: i64,
    pub expires_at: i64,
    pub detection_run: i64,
    /// The job this one replays (0: none): a dead letter replayed in bulk.
    pub replay_of: i64,
    /// The cluster context the job was created with (a `run` body's, or `jobs/execute`'s),
    /// laid over the admin's when it executes; None: the admin's alone.
    pub cluster_context: Option<std::sync::Arc<pb::ClusterContext>>,
}

impl Job {
    /// A new PENDING job with no attempts yet.
    pub fn pending(seq: i64, spec: JobSpecData, now: i64) -> Job {
        Job {
            seq,
            spec: std::sync::Arc::new(spec),
            state: JobState::Pending,
            attempts: 0,
            attempts_total: 0,
            worker_id: Box::default(),
            request_id: Box::default(),
            progress: 0.0,
            stage: Box::default(),
            message: Box::default(),
            error: Box::default(),
            result_summary: Box::default(),
            result_values: Pairs::new(),
            updated_at: now,
            ready_at: 0,
            assigned_at: 0,
            completed_at: 0,
            dead_letter: false,
            failed_on: Vec::new(),
            queued_at: Stamp::new(now),
            stop: None,
            deadline: 0,
            session_id: 0,
        }
    }

    pub fn id(&self) -> String {
        job_id(self.seq)
    }

    /// Whether this state of the job must be written to the store. An attempt in flight
    /// (ASSIGNED or RUNNING with no operator stop pending) is not: the store keeps the job
    /// as it was before the attempt began, PENDING, which is what a restart makes of an
    /// interrupted attempt anyway (requeued without using it up). Everything else is
    /// written: a new job, a requeue or retry, a stop request, and the final state, which
    /// is durable before it is reported.
    pub fn must_be_stored(&self) -> bool {
        !matches!(self.state, JobState::Assigned | JobState::Running) || self.stop.is_some()
    }

    pub fn to_spec(&self) -> pb::JobSpec {
        let s = &self.spec;
        pb::JobSpec {
            job_id: self.id(),
            job_type: s.job_type.clone(),
            dedupe_key: String::from(&*s.dedupe_key),
            priority: s.priority,
            summary: String::from(&*s.summary),
            detail: String::from(&*s.detail),
            parameters: s.parameters.to_map(),
            labels: s.labels.to_map(),
            created_at: Some(ms_to_timestamp(s.created_at)),
            scheduled_at: Some(ms_to_timestamp(self.ready_at.max(s.created_at))),
        }
    }

    pub fn view(&self) -> JobView {
        JobView {
            job_id: self.id(),
            job_type: self.spec.job_type.clone(),
            dedupe_key: String::from(&*self.spec.dedupe_key),
            state: state_name(self.state),
            priority: priority_name(self.spec.priority),
            summary: String::from(&*self.spec.summary),
            detail: String::from(&*self.spec.detail),
            worker_id: String::from(&*self.worker_id),
            request_id: String::from(&*self.request_id),
            progress_percent: self.progress,
            stage: String::from(&*self.stage),
            message: String::from(&*self.message),
            error_message: String::from(&*self.error),
            result_summary: String::from(&*self.result_summary),
            attempt: self.attempts_total,
            dead_letter: self.dead_letter,
            created_at: self.spec.created_at,
            updated_at: self.updated_at,
            not_before: self.spec.not_before,
            expires_at: self.spec.expires_at,
            completed_at: self.completed_at,
            labels: self.spec.labels.to_map(),
            replay_of: (self.spec.replay_of > 0).then(|| job_id(self.spec.replay_of)),
        }
    }
}

/// A job's string-keyed map (its parameters, labels or result values) that costs one
/// pointer while it is empty, as most are: every queued job is in memory, and an empty
/// `HashMap` is 48 bytes. The box is the point, hence the lint's exception. It holds a
/// map only when the map has entries, so two equal maps compare equal.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::box_collection)]
pub struct Pairs<V>(Option<Box<HashMap<String, V>>>);

impl<V> Pairs<V> {
    pub const fn new() -> Self {
        Pairs(None)
    }

    /// The map itself; `None` when it is empty.
    pub fn as_map(&self) -> Option<&HashMap<String, V>> {
        self.0.as_deref()
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        self.0.as_ref()?.get(key)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |m| m.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &V)> {
        self.0.iter().flat_map(|m| m.iter())
    }
}

impl<V: Clone> Pairs<V> {
    /// A copy as a plain map, for the protobuf messages and the views that hold one.
    pub fn to_map(&self) -> HashMap<String, V> {
        self.0.as_deref().cloned().unwrap_or_default()
    }
}

impl<V> Default for Pairs<V> {
    fn default() -> Self {
        Pairs::new()
    }
}

impl<V> From<HashMap<String, V>> for Pairs<V> {
    fn from(map: HashMap<String, V>) -> Self {
        Pairs((!map.is_empty()).then(|| Box::new(map)))
    }
}

impl<V, const N: usize> From<[(String, V); N]> for Pairs<V> {
    fn from(pairs: [(String, V); N]) -> Self {
        HashMap::from(pairs).into()
    }
}

/// A time the dispatcher notes on a job that is shared with events and queued store
/// writes, set without copying the job: it is not stored and no event shows it. (With a
/// plain field, making a new job ready copied the whole job, since its creation's store
/// write still held it.)
#[derive(Debug, Default)]
pub struct Stamp(std::sync::atomic::AtomicI64);

impl Stamp {
    pub fn new(ms: i64) -> Self {
        Stamp(std::sync::atomic::AtomicI64::new(ms))
    }

    pub fn get(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn set(&self, ms: i64) {
        self.0.store(ms, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Clone for Stamp {
    fn clone(&self) -> Self {
        Stamp::new(self.get())
    }
}

/// A job as the API and the pages show it. Times are Unix milliseconds (0 = none).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct JobView {
    pub job_id: String,
    pub job_type: String,
    pub dedupe_key: String,
    pub state: &'static str,
    pub priority: &'static str,
    pub summary: String,
    pub detail: String,
    pub worker_id: String,
    pub request_id: String,
    pub progress_percent: f64,
    pub stage: String,
    pub message: String,
    pub error_message: String,
    pub result_summary: String,
    pub attempt: i32,
    pub dead_letter: bool,
    pub created_at: i64,
    pub updated_at: i64,
    pub not_before: i64,
    pub expires_at: i64,
    pub completed_at: i64,
    pub labels: HashMap<String, String>,
    /// The job this one replays, if it is a replay.
    pub replay_of: Option<String>,
}

/// One attempt at running a job on one executor.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AttemptView {
    pub attempt: i32,
    pub worker_id: String,
    pub request_id: String,
    pub started_at: i64,
    pub ended_at: i64,
    /// running, succeeded, failed, canceled, requeued, timed_out
    pub outcome: String,
    pub error_message: String,
}

/// One entry of the activity timeline.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ActivityView {
    pub id: i64,
    pub created_at: i64,
    pub job_type: String,
    pub job_id: String,
    pub source: &'static str,
    pub stage: String,
    pub message: String,
}

/// What an output line's message starts with: the script and job runners send each line
/// of a script's stdout and stderr as an activity `stdout: <line>` or `stderr: <line>`.
pub const OUTPUT_PREFIXES: [&str; 2] = ["stdout: ", "stderr: "];

/// Whether an activity is a line of a job's output: a job's executor activity whose
/// message starts with one of [`OUTPUT_PREFIXES`]. Output lines are kept like every
/// activity, but the activity feed leaves them out (a job's log shows them); the store's
/// feed query says the same in SQL.
pub fn is_output(a: &ActivityView) -> bool {
    a.source == "executor" && !a.job_id.is_empty() && OUTPUT_PREFIXES.iter().any(|p| a.message.starts_with(p))
}

pub fn source_name(source: i32) -> &'static str {
    match pb::ActivitySource::try_from(source).unwrap_or(pb::ActivitySource::Unspecified) {
        pb::ActivitySource::Unspecified => "unspecified",
        pb::ActivitySource::Admin => "admin",
        pb::ActivitySource::Detector => "detector",
        pb::ActivitySource::Executor => "executor",
    }
}

/// One detection run or job execution, for the run history of a job type.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunView {
    pub id: i64,
    pub job_type: String,
    /// detection or execution
    pub kind: String,
    pub job_id: String,
    pub worker_id: String,
    pub started_at: i64,
    pub ended_at: i64,
    pub success: bool,
    pub message: String,
    pub proposals: i64,
    pub jobs_created: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_round_trip_and_reject_foreign_text() {
        assert_eq!(parse_job_id(&job_id(42)), Some(42));
        assert_eq!(parse_job_id("j"), None);
        assert_eq!(parse_job_id("42"), None);
        assert_eq!(parse_job_id("j-1"), None);
        assert_eq!(parse_job_id("j99999999999999999999"), None);
    }

    #[test]
    fn states_parse_in_every_spelling() {
        assert_eq!(parse_state("pending"), Some(JobState::Pending));
        assert_eq!(parse_state("JOB_STATE_FAILED"), Some(JobState::Failed));
        assert_eq!(parse_state("Canceled"), Some(JobState::Canceled));
        assert_eq!(parse_state("nope"), None);
    }

    /// Each queued job holds one `Arc<Job>` and one `Arc<JobSpecData>`, and the allocator
    /// rounds each up to its size class (mimalloc's run ..., 160, 192, 224, 256, 320, 384):
    /// a few bytes more cost a whole class per job, here 128 bytes for the job and 160 for the spec.
    #[test]
    fn a_job_and_its_spec_stay_within_their_size_classes() {
        let counts = 2 * size_of::<usize>();
        assert!(size_of::<Job>() + counts <= 256, "Arc<Job> is {} bytes", size_of::<Job>() + counts);
        assert!(
            size_of::<JobSpecData>() + counts <= 160,
            "Arc<JobSpecData> is {} bytes",
            size_of::<JobSpecData>() + counts
        );
        assert_eq!(size_of::<Pairs<String>>(), size_of::<usize>(), "an empty map costs one pointer");
    }

    #[test]
    fn pairs_hold_a_map_only_when_it_has_entries() {
        let empty: Pairs<String> = HashMap::new().into();
        assert!(empty.as_map().is_none() && empty.is_empty() && empty.iter().next().is_none());
        assert_eq!(empty, Pairs::new(), "an empty map and no map are the same");
        let p: Pairs<String> = [("team".to_string(), "storage".to_string())].into();
        assert_eq!((p.len(), p.get("team").map(String::as_str), p.contains_key("x")), (1, Some("storage"), false));
        assert_eq!(Pairs::from(p.to_map()), p);
    }

    #[test]
    fn a_stamp_is_set_through_a_shared_job_and_copied_with_it() {
        let job = std::sync::Arc::new(crate::store::tests::job(1, JobState::Pending, 1));
        let shared = job.clone();
        job.queued_at.set(42);
        assert_eq!(shared.queued_at.get(), 42, "one job, seen through both");
        let copy = (*job).clone();
        job.queued_at.set(43);
        assert_eq!(copy.queued_at.get(), 42, "a copy keeps the time it was copied with");
    }

    #[test]
    fn timestamps_convert_both_ways() {
        let ms = 1_700_000_123_456;
        assert_eq!(timestamp_to_ms(&ms_to_timestamp(ms)), ms);
    }
}
