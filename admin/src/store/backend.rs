//! The seam between the store and the database behind it: the operations the admin
//! queues, what it finds at start, and the two traits a backend implements (a writer side
//! that loads and applies batches, a reader side for the history and listing queries).
//!
//! Nothing here names a database. The writer thread (`super::writer`) owns the queue,
//! the group commit, the coalescing and the retries; a backend only has to apply a batch
//! that is already coalesced, all or nothing, and answer the queries.

use std::{collections::HashMap, error::Error, fmt, sync::Arc};

use proto::pb::JobState;

use crate::{
    audit::{AuditEvent, AuditQuery},
    holds::Hold,
    job::{ActivityView, AttemptView, Job, JobView, RunView},
    schedules::CronSchedule,
};

/// One write. Attempts, activities and runs are identified by ids the caller assigns, so
/// an operation can be built and published before it is committed.
pub enum Op {
    InsertJob(Arc<Job>),
    UpdateJob(Arc<Job>),
    /// An attempt record. Boxed, as are the other large operations, so the queue's items
    /// stay small: a queued job write is 40 bytes of it rather than 200.
    Attempt {
        job_seq: i64,
        attempt: Box<AttemptView>,
    },
    Activity(Box<ActivityView>),
    Run(Box<RunView>),
    /// Delete finished jobs, activities and runs older than this (Unix ms). Once
    /// committed, `report` gets the (job_type, state) counts of the deleted jobs, so the
    /// admin's counters can follow.
    Prune {
        before_ms: i64,
        report: Option<tokio::sync::oneshot::Sender<Pruned>>,
    },
    /// Remember that event ids up to `up_to` were handed out, so that the next run's ids
    /// start above them (see [`crate::events`]).
    EventIds {
        up_to: u64,
    },
    /// An audit event.
    Audit(Box<AuditEvent>),
    /// Set a hold (`active`) or lift it.
    Hold {
        hold: Box<Hold>,
        active: bool,
    },
    /// Set a job type's cron schedule, or remove it (`None`).
    Schedule {
        job_type: String,
        cron: Option<Box<CronSchedule>>,
    },
    /// A cron schedule fired at `at`.
    ScheduleFired {
        job_type: String,
        at: i64,
    },
    /// Delete audit events with ids up to this one.
    PruneAudit {
        up_to_id: i64,
    },
}

/// Jobs a prune deleted: (job_type, state as i32) -> count.
pub type Pruned = HashMap<(String, i32), i64>;

/// (job_type, state) -> count over all jobs, from the jobs per type and the counts of
/// every state but SUCCEEDED, which is what the backends' indexes give cheaply (see
/// `not_succeeded!`): the succeeded jobs of a type are the ones left over.
pub fn counts_with_succeeded(
    per_type: HashMap<String, i64>,
    mut others: HashMap<(String, i32), i64>,
) -> HashMap<(String, i32), i64> {
    let mut succeeded = per_type;
    for ((job_type, _), n) in &others {
        *succeeded.entry(job_type.clone()).or_default() -= n;
    }
    others.extend(succeeded.into_iter().filter(|(_, n)| *n > 0).map(|(t, n)| ((t, JobState::Succeeded as i32), n)));
    others
}

/// What the admin finds in the store when it starts.
#[derive(Default)]
pub struct Loaded {
    /// Jobs that were not final when the admin stopped, as stored.
    pub active: Vec<Job>,
    /// (job_type, state) -> count, over all jobs.
    pub counts: HashMap<(String, i32), i64>,
    pub next_job_seq: i64,
    pub next_activity_id: i64,
    pub next_run_id: i64,
    /// The highest event id an earlier run remembered handing out (0: none).
    pub max_event_id: u64,
    pub next_audit_id: i64,
    /// The holds in force when the admin stopped.
    pub holds: Vec<Hold>,
    pub schedules: Vec<CronSchedule>,
}

/// A job that finished, as the trends count it (`trends.rs`): its outcome, when it ended,
/// and the times of its last attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedJob {
    pub job_type: String,
    /// SUCCEEDED, FAILED or CANCELED.
    pub state: JobState,
    pub created_at: i64,
    pub not_before: i64,
    /// When its last attempt started (0: it never started).
    pub assigned_at: i64,
    pub completed_at: i64,
    pub attempts_total: i32,
    /// It ended out of an attempt on a worker (the job names the worker).
    pub had_worker: bool,
}

/// Filters for listing jobs, newest first.
#[derive(Debug, Clone, Default)]
pub struct JobQuery {
    pub job_type: Option<String>,
    pub state: Option<JobState>,
    pub dead_letter: Option<bool>,
    /// Case-insensitive substring of the summary, dedupe key or job id.
    pub text: Option<String>,
    /// Case-insensitive substring of the error message.
    pub error_contains: Option<String>,
    /// Finished at or after this time (Unix ms).
    pub completed_since: Option<i64>,
    /// Finished before this time (Unix ms).
    pub completed_until: Option<i64>,
    /// Only jobs older than this one (keyset pagination).
    pub before_seq: Option<i64>,
    pub limit: usize,
}

/// The most rows one listing query returns.
pub const MAX_PAGE: usize = 1000;

impl JobQuery {
    /// The number of jobs to return: `limit`, at least 1 and at most [`MAX_PAGE`].
    pub fn page_size(&self) -> usize {
        self.limit.clamp(1, MAX_PAGE)
    }

    /// Whether `job` passes every filter (paging aside), as a backend's query decides:
    /// for jobs listed from memory. Text filters are case-insensitive for ASCII letters,
    /// as SQL's `LIKE` is.
    pub fn matches(&self, job: &Job) -> bool {
        let contains =
            |haystack: &str, needle: &str| haystack.to_ascii_lowercase().contains(&needle.to_ascii_lowercase());
        let text_ok = match self.text.as_deref().filter(|t| !t.is_empty()) {
            None => true,
            Some(t) => contains(&job.spec.summary, t) || contains(&job.spec.dedupe_key, t) || contains(&job.id(), t),
        };
        let error_ok = match self.error_contains.as_deref().filter(|t| !t.is_empty()) {
            None => true,
            Some(t) => contains(&job.error, t),
        };
        self.job_type.as_deref().is_none_or(|t| job.spec.job_type == t)
            && self.state.is_none_or(|s| job.state == s)
            && self.dead_letter.is_none_or(|d| job.dead_letter == d)
            && self.completed_since.is_none_or(|since| job.completed_at >= since)
            && self.completed_until.is_none_or(|until| job.completed_at < until)
            && self.before_seq.is_none_or(|b| job.seq < b)
            && text_ok
            && error_ok
    }
}

/// One write of a coalesced batch, borrowed from the queued [`Op`]. The writer thread
/// builds these: within a batch each job is written once, with its newest state, and each
/// attempt once, with its newest record.
#[derive(Debug, Clone, Copy)]
pub enum Write<'a> {
    /// Insert the job, or replace it if the id exists. The state may be newer than the
    /// inserted one when the batch also updated the job.
    InsertJob(&'a Job),
    /// Overwrite the mutable part of an existing job (everything but its spec).
    UpdateJob(&'a Job),
    /// Insert or replace the attempt record (job_seq, attempt.attempt).
    Attempt { job_seq: i64, attempt: &'a AttemptView },
    /// Insert or replace the activity with this id.
    Activity(&'a ActivityView),
    /// Insert or replace the run with this id.
    Run(&'a RunView),
    /// Delete jobs that are final (succeeded, failed, canceled) and were last updated
    /// before `before_ms`, with their attempts; activities created before it; runs that
    /// ended before it. Remember the newest job id first, so that [`Backend::load`]
    /// never hands out a pruned id again.
    Prune { before_ms: i64 },
    /// Remember `up_to` as the highest event id handed out, unless a higher one is
    /// remembered already; [`Backend::load`] returns it as `max_event_id`.
    EventIds { up_to: u64 },
    /// Insert an audit event.
    Audit(&'a AuditEvent),
    /// Insert or replace a hold (`active`), or delete it.
    Hold { hold: &'a Hold, active: bool },
    /// Insert or replace a job type's cron schedule, or delete it.
    Schedule { job_type: &'a str, cron: Option<&'a CronSchedule> },
    /// Record a cron schedule's last fire.
    ScheduleFired { job_type: &'a str, at: i64 },
    /// Delete audit events with ids up to `up_to_id`.
    PruneAudit { up_to_id: i64 },
}

/// The writer side of a backend. It lives on the store's writer thread, which calls
/// [`Backend::load`] once at start and then [`Backend::apply`] for each batch.
pub trait Backend: Send + 'static {
    /// What the admin needs to resume: the jobs that are not final, the job counts, and
    /// the next free ids (never one a prune deleted).
    fn load(&mut self) -> Result<Loaded, BackendError>;

    /// Applies one batch in order, atomically: when this returns `Ok` all of it is
    /// durable, when it returns `Err` none of it is, and the same batch is applied again
    /// later. Returns one report per [`Write::Prune`], in batch order.
    fn apply(&mut self, writes: &[Write<'_>]) -> Result<Vec<Pruned>, BackendError>;
}

/// The reader side of a backend: the history and listing queries. It is shared by every
/// request handler, so it must be callable from many threads at once; reads may run
/// beside the writer and see every committed batch.
pub trait Reader: Send + Sync + 'static {
    fn job(&self, seq: i64) -> Result<Option<Job>, BackendError>;

    /// Jobs matching `query`, newest (highest seq) first, at most `query.page_size()`.
    fn jobs(&self, query: &JobQuery) -> Result<Vec<JobView>, BackendError>;

    /// A job's attempt records, oldest first.
    fn attempts(&self, job_seq: i64) -> Result<Vec<AttemptView>, BackendError>;

    /// Newest first, at most `limit` (the store passes 1..=[`MAX_PAGE`]). Filters: job
    /// type, job id, and ids older than `before_id`.
    fn activities(
        &self,
        job_type: Option<&str>,
        job_id: Option<&str>,
        before_id: Option<i64>,
        limit: usize,
    ) -> Result<Vec<ActivityView>, BackendError>;

    /// Like [`Reader::activities`], without the output lines of jobs (see
    /// [`crate::job::is_output`]): the activity feed the pages show. Output lines stay
    /// stored; a job's log reads them with [`Reader::activities`].
    fn feed(
        &self,
        job_type: Option<&str>,
        job_id: Option<&str>,
        before_id: Option<i64>,
        limit: usize,
    ) -> Result<Vec<ActivityView>, BackendError>;

    /// Visits every job in a final state with `since <= completed_at < until`, in no
    /// particular order. Runs once at start (the trends' rebuild), so it may scan.
    fn finished_jobs(&self, since: i64, until: i64, visit: &mut dyn FnMut(FinishedJob)) -> Result<(), BackendError>;

    /// The newest `limit` finished detection runs of a job type with this outcome,
    /// newest first.
    fn detection_runs(&self, job_type: &str, success: bool, limit: usize) -> Result<Vec<RunView>, BackendError>;

    /// Audit events matching `query`, newest first, at most `query.page_size()`.
    fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, BackendError>;

    /// How many audit events match `query` (its paging ignored).
    fn audit_count(&self, query: &AuditQuery) -> Result<i64, BackendError>;

    /// Audit events with `after < id <= up_to`, oldest first, at most `limit`.
    fn audit_oldest(&self, after: i64, up_to: i64, limit: usize) -> Result<Vec<AuditEvent>, BackendError>;

    /// The highest audit id to prune so that no event is older than `before_ms` and at
    /// most `keep` remain, with how many that prunes; None when nothing is to go.
    fn audit_cutoff(&self, before_ms: Option<i64>, keep: Option<i64>) -> Result<Option<(i64, i64)>, BackendError>;

    /// Dead letters per job type.
    fn dead_letters(&self) -> Result<Vec<(String, i64)>, BackendError>;

    /// The newest job replaying job `seq`, if any.
    fn replayed_as(&self, seq: i64) -> Result<Option<i64>, BackendError>;

    /// For each of `keys`, the newest job of `job_type` with that dedupe key created
    /// after job `after_seq`, if there is one. (One scan of the type's newer jobs: there
    /// is no index on dedupe keys, which would cost every job insert.)
    fn newest_with_keys(
        &self,
        job_type: &str,
        after_seq: i64,
        keys: &[String],
    ) -> Result<HashMap<String, i64>, BackendError>;
}

/// A backend failure: what the backend was doing, and the driver's error if there is one.
#[derive(Debug)]
pub struct BackendError {
    message: String,
    source: Option<Box<dyn Error + Send + Sync + 'static>>,
    fenced: bool,
}

impl BackendError {
    pub fn new(message: impl Into<String>) -> Self {
        BackendError { message: message.into(), source: None, fenced: false }
    }

    pub fn with_source(message: impl Into<String>, source: impl Into<Box<dyn Error + Send + Sync + 'static>>) -> Self {
        BackendError { message: message.into(), source: Some(source.into()), fenced: false }
    }

    /// A batch refused because this admin no longer holds the lease it wrote under: the
    /// lease's epoch is `current` (None: there is no lease), not `held`. Retrying cannot
    /// help; the writer stops (see [`BackendError::is_fenced`]).
    pub fn fenced(held: i64, current: Option<i64>) -> Self {
        let now = current.map_or_else(|| "there is no lease".to_string(), |c| format!("the lease's epoch is now {c}"));
        BackendError {
            message: format!("fenced: this admin writes under lease epoch {held}, but {now}"),
            source: None,
            fenced: true,
        }
    }

    /// Whether this is a [`BackendError::fenced`] refusal: another admin took over.
    pub fn is_fenced(&self) -> bool {
        self.fenced
    }

    /// What the backend was doing, without the cause.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(source) => write!(f, "{}: {source}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl Error for BackendError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backend_error_shows_its_cause_and_keeps_it_as_the_source() {
        let e = BackendError::with_source("cannot write a batch", std::io::Error::other("disk full"));
        assert_eq!(e.to_string(), "cannot write a batch: disk full");
        assert_eq!(e.message(), "cannot write a batch");
        assert_eq!(e.source().unwrap().to_string(), "disk full");
        let bare = BackendError::new("closed");
        assert_eq!(bare.to_string(), "closed");
        assert!(bare.source().is_none());
        assert!(!bare.is_fenced() && !e.is_fenced());
        let fenced = BackendError::fenced(3, Some(4));
        assert!(fenced.is_fenced());
        assert_eq!(fenced.to_string(), "fenced: this admin writes under lease epoch 3, but the lease's epoch is now 4");
    }

    #[test]
    fn the_page_size_is_clamped() {
        assert_eq!(JobQuery { limit: 0, ..Default::default() }.page_size(), 1);
        assert_eq!(JobQuery { limit: 50, ..Default::default() }.page_size(), 50);
        assert_eq!(JobQuery { limit: 5000, ..Default::default() }.page_size(), MAX_PAGE);
    }
}
