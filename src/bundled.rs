//! The bundled plugins a worker offers, chosen by flags shared by `plughost worker`
//! and `plughost up`.
//!
//! **Invariant:** the `script` and `job_runner` job types are offered only with
//! `--allow-scripts`: the admin decides what a script does, so running scripts at all
//! is the worker operator's decision (and so are the sources a job definition may use).

use std::{path::PathBuf, sync::Arc};

use anyhow::{bail, ensure};
use clap::Args;
use worker_sdk::JobHandler;

/// Every bundled job type.
pub const JOB_TYPES: &[&str] =
    &[sqlite_vacuum::JOB_TYPE, file_archive::JOB_TYPE, script_runner::JOB_TYPE, job_runner::JOB_TYPE];

/// Job types that run operator-defined code: offered only with `--allow-scripts`.
fn runs_code(job_type: &str) -> bool {
    job_type == script_runner::JOB_TYPE || job_type == job_runner::JOB_TYPE
}

#[derive(Args, Debug, Clone, Default)]
pub struct PluginArgs {
    /// Job types to offer, comma-separated (default: sqlite_vacuum and file_archive,
    /// plus script and job_runner with --allow-scripts).
    #[arg(long, env = "PLUGHOST_JOB_TYPES", value_delimiter = ',')]
    pub job_types: Vec<String>,
    /// Offer the `script` and `job_runner` job types: run operator-defined scripts and
    /// job definitions from the admin's config.
    #[arg(long, env = "PLUGHOST_ALLOW_SCRIPTS")]
    pub allow_scripts: bool,
    /// The directory scripts run in (and script files are read from). Default: `scripts`
    /// under the worker's directory.
    #[arg(long, env = "PLUGHOST_SCRIPTS_DIR")]
    pub scripts_dir: Option<PathBuf>,
    /// Boxed: the job runner's flags would make every command's arguments large.
    #[command(flatten)]
    pub jobs: Box<JobRunnerArgs>,
}

/// The job runner's flags: where its sources may come from, their limits, the sandbox.
#[derive(Args, Debug, Clone)]
pub struct JobRunnerArgs {
    /// Where the job runner caches sources and makes its run directories. Default:
    /// `job-runner` beside the scripts directory.
    #[arg(long, env = "PLUGHOST_JOB_RUNNER_DIR")]
    pub job_runner_dir: Option<PathBuf>,
    /// Repositories `git_tag` sources may name, comma-separated, exactly as written in
    /// the definitions; `*` allows every repository. Empty: none.
    #[arg(long, env = "PLUGHOST_JOB_REPO_ALLOWLIST", value_delimiter = ',')]
    pub job_repo_allowlist: Vec<String>,
    /// Hosts `tarball_url` sources may download from (and be redirected to),
    /// comma-separated; `*` allows every host. Empty: none.
    #[arg(long, env = "PLUGHOST_JOB_TARBALL_ALLOWLIST", value_delimiter = ',')]
    pub job_tarball_allowlist: Vec<String>,
    /// The largest tarball downloaded or read; it may unpack to 8 times this.
    #[arg(long, env = "PLUGHOST_JOB_TARBALL_MAX_BYTES", default_value_t = job_runner::policy::DEFAULT_TARBALL_MAX_BYTES)]
    pub job_tarball_max_bytes: u64,
    /// The directory `tarball_path` sources must lie in; without it they are refused.
    #[arg(long, env = "PLUGHOST_JOB_TARBALL_DIR")]
    pub job_tarball_dir: Option<PathBuf>,
    /// How long fetching one source (a download, a git fetch) may take.
    #[arg(long, env = "PLUGHOST_JOB_DOWNLOAD_TIMEOUT_SECONDS", default_value_t = 120)]
    pub job_download_timeout_seconds: u64,
    /// PEM CA certificates trusted for tarball downloads besides the system's bundle.
    #[arg(long, env = "PLUGHOST_JOB_TARBALL_CA")]
    pub job_tarball_ca: Option<PathBuf>,
    /// Run job definitions in bubblewrap: `auto` (when bwrap works), `on` (refuse to
    /// start without it) or `off`.
    #[arg(long, env = "PLUGHOST_SANDBOX", default_value = "auto", value_parser = job_runner::SandboxChoice::parse)]
    pub sandbox: job_runner::SandboxChoice,
    /// Files a run may return from `$PLUGHOST_ARTIFACTS`.
    #[arg(long, env = "PLUGHOST_JOB_ARTIFACTS_MAX_COUNT", default_value_t = job_runner::policy::DEFAULT_ARTIFACTS_MAX_COUNT)]
    pub job_artifacts_max_count: usize,
    /// Bytes of all of a run's artifacts together, logs and result included.
    #[arg(long, env = "PLUGHOST_JOB_ARTIFACTS_MAX_BYTES", default_value_t = job_runner::policy::DEFAULT_ARTIFACTS_MAX_BYTES)]
    pub job_artifacts_max_bytes: u64,
}

impl Default for JobRunnerArgs {
    fn default() -> Self {
        JobRunnerArgs {
            job_runner_dir: None,
            job_repo_allowlist: Vec::new(),
            job_tarball_allowlist: Vec::new(),
            job_tarball_max_bytes: job_runner::policy::DEFAULT_TARBALL_MAX_BYTES,
            job_tarball_dir: None,
            job_download_timeout_seconds: 120,
            job_tarball_ca: None,
            sandbox: job_runner::SandboxChoice::Auto,
            job_artifacts_max_count: job_runner::policy::DEFAULT_ARTIFACTS_MAX_COUNT,
            job_artifacts_max_bytes: job_runner::policy::DEFAULT_ARTIFACTS_MAX_BYTES,
        }
    }
}

impl JobRunnerArgs {
    /// The runner's policy, with runs allowed, in `dir`.
    pub fn policy(&self, dir: PathBuf) -> job_runner::RunnerPolicy {
        let clean = |list: &[String]| list.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        job_runner::RunnerPolicy {
            repo_allowlist: clean(&self.job_repo_allowlist),
            tarball_allowlist: clean(&self.job_tarball_allowlist),
            tarball_max_bytes: self.job_tarball_max_bytes,
            tarball_dir: self.job_tarball_dir.clone(),
            download_timeout: std::time::Duration::from_secs(self.job_download_timeout_seconds.max(1)),
            extra_ca_file: self.job_tarball_ca.clone(),
            sandbox: self.sandbox,
            artifacts_max_count: self.job_artifacts_max_count,
            artifacts_max_bytes: self.job_artifacts_max_bytes,
            ..job_runner::RunnerPolicy::allowed(self.job_runner_dir.clone().unwrap_or(dir))
        }
    }
}

impl PluginArgs {
    /// The job types to offer, checked.
    pub fn job_types(&self) -> anyhow::Result<Vec<&'static str>> {
        let requested: Vec<&str> = self.job_types.iter().map(|t| t.trim()).filter(|t| !t.is_empty()).collect();
        if requested.is_empty() {
            let defaults = JOB_TYPES.iter().copied();
            return Ok(defaults.filter(|t| !runs_code(t) || self.allow_scripts).collect());
        }
        let mut chosen = Vec::new();
        for t in requested {
            let Some(known) = JOB_TYPES.iter().find(|k| **k == t) else {
                bail!("unknown job type {t:?}; the bundled ones are {}", JOB_TYPES.join(", "));
            };
            ensure!(
                !runs_code(known) || self.allow_scripts,
                "job type {known} runs operator-defined code; start the worker with --allow-scripts to offer it"
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
        let runner_dir = scripts_dir.with_file_name("job-runner");
        let mut handlers: Vec<Arc<dyn JobHandler>> = Vec::new();
        for t in self.job_types()? {
            handlers.push(match t {
                sqlite_vacuum::JOB_TYPE => Arc::new(sqlite_vacuum::SqliteVacuum::new()),
                file_archive::JOB_TYPE => Arc::new(file_archive::FileArchive::new()),
                job_runner::JOB_TYPE => Arc::new(
                    job_runner::JobRunner::new(self.jobs.policy(runner_dir.clone())).map_err(anyhow::Error::msg)?,
                ),
                _ => Arc::new(script_runner::ScriptRunner::new(script_runner::ScriptPolicy::allowed(
                    scripts_dir.clone(),
                ))),
            });
        }
        Ok(handlers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(types: &[&str], allow: bool) -> PluginArgs {
        PluginArgs {
            job_types: types.iter().map(|t| t.to_string()).collect(),
            allow_scripts: allow,
            scripts_dir: None,
            jobs: Box::default(),
        }
    }

    #[test]
    fn scripts_are_offered_only_with_the_opt_in() {
        assert_eq!(args(&[], false).job_types().unwrap(), ["sqlite_vacuum", "file_archive"]);
        assert_eq!(args(&[], true).job_types().unwrap(), ["sqlite_vacuum", "file_archive", "script", "job_runner"]);
        assert!(args(&["script"], false).job_types().is_err());
        assert!(args(&["job_runner"], false).job_types().is_err());
        assert_eq!(args(&["script", "script"], true).job_types().unwrap(), ["script"]);
    }

    #[test]
    fn unknown_job_types_are_refused_with_the_known_ones() {
        let err = args(&["nope"], true).job_types().unwrap_err().to_string();
        assert!(err.contains("sqlite_vacuum, file_archive, script, job_runner"), "{err}");
    }
}
