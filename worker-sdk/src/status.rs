//! What the worker is doing right now, published on a watch channel
//! ([`Worker::status`](crate::Worker::status)) for health checks, logs and tests.

use std::time::Duration;

/// The worker's connection state.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerStatus {
    /// `run` has not dialed yet.
    Starting,
    /// Dialing the admin and waiting for its hello.
    Connecting { attempt: u32 },
    /// The admin accepted the hello; work flows.
    Connected { heartbeat_interval: Duration },
    /// The last attempt failed or the stream dropped; the next attempt follows after
    /// `retry_in` (zero when the worker moves on to its next admin address at once).
    /// `failures` counts attempts since the last accepted session.
    Disconnected { error: String, retry_in: Duration, failures: u32 },
    /// Shutting down: no new work, waiting for running work.
    Draining,
    /// `run` returned; `error` is set when it returned an error.
    Stopped { error: Option<String> },
}
