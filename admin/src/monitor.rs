//! Monitor: counters and histograms the admin keeps about its own work, and their
//! Prometheus text form for `GET /metrics`. Gauges (workers, jobs by state) are read from
//! the registry and the job table when the metrics are rendered.

use std::{
    fmt::Write,
    sync::atomic::{AtomicU64, Ordering},
};

/// A fixed-bucket histogram of seconds.
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    /// Sum in microseconds, so it stays an integer.
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, seconds: f64) {
        let seconds = seconds.max(0.0);
        if let Some(i) = self.bounds.iter().position(|b| seconds <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (b, n) in self.bounds.iter().zip(&self.buckets) {
            cumulative += n.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_us.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

const LATENCY_BOUNDS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
const DURATION_BOUNDS: &[f64] = &[0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0];

/// The counters a job transition can move (see `dispatcher::machine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    AttemptStarted,
    AttemptFailed,
    Retried,
    DeadLettered,
    Succeeded,
    Canceled,
    Expired,
    ExecutionTimedOut,
    RequeuedRefused,
    RequeuedWorkerLost,
}

/// Why a connection was refused, or closed before it was established (`listener.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnRefusal {
    /// The listener was at its cap and every connection on it was established.
    ListenerFull,
    /// The peer address was at its cap and every connection from it was established.
    PeerFull,
    /// A pending connection closed to make room for a newer one.
    Shed,
    /// Not established within the handshake timeout.
    HandshakeTimeout,
    /// `accept` failed (out of descriptors, mostly).
    AcceptFailed,
}

impl ConnRefusal {
    const ALL: [ConnRefusal; 5] = [
        ConnRefusal::ListenerFull,
        ConnRefusal::PeerFull,
        ConnRefusal::Shed,
        ConnRefusal::HandshakeTimeout,
        ConnRefusal::AcceptFailed,
    ];

    /// The metric's `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            ConnRefusal::ListenerFull => "listener_full",
            ConnRefusal::PeerFull => "peer_full",
            ConnRefusal::Shed => "shed",
            ConnRefusal::HandshakeTimeout => "handshake_timeout",
            ConnRefusal::AcceptFailed => "accept_failed",
        }
    }

    /// For the log line.
    pub fn describe(self) -> &'static str {
        match self {
            ConnRefusal::ListenerFull => "every connection slot is taken by an established connection; refused",
            ConnRefusal::PeerFull => "the peer's connection slots are taken by established connections; refused",
            ConnRefusal::Shed => "a connection that had not finished its handshake was closed to make room",
            ConnRefusal::HandshakeTimeout => "a connection did not finish its handshake in time; closed",
            ConnRefusal::AcceptFailed => "accepting a connection failed",
        }
    }
}

/// `plughost_connections_refused_total`, by listener (`grpc`, `http`) and reason.
#[derive(Default)]
pub struct ConnectionsRefused {
    grpc: [AtomicU64; 5],
    http: [AtomicU64; 5],
}

impl ConnectionsRefused {
    fn row(&self, listener: &str) -> &[AtomicU64; 5] {
        if listener == "grpc" { &self.grpc } else { &self.http }
    }

    pub fn inc(&self, listener: &str, reason: ConnRefusal) {
        inc(&self.row(listener)[reason as usize]);
    }

    pub fn get(&self, listener: &str, reason: ConnRefusal) -> u64 {
        self.row(listener)[reason as usize].load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String) {
        let name = "plughost_connections_refused_total";
        let _ = writeln!(
            out,
            "# HELP {name} connections refused, or closed before they were established, by listener and reason\n# TYPE {name} counter"
        );
        for listener in ["grpc", "http"] {
            for reason in ConnRefusal::ALL {
                let _ = writeln!(
                    out,
                    "{name}{{listener=\"{listener}\",reason=\"{}\"}} {}",
                    reason.label(),
                    self.get(listener, reason)
                );
            }
        }
    }
}

/// Counters the admin increments as it works.
pub struct Monitor {
    pub jobs_created: AtomicU64,
    pub jobs_deduplicated: AtomicU64,
    pub jobs_succeeded: AtomicU64,
    pub jobs_failed: AtomicU64,
    pub jobs_dead_lettered: AtomicU64,
    pub jobs_canceled: AtomicU64,
    pub jobs_expired: AtomicU64,
    pub attempts_started: AtomicU64,
    pub retries: AtomicU64,
    pub requeues_capacity: AtomicU64,
    pub requeues_worker_lost: AtomicU64,
    pub execution_timeouts: AtomicU64,
    pub detections_started: AtomicU64,
    pub detections_failed: AtomicU64,
    pub heartbeats: AtomicU64,
    pub observations: AtomicU64,
    pub ignored_messages: AtomicU64,
    /// Worker input refused for being over a limit (`input.rs`).
    pub refused_inputs: AtomicU64,
    pub connections_refused: ConnectionsRefused,
    /// Operator commands by (action, outcome); both are the command layer's static
    /// names, so the label set is bounded.
    commands: std::sync::Mutex<std::collections::BTreeMap<(&'static str, &'static str), u64>>,
    /// PENDING (ready) -> ASSIGNED.
    pub dispatch_latency: Histogram,
    pub detection_duration: Histogram,
}

impl Default for Monitor {
    fn default() -> Self {
        Monitor {
            jobs_created: AtomicU64::new(0),
            jobs_deduplicated: AtomicU64::new(0),
            jobs_succeeded: AtomicU64::new(0),
            jobs_failed: AtomicU64::new(0),
            jobs_dead_lettered: AtomicU64::new(0),
            jobs_canceled: AtomicU64::new(0),
            jobs_expired: AtomicU64::new(0),
            attempts_started: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            requeues_capacity: AtomicU64::new(0),
            requeues_worker_lost: AtomicU64::new(0),
            execution_timeouts: AtomicU64::new(0),
            detections_started: AtomicU64::new(0),
            detections_failed: AtomicU64::new(0),
            heartbeats: AtomicU64::new(0),
            observations: AtomicU64::new(0),
            ignored_messages: AtomicU64::new(0),
            refused_inputs: AtomicU64::new(0),
            connections_refused: ConnectionsRefused::default(),
            commands: Default::default(),
            dispatch_latency: Histogram::new(LATENCY_BOUNDS),
            detection_duration: Histogram::new(DURATION_BOUNDS),
        }
    }
}

impl Monitor {
    /// Moves the counter a job transition names.
    pub fn count(&self, counter: Counter) {
        use Counter::*;
        inc(match counter {
            AttemptStarted => &self.attempts_started,
            AttemptFailed => &self.jobs_failed,
            Retried => &self.retries,
            DeadLettered => &self.jobs_dead_lettered,
            Succeeded => &self.jobs_succeeded,
            Canceled => &self.jobs_canceled,
            Expired => &self.jobs_expired,
            ExecutionTimedOut => &self.execution_timeouts,
            RequeuedRefused => &self.requeues_capacity,
            RequeuedWorkerLost => &self.requeues_worker_lost,
        });
    }
}

impl Monitor {
    /// Counts an operator command by action and outcome (`done` or `refused`).
    pub fn count_command(&self, action: &'static str, outcome: &'static str) {
        *self.commands.lock().expect("command counters lock").entry((action, outcome)).or_insert(0) += 1;
    }

    pub fn commands_counted(&self, action: &str, outcome: &str) -> u64 {
        let counts = self.commands.lock().expect("command counters lock");
        counts.iter().find(|((a, o), _)| *a == action && *o == outcome).map(|(_, n)| *n).unwrap_or(0)
    }

    fn render_commands(&self, out: &mut String) {
        let name = "plughost_admin_commands_total";
        let _ = writeln!(out, "# HELP {name} operator commands by action and outcome\n# TYPE {name} counter");
        for ((action, outcome), n) in self.commands.lock().expect("command counters lock").iter() {
            let _ = writeln!(out, "{name}{{action=\"{action}\",outcome=\"{outcome}\"}} {n}");
        }
    }
}

pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Monitor {
    /// Prometheus text exposition. `gauges` are (name, help, labels, value) rows.
    pub fn render(&self, gauges: &[(&str, &str, String, f64)]) -> String {
        let mut out = String::with_capacity(4096);
        let counters: [(&str, &str, &AtomicU64); 18] = [
            ("plughost_jobs_created_total", "jobs created from proposals", &self.jobs_created),
            (
                "plughost_jobs_deduplicated_total",
                "proposals dropped because an active job had the same dedupe key",
                &self.jobs_deduplicated,
            ),
            ("plughost_jobs_succeeded_total", "jobs that ended SUCCEEDED", &self.jobs_succeeded),
            ("plughost_attempts_failed_total", "attempts that failed", &self.jobs_failed),
            (
                "plughost_jobs_dead_lettered_total",
                "jobs that failed with their retries spent",
                &self.jobs_dead_lettered,
            ),
            ("plughost_jobs_canceled_total", "jobs that ended CANCELED", &self.jobs_canceled),
            ("plughost_jobs_expired_total", "jobs that expired before they started", &self.jobs_expired),
            ("plughost_attempts_started_total", "execute requests sent", &self.attempts_started),
            ("plughost_retries_total", "failed attempts scheduled for another try", &self.retries),
            (
                "plughost_requeues_capacity_total",
                "jobs requeued because the executor was at capacity",
                &self.requeues_capacity,
            ),
            (
                "plughost_requeues_worker_lost_total",
                "jobs requeued because their worker was lost",
                &self.requeues_worker_lost,
            ),
            (
                "plughost_execution_timeouts_total",
                "attempts that ran past their execution timeout",
                &self.execution_timeouts,
            ),
            ("plughost_detections_started_total", "detection requests sent", &self.detections_started),
            ("plughost_detections_failed_total", "detections that failed or timed out", &self.detections_failed),
            ("plughost_heartbeats_total", "worker heartbeats received", &self.heartbeats),
            ("plughost_observations_total", "worker observation messages received", &self.observations),
            (
                "plughost_ignored_messages_total",
                "worker messages for unknown or finished requests",
                &self.ignored_messages,
            ),
            (
                "plughost_refused_inputs_total",
                "worker messages or parts of them refused for being over an input limit",
                &self.refused_inputs,
            ),
        ];
        for (name, help, c) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", c.load(Ordering::Relaxed));
        }
        self.connections_refused.render(&mut out);
        self.render_commands(&mut out);
        self.dispatch_latency.render(
            &mut out,
            "plughost_dispatch_latency_seconds",
            "time from a job being ready to its assignment",
        );
        self.detection_duration.render(&mut out, "plughost_detection_duration_seconds", "detection run durations");
        let mut last = "";
        for (name, help, labels, value) in gauges {
            if *name != last {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
                last = name;
            }
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {value}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {value}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Monitor::default();
        m.dispatch_latency.observe(0.0001);
        m.dispatch_latency.observe(0.003);
        m.dispatch_latency.observe(100.0);
        let text = m.render(&[("plughost_workers", "connected workers", String::new(), 2.0)]);
        assert!(text.contains("plughost_dispatch_latency_seconds_bucket{le=\"0.0005\"} 1"));
        assert!(text.contains("plughost_dispatch_latency_seconds_bucket{le=\"0.005\"} 2"));
        assert!(text.contains("plughost_dispatch_latency_seconds_bucket{le=\"+Inf\"} 3"));
        assert!(text.contains("plughost_workers 2"));
    }
}
