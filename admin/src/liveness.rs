//! Liveness: declares workers lost after three silent heartbeat intervals, and publishes
//! a summary of slot use for the live pages.
//!
//! "An interval" is each worker's own: the longer of the interval the admin advertises and
//! the one the worker is seen to keep ([`Cadence`]). Workers that follow the advertised
//! interval are judged by it (lost within 3 x advertised of a stall); workers that keep
//! their own, such as SeaweedFS's Go worker (every 15 s whatever it is told), are judged
//! by theirs instead of being dropped after one late beat.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::{
    clock::SharedClock,
    events::{EventBus, EventKind},
    registry::Registry,
    worker_history::LeftBecause,
};

/// How often the slot summary is published at most.
const SUMMARY_EVERY_MS: i64 = 2000;

/// Silent intervals after which a worker is lost.
const SILENT_INTERVALS: i64 = 3;

/// The longest interval a worker is credited with, whatever it keeps: 4 x the 15 s of
/// SeaweedFS's Go worker and 12 x the admin's default 5 s. Without a cap a worker could
/// stretch its gaps until it is never lost; with it, a worker is lost after at most
/// 3 minutes of silence (or 3 x the advertised interval, when the operator set that longer).
pub const MAX_OBSERVED_INTERVAL_MS: i64 = 60_000;

/// Gaps up to the advertised interval plus a quarter of it are the advertised interval
/// with arrival jitter, not a cadence of the worker's own.
const JITTER_DIVISOR: i64 = 4;

/// Heartbeat gaps a [`Cadence`] remembers: enough to ride out one short gap, few enough to
/// forget a one-off long one within a minute at a 15 s cadence.
const GAPS: usize = 4;

/// The interval a worker actually keeps between heartbeats, from its last few gaps.
///
/// The first gap runs from the hello to the first heartbeat: a worker that beats at once
/// (the SDK) shows nothing, and one that waits its own interval first (SeaweedFS's Go
/// worker) shows that interval before the admin first judges its silence by it.
#[derive(Debug, Clone, Copy)]
pub struct Cadence {
    last_beat: i64,
    gaps: [i64; GAPS],
    len: usize,
    next: usize,
}

impl Cadence {
    /// A session that connected at `connected_at` and has not beaten yet.
    pub fn new(connected_at: i64) -> Cadence {
        Cadence { last_beat: connected_at, gaps: [0; GAPS], len: 0, next: 0 }
    }

    /// Records a heartbeat that arrived at `now`.
    pub fn beat(&mut self, now: i64) {
        self.gaps[self.next] = (now - self.last_beat).max(0);
        self.next = (self.next + 1) % GAPS;
        self.len = (self.len + 1).min(GAPS);
        self.last_beat = now;
    }

    /// The interval the worker keeps: the longest of its recent gaps (so an increase counts
    /// at once, and jitter never makes the estimate short), at most
    /// [`MAX_OBSERVED_INTERVAL_MS`]; `None` before its first heartbeat. Only finished gaps
    /// count: the silence being judged never raises its own limit.
    pub fn observed_ms(&self) -> Option<i64> {
        self.gaps[..self.len].iter().max().map(|gap| (*gap).min(MAX_OBSERVED_INTERVAL_MS))
    }
}

/// How long a worker may stay silent before it is lost: 3 x the longer of the advertised
/// interval and the one it keeps. Before its first heartbeat its interval is unknown, so
/// the first one may take up to the longest interval credited
/// ([`MAX_OBSERVED_INTERVAL_MS`]) or 3 advertised intervals, whichever is longer.
pub fn silence_limit_ms(advertised: Duration, cadence: &Cadence) -> i64 {
    let advertised = i64::try_from(advertised.as_millis()).unwrap_or(i64::MAX / SILENT_INTERVALS);
    match cadence.observed_ms() {
        None => SILENT_INTERVALS.saturating_mul(advertised).max(MAX_OBSERVED_INTERVAL_MS),
        Some(observed) => SILENT_INTERVALS.saturating_mul(kept_interval_ms(advertised, observed)),
    }
}

/// The interval a worker is judged by: its own when clearly longer than the advertised
/// one, else the advertised one. A compliant worker's gaps arrive a little late now and
/// then (scheduling, the network); that jitter must not stretch its limit past
/// 3 x the advertised interval.
fn kept_interval_ms(advertised: i64, observed: i64) -> i64 {
    if observed > advertised.saturating_add(advertised / JITTER_DIVISOR) { observed } else { advertised }
}

pub struct Liveness {
    registry: Arc<Registry>,
    events: Arc<EventBus>,
    clock: SharedClock,
}

impl Liveness {
    /// Judges the registry's workers by its advertised heartbeat interval
    /// ([`Registry::heartbeat_interval`]) and their own.
    pub fn new(registry: Arc<Registry>, events: Arc<EventBus>, clock: SharedClock) -> Liveness {
        Liveness { registry, events, clock }
    }

    /// Closes the streams of workers silent for longer than [`silence_limit_ms`] allows;
    /// returns how many. Closing a stream ends its session, which requeues its work.
    pub fn sweep(&self) -> usize {
        let now = self.clock.now_ms();
        let mut lost = 0;
        for s in self.registry.sessions() {
            let silent = now - s.last_seen();
            let limit_ms = self.registry.silence_limit_ms(&s);
            if silent > limit_ms {
                tracing::warn!(worker_id = %s.worker_id, silent_ms = silent, limit_ms, "worker lost: no heartbeat");
                s.close(LeftBecause::Lost, &format!("no heartbeat for {} s", silent / 1000));
                lost += 1;
            }
        }
        lost
    }

    /// Publishes every worker's slot use added up.
    fn publish_summary(&self) {
        let sessions = self.registry.sessions();
        if sessions.is_empty() {
            return;
        }
        let (mut used, mut total) = (0i64, 0i64);
        for s in &sessions {
            let hb = s.heartbeat();
            used += i64::from(hb.execution_slots_used);
            total += i64::from(hb.execution_slots_total);
        }
        self.events.publish(EventKind::Heartbeat {
            workers: sessions.len(),
            execution_slots_used: used,
            execution_slots_total: total,
        });
    }

    /// Sweeps a few times per interval until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let interval = self.registry.heartbeat_interval();
        let mut tick = tokio::time::interval(Duration::from_millis(250).min(interval / 2));
        let mut last_summary = 0i64;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => break,
            }
            self.sweep();
            let now = self.clock.now_ms();
            if now - last_summary >= SUMMARY_EVERY_MS {
                last_summary = now;
                self.publish_summary();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        clock::{Clock, ManualClock},
        registry::WorkerSession,
    };
    use proto::pb;

    /// A registry advertising `advertised_s`, its liveness, and one worker `w1` that has
    /// just connected.
    struct Setup {
        clock: Arc<ManualClock>,
        liveness: Liveness,
        session: Arc<WorkerSession>,
        _rx: tokio::sync::mpsc::Receiver<crate::registry::Outgoing>,
    }

    fn setup(advertised_s: u64) -> Setup {
        let clock = ManualClock::new(1_000_000);
        let registry = Arc::new(Registry::new(Duration::from_secs(advertised_s)));
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let hello = pb::WorkerHello { worker_id: "w1".into(), ..Default::default() };
        let session = Arc::new(WorkerSession::new(1, hello, tx, clock.now_ms()));
        registry.register(session.clone());
        let liveness = Liveness::new(registry, Arc::new(EventBus::new(16)), clock.clone());
        Setup { clock, liveness, session, _rx: rx }
    }

    impl Setup {
        /// Waits `gap_ms`, sweeping every 100 ms on the way (the worker must survive each
        /// sweep), then delivers a heartbeat.
        fn beat_after(&self, gap_ms: i64) {
            let mut waited = 0;
            while waited < gap_ms {
                let step = (gap_ms - waited).min(100);
                self.clock.advance(step);
                waited += step;
                assert_eq!(self.liveness.sweep(), 0, "lost {waited} ms into a {gap_ms} ms gap");
            }
            let now = self.clock.now_ms();
            self.session.touch(now);
            self.session.beat(now);
        }

        /// Stays silent, sweeping every 100 ms, until the worker is lost; returns the
        /// silence that lost it, or panics after `give_up_ms`.
        fn silence_until_lost(&self, give_up_ms: i64) -> i64 {
            let mut silent = 0;
            while silent <= give_up_ms {
                self.clock.advance(100);
                silent += 100;
                if self.liveness.sweep() == 1 {
                    assert!(self.session.kill.is_cancelled());
                    return silent;
                }
            }
            panic!("still attached after {give_up_ms} ms of silence");
        }
    }

    #[tokio::test]
    async fn a_worker_silent_for_three_intervals_is_declared_lost_and_not_before() {
        let t = setup(5);
        t.session.beat(t.clock.now_ms());
        t.clock.advance(5_000);
        t.session.touch(t.clock.now_ms());
        t.session.beat(t.clock.now_ms());
        t.clock.advance(15_000);
        assert_eq!(t.liveness.sweep(), 0, "exactly three intervals of silence is still alive");
        assert!(!t.session.kill.is_cancelled());
        t.clock.advance(1);
        assert_eq!(t.liveness.sweep(), 1);
        assert!(t.session.kill.is_cancelled());
        assert_eq!(t.session.close_reason().as_deref(), Some("no heartbeat for 15 s"));
    }

    #[tokio::test]
    async fn a_worker_that_keeps_15_s_under_an_advertised_5_s_stays_and_is_lost_after_three_of_its_own() {
        let t = setup(5);
        // SeaweedFS's Go worker: the first heartbeat a whole interval after the hello,
        // then every 15 s give or take.
        for gap in [15_300, 14_900, 15_100, 15_300, 15_000, 14_800].repeat(4) {
            t.beat_after(gap);
        }
        assert_eq!(t.session.cadence().observed_ms(), Some(15_300));
        let lost_after = t.silence_until_lost(60_000);
        assert!((45_900..=46_000).contains(&lost_after), "lost after {lost_after} ms");
    }

    #[tokio::test]
    async fn a_compliant_worker_is_lost_within_three_advertised_intervals_of_a_stall() {
        let t = setup(5);
        t.session.beat(t.clock.now_ms());
        // Arrival jitter does not stretch its limit.
        for gap in [5_000, 5_200, 4_800, 5_100, 5_000, 5_250].repeat(3) {
            t.beat_after(gap);
        }
        assert_eq!(t.liveness.registry.silence_limit_ms(&t.session), 15_000);
        let lost_after = t.silence_until_lost(60_000);
        assert!(lost_after <= 15_100, "lost after {lost_after} ms");
    }

    #[tokio::test]
    async fn one_long_stall_is_judged_by_the_gaps_before_it() {
        let t = setup(5);
        for _ in 0..8 {
            t.beat_after(15_000);
        }
        // A stall of 50 s: it is judged against 3 x 15 s, and never becomes a gap.
        let lost_after = t.silence_until_lost(50_000);
        assert!((45_000..=45_100).contains(&lost_after), "lost after {lost_after} ms");
        assert_eq!(t.session.cadence().observed_ms(), Some(15_000));
    }

    #[tokio::test]
    async fn the_first_heartbeat_may_take_up_to_the_cap_and_a_worker_that_never_beats_is_lost() {
        let t = setup(5);
        assert_eq!(t.session.cadence().observed_ms(), None);
        let lost_after = t.silence_until_lost(120_000);
        assert!((MAX_OBSERVED_INTERVAL_MS..=MAX_OBSERVED_INTERVAL_MS + 100).contains(&lost_after), "{lost_after}");
    }

    #[tokio::test]
    async fn a_worker_cannot_stretch_its_limit_past_the_cap() {
        let t = setup(5);
        // Each gap survives the limit the gaps before it allow, and stretches the next.
        for gap in [14_000, 40_000, 110_000, 170_000, 170_000, 170_000, 170_000] {
            t.beat_after(gap);
        }
        assert_eq!(t.session.cadence().observed_ms(), Some(MAX_OBSERVED_INTERVAL_MS));
        // It now "beats every 10 minutes": it is lost after 3 x the cap instead.
        let lost_after = t.silence_until_lost(600_000);
        assert!(
            (3 * MAX_OBSERVED_INTERVAL_MS..=3 * MAX_OBSERVED_INTERVAL_MS + 100).contains(&lost_after),
            "{lost_after}"
        );
        let mut ten_minutes = Cadence::new(0);
        for i in 1..=8 {
            ten_minutes.beat(i * 600_000);
        }
        assert_eq!(ten_minutes.observed_ms(), Some(MAX_OBSERVED_INTERVAL_MS));
        assert_eq!(silence_limit_ms(Duration::from_secs(5), &ten_minutes), 180_000);
    }

    #[test]
    fn a_longer_advertised_interval_wins_over_a_shorter_cadence_and_the_cap() {
        let mut c = Cadence::new(0);
        c.beat(15_000);
        assert_eq!(silence_limit_ms(Duration::from_secs(5), &c), 45_000);
        assert_eq!(silence_limit_ms(Duration::from_secs(30), &c), 90_000);
        assert_eq!(silence_limit_ms(Duration::from_secs(3600), &Cadence::new(0)), 3 * 3_600_000);
    }

    #[test]
    fn an_increase_counts_at_once_and_an_old_long_gap_is_forgotten() {
        let mut c = Cadence::new(0);
        let mut at = 0;
        for gap in [5_000, 5_000, 12_000] {
            at += gap;
            c.beat(at);
        }
        assert_eq!(c.observed_ms(), Some(12_000));
        for _ in 0..GAPS {
            at += 5_000;
            c.beat(at);
        }
        assert_eq!(c.observed_ms(), Some(5_000));
    }
}
