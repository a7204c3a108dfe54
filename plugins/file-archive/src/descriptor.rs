//! The `file_archive` descriptor: which files, how old, and how to compress them.

use std::time::Duration;

use worker_sdk::{pb, prelude::*};

use crate::{JOB_TYPE, settings::defaults};

pub fn descriptor() -> pb::JobTypeDescriptor {
    Descriptor::new(JOB_TYPE, "File archive")
        .description(
            "Compresses old files (logs, exports) beside themselves, verifies the archive, then removes the original",
        )
        .icon("archive")
        .version(1)
        .admin_form(
            Form::new("admin", "File archive")
                .description("Which files to archive and how")
                .section(
                    Section::new("scan", "Which files")
                        .description("Directories are walked without following symlinks")
                        .field(
                            Field::string_list("paths", "Directories")
                                .description("Directories (or single files) to look in, one per line")
                                .help("Absolute paths on the worker's machine")
                                .placeholder("/var/log/myapp")
                                .required()
                                .min_items(1)
                                .max_items(64),
                        )
                        .field(
                            Field::string_list("patterns", "File patterns")
                                .description("Glob patterns; a pattern with / matches the path below the directory")
                                .help("Existing .zst and .gz files are never archived again")
                                .min_items(1)
                                .default_value(defaults::PATTERNS),
                        )
                        .field(Field::boolean("recursive", "Include subdirectories").default_value(true))
                        .field(
                            Field::int("max_depth", "Maximum depth")
                                .range(0, 64)
                                .default_value(defaults::MAX_DEPTH)
                                .visible_when("recursive", true),
                        )
                        .field(
                            Field::duration("min_age", "Older than")
                                .description("Only files not modified for this long")
                                .help("For example 7d, 12h or 30m")
                                .range(Duration::ZERO, Duration::from_secs(3650 * 86_400))
                                .default_value(defaults::MIN_AGE),
                        )
                        .field(
                            Field::int("min_size_bytes", "Size floor (bytes)")
                                .description("Smaller files are left as they are")
                                .min(0)
                                .default_value(0),
                        ),
                )
                .section(
                    Section::new("compression", "Compression")
                        .field(
                            Field::select("format", "Format", &[("zst", "Zstandard (.zst)"), ("gz", "gzip (.gz)")])
                                .description("Zstandard is faster; gzip is readable everywhere")
                                .required()
                                .default_value(defaults::FORMAT),
                        )
                        .field(
                            Field::int("gzip_level", "gzip level")
                                .help("1 is fastest, 9 is smallest")
                                .range(1, 9)
                                .default_value(defaults::GZIP_LEVEL)
                                .visible_when("format", "gz"),
                        ),
                ),
        )
        .runtime(
            Runtime::default()
                .interval_minutes(60)
                .detection_timeout_seconds(120)
                .max_jobs_per_detection(500)
                .global_concurrency(2)
                .per_worker_concurrency(2)
                .retry_limit(2)
                .retry_backoff_seconds(60)
                .execution_timeout_seconds(3600),
        )
        .build()
}
