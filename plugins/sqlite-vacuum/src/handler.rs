//! `SqliteVacuum`: the `JobHandler` that runs [`scan`](crate::scan) for detection and
//! [`vacuum`](crate::vacuum) for execution on blocking threads, and turns their results
//! into proposals, progress and job results.

use std::path::PathBuf;

use file_scan::human_bytes;
use worker_sdk::{pb, prelude::*};

use crate::{
    JOB_TYPE, descriptor,
    scan::{clamp, scan},
    settings::{self, ScanSettings},
    vacuum::{Progress, vacuum},
};

/// Proposals per `detection_proposals` message.
const BATCH: usize = 50;
/// How often a running vacuum says it is still running.
const TICK: std::time::Duration = std::time::Duration::from_secs(2);
/// Scan problems reported as activities (the rest are counted).
const MAX_PROBLEM_ACTIVITIES: usize = 10;

/// The `sqlite_vacuum` job type.
#[derive(Debug, Clone, Default)]
pub struct SqliteVacuum;

impl SqliteVacuum {
    pub fn new() -> Self {
        SqliteVacuum
    }
}

#[worker_sdk::async_trait]
impl JobHandler for SqliteVacuum {
    fn capability(&self) -> pb::JobTypeCapability {
        capability(JOB_TYPE, "SQLite vacuum")
            .detect(1)
            .execute(2)
            .description("Reclaims free pages in fragmented SQLite databases")
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
        let settings = ScanSettings::from_values(&request.admin_config_values)?;
        if settings.paths.is_empty() {
            out.activity("no directories configured; nothing to scan").await;
            return Ok(());
        }
        let (scan_settings, token) = (settings.clone(), cancel.clone());
        let report = tokio::task::spawn_blocking(move || scan(&scan_settings, &token)).await?;
        if report.canceled {
            return Err("detection canceled".into());
        }
        for problem in report.problems.iter().take(MAX_PROBLEM_ACTIVITIES) {
            out.activity(format!("skipped {problem}")).await;
        }
        if report.problems.len() > MAX_PROBLEM_ACTIVITIES {
            out.activity(format!("skipped {} more unreadable entries", report.problems.len() - MAX_PROBLEM_ACTIVITIES))
                .await;
        }
        let limit = usize::try_from(request.max_results).ok().filter(|n| *n > 0).unwrap_or(usize::MAX);
        let proposals: Vec<_> = report.candidates.iter().take(limit).map(|c| c.proposal(settings.priority)).collect();
        out.activity(format!(
            "looked at {} SQLite databases; {} have at least {:.0}% free pages",
            report.databases,
            report.candidates.len(),
            settings.min_free_ratio * 100.0
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
        let path = PathBuf::from(values::get_string(&job.parameters, "path")?);
        let busy_timeout = settings::busy_timeout(&request.admin_config_values)?;
        progress.progress(0.0, "vacuuming", &format!("vacuuming {}", path.display())).await;

        let (tx, mut rx) = tokio::sync::mpsc::channel::<Progress>(4);
        let (target, token) = (path.clone(), cancel.clone());
        let task = tokio::task::spawn_blocking(move || {
            vacuum(&target, busy_timeout, &token, move |p| {
                // A full channel means the admin is slow; the next report carries on.
                let _ = tx.try_send(p);
            })
        });
        // The channel closes when the vacuum returns and drops its callback. Between
        // step reports (and during the copy-back phase, which has none) a ticker says
        // the vacuum is still going.
        let started = tokio::time::Instant::now();
        let mut ticker = tokio::time::interval_at(started + TICK, TICK);
        let mut percent = 0.0;
        loop {
            tokio::select! {
                p = rx.recv() => match p {
                    Some(p) => {
                        percent = p.percent;
                        let message = format!("rebuilding: {} VM steps in {:.1}s", p.steps, p.elapsed.as_secs_f64());
                        progress.progress(percent, "vacuuming", &message).await;
                    }
                    None => break,
                },
                _ = ticker.tick() => {
                    let message = format!("still vacuuming after {}s", started.elapsed().as_secs());
                    progress.progress(percent, "vacuuming", &message).await;
                }
            }
        }
        let report = task.await??;

        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let summary = format!(
            "vacuumed {name}: {} -> {} ({} reclaimed)",
            human_bytes(report.before.total_bytes()),
            human_bytes(report.after.total_bytes()),
            human_bytes(report.reclaimed_bytes())
        );
        progress.progress(100.0, "done", &summary).await;
        let output_values = [
            ("bytes_before", value::int(clamp(report.before.total_bytes()))),
            ("bytes_after", value::int(clamp(report.after.total_bytes()))),
            ("reclaimed_bytes", value::int(clamp(report.reclaimed_bytes()))),
            ("pages_before", value::int(clamp(report.before.stats.page_count))),
            ("pages_after", value::int(clamp(report.after.stats.page_count))),
            ("free_pages_before", value::int(clamp(report.before.stats.freelist_count))),
            ("elapsed", value::duration(report.elapsed)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Ok(pb::JobResult { output_values, summary })
    }
}
