//! The Plughost admin server.
//!
//! Workers dial [`grpc`] and stay connected over one bidirectional stream each. The
//! [`registry`] tracks them; [`schema`] fetches each job type's descriptor and the
//! [`config_store`] keeps it with the operator's saved values (checked by the
//! [`validator`]); the [`scheduler`] runs detections and turns proposals into jobs; the
//! [`dispatcher`] hands jobs to executors and follows them to the end; the [`store`]
//! makes every change durable before the [`events`] bus publishes it to [`http`] and to
//! the [`trends`] (the charts' series); a job's output is read back as its [`job_log`]. Operators
//! reach it through [`http`] (the pages and the JSON API) and [`grpc_admin`] (the same
//! API over gRPC), both translators onto the [`commands`] layer.
//! [`server::Admin`] wires it all together.

pub mod address;
pub mod artifacts;
pub mod audit;
pub mod auth;
pub mod backoff;
pub mod clock;
pub mod cluster_context;
pub mod commands;
pub mod components;
pub mod config;
pub mod config_secrets;
pub mod config_store;
pub mod config_value;
pub mod datadir;
pub mod dispatcher;
pub mod events;
pub mod fsutil;
pub mod grpc;
pub mod grpc_admin;
pub mod ha;
pub mod holds;
pub mod http;
pub mod id_hash;
pub mod identity;
pub mod ids;
pub mod input;
pub mod job;
pub mod job_log;
pub mod journal;
pub mod listener;
pub mod liveness;
pub mod monitor;
pub mod observations;
pub mod random;
pub mod registry;
pub mod retention;
pub mod runtime_config;
pub mod scheduler;
pub mod schedules;
pub mod schema;
pub mod secret_box;
pub mod secrets;
pub mod server;
pub mod store;
pub mod text;
pub mod throttle;
pub mod tls;
pub mod trends;
pub mod validator;
pub mod wire;
pub mod worker_history;

#[cfg(test)]
mod proptest_support;
#[cfg(test)]
mod test_support;

pub use components::Components;
pub use config::{AdminConfig, ConnectionLimits, InputLimits, RateCap, TlsFiles};
pub use secret_box::SecretKeySource;
pub use server::{Admin, AdminError};
