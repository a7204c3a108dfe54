//! The `sqlite_vacuum` descriptor: where to look, when a database is worth vacuuming,
//! and how to vacuum it.

use std::time::Duration;

use worker_sdk::{pb, prelude::*};

use crate::{JOB_TYPE, settings::defaults};

pub fn descriptor() -> pb::JobTypeDescriptor {
    Descriptor::new(JOB_TYPE, "SQLite vacuum")
        .description("Finds SQLite databases with many free pages and rebuilds them with VACUUM to give the space back")
        .icon("database")
        .version(1)
        .admin_form(
            Form::new("admin", "SQLite vacuum")
                .description("Which databases to look at and when one is worth vacuuming")
                .section(
                    Section::new("scan", "Where to look")
                        .description("Directories are walked without following symlinks")
                        .field(
                            Field::string_list("paths", "Directories")
                                .description("Directories (or single database files) to scan, one per line")
                                .help("Absolute paths on the worker's machine")
                                .placeholder("/var/lib/myapp")
                                .required()
                                .min_items(1)
                                .max_items(64),
                        )
                        .field(
                            Field::string_list("patterns", "File patterns")
                                .description("Glob patterns for database files; a pattern with / matches the path below the directory")
                                .help("* and ? stay within a name, ** crosses directories, [a-z] is a class")
                                .default_value(defaults::PATTERNS),
                        )
                        .field(Field::boolean("recursive", "Include subdirectories").default_value(true))
                        .field(
                            Field::int("max_depth", "Maximum depth")
                                .help("Directory levels below each configured directory")
                                .range(0, 64)
                                .default_value(defaults::MAX_DEPTH)
                                .visible_when("recursive", true),
                        )
                        .field(
                            Field::int("min_size_bytes", "Size floor (bytes)")
                                .description("Smaller files are not worth a vacuum and are skipped")
                                .min(0)
                                .default_value(defaults::MIN_SIZE_BYTES),
                        ),
                )
                .section(
                    Section::new("threshold", "When to vacuum")
                        .field(
                            Field::double("min_free_ratio", "Free-page ratio")
                                .description("Propose a vacuum when at least this share of the pages is free")
                                .help("0.3 means 30% of the file is free pages that VACUUM would give back")
                                .range(0.0, 1.0)
                                .default_value(defaults::MIN_FREE_RATIO),
                        )
                        .field(
                            Field::select(
                                "priority",
                                "Job priority",
                                &[("low", "Low"), ("normal", "Normal"), ("high", "High")],
                            )
                            .default_value("normal"),
                        ),
                )
                .section(
                    Section::new("execution", "How to vacuum").field(
                        Field::duration("busy_timeout", "Busy timeout")
                            .description("How long to wait for other connections to release their locks")
                            .help("The vacuum fails (and is retried later) when the database stays locked this long")
                            .range(Duration::ZERO, Duration::from_secs(600))
                            .default_value(defaults::BUSY_TIMEOUT),
                    ),
                ),
        )
        .runtime(
            Runtime::default()
                .interval_minutes(60)
                .detection_timeout_seconds(120)
                .global_concurrency(2)
                .per_worker_concurrency(1)
                .retry_limit(2)
                .retry_backoff_seconds(60)
                .execution_timeout_seconds(3600),
        )
        .build()
}
