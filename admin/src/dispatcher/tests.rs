//! The dispatcher over time, driven by a manual clock: real components, a real SQLite
//! store in a temp dir, worker sessions whose outbound queue the test reads.

use proto::pb::{self, JobState, admin_to_worker_message::Body};

use super::{AT_CAPACITY, Admission, NewJob};
use crate::{
    job::{JobSpecData, parse_job_id},
    test_support::{Rig, TestWorker},
};

fn spec(key: &str, not_before: i64, expires_at: i64) -> JobSpecData {
    JobSpecData { not_before, expires_at, ..crate::test_support::spec(key, Rig::T0) }
}

/// Admits one job and waits until it is durable and dispatchable; returns its seq.
async fn admit(rig: &Rig, key: &str, not_before: i64, expires_at: i64) -> i64 {
    let out = rig.c.dispatcher.admit(vec![NewJob { spec: spec(key, not_before, expires_at) }], 10);
    let Admission::Created { job_id } = &out[0] else { panic!("not created: {out:?}") };
    let seq = parse_job_id(job_id).unwrap();
    rig.c.store.settle().await;
    // The job enters the queues from a task that waits for durability.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !rig.c.dispatcher.lock().is_placed(seq) {
        assert!(tokio::time::Instant::now() < deadline, "job {key} never became dispatchable");
        tokio::task::yield_now().await;
    }
    seq
}

fn state(rig: &Rig, seq: i64) -> JobState {
    rig.c.dispatcher.job(seq).unwrap().state
}

async fn execute_request(w: &mut TestWorker) -> pb::ExecuteJobRequest {
    match w.next().await.body {
        Some(Body::ExecuteJobRequest(r)) => r,
        other => panic!("expected an execute request, got {other:?}"),
    }
}

fn completed(request_id: &str, success: bool, error: &str) -> pb::JobCompleted {
    pb::JobCompleted { request_id: request_id.into(), success, error_message: error.into(), ..Default::default() }
}

#[tokio::test]
async fn a_capacity_reply_requeues_the_job_without_using_an_attempt_and_skips_the_worker_for_a_moment() {
    let rig = Rig::new(|_| {});
    let mut w = rig.worker("w1", 1);
    let seq = admit(&rig, "a", 0, 0).await;
    rig.c.dispatcher.dispatch_pass();
    let req = execute_request(&mut w).await;
    assert_eq!(state(&rig, seq), JobState::Assigned);
    rig.c.dispatcher.on_completed(&w.session, completed(&req.request_id, false, AT_CAPACITY));
    let job = rig.c.dispatcher.job(seq).unwrap();
    assert_eq!((job.state, job.attempts), (JobState::Pending, 0));
    rig.c.dispatcher.dispatch_pass();
    assert!(w.is_quiet(), "the full worker is skipped for a moment");
    rig.clock.advance(1000);
    rig.c.dispatcher.dispatch_pass();
    let again = execute_request(&mut w).await;
    assert_eq!(again.attempt, 2, "attempts are numbered over the job's life");
}

#[tokio::test]
async fn a_lost_worker_gets_its_job_requeued_without_using_an_attempt() {
    let rig = Rig::new(|_| {});
    let mut w = rig.worker("w1", 1);
    let seq = admit(&rig, "a", 0, 0).await;
    rig.c.dispatcher.dispatch_pass();
    execute_request(&mut w).await;
    rig.c.dispatcher.on_worker_gone("w1", w.session.session_id, "stream closed by the worker");
    let job = rig.c.dispatcher.job(seq).unwrap();
    assert_eq!((job.state, job.attempts), (JobState::Pending, 0));
    assert_eq!(&*job.message, "requeued: stream closed by the worker");
    assert_eq!(rig.c.dispatcher.in_flight(), 0, "the slot is free again");
}

#[tokio::test]
async fn an_execution_timeout_cancels_on_the_worker_and_retries_after_the_backoff() {
    let rig = Rig::new(|d| d.execution_timeout_seconds = 30);
    let mut w = rig.worker("w1", 1);
    let seq = admit(&rig, "a", 0, 0).await;
    rig.c.dispatcher.dispatch_pass();
    let req = execute_request(&mut w).await;
    rig.clock.advance(29_999);
    rig.c.dispatcher.check_deadlines();
    assert_eq!(state(&rig, seq), JobState::Assigned, "not before the timeout");
    rig.clock.advance(1);
    rig.c.dispatcher.check_deadlines();
    match w.next().await.body {
        Some(Body::CancelRequest(c)) => assert_eq!(c.target_id, req.request_id),
        other => panic!("expected a cancel, got {other:?}"),
    }
    let job = rig.c.dispatcher.job(seq).unwrap();
    assert_eq!(job.state, JobState::Pending);
    assert_eq!(&*job.error, "execution timed out after 30 s");
    let wait = job.ready_at - (Rig::T0 + 30_000);
    assert!((5_000..=10_000).contains(&wait), "backoff of the first retry: {wait} ms");
    rig.c.dispatcher.dispatch_pass();
    assert!(w.is_quiet(), "not dispatched during the backoff");
    rig.clock.advance(wait);
    rig.c.dispatcher.dispatch_pass();
    let retry = execute_request(&mut w).await;
    assert_eq!(retry.attempt, 2);
    rig.c.dispatcher.on_completed(&w.session, completed(&retry.request_id, true, ""));
    let job = rig.c.dispatcher.job(seq).unwrap();
    assert_eq!((job.state, &*job.message), (JobState::Succeeded, "succeeded after 2 attempts"));
}

#[tokio::test]
async fn a_job_waits_for_not_before_and_expires_at_expires_at() {
    let rig = Rig::new(|_| {});
    let later = admit(&rig, "later", Rig::T0 + 60_000, 0).await;
    let doomed = admit(&rig, "doomed", 0, Rig::T0 + 5_000).await;
    assert_eq!(rig.c.dispatcher.dispatch_pass(), Some(Rig::T0 + 5_000), "the expiry is due first");
    rig.clock.advance(5_000);
    rig.c.dispatcher.dispatch_pass();
    let job = rig.c.dispatcher.job(doomed).unwrap();
    assert_eq!((job.state, &*job.error), (JobState::Failed, "expired before it started"));

    let mut w = rig.worker("w1", 1);
    rig.c.dispatcher.dispatch_pass();
    assert!(w.is_quiet(), "not before its time");
    rig.clock.set(Rig::T0 + 60_000);
    rig.c.dispatcher.dispatch_pass();
    assert_eq!(execute_request(&mut w).await.job.unwrap().job_id, crate::job::job_id(later));
}

#[tokio::test]
async fn a_late_duplicate_completion_changes_nothing_and_is_counted_as_ignored() {
    let rig = Rig::new(|_| {});
    let mut w = rig.worker("w1", 1);
    let seq = admit(&rig, "a", 0, 0).await;
    rig.c.dispatcher.dispatch_pass();
    let req = execute_request(&mut w).await;
    rig.c.dispatcher.on_completed(&w.session, completed(&req.request_id, true, ""));
    assert_eq!(state(&rig, seq), JobState::Succeeded);
    let ignored = rig.c.monitor.ignored_messages.load(std::sync::atomic::Ordering::Relaxed);
    rig.c.dispatcher.on_completed(&w.session, completed(&req.request_id, false, "late"));
    let job = rig.c.dispatcher.job(seq).unwrap();
    assert_eq!((job.state, &*job.error), (JobState::Succeeded, ""));
    assert_eq!(rig.c.monitor.ignored_messages.load(std::sync::atomic::Ordering::Relaxed), ignored + 1);
    assert_eq!(rig.c.dispatcher.count_of("t", JobState::Succeeded), 1);
}

#[tokio::test]
async fn a_cancel_racing_a_completion_ends_as_the_worker_reports() {
    let rig = Rig::new(|_| {});
    let mut w = rig.worker("w1", 2);
    let a = admit(&rig, "a", 0, 0).await;
    let b = admit(&rig, "b", 0, 0).await;
    rig.c.dispatcher.dispatch_pass();
    let (r1, r2) = (execute_request(&mut w).await, execute_request(&mut w).await);
    let request_of = |seq| if r1.job.as_ref().unwrap().job_id == crate::job::job_id(seq) { &r1 } else { &r2 };
    for seq in [a, b] {
        rig.c.dispatcher.stop_job(seq, JobState::Canceled, "canceled by operator").unwrap();
    }
    // a finished before the worker saw the cancel; b honoured it.
    rig.c.dispatcher.on_completed(&w.session, completed(&request_of(a).request_id, true, ""));
    rig.c.dispatcher.on_completed(&w.session, completed(&request_of(b).request_id, false, "canceled"));
    assert_eq!(state(&rig, a), JobState::Succeeded);
    assert_eq!(state(&rig, b), JobState::Canceled);
    assert_eq!(&*rig.c.dispatcher.job(b).unwrap().error, "canceled by operator");
}

#[tokio::test]
async fn a_restarted_admin_requeues_the_jobs_that_were_out_without_using_an_attempt() {
    let rig = Rig::new(|_| {});
    let mut w = rig.worker("w1", 1);
    let seq = admit(&rig, "a", 0, 0).await;
    rig.c.dispatcher.dispatch_pass();
    execute_request(&mut w).await;
    rig.c.store.settle().await;
    // The store holds the job as it was before the attempt: a restart finds it pending.
    let stored = rig.c.store.job(seq).unwrap().unwrap();
    assert_eq!((stored.state, stored.attempts), (JobState::Pending, 0));
    // A job stored mid-attempt (by an older build, or with an operator's stop pending) is
    // requeued by a transition.
    let live = rig.c.dispatcher.job(seq).unwrap();
    assert_eq!((live.state, live.attempts), (JobState::Assigned, 1));
    let mut loaded = crate::store::Loaded {
        active: vec![live],
        counts: [(("t".to_string(), JobState::Assigned as i32), 1)].into(),
        next_job_seq: seq + 1,
        next_activity_id: 1,
        next_run_id: 1,
        ..Default::default()
    };
    let parts = super::DispatcherParts {
        registry: rig.c.registry.clone(),
        configs: rig.c.configs.clone(),
        store: rig.c.store.clone(),
        journal: rig.c.journal.clone(),
        monitor: rig.c.monitor.clone(),
        clock: rig.clock.clone(),
        ids: rig.c.ids.clone(),
        holds: rig.c.holds.clone(),
        cancel_grace: std::time::Duration::from_secs(30),
        send_timeout: std::time::Duration::from_secs(1),
        cluster_context: rig.c.cluster_context.clone(),
        stopping: Default::default(),
        lease: crate::ha::LeaseGate::always(),
    };
    let (restarted, requeued) = super::Dispatcher::new(parts, &mut loaded);
    assert_eq!(requeued, 1);
    let job = restarted.job(seq).unwrap();
    assert_eq!((job.state, job.attempts), (JobState::Pending, 0));
    assert_eq!(restarted.count_of("t", JobState::Pending), 1);
    assert_eq!(restarted.count_of("t", JobState::Assigned), 0);
}

#[tokio::test]
async fn listings_show_jobs_in_flight_though_the_store_holds_them_as_pending() {
    let rig = Rig::new(|_| {});
    let mut w = rig.worker("w1", 2);
    let seqs = [admit(&rig, "a", 0, 0).await, admit(&rig, "b", 0, 0).await, admit(&rig, "c", 0, 0).await];
    rig.c.dispatcher.dispatch_pass();
    let first = execute_request(&mut w).await;
    execute_request(&mut w).await;
    rig.c.store.settle().await;
    let in_flight: Vec<i64> = seqs.iter().copied().filter(|s| state(&rig, *s) == JobState::Assigned).collect();
    let waiting: Vec<i64> = seqs.iter().copied().filter(|s| state(&rig, *s) == JobState::Pending).collect();
    assert_eq!((in_flight.len(), waiting.len()), (2, 1));
    for seq in &in_flight {
        let stored = rig.c.store.job(*seq).unwrap().unwrap();
        assert_eq!(stored.state, JobState::Pending, "the store keeps the attempt's start out");
    }
    let ids = |views: Vec<crate::job::JobView>| -> Vec<i64> {
        views.iter().map(|v| parse_job_id(&v.job_id).unwrap()).collect()
    };
    let query = |state: Option<JobState>, limit: usize| crate::store::JobQuery { state, limit, ..Default::default() };
    let mut newest_first = in_flight.clone();
    newest_first.reverse();
    assert_eq!(ids(rig.c.dispatcher.list_jobs(&query(Some(JobState::Assigned), 10)).unwrap()), newest_first);
    assert_eq!(ids(rig.c.dispatcher.list_jobs(&query(Some(JobState::Running), 10)).unwrap()), Vec::<i64>::new());
    // One page of one pending job reads past the in-flight jobs the store lists as pending.
    assert_eq!(ids(rig.c.dispatcher.list_jobs(&query(Some(JobState::Pending), 1)).unwrap()), waiting);
    let all = rig.c.dispatcher.list_jobs(&query(None, 10)).unwrap();
    assert_eq!(all.len(), 3);
    for v in &all {
        let seq = parse_job_id(&v.job_id).unwrap();
        assert_eq!(v.state, crate::job::state_name(state(&rig, seq)), "{} in its live state", v.job_id);
    }
    // The attempt in flight is listed with the job's attempts until its record is written.
    let running = parse_job_id(&first.job.as_ref().unwrap().job_id).unwrap();
    let attempts = rig.c.dispatcher.attempts(running).unwrap();
    assert_eq!(attempts.iter().map(|a| (a.attempt, a.outcome.as_str())).collect::<Vec<_>>(), vec![(1, "running")]);
    rig.c.dispatcher.on_completed(&w.session, completed(&first.request_id, true, ""));
    rig.c.store.settle().await;
    let attempts = rig.c.dispatcher.attempts(running).unwrap();
    assert_eq!(attempts.iter().map(|a| (a.attempt, a.outcome.as_str())).collect::<Vec<_>>(), vec![(1, "succeeded")]);
    assert_eq!(rig.c.store.job(running).unwrap().unwrap().state, JobState::Succeeded);
}

fn hold(kind: crate::holds::HoldKind, target: &str) -> crate::holds::Hold {
    crate::holds::Hold { kind, target: target.into(), set_by: "ops".into(), set_at: Rig::T0 - 1000 }
}

fn reason(rig: &Rig, seq: i64) -> (super::WaitReason, Vec<super::WaitReason>) {
    let e = rig.c.dispatcher.explain(seq).expect("an explanation");
    (e.reason, e.also)
}

#[tokio::test]
async fn an_explanation_follows_the_dispatchers_own_state_and_ready_means_the_next_pass_assigns_it() {
    use super::WaitReason as W;
    use crate::holds::HoldKind;
    let rig = Rig::new(|d| {
        d.global_execution_concurrency = 1;
        d.retry_backoff_seconds = 10;
    });
    let a = admit(&rig, "a", 0, 0).await;
    assert_eq!(reason(&rig, a), (W::NoExecutor, vec![]));

    // Gates come first; what else holds the job back is listed after.
    rig.c.holds.apply(HoldKind::Dispatch, "", Some(hold(HoldKind::Dispatch, "")));
    rig.c.holds.apply(HoldKind::JobDispatch, "t", Some(hold(HoldKind::JobDispatch, "t")));
    let paused = W::DispatchPaused { by: "ops".into(), since: Rig::T0 - 1000 };
    let held = W::TypeHeld { by: "ops".into(), since: Rig::T0 - 1000 };
    assert_eq!(reason(&rig, a), (paused, vec![held.clone(), W::NoExecutor]));
    rig.c.holds.apply(HoldKind::Dispatch, "", None);
    assert_eq!(reason(&rig, a), (held, vec![W::NoExecutor]));
    rig.c.holds.apply(HoldKind::JobDispatch, "t", None);

    let mut w = rig.worker("w1", 2);
    rig.c.registry.set_draining("w1", true);
    assert_eq!(reason(&rig, a), (W::AllDraining { executors: 1 }, vec![]));
    rig.c.dispatcher.dispatch_pass();
    assert!(w.is_quiet(), "a draining worker gets nothing");
    rig.c.registry.set_draining("w1", false);

    let b = admit(&rig, "b", 0, 0).await;
    assert_eq!(reason(&rig, a), (W::Ready { ahead: 0 }, vec![]));
    assert_eq!(reason(&rig, b), (W::Ready { ahead: 1 }, vec![]));
    rig.c.dispatcher.dispatch_pass();
    let req = execute_request(&mut w).await;
    assert_eq!(req.job.unwrap().job_id, crate::job::job_id(a), "the ready job went at the next pass");
    assert_eq!(reason(&rig, a), (W::InFlight { worker_id: "w1".into(), stopping: false }, vec![]));
    // One slot of two is free, but the type's global concurrency is 1.
    assert_eq!(reason(&rig, b), (W::ConcurrencyReached { running: 1, max: 1 }, vec![]));
    let explained = rig.c.dispatcher.explain(b).unwrap();
    assert_eq!(explained.message(), "the global concurrency limit of t is reached (1 of 1 running)");

    // A failed attempt waits for its backoff.
    rig.c.dispatcher.on_completed(&w.session, completed(&req.request_id, false, "boom"));
    let ready_at = rig.c.dispatcher.job(a).unwrap().ready_at;
    assert_eq!(reason(&rig, a).0, W::RetryBackoff { until: ready_at, failed_attempt: 1 });
    assert!(ready_at > Rig::T0);

    let later = admit(&rig, "later", Rig::T0 + 3_600_000, 0).await;
    assert_eq!(reason(&rig, later).0, W::NotBefore { until: Rig::T0 + 3_600_000 });
    let doomed = admit(&rig, "doomed", Rig::T0 + 3_600_000, Rig::T0 + 60_000).await;
    rig.clock.advance(60_000);
    assert_eq!(reason(&rig, doomed), (W::Expired { at: Rig::T0 + 60_000 }, vec![]), "the pass expires it first");
    rig.c.dispatcher.dispatch_pass();
    assert_eq!(state(&rig, doomed), JobState::Failed);
    assert_eq!(reason(&rig, doomed).0, W::Expired { at: Rig::T0 + 60_000 }, "and it says so once expired");
    assert!(rig.c.dispatcher.explain(i64::MAX / 2).is_none());
}

#[tokio::test]
async fn a_job_waiting_for_a_busy_executor_says_how_many_slots_are_in_use() {
    use super::WaitReason as W;
    let rig = Rig::new(|_| {});
    let mut w = rig.worker("w1", 1);
    let a = admit(&rig, "a", 0, 0).await;
    let b = admit(&rig, "b", 0, 0).await;
    rig.c.dispatcher.dispatch_pass();
    let req = execute_request(&mut w).await;
    assert_eq!(reason(&rig, b), (W::SlotsFull { used: 1, total: 1, executors: 1 }, vec![]));
    let shown = rig.c.dispatcher.explain_pending(&[a, b]);
    assert_eq!(shown.keys().copied().collect::<Vec<_>>(), vec![b], "only pending jobs are explained in a list");
    // An executor that says it is full counts as busy until it may be asked again.
    rig.c.dispatcher.on_completed(&w.session, completed(&req.request_id, false, AT_CAPACITY));
    assert_eq!(reason(&rig, a).0, W::SlotsFull { used: 1, total: 1, executors: 1 });
    rig.clock.advance(1000);
    assert_eq!(reason(&rig, a).0, W::Ready { ahead: 0 });
    let done = rig.c.dispatcher.job(a).unwrap();
    assert_eq!(&*done.message, "requeued: executor is at capacity");
}

#[tokio::test]
async fn a_finished_job_keeps_its_final_message_and_no_stage() {
    let rig = Rig::new(|d| d.retry_limit = 0);
    let mut w = rig.worker("w1", 2);
    let ok = admit(&rig, "ok", 0, 0).await;
    let bad = admit(&rig, "bad", 0, 0).await;
    rig.c.dispatcher.dispatch_pass();
    for _ in 0..2 {
        let req = execute_request(&mut w).await;
        let progress = pb::JobProgressUpdate {
            request_id: req.request_id.clone(),
            progress_percent: 40.0,
            stage: "measuring".into(),
            message: "page 4 of 10".into(),
            ..Default::default()
        };
        rig.c.dispatcher.on_progress(&w.session, progress);
        let success = req.job.unwrap().job_id == crate::job::job_id(ok);
        rig.c.dispatcher.on_completed(&w.session, completed(&req.request_id, success, "disk full"));
    }
    let ok = rig.c.dispatcher.job(ok).unwrap();
    assert_eq!((ok.state, &*ok.stage, &*ok.message), (JobState::Succeeded, "", "succeeded after 1 attempt"));
    let bad = rig.c.dispatcher.job(bad).unwrap();
    assert_eq!((bad.state, &*bad.stage), (JobState::Failed, ""));
    assert_eq!((&*bad.message, &*bad.error), ("dead-lettered after 1 attempt", "disk full"));
    assert_eq!(reason(&rig, bad.seq).0, super::WaitReason::Finished { dead_letter: true });
}

#[tokio::test]
async fn past_the_lease_deadline_nothing_is_assigned_or_sent_and_the_explanation_says_why() {
    let rig = Rig::new(|_| {});
    let mut w = rig.worker("w1", 2);
    let seq = admit(&rig, "a", 0, 0).await;
    // A leader whose last renewal's deadline has passed (a paused process that resumed).
    rig.c.lease.extend(tokio::time::Instant::now() - std::time::Duration::from_millis(1));
    rig.c.dispatcher.dispatch_pass();
    assert!(w.is_quiet(), "no execute request after the deadline");
    assert_eq!(state(&rig, seq), JobState::Pending);
    let e = rig.c.dispatcher.explain(seq).expect("an explanation");
    assert_eq!(e.reason.code(), "lease_unconfirmed");
    assert_eq!(e.message(), "this admin could not renew its leader lease in time and starts no new jobs");

    // A renewal moves the deadline: the job goes out at the next pass.
    rig.c.lease.extend(tokio::time::Instant::now() + std::time::Duration::from_secs(60));
    rig.c.dispatcher.dispatch_pass();
    let req = execute_request(&mut w).await;
    assert_eq!(req.job.unwrap().job_id, crate::job::job_id(seq));

    // A revoked gate (the term is over) assigns nothing again.
    let second = admit(&rig, "b", 0, 0).await;
    rig.c.lease.revoke();
    rig.c.dispatcher.dispatch_pass();
    assert!(w.is_quiet(), "nothing is sent once the term is over");
    assert_eq!(state(&rig, second), JobState::Pending);
}

/// The job table shares each job with the snapshot the store writes and the event carries
/// (copy on write): every event still shows the job as it was at its own moment after the
/// job moved on, and a finished job's dedupe key (found by its hash) is free again.
#[tokio::test]
async fn each_event_keeps_the_job_as_it_was_and_a_finished_jobs_dedupe_key_is_free_again() {
    let rig = Rig::new(|_| {});
    let mut events = rig.c.events.subscribe_after(None);
    let mut w = rig.worker("w1", 1);
    let seq = admit(&rig, "a", 0, 0).await;
    let twin = rig.c.dispatcher.admit(vec![NewJob { spec: spec("a", 0, 0) }], 10);
    assert!(matches!(twin[0], Admission::Duplicate), "an active job holds the key: {twin:?}");
    rig.c.dispatcher.dispatch_pass();
    let req = execute_request(&mut w).await;
    rig.c.dispatcher.on_completed(&w.session, completed(&req.request_id, true, ""));

    // Read only once the job finished, so every snapshot was taken before later changes.
    let mut seen = Vec::new();
    while seen.last().is_none_or(|(state, _)| *state != JobState::Succeeded) {
        let e = tokio::time::timeout(std::time::Duration::from_secs(10), events.rx.recv())
            .await
            .expect("the job's events arrive")
            .expect("no event is missed");
        if let crate::events::EventKind::Job { job } = &e.kind
            && job.0.seq == seq
        {
            seen.push((job.0.state, String::from(&*job.0.worker_id)));
        }
    }
    let w1 = || "w1".to_string();
    assert_eq!(
        seen,
        [(JobState::Pending, String::new()), (JobState::Assigned, w1()), (JobState::Succeeded, w1())],
        "one event per change, each with the state of its moment"
    );
    let again = rig.c.dispatcher.admit(vec![NewJob { spec: spec("a", 0, 0) }], 10);
    assert!(matches!(again[0], Admission::Created { .. }), "the key is free once the job finished: {again:?}");
}
