//! Operators' actions on jobs: cancel and expire (a stop), and retry of a finished
//! FAILED or CANCELED job. The command layer is their only caller.

use proto::pb::JobState;

use super::{
    Dispatcher, Outbox,
    machine::{self, At, Input, Refused},
    table::Placed,
};
use crate::job::{JobView, job_id};

/// Why an operator action on a job was refused.
#[derive(Debug, thiserror::Error)]
pub enum JobActionError {
    #[error("no job {0}")]
    NotFound(String),
    #[error("job {id} is {state}: {why}")]
    Conflict { id: String, state: &'static str, why: &'static str },
    #[error("job {id} cannot be retried: active job {other} has the same dedupe key")]
    Duplicate { id: String, other: String },
}

impl Dispatcher {
    /// Cancels a job (CANCELED) or expires it (FAILED, no retry). A waiting job ends at
    /// once; a running one gets a cancel request and ends when its worker confirms or the
    /// grace period runs out.
    pub fn stop_job(&self, seq: i64, outcome: JobState, reason: &str) -> Result<JobView, JobActionError> {
        let now = self.now();
        let mut out = Outbox::new();
        let view = {
            let mut t = self.lock();
            match self.transition(&mut t, seq, Input::Stop { outcome, reason }, now, &mut out) {
                Ok(_) => t.job(seq).map(|j| j.view()),
                Err(Refused::Conflict { state, why }) => {
                    return Err(JobActionError::Conflict { id: job_id(seq), state, why });
                }
                Err(Refused::Stale) => None,
            }
        };
        self.flush(out);
        match view {
            Some(v) => Ok(v),
            None => Err(self.not_active(seq)),
        }
    }

    fn not_active(&self, seq: i64) -> JobActionError {
        match self.job(seq) {
            Some(j) => JobActionError::Conflict {
                id: job_id(seq),
                state: crate::job::state_name(j.state),
                why: "it has already finished",
            },
            None => JobActionError::NotFound(job_id(seq)),
        }
    }

    /// Requeues a finished FAILED or CANCELED job (including dead-lettered ones) for a new
    /// cycle of attempts.
    pub fn retry_job(&self, seq: i64) -> Result<JobView, JobActionError> {
        let conflict = |state, why| JobActionError::Conflict { id: job_id(seq), state, why };
        // A job finished long ago is only in the store: read it before taking the lock.
        let stored = {
            let t = self.lock();
            if let Some(j) = t.active.get(&seq) {
                return Err(conflict(crate::job::state_name(j.state), "only a failed or canceled job can be retried"));
            }
            t.job(seq).is_none()
        };
        let from_store = if stored { self.parts().store.job(seq).ok().flatten() } else { None };
        let now = self.now();
        let mut t = self.lock();
        if t.is_active(seq) {
            return Err(conflict("active", "it was requeued already"));
        }
        let mut job = match t.take_recent(seq) {
            Some(j) => j,
            None => std::sync::Arc::new(from_store.ok_or_else(|| JobActionError::NotFound(job_id(seq)))?),
        };
        if let Some(other) = t.holder_of(&job.spec.job_type, &job.spec.dedupe_key) {
            t.restore_recent(job);
            return Err(JobActionError::Duplicate { id: job_id(seq), other: job_id(other) });
        }
        let placed = Placed::of(&job);
        let job_type = job.spec.job_type.clone();
        let effects = match machine::step(
            std::sync::Arc::make_mut(&mut job),
            Input::Retry,
            &|| self.policy(&job_type),
            At { now, jitter: 0 },
        ) {
            Ok(effects) => effects,
            Err(refused) => {
                let state = crate::job::state_name(job.state);
                t.restore_recent(job);
                return Err(match refused {
                    Refused::Conflict { state, why } => conflict(state, why),
                    Refused::Stale => conflict(state, "only a failed or canceled job can be retried"),
                });
            }
        };
        let view = job.view();
        let mut out = Outbox::new();
        self.apply(&mut t, job, placed, effects, now, &mut out);
        drop(t);
        self.flush(out);
        self.wake();
        Ok(view)
    }
}
