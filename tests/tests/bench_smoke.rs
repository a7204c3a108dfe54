//! The benchmark's smoke test: every scenario runs at its smallest size (`--quick --smoke`)
//! against a real admin process and real workers, exits 0, and prints one JSON line per
//! scenario with its figures. Benchmarks measure, tests assert behaviour: no figure is
//! compared with a target here.

use std::process::Command;

use serde_json::Value;

/// The keys each scenario's JSON line must have (a value may be null where the figure does
/// not exist, such as the /plugin time while the page answers 404).
const KEYS: &[(&str, &[&str])] = &[
    ("ceiling", &["streams", "in_flight_per_stream", "round_trips_per_s", "round_trips_per_s_one_in_flight"]),
    (
        "throughput",
        &[
            "jobs",
            "workers",
            "slots_per_worker",
            "failed_jobs",
            "elapsed_s",
            "jobs_per_s",
            "cpu_s_per_1000_jobs",
            "queued_to_assigned_p50_ms",
            "queued_to_assigned_p99_ms",
            "queued_to_assigned_max_ms",
            "round_trips_per_s",
            "ratio_to_ceiling",
        ],
    ),
    (
        "latency",
        &[
            "capacity_jobs_per_s",
            "target_rate_jobs_per_s",
            "jobs",
            "proposal_to_completion_p50_ms",
            "proposal_to_completion_p99_ms",
            "queued_to_assigned_p50_ms",
            "queued_to_assigned_p99_ms",
        ],
    ),
    ("connections", &["heartbeat_seconds", "max_workers", "rss_per_worker_kib", "cpu_s_per_1000_heartbeats", "runs"]),
    ("restart", &["jobs", "ready_s", "jobs_api_ms", "plugin_page_status", "plugin_page_ms"]),
];

/// Figures that must be numbers in every run, whatever the machine.
const NUMBERS: &[(&str, &str)] = &[
    ("ceiling", "round_trips_per_s"),
    ("throughput", "jobs_per_s"),
    ("throughput", "ratio_to_ceiling"),
    ("latency", "proposal_to_completion_p99_ms"),
    ("connections", "rss_per_worker_kib"),
    ("restart", "ready_s"),
    ("restart", "jobs_api_ms"),
];

#[test]
fn every_benchmark_scenario_runs_at_smoke_size_and_prints_its_figures_as_json() {
    let scenarios: Vec<&str> = KEYS.iter().map(|(s, _)| *s).collect();
    let out = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["--quick", "--smoke"])
        .args(&scenarios)
        .output()
        .expect("run the bench binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the bench failed ({}):\n{stdout}\n{stderr}", out.status);

    let lines: Vec<Value> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(lines.len(), scenarios.len(), "one JSON line per scenario:\n{stdout}");
    let line = |scenario: &str| -> &Value {
        lines
            .iter()
            .find(|v| v["scenario"] == scenario)
            .unwrap_or_else(|| panic!("no JSON line for {scenario}:\n{stdout}"))
    };
    for (scenario, keys) in KEYS {
        let v = line(scenario);
        assert!(v.get("error").is_none(), "{scenario} reported an error: {v}");
        for key in *keys {
            assert!(v.get(*key).is_some(), "{scenario} has no {key:?}: {v}");
        }
    }
    for (scenario, key) in NUMBERS {
        assert!(line(scenario)[*key].is_number(), "{scenario}.{key} is not a number: {}", line(scenario));
    }
    assert!(stdout.contains("verdict"), "the human table follows the JSON lines:\n{stdout}");
}
