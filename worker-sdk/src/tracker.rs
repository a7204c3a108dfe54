//! The table of running work (detections and executions): what heartbeats report,
//! what `cancel_request` looks up, and what a shutdown waits for. It lives as long as
//! the worker, not the stream, so work survives a reconnect.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::watch;

use crate::{CancellationToken, pb};

/// One running detection or execution.
#[derive(Debug)]
pub(crate) struct Work {
    pub(crate) request_id: String,
    pub(crate) kind: pb::WorkKind,
    pub(crate) job_type: String,
    /// Empty for detections.
    pub(crate) job_id: String,
    /// Given to the handler; fired by a cancel request or shutdown.
    pub(crate) cancel: CancellationToken,
    /// Fired by a forced cancel: the SDK stops waiting for the handler at once.
    pub(crate) kill: CancellationToken,
    state: Mutex<WorkState>,
    /// When the SDK took the request.
    pub(crate) started: tokio::time::Instant,
    /// Where an execution's reports stand. Held while one is queued, so RUNNING comes
    /// before the handler's own reports and nothing comes after `job_completed`.
    pub(crate) reports: tokio::sync::Mutex<Reports>,
}

/// Where an execution's reports to the admin stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reports {
    /// Nothing reported yet: the admin still has the job ASSIGNED.
    Unreported,
    /// RUNNING was sent (with or before the handler's first report).
    Running,
    /// The `job_completed` is queued (or the job was cut short): nothing more is sent.
    Ended,
}

#[derive(Debug, Default)]
struct WorkState {
    progress_percent: f64,
    stage: String,
    cancel_reason: Option<String>,
    /// The first cancel came from this worker's own shutdown (see [`Work::cut_short`]).
    cut_short: bool,
}

impl Work {
    pub(crate) fn new(request_id: &str, kind: pb::WorkKind, job_type: &str, job_id: &str) -> Arc<Self> {
        Arc::new(Work {
            request_id: request_id.to_string(),
            kind,
            job_type: job_type.to_string(),
            job_id: job_id.to_string(),
            cancel: CancellationToken::new(),
            kill: CancellationToken::new(),
            state: Mutex::new(WorkState::default()),
            started: tokio::time::Instant::now(),
            reports: tokio::sync::Mutex::new(Reports::Unreported),
        })
    }

    pub(crate) fn set_progress(&self, percent: f64, stage: &str) {
        let mut s = lock(&self.state);
        s.progress_percent = percent;
        s.stage = stage.to_string();
    }

    pub(crate) fn progress(&self) -> (f64, String) {
        let s = lock(&self.state);
        (s.progress_percent, s.stage.clone())
    }

    /// Cancels the work; the first reason given is the one reported.
    pub(crate) fn cancel(&self, reason: &str, force: bool) {
        self.cancel_as(reason, force, false);
    }

    /// Cancels the work because this worker is shutting down (its grace period is over),
    /// unless something canceled it before. Such work did not fail: it is not reported
    /// as an attempt, and the admin requeues it when the stream ends, as after a crash.
    pub(crate) fn cut_short(&self, reason: &str) {
        self.cancel_as(reason, false, true);
    }

    fn cancel_as(&self, reason: &str, force: bool, shutdown: bool) {
        {
            let mut s = lock(&self.state);
            if s.cancel_reason.is_none() {
                s.cancel_reason = Some(reason.to_string());
                s.cut_short = shutdown;
            }
        }
        self.cancel.cancel();
        if force {
            self.kill.cancel();
        }
    }

    /// Whether the work was canceled by this worker's shutdown first.
    pub(crate) fn is_cut_short(&self) -> bool {
        self.cancel.is_cancelled() && lock(&self.state).cut_short
    }

    /// `Some(reason)` once canceled.
    pub(crate) fn cancel_reason(&self) -> Option<String> {
        if !self.cancel.is_cancelled() {
            return None;
        }
        Some(lock(&self.state).cancel_reason.clone().unwrap_or_else(|| "canceled".to_string()))
    }

    fn running_work(&self) -> pb::RunningWork {
        let (progress_percent, stage) = self.progress();
        pb::RunningWork {
            work_id: self.request_id.clone(),
            kind: self.kind as i32,
            job_type: self.job_type.clone(),
            state: pb::JobState::Running as i32,
            progress_percent,
            stage,
        }
    }
}

/// All running work of one worker.
#[derive(Debug)]
pub(crate) struct Tracker {
    work: Mutex<HashMap<String, Arc<Work>>>,
    /// Whether any work runs. Sent only when that flips, under the table's lock: every
    /// send wakes (and locks) the channel's waiter lists whether anyone waits or not, and
    /// a busy worker would pay that twice per job (about 4% of the benchmark's worker
    /// CPU) for watchers that only care about idle and busy.
    busy: watch::Sender<bool>,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker { work: Mutex::default(), busy: watch::Sender::new(false) }
    }
}

impl Tracker {
    /// Adds `work`; false when its request id is already running.
    pub(crate) fn insert(&self, work: Arc<Work>) -> bool {
        let mut map = lock(&self.work);
        if map.contains_key(&work.request_id) {
            return false;
        }
        map.insert(work.request_id.clone(), work);
        if map.len() == 1 {
            self.busy.send_replace(true);
        }
        true
    }

    pub(crate) fn remove(&self, request_id: &str) {
        let mut map = lock(&self.work);
        if map.remove(request_id).is_some() && map.is_empty() {
            self.busy.send_replace(false);
        }
    }

    /// The work whose request id, or else whose job id, is `target`.
    pub(crate) fn find(&self, target: &str) -> Option<Arc<Work>> {
        let map = lock(&self.work);
        map.get(target).or_else(|| map.values().find(|w| !w.job_id.is_empty() && w.job_id == target)).cloned()
    }

    /// Cancels all running work for the worker's shutdown ([`Work::cut_short`]).
    pub(crate) fn cut_short_all(&self, reason: &str) -> usize {
        let all: Vec<_> = lock(&self.work).values().cloned().collect();
        for w in &all {
            w.cut_short(reason);
        }
        all.len()
    }

    /// For heartbeats, ordered by request id so reports are stable.
    pub(crate) fn snapshot(&self) -> Vec<pb::RunningWork> {
        let mut list: Vec<_> = lock(&self.work).values().map(|w| w.running_work()).collect();
        list.sort_by(|a, b| a.work_id.cmp(&b.work_id));
        list
    }

    /// The executions taken at or before `since` that have not reported RUNNING yet.
    pub(crate) fn unreported_since(&self, since: tokio::time::Instant) -> Vec<Arc<Work>> {
        let unreported = |w: &Work| matches!(w.reports.try_lock().as_deref(), Ok(Reports::Unreported));
        lock(&self.work)
            .values()
            .filter(|w| w.kind == pb::WorkKind::Execution && w.started <= since && unreported(w))
            .cloned()
            .collect()
    }

    pub(crate) fn is_empty(&self) -> bool {
        lock(&self.work).is_empty()
    }

    /// True while any work runs; changes when the first work starts and when the last
    /// one ends.
    pub(crate) fn watch_busy(&self) -> watch::Receiver<bool> {
        self.busy.subscribe()
    }

    /// Resolves once no work is running.
    pub(crate) async fn idle(&self) {
        let mut rx = self.watch_busy();
        // The sender lives in `self`, so `wait_for` only ends when nothing runs.
        let _ = rx.wait_for(|busy| !*busy).await;
    }
}

/// A poisoned lock only means another thread panicked while holding it; the table is
/// still consistent (every update is a single insert or remove).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_is_found_by_request_id_or_job_id_and_reported_once() {
        let t = Tracker::default();
        assert!(t.insert(Work::new("r1", pb::WorkKind::Execution, "a", "job-1")));
        assert!(!t.insert(Work::new("r1", pb::WorkKind::Execution, "a", "job-1")), "duplicate request id");
        assert!(t.insert(Work::new("r2", pb::WorkKind::Detection, "a", "")));
        assert_eq!(t.find("job-1").unwrap().request_id, "r1");
        assert_eq!(t.find("r2").unwrap().request_id, "r2");
        assert!(t.find("").is_none());
        t.find("r1").unwrap().set_progress(40.0, "copy");
        let snap = t.snapshot();
        assert_eq!(snap.len(), 2);
        assert_eq!((snap[0].progress_percent, snap[0].stage.as_str()), (40.0, "copy"));
        t.remove("r1");
        t.remove("r2");
        assert!(t.is_empty());
    }

    #[test]
    fn busy_changes_only_when_the_first_work_starts_and_the_last_one_ends() {
        let t = Tracker::default();
        let mut busy = t.watch_busy();
        assert!(!*busy.borrow_and_update());
        assert!(t.insert(Work::new("r1", pb::WorkKind::Execution, "a", "j1")));
        assert!(busy.has_changed().unwrap(), "the first work starts");
        assert!(*busy.borrow_and_update());
        assert!(t.insert(Work::new("r2", pb::WorkKind::Execution, "a", "j2")));
        assert!(!t.insert(Work::new("r2", pb::WorkKind::Execution, "a", "j2")));
        t.remove("r1");
        t.remove("unknown");
        assert!(!busy.has_changed().unwrap(), "work still runs");
        t.remove("r2");
        assert!(busy.has_changed().unwrap(), "the last work ended");
        assert!(!*busy.borrow_and_update());
        t.remove("r2");
        assert!(!busy.has_changed().unwrap(), "nothing ran");
    }

    #[test]
    fn the_first_cancel_reason_wins() {
        let w = Work::new("r", pb::WorkKind::Execution, "a", "j");
        assert_eq!(w.cancel_reason(), None);
        w.cancel("operator asked", false);
        w.cancel("shutdown", true);
        assert_eq!(w.cancel_reason().as_deref(), Some("operator asked"));
        assert!(w.kill.is_cancelled());
        assert!(!w.is_cut_short(), "an operator's cancel came first");
    }

    #[test]
    fn work_canceled_by_the_shutdown_first_is_cut_short() {
        let w = Work::new("r", pb::WorkKind::Execution, "a", "j");
        assert!(!w.is_cut_short());
        w.cut_short("worker is shutting down");
        w.cancel("operator asked", false);
        assert!(w.is_cut_short());
        assert_eq!(w.cancel_reason().as_deref(), Some("worker is shutting down"));
    }
}
