//! The benchmark's smoke test: every scenario runs at its smallest size (`--quick --smoke`)
//! against a real admin process and real workers, exits 0, and prints one JSON line per
//! scenario with its figures. Benchmarks measure, tests assert behaviour: no figure is
//! compared with a target here, except that a failover loses and doubles no job.
//! `failover` and `--store postgres` start a PostgreSQL server of their own
//! (`PLUGHOST_TEST_PG_BIN`, or `/usr/lib/postgresql/<version>/bin`).

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
            "store_writer_cpu_us_per_job",
            "store_batches",
            "store_operations_per_batch",
            "admin_rss_per_queued_job_bytes",
        ],
    ),
    (
        "writer",
        &[
            "jobs",
            "store",
            "paced_rate_jobs_per_s",
            "paced_jobs_per_s",
            "paced_writer_cpu_us_per_job",
            "paced_operations_per_batch",
            "paced_disk_flushes_per_1000_jobs",
            "paced_writer_bytes_written_per_job",
            "full_speed_jobs_per_s",
            "full_speed_writer_cpu_us_per_job",
            "full_speed_operations_per_batch",
            "full_speed_disk_writes_per_1000_jobs",
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

/// The keys of the failover's line.
const FAILOVER_KEYS: &[&str] = &[
    "store",
    "lease_seconds",
    "jobs",
    "kill_to_ready_s",
    "kill_to_first_dispatch_s",
    "kill_to_first_dispatch_source",
    "lost",
    "doubled",
    "executions_repeated",
    "epoch_before",
    "epoch_after",
];

/// Figures that must be numbers in every run, whatever the machine.
const NUMBERS: &[(&str, &str)] = &[
    ("ceiling", "round_trips_per_s"),
    ("throughput", "jobs_per_s"),
    ("throughput", "ratio_to_ceiling"),
    ("throughput", "store_writer_cpu_us_per_job"),
    ("throughput", "store_operations_per_batch"),
    ("writer", "paced_writer_cpu_us_per_job"),
    ("writer", "full_speed_jobs_per_s"),
    ("writer", "full_speed_operations_per_batch"),
    ("latency", "proposal_to_completion_p99_ms"),
    ("connections", "rss_per_worker_kib"),
    ("restart", "ready_s"),
    ("restart", "jobs_api_ms"),
];

/// Runs the bench with `args`; returns its JSON lines and its whole stdout.
fn bench(args: &[&str]) -> (Vec<Value>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_bench")).args(args).output().expect("run the bench binary");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the bench failed ({}):\n{stdout}\n{stderr}", out.status);
    let lines: Vec<Value> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(stdout.contains("verdict"), "the human table follows the JSON lines:\n{stdout}");
    (lines, stdout)
}

fn line<'a>(lines: &'a [Value], scenario: &str, stdout: &str) -> &'a Value {
    let v = lines
        .iter()
        .find(|v| v["scenario"] == scenario)
        .unwrap_or_else(|| panic!("no JSON line for {scenario}:\n{stdout}"));
    assert!(v.get("error").is_none(), "{scenario} reported an error: {v}");
    v
}

#[test]
fn every_benchmark_scenario_runs_at_smoke_size_and_prints_its_figures_as_json() {
    let scenarios: Vec<&str> = KEYS.iter().map(|(s, _)| *s).collect();
    let args: Vec<&str> = ["--quick", "--smoke"].into_iter().chain(scenarios.iter().copied()).collect();
    let (lines, stdout) = bench(&args);
    assert_eq!(lines.len(), scenarios.len(), "one JSON line per scenario:\n{stdout}");
    for (scenario, keys) in KEYS {
        let v = line(&lines, scenario, &stdout);
        for key in *keys {
            assert!(v.get(*key).is_some(), "{scenario} has no {key:?}: {v}");
        }
    }
    for (scenario, key) in NUMBERS {
        let v = line(&lines, scenario, &stdout);
        assert!(v[*key].is_number(), "{scenario}.{key} is not a number: {v}");
    }
    let throughput = line(&lines, "throughput", &stdout);
    assert_eq!(throughput["store"], "sqlite");
    // A job is durable before it is dispatched, so its creation and its end are never in
    // one batch: at least two batches, of one or more operations each.
    assert!(throughput["store_batches"].as_f64().unwrap() >= 2.0, "{throughput}");
    assert!(throughput["store_operations_per_batch"].as_f64().unwrap() >= 1.0, "{throughput}");
    writer_stored_every_job(line(&lines, "writer", &stdout), "sqlite");
}

/// The writer scenario's runs wrote every job's insert and end: each run's store held all
/// its jobs as SUCCEEDED when opened again, in more than one batch (an end is queued only
/// once its insert is durable).
fn writer_stored_every_job(v: &Value, store: &str) {
    assert_eq!(v["store"], store, "{v}");
    let jobs = v["jobs"].as_u64().unwrap();
    assert!(jobs > 0, "{v}");
    for run in ["paced", "full_speed"] {
        assert_eq!(v[format!("{run}_stored_succeeded")].as_u64(), Some(jobs), "{run}: {v}");
        assert!(v[format!("{run}_batches")].as_u64().unwrap() >= 2, "{run}: {v}");
    }
}

#[test]
fn throughput_and_writer_run_on_a_postgresql_store_of_their_own() {
    let (lines, stdout) = bench(&["--quick", "--smoke", "--store", "postgres", "throughput", "writer"]);
    writer_stored_every_job(line(&lines, "writer", &stdout), "postgres");
    let v = line(&lines, "throughput", &stdout);
    assert_eq!(v["store"], "postgres", "{v}");
    for (scenario, keys) in KEYS.iter().filter(|(s, _)| *s == "throughput") {
        for key in *keys {
            assert!(v.get(*key).is_some(), "{scenario} has no {key:?}: {v}");
        }
    }
    assert!(v["jobs_per_s"].is_number(), "{v}");
    assert_eq!(v["failed_jobs"], 0, "{v}");
}

#[test]
fn failover_kills_the_leader_mid_run_and_loses_and_doubles_no_job() {
    let (lines, stdout) = bench(&["--quick", "--smoke", "failover"]);
    let v = line(&lines, "failover", &stdout);
    for key in FAILOVER_KEYS {
        assert!(v.get(*key).is_some(), "failover has no {key:?}: {v}");
    }
    assert_eq!(v["store"], "postgres", "{v}");
    assert!(v["kill_to_ready_s"].is_number(), "{v}");
    assert!(v["kill_to_first_dispatch_s"].is_number(), "the new leader dispatched: {v}");
    assert_eq!(v["lost"], 0, "no job lost: {v}");
    assert_eq!(v["doubled"], 0, "no job succeeded twice: {v}");
    assert_eq!(v["epoch_after"], v["epoch_before"].as_i64().unwrap() + 1, "{v}");
}
