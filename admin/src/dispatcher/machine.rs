//! The job state machine. Every change to a job after its creation is one call of
//! [`step`]: a function of the job, what happened ([`Input`]), the job type's [`Policy`]
//! and the time, which updates the job and returns the [`Effect`]s the caller must apply
//! (attempt records, messages to workers, counters). It does no I/O, reads no clock and
//! holds no lock, so every rule here is unit-tested with plain values.
//!
//! The caller (the dispatcher's table) also writes the updated job to the store and
//! publishes it, after every successful step; that effect is implicit.
//!
//! ```text
//!   PENDING --assign--> ASSIGNED --progress--> RUNNING
//!      ^                   |                     |
//!      |                   +----------+----------+
//!      |                              |
//!      +-- not started / worker lost / restart (attempt not counted)
//!      +-- failed or timed out, attempts left (after a backoff)
//!                                     |
//!            SUCCEEDED / FAILED (dead letter, expired) / CANCELED
//!      FAILED or CANCELED --operator retry--> PENDING (a new cycle of attempts)
//! ```

use proto::pb::{self, JobState};

use crate::{
    backoff::Backoff,
    job::{AttemptView, Job, StopRequest, is_final, state_name},
    monitor::Counter,
    text::clip,
};

/// The outcome of an attempt record that ended without the job having run (it is
/// requeued; the attempt is not counted).
pub const REQUEUED: &str = "requeued";

/// The message of a job that succeeded at its first attempt and reported no summary.
const SUCCEEDED_FIRST_TIME: &str = "succeeded after 1 attempt";

/// Upper bound of one retry backoff.
pub const MAX_BACKOFF_MS: i64 = 3_600_000;

/// The error of a job whose `expires_at` passed before it started.
pub const EXPIRED: &str = "expired before it started";

/// The job type's settings a transition needs.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Failed attempts allowed before dead-lettering (per cycle of attempts).
    pub retry_limit: i32,
    pub retry_backoff: Backoff,
    pub execution_timeout_ms: i64,
    /// How long a running job may take to confirm a stop.
    pub cancel_grace_ms: i64,
}

impl Policy {
    pub fn from_runtime(runtime: &pb::AdminRuntimeConfig, cancel_grace_ms: i64) -> Policy {
        Policy {
            retry_limit: runtime.retry_limit.max(0),
            retry_backoff: Backoff::new(i64::from(runtime.retry_backoff_seconds.max(0)) * 1000, MAX_BACKOFF_MS),
            execution_timeout_ms: execution_timeout_ms(runtime),
            cancel_grace_ms,
        }
    }
}

/// The execution timeout: the job type's, capped by its maximum runtime when one is set.
pub fn execution_timeout_ms(runtime: &pb::AdminRuntimeConfig) -> i64 {
    let mut secs = i64::from(runtime.execution_timeout_seconds.max(1));
    if runtime.job_type_max_runtime_seconds > 0 {
        secs = secs.min(i64::from(runtime.job_type_max_runtime_seconds));
    }
    secs * 1000
}

/// When the transition happens, and a random number for retry jitter.
#[derive(Debug, Clone, Copy)]
pub struct At {
    pub now: i64,
    pub jitter: u64,
}

/// Why an attempt ended without the job having run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStartedCause {
    /// "executor is at capacity", or the worker refused the execute request.
    Refused,
    /// The stream the attempt was sent on ended.
    WorkerLost,
    /// The admin restarted while the attempt was out.
    AdminRestarted,
}

/// What happened to a job.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// Placement chose an executor for a PENDING job.
    Assign {
        worker_id: &'a str,
        session_id: u64,
        request_id: &'a str,
    },
    Progress {
        percent: f64,
        stage: &'a str,
        message: &'a str,
    },
    /// The worker reported the end of the attempt.
    Completed {
        success: bool,
        error: &'a str,
        result: Option<&'a pb::JobResult>,
    },
    /// The attempt ended before the job started; it does not use up an attempt.
    NotStarted {
        cause: NotStartedCause,
        why: &'a str,
    },
    /// The attempt's deadline (execution timeout, or a stop's grace period) passed.
    DeadlinePassed,
    /// A PENDING job's `expires_at` passed.
    ExpiryPassed,
    /// An operator cancels (`Canceled`) or expires (`Failed`) the job.
    Stop {
        outcome: JobState,
        reason: &'a str,
    },
    /// An operator starts a new cycle of attempts for a FAILED or CANCELED job.
    Retry,
}

/// What the caller must do besides writing the job.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Write this attempt record (`ended_at` 0: the attempt started).
    Attempt(AttemptView),
    /// Send the execute request of the attempt that just started.
    Execute,
    /// Ask `worker_id` to stop the execution `request_id`.
    Cancel {
        worker_id: String,
        request_id: String,
        reason: String,
    },
    Count(Counter),
}

/// Why a transition was not made; the job is unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// A late or duplicate message: nothing to do (counted as ignored).
    Stale,
    /// An operator asked for something the job's state does not allow.
    Conflict { state: &'static str, why: &'static str },
}

pub type Effects = Vec<Effect>;

/// Applies `input` to `job`. On `Err` the job is unchanged. `policy` is asked only by
/// the transitions that need the job type's settings (not by progress or success, the
/// hot path).
pub fn step(job: &mut Job, input: Input<'_>, policy: &dyn Fn() -> Policy, at: At) -> Result<Effects, Refused> {
    let mut fx = Effects::new();
    let now = at.now;
    let in_attempt = matches!(job.state, JobState::Assigned | JobState::Running);
    match input {
        Input::Assign { worker_id, session_id, request_id } => {
            if job.state != JobState::Pending {
                return Err(conflict(job, "only a pending job can be assigned"));
            }
            job.state = JobState::Assigned;
            job.attempts += 1;
            job.attempts_total += 1;
            job.worker_id = worker_id.into();
            job.session_id = session_id;
            job.request_id = request_id.into();
            job.assigned_at = now;
            job.updated_at = now;
            job.progress = 0.0;
            job.stage = Box::default();
            job.message = Box::default();
            job.error = Box::default();
            job.deadline = now + policy().execution_timeout_ms;
            fx.push(Effect::Count(Counter::AttemptStarted));
            fx.push(Effect::Attempt(attempt(job, "running", "", 0)));
            fx.push(Effect::Execute);
        }
        Input::Progress { percent, stage, message } => {
            if !in_attempt {
                return Err(Refused::Stale);
            }
            job.state = JobState::Running;
            if percent.is_finite() {
                job.progress = percent.clamp(0.0, 100.0);
            }
            if !stage.is_empty() {
                job.stage = clip(stage, 200).into();
            }
            if !message.is_empty() {
                job.message = clip(message, 2000).into();
            }
            job.updated_at = now;
        }
        Input::Completed { success, error, result } => {
            if !in_attempt {
                return Err(Refused::Stale);
            }
            if let Some(stop) = job.stop.clone().filter(|_| !success) {
                // A worker that finished the work before honouring the cancel reports the
                // truth: the job succeeded, and the branch below records that.
                fx.push(Effect::Attempt(attempt(job, "canceled", &clip(error, 2000), now)));
                finish(job, stop.outcome, stop.reason.clone(), now, &mut fx);
                job.error = stop.reason.into();
            } else if success {
                job.progress = 100.0;
                if let Some(result) = result {
                    job.result_summary = clip(&result.summary, 2000).into();
                    job.result_values = result.output_values.clone().into();
                }
                fx.push(Effect::Attempt(attempt(job, crate::job::ATTEMPT_SUCCEEDED, "", now)));
                let message = if !job.result_summary.is_empty() {
                    String::from(&*job.result_summary)
                } else if job.attempts == 1 {
                    // Nearly every job: spared the formatting, once per job on the hot path.
                    SUCCEEDED_FIRST_TIME.to_string()
                } else {
                    format!("succeeded after {}", crate::text::plural(i64::from(job.attempts), "attempt"))
                };
                finish(job, JobState::Succeeded, message, now, &mut fx);
            } else {
                let error =
                    if error.is_empty() { "failed without an error message".to_string() } else { clip(error, 2000) };
                fail_attempt(job, &error, "failed", &policy(), at, &mut fx);
            }
        }
        Input::NotStarted { cause, why } => {
            if !in_attempt {
                return Err(Refused::Stale);
            }
            if let Some(stop) = job.stop.clone() {
                // An operator's stop wins: the job ends instead of running again.
                let error = match cause {
                    NotStartedCause::AdminRestarted => "admin restarted while the stop was pending",
                    _ => why,
                };
                fx.push(Effect::Attempt(attempt(job, "canceled", error, now)));
                finish(job, stop.outcome, stop.reason.clone(), now, &mut fx);
                job.error = stop.reason.into();
            } else {
                let (counter, message) = match cause {
                    NotStartedCause::Refused => (Some(Counter::RequeuedRefused), format!("requeued: {why}")),
                    NotStartedCause::WorkerLost => (Some(Counter::RequeuedWorkerLost), format!("requeued: {why}")),
                    NotStartedCause::AdminRestarted => (None, "requeued after admin restart".to_string()),
                };
                fx.extend(counter.map(Effect::Count));
                fx.push(Effect::Attempt(attempt(job, REQUEUED, why, now)));
                requeue(job, false, 0, message, now);
            }
        }
        Input::DeadlinePassed => {
            if !in_attempt {
                return Err(Refused::Stale);
            }
            if let Some(stop) = job.stop.clone() {
                fx.push(Effect::Attempt(attempt(
                    job,
                    "canceled",
                    "the worker did not confirm within the grace period",
                    now,
                )));
                finish(job, stop.outcome, stop.reason.clone(), now, &mut fx);
                job.error = stop.reason.into();
            } else {
                let policy = policy();
                let reason = format!("execution timed out after {} s", policy.execution_timeout_ms / 1000);
                fx.push(Effect::Count(Counter::ExecutionTimedOut));
                fx.push(Effect::Cancel {
                    worker_id: String::from(&*job.worker_id),
                    request_id: String::from(&*job.request_id),
                    reason: reason.clone(),
                });
                fail_attempt(job, &reason, "timed_out", &policy, at, &mut fx);
            }
        }
        Input::ExpiryPassed => {
            if job.state != JobState::Pending {
                return Err(Refused::Stale);
            }
            job.error = EXPIRED.into();
            fx.push(Effect::Count(Counter::Expired));
            finish(job, JobState::Failed, EXPIRED.into(), now, &mut fx);
        }
        Input::Stop { outcome, reason } => match job.state {
            JobState::Pending => {
                job.error = reason.into();
                finish(job, outcome, reason.to_string(), now, &mut fx);
            }
            JobState::Assigned | JobState::Running => {
                fx.push(Effect::Cancel {
                    worker_id: String::from(&*job.worker_id),
                    request_id: String::from(&*job.request_id),
                    reason: reason.to_string(),
                });
                let deadline = now + policy().cancel_grace_ms;
                job.stop = Some(Box::new(StopRequest { reason: reason.to_string(), outcome, deadline }));
                job.message = format!("{reason}: waiting for the worker to stop").into();
                job.updated_at = now;
                job.deadline = deadline;
            }
            _ => return Err(conflict(job, "it has already finished")),
        },
        Input::Retry => {
            if !matches!(job.state, JobState::Failed | JobState::Canceled) {
                return Err(conflict(job, "only a failed or canceled job can be retried"));
            }
            job.state = JobState::Pending;
            job.attempts = 0;
            job.dead_letter = false;
            job.error = Box::default();
            job.completed_at = 0;
            job.failed_on.clear();
            job.message = "retried by operator".into();
            job.updated_at = now;
            job.ready_at = 0;
            job.stop = None;
        }
    }
    Ok(fx)
}

fn conflict(job: &Job, why: &'static str) -> Refused {
    Refused::Conflict { state: state_name(job.state), why }
}

/// The record of the job's current attempt ending (or, with `ended_at` 0, starting).
pub fn attempt(job: &Job, outcome: &str, error: &str, ended_at: i64) -> AttemptView {
    AttemptView {
        attempt: job.attempts_total,
        worker_id: String::from(&*job.worker_id),
        request_id: String::from(&*job.request_id),
        started_at: job.assigned_at,
        ended_at,
        outcome: outcome.to_string(),
        error_message: error.to_string(),
    }
}

/// A failed attempt: retried after a backoff (preferably elsewhere) while attempts
/// remain, else dead-lettered.
fn fail_attempt(job: &mut Job, error: &str, outcome: &str, policy: &Policy, at: At, fx: &mut Effects) {
    fx.push(Effect::Count(Counter::AttemptFailed));
    fx.push(Effect::Attempt(attempt(job, outcome, error, at.now)));
    if !job.failed_on.iter().any(|w| **w == *job.worker_id) {
        job.failed_on.push(String::from(&*job.worker_id));
    }
    job.error = error.into();
    if job.attempts <= policy.retry_limit {
        fx.push(Effect::Count(Counter::Retried));
        let delay = policy.retry_backoff.jittered_ms(job.attempts, at.jitter);
        let message = format!("attempt {} failed; retrying in {} s", job.attempts_total, (delay + 999) / 1000);
        requeue(job, true, delay, message, at.now);
    } else {
        fx.push(Effect::Count(Counter::DeadLettered));
        job.dead_letter = true;
        let message = format!("dead-lettered after {}", crate::text::plural(i64::from(job.attempts), "attempt"));
        finish(job, JobState::Failed, message, at.now, fx);
    }
}

/// Ends the job (for good, or for this cycle of attempts) with its final message; a stage
/// the worker reported while it ran no longer applies.
fn finish(job: &mut Job, state: JobState, message: String, now: i64, fx: &mut Effects) {
    debug_assert!(is_final(state));
    job.state = state;
    job.stage = Box::default();
    job.message = message.into();
    job.updated_at = now;
    job.completed_at = now;
    job.stop = None;
    match state {
        JobState::Succeeded => fx.push(Effect::Count(Counter::Succeeded)),
        JobState::Canceled => fx.push(Effect::Count(Counter::Canceled)),
        _ => {}
    }
}

/// Puts a job that left its executor back in line (PENDING), ready after `delay_ms`.
fn requeue(job: &mut Job, count_attempt: bool, delay_ms: i64, message: String, now: i64) {
    if !count_attempt {
        job.attempts = (job.attempts - 1).max(0);
    }
    job.state = JobState::Pending;
    job.worker_id = Box::default();
    job.request_id = Box::default();
    job.progress = 0.0;
    job.stage = Box::default();
    job.message = message.into();
    job.updated_at = now;
    job.ready_at = if delay_ms > 0 { now + delay_ms } else { 0 };
    job.stop = None;
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_000_000;

    fn policy() -> Policy {
        Policy {
            retry_limit: 2,
            retry_backoff: Backoff::new(10_000, MAX_BACKOFF_MS),
            execution_timeout_ms: 60_000,
            cancel_grace_ms: 30_000,
        }
    }

    fn at(now: i64) -> At {
        At { now, jitter: 0 }
    }

    fn job() -> Job {
        let spec = crate::test_support::spec("k", T0);
        Job::pending(1, spec, T0)
    }

    fn assigned(now: i64) -> Job {
        let mut j = job();
        step(&mut j, Input::Assign { worker_id: "w1", session_id: 7, request_id: "exec-1" }, &policy, at(now)).unwrap();
        j
    }

    fn fail(j: &mut Job, now: i64, jitter: u64) -> Effects {
        step(j, Input::Completed { success: false, error: "boom", result: None }, &policy, At { now, jitter }).unwrap()
    }

    fn counters(fx: &Effects) -> Vec<Counter> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::Count(c) => Some(*c),
                _ => None,
            })
            .collect()
    }

    fn attempt_outcomes(fx: &Effects) -> Vec<String> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::Attempt(a) => Some(a.outcome.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn assigning_starts_an_attempt_with_its_deadline_and_an_execute_request() {
        let j = job();
        let mut j2 = j.clone();
        let fx =
            step(&mut j2, Input::Assign { worker_id: "w1", session_id: 7, request_id: "r" }, &policy, at(T0)).unwrap();
        assert_eq!(j2.state, JobState::Assigned);
        assert_eq!((j2.attempts, j2.attempts_total), (1, 1));
        assert_eq!(j2.deadline, T0 + 60_000);
        assert_eq!(j2.session_id, 7);
        assert!(fx.contains(&Effect::Execute));
        assert_eq!(attempt_outcomes(&fx), vec!["running"]);
        assert_eq!(counters(&fx), vec![Counter::AttemptStarted]);
    }

    #[test]
    fn a_failed_attempt_is_retried_after_a_backoff_that_doubles_and_then_dead_letters() {
        let mut j = assigned(T0);
        let fx = fail(&mut j, T0 + 5, 0);
        assert_eq!(j.state, JobState::Pending);
        assert_eq!(j.ready_at, T0 + 5 + 5_000, "zero jitter: half of the 10 s base");
        assert_eq!(j.failed_on, vec!["w1".to_string()]);
        assert_eq!(counters(&fx), vec![Counter::AttemptFailed, Counter::Retried]);
        assert_eq!(attempt_outcomes(&fx), vec!["failed"]);
        assert!(j.worker_id.is_empty() && j.request_id.is_empty());

        let now = j.ready_at;
        step(&mut j, Input::Assign { worker_id: "w2", session_id: 8, request_id: "exec-2" }, &policy, at(now)).unwrap();
        // Full jitter picks the whole doubled delay: 20 s for the second attempt.
        fail(&mut j, now, 10_000);
        assert_eq!(j.ready_at, now + 20_000);

        let now = j.ready_at;
        step(&mut j, Input::Assign { worker_id: "w1", session_id: 9, request_id: "exec-3" }, &policy, at(now)).unwrap();
        let fx = fail(&mut j, now, 0);
        assert_eq!(j.state, JobState::Failed);
        assert!(j.dead_letter);
        assert_eq!(&*j.message, "dead-lettered after 3 attempts");
        assert_eq!(counters(&fx), vec![Counter::AttemptFailed, Counter::DeadLettered]);
        assert_eq!(j.completed_at, now);
    }

    #[test]
    fn retry_backoff_is_capped_at_an_hour() {
        let mut p = policy();
        p.retry_limit = 100;
        let mut j = assigned(T0);
        j.attempts = 30;
        let input = Input::Completed { success: false, error: "x", result: None };
        step(&mut j, input, &|| p, At { now: T0, jitter: u64::MAX }).unwrap();
        assert!(j.ready_at - T0 <= MAX_BACKOFF_MS);
        assert!(j.ready_at - T0 >= MAX_BACKOFF_MS / 2);
    }

    #[test]
    fn an_execution_timeout_cancels_on_the_worker_and_counts_as_a_failed_attempt() {
        let mut j = assigned(T0);
        let fx = step(&mut j, Input::DeadlinePassed, &policy, at(T0 + 60_000)).unwrap();
        assert!(fx.contains(&Effect::Cancel {
            worker_id: "w1".into(),
            request_id: "exec-1".into(),
            reason: "execution timed out after 60 s".into()
        }));
        assert_eq!(attempt_outcomes(&fx), vec!["timed_out"]);
        assert_eq!(j.state, JobState::Pending);
        assert_eq!(j.attempts, 1, "a timed-out attempt is used up");
        assert_eq!(&*j.error, "execution timed out after 60 s");
    }

    #[test]
    fn capacity_replies_and_worker_loss_requeue_without_using_an_attempt() {
        for (cause, counter) in [
            (NotStartedCause::Refused, Some(Counter::RequeuedRefused)),
            (NotStartedCause::WorkerLost, Some(Counter::RequeuedWorkerLost)),
            (NotStartedCause::AdminRestarted, None),
        ] {
            let mut j = assigned(T0);
            let fx =
                step(&mut j, Input::NotStarted { cause, why: "executor is at capacity" }, &policy, at(T0 + 1)).unwrap();
            assert_eq!(j.state, JobState::Pending, "{cause:?}");
            assert_eq!(j.attempts, 0, "{cause:?}: the attempt is not used up");
            assert_eq!(j.attempts_total, 1, "{cause:?}: but it is numbered");
            assert_eq!(j.ready_at, 0, "{cause:?}: ready at once");
            assert_eq!(counters(&fx), counter.into_iter().collect::<Vec<_>>(), "{cause:?}");
            assert_eq!(attempt_outcomes(&fx), vec!["requeued"]);
        }
    }

    #[test]
    fn a_pending_stop_wins_over_a_requeue() {
        let mut j = assigned(T0);
        let fx = step(&mut j, Input::Stop { outcome: JobState::Canceled, reason: "op" }, &policy, at(T0 + 1)).unwrap();
        assert!(matches!(&fx[..], [Effect::Cancel { request_id, .. }] if request_id == "exec-1"));
        assert_eq!(j.deadline, T0 + 1 + 30_000, "the grace period replaces the execution deadline");
        assert_eq!(j.state, JobState::Assigned, "still out until the worker confirms");
        step(&mut j, Input::NotStarted { cause: NotStartedCause::WorkerLost, why: "gone" }, &policy, at(T0 + 2))
            .unwrap();
        assert_eq!(j.state, JobState::Canceled);
        assert_eq!(&*j.error, "op");
    }

    #[test]
    fn a_stop_that_is_not_confirmed_ends_the_job_when_the_grace_period_runs_out() {
        let mut j = assigned(T0);
        step(&mut j, Input::Stop { outcome: JobState::Failed, reason: "expired by operator" }, &policy, at(T0))
            .unwrap();
        let fx = step(&mut j, Input::DeadlinePassed, &policy, at(T0 + 30_000)).unwrap();
        assert_eq!(j.state, JobState::Failed);
        assert!(!j.dead_letter);
        assert_eq!(attempt_outcomes(&fx), vec!["canceled"]);
        assert!(!fx.iter().any(|e| matches!(e, Effect::Cancel { .. })), "no second cancel");
    }

    #[test]
    fn a_cancel_racing_a_completion_records_what_the_worker_reports() {
        // The worker finished before it saw the cancel: the job succeeded.
        let mut j = assigned(T0);
        step(&mut j, Input::Stop { outcome: JobState::Canceled, reason: "op" }, &policy, at(T0)).unwrap();
        let result = pb::JobResult { summary: "done".into(), ..Default::default() };
        step(&mut j, Input::Completed { success: true, error: "", result: Some(&result) }, &policy, at(T0 + 1))
            .unwrap();
        assert_eq!(j.state, JobState::Succeeded);
        assert_eq!(&*j.result_summary, "done");
        assert!(j.stop.is_none());

        // The worker honoured the cancel: the job is canceled, not retried.
        let mut j = assigned(T0);
        step(&mut j, Input::Stop { outcome: JobState::Canceled, reason: "op" }, &policy, at(T0)).unwrap();
        let fx = fail(&mut j, T0 + 1, 0);
        assert_eq!(j.state, JobState::Canceled);
        assert_eq!(&*j.error, "op");
        assert_eq!(counters(&fx), vec![Counter::Canceled]);
    }

    #[test]
    fn a_late_or_duplicate_completion_changes_nothing() {
        let mut j = assigned(T0);
        step(&mut j, Input::Completed { success: true, error: "", result: None }, &policy, at(T0 + 1)).unwrap();
        let before = j.clone();
        for input in [
            Input::Completed { success: false, error: "late", result: None },
            Input::Progress { percent: 5.0, stage: "s", message: "m" },
            Input::NotStarted { cause: NotStartedCause::WorkerLost, why: "x" },
            Input::DeadlinePassed,
            Input::ExpiryPassed,
        ] {
            assert_eq!(step(&mut j, input, &policy, at(T0 + 2)), Err(Refused::Stale), "{input:?}");
        }
        assert_eq!(format!("{before:?}"), format!("{j:?}"), "the finished job is untouched");
        assert!(matches!(
            step(&mut j, Input::Stop { outcome: JobState::Canceled, reason: "op" }, &policy, at(T0 + 3)),
            Err(Refused::Conflict { state: "succeeded", .. })
        ));
        assert!(matches!(step(&mut j, Input::Retry, &policy, at(T0 + 3)), Err(Refused::Conflict { .. })));
    }

    #[test]
    fn progress_makes_the_job_running_and_clamps_what_the_worker_sends() {
        let mut j = assigned(T0);
        let long = "x".repeat(5000);
        step(&mut j, Input::Progress { percent: 250.0, stage: "copy", message: &long }, &policy, at(T0 + 1)).unwrap();
        assert_eq!(j.state, JobState::Running);
        assert_eq!(j.progress, 100.0);
        assert!(j.message.len() < 2100);
        step(&mut j, Input::Progress { percent: f64::NAN, stage: "", message: "" }, &policy, at(T0 + 2)).unwrap();
        assert_eq!((j.progress, &*j.stage), (100.0, "copy"), "NaN and empty fields keep what was there");
    }

    #[test]
    fn an_expiry_fails_a_pending_job_and_an_operator_retry_starts_a_new_cycle() {
        let mut j = job();
        let fx = step(&mut j, Input::ExpiryPassed, &policy, at(T0 + 10)).unwrap();
        assert_eq!(j.state, JobState::Failed);
        assert_eq!(&*j.error, "expired before it started");
        assert_eq!(counters(&fx), vec![Counter::Expired]);
        step(&mut j, Input::Retry, &policy, at(T0 + 20)).unwrap();
        assert_eq!(j.state, JobState::Pending);
        assert_eq!((j.attempts, j.completed_at, &*j.error), (0, 0, ""));
        assert_eq!(&*j.message, "retried by operator");
    }

    #[test]
    fn stopping_a_pending_job_ends_it_at_once() {
        let mut j = job();
        let fx =
            step(&mut j, Input::Stop { outcome: JobState::Canceled, reason: "not needed" }, &policy, at(T0)).unwrap();
        assert_eq!(j.state, JobState::Canceled);
        assert_eq!(&*j.error, "not needed");
        assert_eq!(fx, vec![Effect::Count(Counter::Canceled)]);
    }
}
