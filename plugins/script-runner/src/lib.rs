//! The `script` job type: operator-defined shell or Python scripts run on a schedule.
//!
//! Each detection proposes one run of the configured script (deduplicated by its name,
//! so runs never overlap); the detection interval is the schedule. A run gets the job's
//! parameters as environment variables and the secrets (the form's sensitive field)
//! only as a JSON document on stdin, never in its environment or argv. Its stdout and
//! stderr come back as activities, capped at a byte limit. It has a timeout; a cancel
//! or the timeout kills its whole process group; its exit code decides success.
//!
//! **Invariant:** nothing runs unless the worker was started with an explicit opt-in
//! ([`ScriptPolicy::allow`]), and every script runs in the policy's working directory.
//!
//! Modules: [`policy`], [`descriptor`], [`settings`] (the form's values, read),
//! [`command`] (what to execute), [`output`] (capped output forwarding),
//! [`process_group`] (killing everything a script started), [`run`] (one run) and
//! [`handler`].

pub mod command;
pub mod descriptor;
pub mod handler;
pub mod output;
pub mod policy;
pub mod process_group;
pub mod run;
pub mod settings;

pub use handler::ScriptRunner;
pub use policy::ScriptPolicy;

/// The job type this crate handles.
pub const JOB_TYPE: &str = "script";
