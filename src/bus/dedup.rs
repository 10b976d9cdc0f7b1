//! Event-id deduplication within `webhook.dedup_window`, in bounded memory,
//! for the memory bus (the shared buses deduplicate in the backend).
//!
//! Ids are reserved before publishing and released again when the publish
//! fails, so a retried request after a `503` is delivered, while a
//! concurrent duplicate of an in-flight request is not.
//!
//! Ids are kept as 16-byte digests, never as the strings posted: what an
//! id costs here does not depend on its length.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// Most ids remembered at once. Past it the oldest are forgotten early:
/// memory stays bounded whatever the event rate times the window is.
pub const DEFAULT_CAPACITY: usize = 256 * 1024;

/// What the window remembers of an id: a digest (see [`super::digest`]).
pub type Key = [u8; 16];

/// The key of an event id; request ids ([`super::RequestKey`]) live in a
/// domain of their own, so an event id never collides with a request id.
pub fn event_key(id: &str) -> Key {
    super::digest(b"event", id)
}

/// The ids seen recently.
pub struct Dedup {
    window: Duration,
    capacity: usize,
    /// A std-style mutex: held only for map updates, never across an await.
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// id → when it was seen; the queue holds the same ids in arrival order.
    seen: HashMap<Key, Instant>,
    order: VecDeque<(Instant, Key)>,
}

impl Dedup {
    pub fn new(window: Duration, capacity: usize) -> Self {
        Self {
            window,
            capacity: capacity.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// For each id (`None` never deduplicates): `true` when it is new and is
    /// now reserved, `false` when it was seen within the window, including
    /// earlier in the same slice.
    pub fn reserve(&self, ids: &[Option<Arc<str>>]) -> Vec<bool> {
        let keys: Vec<Option<Key>> = ids.iter().map(|id| id.as_deref().map(event_key)).collect();
        self.reserve_keys(&keys)
    }

    /// [`Dedup::reserve`] of keys.
    pub fn reserve_keys(&self, keys: &[Option<Key>]) -> Vec<bool> {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        inner.expire(now, self.window);
        keys.iter()
            .map(|key| {
                let Some(key) = key else { return true };
                if inner.seen.contains_key(key) {
                    return false;
                }
                if inner.seen.len() >= self.capacity {
                    inner.evict_oldest();
                }
                inner.seen.insert(*key, now);
                inner.order.push_back((now, *key));
                true
            })
            .collect()
    }

    /// Whether `key` was seen within the window, without reserving it.
    pub fn contains(&self, key: &Key) -> bool {
        let mut inner = self.inner.lock();
        inner.expire(Instant::now(), self.window);
        inner.seen.contains_key(key)
    }

    /// Forgets ids reserved for a request that was not delivered.
    pub fn release<'a>(&self, ids: impl IntoIterator<Item = &'a Arc<str>>) {
        let mut inner = self.inner.lock();
        for id in ids {
            // The order queue keeps a stale entry; expire() skips it.
            inner.seen.remove(&event_key(id));
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    fn expire(&mut self, now: Instant, window: Duration) {
        while let Some((at, _)) = self.order.front() {
            if now.duration_since(*at) < window {
                break;
            }
            self.evict_oldest();
        }
    }

    fn evict_oldest(&mut self) {
        while let Some((at, id)) = self.order.pop_front() {
            // Only remove the map entry this queue entry stands for; a
            // released and re-reserved id has a newer timestamp.
            if self.seen.get(&id) == Some(&at) {
                self.seen.remove(&id);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<Option<Arc<str>>> {
        v.iter().map(|s| Some(Arc::from(*s))).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn duplicates_within_window_and_batch() {
        let d = Dedup::new(Duration::from_secs(60), 100);
        assert_eq!(d.reserve(&ids(&["a", "b", "a"])), vec![true, true, false]);
        assert_eq!(d.reserve(&ids(&["b", "c"])), vec![false, true]);
        assert_eq!(d.reserve(&[None, None]), vec![true, true]);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(d.reserve(&ids(&["a"])), vec![true]);
        assert_eq!(d.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn release_allows_retry() {
        let d = Dedup::new(Duration::from_secs(60), 100);
        let batch = ids(&["x"]);
        assert_eq!(d.reserve(&batch), vec![true]);
        d.release(batch.iter().flatten());
        assert_eq!(d.reserve(&batch), vec![true]);
        assert_eq!(d.reserve(&batch), vec![false]);
    }

    #[tokio::test(start_paused = true)]
    async fn long_ids_cost_a_digest_each() {
        let d = Dedup::new(Duration::from_secs(60), 100);
        let long: Arc<str> = Arc::from("x".repeat(1 << 20));
        assert_eq!(d.reserve(&[Some(long.clone())]), vec![true]);
        assert_eq!(d.reserve(&[Some(long)]), vec![false]);
        assert_eq!(std::mem::size_of::<Key>(), 16);
        let key = crate::bus::RequestKey::of("x").0;
        assert_ne!(key, event_key("x"), "request and event ids do not collide");
        assert!(!d.contains(&key));
        d.reserve_keys(&[Some(key)]);
        assert!(d.contains(&key));
    }

    #[tokio::test(start_paused = true)]
    async fn memory_is_bounded() {
        let d = Dedup::new(Duration::from_secs(600), 10);
        for i in 0..1000 {
            d.reserve(&ids(&[&i.to_string()]));
        }
        assert_eq!(d.len(), 10);
        assert_eq!(d.reserve(&ids(&["999"])), vec![false]);
    }
}
