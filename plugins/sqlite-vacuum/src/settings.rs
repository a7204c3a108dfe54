//! The admin's saved values for `sqlite_vacuum`, read into typed settings.

use std::{path::PathBuf, time::Duration};

use file_scan::{Patterns, WalkOptions};
use worker_sdk::{HandlerError, pb, values};

/// The descriptor's defaults, shared by the form and the readers.
pub mod defaults {
    use std::time::Duration;

    pub const PATTERNS: &[&str] = &["*.db", "*.sqlite", "*.sqlite3"];
    pub const MAX_DEPTH: i64 = 8;
    pub const MIN_SIZE_BYTES: i64 = 1024 * 1024;
    pub const MIN_FREE_RATIO: f64 = 0.3;
    pub const BUSY_TIMEOUT: Duration = Duration::from_secs(30);
}

/// What detection looks for.
#[derive(Debug, Clone)]
pub struct ScanSettings {
    pub paths: Vec<PathBuf>,
    pub patterns: Patterns,
    pub walk: WalkOptions,
    pub min_size_bytes: u64,
    pub min_free_ratio: f64,
    pub busy_timeout: Duration,
    pub priority: pb::JobPriority,
}

impl ScanSettings {
    pub fn from_values(v: &values::Values) -> Result<ScanSettings, HandlerError> {
        let paths = values::string_list_or(v, "paths", Vec::new())?;
        let patterns: Vec<String> = match values::opt_string_list(v, "patterns")? {
            Some(p) => p,
            None => defaults::PATTERNS.iter().map(|p| p.to_string()).collect(),
        };
        let min_free_ratio = values::f64_or(v, "min_free_ratio", defaults::MIN_FREE_RATIO)?;
        if !(0.0..=1.0).contains(&min_free_ratio) {
            return Err(format!("min_free_ratio must be between 0 and 1, not {min_free_ratio}").into());
        }
        Ok(ScanSettings {
            paths: paths.iter().map(|p| p.trim()).filter(|p| !p.is_empty()).map(PathBuf::from).collect(),
            patterns: Patterns::new(&patterns)?,
            walk: WalkOptions {
                recursive: values::bool_or(v, "recursive", true)?,
                max_depth: values::i64_or(v, "max_depth", defaults::MAX_DEPTH)?.clamp(0, 64) as usize,
            },
            min_size_bytes: values::i64_or(v, "min_size_bytes", defaults::MIN_SIZE_BYTES)?.max(0) as u64,
            min_free_ratio,
            busy_timeout: busy_timeout(v)?,
            priority: match values::string_or(v, "priority", "normal".into())?.as_str() {
                "low" => pb::JobPriority::Low,
                "high" => pb::JobPriority::High,
                _ => pb::JobPriority::Normal,
            },
        })
    }
}

/// The busy timeout, also read at execution time (the saved value then applies).
pub fn busy_timeout(v: &values::Values) -> Result<Duration, HandlerError> {
    Ok(values::duration_or(v, "busy_timeout", defaults::BUSY_TIMEOUT)?)
}
