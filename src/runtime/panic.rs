//! Panics: a task of a core that panics (a bug) must not leave the core half-alive (a core
//! without its timer ends no lease; one without a connection's writer never answers it), so
//! every task of a core is spawned with [`spawn_vital`], which ends the process when it
//! panics: a supervisor restarts the server, and the log keeps what it held. [`catch_unwind`]
//! turns a panic inside a future into a value the caller decides about.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::log::Level;

/// Exit status of a process ended by a bug (`EX_SOFTWARE`).
pub const EXIT_BUG: i32 = 70;

pin_project_lite::pin_project! {
    /// [`catch_unwind`]'s future.
    pub struct CatchUnwind<F> {
        #[pin]
        f: F,
    }
}

/// Runs `f`, turning a panic inside it into an `Err`. `f` is held in place, neither boxed nor
/// moved into an `async fn` (which keeps room for its argument besides the future it pins): a
/// connection's two tasks are polled at every read and write, and each cache line more they
/// span cost misses when many pipeline at once (BENCHMARKS.md, "In memory, before and after").
pub fn catch_unwind<F: Future>(f: F) -> CatchUnwind<F> {
    CatchUnwind { f }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let f = self.project().f;
        match std::panic::catch_unwind(AssertUnwindSafe(|| f.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

/// A panic's message, if it has one.
pub fn message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message")
}

/// Logs that `what` on core `core` panicked, and ends the process with [`EXIT_BUG`], so that
/// a supervisor restarts the whole server rather than leave it serving without that task.
pub fn die(core: usize, what: &str, panic: &(dyn Any + Send)) -> ! {
    crate::log!(
        Level::Error,
        "core {core}: {what} panicked ({}); exiting so that a supervisor restarts the server",
        message(panic)
    );
    std::process::exit(EXIT_BUG)
}

/// Spawns one of a core's tasks on its runtime: if it panics, the process ends. The handle
/// says when it is done.
pub fn spawn_vital(
    core: usize,
    what: &'static str,
    task: impl Future<Output = ()> + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio_uring::spawn(Vital { core, what, task: catch_unwind(task) })
}

pin_project_lite::pin_project! {
    /// [`spawn_vital`]'s task: its future, and what to say if it panics.
    struct Vital<F> {
        core: usize,
        what: &'static str,
        #[pin]
        task: CatchUnwind<F>,
    }
}

impl<F: Future<Output = ()>> Future for Vital<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        match this.task.poll(cx) {
            Poll::Ready(Err(panic)) => die(*this.core, this.what, &*panic),
            Poll::Ready(Ok(())) => Poll::Ready(()),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_in_a_connection_is_caught_and_the_loop_goes_on() {
        // `catch_unwind` itself: the panic becomes a value, and the runtime goes on (what the
        // caller then does with it, `spawn_vital` decides: it ends the process).
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let caught = rt.block_on(catch_unwind(async {
            tokio::task::yield_now().await;
            panic!("a bug");
        }));
        assert_eq!(caught.map_err(|p| message(&*p).to_owned()), Err("a bug".to_owned()));
        assert_eq!(rt.block_on(catch_unwind(async { 7 })).ok(), Some(7));
    }
}
