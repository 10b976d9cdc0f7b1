//! [`Latch`]: a one-way flag that wakes the one task waiting on it (a
//! connection's "close now" and "slow consumer" marks). A connection's
//! session polls its latches on every wake-up; a `CancellationToken` would
//! take its node's lock and re-register a `Notified` each time, this is an
//! atomic load.

use std::future::{Future, poll_fn};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

/// Raised once, never lowered. Clones share the flag. Only one task may
/// wait on it at a time (the last one to poll is the one woken).
#[derive(Debug, Clone, Default)]
pub struct Latch(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    raised: AtomicBool,
    waiter: AtomicWaker,
}

impl Latch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Raises the flag; true for the call that raised it first.
    pub fn raise(&self) -> bool {
        let first = !self.0.raised.swap(true, Ordering::AcqRel);
        if first {
            self.0.waiter.wake();
        }
        first
    }

    pub fn is_raised(&self) -> bool {
        self.0.raised.load(Ordering::Acquire)
    }

    /// Resolves once the flag is raised. Cancel-safe.
    pub fn raised(&self) -> impl Future<Output = ()> + '_ {
        poll_fn(|cx| self.poll_raised(cx))
    }

    /// [`Self::raised`] as a poll, for hand-written futures.
    pub fn poll_raised(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.is_raised() {
            return Poll::Ready(());
        }
        self.0.waiter.register(cx.waker());
        // Raised between the check and the registration: the wake went
        // to the previous waker, so look again.
        if self.is_raised() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_waiting_task_wakes_when_raised() {
        let latch = Latch::new();
        let waiting = tokio::spawn({
            let latch = latch.clone();
            async move { latch.raised().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        latch.raise();
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("woken")
            .unwrap();
    }

    #[tokio::test]
    async fn raised_before_waiting_resolves_at_once() {
        let latch = Latch::new();
        assert!(latch.raise(), "the first raise");
        assert!(!latch.raise(), "raised already");
        assert!(latch.is_raised());
        latch.raised().await;
        assert!(latch.clone().is_raised(), "clones share the flag");
    }
}
