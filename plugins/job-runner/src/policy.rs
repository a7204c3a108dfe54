//! What the worker's operator allows the job runner: whether it runs at all, where it
//! keeps sources and runs, which repositories and hosts sources may come from, the
//! download limits, whether to sandbox, and the artifact caps. Set by flags when the
//! worker starts, never by the admin: the admin decides *what* runs, the worker's
//! operator decides *whether*, *where* and *from where*.

use std::{path::PathBuf, time::Duration};

/// The default cap on a downloaded tarball (64 MiB).
pub const DEFAULT_TARBALL_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// The default download timeout.
pub const DEFAULT_DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(120);
/// The default cap on a run's artifacts: files in `$PLUGHOST_ARTIFACTS` (the logs and the
/// result do not count).
pub const DEFAULT_ARTIFACTS_MAX_COUNT: usize = 16;
/// The default cap on the bytes of all of a run's artifacts, logs and result included.
pub const DEFAULT_ARTIFACTS_MAX_BYTES: u64 = 4 * 1024 * 1024;

/// Whether runs are sandboxed with bubblewrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxChoice {
    /// Sandbox when `bwrap` is installed and works (the default).
    Auto,
    /// Always sandbox: without a working `bwrap` the worker refuses to start.
    On,
    /// Never sandbox: definitions that require isolation are refused.
    Off,
}

impl SandboxChoice {
    pub fn parse(text: &str) -> Result<SandboxChoice, String> {
        match text {
            "auto" => Ok(SandboxChoice::Auto),
            "on" | "true" => Ok(SandboxChoice::On),
            "off" | "false" => Ok(SandboxChoice::Off),
            other => Err(format!("--sandbox {other:?}: use auto, on or off")),
        }
    }
}

/// The worker operator's settings for the job runner.
#[derive(Debug, Clone)]
pub struct RunnerPolicy {
    /// Nothing runs unless this is true (`--allow-scripts`).
    pub allow: bool,
    /// Sources are cached in `<dir>/sources`, runs happen in `<dir>/runs`.
    pub dir: PathBuf,
    /// Repositories `git_tag` sources may name; `*` allows all. Empty allows none.
    pub repo_allowlist: Vec<String>,
    /// Hosts `tarball_url` sources may name; `*` allows all. Empty allows none.
    pub tarball_allowlist: Vec<String>,
    pub tarball_max_bytes: u64,
    /// `tarball_path` sources must lie below this directory; `None` refuses them.
    pub tarball_dir: Option<PathBuf>,
    pub download_timeout: Duration,
    /// PEM certificates trusted for downloads besides the system's bundle.
    pub extra_ca_file: Option<PathBuf>,
    pub sandbox: SandboxChoice,
    pub artifacts_max_count: usize,
    pub artifacts_max_bytes: u64,
}

impl RunnerPolicy {
    /// Runs allowed, everything in `dir`, no source allowed yet, sandbox when available.
    pub fn allowed(dir: impl Into<PathBuf>) -> Self {
        RunnerPolicy {
            allow: true,
            dir: dir.into(),
            repo_allowlist: Vec::new(),
            tarball_allowlist: Vec::new(),
            tarball_max_bytes: DEFAULT_TARBALL_MAX_BYTES,
            tarball_dir: None,
            download_timeout: DEFAULT_DOWNLOAD_TIMEOUT,
            extra_ca_file: None,
            sandbox: SandboxChoice::Auto,
            artifacts_max_count: DEFAULT_ARTIFACTS_MAX_COUNT,
            artifacts_max_bytes: DEFAULT_ARTIFACTS_MAX_BYTES,
        }
    }

    /// Nothing runs.
    pub fn denied() -> Self {
        RunnerPolicy { allow: false, ..RunnerPolicy::allowed(PathBuf::new()) }
    }

    pub fn sources_dir(&self) -> PathBuf {
        self.dir.join("sources")
    }

    pub fn runs_dir(&self) -> PathBuf {
        self.dir.join("runs")
    }
}

/// Whether `item` is on `list`: an exact match (ASCII case-insensitive for hosts), or
/// the list holds `*`.
pub fn allowlisted(list: &[String], item: &str) -> bool {
    list.iter().any(|entry| entry == "*" || entry.eq_ignore_ascii_case(item))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_allowlist_matches_exactly_or_by_star() {
        let list = vec!["example.org".to_string()];
        assert!(allowlisted(&list, "example.org"));
        assert!(allowlisted(&list, "EXAMPLE.org"));
        assert!(!allowlisted(&list, "evil.example.org"));
        assert!(!allowlisted(&[], "example.org"));
        assert!(allowlisted(&["*".to_string()], "anything"));
    }
}
