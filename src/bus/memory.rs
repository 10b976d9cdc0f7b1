//! The in-process bus: a broadcast channel plus a bounded history per topic.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};

use super::{Bus, BusError, BusItem, BusState, BusSubscription, Event};

/// Events buffered for a slow subscriber before it is told it lagged.
const CHANNEL_CAPACITY: usize = 64 * 1024;

/// A single-replica bus.
pub struct MemoryBus {
    /// A std-style mutex, not a tokio one: nothing async happens while it is
    /// held. Holding it across history append and broadcast send is what
    /// makes the history order and the delivery order the same.
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<Event>>,
    history_len: usize,
}

struct Inner {
    history: HashMap<Arc<str>, VecDeque<Arc<Event>>>,
}

impl MemoryBus {
    /// `history` events are kept per topic (`bus.history`).
    pub fn new(history: usize) -> Self {
        let (tx, _) = broadcast::channel(CHANNEL_CAPACITY);
        Self {
            inner: Mutex::new(Inner {
                history: HashMap::new(),
            }),
            tx,
            history_len: history,
        }
    }

    /// The last events of `topic`, oldest first.
    pub fn history(&self, topic: &str) -> Vec<Arc<Event>> {
        self.inner
            .lock()
            .history
            .get(topic)
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default()
    }
}

impl Bus for MemoryBus {
    fn publish(&self, events: Vec<Event>) -> BoxFuture<'_, Result<(), BusError>> {
        let mut inner = self.inner.lock();
        for event in events {
            let event = Arc::new(event);
            if self.history_len > 0 {
                let h = inner.history.entry(event.topic.clone()).or_default();
                if h.len() == self.history_len {
                    h.pop_front();
                }
                h.push_back(event.clone());
            }
            // No receiver is not an error: nobody subscribed yet.
            let _ = self.tx.send(event);
        }
        drop(inner);
        Box::pin(std::future::ready(Ok(())))
    }

    fn subscribe(&self) -> Box<dyn BusSubscription> {
        Box::new(MemorySubscription {
            rx: self.tx.subscribe(),
        })
    }

    fn state(&self) -> BusState {
        BusState::Connected
    }
}

struct MemorySubscription {
    rx: broadcast::Receiver<Arc<Event>>,
}

impl BusSubscription for MemorySubscription {
    fn recv(&mut self) -> BoxFuture<'_, Option<BusItem>> {
        Box::pin(async move {
            match self.rx.recv().await {
                Ok(e) => Some(BusItem::Event(e)),
                Err(RecvError::Lagged(n)) => Some(BusItem::Lagged(n)),
                Err(RecvError::Closed) => None,
            }
        })
    }

    fn try_recv(&mut self) -> Option<BusItem> {
        match self.rx.try_recv() {
            Ok(e) => Some(BusItem::Event(e)),
            Err(TryRecvError::Lagged(n)) => Some(BusItem::Lagged(n)),
            Err(TryRecvError::Empty | TryRecvError::Closed) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(topic: &str, n: u64) -> Event {
        Event {
            topic: topic.into(),
            id: None,
            payload: json!(n),
        }
    }

    #[tokio::test]
    async fn delivers_in_publish_order() {
        let bus = MemoryBus::new(10);
        let mut sub = bus.subscribe();
        bus.publish((0..100).map(|n| event("t", n)).collect())
            .await
            .unwrap();
        for n in 0..100 {
            match sub.recv().await {
                Some(BusItem::Event(e)) => assert_eq!(e.payload, json!(n)),
                other => panic!("{other:?}"),
            }
        }
        assert!(sub.try_recv().is_none());
    }

    #[tokio::test]
    async fn history_is_bounded_per_topic() {
        let bus = MemoryBus::new(3);
        bus.publish((0..5).map(|n| event("a", n)).collect())
            .await
            .unwrap();
        bus.publish(vec![event("b", 9)]).await.unwrap();
        let h: Vec<_> = bus.history("a").iter().map(|e| e.payload.clone()).collect();
        assert_eq!(h, vec![json!(2), json!(3), json!(4)]);
        assert_eq!(bus.history("b").len(), 1);
    }

    #[tokio::test]
    async fn lag_is_reported() {
        let bus = MemoryBus::new(0);
        let mut sub = bus.subscribe();
        let n = CHANNEL_CAPACITY as u64 + 5;
        bus.publish((0..n).map(|n| event("t", n)).collect())
            .await
            .unwrap();
        assert!(matches!(sub.recv().await, Some(BusItem::Lagged(5))));
    }
}
