//! Tests of what every backend must do alike, run against each ([`Which`]): a batch
//! all or nothing and retried until it commits, errors that say what failed, the
//! queries' semantics (the feed, implied attempts, finished jobs), and a job's fields
//! surviving the round trip.

use std::{error::Error, sync::Arc, time::Duration};

use proto::pb::{self, JobState};

use super::{
    Op, StoreError, Write,
    tests::{Place, Which, job, on_both_backends},
};
use crate::{
    events::EventBus,
    job::{ActivityView, AttemptView, StopRequest, now_ms},
};

/// A trigger that refuses to insert jobs (`seq = 2` only, with `only_two`), and its
/// removal, in each dialect.
fn refuse_inserts(place: &Place, only_two: bool) {
    let when = if only_two { "WHEN NEW.seq = 2 " } else { "" };
    let pg_when = if only_two { "WHEN (NEW.seq = 2) " } else { "" };
    place.exec(
        &format!("CREATE TRIGGER refuse BEFORE INSERT ON jobs {when}BEGIN SELECT RAISE(ABORT, 'injected'); END;"),
        &format!(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'injected'; END $$; \
             CREATE TRIGGER refuse BEFORE INSERT ON jobs FOR EACH ROW {pg_when}EXECUTE FUNCTION refuse();"
        ),
    );
}

fn allow_inserts(place: &Place) {
    place.exec("DROP TRIGGER refuse;", "DROP TRIGGER refuse ON jobs; DROP FUNCTION refuse();");
}

async fn a_batch_that_cannot_commit_is_retried_and_never_reported_durable_before_it_commits(which: Which) {
    let place = Place::new(which, "retry");
    let (store, _) = place.open(Arc::new(EventBus::new(16)));
    refuse_inserts(&place, false);
    let ticket = store.write(Op::InsertJob(Arc::new(job(1, JobState::Pending, now_ms()))));
    let early = tokio::time::timeout(Duration::from_millis(300), store.durable(ticket)).await;
    assert!(early.is_err(), "not durable while the commit fails");
    assert!(!store.is_healthy());
    allow_inserts(&place);
    tokio::time::timeout(Duration::from_secs(30), store.durable(ticket)).await.unwrap().unwrap();
    assert!(store.job(1).unwrap().is_some(), "the retried batch landed");
    assert!(store.is_healthy());
    store.close();
}

async fn a_batch_is_applied_all_or_nothing_and_the_error_says_what_failed(which: Which) {
    let place = Place::new(which, "atomic");
    let (mut backend, reader) = place.backend();
    refuse_inserts(&place, true);
    let (one, two) = (job(1, JobState::Pending, now_ms()), job(2, JobState::Pending, now_ms()));
    let err = backend.apply(&[Write::InsertJob(&one), Write::InsertJob(&two)]).unwrap_err();
    assert_eq!(err.message(), "cannot write a batch");
    assert!(err.to_string().contains("injected"), "{err}");
    assert!(!err.is_fenced());
    assert!(err.source().is_some_and(|s| place.is_driver_error(s)), "the driver's error is the source");
    assert!(reader.job(1).unwrap().is_none(), "job 1 was rolled back with job 2");

    allow_inserts(&place);
    let pruned = backend.apply(&[Write::InsertJob(&one), Write::InsertJob(&two)]).unwrap();
    assert!(pruned.is_empty());
    assert!(reader.job(1).unwrap().is_some() && reader.job(2).unwrap().is_some(), "the same batch applies later");
}

async fn a_succeeded_attempt_is_held_by_its_job_row_and_listed_with_the_others(which: Which) {
    let place = Place::new(which, "implied-attempt");
    let (mut backend, reader) = place.backend();
    let mut j = job(1, JobState::Succeeded, 5_000);
    (j.attempts, j.attempts_total, j.worker_id, j.request_id) = (2, 2, "w2".into(), "r2".into());
    (j.assigned_at, j.completed_at) = (4_000, 5_000);
    let failed =
        AttemptView { ended_at: 3_000, error_message: "boom".into(), ..crate::store::tests::attempt(1, "failed") };
    let succeeded = AttemptView {
        attempt: 2,
        worker_id: "w2".into(),
        request_id: "r2".into(),
        started_at: 4_000,
        ended_at: 5_000,
        outcome: "succeeded".into(),
        error_message: String::new(),
    };
    backend
        .apply(&[
            Write::InsertJob(&j),
            Write::Attempt { job_seq: 1, attempt: &failed },
            Write::Attempt { job_seq: 1, attempt: &succeeded },
        ])
        .unwrap();
    assert_eq!(place.count("SELECT COUNT(*) FROM attempts"), 1, "only the failed attempt has a row of its own");
    let listed = reader.attempts(1).unwrap();
    assert_eq!(listed, vec![failed, succeeded]);
    assert!(reader.attempts(2).unwrap().is_empty(), "no job, no attempts");
}

async fn a_failed_query_is_a_backend_error_with_the_driver_error_as_its_source(which: Which) {
    let place = Place::new(which, "query-error");
    let (store, _) = place.open(Arc::new(EventBus::new(16)));
    place.exec("DROP TABLE attempts;", "DROP TABLE attempts;");
    let err = store.attempts(1).unwrap_err();
    let StoreError::Backend { path, source } = &err else { panic!("not a backend error: {err:?}") };
    assert_eq!(path, store.path());
    assert_eq!(source.message(), "cannot read a job's attempts");
    assert!(source.source().is_some_and(|s| place.is_driver_error(s)));
    let missing = match which {
        Which::Sqlite => "no such table",
        Which::Postgres => "relation \"attempts\" does not exist",
    };
    assert!(err.to_string().contains(missing), "{err}");
    store.close();
}

fn activity(id: i64, job_id: &str, source: &'static str, message: &str) -> ActivityView {
    ActivityView {
        id,
        created_at: 1_000 + id,
        job_type: if id % 2 == 0 { "a".into() } else { "b".into() },
        job_id: job_id.into(),
        source,
        stage: String::new(),
        message: message.into(),
    }
}

/// The feed's SQL filter and `job::is_output` decide alike.
async fn the_feed_leaves_out_exactly_the_output_lines(which: Which) {
    let place = Place::new(which, "feed");
    let (mut backend, reader) = place.backend();
    let all = [
        activity(1, "j1", "executor", "stdout: hello"),
        activity(2, "j1", "executor", "stderr: oops"),
        activity(3, "j1", "executor", "copying"),
        activity(4, "", "executor", "stdout: no job"),
        activity(5, "j1", "admin", "stdout: an admin note"),
        activity(6, "j2", "detector", "stderr: a detector"),
        activity(7, "j2", "executor", "stdout:tight"),
        activity(8, "j2", "executor", "STDOUT: loud"),
        activity(9, "j2", "executor", "stdout: "),
        activity(10, "j2", "executor", " stdout: indented"),
    ];
    let writes: Vec<Write<'_>> = all.iter().map(Write::Activity).collect();
    backend.apply(&writes).unwrap();
    let expected = |f: &dyn Fn(&ActivityView) -> bool| -> Vec<i64> {
        all.iter().rev().filter(|a| !crate::job::is_output(a) && f(a)).map(|a| a.id).collect()
    };
    let ids = |v: Vec<ActivityView>| v.into_iter().map(|a| a.id).collect::<Vec<_>>();
    assert_eq!(ids(reader.feed(None, None, None, 100).unwrap()), expected(&|_| true));
    assert_eq!(ids(reader.feed(None, None, None, 100).unwrap()), vec![10, 8, 7, 6, 5, 4, 3]);
    assert_eq!(ids(reader.feed(Some("a"), None, None, 100).unwrap()), expected(&|a| a.job_type == "a"));
    assert_eq!(ids(reader.feed(None, Some("j1"), None, 100).unwrap()), expected(&|a| a.job_id == "j1"));
    assert_eq!(ids(reader.feed(None, None, Some(6), 2).unwrap()), vec![5, 4]);
    assert_eq!(reader.activities(None, None, None, 100).unwrap().len(), 10, "output lines stay stored");
    assert_eq!(reader.activities(None, None, None, 100).unwrap(), all.iter().rev().cloned().collect::<Vec<_>>());
}

async fn finished_jobs_are_those_in_a_final_state_that_completed_in_the_range(which: Which) {
    let place = Place::new(which, "finished");
    let (mut backend, reader) = place.backend();
    let mut jobs = Vec::new();
    for (seq, state, completed_at) in [
        (1, JobState::Succeeded, 1_000),
        (2, JobState::Failed, 2_000),
        (3, JobState::Canceled, 2_999),
        (4, JobState::Succeeded, 3_000),
        (5, JobState::Succeeded, 999),
        (6, JobState::Pending, 0),
    ] {
        let mut j = job(seq, state, 500);
        (j.completed_at, j.assigned_at, j.attempts_total) = (completed_at, 700, 1);
        j.worker_id = if seq == 3 { Box::default() } else { "w1".into() };
        jobs.push(j);
    }
    backend.apply(&jobs.iter().map(Write::InsertJob).collect::<Vec<_>>()).unwrap();
    let mut seen = Vec::new();
    reader.finished_jobs(1_000, 3_000, &mut |f| seen.push((f.state, f.completed_at, f.had_worker))).unwrap();
    seen.sort_by_key(|s| s.1);
    assert_eq!(
        seen,
        vec![(JobState::Succeeded, 1_000, true), (JobState::Failed, 2_000, true), (JobState::Canceled, 2_999, false)]
    );
}

/// A job with every field set: its spec's parameters, labels and cluster context, its
/// result values and stop request.
pub(super) fn every_field(seq: i64) -> crate::job::Job {
    let mut j = job(seq, JobState::Running, 1_234);
    {
        let spec = Arc::make_mut(&mut j.spec);
        spec.labels = [("team".to_string(), "storage".to_string())].into();
        spec.priority = pb::JobPriority::High as i32;
        (spec.detail, spec.not_before, spec.expires_at, spec.replay_of) = ("détail ✓".into(), 11, 12, 3);
        spec.cluster_context =
            Some(Arc::new(pb::ClusterContext { master_grpc_addresses: vec!["m:9333".into()], ..Default::default() }));
    }
    (j.attempts, j.attempts_total, j.worker_id, j.request_id) = (1, 3, "w9".into(), "r9".into());
    (j.progress, j.stage, j.message, j.error) = (42.5, "copy".into(), "half".into(), "none yet".into());
    (j.ready_at, j.assigned_at, j.completed_at, j.dead_letter) = (5, 6, 0, true);
    j.failed_on = vec!["w1".into(), "w2".into()];
    j.result_values = [("n".to_string(), pb::ConfigValue { kind: Some(pb::config_value::Kind::Int64Value(9)) })].into();
    j.stop = Some(Box::new(StopRequest { reason: "why".into(), outcome: JobState::Canceled, deadline: 0 }));
    j
}

/// Asserts that `got` is `want` as the store keeps it, field by field (the fields a
/// restart does not need, such as the dispatch stamp, aside).
pub(super) fn assert_same_job(got: &crate::job::Job, want: &crate::job::Job) {
    let show = |j: &crate::job::Job| format!("{:?}", (j.view(), &j.spec.labels, &j.spec.cluster_context, &j.stop));
    assert_eq!(show(got), show(want));
    assert_eq!((&got.failed_on, got.dead_letter, got.progress), (&want.failed_on, want.dead_letter, want.progress));
    assert_eq!(got.result_values, want.result_values);
    // What the view leaves out.
    let rest = |j: &crate::job::Job| {
        (j.attempts, j.ready_at, j.assigned_at, j.spec.priority, j.spec.detection_run, j.spec.parameters.clone())
    };
    assert_eq!(rest(got), rest(want));
}

/// Every field of a job survives the store; an update leaves the spec alone.
async fn a_job_round_trips_with_every_field(which: Which) {
    let place = Place::new(which, "round-trip");
    let (mut backend, reader) = place.backend();
    let j = every_field(7);
    backend.apply(&[Write::InsertJob(&j)]).unwrap();
    assert_same_job(&reader.job(7).unwrap().unwrap(), &j);

    let mut updated = j.clone();
    (updated.state, updated.stop, updated.completed_at) = (JobState::Failed, None, 99);
    Arc::make_mut(&mut updated.spec).summary = "not written by an update".into();
    backend.apply(&[Write::UpdateJob(&updated)]).unwrap();
    let got = reader.job(7).unwrap().unwrap();
    assert_eq!((got.state, got.stop.is_none(), got.completed_at), (JobState::Failed, true, 99));
    assert_eq!(got.spec.summary, j.spec.summary, "an update leaves the spec alone");

    // Every column an update writes, for two jobs in one batch (one array per column on
    // PostgreSQL).
    let mut changed = updated.clone();
    changed.spec = j.spec.clone();
    (changed.state, changed.attempts, changed.attempts_total) = (JobState::Pending, 2, 4);
    (changed.worker_id, changed.request_id, changed.progress) = ("w8".into(), "r8".into(), 7.25);
    (changed.stage, changed.message, changed.error) = ("s2".into(), "m2".into(), "e2".into());
    changed.result_summary = "sum2".into();
    (changed.updated_at, changed.ready_at, changed.assigned_at, changed.completed_at) = (21, 22, 23, 24);
    (changed.dead_letter, changed.failed_on) = (false, vec!["w3".into()]);
    changed.result_values =
        [("s".to_string(), pb::ConfigValue { kind: Some(pb::config_value::Kind::StringValue("x".into())) })].into();
    changed.stop = Some(Box::new(StopRequest { reason: "later".into(), outcome: JobState::Failed, deadline: 0 }));
    let mut second = job(8, JobState::Pending, 1_300);
    backend.apply(&[Write::InsertJob(&second)]).unwrap();
    (second.state, second.message, second.completed_at) = (JobState::Succeeded, "second".into(), 31);
    backend.apply(&[Write::UpdateJob(&changed), Write::UpdateJob(&second)]).unwrap();
    for want in [&changed, &second] {
        assert_same_job(&reader.job(want.seq).unwrap().unwrap(), want);
    }
}

/// Holds, schedules, audit events and their pruning, as the store loads and lists them.
async fn holds_schedules_and_audit_events_are_kept_and_loaded(which: Which) {
    use crate::{
        audit::{AuditEvent, AuditQuery},
        holds::{Hold, HoldKind},
        schedules::CronSchedule,
    };
    let place = Place::new(which, "holds-audit");
    let (store, loaded) = place.open(Arc::new(EventBus::new(16)));
    assert!(loaded.holds.is_empty() && loaded.schedules.is_empty());
    assert_eq!(loaded.next_audit_id, 1);
    let hold =
        |target: &str| Hold { kind: HoldKind::JobDispatch, target: target.into(), set_by: "op".into(), set_at: 5 };
    store.write(Op::Hold { hold: Box::new(hold("a")), active: true });
    store.write(Op::Hold { hold: Box::new(hold("b")), active: true });
    store.write(Op::Hold { hold: Box::new(hold("a")), active: false });
    let cron = |job_type: &str| CronSchedule {
        job_type: job_type.into(),
        cron: "0 * * * *".into(),
        time_zone: "UTC".into(),
        set_by: "op".into(),
        set_at: 6,
        last_fired_at: 0,
    };
    store.write(Op::Schedule { job_type: "x".into(), cron: Some(Box::new(cron("x"))) });
    store.write(Op::Schedule { job_type: "y".into(), cron: Some(Box::new(cron("y"))) });
    store.write(Op::Schedule { job_type: "y".into(), cron: None });
    store.write(Op::ScheduleFired { job_type: "x".into(), at: 77 });
    for id in 1..=5 {
        store.write(Op::Audit(Box::new(AuditEvent {
            id,
            at: 1_000 * id,
            actor: if id % 2 == 0 { "alice".into() } else { "bob".into() },
            actor_kind: "user".into(),
            action: "job.cancel".into(),
            target: format!("j{id}"),
            params: serde_json::json!({ "n": id }),
            outcome: "ok".into(),
            reason: String::new(),
            request_id: format!("q{id}"),
        })));
    }
    store.settle().await;
    let alice = AuditQuery { actor: Some("alice".into()), limit: 10, ..Default::default() };
    assert_eq!(store.audit(&alice).unwrap().iter().map(|e| e.id).collect::<Vec<_>>(), vec![4, 2]);
    assert_eq!(store.audit_count(&alice).unwrap(), 2);
    assert_eq!(store.audit(&AuditQuery { before_id: Some(3), limit: 10, ..Default::default() }).unwrap().len(), 2);
    assert_eq!(store.audit_oldest(1, 4, 2).unwrap().iter().map(|e| e.id).collect::<Vec<_>>(), vec![2, 3]);
    assert_eq!(store.audit_oldest(0, 1, 10).unwrap()[0].params, serde_json::json!({ "n": 1 }));
    assert_eq!(store.audit_cutoff(Some(2_500), None).unwrap(), Some((2, 2)));
    assert_eq!(store.audit_cutoff(None, Some(2)).unwrap(), Some((3, 3)));
    assert_eq!(store.audit_cutoff(Some(500), Some(10)).unwrap(), None);
    store.write(Op::PruneAudit { up_to_id: 5 });
    store.settle().await;
    assert_eq!(store.audit_count(&AuditQuery::default()).unwrap(), 0);
    store.close();

    let (store, loaded) = place.open(Arc::new(EventBus::new(16)));
    assert_eq!(loaded.holds, vec![hold("b")]);
    assert_eq!(loaded.schedules, vec![CronSchedule { last_fired_at: 77, ..cron("x") }]);
    assert_eq!(loaded.next_audit_id, 6, "pruned audit ids are not handed out again");
    store.close();
}

/// After a reopen, the load finds exactly the jobs that are not final and counts every
/// (job type, state), whatever states the jobs passed through; the listings filter by
/// type and by each state.
async fn the_load_finds_the_active_jobs_and_counts_every_state(which: Which) {
    use JobState::*;
    let place = Place::new(which, "load-counts");
    let events = Arc::new(EventBus::new(16));
    let (store, _) = place.open(events.clone());
    let now = now_ms();
    // (seq, type, states written in turn)
    let lives: [(i64, &str, &[JobState]); 9] = [
        (1, "a", &[Pending, Succeeded]),
        (2, "a", &[Pending, Failed]),
        (3, "b", &[Pending, Running, Succeeded]),
        (4, "b", &[Pending, Canceled]),
        (5, "a", &[Pending, Failed, Pending]),
        (6, "b", &[Pending]),
        (7, "a", &[Pending, Running]),
        (8, "b", &[Succeeded]),
        (9, "a", &[Pending, Succeeded, Succeeded]),
    ];
    for (seq, job_type, states) in lives {
        for (i, state) in states.iter().enumerate() {
            let mut j = job(seq, *state, now);
            Arc::make_mut(&mut j.spec).job_type = job_type.into();
            store.write(if i == 0 { Op::InsertJob(Arc::new(j)) } else { Op::UpdateJob(Arc::new(j)) });
            // One batch per write, so each is stored as written rather than coalesced.
            store.settle().await;
        }
    }
    store.close();

    let (store, loaded) = place.open(events);
    let active: Vec<(i64, JobState)> = loaded.active.iter().map(|j| (j.seq, j.state)).collect();
    assert_eq!(active, vec![(5, Pending), (6, Pending), (7, Running)]);
    let mut counts: Vec<((String, i32), i64)> = loaded.counts.into_iter().filter(|(_, n)| *n != 0).collect();
    counts.sort();
    let expected = [
        ("a", Pending, 1),
        ("a", Running, 1),
        ("a", Succeeded, 2),
        ("a", Failed, 1),
        ("b", Pending, 1),
        ("b", Succeeded, 2),
        ("b", Canceled, 1),
    ];
    let expected: Vec<((String, i32), i64)> =
        expected.iter().map(|(t, s, n)| ((t.to_string(), *s as i32), *n)).collect();
    assert_eq!(counts, expected);

    let listed = |job_type: Option<&str>, state: Option<JobState>| -> Vec<String> {
        let q = super::JobQuery { job_type: job_type.map(String::from), state, limit: 50, ..Default::default() };
        store.jobs(&q).unwrap().into_iter().map(|j| j.job_id).collect()
    };
    assert_eq!(listed(None, Some(Succeeded)), ["j9", "j8", "j3", "j1"]);
    assert_eq!(listed(None, Some(Pending)), ["j6", "j5"]);
    assert_eq!(listed(Some("a"), None), ["j9", "j7", "j5", "j2", "j1"]);
    assert_eq!(listed(Some("a"), Some(Failed)), ["j2"]);
    assert_eq!(listed(Some("b"), Some(Succeeded)), ["j8", "j3"]);
    assert_eq!(listed(Some("b"), Some(Canceled)), ["j4"]);
    store.close();
}

/// Dead letters, replays and the dedupe-key lookup.
async fn dead_letters_replays_and_dedupe_keys_are_found(which: Which) {
    let place = Place::new(which, "lookups");
    let (store, _) = place.open(Arc::new(EventBus::new(16)));
    for seq in 1..=6 {
        let mut j = job(seq, JobState::Failed, now_ms());
        j.dead_letter = seq <= 3;
        let spec = Arc::make_mut(&mut j.spec);
        spec.dedupe_key = format!("k{}", seq % 2).into();
        spec.replay_of = if seq >= 5 { 1 } else { 0 };
        if seq == 3 {
            spec.job_type = "other".into();
        }
        store.write(Op::InsertJob(Arc::new(j)));
    }
    store.settle().await;
    assert_eq!(store.dead_letters().unwrap(), vec![("other".to_string(), 1), ("t".to_string(), 2)]);
    assert_eq!(store.replayed_as(1).unwrap(), Some(6));
    assert_eq!(store.replayed_as(2).unwrap(), None);
    assert_eq!(store.replayed_as(0).unwrap(), None, "0 is no job");
    let keys = ["k0".to_string(), "k1".to_string(), "k9".to_string()];
    let newest = store.newest_with_keys("t", 1, &keys).unwrap();
    assert_eq!(newest, [("k0".to_string(), 6), ("k1".to_string(), 5)].into());
    assert!(store.newest_with_keys("t", 1, &[]).unwrap().is_empty());
    store.close();
}

on_both_backends!(
    a_batch_that_cannot_commit_is_retried_and_never_reported_durable_before_it_commits,
    a_batch_is_applied_all_or_nothing_and_the_error_says_what_failed,
    a_succeeded_attempt_is_held_by_its_job_row_and_listed_with_the_others,
    a_failed_query_is_a_backend_error_with_the_driver_error_as_its_source,
    the_feed_leaves_out_exactly_the_output_lines,
    finished_jobs_are_those_in_a_final_state_that_completed_in_the_range,
    a_job_round_trips_with_every_field,
    holds_schedules_and_audit_events_are_kept_and_loaded,
    dead_letters_replays_and_dedupe_keys_are_found,
    the_load_finds_the_active_jobs_and_counts_every_state,
);
