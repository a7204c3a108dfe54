//! Detection: walk the configured paths, keep the SQLite files above the size floor
//! whose free-page ratio reaches the threshold, most reclaimable first.

use std::path::PathBuf;

use file_scan::{Roots, human_bytes};
use worker_sdk::{CancellationToken, pb, value};

use crate::{
    JOB_TYPE,
    inspect::{self, PageStats},
    settings::ScanSettings,
};

/// A database worth vacuuming.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Canonical: symlinks and `..` resolved, so one file is one dedupe key.
    pub path: PathBuf,
    pub file_bytes: u64,
    pub stats: PageStats,
}

/// What a scan found and what it could not read.
#[derive(Debug, Default)]
pub struct ScanReport {
    pub candidates: Vec<Candidate>,
    /// SQLite files looked at.
    pub databases: usize,
    /// Files or directories that could not be read, with the reason.
    pub problems: Vec<String>,
    pub canceled: bool,
}

/// Scans every configured path. Unreadable entries are reported, not fatal.
pub fn scan(settings: &ScanSettings, cancel: &CancellationToken) -> ScanReport {
    let mut report = ScanReport::default();
    let mut walk = Roots::new(&settings.paths, settings.walk.clone());
    while let Some(found) = walk.next_file(|| cancel.is_cancelled()) {
        if found.metadata.len() < settings.min_size_bytes.max(1)
            || !settings.patterns.matches(&found.name, &found.relative)
        {
            continue;
        }
        match inspect::looks_like_sqlite(&found.path) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                walk.problem(format!("{}: {e}", found.path.display()));
                continue;
            }
        }
        let Some(path) = walk.canonical_once(&found.path) else { continue };
        report.databases += 1;
        match inspect::page_stats(&path, settings.busy_timeout) {
            Ok(stats) if stats.freelist_count > 0 && stats.free_ratio() >= settings.min_free_ratio => {
                report.candidates.push(Candidate { path, file_bytes: found.metadata.len(), stats })
            }
            Ok(_) => {}
            Err(e) => walk.problem(format!("{}: {e}", path.display())),
        }
    }
    report.problems = walk.problems;
    report.canceled = walk.canceled;
    report.candidates.sort_by_key(|c| std::cmp::Reverse(c.stats.reclaimable_bytes()));
    report
}

impl Candidate {
    /// The job proposal: dedupe key from the canonical path, reclaimable bytes and the
    /// page accounting in the parameters.
    pub fn proposal(&self, priority: pb::JobPriority) -> pb::JobProposal {
        let path = self.path.to_string_lossy().into_owned();
        let s = &self.stats;
        let reclaimable = s.reclaimable_bytes();
        let name = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        pb::JobProposal {
            dedupe_key: path.clone(),
            job_type: JOB_TYPE.to_string(),
            priority: priority as i32,
            summary: format!(
                "vacuum {name}: {:.0}% free pages, about {} reclaimable",
                s.free_ratio() * 100.0,
                human_bytes(reclaimable)
            ),
            detail: format!(
                "{path} is {} with {} of {} pages free (page size {} bytes)",
                human_bytes(self.file_bytes),
                s.freelist_count,
                s.page_count,
                s.page_size
            ),
            parameters: [
                ("path", value::string(path.clone())),
                ("reclaimable_bytes", value::int(clamp(reclaimable))),
                ("free_ratio", value::double(s.free_ratio())),
                ("file_bytes", value::int(clamp(self.file_bytes))),
                ("page_size", value::int(clamp(s.page_size))),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
            labels: [("database".to_string(), name)].into(),
            ..Default::default()
        }
    }
}

pub(crate) fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
