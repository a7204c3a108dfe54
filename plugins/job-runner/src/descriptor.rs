//! The `job_runner` descriptor: the definitions (a JSON object edited in the form) and
//! the secrets they may read.

use worker_sdk::{pb, prelude::*};

use crate::JOB_TYPE;

/// An example for the form's placeholder.
pub const EXAMPLE: &str = r#"{
  "nightly-report": {
    "description": "Builds the nightly report",
    "source": {"kind": "git_tag", "repo": "https://git.example.org/ops/jobs.git", "tag": "v1.4.0", "path": "report"},
    "entry": "run.py --days 7",
    "runtime": "python",
    "env": {"REPORT_DAYS": "7"},
    "secrets": ["api_token"],
    "timeout_seconds": 600,
    "retries": 1,
    "schedule_minutes": 1440,
    "network": false,
    "memory_mb": 1024,
    "cpu_seconds": 300
  }
}"#;

pub fn descriptor() -> pb::JobTypeDescriptor {
    Descriptor::new(JOB_TYPE, "Job runner")
        .description(
            "Runs named job definitions from pinned sources (a git tag, a checksummed tarball), sandboxed, \
             with structured results and artifacts; on workers started with --allow-scripts",
        )
        .icon("play")
        .version(1)
        .admin_form(
            Form::new("admin", "Job definitions")
                .description(
                    "Each definition runs on its schedule (schedule_minutes; 0: only on demand) or on demand: \
                     enqueue a job with the parameter definition set to its name",
                )
                .section(
                    Section::new("definitions", "Definitions").field(
                        Field::object("definitions", "Job definitions")
                            .description(
                                "name: {source, entry, runtime, env, secrets, timeout_seconds, retries, schedule_minutes, \
                                 network, require_sandbox, memory_mb, cpu_seconds, output_limit_bytes}",
                            )
                            .help(
                                "source kinds: git_tag {repo, tag, path}, tarball_url {url, sha256, path}, tarball_path \
                                 {file, sha256, path}. runtime: shell, python or node. Secrets are read with the helper \
                                 (get_secret NAME in the shell after . \"$PLUGHOST_HELPERS/plughost.sh\"; \
                                 from plughost import get_secret in Python; require('plughost').getSecret in Node). \
                                 A final JSON line on stdout, or $PLUGHOST_RESULT, becomes the job's output values; \
                                 files written to $PLUGHOST_ARTIFACTS become its artifacts",
                            )
                            .placeholder(EXAMPLE),
                    ),
                )
                .section(
                    Section::new("secrets", "Secrets").field(
                        Field::object("secrets", "Secrets")
                            .description("Name/value pairs; a definition receives on stdin only those it names in its secrets")
                            .help("Never placed in the environment or on the command line, never shown again once saved")
                            .placeholder(r#"{"api_token": "..."}"#)
                            .sensitive(),
                    ),
                ),
        )
        .runtime(
            Runtime::default()
                // Detection only checks which definitions are due.
                .interval_minutes(1)
                .global_concurrency(4)
                .per_worker_concurrency(2)
                // A definition's own `retries` caps these: later attempts are refused unrun.
                .retry_limit(3)
                .retry_backoff_seconds(30)
                .execution_timeout_seconds(86_400 + 300),
        )
        .build()
}
