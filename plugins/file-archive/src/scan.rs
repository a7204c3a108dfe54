//! Detection: walk the configured paths for files that match the patterns, are old
//! enough and big enough, and have no archive beside them yet.

use std::{path::PathBuf, time::SystemTime};

use file_scan::{Roots, human_bytes};
use worker_sdk::{CancellationToken, pb, value};

use crate::{
    JOB_TYPE,
    archive::{archive_path, is_partial_name},
    format::Format,
    settings::ArchiveSettings,
};

/// A file to archive.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Canonical, so one file is one dedupe key.
    pub path: PathBuf,
    pub size: u64,
    pub modified: SystemTime,
}

/// What a scan found and what it could not read.
#[derive(Debug, Default)]
pub struct ScanReport {
    pub candidates: Vec<Candidate>,
    /// Files that matched the patterns (old enough or not).
    pub matched: usize,
    pub problems: Vec<String>,
    pub canceled: bool,
}

pub fn scan(settings: &ArchiveSettings, now: SystemTime, cancel: &CancellationToken) -> ScanReport {
    let mut report = ScanReport::default();
    let mut walk = Roots::new(&settings.paths, settings.walk.clone());
    while let Some(found) = walk.next_file(|| cancel.is_cancelled()) {
        if Format::of_archive_name(&found.name).is_some()
            || is_partial_name(&found.name)
            || !settings.patterns.matches(&found.name, &found.relative)
        {
            continue;
        }
        report.matched += 1;
        let Ok(modified) = found.metadata.modified() else { continue };
        let old_enough = now.duration_since(modified).is_ok_and(|age| age >= settings.min_age);
        if !old_enough || found.metadata.len() < settings.min_size_bytes {
            continue;
        }
        let Some(path) = walk.canonical_once(&found.path) else { continue };
        let target = archive_path(&path, settings.format);
        if target.exists() {
            walk.problem(format!("{}: {} already exists", path.display(), target.display()));
            continue;
        }
        report.candidates.push(Candidate { path, size: found.metadata.len(), modified });
    }
    report.problems = walk.problems;
    report.canceled = walk.canceled;
    // Oldest first: they have waited longest.
    report.candidates.sort_by_key(|c| c.modified);
    report
}

impl Candidate {
    /// The job proposal: dedupe key from the canonical path; the size and modification
    /// time let execution notice a file that changed since detection.
    pub fn proposal(&self, format: Format, now: SystemTime) -> pb::JobProposal {
        let path = self.path.to_string_lossy().into_owned();
        let name = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let age_days = now.duration_since(self.modified).map(|d| d.as_secs() / 86_400).unwrap_or(0);
        pb::JobProposal {
            dedupe_key: path.clone(),
            job_type: JOB_TYPE.to_string(),
            priority: pb::JobPriority::Low as i32,
            summary: format!(
                "archive {name} ({}, {age_days} days old) to .{}",
                human_bytes(self.size),
                format.extension()
            ),
            detail: format!("{path} becomes {}", archive_path(&self.path, format).display()),
            parameters: [
                ("path", value::string(path.clone())),
                ("size_bytes", value::int(i64::try_from(self.size).unwrap_or(i64::MAX))),
                ("modified_unix_nanos", value::int(unix_nanos(self.modified))),
                ("format", value::string(format.extension())),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
            labels: [("file".to_string(), name)].into(),
            ..Default::default()
        }
    }
}

/// Nanoseconds since the Unix epoch (negative before it), saturating.
pub fn unix_nanos(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}
