//! The in-process fan-out from a backend's reader to its subscribers: a
//! broadcast channel that reports lag instead of blocking the reader.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};

use super::{BusItem, BusSubscription, Cursor, Event};

/// Events buffered for a slow subscriber before it is told it lagged.
pub(crate) const CAPACITY: usize = 64 * 1024;

pub(crate) struct Feed {
    tx: broadcast::Sender<Item>,
}

#[derive(Clone)]
enum Item {
    Event(Arc<Event>, Cursor),
    /// The backend's reader knows events were lost before it read them.
    Lagged(u64, Option<Arc<str>>),
}

impl Feed {
    pub(crate) fn new() -> Self {
        Self {
            tx: broadcast::channel(CAPACITY).0,
        }
    }

    pub(crate) fn send(&self, event: Arc<Event>, cursor: Cursor) {
        // No receiver is not an error: nobody subscribed yet.
        let _ = self.tx.send(Item::Event(event, cursor));
    }

    /// Tells every subscriber that `n` events (0: an unknown number) of
    /// `topic` (`None`: of any) were lost upstream of it.
    pub(crate) fn lagged(&self, n: u64, topic: Option<Arc<str>>) {
        let _ = self.tx.send(Item::Lagged(n, topic));
    }

    pub(crate) fn subscribe(&self) -> Box<dyn BusSubscription> {
        Box::new(FeedSubscription {
            rx: self.tx.subscribe(),
        })
    }
}

struct FeedSubscription {
    rx: broadcast::Receiver<Item>,
}

impl From<Item> for BusItem {
    fn from(item: Item) -> Self {
        match item {
            Item::Event(e, c) => BusItem::Event(e, c),
            Item::Lagged(missed, topic) => BusItem::Lagged { missed, topic },
        }
    }
}

impl BusSubscription for FeedSubscription {
    fn recv(&mut self) -> BoxFuture<'_, Option<BusItem>> {
        Box::pin(async move {
            match self.rx.recv().await {
                Ok(item) => Some(item.into()),
                Err(RecvError::Lagged(n)) => Some(BusItem::Lagged {
                    missed: n,
                    topic: None,
                }),
                Err(RecvError::Closed) => None,
            }
        })
    }

    fn try_recv(&mut self) -> Option<BusItem> {
        match self.rx.try_recv() {
            Ok(item) => Some(item.into()),
            Err(TryRecvError::Lagged(n)) => Some(BusItem::Lagged {
                missed: n,
                topic: None,
            }),
            Err(TryRecvError::Empty | TryRecvError::Closed) => None,
        }
    }
}
