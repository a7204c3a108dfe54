//! The `file_archive` job type. Detection finds files that match the configured
//! patterns and are older than an age; execution compresses each into `.zst` or `.gz`
//! beside it, verifies the archive by reading it back against the original, and only
//! then removes the original. Progress is reported in bytes; a file that changes while
//! it is being archived is left alone; a canceled or failed run leaves no partial
//! archive behind.
//!
//! Modules: [`descriptor`] (the config form), [`settings`] (reading it), [`format`]
//! (the two codecs), [`archive`] (archiving one file safely), [`scan`] (detection) and
//! [`handler`] (the `JobHandler`).

pub mod archive;
pub mod descriptor;
pub mod format;
pub mod handler;
pub mod scan;
pub mod settings;

pub use handler::FileArchive;

/// The job type this crate handles.
pub const JOB_TYPE: &str = "file_archive";
