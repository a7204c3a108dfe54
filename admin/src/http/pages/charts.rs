//! The trend charts of the overview and the job type pages, drawn on the server as SVG
//! from a [`Series`] (`trends.rs`): finished jobs, queue depth, queued-to-started and run
//! durations (p50, p95), slot use. Everything is computed here as numbers and text; the
//! template (`templates/charts.html`) only places them, so a chart reads without
//! JavaScript: a title, axis labels, each bucket's values in its tooltip, the window's
//! figures under it, and a table of every bucket's numbers.

use super::{Time, percent_encode};
use crate::trends::{Point, Series, Window};

/// The SVG's coordinate system (about the size a chart is shown at, so its text keeps
/// its size): the plot sits inside margins for the y labels (left) and the x labels
/// (bottom).
const WIDTH: f64 = 420.0;
const LEFT: f64 = 50.0;
const RIGHT: f64 = 6.0;
const TOP: f64 = 8.0;
const PLOT_HEIGHT: f64 = 112.0;
const PLOT_WIDTH: f64 = WIDTH - LEFT - RIGHT;

/// The fixed parts of every chart's frame, as the template writes them (from the
/// constants above).
pub struct Frame {
    pub view_box: &'static str,
    /// The grid lines' ends.
    pub x1: &'static str,
    pub x2: &'static str,
    /// Where the y labels end and the x labels sit.
    pub y_label_x: &'static str,
    pub x_label_y: &'static str,
    /// The middle of the plot, for the note of an empty chart.
    pub note_x: &'static str,
    pub note_y: &'static str,
}

pub const FRAME: Frame = Frame {
    view_box: "0 0 420 144",
    x1: "50",
    x2: "414",
    y_label_x: "44",
    x_label_y: "137",
    note_x: "232",
    note_y: "64",
};

/// A label on an axis, at `at` (x for the x axis, y for the y axis).
pub struct Tick {
    pub at: String,
    pub label: String,
    /// `start`, `middle` or `end` (x labels).
    pub anchor: &'static str,
}

/// A rectangle of a bar chart; `class` colours it, `title` is its tooltip.
pub struct Bar {
    pub x: String,
    pub y: String,
    pub w: String,
    pub h: String,
    pub class: &'static str,
    pub title: String,
}

/// A polyline through consecutive buckets with values.
pub struct Line {
    pub class: &'static str,
    pub points: String,
}

/// A value with no neighbour to join: drawn as a dot.
pub struct Dot {
    pub cx: String,
    pub cy: String,
    pub class: &'static str,
    pub title: String,
}

pub struct Legend {
    pub class: &'static str,
    pub label: &'static str,
}

/// One of the numbers under a chart; `key` names it for scripts and tests.
pub struct Figure {
    pub key: &'static str,
    pub label: &'static str,
    pub value: String,
}

pub struct Chart {
    pub frame: &'static Frame,
    /// The element id: `trend-finished`, `trend-queue`, `trend-wait`, `trend-run`,
    /// `trend-slots`.
    pub id: &'static str,
    pub title: String,
    /// One sentence that says what the chart shows, for screen readers.
    pub description: String,
    pub y_ticks: Vec<Tick>,
    pub x_ticks: Vec<Tick>,
    pub bars: Vec<Bar>,
    pub lines: Vec<Line>,
    pub dots: Vec<Dot>,
    pub legend: Vec<Legend>,
    pub figures: Vec<Figure>,
    /// Nothing to draw: the note says why.
    pub empty: bool,
    pub empty_note: String,
}

/// One bucket with something in it, for the numbers table.
pub struct Row {
    pub start: Time,
    pub succeeded: u32,
    pub failed: u32,
    pub canceled: u32,
    pub queue: String,
    pub slots: String,
    pub wait: String,
    pub run: String,
}

/// The trends section of a page.
pub struct TrendsView {
    /// `1h` or `24h`.
    pub window: &'static str,
    /// "the last hour" or "the last 24 hours".
    pub span: &'static str,
    /// "minute" or "15 minutes".
    pub bucket: &'static str,
    /// The links that switch the window: this page's path.
    pub link_1h: String,
    pub link_24h: String,
    pub from: Time,
    pub to: Time,
    /// The jobs that finished before this start are still being read from the store.
    pub rebuilding: bool,
    pub charts: Vec<Chart>,
    pub rows: Vec<Row>,
    /// The series as JSON.
    pub json_link: String,
}

impl TrendsView {
    /// `path` is the page's own address (for the window links); `api` the series'.
    pub fn build(series: &Series, window: Window, path: &str, api: &str) -> TrendsView {
        let points = &series.buckets;
        let axis = XAxis::new(window, points.len());
        let (span, bucket) = match window {
            Window::Hour => ("the last hour", "minute"),
            Window::Day => ("the last 24 hours", "15 minutes"),
        };
        let charts = vec![
            finished_chart(series, &axis, span, bucket),
            queue_chart(series, &axis, span),
            duration_chart(
                "trend-wait",
                "Queued → started",
                "How long jobs waited from ready to started (p50 and p95)",
                points,
                &axis,
                |p| (p.wait_p50_ms, p.wait_p95_ms),
                (series.totals.wait_p50_ms, series.totals.wait_p95_ms),
                span,
            ),
            duration_chart(
                "trend-run",
                "Run duration",
                "How long jobs ran (p50 and p95)",
                points,
                &axis,
                |p| (p.run_p50_ms, p.run_p95_ms),
                (series.totals.run_p50_ms, series.totals.run_p95_ms),
                span,
            ),
            slots_chart(series, &axis, span),
        ];
        let rows = points
            .iter()
            .filter(|p| {
                p.succeeded + p.failed + p.canceled > 0
                    || p.queue_depth.is_some_and(|q| q > 0)
                    || p.slots_used.is_some_and(|s| s > 0)
            })
            .map(|p| Row {
                start: Time::at(p.start),
                succeeded: p.succeeded,
                failed: p.failed,
                canceled: p.canceled,
                queue: p.queue_depth.map(|q| q.to_string()).unwrap_or_else(|| "—".into()),
                slots: match (p.slots_used, p.slots_total) {
                    (Some(u), Some(t)) => format!("{u} / {t}"),
                    _ => "—".into(),
                },
                wait: pair(p.wait_p50_ms, p.wait_p95_ms),
                run: pair(p.run_p50_ms, p.run_p95_ms),
            })
            .collect();
        TrendsView {
            window: window.name(),
            span,
            bucket,
            link_1h: format!("{path}?window=1h"),
            link_24h: format!("{path}?window=24h"),
            from: Time::at(series.from),
            to: Time::at(series.to),
            rebuilding: !series.complete,
            charts,
            rows,
            json_link: format!("{api}?window={}", percent_encode(window.name())),
        }
    }
}

/// "1.2 s / 3.4 s", or "—".
fn pair(p50: Option<i64>, p95: Option<i64>) -> String {
    match (p50, p95) {
        (Some(a), Some(b)) => format!("{} / {}", short_duration(a), short_duration(b)),
        _ => "—".into(),
    }
}

/// A duration in a few characters: "850 ms", "1.2 s", "4 min", "1.5 h".
pub fn short_duration(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        let s = ms as f64 / 1000.0;
        if s < 10.0 { format!("{s:.1} s") } else { format!("{s:.0} s") }
    } else if ms < 3_600_000 {
        let m = ms as f64 / 60_000.0;
        if m < 10.0 { format!("{m:.1} min") } else { format!("{m:.0} min") }
    } else {
        format!("{:.1} h", ms as f64 / 3_600_000.0)
    }
}

/// A number as SVG coordinates want it: one decimal at most.
fn n(v: f64) -> String {
    let r = (v * 10.0).round() / 10.0;
    if r.fract() == 0.0 { format!("{r:.0}") } else { format!("{r:.1}") }
}

/// The x axis: one slot per bucket, oldest at the left.
struct XAxis {
    window: Window,
    slot: f64,
}

impl XAxis {
    fn new(window: Window, slots: usize) -> XAxis {
        XAxis { window, slot: PLOT_WIDTH / slots.max(1) as f64 }
    }

    fn left(&self, i: usize) -> f64 {
        LEFT + self.slot * i as f64
    }

    fn middle(&self, i: usize) -> f64 {
        self.left(i) + self.slot / 2.0
    }

    /// Labels every quarter of the window, relative to now.
    fn ticks(&self) -> Vec<Tick> {
        let labels: [&str; 5] = match self.window {
            Window::Hour => ["−60 min", "−45 min", "−30 min", "−15 min", "now"],
            Window::Day => ["−24 h", "−18 h", "−12 h", "−6 h", "now"],
        };
        labels
            .iter()
            .enumerate()
            .map(|(k, label)| Tick {
                at: n(LEFT + PLOT_WIDTH * k as f64 / 4.0),
                label: label.to_string(),
                anchor: match k {
                    0 => "start",
                    4 => "end",
                    _ => "middle",
                },
            })
            .collect()
    }

    /// What a bucket's tooltip starts with: "10:42 UTC" (and the date over a day).
    fn when(&self, start: i64) -> String {
        let t = Time::at(start);
        match self.window {
            Window::Hour => format!("{} UTC", &t.text[11..16]),
            Window::Day => format!("{} UTC", &t.text[..16]),
        }
    }
}

/// The y scale from 0 to a round number at or above `max` (1, 2 or 5 times a power of
/// ten; at least 1).
fn round_up(max: f64) -> f64 {
    if max <= 1.0 {
        return 1.0;
    }
    let power = 10f64.powf(max.log10().floor());
    for step in [1.0, 2.0, 5.0, 10.0] {
        if power * step >= max {
            return power * step;
        }
    }
    power * 10.0
}

fn y_of(v: f64, top: f64) -> f64 {
    TOP + PLOT_HEIGHT - (v / top) * PLOT_HEIGHT
}

fn y_ticks(top: f64, label: impl Fn(f64) -> String) -> Vec<Tick> {
    [0.0, 0.5, 1.0].iter().map(|f| Tick { at: n(y_of(top * f, top)), label: label(top * f), anchor: "end" }).collect()
}

/// A duration on the y axis: "2.5 ms" below 10 ms, else as [`short_duration`].
fn duration_label(v: f64) -> String {
    if v < 10.0 && v.fract() != 0.0 { format!("{v:.1} ms") } else { short_duration(v.round() as i64) }
}

fn count_label(v: f64) -> String {
    if v.fract() == 0.0 { format!("{v:.0}") } else { format!("{v:.1}") }
}

fn chart(id: &'static str, title: String, description: String, axis: &XAxis) -> Chart {
    Chart {
        frame: &FRAME,
        id,
        title,
        description,
        y_ticks: Vec::new(),
        x_ticks: axis.ticks(),
        bars: Vec::new(),
        lines: Vec::new(),
        dots: Vec::new(),
        legend: Vec::new(),
        figures: Vec::new(),
        empty: false,
        empty_note: String::new(),
    }
}

fn finished_chart(series: &Series, axis: &XAxis, span: &str, bucket: &str) -> Chart {
    let points = &series.buckets;
    let mut c = chart(
        "trend-finished",
        format!("Finished jobs per {bucket}"),
        format!("Jobs that succeeded, failed or were canceled per {bucket} over {span}"),
        axis,
    );
    let max = points.iter().map(|p| p.succeeded + p.failed + p.canceled).max().unwrap_or(0);
    let top = round_up(f64::from(max));
    c.y_ticks = y_ticks(top, count_label);
    let width = (axis.slot * 0.8).max(1.0);
    for (i, p) in points.iter().enumerate() {
        let title =
            format!("{}: {} succeeded, {} failed, {} canceled", axis.when(p.start), p.succeeded, p.failed, p.canceled);
        let mut base = 0.0;
        for (value, class) in [(p.succeeded, "ok"), (p.failed, "bad"), (p.canceled, "off")] {
            if value == 0 {
                continue;
            }
            let (y0, y1) = (y_of(base, top), y_of(base + f64::from(value), top));
            c.bars.push(Bar {
                x: n(axis.left(i) + (axis.slot - width) / 2.0),
                y: n(y1),
                w: n(width),
                h: n((y0 - y1).max(0.5)),
                class,
                title: title.clone(),
            });
            base += f64::from(value);
        }
    }
    c.legend = vec![
        Legend { class: "ok", label: "succeeded" },
        Legend { class: "bad", label: "failed" },
        Legend { class: "off", label: "canceled" },
    ];
    let t = &series.totals;
    c.figures = vec![
        Figure { key: "succeeded", label: "succeeded", value: t.succeeded.to_string() },
        Figure { key: "failed", label: "failed", value: t.failed.to_string() },
        Figure { key: "canceled", label: "canceled", value: t.canceled.to_string() },
    ];
    c.empty = max == 0;
    c.empty_note = format!("No job finished in {span}.");
    c
}

fn queue_chart(series: &Series, axis: &XAxis, span: &str) -> Chart {
    let points = &series.buckets;
    let mut c = chart(
        "trend-queue",
        "Queue depth".into(),
        format!("The most jobs waiting to start (PENDING) in each bucket over {span}"),
        axis,
    );
    let max = points.iter().filter_map(|p| p.queue_depth).max().unwrap_or(0);
    let top = round_up(f64::from(max));
    c.y_ticks = y_ticks(top, count_label);
    let width = (axis.slot * 0.8).max(1.0);
    for (i, p) in points.iter().enumerate() {
        let Some(q) = p.queue_depth.filter(|q| *q > 0) else { continue };
        let y = y_of(f64::from(q), top);
        c.bars.push(Bar {
            x: n(axis.left(i) + (axis.slot - width) / 2.0),
            y: n(y),
            w: n(width),
            h: n((TOP + PLOT_HEIGHT - y).max(0.5)),
            class: "queue",
            title: format!("{}: up to {q} waiting", axis.when(p.start)),
        });
    }
    c.legend = vec![Legend { class: "queue", label: "waiting (peak)" }];
    let t = &series.totals;
    c.figures = vec![
        Figure { key: "queue-now", label: "waiting now", value: opt(t.queue_depth_now) },
        Figure { key: "queue-max", label: "peak", value: opt(t.queue_depth_max) },
    ];
    c.empty = points.iter().all(|p| p.queue_depth.is_none());
    c.empty_note = "Not sampled yet: the queue is sampled every few seconds.".into();
    c
}

fn opt(v: Option<u32>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "—".into())
}

#[allow(clippy::too_many_arguments)]
fn duration_chart(
    id: &'static str,
    title: &str,
    what: &str,
    points: &[Point],
    axis: &XAxis,
    values: impl Fn(&Point) -> (Option<i64>, Option<i64>),
    totals: (Option<i64>, Option<i64>),
    span: &str,
) -> Chart {
    let mut c = chart(id, title.into(), format!("{what} of the jobs that finished in each bucket over {span}"), axis);
    let max = points.iter().filter_map(|p| values(p).1).max().unwrap_or(0);
    let top = round_up(max as f64);
    c.y_ticks = y_ticks(top, duration_label);
    for (class, pick) in [("p95", 1usize), ("p50", 0usize)] {
        let mut run: Vec<(f64, f64, String)> = Vec::new();
        let flush = |run: &mut Vec<(f64, f64, String)>, c: &mut Chart| {
            match run.len() {
                0 => {}
                1 => {
                    let (x, y, title) = run.remove(0);
                    c.dots.push(Dot { cx: n(x), cy: n(y), class, title });
                }
                _ => c.lines.push(Line {
                    class,
                    points: run.iter().map(|(x, y, _)| format!("{},{}", n(*x), n(*y))).collect::<Vec<_>>().join(" "),
                }),
            }
            run.clear();
        };
        for (i, p) in points.iter().enumerate() {
            let (p50, p95) = values(p);
            match if pick == 0 { p50 } else { p95 } {
                Some(v) => run.push((
                    axis.middle(i),
                    y_of(v as f64, top),
                    format!("{}: {class} {}", axis.when(p.start), short_duration(v)),
                )),
                None => flush(&mut run, &mut c),
            }
        }
        flush(&mut run, &mut c);
    }
    c.legend = vec![Legend { class: "p50", label: "p50" }, Legend { class: "p95", label: "p95" }];
    let show = |v: Option<i64>| v.map(short_duration).unwrap_or_else(|| "—".into());
    c.figures = vec![
        Figure { key: "p50", label: "p50", value: show(totals.0) },
        Figure { key: "p95", label: "p95", value: show(totals.1) },
    ];
    c.empty = totals.1.is_none();
    c.empty_note = format!("No job ran in {span}.");
    c
}

fn slots_chart(series: &Series, axis: &XAxis, span: &str) -> Chart {
    let points = &series.buckets;
    let mut c = chart(
        "trend-slots",
        "Slot use".into(),
        format!("The most execution slots in use, and the slots offered, in each bucket over {span}"),
        axis,
    );
    let max = points.iter().map(|p| p.slots_used.unwrap_or(0).max(p.slots_total.unwrap_or(0))).max().unwrap_or(0);
    let top = round_up(f64::from(max));
    c.y_ticks = y_ticks(top, count_label);
    let width = (axis.slot * 0.8).max(1.0);
    let mut offered: Vec<String> = Vec::new();
    let mut segments: Vec<Vec<String>> = Vec::new();
    for (i, p) in points.iter().enumerate() {
        if let Some(used) = p.slots_used.filter(|u| *u > 0) {
            let y = y_of(f64::from(used), top);
            c.bars.push(Bar {
                x: n(axis.left(i) + (axis.slot - width) / 2.0),
                y: n(y),
                w: n(width),
                h: n((TOP + PLOT_HEIGHT - y).max(0.5)),
                class: "used",
                title: format!(
                    "{}: up to {used} in use of {}",
                    axis.when(p.start),
                    p.slots_total.map(|t| t.to_string()).unwrap_or_else(|| "?".into())
                ),
            });
        }
        match p.slots_total {
            // A step line: flat across the bucket.
            Some(total) => {
                let y = n(y_of(f64::from(total), top));
                offered.push(format!("{},{y}", n(axis.left(i))));
                offered.push(format!("{},{y}", n(axis.left(i) + axis.slot)));
            }
            None if !offered.is_empty() => segments.push(std::mem::take(&mut offered)),
            None => {}
        }
    }
    if !offered.is_empty() {
        segments.push(offered);
    }
    c.lines = segments.into_iter().map(|s| Line { class: "total", points: s.join(" ") }).collect();
    c.legend = vec![Legend { class: "used", label: "in use (peak)" }, Legend { class: "total", label: "offered" }];
    let t = &series.totals;
    c.figures = vec![
        Figure { key: "slots-now", label: "in use now", value: opt(t.slots_used_now) },
        Figure { key: "slots-total", label: "offered now", value: opt(t.slots_total_now) },
    ];
    c.empty = points.iter().all(|p| p.slots_total.is_none());
    c.empty_note = "Not sampled yet: slots are sampled every few seconds.".into();
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trends::Totals;

    fn series(points: Vec<Point>) -> Series {
        Series {
            job_type: Some("t".into()),
            window: "1h",
            bucket_seconds: 60,
            from: points.first().map(|p| p.start).unwrap_or(0),
            to: 0,
            complete: true,
            totals: Totals {
                succeeded: points.iter().map(|p| u64::from(p.succeeded)).sum(),
                failed: points.iter().map(|p| u64::from(p.failed)).sum(),
                canceled: 0,
                wait_p50_ms: Some(1200),
                wait_p95_ms: Some(3400),
                run_p50_ms: None,
                run_p95_ms: None,
                queue_depth_max: Some(7),
                queue_depth_now: Some(2),
                slots_used_now: Some(1),
                slots_total_now: Some(4),
            },
            buckets: points,
        }
    }

    fn point(i: i64) -> Point {
        Point {
            start: 1_700_000_000_000 + i * 60_000,
            succeeded: 0,
            failed: 0,
            canceled: 0,
            queue_depth: None,
            slots_used: None,
            slots_total: None,
            wait_p50_ms: None,
            wait_p95_ms: None,
            run_p50_ms: None,
            run_p95_ms: None,
        }
    }

    #[test]
    fn the_frame_follows_the_coordinates() {
        assert_eq!(FRAME.view_box, format!("0 0 {WIDTH} {}", TOP + PLOT_HEIGHT + 24.0));
        assert_eq!((FRAME.x1, FRAME.x2), (n(LEFT).as_str(), n(WIDTH - RIGHT).as_str()));
        assert_eq!(FRAME.y_label_x, n(LEFT - 6.0));
        assert_eq!(FRAME.note_x, n(LEFT + PLOT_WIDTH / 2.0));
        assert_eq!(FRAME.note_y, n(TOP + PLOT_HEIGHT / 2.0));
        assert_eq!(duration_label(2.5), "2.5 ms");
    }

    #[test]
    fn scales_round_up_to_one_two_or_five() {
        assert_eq!(round_up(0.0), 1.0);
        assert_eq!(round_up(3.0), 5.0);
        assert_eq!(round_up(7.0), 10.0);
        assert_eq!(round_up(11.0), 20.0);
        assert_eq!(round_up(2000.0), 2000.0);
        assert_eq!(short_duration(850), "850 ms");
        assert_eq!(short_duration(1234), "1.2 s");
        assert_eq!(short_duration(125_000), "2.1 min");
        assert_eq!(short_duration(5_400_000), "1.5 h");
    }

    #[test]
    fn bars_stack_outcomes_and_lines_break_where_a_bucket_has_no_value() {
        let mut points: Vec<Point> = (0..60).map(point).collect();
        (points[10].succeeded, points[10].failed) = (3, 2);
        points[11].succeeded = 1;
        for i in [20, 21, 22, 40] {
            (points[i].wait_p50_ms, points[i].wait_p95_ms) = (Some(1000), Some(2000));
        }
        points[30].queue_depth = Some(7);
        let view = TrendsView::build(&series(points), Window::Hour, "/plugin", "/api/plugin/series");
        let finished = &view.charts[0];
        assert_eq!(finished.bars.len(), 3, "two stacked rectangles, then one");
        assert_eq!(finished.bars[0].class, "ok");
        assert_eq!(finished.bars[1].class, "bad");
        assert_eq!(finished.bars[0].title, "22:23 UTC: 3 succeeded, 2 failed, 0 canceled");
        assert_eq!(finished.y_ticks.iter().map(|t| t.label.as_str()).collect::<Vec<_>>(), ["0", "2.5", "5"]);
        assert_eq!(finished.figures[0].value, "4");
        let wait = &view.charts[2];
        assert_eq!((wait.lines.len(), wait.dots.len()), (2, 2), "a line over 20..22 and a dot at 40, for p95 and p50");
        assert_eq!(view.rows.len(), 3, "buckets with something in them");
        assert_eq!(view.link_24h, "/plugin?window=24h");
        assert!(!view.charts[1].empty);
        assert!(view.charts[4].empty, "no slot sampled");
    }
}
