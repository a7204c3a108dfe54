//! Helpers shared by the admin's unit tests.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicU64, Ordering},
};

/// A fresh directory under the system temp dir, removed when dropped. `.0` is its path.
pub(crate) struct TempDir(pub PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "plughost-admin-{tag}-{}-{nanos}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    /// `<dir>/plugin/job_types/<job_type>`, where the config store keeps a job type.
    pub(crate) fn job_dir(&self, job_type: &str) -> PathBuf {
        self.0.join("plugin/job_types").join(job_type)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
