//! The bundled plugins a worker offers, chosen by flags shared by `plughost worker`
//! and `plughost up`.
//!
//! **Invariant:** the `script` job type is offered only with `--allow-scripts`: the
//! admin decides what a script does, so running scripts at all is the worker
//! operator's decision.

use std::{path::PathBuf, sync::Arc};

use anyhow::{bail, ensure};
use clap::Args;
use worker_sdk::JobHandler;

/// Every bundled job type.
pub const JOB_TYPES: &[&str] = &[sqlite_vacuum::JOB_TYPE, file_archive::JOB_TYPE, script_runner::JOB_TYPE];

#[derive(Args, Debug, Clone, Default)]
pub struct PluginArgs {
    /// Job types to offer, comma-separated (default: sqlite_vacuum and file_archive,
    /// plus script with --allow-scripts).
    #[arg(long, env = "PLUGHOST_JOB_TYPES", value_delimiter = ',')]
    pub job_types: Vec<String>,
    /// Offer the `script` job type: run operator-defined scripts from the admin's config.
    #[arg(long, env = "PLUGHOST_ALLOW_SCRIPTS")]
    pub allow_scripts: bool,
    /// The directory scripts run in (and script files are read from). Default: `scripts`
    /// under the worker's directory.
    #[arg(long, env = "PLUGHOST_SCRIPTS_DIR")]
    pub scripts_dir: Option<PathBuf>,
}

impl PluginArgs {
    /// The job types to offer, checked.
    pub fn job_types(&self) -> anyhow::Result<Vec<&'static str>> {
        let requested: Vec<&str> = self.job_types.iter().map(|t| t.trim()).filter(|t| !t.is_empty()).collect();
        if requested.is_empty() {
            let defaults = JOB_TYPES.iter().copied();
            return Ok(defaults.filter(|t| *t != script_runner::JOB_TYPE || self.allow_scripts).collect());
        }
        let mut chosen = Vec::new();
        for t in requested {
            let Some(known) = JOB_TYPES.iter().find(|k| **k == t) else {
                bail!("unknown job type {t:?}; the bundled ones are {}", JOB_TYPES.join(", "));
            };
            ensure!(
                *known != script_runner::JOB_TYPE || self.allow_scripts,
                "job type script runs operator-defined code; start the worker with --allow-scripts to offer it"
            );
            if !chosen.contains(known) {
                chosen.push(*known);
            }
        }
        Ok(chosen)
    }

    /// The handlers for the chosen job types; scripts run in `--scripts-dir`, else in
    /// `default_scripts_dir`.
    pub fn handlers(&self, default_scripts_dir: PathBuf) -> anyhow::Result<Vec<Arc<dyn JobHandler>>> {
        let scripts_dir = self.scripts_dir.clone().unwrap_or(default_scripts_dir);
        let handlers = self
            .job_types()?
            .into_iter()
            .map(|t| -> Arc<dyn JobHandler> {
                match t {
                    sqlite_vacuum::JOB_TYPE => Arc::new(sqlite_vacuum::SqliteVacuum::new()),
                    file_archive::JOB_TYPE => Arc::new(file_archive::FileArchive::new()),
                    _ => Arc::new(script_runner::ScriptRunner::new(script_runner::ScriptPolicy::allowed(
                        scripts_dir.clone(),
                    ))),
                }
            })
            .collect();
        Ok(handlers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(types: &[&str], allow: bool) -> PluginArgs {
        PluginArgs { job_types: types.iter().map(|t| t.to_string()).collect(), allow_scripts: allow, scripts_dir: None }
    }

    #[test]
    fn scripts_are_offered_only_with_the_opt_in() {
        assert_eq!(args(&[], false).job_types().unwrap(), ["sqlite_vacuum", "file_archive"]);
        assert_eq!(args(&[], true).job_types().unwrap(), ["sqlite_vacuum", "file_archive", "script"]);
        assert!(args(&["script"], false).job_types().is_err());
        assert_eq!(args(&["script", "script"], true).job_types().unwrap(), ["script"]);
    }

    #[test]
    fn unknown_job_types_are_refused_with_the_known_ones() {
        let err = args(&["nope"], true).job_types().unwrap_err().to_string();
        assert!(err.contains("sqlite_vacuum, file_archive, script"), "{err}");
    }
}
