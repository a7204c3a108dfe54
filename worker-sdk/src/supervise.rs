//! Runs one handler call and turns what happens to it (a result, an error, a panic, a
//! cancel) into one outcome, so every request gets its final reply.

use std::{
    any::Any,
    future::Future,
    panic::{AssertUnwindSafe, catch_unwind},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

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

/// Awaits `call` in the calling task. Once `work` is canceled the outcome is `Canceled`
/// (`CutShort` when the worker's shutdown canceled it), whatever the handler returns; a
/// handler ignoring the cancel is dropped after [`CANCEL_GRACE`] (at once for a forced
/// cancel). A panic in the handler is caught as a task would catch it, without the cost
/// of a task per call (a spawn, a join and a wake-up of the caller: about a tenth of
/// the benchmark's worker CPU per job).
pub(crate) async fn supervise<T, F>(work: &Arc<Work>, call: F) -> Outcome<T>
where
    T: Send + 'static,
    F: Future<Output = HandlerResult<T>> + Send + 'static,
{
    let mut call = Guarded(Some(Box::pin(call)));
    let joined = tokio::select! {
        // The handler first: a select's random order costs a random number per poll.
        biased;
        joined = &mut call => Some(joined),
        _ = abandoned(work) => None,
    };
    if joined.is_none() {
        call.drop_call();
        tracing::warn!(request_id = %work.request_id, "handler did not return after cancel; dropped it");
    }
    if let Some(reason) = work.cancel_reason() {
        return if work.is_cut_short() { Outcome::CutShort(reason) } else { Outcome::Canceled(reason) };
    }
    match joined {
        Some(Ok(Ok(value))) => Outcome::Done(value),
        Some(Ok(Err(error))) => Outcome::Failed(chain(&*error)),
        Some(Err(panicked)) => Outcome::Failed(format!("handler panicked: {panicked}")),
        // Abandoned only after a cancel, which returned above.
        None => Outcome::Failed("handler was dropped".to_string()),
    }
}

/// A handler's future, polled by the supervising task. A panic while it is polled, or
/// while it is dropped, stays here: polling yields the panic's message, and the future is
/// dropped (as a task's would be) as soon as it has ended or panicked.
struct Guarded<F>(Option<Pin<Box<F>>>);

impl<F> Guarded<F> {
    fn drop_call(&mut self) {
        if let Some(call) = self.0.take()
            && let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(call)))
        {
            tracing::error!(panic = %panic_text(&*payload), "a handler panicked while it was dropped");
        }
    }
}

impl<F> Drop for Guarded<F> {
    fn drop(&mut self) {
        self.drop_call();
    }
}

impl<F: Future> Future for Guarded<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Not polled again once it has ended: the select above takes the first outcome.
        let Some(call) = self.0.as_mut() else { return Poll::Pending };
        let ended = match catch_unwind(AssertUnwindSafe(|| call.as_mut().poll(cx))) {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(value)) => Ok(value),
            Err(payload) => Err(panic_text(&*payload)),
        };
        self.drop_call();
        Poll::Ready(ended)
    }
}

async fn abandoned(work: &Work) {
    work.cancel.cancelled().await;
    tokio::select! {
        _ = tokio::time::sleep(CANCEL_GRACE) => {}
        _ = work.kill.cancelled() => {}
    }
}

fn panic_text(payload: &(dyn Any + Send)) -> String {
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
    async fn a_panic_after_the_handler_awaited_is_caught_and_its_future_dropped() {
        let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let guard = DropFlag(dropped.clone());
        let outcome = supervise::<(), _>(&work(), async move {
            let _guard = guard;
            tokio::task::yield_now().await;
            panic!("late {}", 7);
        })
        .await;
        assert_eq!(outcome.error_message(), "handler panicked: late 7");
        assert!(dropped.load(std::sync::atomic::Ordering::SeqCst), "the panicked future was dropped");
    }

    #[tokio::test]
    async fn a_handler_that_panics_as_it_is_dropped_after_a_forced_cancel_is_reported_canceled() {
        let w = work();
        w.cancel("operator", true);
        let outcome = supervise::<(), _>(&w, async move {
            let _bomb = PanicOnDrop;
            std::future::pending::<()>().await;
            Ok(())
        })
        .await;
        assert_eq!(outcome.error_message(), "canceled: operator");
    }

    struct DropFlag(Arc<std::sync::atomic::AtomicBool>);

    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    struct PanicOnDrop;

    impl Drop for PanicOnDrop {
        fn drop(&mut self) {
            panic!("dropped");
        }
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
