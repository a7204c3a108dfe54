//! The command layer's governance: every command lands in the audit trail (refusals
//! too), holds and schedules survive a restart, cron schedules fire on their slots and
//! once after downtime, replay and enqueue follow the dedupe rules, and the guardrails
//! refuse what they should.

use std::{sync::Arc, time::Duration};

use proto::pb::{self, JobState, admin_to_worker_message::Body};

use super::*;
use crate::{
    audit::AuditQuery,
    clock::Clock,
    holds::HoldKind,
    job::Job,
    store::Op,
    test_support::{Rig, TestWorker},
};

fn caller(name: &str, role: Role) -> Caller {
    Caller { actor: Actor::Token { name: name.into(), role }, request_id: format!("req-{name}"), approval: None }
}

fn ops() -> Caller {
    caller("ops", Role::Operator)
}

async fn trail(rig: &Rig) -> Vec<crate::audit::AuditEvent> {
    rig.c.store.settle().await;
    rig.c.store.audit(&AuditQuery { limit: 100, ..Default::default() }).unwrap()
}

/// A dead letter of `t` with this dedupe key, stored as a finished job.
async fn dead_letter(rig: &Rig, seq: i64, key: &str) -> Job {
    let mut job = Job::pending(seq, crate::test_support::spec(key, Rig::T0), Rig::T0);
    job.state = JobState::Failed;
    job.dead_letter = true;
    job.error = format!("boom {key}").into();
    job.completed_at = Rig::T0;
    rig.c.store.write(Op::InsertJob(Arc::new(job.clone())));
    rig.c.store.settle().await;
    job
}

fn proposal(key: &str) -> pb::JobProposal {
    pb::JobProposal { dedupe_key: key.into(), summary: format!("by hand {key}"), ..Default::default() }
}

async fn detection_request(w: &mut TestWorker) -> String {
    match w.next().await.body {
        Some(Body::RunDetectionRequest(r)) => r.request_id,
        other => panic!("expected a detection request, got {other:?}"),
    }
}

#[tokio::test]
async fn each_command_is_audited_with_its_actor_target_and_outcome_refusals_included() {
    let rig = Rig::new(|_| {});
    let created = rig
        .c
        .execute(&ops(), Command::EnqueueJob { job_type: "t".into(), proposal: proposal("a"), cluster_context: None })
        .await;
    let Ok(Outcome::Job(job)) = created else { panic!("enqueued: {created:?}") };
    let seq = crate::job::parse_job_id(&job.job_id).unwrap();
    rig.c.execute(&ops(), Command::CancelJob { seq, reason: "not needed".into() }).await.unwrap();
    let missing = rig.c.execute(&ops(), Command::CancelJob { seq: 999, reason: "x".into() }).await;
    assert!(matches!(missing, Err(Refusal::Job(_))), "{missing:?}");
    let viewer = caller("eve", Role::Viewer);
    let forbidden = rig.c.execute(&viewer, Command::PauseDispatch { paused: true }).await;
    assert!(matches!(forbidden, Err(Refusal::Forbidden { .. })), "{forbidden:?}");

    let events = trail(&rig).await;
    let summary: Vec<(&str, &str, &str, &str)> =
        events.iter().map(|e| (e.actor.as_str(), e.action.as_str(), e.target.as_str(), e.outcome.as_str())).collect();
    assert_eq!(
        summary,
        vec![
            ("eve", "pause_dispatch", "dispatch", "refused"),
            ("ops", "cancel_job", "j999", "refused"),
            ("ops", "cancel_job", job.job_id.as_str(), "done"),
            ("ops", "enqueue_job", "t", "done"),
        ],
        "newest first"
    );
    assert!(events[0].reason.contains("needs the operator role"), "{}", events[0].reason);
    assert_eq!(events[1].reason, "no job j999");
    assert_eq!(events[2].params["reason"], "not needed");
    assert_eq!(events[2].request_id, "req-ops");
    assert_eq!(events[3].params["dedupe_key"], "a");
    assert!(events.iter().all(|e| e.at == Rig::T0 && e.actor_kind != "local"));
    assert_eq!(rig.c.monitor.commands_counted("cancel_job", "not_found"), 1);
    assert_eq!(rig.c.monitor.commands_counted("cancel_job", "ok"), 1);
    assert_eq!(rig.c.monitor.commands_counted("pause_dispatch", "forbidden"), 1);
}

#[tokio::test]
async fn a_saved_config_is_audited_with_its_sensitive_values_redacted() {
    let rig = Rig::new(|_| {});
    let descriptor = crate::test_support::descriptor_with(vec![pb::ConfigField {
        name: "password".into(),
        field_type: pb::ConfigFieldType::String as i32,
        widget: pb::ConfigWidget::Password as i32,
        sensitive: true,
        ..Default::default()
    }]);
    rig.c.configs.save_descriptor(descriptor).unwrap();
    let config = pb::PersistedJobTypeConfig {
        job_type: "t".into(),
        admin_config_values: [("password".to_string(), crate::test_support::cv::s("hunter2-secret"))].into(),
        ..Default::default()
    };
    rig.c.execute(&caller("root", Role::Admin), Command::SaveConfig { config }).await.unwrap();
    let events = trail(&rig).await;
    assert_eq!(events[0].action, "save_config");
    assert!(!events[0].params.to_string().contains("hunter2"), "{}", events[0].params);
}

#[tokio::test]
async fn holds_survive_a_restart_and_a_held_type_keeps_its_jobs_pending() {
    let rig = Rig::new(|_| {});
    let mut w = rig.worker("w1", 4);
    let hold = Command::HoldJobType { job_type: "t".into(), detection: Some(true), dispatch: Some(true) };
    let Ok(Outcome::JobTypeHolds { detection, dispatch, .. }) = rig.c.execute(&ops(), hold).await else {
        panic!("held")
    };
    assert_eq!(detection.unwrap().set_by, "ops");
    assert_eq!(dispatch.unwrap().set_at, Rig::T0);
    rig.c.execute(&ops(), Command::SetDraining { worker_id: "w1".into(), draining: true }).await.unwrap();
    rig.c.execute(&ops(), Command::PauseSchedules { paused: true }).await.unwrap();
    rig.c
        .execute(&ops(), Command::EnqueueJob { job_type: "t".into(), proposal: proposal("k"), cluster_context: None })
        .await
        .unwrap();
    rig.c.store.settle().await;
    rig.c.dispatcher.dispatch_pass();
    assert!(w.is_quiet(), "a held type starts nothing");
    let run = rig
        .c
        .execute(
            &ops(),
            Command::Detect { job_type: "t".into(), mode: DetectionMode::Run, options: Default::default() },
        )
        .await;
    assert!(matches!(&run, Err(Refusal::Held(m)) if m.contains("held (by ops")), "{run:?}");

    let rig = rig.restart();
    let kinds: Vec<(HoldKind, String)> = rig.c.holds.list().into_iter().map(|h| (h.kind, h.target)).collect();
    assert_eq!(
        kinds,
        vec![
            (HoldKind::Schedules, String::new()),
            (HoldKind::Detection, "t".into()),
            (HoldKind::JobDispatch, "t".into()),
            (HoldKind::Drain, "w1".into()),
        ]
    );
    assert!(rig.c.registry.is_draining("w1"), "the drain is back before the worker is");
    let mut w = rig.worker("w2", 4);
    rig.c.store.settle().await;
    rig.c.dispatcher.dispatch_pass();
    assert!(w.is_quiet(), "still held after the restart");
    let release = Command::HoldJobType { job_type: "t".into(), detection: None, dispatch: Some(false) };
    rig.c.execute(&ops(), release).await.unwrap();
    rig.c.dispatcher.dispatch_pass();
    assert!(matches!(w.next().await.body, Some(Body::ExecuteJobRequest(_))), "released, the job starts");
    assert!(rig.c.holds.is_held(HoldKind::Detection, "t"), "the other hold stays");
}

#[tokio::test]
async fn a_cron_schedule_fires_on_its_slots_and_once_after_downtime() {
    // T0 is 2023-11-14T22:13:20Z; the hourly slots are 23:00, 00:00, ...
    let hour = 3_600_000;
    let first_slot = 1_700_002_800_000;
    let rig = Rig::new(|_| {});
    let schedule = ScheduleSpec::Cron { cron: "0 * * * *".into(), time_zone: "UTC".into() };
    let set = rig.c.execute(&ops(), Command::SetSchedule { job_type: "t".into(), schedule }).await;
    let Ok(Outcome::Schedule(view)) = set else { panic!("set: {set:?}") };
    assert_eq!((view.kind, view.next_fire_at, view.previous_fire_at), ("cron", Some(first_slot), None));
    let mut w = rig.worker("w1", 1);
    let s = &rig.c.scheduler;
    s.scheduler_pass();
    assert!(w.is_quiet(), "no detection before the first slot");
    rig.clock.advance(first_slot - Rig::T0 - 1);
    s.scheduler_pass();
    assert!(w.is_quiet(), "nor a millisecond before it");
    rig.clock.advance(1);
    s.scheduler_pass();
    let request_id = detection_request(&mut w).await;
    s.on_detection_complete(&w.session, pb::DetectionComplete { request_id, success: true, ..Default::default() });
    s.scheduler_pass();
    assert!(w.is_quiet(), "one detection per slot");
    assert_eq!(rig.c.schedule_view("t").unwrap().next_fire_at, Some(first_slot + hour));
    assert_eq!(rig.c.schedule_view("t").unwrap().previous_fire_at, Some(first_slot));

    // Down for five hours and a bit: one detection at start, then the next slot.
    let rig = rig.restart();
    rig.clock.advance(5 * hour + 600_000);
    let mut w = rig.worker("w1", 1);
    let s = &rig.c.scheduler;
    s.scheduler_pass();
    let request_id = detection_request(&mut w).await;
    s.on_detection_complete(&w.session, pb::DetectionComplete { request_id, success: true, ..Default::default() });
    s.scheduler_pass();
    assert!(w.is_quiet(), "the missed slots fire once, not five times");
    let now = rig.clock.now_ms();
    assert_eq!(rig.c.schedule_view("t").unwrap().previous_fire_at, Some(now));
    assert_eq!(rig.c.schedule_view("t").unwrap().next_fire_at, Some(first_slot + 6 * hour));
}

#[tokio::test]
async fn a_bad_schedule_is_refused_and_nothing_is_saved() {
    let rig = Rig::new(|_| {});
    for schedule in [
        ScheduleSpec::Cron { cron: "61 * * * *".into(), time_zone: "UTC".into() },
        ScheduleSpec::Cron { cron: "0 3 * * *".into(), time_zone: "Moon/Base".into() },
        ScheduleSpec::Interval { minutes: 0 },
    ] {
        let got = rig.c.execute(&ops(), Command::SetSchedule { job_type: "t".into(), schedule }).await;
        assert!(matches!(got, Err(Refusal::Schedule(_))), "{got:?}");
    }
    assert!(rig.c.schedules.get("t").is_none());
    assert_eq!(rig.c.schedule_view("t").unwrap().kind, "interval");
    let events = trail(&rig).await;
    assert_eq!(events.len(), 3);
    assert!(events.iter().all(|e| e.outcome == "refused" && e.action == "set_schedule"));
    assert!(events[2].reason.contains("61 * * * *"), "{}", events[2].reason);
}

#[tokio::test]
async fn wide_commands_need_the_approval_token_when_one_is_configured() {
    let rig = Rig::with_config(|_| {}, |c| c.approval_token = Some("approve-0123456789".into()));
    let pause = || Command::PauseDispatch { paused: true };
    assert!(matches!(rig.c.execute(&ops(), pause()).await, Err(Refusal::ApprovalRequired { .. })));
    let wrong = ops().with_approval(Some("guess".into()));
    assert!(matches!(rig.c.execute(&wrong, pause()).await, Err(Refusal::ApprovalWrong { .. })));
    assert!(!rig.c.holds.dispatch_paused());
    let right = ops().with_approval(Some("approve-0123456789".into()));
    rig.c.execute(&right, pause()).await.unwrap();
    assert!(rig.c.holds.dispatch_paused());
    let narrow = Command::HoldJobType { job_type: "t".into(), detection: Some(true), dispatch: None };
    rig.c.execute(&ops(), narrow).await.expect("a narrow hold needs no approval");
    let outcomes: Vec<String> = trail(&rig).await.iter().map(|e| e.outcome.clone()).collect();
    assert_eq!(outcomes, ["done", "done", "refused", "refused"]);
}

#[tokio::test]
async fn run_now_is_capped_per_job_type_within_its_window() {
    let rig = Rig::with_config(
        |_| {},
        |c| c.run_now_max = crate::config::RateCap { max: 2, window: Duration::from_secs(60) },
    );
    let _w = rig.worker("w1", 1);
    let run = || Command::Detect { job_type: "t".into(), mode: DetectionMode::Run, options: Default::default() };
    rig.c.execute(&ops(), run()).await.unwrap();
    rig.clock.advance(10_000);
    rig.c.execute(&ops(), run()).await.unwrap();
    let third = rig.c.execute(&ops(), run()).await;
    assert!(matches!(third, Err(Refusal::RateLimited { retry_after_secs: 50, .. })), "{third:?}");
    rig.clock.advance(50_000);
    rig.c.execute(&ops(), run()).await.expect("the first run left the window");
}

#[tokio::test]
async fn a_detection_of_a_job_type_needing_configuration_is_refused_audited_and_not_counted_against_the_cap() {
    let rig = Rig::with_config(
        |_| {},
        |c| c.run_now_max = crate::config::RateCap { max: 1, window: Duration::from_secs(60) },
    );
    let field = pb::ConfigField {
        name: "directories".into(),
        label: "Directories".into(),
        field_type: pb::ConfigFieldType::String as i32,
        required: true,
        ..Default::default()
    };
    let mut d = crate::test_support::descriptor_with(vec![field]);
    d.display_name = "SQLite vacuum".into();
    rig.c.configs.save_descriptor(d).unwrap();
    let mut w = rig.worker("w1", 1);
    let detect = |mode| Command::Detect { job_type: "t".into(), mode, options: Default::default() };
    for mode in [DetectionMode::Run, DetectionMode::Preview, DetectionMode::Run] {
        let refused = rig.c.execute(&ops(), detect(mode)).await;
        let Err(e @ Refusal::NeedsConfiguration { .. }) = refused else { panic!("{mode:?}: {refused:?}") };
        assert_eq!(e.to_string(), "SQLite vacuum needs configuration: set Directories");
    }
    let events = trail(&rig).await;
    assert_eq!(events.len(), 3);
    assert!(events.iter().all(|e| e.outcome == "refused" && e.reason.contains("set Directories")), "{events:?}");

    let mut config = (*rig.c.configs.config("t").unwrap()).clone();
    config.admin_config_values.insert("directories".into(), crate::test_support::cv::s("/data"));
    rig.c.execute(&caller("root", Role::Admin), Command::SaveConfig { config }).await.unwrap();
    rig.c.execute(&ops(), detect(DetectionMode::Run)).await.expect("configured, it runs; the refusals took no slot");
    rig.c.scheduler.scheduler_pass();
    detection_request(&mut w).await;
}

#[tokio::test]
async fn replay_honours_eligibility_the_limit_and_the_dry_run() {
    let rig = Rig::new(|_| {});
    dead_letter(&rig, 1, "a").await;
    dead_letter(&rig, 2, "b").await;
    dead_letter(&rig, 3, "c").await;
    dead_letter(&rig, 4, "a").await; // j1's key again: j1 has a newer job
    // Written behind the dispatcher's back: a restart loads them like any stored jobs.
    let rig = rig.restart();
    let replay = |dry_run, limit| Command::ReplayJobs { filter: ReplayFilter::default(), limit, dry_run };
    let Ok(Outcome::Replay(dry)) = rig.c.execute(&ops(), replay(true, 2)).await else { panic!("dry run") };
    assert_eq!((dry.matched, dry.eligible, dry.over_limit), (4, 3, 1));
    assert_eq!(dry.ineligible.len(), 1);
    assert_eq!(dry.ineligible[0].job_id, "j1");
    assert_eq!(dry.ineligible[0].reason, "a newer job with the same dedupe key exists: j4");
    assert!(dry.replayed.is_empty());
    rig.c.store.settle().await;
    assert!(rig.c.store.job(5).unwrap().is_none(), "a dry run creates nothing");

    let Ok(Outcome::Replay(done)) = rig.c.execute(&ops(), replay(false, 2)).await else { panic!("replay") };
    let pairs: Vec<(String, String)> = done.replayed.iter().map(|r| (r.job_id.clone(), r.replay_of.clone())).collect();
    assert_eq!(pairs, vec![("j5".into(), "j3".into()), ("j6".into(), "j4".into())], "the newest two, oldest first");
    let j5 = rig.c.dispatcher.job(5).unwrap();
    assert_eq!((j5.spec.replay_of, &*j5.spec.dedupe_key, j5.state), (3, "c", JobState::Pending));

    let Ok(Outcome::Replay(again)) = rig.c.execute(&ops(), replay(true, 10)).await else { panic!("again") };
    let reasons: Vec<&str> = again.ineligible.iter().map(|i| i.reason.as_str()).collect();
    assert_eq!(
        reasons,
        vec!["already replayed as j6", "already replayed as j5", "a newer job with the same dedupe key exists: j6"]
    );
    assert_eq!(again.eligible, 1, "only j2 is left");
    let over = rig.c.execute(&ops(), replay(false, 5000)).await;
    assert!(matches!(&over, Err(Refusal::Invalid(m)) if m.contains("--replay-max")), "{over:?}");
    let by_id = Command::ReplayJobs {
        filter: ReplayFilter { ids: vec![5, 77], ..Default::default() },
        limit: 0,
        dry_run: true,
    };
    let Ok(Outcome::Replay(ids)) = rig.c.execute(&ops(), by_id).await else { panic!("by id") };
    let reasons: Vec<(&str, &str)> = ids.ineligible.iter().map(|i| (i.job_id.as_str(), i.reason.as_str())).collect();
    assert_eq!(reasons, vec![("j77", "no such job"), ("j5", "still active")]);
}

#[tokio::test]
async fn enqueue_follows_the_dedupe_rules_and_checks_its_input() {
    let rig = Rig::new(|_| {});
    let enqueue =
        |job_type: &str, p| Command::EnqueueJob { job_type: job_type.into(), proposal: p, cluster_context: None };
    let Ok(Outcome::Job(first)) = rig.c.execute(&ops(), enqueue("t", proposal("k"))).await else { panic!("first") };
    assert_eq!((first.state, first.summary.as_str(), first.priority), ("pending", "by hand k", "normal"));
    let dup = rig.c.execute(&ops(), enqueue("t", proposal("k"))).await;
    assert!(matches!(&dup, Err(Refusal::Duplicate { job_id }) if *job_id == first.job_id), "{dup:?}");
    let unknown = rig.c.execute(&ops(), enqueue("nope", proposal("k"))).await;
    assert!(matches!(unknown, Err(Refusal::UnknownJobType(_))), "{unknown:?}");
    let mut big = proposal("big");
    big.parameters.insert("blob".into(), crate::test_support::cv::s(&"x".repeat(2 * 1024 * 1024)));
    let big = rig.c.execute(&ops(), enqueue("t", big)).await;
    assert!(matches!(&big, Err(Refusal::Invalid(m)) if m.contains("parameters")), "{big:?}");
    let script = rig.c.execute(&ops(), enqueue("script", proposal("s"))).await;
    assert!(matches!(script, Err(Refusal::Forbidden { .. })), "a script job needs an admin: {script:?}");
}

#[tokio::test]
async fn a_detection_given_its_own_cluster_context_needs_an_admin_and_its_options_are_audited() {
    let rig = Rig::new(|_| {});
    let mut w = rig.worker("w1", 1);
    let options = DetectOptions {
        cluster_context: Some(pb::ClusterContext {
            master_grpc_addresses: vec!["m:9333".into()],
            ..Default::default()
        }),
        max_results: Some(3),
        timeout_seconds: Some(7),
    };
    let detect =
        |options: DetectOptions| Command::Detect { job_type: "t".into(), mode: DetectionMode::Preview, options };
    let refused = rig.c.execute(&ops(), detect(options.clone())).await;
    assert!(matches!(&refused, Err(Refusal::Forbidden { needed: Role::Admin, .. })), "{refused:?}");
    let counts_only = DetectOptions { cluster_context: None, ..options.clone() };
    rig.c.execute(&ops(), detect(counts_only)).await.unwrap();
    rig.c.scheduler.scheduler_pass();
    let Some(Body::RunDetectionRequest(r)) = w.next().await.body else { panic!("no detection request") };
    assert_eq!(r.max_results, 3);
    rig.c.scheduler.on_detection_complete(
        &w.session,
        pb::DetectionComplete { request_id: r.request_id, success: true, ..Default::default() },
    );
    rig.c.execute(&caller("root", Role::Admin), detect(options)).await.unwrap();
    rig.c.scheduler.scheduler_pass();
    let Some(Body::RunDetectionRequest(r)) = w.next().await.body else { panic!("no detection request") };
    assert_eq!(r.cluster_context.unwrap().master_grpc_addresses, vec!["m:9333".to_string()]);

    let events = trail(&rig).await;
    let params: Vec<&serde_json::Value> = events.iter().filter(|e| e.action == "detect").map(|e| &e.params).collect();
    assert_eq!(params.len(), 3);
    assert_eq!(params[1], &serde_json::json!({ "max_results": 3, "timeout_seconds": 7 }));
    assert_eq!(params[2]["cluster_context"]["master_grpc_addresses"], serde_json::json!(["m:9333"]));
    let plain = Command::Detect { job_type: "t".into(), mode: DetectionMode::Run, options: Default::default() };
    assert_eq!(plain.audit_params(&rig.c), serde_json::json!({}), "no options, no params (as before)");
}
