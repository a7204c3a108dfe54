//! `FileArchive`: the `JobHandler` that runs [`scan`](crate::scan) for detection and
//! [`archive_file`](crate::archive::archive_file) for execution on blocking threads.

use std::{path::PathBuf, time::SystemTime};

use file_scan::human_bytes;
use worker_sdk::{pb, prelude::*};

use crate::{
    JOB_TYPE,
    archive::{Identity, Phase, Progress, archive_file},
    descriptor,
    scan::{scan, unix_nanos},
    settings::{self, ArchiveSettings},
};

const BATCH: usize = 100;
const MAX_PROBLEM_ACTIVITIES: usize = 10;

/// The `file_archive` job type.
#[derive(Debug, Clone, Default)]
pub struct FileArchive;

impl FileArchive {
    pub fn new() -> Self {
        FileArchive
    }
}

#[worker_sdk::async_trait]
impl JobHandler for FileArchive {
    fn capability(&self) -> pb::JobTypeCapability {
        capability(JOB_TYPE, "File archive")
            .detect(1)
            .execute(2)
            .description("Compresses old files into .zst or .gz and removes the originals once verified")
    }

    fn descriptor(&self) -> pb::JobTypeDescriptor {
        descriptor::descriptor()
    }

    async fn detect(
        &self,
        request: pb::RunDetectionRequest,
        out: DetectionSender,
        cancel: CancellationToken,
    ) -> HandlerResult<()> {
        let settings = ArchiveSettings::from_values(&request.admin_config_values)?;
        if settings.paths.is_empty() {
            out.activity("no directories configured; nothing to scan").await;
            return Ok(());
        }
        let now = SystemTime::now();
        let (scan_settings, token) = (settings.clone(), cancel.clone());
        let report = tokio::task::spawn_blocking(move || scan(&scan_settings, now, &token)).await?;
        if report.canceled {
            return Err("detection canceled".into());
        }
        for problem in report.problems.iter().take(MAX_PROBLEM_ACTIVITIES) {
            out.activity(format!("skipped {problem}")).await;
        }
        let limit = usize::try_from(request.max_results).ok().filter(|n| *n > 0).unwrap_or(usize::MAX);
        let proposals: Vec<_> =
            report.candidates.iter().take(limit).map(|c| c.proposal(settings.format, now)).collect();
        out.activity(format!(
            "{} files match the patterns; {} are old enough to archive",
            report.matched,
            report.candidates.len()
        ))
        .await;
        for batch in proposals.chunks(BATCH) {
            out.send(batch.to_vec()).await?;
        }
        Ok(())
    }

    async fn execute(
        &self,
        request: pb::ExecuteJobRequest,
        progress: ProgressSender,
        cancel: CancellationToken,
    ) -> HandlerResult<pb::JobResult> {
        let job = request.job.unwrap_or_default();
        let params = &job.parameters;
        let path = PathBuf::from(values::get_string(params, "path")?);
        let format_name = values::opt_string(params, "format")?;
        let format = settings::format(&request.admin_config_values, format_name.as_deref())?;

        // A file that vanished or changed since detection is no longer the file that was
        // proposed: leave it alone.
        let identity = match std::fs::symlink_metadata(&path) {
            Ok(m) => Identity::of(&m),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(skipped(format!("skipped {}: it no longer exists", path.display())));
            }
            Err(e) => return Err(format!("{}: {e}", path.display()).into()),
        };
        let expected_size = values::opt_i64(params, "size_bytes")?;
        let expected_modified = values::opt_i64(params, "modified_unix_nanos")?;
        let modified = identity.modified.map(unix_nanos);
        if expected_size.is_some_and(|s| Some(s) != i64::try_from(identity.len).ok())
            || expected_modified.is_some_and(|m| Some(m) != modified)
        {
            let result = skipped(format!("skipped {}: it changed since detection", path.display()));
            progress.activity(result.summary.clone()).await;
            return Ok(result);
        }

        progress.progress(0.0, "compressing", &format!("compressing {}", path.display())).await;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Progress>(4);
        let (original, token) = (path.clone(), cancel.clone());
        let task = tokio::task::spawn_blocking(move || {
            archive_file(&original, format, &token, |p| {
                // A full channel only drops a report; the next one carries on.
                let _ = tx.try_send(p);
            })
        });
        while let Some(p) = rx.recv().await {
            let stage = match p.phase {
                Phase::Compressing => "compressing",
                Phase::Verifying => "verifying",
            };
            let message = format!("{} of {}", human_bytes(p.done), human_bytes(p.total));
            progress.progress(p.percent(), stage, &message).await;
        }
        let archived = task.await??;

        let ratio = if archived.original_bytes == 0 {
            1.0
        } else {
            archived.archive_bytes as f64 / archived.original_bytes as f64
        };
        let summary = format!(
            "archived {} -> {} ({} -> {}, {:.0}% of the original)",
            path.display(),
            archived.archive.display(),
            human_bytes(archived.original_bytes),
            human_bytes(archived.archive_bytes),
            ratio * 100.0
        );
        progress.progress(100.0, "done", &summary).await;
        let output_values = [
            ("archived", value::boolean(true)),
            ("archive_path", value::string(archived.archive.to_string_lossy())),
            ("original_bytes", value::int(i64::try_from(archived.original_bytes).unwrap_or(i64::MAX))),
            ("archive_bytes", value::int(i64::try_from(archived.archive_bytes).unwrap_or(i64::MAX))),
            ("ratio", value::double(ratio)),
            ("elapsed", value::duration(archived.elapsed)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Ok(pb::JobResult { output_values, summary })
    }
}

/// The result of a job that had nothing to do.
fn skipped(summary: String) -> pb::JobResult {
    pb::JobResult { output_values: [("archived".to_string(), value::boolean(false))].into(), summary }
}
