//! The human table printed after the JSON lines: each scenario's main figures beside the
//! issue's targets, met or not.

use std::fmt::Write;

use serde_json::Value;

/// A target: the figure must be at least or at most this.
#[derive(Clone, Copy)]
enum Target {
    None,
    AtLeast(f64),
    AtMost(f64),
}

struct Row {
    scenario: String,
    figure: String,
    value: String,
    target: String,
    verdict: String,
}

fn row(scenario: &str, figure: &str, v: &Value, unit: &str, target: Target, applies: Result<(), String>) -> Row {
    let x = v.as_f64();
    let value = match x {
        Some(x) if x.abs() >= 1000.0 || (unit.is_empty() && x.fract() == 0.0) => format!("{x:.0} {unit}"),
        Some(x) if x.abs() >= 10.0 => format!("{x:.1} {unit}"),
        Some(x) => format!("{x:.3} {unit}"),
        None => "n/a".to_string(),
    };
    let (target_text, met) = match (target, x) {
        (Target::None, _) => ("-".to_string(), None),
        (Target::AtLeast(t), x) => (format!(">= {t} {unit}"), x.map(|x| x >= t)),
        (Target::AtMost(t), x) => (format!("<= {t} {unit}"), x.map(|x| x <= t)),
    };
    let mut verdict = match (target, met) {
        (Target::None, _) => String::new(),
        (_, Some(true)) => "met".to_string(),
        (_, Some(false)) => "NOT met".to_string(),
        (_, None) => "not measured".to_string(),
    };
    if let (false, Err(why)) = (verdict.is_empty(), applies) {
        verdict.push_str(&format!(" ({why})"));
    }
    Row {
        scenario: scenario.into(),
        figure: figure.into(),
        value: value.trim_end().into(),
        target: target_text,
        verdict,
    }
}

pub fn table(results: &[Value]) -> String {
    let mut rows: Vec<Row> = Vec::new();
    for r in results {
        let s = r["scenario"].as_str().unwrap_or("?");
        if let Some(e) = r.get("error") {
            rows.push(Row {
                scenario: s.into(),
                figure: "error".into(),
                value: e.as_str().unwrap_or("").chars().take(60).collect(),
                target: String::new(),
                verdict: "FAILED".into(),
            });
            continue;
        }
        match s {
            "ceiling" => {
                rows.push(row(s, "round trips/s", &r["round_trips_per_s"], "/s", Target::None, Ok(())));
            }
            "throughput" => {
                // The targets of the performance issue: 90,000 jobs/s on 2 cores (admin, workers
                // and bench sharing them), 150,000 on 16 cores with 32 workers x 64 slots.
                let cores = r["cores"].as_u64().unwrap_or(0);
                let (target, applies) = if cores >= 16 {
                    let w = r["workers"].as_u64().unwrap_or(0);
                    (150_000.0, if w >= 32 { Ok(()) } else { Err(format!("{w} workers; the target is for 32")) })
                } else {
                    (90_000.0, if cores >= 2 { Ok(()) } else { Err("the target is for 2 cores".to_string()) })
                };
                if r["store"] == "postgres" {
                    // The targets are the SQLite admin's; PostgreSQL's figure stands beside it.
                    rows.push(row(s, "jobs/s (PostgreSQL store)", &r["jobs_per_s"], "/s", Target::None, Ok(())));
                } else {
                    rows.push(row(s, "jobs/s", &r["jobs_per_s"], "/s", Target::AtLeast(target), applies));
                }
                rows.push(row(s, "jobs/s / round trips/s", &r["ratio_to_ceiling"], "", Target::AtLeast(0.25), Ok(())));
                rows.push(row(s, "admin CPU per 1,000 jobs", &r["cpu_s_per_1000_jobs"], "s", Target::None, Ok(())));
                rows.push(row(
                    s,
                    "admin RSS per queued job",
                    &r["admin_rss_per_queued_job_bytes"],
                    "B",
                    Target::AtMost(1024.0),
                    Ok(()),
                ));
                rows.push(row(
                    s,
                    "store writer CPU per job",
                    &r["store_writer_cpu_us_per_job"],
                    "us",
                    Target::AtMost(4.0),
                    Ok(()),
                ));
                rows.push(row(
                    s,
                    "queued->assigned p99 (backlog)",
                    &r["queued_to_assigned_p99_ms"],
                    "ms",
                    Target::None,
                    Ok(()),
                ));
            }
            "writer" => {
                // The store's writer alone (no target of its own: the writer's 4 us is
                // judged in `throughput`, where the writer shares the cores).
                rows.push(row(
                    s,
                    "writer CPU per job (paced)",
                    &r["paced_writer_cpu_us_per_job"],
                    "us",
                    Target::None,
                    Ok(()),
                ));
                rows.push(row(s, "jobs/s at full speed", &r["full_speed_jobs_per_s"], "/s", Target::None, Ok(())));
                rows.push(row(
                    s,
                    "writer CPU per job (full speed)",
                    &r["full_speed_writer_cpu_us_per_job"],
                    "us",
                    Target::None,
                    Ok(()),
                ));
            }
            "latency" => {
                rows.push(row(
                    s,
                    "proposal->execute p99",
                    &r["proposal_to_execute_p99_ms"],
                    "ms",
                    Target::AtMost(2.0),
                    Ok(()),
                ));
                rows.push(row(s, "queued->assigned p50", &r["queued_to_assigned_p50_ms"], "ms", Target::None, Ok(())));
                rows.push(row(
                    s,
                    "queued->assigned p99",
                    &r["queued_to_assigned_p99_ms"],
                    "ms",
                    Target::AtMost(5.0),
                    Ok(()),
                ));
                rows.push(row(
                    s,
                    "proposal->completion p50",
                    &r["proposal_to_completion_p50_ms"],
                    "ms",
                    Target::None,
                    Ok(()),
                ));
                rows.push(row(
                    s,
                    "proposal->completion p99",
                    &r["proposal_to_completion_p99_ms"],
                    "ms",
                    Target::None,
                    Ok(()),
                ));
            }
            "connections" => {
                let most = r["max_workers"].as_u64().unwrap_or(0);
                let applies =
                    if most >= 10_000 { Ok(()) } else { Err(format!("measured at {most}; target at 10,000")) };
                rows.push(row(
                    s,
                    "RSS per idle worker",
                    &r["rss_per_worker_kib"],
                    "KiB",
                    Target::AtMost(50.0),
                    applies,
                ));
                rows.push(row(
                    s,
                    "admin CPU per 1,000 heartbeats",
                    &r["cpu_s_per_1000_heartbeats"],
                    "s",
                    Target::None,
                    Ok(()),
                ));
            }
            "restart" => {
                let jobs = r["jobs"].as_u64().unwrap_or(0);
                let applies = if jobs >= 1_000_000 { Ok(()) } else { Err(format!("{jobs} jobs; target at 1,000,000")) };
                rows.push(row(s, "start to ready", &r["ready_s"], "s", Target::AtMost(2.0), applies.clone()));
                rows.push(row(
                    s,
                    "GET /api/plugin/jobs",
                    &r["jobs_api_ms"],
                    "ms",
                    Target::AtMost(50.0),
                    applies.clone(),
                ));
                let mut page = row(s, "GET /plugin", &r["plugin_page_ms"], "ms", Target::AtMost(50.0), applies);
                if r["plugin_page_status"] == 404 {
                    page.verdict = "not measured (page not built yet: 404)".into();
                }
                rows.push(page);
                if r["plugin_jobs_page_status"] == 200 {
                    rows.push(row(s, "GET /plugin/jobs", &r["plugin_jobs_page_ms"], "ms", Target::None, Ok(())));
                }
            }
            "failover" => {
                let lease = r["lease_seconds"].as_f64().unwrap_or(f64::NAN);
                rows.push(row(s, "kill -> B /readyz 200", &r["kill_to_ready_s"], "s", Target::None, Ok(())));
                rows.push(row(
                    s,
                    "kill -> first dispatch by B",
                    &r["kill_to_first_dispatch_s"],
                    "s",
                    Target::AtMost(lease + 2.0),
                    Ok(()),
                ));
                rows.push(row(s, "jobs lost", &r["lost"], "", Target::AtMost(0.0), Ok(())));
                rows.push(row(s, "jobs doubled", &r["doubled"], "", Target::AtMost(0.0), Ok(())));
                rows.push(row(s, "jobs re-executed (expected)", &r["executions_repeated"], "", Target::None, Ok(())));
            }
            _ => {}
        }
    }
    let headers = ["scenario", "figure", "value", "target", "verdict"];
    let cells: Vec<[&str; 5]> =
        rows.iter().map(|r| [&r.scenario[..], &r.figure[..], &r.value[..], &r.target[..], &r.verdict[..]]).collect();
    let mut widths = headers.map(str::len);
    for c in &cells {
        for (w, v) in widths.iter_mut().zip(c) {
            *w = (*w).max(v.chars().count());
        }
    }
    let mut out = String::from("\n");
    let line = |out: &mut String, c: [&str; 5]| {
        let _ = writeln!(
            out,
            "{:<w0$}  {:<w1$}  {:>w2$}  {:<w3$}  {}",
            c[0],
            c[1],
            c[2],
            c[3],
            c[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        );
    };
    line(&mut out, headers);
    for c in cells {
        line(&mut out, c);
    }
    out
}
