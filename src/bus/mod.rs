//! The event bus between webhook ingest and the dispatcher.
//!
//! [`Bus`] is what every backend promises: a publish that is acknowledged or
//! failed as a whole, events of one topic delivered to every subscriber in
//! publish order, and a subscriber stream that says when it fell behind
//! instead of silently skipping. [`memory::MemoryBus`] is the single-replica
//! default; Redis and NATS implement the same trait later.

pub mod memory;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::Value;

pub use memory::MemoryBus;

/// One event as published by the upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub topic: Arc<str>,
    /// The webhook id, kept for tracing and for backends that deduplicate.
    pub id: Option<Arc<str>>,
    /// The value of the subscription field.
    pub payload: Value,
}

/// What a subscriber receives from the bus.
#[derive(Debug, Clone)]
pub enum BusItem {
    Event(Arc<Event>),
    /// The subscriber fell behind and this many events were lost to it.
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

/// A publish/subscribe backend.
pub trait Bus: Send + Sync + 'static {
    /// Publishes `events` in order. `Ok` means the backend took all of them
    /// (for a durable backend: acknowledged); `Err` means none is delivered.
    fn publish(&self, events: Vec<Event>) -> BoxFuture<'_, Result<(), BusError>>;

    /// A new subscription to every topic, starting with the next publish.
    fn subscribe(&self) -> Box<dyn BusSubscription>;

    fn state(&self) -> BusState;
}

/// A subscriber's view of the bus.
pub trait BusSubscription: Send + 'static {
    /// The next item; `None` once the bus is closed. Cancel-safe.
    fn recv(&mut self) -> BoxFuture<'_, Option<BusItem>>;

    /// An item already waiting, without blocking; lets consumers batch.
    fn try_recv(&mut self) -> Option<BusItem>;
}
