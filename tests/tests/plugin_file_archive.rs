//! The `file_archive` plugin against real files: an archive round-trips the content
//! and replaces the original only after it read back the same, a canceled run leaves
//! no partial file, a file that changes mid-run is left alone, an existing archive is
//! never replaced, detection picks only old matching files, and end to end through the
//! real admin the descriptor is stored and old logs are archived.

use std::{
    io::{Read, Write},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use file_archive::{
    FileArchive,
    archive::{ArchiveError, archive_file, archive_path, partial_path},
    format::Format,
    scan::scan,
    settings::ArchiveSettings,
};
use serde_json::json;
use tests::{
    TempDir,
    harness::TestAdmin,
    plugins::{self, PluginWorker},
};
use worker_sdk::{CancellationToken, value};

const T: &str = "file_archive";
const DAY: Duration = Duration::from_secs(86_400);

/// Log-like text: compressible, but not trivially.
fn log_text(lines: usize) -> Vec<u8> {
    (0..lines)
        .map(|i| format!("2024-05-01T10:{:02}:{:02} INFO request {i} took {}ms\n", i % 60, i % 59, i % 97))
        .collect::<String>()
        .into_bytes()
}

fn write_aged(path: &Path, content: &[u8], age: Duration) {
    std::fs::write(path, content).unwrap();
    std::fs::File::options().write(true).open(path).unwrap().set_modified(SystemTime::now() - age).unwrap();
}

fn decode(format: Format, archive: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    format.decoder(std::fs::File::open(archive).unwrap()).read_to_end(&mut out).unwrap();
    out
}

fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    n.sort();
    n
}

#[test]
fn archiving_round_trips_the_content_and_removes_the_original_only_after_verifying() {
    let dir = TempDir::new("archive-roundtrip");
    for format in [Format::Zstd, Format::Gzip { level: 6 }] {
        let original = dir.path().join(format!("app-{}.log", format.extension()));
        let content = log_text(200_000);
        write_aged(&original, &content, 10 * DAY);
        let modified = std::fs::metadata(&original).unwrap().modified().unwrap();
        let mut reports = Vec::new();

        let archived = archive_file(&original, format, &CancellationToken::new(), |p| reports.push(p)).unwrap();
        assert!(!original.exists(), "the original is removed");
        assert_eq!(archived.archive, archive_path(&original, format));
        assert_eq!(archived.original_bytes, content.len() as u64);
        assert!(archived.archive_bytes * 4 < archived.original_bytes, "{format:?} compresses: {archived:?}");
        assert_eq!(decode(format, &archived.archive), content, "{format:?} round-trips");
        assert_eq!(std::fs::metadata(&archived.archive).unwrap().modified().unwrap(), modified);
        let last = reports.last().unwrap();
        assert_eq!((last.done, last.total), (content.len() as u64, content.len() as u64), "progress counts bytes");
        assert!(reports.windows(2).all(|w| w[0].percent() <= w[1].percent()), "progress only goes forward");
    }
    assert!(names(dir.path()).iter().all(|n| !n.ends_with(".part")), "{:?}", names(dir.path()));
}

#[test]
fn a_symlink_planted_at_the_partial_name_cannot_redirect_the_write() {
    let dir = TempDir::new("archive-symlink");
    let victim = dir.path().join("victim.conf");
    std::fs::write(&victim, b"precious").unwrap();
    std::fs::set_permissions(&victim, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let original = dir.path().join("app.log");
    let content = log_text(10_000);
    write_aged(&original, &content, 10 * DAY);
    std::os::unix::fs::symlink(&victim, partial_path(&original, Format::Zstd)).unwrap();

    let archived = archive_file(&original, Format::Zstd, &CancellationToken::new(), |_| {}).unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious", "the symlink's target was not written");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&victim).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "nor chmodded");
    assert!(std::fs::symlink_metadata(&archived.archive).unwrap().file_type().is_file());
    assert_eq!(decode(Format::Zstd, &archived.archive), content);
}

#[test]
fn a_canceled_run_leaves_no_partial_file_and_keeps_the_original() {
    let dir = TempDir::new("archive-cancel");
    let original = dir.path().join("big.log");
    let content = log_text(300_000);
    write_aged(&original, &content, 10 * DAY);
    for format in [Format::Zstd, Format::Gzip { level: 1 }] {
        let cancel = CancellationToken::new();
        let mut seen = 0;
        let err = archive_file(&original, format, &cancel, |_| {
            // Cancel as soon as the first bytes are compressed: mid-run.
            seen += 1;
            cancel.cancel();
        })
        .unwrap_err();
        assert!(matches!(err, ArchiveError::Canceled), "{err}");
        assert!(seen >= 1);
        assert_eq!(names(dir.path()), ["big.log"], "no partial archive and no archive");
        assert_eq!(std::fs::read(&original).unwrap(), content);
    }
}

#[test]
fn a_file_that_changes_while_it_is_archived_is_left_alone() {
    let dir = TempDir::new("archive-changed");
    let original = dir.path().join("busy.log");
    write_aged(&original, &log_text(300_000), 10 * DAY);
    let mut appended = false;
    let err = archive_file(&original, Format::Zstd, &CancellationToken::new(), |_| {
        if !appended {
            appended = true;
            let mut f = std::fs::File::options().append(true).open(&original).unwrap();
            f.write_all(b"a late line\n").unwrap();
        }
    })
    .unwrap_err();
    assert!(matches!(err, ArchiveError::Changed(_)), "{err}");
    assert_eq!(names(dir.path()), ["busy.log"]);
    assert!(std::fs::read(&original).unwrap().ends_with(b"a late line\n"));
}

#[test]
fn an_existing_archive_is_never_replaced() {
    let dir = TempDir::new("archive-exists");
    let original = dir.path().join("app.log");
    write_aged(&original, b"new content\n", 10 * DAY);
    std::fs::write(dir.path().join("app.log.zst"), b"somebody else's archive").unwrap();
    let err = archive_file(&original, Format::Zstd, &CancellationToken::new(), |_| {}).unwrap_err();
    assert!(matches!(err, ArchiveError::ArchiveExists(_)), "{err}");
    assert_eq!(std::fs::read(dir.path().join("app.log.zst")).unwrap(), b"somebody else's archive");
    assert!(original.exists());
}

#[test]
fn detection_proposes_only_old_files_that_match_the_patterns() {
    let dir = TempDir::new("archive-scan");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(logs.join("sub")).unwrap();
    write_aged(&logs.join("old.log"), b"old\n", 10 * DAY);
    write_aged(&logs.join("sub/older.log"), b"older\n", 20 * DAY);
    write_aged(&logs.join("fresh.log"), b"fresh\n", Duration::ZERO);
    write_aged(&logs.join("old.txt"), b"not a log\n", 10 * DAY);
    write_aged(&logs.join("done.log.zst"), b"archived already\n", 10 * DAY);
    write_aged(&logs.join("taken.log"), b"its archive exists\n", 10 * DAY);
    write_aged(&logs.join("taken.log.zst"), b"x", 10 * DAY);

    let values = [
        ("paths".to_string(), value::string_list([logs.to_string_lossy().into_owned()])),
        ("min_age".to_string(), value::duration(DAY)),
    ]
    .into();
    let settings = ArchiveSettings::from_values(&values).unwrap();
    let report = scan(&settings, SystemTime::now(), &CancellationToken::new());
    let found: Vec<PathBuf> = report.candidates.iter().map(|c| c.path.clone()).collect();
    let canonical = |p: &str| std::fs::canonicalize(logs.join(p)).unwrap();
    assert_eq!(found, [canonical("sub/older.log"), canonical("old.log")], "oldest first");
    assert!(report.problems.iter().any(|p| p.contains("taken.log.zst")), "{:?}", report.problems);
    let proposal = report.candidates[1].proposal(Format::Zstd, SystemTime::now());
    assert_eq!(proposal.dedupe_key, canonical("old.log").to_string_lossy());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_admin_the_descriptor_is_stored_and_old_logs_are_archived() {
    tests::init_tracing();
    let dir = TempDir::new("archive-e2e");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let content = log_text(50_000);
    write_aged(&logs.join("app-1.log"), &content, 10 * DAY);
    write_aged(&logs.join("app-2.log"), &content[..1000], 12 * DAY);
    write_aged(&logs.join("today.log"), b"still being written\n", Duration::ZERO);

    let admin = TestAdmin::start(&dir.path().join("admin"), |_| {}).await;
    let worker = PluginWorker::start(
        admin.grpc,
        "archive-worker",
        &dir.path().join("worker"),
        vec![Arc::new(FileArchive::new())],
    );
    let descriptor = plugins::wait_descriptor(&admin, T).await;
    let fields: Vec<&str> = descriptor["admin_config_form"]["sections"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["fields"].as_array().unwrap())
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(fields.contains(&"min_age") && fields.contains(&"format"), "{fields:?}");

    plugins::configure(
        &admin,
        T,
        json!({
            "paths": plugins::string_list(&[logs.to_str().unwrap()]),
            "min_age": plugins::seconds(86_400),
            "format": plugins::string("gz"),
        }),
    )
    .await;
    plugins::run(&admin, T).await;
    let jobs = admin.wait_jobs("two archive jobs succeeded", &format!("job_type={T}"), 2, "succeeded").await;
    assert!(jobs.iter().all(|j| j["dedupe_key"].as_str().unwrap().ends_with(".log")));
    assert_eq!(names(&logs), ["app-1.log.gz", "app-2.log.gz", "today.log"]);
    assert_eq!(decode(Format::Gzip { level: 6 }, &logs.join("app-1.log.gz")), content);

    let job = jobs.iter().find(|j| j["dedupe_key"].as_str().unwrap().ends_with("app-1.log")).unwrap();
    let detail = plugins::detail(&admin, job["job_id"].as_str().unwrap()).await;
    assert_eq!(plugins::int_output(&detail["result"], "original_bytes"), content.len() as i64);
    assert_eq!(detail["job"]["progress_percent"], 100.0);
    worker.stop().await;
    admin.stop().await;
}
