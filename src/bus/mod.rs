//! The event bus between webhook ingest and the dispatcher.
//!
//! [`Bus`] is what every backend promises: a publish that is acknowledged or
//! failed as a whole, with webhook ids deduplicated within the dedup window
//! across every replica sharing the bus; events of one topic delivered to
//! every subscriber in publish order, each with a [`Cursor`]; a bounded
//! history per topic that [`Bus::replay`] serves for resume; and a
//! subscriber stream that says when it fell behind instead of silently
//! skipping. [`memory::MemoryBus`] is the single-replica default,
//! [`redis::RedisBus`] and [`nats::NatsBus`] share one bus between replicas.

pub mod cursor;
pub mod dedup;
mod feed;
pub mod memory;
pub mod nats;
pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::Value;

use crate::config::{BusConfig, BusKind};
use crate::shutdown::Shutdown;
pub use cursor::{Cursor, InvalidCursor};
pub use memory::MemoryBus;

/// One event as published by the upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub topic: Arc<str>,
    /// The webhook id: events with the same id within the dedup window are
    /// delivered once.
    pub id: Option<Arc<str>>,
    /// The value of the subscription field.
    pub payload: Value,
}

/// What a subscriber receives from the bus.
#[derive(Debug, Clone)]
pub enum BusItem {
    /// An event and its position in its topic's history.
    Event(Arc<Event>, Cursor),
    /// The subscriber fell behind and this many events were lost to it
    /// (0 when the number is not known, e.g. history trimmed during an outage).
    Lagged(u64),
}

/// Whether the bus can take publishes right now (for `/readyz` and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusState {
    Connected,
    Disconnected,
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The backend is down; the publisher should retry later.
    #[error("bus unavailable: {reason}")]
    Unavailable { reason: String },
    /// The bus is shutting down and takes no more events.
    #[error("bus closed")]
    Closed,
}

impl BusError {
    pub(crate) fn unavailable(e: impl std::fmt::Display) -> Self {
        Self::Unavailable {
            reason: e.to_string(),
        }
    }
}

/// What a successful publish did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    /// One flag per event given: `true` when its id was already published
    /// within the dedup window (or earlier in the same batch), so it was not
    /// published again.
    pub duplicate: Vec<bool>,
}

impl Published {
    pub fn duplicates(&self) -> usize {
        self.duplicate.iter().filter(|d| **d).count()
    }
}

/// The retained events of one topic after a cursor.
#[derive(Debug, Clone)]
pub enum Replay {
    /// Every event of the topic after the cursor, oldest first.
    Events(Vec<(Cursor, Arc<Event>)>),
    /// The history no longer reaches back to the cursor: events after it
    /// may have been trimmed, so a replay would have a gap.
    Expired,
}

/// A publish/subscribe backend.
pub trait Bus: Send + Sync + 'static {
    /// Publishes `events` in order, except those whose id was published
    /// within the dedup window. `Ok` means the backend took all of them (for
    /// a durable backend: acknowledged); `Err` means none is delivered and no
    /// id is marked as seen.
    fn publish(&self, events: Vec<Event>) -> BoxFuture<'_, Result<Published, BusError>>;

    /// A new subscription to every topic, starting with the next publish.
    fn subscribe(&self) -> Box<dyn BusSubscription>;

    /// The retained events of `topic` after `after`.
    fn replay(
        &self,
        topic: Arc<str>,
        after: Cursor,
    ) -> BoxFuture<'static, Result<Replay, BusError>>;

    /// Starts the backend's background tasks (connections, readers) under
    /// `shutdown`. Called once, before [`Bus::subscribe`].
    fn start(&self, shutdown: &Shutdown) {
        let _ = shutdown;
    }

    /// Connects once and answers whether the backend is reachable (for
    /// `subcar check`); the error says why not.
    fn check(&self) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn state(&self) -> BusState;

    /// `memory`, `redis` or `nats`, for `/readyz` and `/status`.
    fn kind(&self) -> &'static str;
}

/// A subscriber's view of the bus.
pub trait BusSubscription: Send + 'static {
    /// The next item; `None` once the bus is closed. Cancel-safe.
    fn recv(&mut self) -> BoxFuture<'_, Option<BusItem>>;

    /// An item already waiting, without blocking; lets consumers batch.
    fn try_recv(&mut self) -> Option<BusItem>;
}

#[derive(Debug, thiserror::Error)]
pub enum BusBuildError {
    #[error("bus.url: {0}")]
    Url(String),
}

/// The bus `config` asks for; `dedup_window` is `webhook.dedup_window`.
/// Nothing connects yet: [`Bus::start`] does, so a bus that is down at
/// start-up is an outage like any other, not a start-up failure.
/// `topics` are those some subscription field is fed by.
pub fn build(
    config: &BusConfig,
    dedup_window: Duration,
    topics: &[String],
) -> Result<Arc<dyn Bus>, BusBuildError> {
    Ok(match config.kind {
        BusKind::Memory => Arc::new(MemoryBus::new(config.history).with_dedup(dedup_window)),
        BusKind::Redis => Arc::new(redis::RedisBus::new(config, dedup_window, topics)?),
        BusKind::Nats => Arc::new(nats::NatsBus::new(config, dedup_window)?),
    })
}

/// Reconnect delays: 50 ms doubling up to 2 s.
pub(crate) struct Backoff(Duration);

impl Backoff {
    pub(crate) fn new() -> Self {
        Self(Duration::from_millis(50))
    }

    pub(crate) fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(2));
        d
    }

    pub(crate) fn reset(&mut self) {
        *self = Self::new();
    }

    /// No delay handed out since the last reset.
    pub(crate) fn is_fresh(&self) -> bool {
        self.0 == Self::new().0
    }
}
