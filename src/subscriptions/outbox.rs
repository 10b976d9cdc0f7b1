//! A connection's bounded queue of outgoing payloads, as the dispatcher sees
//! it ([`Outbox`]) and as the connection's session drains it ([`Inbox`]).
//!
//! The dispatcher only ever offers: a full queue marks the connection as a
//! slow consumer (the session closes it) and never makes the dispatcher, or
//! any other connection, wait.
//!
//! Not a tokio mpsc channel: fan-out pushes one frame per subscriber per
//! event, and a short mutex-guarded `VecDeque` push costs a fraction of a
//! channel send; the session takes everything queued at once by swapping
//! the deque out, and is woken only when the queue goes from empty to not.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use parking_lot::Mutex;

use super::latch::Latch;
use crate::bus::Cursor;

/// One event's execution result for one subscription of the connection.
#[derive(Debug)]
pub struct Delivery {
    /// The connection-local serial of the subscription, so that payloads
    /// queued before a client `complete` can be dropped.
    pub serial: u64,
    /// The execution result (`{"data":…}`), valid UTF-8 JSON, shared by
    /// every member of the group: the transport frames it in its own
    /// envelope.
    pub payload: Bytes,
    /// The event's cursor, for subscriptions that resume (and only them).
    pub cursor: Option<Cursor>,
    /// Set on the last delivery of a subscription the server ends (its
    /// payload is empty): the session ends it with this reason, after
    /// everything queued before it.
    pub end: Option<Box<Ended>>,
}

/// Why the server ends one subscription; its session says it as a coded
/// error in the transport's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// Its field is gone, or its document no longer validates against the
    /// schema (the first validation error).
    SchemaChanged(Arc<str>),
    /// Events it should have received are gone (the bus history moved past
    /// them): the cursor of the last event queued for it, if any.
    EventsLost(Option<Cursor>),
    /// A changed `allow` now refuses it.
    Forbidden,
}

impl Delivery {
    /// The marker that ends subscription `serial` for `why`.
    pub fn end(serial: u64, why: Ended) -> Self {
        Self {
            serial,
            payload: Bytes::new(),
            cursor: None,
            end: Some(Box::new(why)),
        }
    }
}

#[derive(Debug)]
struct Queue {
    /// A std-style mutex: held only for a push or a swap, never across an await.
    items: Mutex<VecDeque<Delivery>>,
    /// Frames offered and not yet taken by the session (queued here or in
    /// the session's local batch): what the capacity bounds.
    pending: AtomicUsize,
    capacity: usize,
    /// The session, when it waits for a frame.
    ready: AtomicWaker,
    /// Set when the session is gone: offers are dropped.
    closed: AtomicBool,
}

/// The dispatcher's side of a connection's queue; cheap to clone.
#[derive(Debug, Clone)]
pub struct Outbox {
    queue: Arc<Queue>,
    slow: Latch,
}

/// The connection's side (its [`crate::subscriptions::operation::Operations`]).
#[derive(Debug)]
pub struct Inbox {
    pub rx: Receiver,
    /// Raised when the queue overflowed: the session closes the socket.
    pub slow: Latch,
}

/// Takes frames in the order they were offered.
#[derive(Debug)]
pub struct Receiver {
    queue: Arc<Queue>,
    /// The batch taken from the shared queue by the last swap.
    local: VecDeque<Delivery>,
}

/// No frame is waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no frame queued")]
pub struct Empty;

/// What happened to one frame offered to an outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    Queued,
    /// The queue was full: this connection just became a slow consumer.
    Overflowed,
    /// Already marked slow, or the session is gone; the frame is dropped.
    Dropped,
}

/// Past this many slots, an emptied batch buffer is released, so that a
/// connection idle after a burst goes back to costing almost nothing.
const KEEP_CAPACITY: usize = 64;

/// A queue holding at most `capacity` frames.
pub fn outbox(capacity: usize) -> (Outbox, Inbox) {
    let queue = Arc::new(Queue {
        items: Mutex::new(VecDeque::new()),
        pending: AtomicUsize::new(0),
        capacity: capacity.max(1),
        ready: AtomicWaker::new(),
        closed: AtomicBool::new(false),
    });
    let slow = Latch::new();
    (
        Outbox {
            queue: queue.clone(),
            slow: slow.clone(),
        },
        Inbox {
            rx: Receiver {
                queue,
                local: VecDeque::new(),
            },
            slow,
        },
    )
}

impl Outbox {
    /// Payloads offered and not yet taken by the connection.
    pub fn depth(&self) -> usize {
        self.queue.pending.load(Ordering::Relaxed)
    }

    /// Queues a frame without waiting.
    pub fn offer(&self, delivery: Delivery) -> Offer {
        self.offer_all(1, std::iter::once(delivery))
    }

    /// Queues the marker that ends a subscription, past the capacity if
    /// need be (one frame): a full queue must not turn a subscription's
    /// end into a slow-consumer close. Dropped when the session is gone or
    /// already marked slow (it closes then anyway).
    pub fn offer_end(&self, serial: u64, why: Ended) -> Offer {
        let q = &*self.queue;
        if q.closed.load(Ordering::Relaxed) || self.slow.is_raised() {
            return Offer::Dropped;
        }
        q.pending.fetch_add(1, Ordering::AcqRel);
        let was_empty = {
            let mut items = q.items.lock();
            items.push_back(Delivery::end(serial, why));
            items.len() == 1
        };
        if was_empty {
            q.ready.wake();
        }
        Offer::Queued
    }

    /// Queues `n` frames, in order, without waiting: all of them, or none
    /// when they do not all fit (the connection is then a slow consumer).
    /// `frames` is only consumed when they fit.
    pub fn offer_all(&self, n: usize, frames: impl IntoIterator<Item = Delivery>) -> Offer {
        let q = &*self.queue;
        if q.closed.load(Ordering::Relaxed) || self.slow.is_raised() {
            return Offer::Dropped;
        }
        if q.pending.fetch_add(n, Ordering::AcqRel) + n > q.capacity {
            q.pending.fetch_sub(n, Ordering::AcqRel);
            // Offers racing on a full queue: only the first is the overflow.
            return if self.slow.raise() {
                Offer::Overflowed
            } else {
                Offer::Dropped
            };
        }
        let was_empty = {
            let mut items = q.items.lock();
            let before = items.len();
            items.extend(frames);
            before == 0
        };
        if was_empty {
            q.ready.wake();
        }
        Offer::Queued
    }
}

impl Receiver {
    /// The next frame, waiting for one. Cancel-safe: a frame is only taken
    /// when this returns it. The session holds an [`Outbox`] of its own, so
    /// the queue never ends while it runs.
    pub async fn recv(&mut self) -> Option<Delivery> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// [`Self::recv`] as a poll, for hand-written futures.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        if let Some(d) = self.take() {
            return Poll::Ready(Some(d));
        }
        self.queue.ready.register(cx.waker());
        // Offered between the look and the registration: that offer
        // woke the previous waker, so look again.
        match self.take() {
            Some(d) => Poll::Ready(Some(d)),
            None => Poll::Pending,
        }
    }

    /// A frame already queued, without waiting.
    pub fn try_recv(&mut self) -> Result<Delivery, Empty> {
        self.take().ok_or(Empty)
    }

    fn take(&mut self) -> Option<Delivery> {
        if self.local.is_empty() {
            if self.local.capacity() > KEEP_CAPACITY {
                self.local = VecDeque::new();
            }
            std::mem::swap(&mut *self.queue.items.lock(), &mut self.local);
        }
        let d = self.local.pop_front()?;
        self.queue.pending.fetch_sub(1, Ordering::AcqRel);
        Some(d)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.queue.closed.store(true, Ordering::Relaxed);
        // Frees what was queued for the gone session now, not when the last
        // subscription's outbox clone goes.
        self.queue.items.lock().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(serial: u64) -> Delivery {
        Delivery {
            serial,
            payload: Bytes::from_static(b"{}"),
            cursor: None,
            end: None,
        }
    }

    #[tokio::test]
    async fn keeps_order_bounds_and_marks_the_slow_consumer_once() {
        let (out, mut inbox) = outbox(3);
        for i in 0..3 {
            assert_eq!(out.offer(d(i)), Offer::Queued);
        }
        assert_eq!(inbox.rx.recv().await.unwrap().serial, 0);
        // One taken: one slot free, counting the session's local batch.
        assert_eq!(out.offer(d(3)), Offer::Queued);
        assert_eq!(out.offer(d(4)), Offer::Overflowed);
        assert!(inbox.slow.is_raised());
        assert_eq!(out.offer(d(5)), Offer::Dropped);
        let got: Vec<u64> = std::iter::from_fn(|| inbox.rx.try_recv().ok())
            .map(|d| d.serial)
            .collect();
        assert_eq!(got, vec![1, 2, 3]);
        assert_eq!(inbox.rx.try_recv().unwrap_err(), Empty);
    }

    #[tokio::test]
    async fn a_run_is_queued_whole_or_not_at_all() {
        let (out, mut inbox) = outbox(4);
        assert_eq!(out.offer_all(3, (0..3).map(d)), Offer::Queued);
        assert_eq!(out.offer_all(2, (3..5).map(d)), Offer::Overflowed);
        assert!(inbox.slow.is_raised());
        let got: Vec<u64> = std::iter::from_fn(|| inbox.rx.try_recv().ok())
            .map(|d| d.serial)
            .collect();
        assert_eq!(got, vec![0, 1, 2]);
    }

    #[tokio::test]
    async fn an_end_marker_fits_a_full_queue_and_comes_after_what_was_queued() {
        let (out, mut inbox) = outbox(2);
        assert_eq!(out.offer_all(2, (0..2).map(d)), Offer::Queued);
        assert_eq!(out.offer_end(1, Ended::Forbidden), Offer::Queued);
        assert!(!inbox.slow.is_raised());
        let got: Vec<(u64, Option<Ended>)> = std::iter::from_fn(|| inbox.rx.try_recv().ok())
            .map(|d| (d.serial, d.end.map(|e| *e)))
            .collect();
        assert_eq!(got, vec![(0, None), (1, None), (1, Some(Ended::Forbidden))]);
    }

    #[tokio::test]
    async fn a_waiting_session_is_woken_and_a_gone_one_drops_offers() {
        let (out, mut inbox) = outbox(8);
        let waiter = tokio::spawn(async move {
            let first = inbox.rx.recv().await.unwrap().serial;
            (first, inbox)
        });
        tokio::task::yield_now().await;
        assert_eq!(out.offer(d(7)), Offer::Queued);
        let (first, inbox) = waiter.await.unwrap();
        assert_eq!(first, 7);
        drop(inbox);
        assert_eq!(out.offer(d(8)), Offer::Dropped);
    }
}
