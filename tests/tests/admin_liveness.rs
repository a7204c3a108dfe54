//! Liveness judges each worker by its own cadence: a real admin advertising 1 s heartbeats
//! keeps a worker that beats every 3 s whatever it is told (as SeaweedFS's Go worker beats
//! every 15 s), shows the cadence it keeps, and still drops it when it stalls. (A worker
//! that keeps the advertised interval is still dropped within three of them:
//! `admin_jobs::a_worker_whose_stream_stalls_is_declared_lost_within_three_heartbeat_intervals`.)

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use serde_json::Value;
use tests::{
    TempDir,
    fake_worker::{FakeWorker, FakeWorkerSpec},
    harness::TestAdmin,
    wait_for,
};

const T: &str = "cadence_test";
const CADENCE: Duration = Duration::from_secs(3);
/// Beats it must stay attached through: 20 of its gaps is 60 s, 20 x the old limit.
const BEATS: usize = 21;

/// The worker's entry in `GET /api/plugin/workers`, if it is listed.
async fn listed(admin: &TestAdmin, worker_id: &str) -> Option<Value> {
    let workers = admin.get("/api/plugin/workers").await;
    workers.as_array()?.iter().find(|w| w["worker_id"] == worker_id).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_keeps_its_own_slower_cadence_stays_attached_and_is_dropped_when_it_stalls() {
    let dir = TempDir::new("liveness-cadence");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let spec = FakeWorkerSpec::new("slow-beats", T, 1).heartbeat_every(CADENCE);
    let worker = FakeWorker::start(admin.grpc, spec).await;
    assert_eq!(worker.hello.heartbeat_interval_seconds, 1, "the admin advertises 1 s");
    let first = listed(&admin, "slow-beats").await.expect("listed after the hello");

    // Every poll until the 21st beat finds the same session listed: a 3 s gap is three
    // advertised intervals, so judged by those alone it would have been dropped by now.
    let view = wait_for("21 heartbeats at 3 s", Duration::from_secs(120), || async {
        let view = listed(&admin, "slow-beats").await;
        let beats = worker.heartbeats.load(Ordering::Relaxed);
        let view = view.unwrap_or_else(|| panic!("dropped after {beats} heartbeats 3 s apart"));
        assert_eq!(view["connected_at"], first["connected_at"], "the same session");
        (beats >= BEATS).then_some(view)
    })
    .await;
    let observed = view["heartbeat_interval_observed_ms"].as_i64().expect("an observed cadence");
    assert!((2_500..=4_500).contains(&observed), "observed cadence {observed} ms: {view}");
    assert_eq!(view["lost_after_silence_ms"].as_i64(), Some(3 * observed), "{view}");

    worker.stall();
    let stalled = Instant::now();
    wait_for("the stalled worker dropped", Duration::from_secs(30), || async {
        listed(&admin, "slow-beats").await.is_none().then_some(())
    })
    .await;
    // Its last beat came at most 3 s before the stall, and it is judged by 3 x 3 s.
    let waited = stalled.elapsed();
    assert!(waited >= Duration::from_secs(5), "dropped {waited:?} after the stall, before 3 of its own gaps");
    admin.stop().await;
}
