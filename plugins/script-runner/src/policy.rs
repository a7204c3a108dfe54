//! What the worker's operator allows: whether scripts run at all, and where.

use std::path::PathBuf;

/// Set when the worker starts (`plughost worker --allow-scripts --scripts-dir DIR`),
/// never by the admin: the admin decides *what* runs, the worker's operator decides
/// *whether* and *where*.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptPolicy {
    /// Scripts run only when this is true.
    pub allow: bool,
    /// Scripts run in this directory, and script files are looked up below it.
    pub work_dir: PathBuf,
}

impl ScriptPolicy {
    /// Scripts are allowed and run in `work_dir`.
    pub fn allowed(work_dir: impl Into<PathBuf>) -> Self {
        ScriptPolicy { allow: true, work_dir: work_dir.into() }
    }

    /// Nothing runs.
    pub fn denied() -> Self {
        ScriptPolicy { allow: false, work_dir: PathBuf::new() }
    }
}
