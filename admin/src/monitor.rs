//! Monitor: the counters and histograms the admin keeps about its own work, as a
//! [`MetricsSnapshot`] (the JSON of `GET /api/plugin/metrics`) and its Prometheus text
//! form (`GET /metrics`), one rendered from the other so the two never disagree. Gauges
//! (workers and their slots, jobs by state) are read from the registry and the job table
//! when the metrics are rendered (`http/ops.rs`) and added to the snapshot.
//!
//! Job metrics are kept per job type ([`JobTypeMetrics`], labelled `job_type`): one
//! struct of atomics per job type, handed out as an `Arc` by [`Monitor::job_type`] and
//! cached by the dispatcher's job table, so counting a job costs an atomic add, not a
//! lock or a string. Label values are bounded: job types are names the admin knows (a
//! worker offered them in a checked hello, or they have a stored descriptor), worker ids
//! are checked at hello, command actions and outcomes are static names; past
//! [`MAX_JOB_TYPE_SERIES`] job types the rest share one series. Label values are escaped
//! all the same.

use std::{
    collections::BTreeMap,
    fmt::Write,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use serde::Serialize;
use utoipa::ToSchema;

/// The admin's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit the admin was built from (`admin/build.rs`), or `unknown`.
pub const GIT_COMMIT: &str = env!("PLUGHOST_GIT_COMMIT");

/// At most this many job types get series of their own; later ones share
/// [`OTHER_JOB_TYPES`]. Job types are bounded by validation already; this is the backstop.
pub const MAX_JOB_TYPE_SERIES: usize = 1000;
/// The `job_type` label of the shared series (not a valid job type name, so it never
/// clashes with one).
pub const OTHER_JOB_TYPES: &str = "(other)";

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

    /// Observes a span of milliseconds (negative spans count as 0).
    pub fn observe_ms(&self, ms: i64) {
        self.observe(ms.max(0) as f64 / 1000.0);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn sample(&self, labels: &[(&str, &str)]) -> Sample {
        let mut cumulative = 0;
        let buckets: Vec<Bucket> = self
            .bounds
            .iter()
            .zip(&self.buckets)
            .map(|(le, n)| {
                cumulative += n.load(Ordering::Relaxed);
                Bucket { le: *le, count: cumulative }
            })
            .collect();
        // Read while observations go on: `count` is bumped after the bucket, so it may
        // briefly trail; +Inf never shows less than the finite buckets.
        let count = self.count().max(cumulative);
        Sample {
            labels: label_map(labels),
            value: None,
            buckets: Some(buckets),
            count: Some(count),
            sum: Some(self.sum_us.load(Ordering::Relaxed) as f64 / 1e6),
        }
    }
}

const LATENCY_BOUNDS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
const DURATION_BOUNDS: &[f64] = &[0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0];
const RUN_BOUNDS: &[f64] =
    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

/// The counters a job transition can move (see `dispatcher::machine`), each kept per job
/// type.
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

impl Counter {
    pub const ALL: [Counter; 10] = [
        Counter::AttemptStarted,
        Counter::AttemptFailed,
        Counter::Retried,
        Counter::DeadLettered,
        Counter::Succeeded,
        Counter::Canceled,
        Counter::Expired,
        Counter::ExecutionTimedOut,
        Counter::RequeuedRefused,
        Counter::RequeuedWorkerLost,
    ];

    /// The metric's name and help.
    pub fn metric(self) -> (&'static str, &'static str) {
        match self {
            Counter::AttemptStarted => ("plughost_attempts_started_total", "execute requests sent, by job type"),
            Counter::AttemptFailed => ("plughost_attempts_failed_total", "attempts that failed, by job type"),
            Counter::Retried => ("plughost_retries_total", "failed attempts scheduled for another try, by job type"),
            Counter::DeadLettered => {
                ("plughost_jobs_dead_lettered_total", "jobs that failed with their retries spent, by job type")
            }
            Counter::Succeeded => ("plughost_jobs_succeeded_total", "jobs that ended SUCCEEDED, by job type"),
            Counter::Canceled => ("plughost_jobs_canceled_total", "jobs that ended CANCELED, by job type"),
            Counter::Expired => ("plughost_jobs_expired_total", "jobs that expired before they started, by job type"),
            Counter::ExecutionTimedOut => {
                ("plughost_execution_timeouts_total", "attempts that ran past their execution timeout, by job type")
            }
            Counter::RequeuedRefused => (
                "plughost_requeues_capacity_total",
                "jobs requeued because the executor was at capacity or refused them, by job type",
            ),
            Counter::RequeuedWorkerLost => {
                ("plughost_requeues_worker_lost_total", "jobs requeued because their worker was lost, by job type")
            }
        }
    }
}

/// One job type's counters and histograms. Handed out once per job type as an `Arc`
/// ([`Monitor::job_type`]); every update is a relaxed atomic add.
pub struct JobTypeMetrics {
    counters: [AtomicU64; Counter::ALL.len()],
    /// Jobs created from proposals or by hand.
    pub created: AtomicU64,
    /// Proposals dropped because an active job had the same dedupe key.
    pub deduplicated: AtomicU64,
    /// From a job being ready (queued) to its attempt starting (assigned).
    pub dispatch_latency: Histogram,
    /// From an attempt's start to its end, for attempts that ran (succeeded, failed,
    /// timed out, stopped); not for those requeued without having started.
    pub run_duration: Histogram,
}

impl Default for JobTypeMetrics {
    fn default() -> Self {
        JobTypeMetrics {
            counters: Default::default(),
            created: AtomicU64::new(0),
            deduplicated: AtomicU64::new(0),
            dispatch_latency: Histogram::new(LATENCY_BOUNDS),
            run_duration: Histogram::new(RUN_BOUNDS),
        }
    }
}

impl JobTypeMetrics {
    /// Moves the counter a job transition names.
    pub fn count(&self, counter: Counter) {
        inc(&self.counters[counter as usize]);
    }

    pub fn get(&self, counter: Counter) -> u64 {
        self.counters[counter as usize].load(Ordering::Relaxed)
    }
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

    fn family(&self) -> MetricFamily {
        let mut f = MetricFamily::new(
            "plughost_connections_refused_total",
            MetricKind::Counter,
            "connections refused, or closed before they were established, by listener and reason",
        );
        for listener in ["grpc", "http"] {
            for reason in ConnRefusal::ALL {
                f.push(&[("listener", listener), ("reason", reason.label())], self.get(listener, reason) as f64);
            }
        }
        f
    }
}

/// Counters the admin increments as it works.
pub struct Monitor {
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
    commands: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// Per job type, by name; see [`Monitor::job_type`].
    job_types: Mutex<BTreeMap<String, Arc<JobTypeMetrics>>>,
    pub detection_duration: Histogram,
}

impl Default for Monitor {
    fn default() -> Self {
        Monitor {
            detections_started: AtomicU64::new(0),
            detections_failed: AtomicU64::new(0),
            heartbeats: AtomicU64::new(0),
            observations: AtomicU64::new(0),
            ignored_messages: AtomicU64::new(0),
            refused_inputs: AtomicU64::new(0),
            connections_refused: ConnectionsRefused::default(),
            commands: Default::default(),
            job_types: Default::default(),
            detection_duration: Histogram::new(DURATION_BOUNDS),
        }
    }
}

impl Monitor {
    /// The metrics of one job type, created at first use. Takes a lock: callers on a hot
    /// path keep the `Arc` (the dispatcher's job table caches one per job type).
    pub fn job_type(&self, job_type: &str) -> Arc<JobTypeMetrics> {
        let mut map = self.job_types.lock().expect("job type metrics lock");
        if let Some(m) = map.get(job_type) {
            return m.clone();
        }
        let key = if map.len() < MAX_JOB_TYPE_SERIES { job_type } else { OTHER_JOB_TYPES };
        map.entry(key.to_string()).or_default().clone()
    }

    /// Counts an operator command by action and outcome (`ok`, or the refusal's kind).
    pub fn count_command(&self, action: &'static str, outcome: &'static str) {
        *self.commands.lock().expect("command counters lock").entry((action, outcome)).or_insert(0) += 1;
    }

    pub fn commands_counted(&self, action: &str, outcome: &str) -> u64 {
        let counts = self.commands.lock().expect("command counters lock");
        counts.iter().find(|((a, o), _)| *a == action && *o == outcome).map(|(_, n)| *n).unwrap_or(0)
    }

    /// Every metric the monitor keeps, followed by `gauges` (read by the caller from the
    /// components at this moment).
    pub fn snapshot(&self, gauges: Vec<MetricFamily>) -> MetricsSnapshot {
        let mut metrics = Vec::with_capacity(32 + gauges.len());
        metrics.push(
            MetricFamily::new("plughost_build_info", MetricKind::Gauge, "the admin's version and git commit; always 1")
                .with(&[("commit", GIT_COMMIT), ("version", VERSION)], 1.0),
        );
        let counters: [(&str, &str, &AtomicU64); 6] = [
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
            metrics
                .push(MetricFamily::new(name, MetricKind::Counter, help).with(&[], c.load(Ordering::Relaxed) as f64));
        }
        let types: Vec<(String, Arc<JobTypeMetrics>)> = {
            let map = self.job_types.lock().expect("job type metrics lock");
            map.iter().map(|(t, m)| (t.clone(), m.clone())).collect()
        };
        let per_type = |name: &str, kind: MetricKind, help: &str, sample: &dyn Fn(&JobTypeMetrics, &str) -> Sample| {
            let mut f = MetricFamily::new(name, kind, help);
            f.samples = types.iter().map(|(t, m)| sample(m, t)).collect();
            f
        };
        let counter = |n: &AtomicU64, t: &str| Sample::value(&[("job_type", t)], n.load(Ordering::Relaxed) as f64);
        metrics.push(per_type(
            "plughost_jobs_created_total",
            MetricKind::Counter,
            "jobs created from proposals or by hand, by job type",
            &|m, t| counter(&m.created, t),
        ));
        metrics.push(per_type(
            "plughost_jobs_deduplicated_total",
            MetricKind::Counter,
            "proposals dropped because an active job had the same dedupe key, by job type",
            &|m, t| counter(&m.deduplicated, t),
        ));
        for c in Counter::ALL {
            let (name, help) = c.metric();
            metrics.push(per_type(name, MetricKind::Counter, help, &|m, t| counter(&m.counters[c as usize], t)));
        }
        metrics.push(self.connections_refused.family());
        let mut commands = MetricFamily::new(
            "plughost_admin_commands_total",
            MetricKind::Counter,
            "operator commands by action and outcome (ok, or the kind of refusal)",
        );
        for ((action, outcome), n) in self.commands.lock().expect("command counters lock").iter() {
            commands.push(&[("action", action), ("outcome", outcome)], *n as f64);
        }
        metrics.push(commands);
        metrics.push(per_type(
            "plughost_dispatch_latency_seconds",
            MetricKind::Histogram,
            "time from a job being ready (queued) to its attempt starting (assigned), by job type",
            &|m, t| m.dispatch_latency.sample(&[("job_type", t)]),
        ));
        metrics.push(per_type(
            "plughost_job_run_duration_seconds",
            MetricKind::Histogram,
            "time from an attempt's start to its end (succeeded, failed, timed out or stopped), by job type",
            &|m, t| m.run_duration.sample(&[("job_type", t)]),
        ));
        let mut detection =
            MetricFamily::new("plughost_detection_duration_seconds", MetricKind::Histogram, "detection run durations");
        detection.samples.push(self.detection_duration.sample(&[]));
        metrics.push(detection);
        metrics.extend(gauges);
        MetricsSnapshot { metrics }
    }

    /// The Prometheus text of [`Monitor::snapshot`].
    pub fn render(&self, gauges: Vec<MetricFamily>) -> String {
        self.snapshot(gauges).to_prometheus()
    }
}

pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Every metric at one moment: what `GET /metrics` writes as Prometheus text, as JSON.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MetricsSnapshot {
    /// Metric families, in the order of the text form.
    pub metrics: Vec<MetricFamily>,
}

/// One metric: its name, type, help and samples.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MetricFamily {
    /// The metric's name; a histogram's samples are written as `<name>_bucket`,
    /// `<name>_sum` and `<name>_count` in the text form.
    pub name: String,
    #[serde(rename = "type")]
    pub kind: MetricKind,
    pub help: String,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

impl MetricKind {
    fn name(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// One series: its labels and its value (a counter or gauge), or its buckets, count and
/// sum (a histogram).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    /// A counter's or a gauge's value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// A histogram's cumulative counts by upper bound (seconds); the `+Inf` bucket is
    /// `count`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buckets: Option<Vec<Bucket>>,
    /// A histogram's number of observations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// A histogram's sum of observations (seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sum: Option<f64>,
}

impl Sample {
    pub fn value(labels: &[(&str, &str)], value: f64) -> Sample {
        Sample { labels: label_map(labels), value: Some(value), buckets: None, count: None, sum: None }
    }
}

/// A histogram bucket: observations at most `le` seconds, cumulative.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Bucket {
    pub le: f64,
    pub count: u64,
}

fn label_map(labels: &[(&str, &str)]) -> BTreeMap<String, String> {
    labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

impl MetricFamily {
    pub fn new(name: &str, kind: MetricKind, help: &str) -> MetricFamily {
        MetricFamily { name: name.to_string(), kind, help: help.to_string(), samples: Vec::new() }
    }

    /// Adds a counter's or gauge's sample.
    pub fn push(&mut self, labels: &[(&str, &str)], value: f64) {
        self.samples.push(Sample::value(labels, value));
    }

    pub fn with(mut self, labels: &[(&str, &str)], value: f64) -> MetricFamily {
        self.push(labels, value);
        self
    }
}

impl MetricsSnapshot {
    /// The Prometheus text exposition format (version 0.0.4): `# HELP` and `# TYPE` once
    /// per family, then its samples, label values escaped.
    pub fn to_prometheus(&self) -> String {
        let mut out = String::with_capacity(8192);
        for f in &self.metrics {
            let _ = writeln!(out, "# HELP {} {}", f.name, escape(&f.help, false));
            let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind.name());
            for s in &f.samples {
                match (&s.buckets, s.count, s.sum) {
                    (Some(buckets), Some(count), Some(sum)) => {
                        let bucket = format!("{}_bucket", f.name);
                        for b in buckets {
                            write_sample(&mut out, &bucket, &s.labels, Some(&number(b.le)), b.count as f64);
                        }
                        write_sample(&mut out, &bucket, &s.labels, Some("+Inf"), count as f64);
                        write_sample(&mut out, &format!("{}_sum", f.name), &s.labels, None, sum);
                        write_sample(&mut out, &format!("{}_count", f.name), &s.labels, None, count as f64);
                    }
                    _ => write_sample(&mut out, &f.name, &s.labels, None, s.value.unwrap_or(0.0)),
                }
            }
        }
        out
    }
}

/// `name{labels} value`, with `le` last for a histogram bucket.
fn write_sample(out: &mut String, name: &str, labels: &BTreeMap<String, String>, le: Option<&str>, value: f64) {
    out.push_str(name);
    if !labels.is_empty() || le.is_some() {
        out.push('{');
        let mut first = true;
        for (k, v) in labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).chain(le.map(|le| ("le", le))) {
            if !first {
                out.push(',');
            }
            first = false;
            let _ = write!(out, "{k}=\"{}\"", escape(v, true));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {}", number(value));
}

/// A sample value as the text format writes it (`+Inf`, `-Inf`, `NaN` for the specials).
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else {
        format!("{v}")
    }
}

/// Escapes a label value (`\`, `"`, line feed) or help text (`\`, line feed).
fn escape(s: &str, quote: bool) -> std::borrow::Cow<'_, str> {
    let special = |c: char| c == '\\' || c == '\n' || (quote && c == '"');
    if !s.contains(special) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Monitor::default();
        let t = m.job_type("t");
        t.dispatch_latency.observe(0.0001);
        t.dispatch_latency.observe(0.003);
        t.dispatch_latency.observe(100.0);
        let gauges = vec![MetricFamily::new("plughost_workers", MetricKind::Gauge, "connected workers").with(&[], 2.0)];
        let text = m.render(gauges);
        assert!(text.contains("plughost_dispatch_latency_seconds_bucket{job_type=\"t\",le=\"0.0005\"} 1"), "{text}");
        assert!(text.contains("plughost_dispatch_latency_seconds_bucket{job_type=\"t\",le=\"0.005\"} 2"));
        assert!(text.contains("plughost_dispatch_latency_seconds_bucket{job_type=\"t\",le=\"+Inf\"} 3"));
        assert!(text.contains("plughost_dispatch_latency_seconds_count{job_type=\"t\"} 3"));
        assert!(text.contains("plughost_workers 2\n"));
    }

    #[test]
    fn counters_are_kept_per_job_type_and_one_arc_serves_each_type() {
        let m = Monitor::default();
        let a = m.job_type("a");
        a.count(Counter::Succeeded);
        m.job_type("a").count(Counter::Succeeded);
        m.job_type("b").count(Counter::Retried);
        assert!(Arc::ptr_eq(&a, &m.job_type("a")));
        let text = m.render(Vec::new());
        assert!(text.contains("plughost_jobs_succeeded_total{job_type=\"a\"} 2\n"), "{text}");
        assert!(text.contains("plughost_jobs_succeeded_total{job_type=\"b\"} 0\n"), "{text}");
        assert!(text.contains("plughost_retries_total{job_type=\"b\"} 1\n"), "{text}");
    }

    #[test]
    fn job_types_past_the_cap_share_one_series() {
        let m = Monitor::default();
        for i in 0..MAX_JOB_TYPE_SERIES {
            m.job_type(&format!("t{i}"));
        }
        let late = m.job_type("late");
        assert!(Arc::ptr_eq(&late, &m.job_type("later")));
        late.count(Counter::Succeeded);
        let text = m.render(Vec::new());
        assert!(text.contains("plughost_jobs_succeeded_total{job_type=\"(other)\"} 1\n"));
        assert!(!text.contains("\"late\""));
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let f = MetricFamily::new("g", MetricKind::Gauge, "a\\b\nc").with(&[("worker_id", "w\"1\\\n")], 1.5);
        let text = MetricsSnapshot { metrics: vec![f] }.to_prometheus();
        assert_eq!(text, "# HELP g a\\\\b\\nc\n# TYPE g gauge\ng{worker_id=\"w\\\"1\\\\\\n\"} 1.5\n");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(3.0), "3");
    }

    #[test]
    fn build_info_names_the_version_and_commit() {
        let text = Monitor::default().render(Vec::new());
        let line = format!("plughost_build_info{{commit=\"{GIT_COMMIT}\",version=\"{VERSION}\"}} 1\n");
        assert!(text.contains(&line), "{text}");
        assert!(!GIT_COMMIT.is_empty());
    }
}
