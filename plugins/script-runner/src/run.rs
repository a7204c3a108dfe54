//! One run of a script: spawn it in its own process group, hand it the secrets on
//! stdin, forward its output, and end it by exit, timeout or cancel. Whatever the
//! ending, the whole process group is killed afterwards, so nothing the script started
//! outlives the run.

use std::{
    os::unix::process::ExitStatusExt,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{io::AsyncWriteExt, sync::mpsc};
use worker_sdk::CancellationToken;

use crate::{
    command::ScriptCommand,
    output::{Budget, OutputEvent, Stream, forward},
    process_group::ProcessGroup,
};

/// How long the output readers may take to finish after the group is killed (a
/// process that left the group may still hold a pipe open).
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Everything one run needs.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub command: ScriptCommand,
    /// Written to the script's stdin, which is then closed.
    pub stdin: Vec<u8>,
    pub timeout: Duration,
    pub output_limit: usize,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Exited(i32),
    /// Killed by a signal it did not get from us.
    Signaled(i32),
    TimedOut(Duration),
    Canceled,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    pub pid: u32,
    pub ending: Ending,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub forwarded_bytes: usize,
    pub truncated: bool,
    pub elapsed: Duration,
}

impl RunOutcome {
    /// The exit code decides: 0 is success, anything else is not.
    pub fn success(&self) -> bool {
        self.ending == Ending::Exited(0)
    }

    /// Why the run did not succeed, for the job's error message.
    pub fn failure(&self, name: &str) -> Option<String> {
        match self.ending {
            Ending::Exited(0) => None,
            Ending::Exited(code) => Some(format!("script {name} exited with code {code}")),
            Ending::Signaled(signal) => Some(format!("script {name} was killed by signal {signal}")),
            Ending::TimedOut(after) => {
                Some(format!("script {name} timed out after {}s; its process group was killed", after.as_secs_f64()))
            }
            Ending::Canceled => Some(format!("script {name} was canceled; its process group was killed")),
        }
    }
}

/// Runs the script to its end. `events` gets `Started`, then output lines; it may be
/// closed at any time. An error means the script could not be started.
pub async fn run(
    spec: &RunSpec,
    cancel: &CancellationToken,
    events: mpsc::Sender<OutputEvent>,
) -> std::io::Result<RunOutcome> {
    let started = Instant::now();
    let mut child = spec.command.to_command().spawn().map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot start {} in {}: {e}", spec.command.program, spec.command.work_dir.display()),
        )
    })?;
    let pid = child.id().ok_or_else(|| std::io::Error::other("the script exited before it could be watched"))?;
    // From here on, every way out (a dropped future included) kills the group.
    let group = ProcessGroup::led_by(pid);
    let _ = events.send(OutputEvent::Started { pid }).await;

    let budget = Arc::new(Budget::new(spec.output_limit));
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(forward(out, Stream::Stdout, budget.clone(), events.clone())));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(forward(err, Stream::Stderr, budget.clone(), events.clone())));
    }
    drop(events);
    let writer = child.stdin.take().map(|mut stdin| {
        let data = spec.stdin.clone();
        // A script that never reads stdin closes it early; that is not an error.
        tokio::spawn(async move {
            let _ = stdin.write_all(&data).await;
            let _ = stdin.shutdown().await;
        })
    });

    let ending = tokio::select! {
        status = child.wait() => {
            let status = status?;
            match status.code() {
                Some(code) => Ending::Exited(code),
                None => Ending::Signaled(status.signal().unwrap_or(0)),
            }
        }
        _ = tokio::time::sleep(spec.timeout) => {
            group.kill();
            let _ = child.wait().await;
            Ending::TimedOut(spec.timeout)
        }
        _ = cancel.cancelled() => {
            group.kill();
            let _ = child.wait().await;
            Ending::Canceled
        }
    };
    // Whatever the script left running goes too; then the pipes close.
    group.kill();
    if let Some(w) = writer {
        w.abort();
    }
    let aborts: Vec<_> = readers.iter().map(|r| r.abort_handle()).collect();
    let drained = tokio::time::timeout(DRAIN_GRACE, async {
        for r in readers {
            let _ = r.await;
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(pid, "a process outside the script's group kept its output open; stopped reading");
        aborts.iter().for_each(|a| a.abort());
    }
    Ok(RunOutcome {
        pid,
        ending,
        stdout_bytes: budget.written(Stream::Stdout),
        stderr_bytes: budget.written(Stream::Stderr),
        forwarded_bytes: budget.forwarded(),
        truncated: budget.truncated(),
        elapsed: started.elapsed(),
    })
}
