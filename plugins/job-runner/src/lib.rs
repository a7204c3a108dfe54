//! The `job_runner` job type: named job definitions from pinned sources, run sandboxed,
//! with structured results and artifacts.
//!
//! A definition (the admin's form holds them as one JSON object) names its source, a
//! git tag or a tarball with its SHA-256 ([`sources`]), its entry command and runtime
//! ([`runtime`]: shell, python, node, each with a secret helper), its environment,
//! secrets, limits and schedule ([`definition`]). A run fetches the source once into
//! a cache, runs the entry in bubblewrap when the worker has it ([`sandbox`]) with the
//! secrets on stdin, and returns the structured result ([`result`]) and the artifacts
//! ([`artifacts`]) in the job's result. Process handling (own process group, timeout,
//! cancel, capped output) is script-runner's.
//!
//! **Invariant:** nothing runs unless the worker was started with `--allow-scripts`
//! ([`RunnerPolicy::allow`]); sources come only from the worker operator's allowlists
//! and directory; a secret never reaches an environment, a command line or a log.
//!
//! Modules: [`policy`], [`definition`], [`sources`], [`runtime`], [`sandbox`],
//! [`execute`] (one run), [`result`], [`artifacts`], [`descriptor`] and [`handler`].

pub mod artifacts;
pub mod definition;
pub mod descriptor;
pub mod execute;
pub mod handler;
pub mod policy;
pub mod result;
pub mod runtime;
pub mod sandbox;
pub mod sources;

pub use handler::JobRunner;
pub use policy::{RunnerPolicy, SandboxChoice};

/// The job type this crate handles.
pub const JOB_TYPE: &str = "job_runner";
