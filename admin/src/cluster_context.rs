//! The cluster context every `RunDetectionRequest` and `ExecuteJobRequest` carries: the
//! master, filer, volume and S3 addresses and free-form metadata. SeaweedFS's job types
//! (vacuum, balance, EC, admin scripts) cannot work without the master addresses, and
//! Plughost does not discover a cluster, so the operator names it: `--master` and
//! `--filer` flags, `cluster_metadata`, and optionally a file of proto JSON
//! (`--cluster-context-file`) that is re-read when it changes and on SIGHUP.
//!
//! One rule combines two contexts everywhere ([`merge`]): each address list comes from
//! the upper context when it is non-empty, else from the lower one; metadata is the lower
//! one's with the upper one's keys written over it. The file is the upper context over
//! the flags; an API request's `cluster_context` is the upper context over the admin's.
//!
//! [`ClusterContextSource`] owns the current context. Requests are built from a snapshot
//! taken with [`ClusterContextSource::current`] (a read lock and an `Arc` clone), so the
//! dispatch path never touches the file.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    time::{Duration, SystemTime},
};

use proto::pb;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// How often the watcher looks at the file's modification time and length by default.
pub const DEFAULT_POLL: Duration = Duration::from_secs(2);

/// Largest context file read; a bigger one is refused rather than read into memory.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Why a cluster context (a file or an API body) could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterContextError {
    #[error("cannot read the cluster context file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the cluster context file {} is {len} bytes; at most {MAX_FILE_BYTES} are read", path.display())]
    TooLarge { path: PathBuf, len: u64 },
    #[error("the cluster context file {} is not a ClusterContext in proto JSON: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    /// A context given as a JSON value (an API body's `cluster_context`).
    #[error("cluster_context is not a ClusterContext in proto JSON: {0}")]
    Value(String),
}

/// The context named by flags: addresses as the operator wrote them (SeaweedFS writes
/// masters as `host:port` or `host:port.grpcport`; either passes through unchanged).
pub fn from_flags(
    masters: &[String],
    filers: &[String],
    metadata: &std::collections::HashMap<String, String>,
) -> pb::ClusterContext {
    pb::ClusterContext {
        master_grpc_addresses: clean(masters),
        filer_addresses: clean(filers),
        metadata: metadata.clone(),
        ..Default::default()
    }
}

/// Trimmed, without empty entries (a trailing comma in a list is not an address).
fn clean(list: &[String]) -> Vec<String> {
    list.iter().map(|s| s.trim()).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

/// `upper` over `lower`: each address list is `upper`'s when non-empty, else `lower`'s;
/// metadata is `lower`'s with `upper`'s keys written over it.
pub fn merge(upper: &pb::ClusterContext, lower: &pb::ClusterContext) -> pb::ClusterContext {
    let pick = |u: &Vec<String>, l: &Vec<String>| if u.is_empty() { l.clone() } else { u.clone() };
    let mut metadata = lower.metadata.clone();
    metadata.extend(upper.metadata.iter().map(|(k, v)| (k.clone(), v.clone())));
    pb::ClusterContext {
        master_grpc_addresses: pick(&upper.master_grpc_addresses, &lower.master_grpc_addresses),
        filer_addresses: pick(&upper.filer_addresses, &lower.filer_addresses),
        volume_grpc_addresses: pick(&upper.volume_grpc_addresses, &lower.volume_grpc_addresses),
        s3_grpc_addresses: pick(&upper.s3_grpc_addresses, &lower.s3_grpc_addresses),
        metadata,
    }
}

/// Reads a `ClusterContext` from a proto JSON value. SeaweedFS's earlier `plugin.proto`
/// named field 2 `filer_grpc_addresses`; that name is accepted for `filer_addresses`, so
/// scripts and files written for it keep working. Unknown fields are refused (a typo is
/// an error, not a silently empty list).
pub fn from_json_value(mut value: Value) -> Result<pb::ClusterContext, String> {
    let Value::Object(fields) = &mut value else {
        return Err("expected a JSON object".into());
    };
    let current = ["filer_addresses", "filerAddresses"];
    for old in ["filer_grpc_addresses", "filerGrpcAddresses"] {
        if !current.iter().any(|k| fields.contains_key(*k))
            && let Some(v) = fields.remove(old)
        {
            fields.insert("filer_addresses".into(), v);
        }
    }
    proto::json::from_value(value).map_err(|e| e.to_string())
}

/// Reads and parses the context file.
fn read_file(path: &Path) -> Result<pb::ClusterContext, ClusterContextError> {
    let read = |source| ClusterContextError::Read { path: path.to_path_buf(), source };
    let len = std::fs::metadata(path).map_err(read)?.len();
    if len > MAX_FILE_BYTES {
        return Err(ClusterContextError::TooLarge { path: path.to_path_buf(), len });
    }
    let text = std::fs::read_to_string(path).map_err(read)?;
    let file = |reason: String| ClusterContextError::File { path: path.to_path_buf(), reason };
    let value: Value = serde_json::from_str(&text).map_err(|e| file(e.to_string()))?;
    from_json_value(value).map_err(file)
}

/// What the file looked like when it was last read: its modification time and length,
/// or `None` when it could not be looked at.
type Stamp = Option<(Option<SystemTime>, u64)>;

fn stamp(path: &Path) -> Stamp {
    std::fs::metadata(path).ok().map(|m| (m.modified().ok(), m.len()))
}

/// Owns the admin's current cluster context; the scheduler and the dispatcher read it
/// for each request they build.
pub struct ClusterContextSource {
    /// The context from flags and `cluster_metadata`: what the file's empty parts fall
    /// back to.
    flags: pb::ClusterContext,
    file: Option<PathBuf>,
    current: RwLock<Arc<pb::ClusterContext>>,
    /// The file's stamp when last read; a different one means it changed.
    seen: Mutex<Stamp>,
    /// Why the last read of the file failed; cleared by a good read. Shown in the status.
    last_error: Mutex<Option<String>>,
}

impl ClusterContextSource {
    /// A source holding the flags' context. With a file, call [`Self::reload`] before
    /// use (the admin does at start, and fails to start when the file is bad).
    pub fn new(flags: pb::ClusterContext, file: Option<PathBuf>) -> ClusterContextSource {
        ClusterContextSource {
            current: RwLock::new(Arc::new(flags.clone())),
            flags,
            file,
            seen: Mutex::new(None),
            last_error: Mutex::new(None),
        }
    }

    /// The context for the next request.
    pub fn current(&self) -> Arc<pb::ClusterContext> {
        self.current.read().expect("cluster context lock").clone()
    }

    /// The file this context is read from, if any.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Why the last read of the file failed, while the file stays unusable.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().expect("cluster context error lock").clone()
    }

    /// Reads the file again and makes it (over the flags) the current context. A file
    /// that cannot be read or parsed leaves the last good context in place.
    pub fn reload(&self) -> Result<(), ClusterContextError> {
        let Some(path) = &self.file else { return Ok(()) };
        // The stamp before the read: a write that lands during the read changes it again,
        // so the next poll reads once more.
        *self.seen.lock().expect("cluster context stamp lock") = stamp(path);
        let result = read_file(path);
        *self.last_error.lock().expect("cluster context error lock") = result.as_ref().err().map(|e| e.to_string());
        let next = Arc::new(merge(&result?, &self.flags));
        *self.current.write().expect("cluster context lock") = next;
        Ok(())
    }

    /// Reloads when the file's modification time or length changed since the last read.
    /// `None`: unchanged (or no file).
    pub fn reload_if_changed(&self) -> Option<Result<(), ClusterContextError>> {
        let path = self.file.as_ref()?;
        if stamp(path) == *self.seen.lock().expect("cluster context stamp lock") {
            return None;
        }
        Some(self.reload())
    }

    /// Re-reads the file when it changes (looked at every `every`) and on SIGHUP, until
    /// `stop`. Without a file there is nothing to watch and it returns at once.
    pub async fn watch(self: Arc<Self>, every: Duration, stop: CancellationToken) {
        let Some(path) = self.file.clone() else { return };
        let mut hangup = hangup_signal();
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let result = tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => self.reload_if_changed(),
                _ = next_hangup(&mut hangup) => Some(self.reload()),
            };
            match result {
                None => {}
                Some(Ok(())) => self.log_loaded(&path),
                Some(Err(e)) => tracing::error!(error = %e, "keeping the last good cluster context"),
            }
        }
    }

    fn log_loaded(&self, path: &Path) {
        let c = self.current();
        tracing::info!(
            file = %path.display(),
            masters = ?c.master_grpc_addresses,
            filers = ?c.filer_addresses,
            volumes = c.volume_grpc_addresses.len(),
            "cluster context loaded"
        );
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

/// SIGHUP, where there is one; `None` when it cannot be listened to (the poll still works).
fn hangup_signal() -> Hangup {
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; the cluster context file is still polled");
                None
            }
        }
    }
    #[cfg(not(unix))]
    None
}

async fn next_hangup(hangup: &mut Hangup) {
    #[cfg(unix)]
    if let Some(s) = hangup
        && s.recv().await.is_some()
    {
        return;
    }
    #[cfg(not(unix))]
    let _ = hangup;
    std::future::pending::<()>().await
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::test_support::TempDir;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn metadata(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// Writes `text` and moves the file's mtime on, so a rewrite within one mtime tick
    /// (and of the same length) is still seen as a change.
    fn write(path: &Path, text: &str, n: u64) {
        std::fs::write(path, text).unwrap();
        let f = std::fs::File::options().write(true).open(path).unwrap();
        f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + n)).unwrap();
    }

    #[test]
    fn flags_pass_addresses_through_as_written_without_empty_entries() {
        let c = from_flags(
            &strings(&[" m1:9333.19333", "", "m2:9333 "]),
            &strings(&["f1:8888", " "]),
            &metadata(&[("k", "v")]),
        );
        assert_eq!(c.master_grpc_addresses, strings(&["m1:9333.19333", "m2:9333"]));
        assert_eq!(c.filer_addresses, strings(&["f1:8888"]));
        assert_eq!(c.metadata, metadata(&[("k", "v")]));
        assert!(c.volume_grpc_addresses.is_empty() && c.s3_grpc_addresses.is_empty());
    }

    #[test]
    fn the_upper_context_wins_where_it_has_a_list_and_metadata_merges() {
        let lower = pb::ClusterContext {
            master_grpc_addresses: strings(&["flag-master:9333"]),
            filer_addresses: strings(&["flag-filer:8888"]),
            volume_grpc_addresses: strings(&["flag-volume:8080"]),
            metadata: metadata(&[("region", "eu"), ("source", "flags")]),
            ..Default::default()
        };
        let upper = pb::ClusterContext {
            master_grpc_addresses: strings(&["file-master:9333"]),
            s3_grpc_addresses: strings(&["file-s3:8333"]),
            metadata: metadata(&[("source", "file")]),
            ..Default::default()
        };
        let m = merge(&upper, &lower);
        assert_eq!(m.master_grpc_addresses, strings(&["file-master:9333"]));
        assert_eq!(m.filer_addresses, strings(&["flag-filer:8888"]), "an empty list falls back");
        assert_eq!(m.volume_grpc_addresses, strings(&["flag-volume:8080"]));
        assert_eq!(m.s3_grpc_addresses, strings(&["file-s3:8333"]));
        assert_eq!(m.metadata, metadata(&[("region", "eu"), ("source", "file")]));
    }

    #[test]
    fn json_accepts_the_earlier_filer_field_name_and_refuses_unknown_fields() {
        let c = from_json_value(serde_json::json!({
            "master_grpc_addresses": ["m:9333"],
            "filer_grpc_addresses": ["f:8888"],
        }))
        .unwrap();
        assert_eq!(c.filer_addresses, strings(&["f:8888"]));
        let c = from_json_value(serde_json::json!({ "masterGrpcAddresses": ["m:9333"] })).unwrap();
        assert_eq!(c.master_grpc_addresses, strings(&["m:9333"]), "lowerCamelCase names too");
        let e = from_json_value(serde_json::json!({ "masters": ["m:9333"] })).unwrap_err();
        assert!(e.contains("masters"), "{e}");
        assert!(from_json_value(serde_json::json!(["m:9333"])).unwrap_err().contains("object"));
        assert!(from_json_value(serde_json::json!({ "master_grpc_addresses": "m:9333" })).is_err());
    }

    #[test]
    fn the_file_is_read_over_the_flags_reread_when_it_changes_and_a_broken_one_keeps_the_last_good() {
        let dir = TempDir::new("cluster-context");
        let path = dir.0.join("cluster.json");
        write(&path, r#"{"master_grpc_addresses": ["a:9333"], "metadata": {"from": "file"}}"#, 1);
        let flags = from_flags(&strings(&["flag:9333"]), &strings(&["flag-filer:8888"]), &metadata(&[("k", "v")]));
        let source = ClusterContextSource::new(flags, Some(path.clone()));
        source.reload().unwrap();
        let c = source.current();
        assert_eq!(c.master_grpc_addresses, strings(&["a:9333"]));
        assert_eq!(c.filer_addresses, strings(&["flag-filer:8888"]));
        assert_eq!(c.metadata, metadata(&[("k", "v"), ("from", "file")]));
        assert!(source.reload_if_changed().is_none(), "unchanged: not read again");

        write(&path, r#"{"master_grpc_addresses": ["b:9333"], "filer_addresses": ["b-filer:8888"]}"#, 2);
        assert!(matches!(source.reload_if_changed(), Some(Ok(()))));
        let c = source.current();
        assert_eq!(c.master_grpc_addresses, strings(&["b:9333"]));
        assert_eq!(c.filer_addresses, strings(&["b-filer:8888"]));

        write(&path, r#"{"master_grpc_addresses": ["c:9333"],"#, 3);
        let e = source.reload_if_changed().expect("changed").unwrap_err();
        let shown = e.to_string();
        assert!(shown.contains(&path.display().to_string()) && shown.contains("not a ClusterContext"), "{shown}");
        assert_eq!(source.current().master_grpc_addresses, strings(&["b:9333"]), "the last good one stays");
        assert!(source.reload_if_changed().is_none(), "a broken file is reported once, not every poll");
        assert_eq!(source.last_error(), Some(shown));

        std::fs::remove_file(&path).unwrap();
        let e = source.reload_if_changed().expect("gone is a change").unwrap_err();
        assert!(matches!(e, ClusterContextError::Read { .. }), "{e}");
        assert_eq!(source.current().master_grpc_addresses, strings(&["b:9333"]));

        write(&path, r#"{"master_grpc_addresses": ["d:9333"]}"#, 4);
        assert!(matches!(source.reload_if_changed(), Some(Ok(()))));
        assert_eq!(source.current().master_grpc_addresses, strings(&["d:9333"]));
        assert_eq!(source.last_error(), None, "a good read clears the error");
    }

    #[test]
    fn without_a_file_the_flags_are_the_context() {
        let flags = from_flags(&strings(&["m:9333"]), &[], &HashMap::new());
        let source = ClusterContextSource::new(flags.clone(), None);
        source.reload().unwrap();
        assert!(source.reload_if_changed().is_none());
        assert_eq!(*source.current(), flags);
    }

    #[tokio::test]
    async fn the_watcher_picks_up_a_rewritten_file() {
        let dir = TempDir::new("cluster-watch");
        let path = dir.0.join("cluster.json");
        write(&path, r#"{"master_grpc_addresses": ["a:9333"]}"#, 1);
        let source = Arc::new(ClusterContextSource::new(Default::default(), Some(path.clone())));
        source.reload().unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(source.clone().watch(Duration::from_millis(10), stop.clone()));
        write(&path, r#"{"master_grpc_addresses": ["b:9333"]}"#, 2);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while source.current().master_grpc_addresses != strings(&["b:9333"]) {
            assert!(tokio::time::Instant::now() < deadline, "the watcher did not reload within 10 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.cancel();
        task.await.unwrap();
    }
}
