//! Write Plughost workers in Rust: implement [`JobHandler`] for each job type, register
//! it on a [`Worker`], and `run` it. The SDK owns the protocol: the stream and its
//! hello, acknowledgements, heartbeats, per-job-type slots, cancellation, shutdown,
//! reconnects with backoff, TLS and the bearer token.
//!
//! ```no_run
//! use std::time::Duration;
//! use worker_sdk::prelude::*;
//!
//! struct Echo;
//!
//! #[worker_sdk::async_trait]
//! impl JobHandler for Echo {
//!     fn capability(&self) -> pb::JobTypeCapability {
//!         capability("echo", "Echo").detect(1).execute(4)
//!     }
//!
//!     fn descriptor(&self) -> pb::JobTypeDescriptor {
//!         Descriptor::new("echo", "Echo")
//!             .admin_form(Form::new("admin", "Echo").section(
//!                 Section::new("main", "What to say")
//!                     .field(Field::string("text", "Text").required().default_value("hello")),
//!             ))
//!             .runtime(Runtime::default().interval_minutes(5))
//!             .build()
//!     }
//!
//!     async fn detect(
//!         &self,
//!         request: pb::RunDetectionRequest,
//!         out: DetectionSender,
//!         _cancel: CancellationToken,
//!     ) -> HandlerResult<()> {
//!         let text = values::string_or(&request.admin_config_values, "text", "hello".into())?;
//!         out.activity(format!("proposing {text}")).await;
//!         let proposal = pb::JobProposal {
//!             dedupe_key: text.clone(),
//!             summary: format!("say {text}"),
//!             parameters: [("text".to_string(), value::string(text))].into(),
//!             ..Default::default()
//!         };
//!         out.send(vec![proposal]).await?;
//!         Ok(())
//!     }
//!
//!     async fn execute(
//!         &self,
//!         request: pb::ExecuteJobRequest,
//!         progress: ProgressSender,
//!         cancel: CancellationToken,
//!     ) -> HandlerResult<pb::JobResult> {
//!         let job = request.job.unwrap_or_default();
//!         let text = values::get_string(&job.parameters, "text")?;
//!         progress.progress(50.0, "saying", &text).await;
//!         tokio::select! {
//!             _ = tokio::time::sleep(Duration::from_millis(100)) => {}
//!             _ = cancel.cancelled() => return Err("canceled".into()),
//!         }
//!         Ok(pb::JobResult { summary: format!("said {text}"), ..Default::default() })
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), worker_sdk::Error> {
//!     let config = WorkerConfig::new("http://127.0.0.1:23646", "./echo-worker");
//!     let shutdown = CancellationToken::new();
//!     let on_ctrl_c = shutdown.clone();
//!     tokio::spawn(async move {
//!         let _ = tokio::signal::ctrl_c().await;
//!         on_ctrl_c.cancel();
//!     });
//!     Worker::new(config).handler(Echo).run(shutdown).await
//! }
//! ```
//!
//! # Several admins: following the leader
//!
//! Admins sharing one database elect one leader, and only the leader takes worker
//! streams; a standby answers with gRPC `UNAVAILABLE`, a message starting with
//! `not the leader`, the metadata `plughost-role: standby` and, when it knows,
//! `plughost-leader: <host:port>` (the leader's gRPC listener). A leader that loses
//! its lease ends its streams the same way. Give the worker every admin, separated by
//! commas: `WorkerConfig::new("grpc://10.0.0.5:33646,grpc://10.0.0.6:33646", dir)`
//! (each entry is read like a single address, `http://` ones included). The worker:
//!
//! - tries the addresses in order and moves on **at once** from one that refuses the
//!   connection, fails TLS or the hello, or answers "not the leader";
//! - goes next to the leader a standby names, when that address is in the list;
//! - waits for the reconnect backoff only after a whole round (every address tried
//!   once) gave no session;
//! - after an established session ends (the admin went away or stepped down), starts
//!   a new round at the next address, the old one last.
//!
//! Each move is logged at info level with the address and the reason. A single
//! address behaves as before: the backoff follows every failure and every dropped
//! session. Fatal errors (a rejected worker or token, bad settings) stop the worker
//! whichever admin sent them. Workers that take a single address can reach a pair
//! behind a virtual IP, a DNS name with an A record per admin, or a TCP load
//! balancer whose health check is the admin's `/readyz`.
//!
//! Modules, one concept each: [`config`] and [`tls`] (settings), [`error`], [`handler`]
//! (the trait), [`detection`] and [`execution`] (the reply paths handed to handlers),
//! [`capability`](mod@capability), [`descriptor`], [`value`] and [`values`] (building and reading
//! config values), [`status`]; internally `worker` (the reconnect loop), `session`
//! (one stream), `dispatch` (one admin request), `heartbeat`, `slots`, `tracker`
//! (running work), `supervise` (one handler call), `connect` and `resolve` (dialing),
//! `identity`, `backoff`, `rotation` (which admin address next).

pub mod capability;
pub mod config;
pub mod descriptor;
pub mod detection;
pub mod error;
pub mod execution;
pub mod handler;
pub mod status;
pub mod tls;
pub mod value;
pub mod values;

mod backoff;
mod connect;
mod dispatch;
mod heartbeat;
mod identity;
mod random;
mod resolve;
mod rotation;
mod session;
mod shared;
mod slots;
mod supervise;
mod tracker;
mod worker;

pub use async_trait::async_trait;
pub use capability::{CapabilityExt, capability};
pub use config::WorkerConfig;
pub use descriptor::{Descriptor, Field, Form, Runtime, Section};
pub use detection::DetectionSender;
pub use error::Error;
pub use execution::ProgressSender;
pub use handler::{HandlerError, HandlerResult, JobFailure, JobHandler};
pub use proto;
pub use proto::pb;
pub use status::WorkerStatus;
pub use tls::TlsConfig;
pub use tokio_util::sync::CancellationToken;
pub use values::ValueError;
pub use worker::Worker;

/// Everything a handler module usually needs: `use worker_sdk::prelude::*;`.
pub mod prelude {
    pub use crate::{
        CancellationToken, CapabilityExt, Descriptor, DetectionSender, Field, Form, HandlerError, HandlerResult,
        JobHandler, ProgressSender, Runtime, Section, Worker, WorkerConfig, capability, pb, value, values,
    };
}
