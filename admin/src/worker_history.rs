//! What the registry remembers of workers over time, in memory and bounded: the workers
//! that left during the last day (who, from where, when and why), and each worker's use
//! of its execution slots during the last hour, sampled from its heartbeats.
//!
//! Neither is persisted: after a restart the admin knows only the workers that reconnect.

use std::{collections::VecDeque, sync::Mutex};

use serde::Serialize;

/// Departures kept at most (the oldest go first).
pub const DEPARTURES_KEPT: usize = 200;
/// How long a departure is kept.
pub const DEPARTURES_FOR_MS: i64 = 24 * 3_600_000;
/// The window of the slot-use series.
pub const SLOT_WINDOW_MS: i64 = 3_600_000;
/// One sample bucket of the slot-use series: a minute.
pub const SLOT_BUCKET_MS: i64 = 60_000;
const SLOT_BUCKETS: usize = (SLOT_WINDOW_MS / SLOT_BUCKET_MS) as usize;

/// Why a worker's stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeftBecause {
    /// The worker ended its stream (it shut down).
    Closed,
    /// The worker ended its stream while an operator had it draining.
    Drained,
    /// The connection broke (a transport error, or a message over the size limit).
    StreamError,
    /// The admin gave up on it: no heartbeat within its silence limit, or it did not read
    /// its stream.
    Lost,
    /// A newer stream with the same worker_id took its place.
    Replaced,
    /// The admin shut down.
    AdminShutdown,
    /// The admin closed it for another reason.
    ClosedByAdmin,
}

impl LeftBecause {
    pub fn as_str(self) -> &'static str {
        match self {
            LeftBecause::Closed => "closed",
            LeftBecause::Drained => "drained",
            LeftBecause::StreamError => "stream_error",
            LeftBecause::Lost => "lost",
            LeftBecause::Replaced => "replaced",
            LeftBecause::AdminShutdown => "admin_shutdown",
            LeftBecause::ClosedByAdmin => "closed_by_admin",
        }
    }

    /// The reason as the pages say it.
    pub fn label(self) -> &'static str {
        match self {
            LeftBecause::Closed => "shut down (closed its stream)",
            LeftBecause::Drained => "drained, then shut down",
            LeftBecause::StreamError => "connection broke",
            LeftBecause::Lost => "lost (stalled)",
            LeftBecause::Replaced => "replaced by a newer connection",
            LeftBecause::AdminShutdown => "the admin shut down",
            LeftBecause::ClosedByAdmin => "closed by the admin",
        }
    }
}

/// A worker's stream that ended.
#[derive(Debug, Clone, Serialize)]
pub struct Departure {
    pub worker_id: String,
    /// The address its hello gave (empty when it gave none).
    pub address: String,
    /// The TCP peer its stream came from.
    pub peer_address: String,
    pub job_types: Vec<String>,
    pub connected_at: i64,
    /// When it was last heard from.
    pub last_seen: i64,
    pub left_at: i64,
    pub because: LeftBecause,
    /// The admin's own words (`no heartbeat for 15 s`, `stream closed by the worker`).
    pub reason: String,
}

/// The departures of the last day, at most [`DEPARTURES_KEPT`].
#[derive(Default)]
pub struct Departures {
    list: Mutex<VecDeque<Departure>>,
}

impl Departures {
    pub fn record(&self, departure: Departure, now: i64) {
        let mut list = self.list.lock().expect("departures lock");
        list.push_back(departure);
        prune(&mut list, now);
    }

    /// Newest first.
    pub fn list(&self, now: i64) -> Vec<Departure> {
        let mut list = self.list.lock().expect("departures lock");
        prune(&mut list, now);
        list.iter().rev().cloned().collect()
    }
}

fn prune(list: &mut VecDeque<Departure>, now: i64) {
    while list.len() > DEPARTURES_KEPT || list.front().is_some_and(|d| d.left_at <= now - DEPARTURES_FOR_MS) {
        list.pop_front();
    }
}

/// One minute of heartbeats.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// The minute's start.
    start: i64,
    peak_used: i32,
    sum_used: i64,
    samples: i64,
    total: i32,
}

/// A worker's execution slot use per minute over the last hour, from its heartbeats; at
/// most [`SLOT_WINDOW_MS`] / [`SLOT_BUCKET_MS`] buckets.
#[derive(Debug, Clone, Default)]
pub struct SlotSeries {
    buckets: VecDeque<Bucket>,
}

/// A worker's slot use over the last hour.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SlotUse {
    /// The most slots in use at one heartbeat.
    pub peak_used: i32,
    /// Slots in use, averaged over the heartbeats.
    pub average_used: f64,
    /// The most slots it offered.
    pub total: i32,
    /// Heartbeats sampled.
    pub samples: i64,
    /// The peak of each minute, oldest first, ending with the current minute (`None`: no
    /// heartbeat that minute). Not in the JSON: the pages draw it.
    #[serde(skip)]
    pub per_minute: Vec<Option<i32>>,
}

impl SlotSeries {
    /// Records one heartbeat's `used` of `total` slots at `now`.
    pub fn record(&mut self, used: i32, total: i32, now: i64) {
        let (used, total) = (used.max(0), total.max(0));
        let start = now - now.rem_euclid(SLOT_BUCKET_MS);
        match self.buckets.back_mut() {
            Some(b) if b.start == start => {
                b.peak_used = b.peak_used.max(used);
                b.sum_used += i64::from(used);
                b.samples += 1;
                b.total = b.total.max(total);
            }
            // A clock that went back: the sample joins the latest minute rather than
            // breaking the order.
            Some(b) if b.start > start => {
                b.peak_used = b.peak_used.max(used);
                b.sum_used += i64::from(used);
                b.samples += 1;
            }
            _ => {
                self.buckets.push_back(Bucket { start, peak_used: used, sum_used: i64::from(used), samples: 1, total })
            }
        }
        self.forget_before(now);
    }

    fn forget_before(&mut self, now: i64) {
        let oldest = now - now.rem_euclid(SLOT_BUCKET_MS) - SLOT_WINDOW_MS;
        while self.buckets.len() > SLOT_BUCKETS || self.buckets.front().is_some_and(|b| b.start <= oldest) {
            self.buckets.pop_front();
        }
    }

    /// Whether it has a sample within the window ending at `now`.
    pub fn is_recent(&self, now: i64) -> bool {
        self.buckets.back().is_some_and(|b| b.start > now - SLOT_WINDOW_MS)
    }

    /// The use over the hour ending at `now`.
    pub fn summary(&self, now: i64) -> SlotUse {
        let current = now - now.rem_euclid(SLOT_BUCKET_MS);
        let first = current - (SLOT_BUCKETS as i64 - 1) * SLOT_BUCKET_MS;
        let mut per_minute = vec![None; SLOT_BUCKETS];
        let mut u = SlotUse::default();
        let mut sum = 0i64;
        for b in self.buckets.iter().filter(|b| b.start >= first && b.start <= current) {
            per_minute[((b.start - first) / SLOT_BUCKET_MS) as usize] = Some(b.peak_used);
            u.peak_used = u.peak_used.max(b.peak_used);
            u.total = u.total.max(b.total);
            u.samples += b.samples;
            sum += b.sum_used;
        }
        if u.samples > 0 {
            u.average_used = sum as f64 / u.samples as f64;
        }
        u.per_minute = per_minute;
        u
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000_000 - 1_700_000_000_000 % SLOT_BUCKET_MS;

    fn departure(id: &str, left_at: i64) -> Departure {
        Departure {
            worker_id: id.into(),
            address: String::new(),
            peer_address: "127.0.0.1:5000".into(),
            job_types: vec![],
            connected_at: left_at - 1000,
            last_seen: left_at,
            left_at,
            because: LeftBecause::Closed,
            reason: "stream closed by the worker".into(),
        }
    }

    #[test]
    fn departures_are_listed_newest_first_for_a_day_and_at_most_200() {
        let d = Departures::default();
        for i in 0..250 {
            d.record(departure(&format!("w{i}"), T0 + i), T0 + i);
        }
        let list = d.list(T0 + 250);
        assert_eq!(list.len(), DEPARTURES_KEPT);
        assert_eq!((list[0].worker_id.as_str(), list[199].worker_id.as_str()), ("w249", "w50"));
        assert_eq!(d.list(T0 + 50 + DEPARTURES_FOR_MS).len(), 199, "a day later the oldest is gone");
        assert!(d.list(T0 + 250 + DEPARTURES_FOR_MS).is_empty());
    }

    #[test]
    fn slot_use_keeps_an_hour_of_minute_peaks_and_averages_the_heartbeats() {
        let mut s = SlotSeries::default();
        s.record(1, 4, T0);
        s.record(3, 4, T0 + 5_000);
        s.record(2, 4, T0 + 2 * SLOT_BUCKET_MS);
        let u = s.summary(T0 + 2 * SLOT_BUCKET_MS + 1);
        assert_eq!((u.peak_used, u.total, u.samples), (3, 4, 3));
        assert!((u.average_used - 2.0).abs() < 1e-9);
        assert_eq!(u.per_minute.len(), 60);
        assert_eq!(&u.per_minute[57..], &[Some(3), None, Some(2)]);
        // An hour on, the first minute has left the window.
        let later = T0 + SLOT_WINDOW_MS;
        let u = s.summary(later);
        assert_eq!((u.peak_used, u.samples), (2, 1));
        s.record(0, 4, later + 3 * SLOT_WINDOW_MS);
        assert_eq!(s.buckets.len(), 1, "old minutes are forgotten");
        assert!(s.is_recent(later + 3 * SLOT_WINDOW_MS) && !s.is_recent(later + 5 * SLOT_WINDOW_MS));
        assert_eq!(SlotSeries::default().summary(T0), SlotUse { per_minute: vec![None; 60], ..Default::default() });
    }
}
