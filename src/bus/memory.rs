//! The in-process bus: a broadcast channel plus a bounded history per topic
//! (for resume on a single replica) and the in-process dedup window.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use parking_lot::Mutex;

use super::dedup::{self, Dedup};
use super::feed::Feed;
use super::{Batch, Bus, BusError, BusState, BusSubscription, Cursor, Event, Published, Replay};

/// A single-replica bus.
pub struct MemoryBus {
    /// A std-style mutex, not a tokio one: nothing async happens while it is
    /// held. Holding it across history append and broadcast send is what
    /// makes the history order and the delivery order the same.
    inner: Mutex<Inner>,
    feed: Feed,
    history_len: usize,
    dedup: Option<Dedup>,
}

#[derive(Default)]
struct Inner {
    /// The sequence of the last event published (cursors are `1, 2, …`).
    seq: u64,
    history: HashMap<Arc<str>, Topic>,
}

#[derive(Default)]
struct Topic {
    /// Each event with its cursor and when it was published.
    ring: VecDeque<(Cursor, SystemTime, Arc<Event>)>,
    /// The newest event that left the ring and when it was published: a
    /// cursor or a time before it has a gap.
    trimmed: Option<(Cursor, SystemTime)>,
}

impl MemoryBus {
    /// `history` events are kept per topic (`bus.history`); no dedup.
    pub fn new(history: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            feed: Feed::new(),
            history_len: history,
            dedup: None,
        }
    }

    /// Deduplicates ids within `window` (`webhook.dedup_window`), in bounded memory.
    pub fn with_dedup(mut self, window: Duration) -> Self {
        self.dedup = Some(Dedup::new(window, dedup::DEFAULT_CAPACITY));
        self
    }

    /// The last events of `topic`, oldest first.
    pub fn history(&self, topic: &str) -> Vec<Arc<Event>> {
        self.inner
            .lock()
            .history
            .get(topic)
            .map(|h| h.ring.iter().map(|(_, _, e)| e.clone()).collect())
            .unwrap_or_default()
    }
}

impl Bus for MemoryBus {
    fn publish_batch(&self, batch: Batch) -> BoxFuture<'_, Result<Published, BusError>> {
        // Synchronous: the write cannot outlive the deadline.
        let Batch {
            request, events, ..
        } = batch;
        let duplicate = match &self.dedup {
            Some(d) if request.is_some_and(|r| d.contains(&r.0)) => vec![true; events.len()],
            Some(d) => {
                let ids: Vec<_> = events.iter().map(|e| e.id.clone()).collect();
                let fresh = d.reserve(&ids);
                if let Some(r) = request {
                    d.reserve_keys(&[Some(r.0)]);
                }
                fresh.into_iter().map(|fresh| !fresh).collect()
            }
            None => vec![false; events.len()],
        };
        let now = SystemTime::now();
        let mut inner = self.inner.lock();
        for (event, dup) in events.into_iter().zip(&duplicate) {
            if *dup {
                continue;
            }
            inner.seq += 1;
            let cursor = Cursor::seq(inner.seq);
            let event = Arc::new(event);
            let topic = inner.history.entry(event.topic.clone()).or_default();
            if self.history_len == 0 {
                topic.trimmed = Some((cursor, now));
            } else {
                if topic.ring.len() == self.history_len {
                    topic.trimmed = topic.ring.pop_front().map(|(c, t, _)| (c, t));
                }
                topic.ring.push_back((cursor, now, event.clone()));
            }
            self.feed.send(event, cursor);
        }
        drop(inner);
        Box::pin(std::future::ready(Ok(Published { duplicate })))
    }

    fn subscribe(&self) -> Box<dyn BusSubscription> {
        self.feed.subscribe()
    }

    fn replay(
        &self,
        topic: Arc<str>,
        after: Cursor,
    ) -> BoxFuture<'static, Result<Replay, BusError>> {
        let inner = self.inner.lock();
        let replay = match inner.history.get(&topic) {
            None => Replay::Events(Vec::new()),
            Some(t) if t.trimmed.is_some_and(|(c, _)| c > after) => Replay::Expired,
            Some(t) => Replay::Events(
                t.ring
                    .iter()
                    .filter(|(c, _, _)| *c > after)
                    .map(|(c, _, e)| (*c, e.clone()))
                    .collect(),
            ),
        };
        drop(inner);
        Box::pin(std::future::ready(Ok(replay)))
    }

    fn replay_since(
        &self,
        topic: Arc<str>,
        since: SystemTime,
    ) -> BoxFuture<'static, Result<Replay, BusError>> {
        let inner = self.inner.lock();
        let replay = match inner.history.get(&topic) {
            None => Replay::Events(Vec::new()),
            // An event published at or after `since` left the ring.
            Some(t) if t.trimmed.is_some_and(|(_, at)| at >= since) => Replay::TooOld {
                oldest: t.ring.front().map(|(_, at, _)| *at),
            },
            Some(t) => Replay::Events(
                t.ring
                    .iter()
                    .filter(|(_, at, _)| *at >= since)
                    .map(|(c, _, e)| (*c, e.clone()))
                    .collect(),
            ),
        };
        drop(inner);
        Box::pin(std::future::ready(Ok(replay)))
    }

    fn state(&self) -> BusState {
        BusState::Connected
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::BusItem;
    use crate::bus::feed::CAPACITY as CHANNEL_CAPACITY;
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
                Some(BusItem::Event(e, c)) => {
                    assert_eq!(e.payload, json!(n));
                    assert_eq!(c, Cursor::seq(n + 1));
                }
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

    fn payloads(r: Replay) -> Vec<serde_json::Value> {
        match r {
            Replay::Events(v) => v.iter().map(|(_, e)| e.payload.clone()).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn replay_since_serves_the_events_from_a_time_and_says_when_the_ring_lost_some() {
        let bus = MemoryBus::new(2);
        let t0 = SystemTime::now();
        bus.publish(vec![event("a", 0)]).await.unwrap();
        std::thread::sleep(Duration::from_millis(2));
        let t1 = SystemTime::now();
        bus.publish(vec![event("a", 1), event("b", 9)])
            .await
            .unwrap();
        let since = |t| bus.replay_since("a".into(), t);
        assert_eq!(payloads(since(t0).await.unwrap()), vec![json!(0), json!(1)]);
        assert_eq!(payloads(since(t1).await.unwrap()), vec![json!(1)]);
        let later = SystemTime::now() + Duration::from_secs(1);
        assert_eq!(
            payloads(since(later).await.unwrap()),
            Vec::<serde_json::Value>::new()
        );
        assert!(payloads(bus.replay_since("none".into(), t0).await.unwrap()).is_empty());
        // 0 leaves the ring: from t0 there is a gap, from t1 there is none.
        bus.publish(vec![event("a", 2)]).await.unwrap();
        match since(t0).await.unwrap() {
            Replay::TooOld {
                oldest: Some(oldest),
            } => assert!(oldest >= t1),
            other => panic!("{other:?}"),
        }
        assert_eq!(payloads(since(t1).await.unwrap()), vec![json!(1), json!(2)]);
    }

    #[tokio::test]
    async fn replay_serves_the_ring_and_says_when_it_no_longer_reaches_back() {
        let bus = MemoryBus::new(3);
        bus.publish(
            (0..5)
                .map(|n| event(if n % 2 == 0 { "a" } else { "b" }, n))
                .collect(),
        )
        .await
        .unwrap();
        // a: 0 (seq 1), 2 (seq 3), 4 (seq 5); b: 1 (seq 2), 3 (seq 4).
        assert_eq!(
            payloads(bus.replay("a".into(), Cursor::seq(1)).await.unwrap()),
            vec![json!(2), json!(4)]
        );
        assert_eq!(
            payloads(bus.replay("b".into(), Cursor::seq(0)).await.unwrap()),
            vec![json!(1), json!(3)]
        );
        assert!(payloads(bus.replay("none".into(), Cursor::seq(0)).await.unwrap()).is_empty());
        bus.publish(vec![event("a", 6)]).await.unwrap(); // seq 6 trims seq 1
        assert!(matches!(
            bus.replay("a".into(), Cursor::seq(0)).await.unwrap(),
            Replay::Expired
        ));
        assert_eq!(
            payloads(bus.replay("a".into(), Cursor::seq(1)).await.unwrap()),
            vec![json!(2), json!(4), json!(6)]
        );
        let bus = MemoryBus::new(0);
        bus.publish(vec![event("a", 1)]).await.unwrap();
        assert!(matches!(
            bus.replay("a".into(), Cursor::seq(0)).await.unwrap(),
            Replay::Expired
        ));
        assert!(payloads(bus.replay("a".into(), Cursor::seq(1)).await.unwrap()).is_empty());
    }

    #[tokio::test]
    async fn dedup_skips_ids_seen_in_the_window() {
        let bus = MemoryBus::new(10).with_dedup(Duration::from_secs(60));
        let mut sub = bus.subscribe();
        let with_id = |id: &str, n| Event {
            id: Some(id.into()),
            ..event("t", n)
        };
        let p = bus
            .publish(vec![with_id("x", 1), with_id("y", 2), with_id("x", 3)])
            .await
            .unwrap();
        assert_eq!(p.duplicate, vec![false, false, true]);
        let p = bus
            .publish(vec![with_id("y", 4), event("t", 5)])
            .await
            .unwrap();
        assert_eq!(p.duplicate, vec![true, false]);
        let mut got = Vec::new();
        while let Some(BusItem::Event(e, _)) = sub.try_recv() {
            got.push(e.payload.clone());
        }
        assert_eq!(got, vec![json!(1), json!(2), json!(5)]);
    }

    #[tokio::test]
    async fn a_request_id_seen_before_makes_every_event_a_duplicate() {
        let bus = MemoryBus::new(10).with_dedup(Duration::from_secs(60));
        let mut sub = bus.subscribe();
        let batch = |events| Batch {
            request: Some(crate::bus::RequestKey::of("req-1")),
            ..Batch::new(events)
        };
        let p = bus
            .publish_batch(batch(vec![event("t", 1), event("t", 2)]))
            .await
            .unwrap();
        assert_eq!(p.duplicate, vec![false, false]);
        let p = bus
            .publish_batch(batch(vec![event("t", 3), event("t", 4), event("t", 5)]))
            .await
            .unwrap();
        assert_eq!(p.duplicate, vec![true, true, true]);
        let mut got = Vec::new();
        while let Some(BusItem::Event(e, _)) = sub.try_recv() {
            got.push(e.payload.clone());
        }
        assert_eq!(got, vec![json!(1), json!(2)]);
    }

    #[tokio::test]
    async fn lag_is_reported() {
        let bus = MemoryBus::new(0);
        let mut sub = bus.subscribe();
        let n = CHANNEL_CAPACITY as u64 + 5;
        bus.publish((0..n).map(|n| event("t", n)).collect())
            .await
            .unwrap();
        assert!(matches!(
            sub.recv().await,
            Some(BusItem::Lagged {
                missed: 5,
                topic: None
            })
        ));
    }
}
