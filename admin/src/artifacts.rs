//! `Artifacts`: files a job's run returned (the job runner's logs, result and the files
//! its code wrote), kept in the data dir per job and served for download.
//!
//! They arrive inside the job's result as output values named
//! `plughost.artifact/<name>` with bytes (a Plughost extension of the output values: no
//! new message, no side channel). Before anything else looks at the result, the gRPC
//! service takes them out ([`take`]); the rest of the result goes on as usual. They are
//! kept only for the current attempt of a job on the worker it was sent to, checked
//! against the artifact limits (count, total bytes, names of 1-128 letters, digits, `.`,
//! `_`, `-`, not starting with a dot), written atomically to
//! `<data>/plugin/artifacts/<job id>/` (a later attempt's replace an earlier's), and
//! deleted after `--artifact-retention-days`.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use proto::pb::{self, config_value::Kind};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// The prefix of an output value that carries an artifact.
pub const PREFIX: &str = "plughost.artifact/";

/// How much of a job's artifacts the admin keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactLimits {
    /// Artifacts per job; more are dropped.
    pub max_per_job: usize,
    /// Bytes of one job's artifacts together; the ones that would pass it are dropped.
    pub max_bytes_per_job: u64,
    /// Artifacts older than this are deleted; `None` keeps them.
    pub retention: Option<Duration>,
}

impl Default for ArtifactLimits {
    fn default() -> Self {
        ArtifactLimits {
            max_per_job: 32,
            max_bytes_per_job: 8 * 1024 * 1024,
            retention: Some(Duration::from_secs(30 * 86_400)),
        }
    }
}

/// Whether `name` may name an artifact: it is also the file name and the download's
/// `filename`, so nothing in it needs quoting.
pub fn valid_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Takes every artifact value out of `result` (whether or not it is kept) and returns
/// those within `limits`, with one reason per artifact dropped.
pub fn take(result: Option<&mut pb::JobResult>, limits: &ArtifactLimits) -> (Vec<(String, Vec<u8>)>, Vec<String>) {
    let Some(result) = result else { return (Vec::new(), Vec::new()) };
    let names: Vec<String> = result.output_values.keys().filter(|k| k.starts_with(PREFIX)).cloned().collect();
    let mut taken: Vec<(String, Vec<u8>)> = Vec::new();
    let mut refused = Vec::new();
    let mut bytes = 0u64;
    let mut sorted = names;
    sorted.sort();
    for key in sorted {
        let Some(value) = result.output_values.remove(&key) else { continue };
        let name = &key[PREFIX.len()..];
        let shown = crate::input::shown(name);
        let data = match value.kind {
            Some(Kind::BytesValue(b)) => b,
            Some(Kind::StringValue(s)) => s.into_bytes(),
            _ => {
                refused.push(format!("artifact {shown} is not bytes"));
                continue;
            }
        };
        if !valid_name(name) {
            refused.push(format!("artifact name {shown} is not allowed"));
        } else if taken.len() >= limits.max_per_job {
            refused.push(format!("artifact {shown} is over the limit of {} per job", limits.max_per_job));
        } else if bytes + data.len() as u64 > limits.max_bytes_per_job {
            refused.push(format!(
                "artifact {shown} ({} bytes) would pass the limit of {} bytes per job",
                data.len(),
                limits.max_bytes_per_job
            ));
        } else {
            bytes += data.len() as u64;
            taken.push((name.to_string(), data));
        }
    }
    (taken, refused)
}

/// One kept artifact, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArtifactInfo {
    pub name: String,
    pub size_bytes: u64,
    /// When it was kept, in Unix milliseconds.
    pub created_at_ms: i64,
}

/// The artifacts directory of the data dir.
#[derive(Debug)]
pub struct Artifacts {
    dir: PathBuf,
    limits: ArtifactLimits,
    scratch: AtomicU64,
}

impl Artifacts {
    pub fn new(data_dir: &Path, limits: ArtifactLimits) -> Artifacts {
        Artifacts { dir: data_dir.join("plugin").join("artifacts"), limits, scratch: AtomicU64::new(0) }
    }

    pub fn limits(&self) -> &ArtifactLimits {
        &self.limits
    }

    /// The directory of a job, when `job_id` is one of the admin's ids.
    fn job_dir(&self, job_id: &str) -> Option<PathBuf> {
        crate::job::parse_job_id(job_id)?;
        Some(self.dir.join(job_id))
    }

    /// Keeps `files` as the artifacts of `job_id`, replacing any it had: written to a
    /// scratch directory (each file and the directory synced), then renamed into place.
    pub fn save(&self, job_id: &str, files: &[(String, Vec<u8>)]) -> std::io::Result<()> {
        use std::io::Write;
        let target = self.job_dir(job_id).ok_or_else(|| std::io::Error::other("not a job id"))?;
        std::fs::create_dir_all(&self.dir)?;
        let n = self.scratch.fetch_add(1, Ordering::Relaxed);
        let scratch = self.dir.join(format!(".incoming-{job_id}-{n}"));
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir(&scratch)?;
        for (name, data) in files {
            debug_assert!(valid_name(name));
            let mut f = std::fs::File::create(scratch.join(name))?;
            f.write_all(data)?;
            f.sync_all()?;
        }
        std::fs::File::open(&scratch)?.sync_all()?;
        if target.exists() {
            std::fs::remove_dir_all(&target)?;
        }
        std::fs::rename(&scratch, &target)?;
        std::fs::File::open(&self.dir)?.sync_all()
    }

    /// The artifacts kept for `job_id`, by name.
    pub fn list(&self, job_id: &str) -> Vec<ArtifactInfo> {
        let Some(dir) = self.job_dir(job_id) else { return Vec::new() };
        let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
        let mut list: Vec<ArtifactInfo> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok().filter(|n| valid_name(n))?;
                let meta = e.metadata().ok().filter(|m| m.is_file())?;
                let created_at_ms = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_millis() as i64);
                Some(ArtifactInfo { name, size_bytes: meta.len(), created_at_ms })
            })
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// The file of one artifact, when the job id and the name are valid and it exists.
    pub fn path(&self, job_id: &str, name: &str) -> Option<PathBuf> {
        if !valid_name(name) {
            return None;
        }
        let path = self.job_dir(job_id)?.join(name);
        std::fs::symlink_metadata(&path).ok().filter(|m| m.is_file()).map(|_| path)
    }

    /// Deletes the artifacts of jobs kept longer than the retention; returns how many
    /// jobs' were deleted.
    pub fn prune(&self, now: std::time::SystemTime) -> usize {
        let Some(keep) = self.limits.retention else { return 0 };
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return 0 };
        let mut pruned = 0;
        for e in entries.filter_map(|e| e.ok()) {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > keep);
            if old && std::fs::remove_dir_all(e.path()).is_ok() {
                pruned += 1;
            }
        }
        pruned
    }

    /// Prunes at start and then hourly, until `stop`.
    pub async fn run_retention(self: std::sync::Arc<Self>, stop: CancellationToken) {
        loop {
            let me = self.clone();
            let pruned = tokio::task::spawn_blocking(move || me.prune(std::time::SystemTime::now())).await.unwrap_or(0);
            if pruned > 0 {
                tracing::info!(pruned, "artifacts past their retention deleted");
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
                _ = stop.cancelled() => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(values: Vec<(&str, pb::ConfigValue)>) -> pb::JobResult {
        pb::JobResult {
            output_values: values.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            summary: "s".into(),
        }
    }

    fn bytes(n: usize) -> pb::ConfigValue {
        pb::ConfigValue { kind: Some(Kind::BytesValue(vec![b'x'; n])) }
    }

    #[test]
    fn artifacts_are_taken_out_of_the_result_within_the_limits() {
        let limits = ArtifactLimits { max_per_job: 2, max_bytes_per_job: 100, retention: None };
        let mut r = result(vec![
            ("exit_code", pb::ConfigValue { kind: Some(Kind::Int64Value(0)) }),
            ("plughost.artifact/a.log", bytes(10)),
            ("plughost.artifact/b.log", bytes(95)),
            ("plughost.artifact/c.log", bytes(10)),
            ("plughost.artifact/d.log", bytes(10)),
            ("plughost.artifact/../evil", bytes(1)),
        ]);
        let (taken, refused) = take(Some(&mut r), &limits);
        let names: Vec<&str> = taken.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a.log", "c.log"]);
        assert_eq!(refused.len(), 3, "{refused:?}");
        assert!(refused.iter().any(|r| r.contains("is not allowed")));
        assert!(refused.iter().any(|r| r.contains("limit of 100 bytes")));
        assert!(refused.iter().any(|r| r.contains("limit of 2 per job")));
        assert_eq!(r.output_values.len(), 1, "every artifact value left the result");
    }

    #[test]
    fn artifacts_are_kept_per_job_replaced_by_a_later_attempt_and_pruned_by_age() {
        let dir = crate::test_support::TempDir::new("artifacts");
        let a =
            Artifacts::new(&dir.0, ArtifactLimits { retention: Some(Duration::from_secs(60)), ..Default::default() });
        a.save("j7", &[("one.txt".into(), b"1".to_vec()), ("two.txt".into(), b"22".to_vec())]).unwrap();
        assert_eq!(
            a.list("j7").iter().map(|i| (i.name.as_str(), i.size_bytes)).collect::<Vec<_>>(),
            [("one.txt", 1), ("two.txt", 2)]
        );
        a.save("j7", &[("three.txt".into(), b"333".to_vec())]).unwrap();
        assert_eq!(a.list("j7").len(), 1);
        assert!(a.path("j7", "three.txt").is_some());
        assert!(a.path("j7", "../j7/three.txt").is_none());
        assert!(a.path("../x", "three.txt").is_none());
        assert!(a.save("not-a-job", &[]).is_err());
        assert_eq!(a.prune(std::time::SystemTime::now()), 0);
        assert_eq!(a.prune(std::time::SystemTime::now() + Duration::from_secs(120)), 1);
        assert!(a.list("j7").is_empty());
    }
}
