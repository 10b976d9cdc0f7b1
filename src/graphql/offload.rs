//! Where document work runs: parse → limits → validate → plan of a document
//! larger than [`INLINE_BYTES`] moves to tokio's blocking pool, so a large
//! document never holds one of the runtime's async workers (which serve
//! every other socket, `/healthz` and the webhook). At most one such job
//! per CPU core runs at once; the others wait on a semaphore (cheaply, as
//! futures), so a flood of large documents cannot exhaust the blocking pool
//! either. Small documents, the common case, are prepared in place: a
//! thread hop costs more than their validation (tens of microseconds).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, OnceLock};

use tokio::sync::Semaphore;

/// Documents up to this many bytes are prepared on the calling task.
pub const INLINE_BYTES: usize = 2048;

/// The engine panicked on a document (a bug; the caller answers an
/// internal error and the process lives on).
#[derive(Debug, thiserror::Error)]
#[error("the GraphQL engine panicked preparing a document")]
pub struct EnginePanicked;

fn permits() -> &'static Arc<Semaphore> {
    static PERMITS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    PERMITS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Arc::new(Semaphore::new(cores.max(1)))
    })
}

/// Runs `work` for a document of `size` bytes: in place when small, else
/// on the blocking pool under the process-wide concurrency cap.
pub async fn run<T, F>(size: usize, work: F) -> Result<T, EnginePanicked>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    if size <= INLINE_BYTES {
        return catch_unwind(AssertUnwindSafe(work)).map_err(|_| EnginePanicked);
    }
    // The semaphore is never closed.
    let permit = permits()
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| EnginePanicked)?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        work()
    })
    .await
    .map_err(|_| EnginePanicked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn large_work_leaves_the_runtime_free() {
        // On a single-threaded runtime, a blocking job run in place would
        // starve the ticker below.
        let ticks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let t = ticks.clone();
        let ticker = tokio::spawn(async move {
            loop {
                t.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        });
        let out = run(INLINE_BYTES + 1, || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            7
        })
        .await
        .unwrap();
        assert_eq!(out, 7);
        assert!(ticks.load(std::sync::atomic::Ordering::Relaxed) >= 10);
        ticker.abort();
    }

    #[tokio::test]
    async fn a_panic_is_an_error() {
        assert!(run(10, || panic!("boom")).await.is_err());
        assert!(run(INLINE_BYTES + 1, || panic!("boom")).await.is_err());
    }
}
