//! `plughost up --demo`: a directory of real work for the bundled plugins (a
//! fragmented SQLite database beside a healthy one, old log files beside a fresh one,
//! a sample script), and the settings that point each plugin at it, saved through the
//! admin's config store once the worker's descriptors have arrived.
//!
//! The files are recreated on every start so that each demo shows jobs doing work. The
//! settings are saved only by the start that created the demo directory (a marker file
//! says they are still to be saved, should that start stop first), so that a restart of
//! `up --demo` keeps what the operator changed since.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use admin::commands::{Actor, Caller, Command};
use anyhow::Context;
use proto::pb;
use worker_sdk::value;

/// How long `configure` waits for the worker's descriptors.
const DESCRIPTOR_WAIT: Duration = Duration::from_secs(60);

/// The demo's directories.
#[derive(Debug, Clone)]
pub struct Demo {
    pub root: PathBuf,
    pub databases: PathBuf,
    pub logs: PathBuf,
    pub scripts: PathBuf,
}

/// In the demo directory while its settings are still to be saved.
const SETTINGS_PENDING: &str = ".settings-pending";

impl Demo {
    /// Whether the demo settings are still to be saved: the demo directory was created
    /// by this start, or by one that stopped before saving them.
    pub fn settings_pending(&self) -> bool {
        self.root.join(SETTINGS_PENDING).exists()
    }
}

/// The sample script: settings from the environment, secrets from stdin, and about 30
/// seconds of work in ten steps, each reported as progress (`plughost-progress`).
const REPORT_SCRIPT: &str = r#"#!/bin/sh
# Plughost demo script. Its settings arrive as environment variables; its secrets
# arrive only on stdin, as one JSON object. A stdout line "plughost-progress N message"
# reports N percent done.
secrets=$(cat)
echo "demo report for $REPORT_DIR (attempt $PLUGHOST_ATTEMPT of job $PLUGHOST_JOB_ID)"
echo "received ${#secrets} bytes of secrets on stdin (not shown)"
step=0
for d in databases logs databases logs databases logs databases logs databases logs; do
  step=$((step + 1))
  sleep 3
  echo "plughost-progress $((step * 10)) step $step of 10: measured $d"
  echo "$d: $(ls "$REPORT_DIR/$d" | wc -l) files, $(du -sk "$REPORT_DIR/$d" | cut -f1) KiB"
done
"#;

/// Creates (or recreates) the demo files under `root`. When `root` does not exist yet,
/// its settings are marked as still to be saved ([`Demo::settings_pending`]).
pub fn prepare(root: &Path) -> anyhow::Result<Demo> {
    let created = !root.exists();
    let demo = Demo {
        root: root.to_path_buf(),
        databases: root.join("databases"),
        logs: root.join("logs"),
        scripts: root.join("scripts"),
    };
    for dir in [&demo.databases, &demo.logs, &demo.scripts] {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if created {
        fs::write(
            root.join(SETTINGS_PENDING),
            "up --demo saves the demo settings once the worker's descriptors arrive\n",
        )
        .context("cannot write the demo marker")?;
    }
    let root = fs::canonicalize(root)?;
    let demo = Demo { databases: root.join("databases"), logs: root.join("logs"), scripts: root.join("scripts"), root };
    fragmented_database(&demo.databases.join("app.db")).context("cannot create the demo database")?;
    healthy_database(&demo.databases.join("settings.db")).context("cannot create the demo database")?;
    old_logs(&demo.logs).context("cannot create the demo logs")?;
    fs::write(demo.scripts.join("report.sh"), REPORT_SCRIPT).context("cannot write the demo script")?;
    Ok(demo)
}

fn remove_database(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = fs::remove_file(PathBuf::from(p));
    }
}

/// About 5 MiB, two thirds of it free pages: a table was filled, then dropped.
fn fragmented_database(path: &Path) -> rusqlite::Result<()> {
    remove_database(path);
    let mut conn = rusqlite::Connection::open(path)?;
    conn.execute_batch(
        "CREATE TABLE events(id INTEGER PRIMARY KEY, at TEXT, message TEXT);
         CREATE TABLE staging(id INTEGER PRIMARY KEY, payload TEXT);",
    )?;
    let tx = conn.transaction()?;
    for i in 0..4_000 {
        tx.execute(
            "INSERT INTO events(at, message) VALUES (datetime('now'), ?1)",
            [format!("event {i} {:x<200}", "")],
        )?;
        tx.execute("INSERT INTO staging(payload) VALUES (?1)", [format!("{i:0>900}")])?;
    }
    tx.commit()?;
    conn.execute_batch("DROP TABLE staging;")
}

/// A small database with no free pages: detection leaves it alone.
fn healthy_database(path: &Path) -> rusqlite::Result<()> {
    remove_database(path);
    let conn = rusqlite::Connection::open(path)?;
    conn.execute_batch(
        "CREATE TABLE settings(key TEXT PRIMARY KEY, value TEXT); INSERT INTO settings VALUES ('theme', 'dark');",
    )
}

/// Three log files from ten or more days ago, and today's.
fn old_logs(dir: &Path) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() {
            fs::remove_file(path)?;
        }
    }
    let day = Duration::from_secs(86_400);
    for n in 1..=3u32 {
        let path = dir.join(format!("app-{n}.log"));
        let text: String = (0..20_000)
            .map(|i| format!("2024-01-0{n}T12:00:{:02} INFO request {i} served in {}ms\n", i % 60, i % 97))
            .collect();
        fs::write(&path, text)?;
        fs::File::options().write(true).open(&path)?.set_modified(SystemTime::now() - day * (9 + n))?;
    }
    fs::write(dir.join("current.log"), "today's log stays until it is old enough\n")
}

/// The settings that point each offered plugin at the demo. Each job type detects once
/// at once, then on its own schedule (hourly or less often): nothing repeats every minute.
fn settings(demo: &Demo, job_type: &str) -> Option<HashMap<String, pb::ConfigValue>> {
    let path = |p: &Path| value::string_list([p.to_string_lossy().into_owned()]);
    let values: Vec<(&str, pb::ConfigValue)> = match job_type {
        sqlite_vacuum::JOB_TYPE => vec![("paths", path(&demo.databases)), ("min_size_bytes", value::int(64 * 1024))],
        file_archive::JOB_TYPE => vec![
            ("paths", path(&demo.logs)),
            ("min_age", value::duration(Duration::from_secs(86_400))),
            ("format", value::string("zst")),
        ],
        script_runner::JOB_TYPE => vec![
            ("name", value::string("demo-report")),
            ("interpreter", value::string("sh")),
            ("source", value::string("file")),
            ("file", value::string("report.sh")),
            ("env", value::map([("REPORT_DIR", value::string(demo.root.to_string_lossy()))])),
            ("secrets", value::map([("api_token", value::string("demo-token-not-for-production"))])),
            ("timeout", value::duration(Duration::from_secs(60))),
        ],
        _ => return None,
    };
    Some(values.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

/// Waits for each job type's descriptor, saves the demo settings through the admin's
/// command layer (as the operator `demo`), and asks for a detection right away. Once all
/// are saved, the demo's settings are no longer pending.
pub async fn configure(state: &admin::Components, demo: &Demo, job_types: &[&str]) -> anyhow::Result<()> {
    let actor = Caller::new(Actor::Local("demo"));
    for job_type in job_types {
        let Some(values) = settings(demo, job_type) else { continue };
        let deadline = tokio::time::Instant::now() + DESCRIPTOR_WAIT;
        let saved = loop {
            if let Some(config) =
                state.configs.config(job_type).filter(|_| state.configs.descriptor(job_type).is_some())
            {
                break config;
            }
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "no descriptor for {job_type} after a minute");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let mut config = (*saved).clone();
        config.admin_config_values.extend(values);
        state
            .execute(&actor, Command::SaveConfig { config })
            .await
            .with_context(|| format!("saving the demo settings of {job_type}"))?;
        let run = Command::Detect {
            job_type: job_type.to_string(),
            mode: admin::scheduler::DetectionMode::Run,
            options: Default::default(),
        };
        state.execute(&actor, run).await?;
        tracing::info!(job_type, "demo settings saved; detection requested");
    }
    fs::remove_file(demo.root.join(SETTINGS_PENDING)).context("cannot remove the demo marker")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settings_are_pending_only_for_a_demo_directory_this_start_created() {
        let dir = std::env::temp_dir().join(format!("plughost-demo-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let root = dir.join("demo");
        let demo = prepare(&root).unwrap();
        assert!(demo.settings_pending(), "a new demo directory gets the demo settings");
        assert!(prepare(&root).unwrap().settings_pending(), "still pending until they are saved");
        fs::remove_file(root.join(SETTINGS_PENDING)).unwrap();
        let again = prepare(&root).unwrap();
        assert!(!again.settings_pending(), "a restart keeps the operator's settings");
        assert!(again.logs.join("app-1.log").exists(), "the files are recreated all the same");
        fs::remove_dir_all(&dir).unwrap();
    }
}
