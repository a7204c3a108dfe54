//! Following attempts: what executors report (progress, completion, refusal), streams
//! that end, and deadlines that pass. Each becomes one step of the job's state machine;
//! a reply that matches no current attempt changes nothing and is counted as ignored.

use proto::pb;

use super::{
    AT_CAPACITY, Dispatcher, Outbox,
    machine::{Input, NotStartedCause},
    table::JobTable,
};
use crate::{monitor::inc, registry::WorkerSession, text::clip};

/// How long an executor that said it is full is skipped (or until it finishes a job).
const FULL_BACKOFF_MS: i64 = 1000;

impl Dispatcher {
    /// The job an execution reply is about, if it is current and from its worker.
    fn current(&self, t: &JobTable, session: &WorkerSession, request_id: &str, job_id_hint: &str) -> Option<i64> {
        let seq = match t.request(request_id) {
            Some(seq) => seq,
            // Some workers reply with the job id only.
            None if request_id.is_empty() => crate::job::parse_job_id(job_id_hint)?,
            None => return None,
        };
        let job = t.active.get(&seq)?;
        let in_attempt = matches!(job.state, pb::JobState::Assigned | pb::JobState::Running);
        (in_attempt && *job.worker_id == *session.worker_id).then_some(seq)
    }

    fn ignored(&self, session: &WorkerSession, request_id: &str, what: &str) {
        inc(&self.parts().monitor.ignored_messages);
        tracing::debug!(worker_id = %session.worker_id, request_id, "{what} for an unknown or finished attempt ignored");
    }

    pub fn on_progress(&self, session: &WorkerSession, update: pb::JobProgressUpdate) {
        let now = self.now();
        let mut out = Outbox::new();
        let job_type = {
            let mut t = self.lock();
            let Some(seq) = self.current(&t, session, &update.request_id, &update.job_id) else {
                drop(t);
                return self.ignored(session, &update.request_id, "progress");
            };
            let input =
                Input::Progress { percent: update.progress_percent, stage: &update.stage, message: &update.message };
            let _ = self.transition(&mut t, seq, input, now, &mut out);
            t.job(seq).filter(|_| !update.activities.is_empty()).map(|j| (j.spec.job_type.clone(), j.id()))
        };
        if let Some((job_type, id)) = job_type {
            self.parts().journal.worker_activities(&job_type, &id, &update.activities, pb::ActivitySource::Executor);
        }
    }

    /// The job id a completion is about, when it is the current attempt of that job on
    /// this session's worker (what the artifacts it carries may be kept for).
    pub fn current_job_id(&self, session: &WorkerSession, request_id: &str, job_id_hint: &str) -> Option<String> {
        let t = self.lock();
        self.current(&t, session, request_id, job_id_hint).map(crate::job::job_id)
    }

    pub fn on_completed(&self, session: &WorkerSession, done: pb::JobCompleted) {
        let not_started = !done.success && done.error_message.trim() == AT_CAPACITY;
        self.complete(session, done, not_started);
    }

    /// A worker refused an execute request (acknowledge with accepted: false), e.g. while
    /// it shuts down: the job never started there, so it is requeued without using an
    /// attempt, and the worker is skipped for a moment.
    pub fn on_execute_rejected(&self, session: &WorkerSession, request_id: &str, message: &str) {
        let done = pb::JobCompleted {
            request_id: request_id.to_string(),
            success: false,
            error_message: if message.is_empty() { "rejected by the worker".into() } else { message.to_string() },
            ..Default::default()
        };
        self.complete(session, done, true);
    }

    /// Ends an attempt. `not_started` (at capacity, or refused) requeues the job without
    /// using an attempt, unless an operator is stopping it.
    fn complete(&self, session: &WorkerSession, done: pb::JobCompleted, not_started: bool) {
        let now = self.now();
        let mut out = Outbox::new();
        let job = {
            let mut t = self.lock();
            let Some(seq) = self.current(&t, session, &done.request_id, &done.job_id) else {
                drop(t);
                return self.ignored(session, &done.request_id, "completion");
            };
            t.full_until.remove(&session.worker_id);
            let why = if not_started { clip(done.error_message.trim(), 500) } else { String::new() };
            let input = if not_started {
                Input::NotStarted { cause: NotStartedCause::Refused, why: &why }
            } else {
                Input::Completed { success: done.success, error: &done.error_message, result: done.result.as_ref() }
            };
            let _ = self.transition(&mut t, seq, input, now, &mut out);
            if not_started && t.is_active(seq) {
                t.full_until.insert(session.worker_id.clone(), now + FULL_BACKOFF_MS);
            }
            t.job(seq).filter(|_| !done.activities.is_empty()).map(|j| (j.spec.job_type.clone(), j.id()))
        };
        self.flush(out);
        if let Some((job_type, id)) = job {
            self.parts().journal.worker_activities(&job_type, &id, &done.activities, pb::ActivitySource::Executor);
        }
        self.wake();
    }

    /// Is this request id a current execution?
    pub fn is_execution(&self, request_id: &str) -> bool {
        self.lock().request(request_id).is_some()
    }

    /// Requeues every job sent to the worker on this stream, without using up attempts.
    /// Scoped to the stream: when a new stream replaced it, messages queued on the old one
    /// may never have arrived, while jobs sent on the new one are fine.
    pub fn on_worker_gone(&self, worker_id: &str, session_id: u64, reason: &str) {
        let now = self.now();
        let mut out = Outbox::new();
        {
            let mut t = self.lock();
            let seqs: Vec<i64> = t
                .active
                .values()
                .filter(|j| {
                    *j.worker_id == *worker_id
                        && j.session_id == session_id
                        && matches!(j.state, pb::JobState::Assigned | pb::JobState::Running)
                })
                .map(|j| j.seq)
                .collect();
            for seq in seqs {
                let input = Input::NotStarted { cause: NotStartedCause::WorkerLost, why: reason };
                let _ = self.transition(&mut t, seq, input, now, &mut out);
            }
            t.full_until.remove(worker_id);
        }
        self.flush(out);
        self.wake();
    }

    /// Execution timeouts and stop grace periods that have run out.
    pub fn check_deadlines(&self) {
        let now = self.now();
        let mut out = Outbox::new();
        {
            let mut t = self.lock();
            for seq in t.due_deadlines(now) {
                let _ = self.transition(&mut t, seq, Input::DeadlinePassed, now, &mut out);
            }
        }
        // Freed slots are used by the dispatch pass that follows in the same loop turn.
        self.flush(out);
    }
}
