//! The `sqlite_vacuum` plugin against real SQLite files: detection finds a fragmented
//! database and leaves a fresh one alone, the vacuum shrinks it (or, canceled or
//! locked out, leaves it unchanged), and end to end through the real admin the
//! descriptor is stored, detection proposes, and the job succeeds.

use std::{sync::Arc, time::Duration};

use serde_json::json;
use sqlite_vacuum::{
    SqliteVacuum,
    scan::scan,
    settings::ScanSettings,
    vacuum::{VacuumError, vacuum},
};
use tests::{
    TempDir,
    harness::TestAdmin,
    plugins::{self, PluginWorker, fragmented_database, page_counts},
};
use worker_sdk::{CancellationToken, value};

const T: &str = "sqlite_vacuum";

fn settings(dir: &std::path::Path, ratio: f64) -> ScanSettings {
    let values = [
        ("paths".to_string(), value::string_list([dir.to_string_lossy().into_owned()])),
        ("min_size_bytes".to_string(), value::int(0)),
        ("min_free_ratio".to_string(), value::double(ratio)),
    ]
    .into();
    ScanSettings::from_values(&values).unwrap()
}

#[test]
fn detection_proposes_a_fragmented_database_and_not_a_fresh_one() {
    let dir = TempDir::new("vacuum-scan");
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("nested")).unwrap();
    fragmented_database(&data.join("nested/fragmented.db"), 1_000, 3_000);
    fragmented_database(&data.join("fresh.sqlite"), 3_000, 0);
    std::fs::write(data.join("not-a-database.db"), "SQLite? no, just text").unwrap();
    // Reached through a symlinked directory, the file still has one canonical key.
    std::os::unix::fs::symlink(&data, dir.path().join("alias")).unwrap();

    let report = scan(&settings(&dir.path().join("alias"), 0.3), &CancellationToken::new());
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.databases, 2, "the text file is not opened as a database");
    assert_eq!(report.candidates.len(), 1, "only the fragmented database: {:?}", report.candidates);
    let c = &report.candidates[0];
    let canonical = std::fs::canonicalize(data.join("nested/fragmented.db")).unwrap();
    assert_eq!(c.path, canonical);
    assert!(c.stats.free_ratio() >= 0.3, "{:?}", c.stats);

    let p = c.proposal(worker_sdk::pb::JobPriority::Normal);
    assert_eq!(p.dedupe_key, canonical.to_string_lossy());
    let (_, free) = page_counts(&canonical);
    let reclaimable = worker_sdk::values::get_i64(&p.parameters, "reclaimable_bytes").unwrap();
    assert_eq!(reclaimable, free * c.stats.page_size as i64);
    assert!(p.summary.contains("reclaimable"), "{}", p.summary);

    let strict = scan(&settings(&data, 0.99), &CancellationToken::new());
    assert!(strict.candidates.is_empty(), "below the threshold nothing is proposed");
}

#[test]
fn the_vacuum_shrinks_a_fragmented_database_and_reports_bytes_before_and_after() {
    let dir = TempDir::new("vacuum-run");
    let db = dir.path().join("app.db");
    fragmented_database(&db, 1_000, 3_000);
    let size_before = std::fs::metadata(&db).unwrap().len();
    let (pages_before, free_before) = page_counts(&db);
    assert!(free_before > 0);

    let report = vacuum(&db, Duration::from_secs(5), &CancellationToken::new(), |_| {}).unwrap();
    assert_eq!(report.before.file_bytes, size_before);
    assert_eq!(report.before.stats.freelist_count as i64, free_before);
    assert_eq!(report.after.stats.freelist_count, 0);
    assert!(report.after.file_bytes < report.before.file_bytes);
    assert_eq!(report.reclaimed_bytes(), report.before.file_bytes - report.after.file_bytes);
    let (pages_after, free_after) = page_counts(&db);
    assert_eq!((pages_after, free_after), (pages_before - free_before, 0));
    let conn = rusqlite::Connection::open(&db).unwrap();
    let rows: i64 = conn.query_row("SELECT count(*) FROM kept", [], |r| r.get(0)).unwrap();
    assert_eq!(rows, 1_000, "the data survives");
}

#[test]
fn a_canceled_vacuum_leaves_the_database_unchanged() {
    let dir = TempDir::new("vacuum-cancel");
    let db = dir.path().join("app.db");
    fragmented_database(&db, 1_000, 3_000);
    let before = std::fs::read(&db).unwrap();
    let cancel = CancellationToken::new();
    cancel.cancel();
    let err = vacuum(&db, Duration::from_secs(5), &cancel, |_| {}).unwrap_err();
    assert!(matches!(err, VacuumError::Canceled), "{err}");
    assert_eq!(std::fs::read(&db).unwrap(), before);
}

#[test]
fn a_database_locked_past_the_busy_timeout_is_not_vacuumed() {
    let dir = TempDir::new("vacuum-busy");
    let db = dir.path().join("app.db");
    fragmented_database(&db, 100, 1_000);
    let holder = rusqlite::Connection::open(&db).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE; INSERT INTO kept(body) VALUES ('held');").unwrap();
    let err = vacuum(&db, Duration::from_millis(100), &CancellationToken::new(), |_| {}).unwrap_err();
    assert!(err.to_string().contains("locked"), "{err}");
    holder.execute_batch("ROLLBACK").unwrap();
    assert!(page_counts(&db).1 > 0, "still fragmented");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_admin_the_descriptor_is_stored_detection_proposes_and_the_job_shrinks_the_database() {
    tests::init_tracing();
    let dir = TempDir::new("vacuum-e2e");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let db = data.join("app.db");
    fragmented_database(&db, 1_000, 3_000);
    fragmented_database(&data.join("fresh.db"), 2_000, 0);
    let size_before = std::fs::metadata(&db).unwrap().len();

    let admin = TestAdmin::start(&dir.path().join("admin"), |_| {}).await;
    let worker = PluginWorker::start(
        admin.grpc,
        "vacuum-worker",
        &dir.path().join("worker"),
        vec![Arc::new(SqliteVacuum::new())],
    );
    let descriptor = plugins::wait_descriptor(&admin, T).await;
    let form = &descriptor["admin_config_form"];
    assert_eq!(form["sections"].as_array().unwrap().len(), 3, "{form}");
    assert_eq!(form["default_values"]["min_free_ratio"]["double_value"], 0.3);

    plugins::configure(
        &admin,
        T,
        json!({ "paths": plugins::string_list(&[data.to_str().unwrap()]), "min_size_bytes": plugins::int(0) }),
    )
    .await;
    plugins::run(&admin, T).await;
    let jobs = admin.wait_jobs("the vacuum job succeeded", &format!("job_type={T}"), 1, "succeeded").await;
    let canonical = std::fs::canonicalize(&db).unwrap();
    assert_eq!(jobs[0]["dedupe_key"], canonical.to_str().unwrap(), "the fresh database was not proposed");

    let detail = plugins::detail(&admin, jobs[0]["job_id"].as_str().unwrap()).await;
    let result = &detail["result"];
    let (before, after) = (plugins::int_output(result, "bytes_before"), plugins::int_output(result, "bytes_after"));
    assert_eq!(before as u64, size_before);
    assert!(after < before, "{result}");
    assert_eq!(std::fs::metadata(&db).unwrap().len() as i64, after);
    assert_eq!(page_counts(&db).1, 0);
    worker.stop().await;
    admin.stop().await;
}
