//! Running user code (hooks) so that a panic or a hang fails one operation, not the server.

use std::any::Any;
use std::future::Future;
use std::time::Duration;

/// Why a hook gave no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HookFailure {
    Panicked(String),
    TimedOut(Duration),
}

impl std::fmt::Display for HookFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HookFailure::Panicked(message) => write!(f, "it panicked: {message}"),
            HookFailure::TimedOut(limit) => write!(f, "it did not return within {limit:?}"),
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// Runs a synchronous hook on tokio's blocking pool, so that a hook that blocks does
/// not stall the connections served by the async workers. A panic is caught; a hook
/// still running after `limit` is abandoned (its thread finishes on its own) and the
/// operation fails.
pub(crate) async fn run_hook<R, F>(
    name: &'static str,
    limit: Duration,
    hook: F,
) -> Result<R, HookFailure>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    settle(name, limit, tokio::task::spawn_blocking(hook)).await
}

/// Runs an asynchronous hook (the authorization middleware) in a task of its own, so
/// that a panic in it is caught; one still running after `limit` is aborted.
pub(crate) async fn run_async_hook<R, F>(
    name: &'static str,
    limit: Duration,
    hook: F,
) -> Result<R, HookFailure>
where
    F: Future<Output = R> + Send + 'static,
    R: Send + 'static,
{
    let task = tokio::spawn(hook);
    let abort = task.abort_handle();
    let outcome = settle(name, limit, task).await;
    abort.abort();
    outcome
}

/// Waits for a hook's task within `limit` and logs a failure.
async fn settle<R>(
    name: &'static str,
    limit: Duration,
    task: tokio::task::JoinHandle<R>,
) -> Result<R, HookFailure> {
    let started = std::time::Instant::now();
    let outcome = tokio::time::timeout(limit, task).await;
    crate::metrics::hook_ran(name, started.elapsed());
    let failure = match outcome {
        Ok(Ok(value)) => return Ok(value),
        Ok(Err(join_error)) => match join_error.try_into_panic() {
            Ok(payload) => HookFailure::Panicked(panic_message(payload.as_ref())),
            Err(_) => HookFailure::Panicked("the runtime is shutting down".to_owned()),
        },
        Err(_) => HookFailure::TimedOut(limit),
    };
    tracing::error!(hook = name, "hook failed: {failure}");
    Err(failure)
}
