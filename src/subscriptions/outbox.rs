//! A connection's bounded queue of outgoing frames, as the dispatcher sees
//! it ([`Outbox`]) and as the connection's session drains it ([`Inbox`]).
//!
//! The dispatcher only ever `try_send`s: a full queue marks the connection
//! as a slow consumer (the session closes it) and never makes the
//! dispatcher, or any other connection, wait.

use bytes::Bytes;

use crate::bus::Cursor;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_util::sync::CancellationToken;

/// One `next` frame for one subscription of the connection.
#[derive(Debug)]
pub struct Delivery {
    /// The connection-local serial of the subscription, so that frames
    /// queued before a client `complete` can be dropped by the session.
    pub serial: u64,
    /// `{"id":…,"type":"next","payload":…}`, valid UTF-8 JSON.
    pub frame: Bytes,
    /// The event's cursor, for subscriptions that resume (and only them).
    pub cursor: Option<Cursor>,
}

/// The dispatcher's side of a connection's queue; cheap to clone.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Delivery>,
    slow: CancellationToken,
}

/// The session's side.
#[derive(Debug)]
pub struct Inbox {
    pub rx: mpsc::Receiver<Delivery>,
    /// Cancelled when the queue overflowed: the session closes the socket.
    pub slow: CancellationToken,
}

/// What happened to one frame offered to an outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    Queued,
    /// The queue was full: this connection just became a slow consumer.
    Overflowed,
    /// Already marked slow, or the session is gone; the frame is dropped.
    Dropped,
}

/// A queue holding at most `capacity` frames.
pub fn outbox(capacity: usize) -> (Outbox, Inbox) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let slow = CancellationToken::new();
    (
        Outbox {
            tx,
            slow: slow.clone(),
        },
        Inbox { rx, slow },
    )
}

impl Outbox {
    /// Queues a frame without waiting.
    pub fn offer(&self, delivery: Delivery) -> Offer {
        match self.tx.try_send(delivery) {
            Ok(()) => Offer::Queued,
            Err(TrySendError::Full(_)) if !self.slow.is_cancelled() => {
                self.slow.cancel();
                Offer::Overflowed
            }
            Err(_) => Offer::Dropped,
        }
    }
}
