//! "Why is this job waiting?": what keeps a PENDING job from being dispatched right now,
//! read from the dispatcher's own state under its lock. The rules are placement's own
//! checks (`placement.rs`: the dispatch gates, the executors' capacity, the global
//! concurrency), called here on one job instead of a queue, so an explanation cannot
//! drift from what the next dispatch pass does.

use std::collections::HashMap;

use proto::pb::JobState;

use super::{Dispatcher, machine, table::JobTable};
use crate::{
    job::{Job, is_final, state_name},
    text::time_label,
};

/// One thing that keeps a job from running now, or says that nothing does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitReason {
    /// It was just created and its write is not durable yet.
    Saving,
    /// Its `not_before` is still ahead.
    NotBefore { until: i64 },
    /// Its last attempt failed; it waits for the retry backoff.
    RetryBackoff { until: i64, failed_attempt: i32 },
    /// Its `expires_at` passed before it started: the dispatcher expires it (or did).
    Expired { at: i64 },
    /// The admin is shutting down and dispatches nothing new.
    AdminStopping,
    /// This admin's leader lease is not confirmed (PostgreSQL store): it dispatches
    /// nothing until it has renewed it, or steps down.
    LeaseUnconfirmed,
    /// An operator paused all dispatch.
    DispatchPaused { by: String, since: i64 },
    /// An operator holds the dispatch of the job's type.
    TypeHeld { by: String, since: i64 },
    /// No connected worker can execute the job's type.
    NoExecutor,
    /// Every worker that can execute the job's type is draining.
    AllDraining { executors: usize },
    /// The job type's global concurrency limit is reached.
    ConcurrencyReached { running: i64, max: i64 },
    /// Every execution slot of the job type's executors is taken.
    SlotsFull { used: i64, total: i64, executors: usize },
    /// Nothing blocks it: the next dispatch pass assigns it (after `ahead` jobs of its
    /// type that come first).
    Ready { ahead: usize },
    /// Not waiting: it is out on a worker.
    InFlight { worker_id: String, stopping: bool },
    /// Not waiting: it finished.
    Finished { dead_letter: bool },
}

impl WaitReason {
    /// The reason's code in the JSON API.
    pub fn code(&self) -> &'static str {
        match self {
            WaitReason::Saving => "saving",
            WaitReason::NotBefore { .. } => "not_before",
            WaitReason::RetryBackoff { .. } => "retry_backoff",
            WaitReason::Expired { .. } => "expired",
            WaitReason::AdminStopping => "admin_stopping",
            WaitReason::LeaseUnconfirmed => "lease_unconfirmed",
            WaitReason::DispatchPaused { .. } => "dispatch_paused",
            WaitReason::TypeHeld { .. } => "type_held",
            WaitReason::NoExecutor => "no_executor",
            WaitReason::AllDraining { .. } => "all_draining",
            WaitReason::ConcurrencyReached { .. } => "concurrency_reached",
            WaitReason::SlotsFull { .. } => "slots_full",
            WaitReason::Ready { .. } => "ready",
            WaitReason::InFlight { .. } => "in_flight",
            WaitReason::Finished { .. } => "finished",
        }
    }

    /// Whether something keeps the job from running (false: it is ready, out on a worker,
    /// or finished).
    pub fn blocks(&self) -> bool {
        !matches!(self, WaitReason::Ready { .. } | WaitReason::InFlight { .. } | WaitReason::Finished { .. })
    }

    /// The time the job waits for, when it waits for one.
    pub fn until(&self) -> Option<i64> {
        match self {
            WaitReason::NotBefore { until } | WaitReason::RetryBackoff { until, .. } => Some(*until),
            _ => None,
        }
    }

    /// The reason as a sentence without its full stop (house style for messages);
    /// `job_type` names the job's type.
    pub fn message(&self, job_type: &str, state: JobState) -> String {
        match self {
            WaitReason::Saving => "being saved: it can be dispatched once its write is durable".into(),
            WaitReason::NotBefore { until } => format!("not before {}", time_label(*until)),
            WaitReason::RetryBackoff { until, failed_attempt } => {
                format!("attempt {failed_attempt} failed; waiting for the retry backoff until {}", time_label(*until))
            }
            WaitReason::Expired { at } => format!("expired at {} before it started; it will not run", time_label(*at)),
            WaitReason::AdminStopping => "the admin is shutting down and starts no new jobs".into(),
            WaitReason::LeaseUnconfirmed => {
                "this admin could not renew its leader lease in time and starts no new jobs".into()
            }
            WaitReason::DispatchPaused { by, since } => {
                format!("all dispatch is paused (by {by} since {})", time_label(*since))
            }
            WaitReason::TypeHeld { by, since } => {
                format!("dispatch of {job_type} is held (by {by} since {})", time_label(*since))
            }
            WaitReason::NoExecutor => format!("no connected worker can execute {job_type}"),
            WaitReason::AllDraining { executors: 1 } => {
                format!("the only worker that can execute {job_type} is draining")
            }
            WaitReason::AllDraining { executors } => {
                format!("all {executors} workers that can execute {job_type} are draining")
            }
            WaitReason::ConcurrencyReached { running, max } => {
                format!("the global concurrency limit of {job_type} is reached ({running} of {max} running)")
            }
            WaitReason::SlotsFull { used, total, executors } => format!(
                "all execution slots for {job_type} are busy ({used} of {total} in use on {})",
                crate::text::plural(*executors as i64, "worker")
            ),
            WaitReason::Ready { ahead: 0 } => "ready: will be dispatched at the next pass".into(),
            WaitReason::Ready { ahead } => format!(
                "ready: will be dispatched at the next pass, after {} of its type ahead of it",
                crate::text::plural(*ahead as i64, "job")
            ),
            WaitReason::InFlight { worker_id, stopping: true } => {
                format!("not waiting: {} on {worker_id}, which is asked to stop it", state_name(state))
            }
            WaitReason::InFlight { worker_id, .. } => format!("not waiting: {} on {worker_id}", state_name(state)),
            WaitReason::Finished { dead_letter: true } => "not waiting: dead-lettered after its last attempt".into(),
            WaitReason::Finished { .. } => format!("not waiting: it finished as {}", state_name(state)),
        }
    }

    /// A few words for the jobs list.
    pub fn short(&self) -> String {
        match self {
            WaitReason::Saving => "being saved".into(),
            WaitReason::NotBefore { until } => format!("not before {}", time_label(*until)),
            WaitReason::RetryBackoff { until, .. } => format!("retry at {}", time_label(*until)),
            WaitReason::Expired { .. } => "expired".into(),
            WaitReason::AdminStopping => "admin stopping".into(),
            WaitReason::LeaseUnconfirmed => "lease unconfirmed".into(),
            WaitReason::DispatchPaused { .. } => "dispatch paused".into(),
            WaitReason::TypeHeld { .. } => "dispatch held".into(),
            WaitReason::NoExecutor => "no worker".into(),
            WaitReason::AllDraining { .. } => "workers draining".into(),
            WaitReason::ConcurrencyReached { running, max } => format!("at concurrency limit ({running} of {max})"),
            WaitReason::SlotsFull { used, total, .. } => format!("slots busy ({used} of {total})"),
            WaitReason::Ready { .. } => "ready".into(),
            WaitReason::InFlight { .. } => "out on a worker".into(),
            WaitReason::Finished { .. } => "finished".into(),
        }
    }
}

/// What the dispatcher says about one job at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    pub job_id: String,
    pub job_type: String,
    pub state: JobState,
    /// The first thing that keeps it waiting (or `Ready`, `InFlight`, `Finished`).
    pub reason: WaitReason,
    /// What else holds it back once `reason` is gone, in the order the dispatcher checks.
    pub also: Vec<WaitReason>,
    /// When this was true.
    pub at: i64,
}

impl Explanation {
    pub fn blocked(&self) -> bool {
        self.reason.blocks()
    }

    pub fn message(&self) -> String {
        self.reason.message(&self.job_type, self.state)
    }

    pub fn message_of(&self, reason: &WaitReason) -> String {
        reason.message(&self.job_type, self.state)
    }
}

impl Dispatcher {
    /// Why the job is not running right now; `None` when there is no such job.
    pub fn explain(&self, seq: i64) -> Option<Explanation> {
        let now = self.now();
        {
            let t = self.lock();
            if let Some(job) = t.job(seq) {
                return Some(self.explain_job(&t, job, now));
            }
        }
        // Long finished: only the store has it.
        let job = self.job(seq)?;
        Some(finished(&job, now))
    }

    /// The explanations of the PENDING jobs among `seqs`, under one look at the table
    /// (for the jobs list: other jobs are left out).
    pub fn explain_pending(&self, seqs: &[i64]) -> HashMap<i64, Explanation> {
        let now = self.now();
        let t = self.lock();
        seqs.iter()
            .filter_map(|seq| t.active.get(seq).filter(|j| j.state == JobState::Pending))
            .map(|job| (job.seq, self.explain_job(&t, job, now)))
            .collect()
    }

    fn explain_job(&self, t: &JobTable, job: &Job, now: i64) -> Explanation {
        if job.state != JobState::Pending {
            if is_final(job.state) {
                return finished(job, now);
            }
            let reason =
                WaitReason::InFlight { worker_id: String::from(&*job.worker_id), stopping: job.stop.is_some() };
            return explanation(job, reason, Vec::new(), now);
        }
        let mut blockers = self.blockers(t, job, now);
        if blockers.is_empty() {
            let ahead = t.ahead_of(job).unwrap_or(0);
            return explanation(job, WaitReason::Ready { ahead }, Vec::new(), now);
        }
        let reason = blockers.remove(0);
        explanation(job, reason, blockers, now)
    }

    /// Everything that keeps a PENDING job from being assigned at `now`, in the order a
    /// dispatch pass meets them: its expiry, its time, the gates, then its type's
    /// executors and limits.
    fn blockers(&self, t: &JobTable, job: &Job, now: i64) -> Vec<WaitReason> {
        if job.spec.expires_at > 0 && job.spec.expires_at <= now {
            // The pass expires it before anything else.
            return vec![WaitReason::Expired { at: job.spec.expires_at }];
        }
        let mut out = Vec::new();
        if !t.is_queued(job) {
            out.push(WaitReason::Saving);
        }
        let until = super::table::waits_until(job);
        if until > now {
            out.push(if job.ready_at == until {
                WaitReason::RetryBackoff { until, failed_attempt: job.attempts_total }
            } else {
                WaitReason::NotBefore { until }
            });
        }
        let job_type = &job.spec.job_type;
        out.extend(self.dispatch_gate());
        out.extend(self.type_gate(job_type));
        let runtime = self.parts().configs.runtime(job_type);
        let capacity = self.capacity(t, job_type, &runtime, now);
        if capacity.connected == 0 {
            out.push(WaitReason::NoExecutor);
        } else if capacity.connected == capacity.draining {
            out.push(WaitReason::AllDraining { executors: capacity.draining });
        }
        out.extend(super::placement::concurrency_reached(t, job_type, &runtime));
        if capacity.connected > capacity.draining && capacity.free.is_empty() {
            out.push(WaitReason::SlotsFull {
                used: capacity.used,
                total: capacity.total,
                executors: capacity.connected - capacity.draining,
            });
        }
        out
    }
}

fn explanation(job: &Job, reason: WaitReason, also: Vec<WaitReason>, at: i64) -> Explanation {
    Explanation { job_id: job.id(), job_type: job.spec.job_type.clone(), state: job.state, reason, also, at }
}

/// A finished job: expired ones say so, the others that they are not waiting.
fn finished(job: &Job, at: i64) -> Explanation {
    let expired = job.state == JobState::Failed && *job.error == *machine::EXPIRED && job.spec.expires_at > 0;
    let reason = if expired {
        WaitReason::Expired { at: job.spec.expires_at }
    } else {
        WaitReason::Finished { dead_letter: job.dead_letter }
    };
    explanation(job, reason, Vec::new(), at)
}
