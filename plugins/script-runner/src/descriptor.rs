//! The `script` descriptor: the script, its environment and secrets, and its limits.

use std::time::Duration;

use worker_sdk::{pb, prelude::*};

use crate::{JOB_TYPE, settings::defaults};

pub fn descriptor() -> pb::JobTypeDescriptor {
    Descriptor::new(JOB_TYPE, "Script")
        .description(
            "Runs an operator-defined shell or Python script on a schedule, on workers started with --allow-scripts",
        )
        .icon("terminal")
        .version(1)
        .admin_form(
            Form::new("admin", "Script")
                .description("The detection interval is the schedule: each detection proposes one run. Nothing runs until a script is written here")
                .section(
                    Section::new("script", "Script")
                        .field(
                            Field::string("name", "Name")
                                .description("Names the runs; two runs of one name never overlap")
                                .required()
                                .regex("^[A-Za-z0-9_.-]{1,64}$", "1-64 letters, digits, '_', '.' or '-'")
                                .default_value(defaults::NAME),
                        )
                        .field(
                            Field::select("interpreter", "Interpreter", &[
                                ("sh", "POSIX shell (sh)"),
                                ("bash", "Bash"),
                                ("python3", "Python 3"),
                            ])
                            .required()
                            .default_value(defaults::INTERPRETER),
                        )
                        .field(
                            Field::select("source", "Source", &[
                                ("inline", "Written here"),
                                ("file", "A file in the worker's scripts directory"),
                            ])
                            .required()
                            .default_value(defaults::SOURCE),
                        )
                        .field(
                            Field::text("script", "Script")
                                .description("Runs in the worker's scripts directory")
                                .help("Read secrets from stdin: a JSON object, e.g. json.load(sys.stdin)[\"token\"] or jq -r .token")
                                .placeholder("echo \"hello from $PLUGHOST_SCRIPT_NAME in $(pwd)\"")
                                .max_length(65_536)
                                .visible_when("source", "inline"),
                        )
                        .field(
                            Field::string("file", "Script file")
                                .description("Path relative to the worker's scripts directory")
                                .placeholder("nightly-report.sh")
                                .regex(r"^[A-Za-z0-9_.][A-Za-z0-9_./-]*$", "a relative path such as reports/daily.sh")
                                .visible_when("source", "file"),
                        ),
                )
                .section(
                    Section::new("inputs", "Environment and secrets")
                        .field(
                            Field::object("env", "Environment variables")
                                .description("Name/value pairs passed to the script as environment variables")
                                .help("Names use letters, digits and _; PLUGHOST_ is reserved. Shown in job details")
                                .placeholder(r#"{"REPORT_DAYS": "7"}"#),
                        )
                        .field(
                            Field::object("secrets", "Secrets")
                                .description("Name/value pairs written to the script's stdin as one JSON object")
                                .help("Never placed in the environment or on the command line, never shown again once saved")
                                .placeholder(r#"{"api_token": "..."}"#)
                                .sensitive(),
                        ),
                )
                .section(
                    Section::new("limits", "Limits")
                        .field(
                            Field::duration("timeout", "Timeout")
                                .description("A run still going after this long is killed, with everything it started")
                                .range(Duration::from_secs(1), Duration::from_secs(86_400))
                                .default_value(defaults::TIMEOUT),
                        )
                        .field(
                            Field::int("output_limit_bytes", "Output limit (bytes)")
                                .description("stdout and stderr together; the rest is dropped and the run says so")
                                .range(defaults::MIN_OUTPUT_LIMIT_BYTES, defaults::MAX_OUTPUT_LIMIT_BYTES)
                                .default_value(defaults::OUTPUT_LIMIT_BYTES),
                        ),
                ),
        )
        .runtime(
            Runtime::default()
                .interval_minutes(60)
                .global_concurrency(1)
                .per_worker_concurrency(1)
                // Scripts are not assumed idempotent: a failed run waits for the next one.
                .retry_limit(0)
                .execution_timeout_seconds(86_400 + 60),
        )
        .build()
}
