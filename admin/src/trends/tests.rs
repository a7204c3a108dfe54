//! The trends over time (a manual clock): histograms, the rings' windows, jobs run by
//! the real dispatcher counted live and counted the same from the store after a restart,
//! and the sampled gauges.

use proto::pb::{self, JobState, admin_to_worker_message::Body};

use super::*;
use crate::{
    clock::{Clock, ManualClock},
    dispatcher::{Admission, NewJob},
    test_support::{Rig, TestWorker},
};

const T0: i64 = Rig::T0;

#[test]
fn every_duration_falls_in_the_bucket_that_holds_it() {
    for ms in (0..5000).chain([65_535, 65_536, 1 << 20, (1 << 27) - 1]) {
        let (low, high) = Hist::bounds(Hist::index(ms));
        assert!(low <= ms as f64 && (ms as f64) < high, "{ms} ms is not in [{low}, {high})");
    }
    assert_eq!(Hist::index(i64::MAX), HIST_BUCKETS - 1, "longer durations land in the last bucket");
    assert_eq!(Hist::index(-5), 0);
}

#[test]
fn percentiles_are_estimated_within_their_bucket() {
    let mut h = Hist::EMPTY;
    assert_eq!(h.quantile(0.5), None);
    for ms in 1..=1000 {
        h.add(ms);
    }
    let near = |got: Option<i64>, want: f64| {
        let got = got.unwrap() as f64;
        assert!((got - want).abs() / want < 0.2, "{got} is not within 20 % of {want}");
    };
    near(h.quantile(0.5), 500.0);
    near(h.quantile(0.95), 950.0);
    let mut one = Hist::EMPTY;
    one.add(1500);
    let p = one.quantile(0.5).unwrap();
    assert!((1024..=2048).contains(&p), "a single value's percentile stays in its bucket: {p}");
}

fn done(job_type: &str, state: JobState, at: i64) -> Finished<'_> {
    Finished { job_type, state, at, wait_ms: Some(100), run_ms: Some(2_000) }
}

#[test]
fn a_finished_job_counts_in_its_minute_and_its_quarter_hour_until_they_leave_the_window() {
    let clock = ManualClock::new(T0);
    let trends = Trends::new(clock.clone());
    trends.finished(&done("t", JobState::Succeeded, T0));
    trends.finished(&done("t", JobState::Failed, T0 + 10));
    trends.finished(&done("t", JobState::Canceled, T0 + 20));
    trends.finished(&done("other", JobState::Succeeded, T0));

    let hour = trends.series(Some("t"), Window::Hour);
    assert_eq!((hour.buckets.len(), hour.bucket_seconds, hour.window), (60, 60, "1h"));
    let last = hour.buckets.last().unwrap();
    assert_eq!((last.succeeded, last.failed, last.canceled), (1, 1, 1));
    assert_eq!(last.start, T0 - T0.rem_euclid(60_000));
    assert_eq!((hour.totals.succeeded, hour.totals.failed, hour.totals.canceled), (1, 1, 1));
    assert!(hour.totals.run_p50_ms.is_some_and(|p| (1_600..2_400).contains(&p)), "{:?}", hour.totals);
    assert_eq!(trends.series(None, Window::Hour).totals.succeeded, 2, "all job types together");
    assert_eq!(trends.series(Some("nobody"), Window::Hour).totals.succeeded, 0);

    clock.advance(59 * 60_000);
    assert_eq!(trends.series(Some("t"), Window::Hour).totals.succeeded, 1, "still in the hour");
    clock.advance(60_000);
    assert_eq!(trends.series(Some("t"), Window::Hour).totals.succeeded, 0, "an hour later it left the hour");
    let day = trends.series(Some("t"), Window::Day);
    assert_eq!((day.buckets.len(), day.bucket_seconds), (96, 900));
    assert_eq!(day.totals.succeeded, 1, "the day still has it");

    // A job that finishes now reuses the slot of an hour ago, cleared first.
    trends.finished(&done("t", JobState::Succeeded, clock.now_ms()));
    assert_eq!(trends.series(Some("t"), Window::Hour).totals.succeeded, 1);
    assert_eq!(trends.series(Some("t"), Window::Day).totals.succeeded, 2);

    clock.advance(24 * 3_600_000);
    assert_eq!(trends.series(Some("t"), Window::Day).totals.succeeded, 0, "a day later the day is empty");
}

#[test]
fn a_job_older_than_the_window_is_not_counted() {
    let clock = ManualClock::new(T0);
    let trends = Trends::new(clock.clone());
    trends.finished(&done("t", JobState::Succeeded, T0 - 2 * 3_600_000));
    assert_eq!(trends.series(Some("t"), Window::Hour).totals.succeeded, 0);
    assert_eq!(trends.series(Some("t"), Window::Day).totals.succeeded, 1);
    trends.finished(&done("t", JobState::Succeeded, T0 - 25 * 3_600_000));
    assert_eq!(trends.series(Some("t"), Window::Day).totals.succeeded, 1, "older than a day");
}

/// Admits a job of type `t` and waits until the worker has its execute request.
async fn start_job(rig: &Rig, w: &mut TestWorker, key: &str) -> pb::ExecuteJobRequest {
    let spec = crate::test_support::spec(key, rig.clock.now_ms());
    let out = rig.c.dispatcher.admit(vec![NewJob { spec }], 10);
    assert!(matches!(out[0], Admission::Created { .. }), "{out:?}");
    rig.c.store.settle().await;
    // The job enters the queue from a task that waits for it to be durable.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        rig.c.dispatcher.dispatch_pass();
        if let Ok(Ok(msg)) = w.rx.try_recv()
            && let Some(Body::ExecuteJobRequest(r)) = msg.body
        {
            return r;
        }
        assert!(tokio::time::Instant::now() < deadline, "job {key} was never dispatched");
        tokio::task::yield_now().await;
    }
}

fn completed(request_id: &str, success: bool) -> pb::JobCompleted {
    pb::JobCompleted {
        request_id: request_id.into(),
        success,
        error_message: if success { String::new() } else { "boom".into() },
        ..Default::default()
    }
}

/// Waits until every event queued so far was published (and so observed): the store's
/// publisher publishes a batch's events before it reports a later batch durable.
async fn published(rig: &Rig) {
    let barrier = rig.c.store.submit(None, None);
    rig.c.store.durable(barrier).await.unwrap();
}

/// The job type's series once `n` jobs have finished in it (a final step's event can
/// reach the observer after the barrier of [`published`] when the step's write is
/// queued behind it), or panics after a deadline.
async fn finished_jobs(rig: &Rig, n: u64) -> Series {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let s = rig.c.trends.series(Some("t"), Window::Hour);
        if s.totals.succeeded + s.totals.failed + s.totals.canceled >= n {
            return s;
        }
        let states: Vec<_> = rig
            .c
            .dispatcher
            .list_jobs(&Default::default())
            .unwrap_or_default()
            .iter()
            .map(|j| (j.job_id.clone(), j.state))
            .collect();
        assert!(
            tokio::time::Instant::now() < deadline,
            "{n} finished jobs never counted: {:?}; jobs {states:?}",
            s.totals
        );
        published(rig).await;
    }
}

#[tokio::test]
async fn jobs_the_dispatcher_finishes_are_counted_live_and_alike_from_the_store_after_a_restart() {
    let rig = Rig::new(|d| d.retry_limit = 0);
    let mut w = rig.worker("w1", 1);
    for (key, success, run_ms) in [("a", true, 1_500), ("b", true, 3_000), ("c", false, 800)] {
        rig.clock.advance(250);
        let req = start_job(&rig, &mut w, key).await;
        rig.clock.advance(run_ms);
        rig.c.dispatcher.on_completed(&w.session, completed(&req.request_id, success));
    }
    published(&rig).await;
    let live = finished_jobs(&rig, 3).await;
    assert_eq!((live.totals.succeeded, live.totals.failed, live.totals.canceled), (2, 1, 0));
    let run_p50 = live.totals.run_p50_ms.expect("run durations");
    assert!((1_200..=1_800).contains(&run_p50), "p50 of 0.8, 1.5 and 3 s: {run_p50}");
    assert!(live.totals.wait_p50_ms.is_some());
    assert!(!live.complete, "not rebuilt from the store yet");

    rig.clock.advance(60_000);
    let rig = rig.restart();
    let fresh = rig.c.trends.series(Some("t"), Window::Hour);
    assert_eq!(fresh.totals.succeeded, 0, "a new start knows nothing before its rebuild");
    assert_eq!(rig.c.trends.rebuild_from(&rig.c.store).unwrap(), 3);
    let rebuilt = rig.c.trends.series(Some("t"), Window::Hour);
    assert!(rebuilt.complete);
    assert_eq!(rebuilt.totals.succeeded, live.totals.succeeded);
    assert_eq!(rebuilt.totals.failed, live.totals.failed);
    assert_eq!(rebuilt.totals.run_p50_ms, live.totals.run_p50_ms);
    assert_eq!(rebuilt.totals.run_p95_ms, live.totals.run_p95_ms);
    assert_eq!(rebuilt.totals.wait_p50_ms, live.totals.wait_p50_ms, "jobs that started once: the same wait");
    let counts = |s: &Series| s.buckets.iter().map(|p| (p.start, p.succeeded, p.failed)).collect::<Vec<_>>();
    assert_eq!(counts(&rebuilt)[..59], counts(&live)[1..], "the same buckets, a minute later");
}

#[tokio::test]
async fn sampling_keeps_the_peak_queue_depth_and_slot_use_of_each_bucket() {
    let rig = Rig::new(|_| {});
    let mut w = rig.worker("w1", 2);
    let _running = start_job(&rig, &mut w, "a").await;
    for key in ["b", "c", "d"] {
        rig.c.dispatcher.admit(vec![NewJob { spec: crate::test_support::spec(key, T0) }], 10);
    }
    rig.c.store.settle().await;
    rig.c.trends.sample(&rig.c.dispatcher, &rig.c.registry);
    let s = rig.c.trends.series(Some("t"), Window::Hour);
    let last = s.buckets.last().unwrap();
    assert_eq!((last.queue_depth, last.slots_used, last.slots_total), (Some(3), Some(1), Some(2)));
    assert_eq!(s.totals.queue_depth_now, Some(3));
    assert_eq!(s.buckets[0].queue_depth, None, "no sample an hour ago");

    let _second = start_job(&rig, &mut w, "e").await;
    rig.c.trends.sample(&rig.c.dispatcher, &rig.c.registry);
    let s = rig.c.trends.series(Some("t"), Window::Hour);
    let last = s.buckets.last().unwrap();
    assert_eq!(last.slots_used, Some(2), "the peak of the bucket");
    assert_eq!(last.queue_depth, Some(3), "the peak, not the last sample");
    let overall = rig.c.trends.series(None, Window::Hour);
    assert_eq!(overall.totals.slots_total_now, Some(0), "the worker reported no heartbeat yet");
    assert!(overall.buckets.last().unwrap().queue_depth.is_some());
}
