//! The `sqlite_vacuum` job type. Detection walks the configured directories for SQLite
//! databases (glob patterns, a size floor) and proposes a `VACUUM` for each one whose
//! free-page ratio is at or above a threshold, with the reclaimable bytes in the
//! proposal and the canonical path as the dedupe key. Execution vacuums the database
//! with a busy timeout, reports progress while SQLite works, and reports the bytes
//! before and after.
//!
//! Modules: [`descriptor`] (the config form), [`settings`] (reading it), [`inspect`]
//! (page statistics of one file), [`scan`] (detection), [`vacuum`] (execution) and
//! [`handler`] (the `JobHandler` that wires them to the SDK).

pub mod descriptor;
pub mod handler;
pub mod inspect;
pub mod scan;
pub mod settings;
pub mod vacuum;

pub use handler::SqliteVacuum;

/// The job type this crate handles.
pub const JOB_TYPE: &str = "sqlite_vacuum";
