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
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// Longest event id and `webhook-id` header accepted (bytes); longer is a
/// `400 INVALID_EVENT`. Keeps what the dedup stores hold per id bounded.
pub const MAX_ID_BYTES: usize = 256;

/// How long a publish may take on the bus: nothing of a batch is written
/// after its [`Batch::deadline`], which is this far after the request.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);

/// How long after the deadline the webhook still waits for the bus's
/// answer before it answers `503`. A write that the bus accepted just
/// before its deadline is acknowledged within this margin (and any clock
/// difference between subcar and a NATS server must stay below it).
pub const DEADLINE_GRACE: Duration = Duration::from_secs(1);

/// A webhook request's `webhook-id`, as a fixed-size key (a truncated
/// SHA-256), so what dedup stores hold per request does not depend on the
/// header's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestKey(pub [u8; 16]);

impl RequestKey {
    pub fn of(webhook_id: &str) -> Self {
        Self(digest(b"request", webhook_id))
    }

    /// Lower-case hex, for backend keys and subjects.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The first 16 bytes of SHA-256 over `domain`, a NUL and `value`: 128 bits,
/// so a collision within any dedup window is not a practical concern.
pub(crate) fn digest(domain: &[u8], value: &str) -> [u8; 16] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(domain);
    h.update([0]);
    h.update(value.as_bytes());
    let full = h.finalize();
    let mut out = [0; 16];
    out.copy_from_slice(&full[..16]);
    out
}

/// One webhook request's worth of events, published as a whole.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The request's `webhook-id`: when it was published within the dedup
    /// window, nothing is published and every event counts as a duplicate.
    /// It is recorded only together with (Redis, memory) or after (NATS)
    /// the events being written, never for a failed publish.
    pub request: Option<RequestKey>,
    pub events: Vec<Event>,
    /// Nothing of the batch is written, or delivered, after this moment;
    /// a publish not acknowledged by `deadline + DEADLINE_GRACE` fails.
    pub deadline: SystemTime,
}

impl Batch {
    /// `events` with no request id, due [`PUBLISH_TIMEOUT`] from now.
    pub fn new(events: Vec<Event>) -> Self {
        Self {
            request: None,
            events,
            deadline: SystemTime::now() + PUBLISH_TIMEOUT,
        }
    }

    /// The deadline in milliseconds since the Unix epoch.
    pub fn deadline_ms(&self) -> u64 {
        unix_ms(self.deadline)
    }
}

pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What a subscriber receives from the bus.
#[derive(Debug, Clone)]
pub enum BusItem {
    /// An event and its position in its topic's history.
    Event(Arc<Event>, Cursor),
    /// The subscriber fell behind and this many events were lost to it
    /// (0 when the number is not known, e.g. history trimmed during an
    /// outage), of `topic` when the backend knows which (else of any).
    Lagged {
        missed: u64,
        topic: Option<Arc<str>>,
    },
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

/// The retained events of one topic after a cursor or from a time.
#[derive(Debug, Clone)]
pub enum Replay {
    /// Every event of the topic after the cursor (published at or after
    /// the time), oldest first.
    Events(Vec<(Cursor, Arc<Event>)>),
    /// The history no longer reaches back to the cursor: events after it
    /// may have been trimmed, so a replay would have a gap.
    Expired,
    /// [`Bus::replay_since`]: events published at or after the time may
    /// have been trimmed; `oldest` is when the oldest event still retained
    /// was published (`None` when none is).
    TooOld { oldest: Option<SystemTime> },
}

/// A publish/subscribe backend.
pub trait Bus: Send + Sync + 'static {
    /// Publishes the batch's events in order, except those whose id was
    /// published within the dedup window (all of them when the batch's
    /// request id was). `Ok` means the backend took all of them (for a
    /// durable backend: acknowledged); `Err` means none is delivered, ever
    /// (also when the backend would get to the write after the deadline),
    /// and no id is marked as seen.
    fn publish_batch(&self, batch: Batch) -> BoxFuture<'_, Result<Published, BusError>>;

    /// [`Bus::publish_batch`] of `events` without a request id.
    fn publish(&self, events: Vec<Event>) -> BoxFuture<'_, Result<Published, BusError>> {
        self.publish_batch(Batch::new(events))
    }

    /// A new subscription to every topic, starting with the next publish.
    fn subscribe(&self) -> Box<dyn BusSubscription>;

    /// The retained events of `topic` after `after`.
    fn replay(
        &self,
        topic: Arc<str>,
        after: Cursor,
    ) -> BoxFuture<'static, Result<Replay, BusError>>;

    /// The retained events of `topic` published at or after `since`, at the
    /// backend's resolution (milliseconds on Redis, the server's clock on
    /// Redis and NATS); [`Replay::TooOld`] when the history may have lost
    /// some of them.
    fn replay_since(
        &self,
        topic: Arc<str>,
        since: SystemTime,
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

    /// `Connected` only while the backend answers: connected, and its
    /// periodic health probe answered within its timeout.
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

/// How often the shared buses probe their server for `/readyz`, and how
/// long a probe may take before the bus counts as down (a hung server keeps
/// its connections open, so only an unanswered probe shows it).
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_millis(500);
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

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
