//! Runs one handler call as its own task and turns what happens to it (a result, an
//! error, a panic, a cancel) into one outcome, so every request gets its final reply.

use std::{future::Future, sync::Arc, time::Duration};

use crate::{HandlerResult, error::chain, tracker::Work};

/// How long a canceled handler may take to return before the SDK stops waiting for it
/// (drops its future) and reports the cancel anyway.
pub(crate) const CANCEL_GRACE: Duration = Duration::from_secs(10);

/// How a handler call ended.
#[derive(Debug)]
pub(crate) enum Outcome<T> {
    Done(T),
    Failed(String),
    Canceled(String),
    /// Canceled by this worker's own shutdown: the work did not fail, it was stopped.
    CutShort(String),
}

impl<T> Outcome<T> {
    /// The `error_message` for the final reply (empty on success).
    pub(crate) fn error_message(&self) -> String {
        match self {
            Outcome::Done(_) => String::new(),
            Outcome::Failed(message) => message.clone(),
            Outcome::Canceled(reason) | Outcome::CutShort(reason) => format!("canceled: {reason}"),
        }
    }
}

/// Awaits `call` on its own task. Once `work` is canceled the outcome is `Canceled`
/// (`CutShort` when the worker's shutdown canceled it), whatever the handler returns; a handler ignoring the cancel is aborted after
/// [`CANCEL_GRACE`] (at once for a forced cancel).
pub(crate) async fn supervise<T, F>(work: &Arc<Work>, call: F) -> Outcome<T>
where
    T: Send + 'static,
    F: Future<Output = HandlerResult<T>> + Send + 'static,
{
    let mut task = tokio::spawn(call);
    let joined = tokio::select! {
        joined = &mut task => Some(joined),
        _ = abandoned(work) => {
            task.abort();
            tracing::warn!(request_id = %work.request_id, "handler did not return after cancel; dropped it");
            None
        }
    };
    if let Some(reason) = work.cancel_reason() {
        return if work.is_cut_short() { Outcome::CutShort(reason) } else { Outcome::Canceled(reason) };
    }
    match joined {
        Some(Ok(Ok(value))) => Outcome::Done(value),
        Some(Ok(Err(error))) => Outcome::Failed(chain(&*error)),
        Some(Err(join)) if join.is_panic() => Outcome::Failed(format!("handler panicked: {}", panic_text(join))),
        Some(Err(_)) | None => Outcome::Failed("handler task was aborted".to_string()),
    }
}

async fn abandoned(work: &Work) {
    work.cancel.cancelled().await;
    tokio::select! {
        _ = tokio::time::sleep(CANCEL_GRACE) => {}
        _ = work.kill.cancelled() => {}
    }
}

fn panic_text(join: tokio::task::JoinError) -> String {
    let payload = join.into_panic();
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;

    fn work() -> Arc<Work> {
        Work::new("r", pb::WorkKind::Execution, "t", "j")
    }

    #[tokio::test]
    async fn results_errors_and_panics_become_outcomes() {
        assert!(matches!(supervise(&work(), async { Ok(5) }).await, Outcome::Done(5)));
        let failed = supervise::<(), _>(&work(), async { Err("disk full".into()) }).await;
        assert_eq!(failed.error_message(), "disk full");
        let panicked = supervise::<(), _>(&work(), async { panic!("boom") }).await;
        assert_eq!(panicked.error_message(), "handler panicked: boom");
    }

    #[tokio::test]
    async fn a_forced_cancel_drops_a_handler_that_ignores_it() {
        let w = work();
        w.cancel("operator", true);
        let outcome = supervise::<(), _>(&w, std::future::pending()).await;
        assert_eq!(outcome.error_message(), "canceled: operator");
    }

    #[tokio::test]
    async fn a_canceled_handler_that_returns_ok_is_still_reported_canceled() {
        let w = work();
        let token = w.cancel.clone();
        w.cancel("shutdown", false);
        let outcome = supervise(&w, async move {
            token.cancelled().await;
            Ok(())
        })
        .await;
        assert_eq!(outcome.error_message(), "canceled: shutdown");
    }

    #[tokio::test]
    async fn a_handler_canceled_by_the_shutdown_is_cut_short_whatever_it_returns() {
        let w = work();
        let token = w.cancel.clone();
        w.cut_short("worker is shutting down");
        let outcome = supervise::<(), _>(&w, async move {
            token.cancelled().await;
            Err("stopped".into())
        })
        .await;
        assert!(matches!(outcome, Outcome::CutShort(ref reason) if reason == "worker is shutting down"), "{outcome:?}");
    }
}
