//! The admin's saved values for `file_archive`, read into typed settings.

use std::{path::PathBuf, time::Duration};

use file_scan::{Patterns, WalkOptions};
use worker_sdk::{HandlerError, values};

use crate::format::Format;

/// The descriptor's defaults, shared by the form and the readers.
pub mod defaults {
    use std::time::Duration;

    pub const PATTERNS: &[&str] = &["*.log"];
    pub const MAX_DEPTH: i64 = 8;
    pub const MIN_AGE: Duration = Duration::from_secs(7 * 86_400);
    pub const FORMAT: &str = "zst";
    pub const GZIP_LEVEL: i64 = 6;
}

/// What detection looks for and how files are compressed.
#[derive(Debug, Clone)]
pub struct ArchiveSettings {
    pub paths: Vec<PathBuf>,
    pub patterns: Patterns,
    pub walk: WalkOptions,
    pub min_age: Duration,
    pub min_size_bytes: u64,
    pub format: Format,
}

impl ArchiveSettings {
    pub fn from_values(v: &values::Values) -> Result<ArchiveSettings, HandlerError> {
        let paths = values::string_list_or(v, "paths", Vec::new())?;
        let patterns: Vec<String> = match values::opt_string_list(v, "patterns")? {
            Some(p) => p,
            None => defaults::PATTERNS.iter().map(|p| p.to_string()).collect(),
        };
        Ok(ArchiveSettings {
            paths: paths.iter().map(|p| p.trim()).filter(|p| !p.is_empty()).map(PathBuf::from).collect(),
            patterns: Patterns::new(&patterns)?,
            walk: WalkOptions {
                recursive: values::bool_or(v, "recursive", true)?,
                max_depth: values::i64_or(v, "max_depth", defaults::MAX_DEPTH)?.clamp(0, 64) as usize,
            },
            min_age: values::duration_or(v, "min_age", defaults::MIN_AGE)?,
            min_size_bytes: values::i64_or(v, "min_size_bytes", 0)?.max(0) as u64,
            format: format(v, None)?,
        })
    }
}

/// The format named by `name` (a job parameter), else by the saved `format`, with the
/// saved gzip level.
pub fn format(v: &values::Values, name: Option<&str>) -> Result<Format, HandlerError> {
    let name = match name {
        Some(n) => n.to_string(),
        None => values::string_or(v, "format", defaults::FORMAT.into())?,
    };
    match name.as_str() {
        "zst" => Ok(Format::Zstd),
        "gz" => {
            let level = values::i64_or(v, "gzip_level", defaults::GZIP_LEVEL)?.clamp(1, 9) as u32;
            Ok(Format::Gzip { level })
        }
        other => Err(format!("unknown archive format {other:?}; use zst or gz").into()),
    }
}
