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
