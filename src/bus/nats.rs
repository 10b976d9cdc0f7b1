//! The NATS bus: one JetStream stream, read by every replica.
//!
//! - The stream is named `bus.prefix` and holds the subjects `prefix.>`; an
//!   event of topic `t` is a message on `prefix.<base64url(t)>` (topics may
//!   hold characters subjects may not), its body the payload JSON.
//! - Retention: `max_msgs_per_subject = bus.history`, i.e. per topic.
//! - Dedup: the webhook id is the `Nats-Msg-Id` header and the stream's
//!   `duplicate_window` is `webhook.dedup_window`, so JetStream itself drops
//!   a repeated id from any replica and says so in its ack.
//! - Publish: the messages of a batch are sent back to back, then their
//!   acks awaited; `Ok` only when every one was acknowledged. JetStream (2.9)
//!   has no atomic multi-message publish: when the server goes away in the
//!   middle of a batch, part of it may be stored. A retry then delivers the
//!   rest while the ids of the stored part are dropped as duplicates, so
//!   events with ids are delivered exactly once; ones without may twice.
//!   Nothing is sent while the client is not connected (`503` at once).
//! - Certain outcome: every message carries its batch's deadline
//!   (`Subcar-Deadline`, ms since the epoch). JetStream cannot refuse a late
//!   write by itself, so every reader (live and replay) drops a message the
//!   stream stored after its deadline: a publish the webhook answered `503`
//!   because the server did not acknowledge in time (a hung server) is never
//!   delivered, whenever the server stores it. The late message still holds
//!   its `Nats-Msg-Id` in the duplicate window, so when a publish is acked
//!   as a duplicate of a stored message, that message is fetched; if it was
//!   late, the event is published again as `<id>~<its sequence>` (the same
//!   name on every replica, so concurrent retries still deduplicate).
//! - Request ids: a stream `<prefix>_requests` (`max_age` = dedup window,
//!   one message per subject) holds a marker `<prefix>_requests.<digest>`
//!   per `webhook-id`. It is looked up before publishing (found: every event
//!   a duplicate) and written only after every event was acknowledged.
//! - Readiness: a JetStream stream-info request twice a second; one
//!   unanswered within a second marks the bus down (a hung server keeps the
//!   connection open, so the client's state alone does not show it).
//! - Read: every replica runs an ordered consumer (ephemeral, no acks) over
//!   the whole stream, remembering the last stream sequence; after a failure
//!   it is recreated from the next sequence, so nothing stored meanwhile is
//!   missed. The cursor of an event is its stream sequence.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use async_nats::connection::State;
use async_nats::jetstream::{self, consumer, stream};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::feed::Feed;
use super::{
    Backoff, Batch, Bus, BusBuildError, BusError, BusState, BusSubscription, Cursor,
    DEADLINE_GRACE, Event, PROBE_INTERVAL, PROBE_TIMEOUT, PUBLISH_TIMEOUT, Published, Replay,
    RequestKey,
};
use crate::config::BusConfig;
use crate::shutdown::Shutdown;

/// Time allowed to connect, for an ack and for each replayed message.
const TIMEOUT: Duration = Duration::from_secs(2);
/// The header holding a message's publish deadline (ms since the epoch).
const DEADLINE: &str = "Subcar-Deadline";
/// How many times a duplicate of a late message is published again under a
/// derived id before the publish gives up (each try needs another late copy).
const LATE_RETRIES: usize = 4;
/// How often the reader looks at the connection state.
const STATE_POLL: Duration = Duration::from_millis(100);

/// A bus shared through a JetStream stream.
pub struct NatsBus {
    shared: Arc<Shared>,
}

struct Shared {
    url: String,
    stream: String,
    history: usize,
    dedup_window: Duration,
    name: String,
    /// Set once connected and the stream exists.
    link: Mutex<Option<Link>>,
    reader_up: AtomicBool,
    /// The last health probe answered within [`PROBE_TIMEOUT`].
    answering: AtomicBool,
    /// The stream sequence of the last event read.
    last: AtomicU64,
    /// Counts (re)connections of the client: a consumer made before the
    /// latest one is stale even when the outage was too short to see.
    connects: Arc<AtomicU64>,
    feed: Feed,
}

#[derive(Clone)]
struct Link {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: stream::Stream,
    /// The request-id markers (`<prefix>_requests`).
    requests: stream::Stream,
}

impl NatsBus {
    /// Checks `bus.url`; connects only once started.
    pub fn new(config: &BusConfig, dedup_window: Duration) -> Result<Self, BusBuildError> {
        let url = config.url.clone().unwrap_or_default();
        for part in url.split(',') {
            part.trim()
                .parse::<async_nats::ServerAddr>()
                .map_err(|e| BusBuildError::Url(format!("{part:?}: {e}")))?;
        }
        let instance = uuid::Uuid::new_v4().simple().to_string();
        Ok(Self {
            shared: Arc::new(Shared {
                url,
                stream: config.prefix.clone(),
                history: config.history.max(1),
                dedup_window,
                name: format!("subcar-{}-{}", config.prefix, &instance[..12]),
                link: Mutex::new(None),
                reader_up: AtomicBool::new(false),
                answering: AtomicBool::new(false),
                last: AtomicU64::new(0),
                connects: Arc::new(AtomicU64::new(0)),
                feed: Feed::new(),
            }),
        })
    }
}

/// The subject of `topic`'s events in the stream `stream`.
pub fn subject(stream: &str, topic: &str) -> String {
    format!("{stream}.{}", URL_SAFE_NO_PAD.encode(topic))
}

impl Shared {
    fn stream_config(&self) -> stream::Config {
        stream::Config {
            name: self.stream.clone(),
            subjects: vec![format!("{}.>", self.stream)],
            max_messages_per_subject: i64::try_from(self.history).unwrap_or(i64::MAX),
            duplicate_window: self.dedup_window,
            storage: stream::StorageType::File,
            ..Default::default()
        }
    }

    fn requests_config(&self) -> stream::Config {
        let name = format!("{}_requests", self.stream);
        stream::Config {
            subjects: vec![format!("{name}.>")],
            name,
            max_age: self.dedup_window,
            max_messages_per_subject: 1,
            // Must not exceed max_age; markers are never published twice.
            duplicate_window: self.dedup_window.min(Duration::from_secs(120)),
            storage: stream::StorageType::File,
            ..Default::default()
        }
    }

    fn request_subject(&self, request: RequestKey) -> String {
        format!("{}_requests.{}", self.stream, request.hex())
    }

    fn link(&self) -> Result<Link, BusError> {
        let link = self
            .link
            .lock()
            .clone()
            .ok_or_else(|| BusError::Unavailable {
                reason: "not connected to NATS".into(),
            })?;
        if link.client.connection_state() != State::Connected {
            return Err(BusError::Unavailable {
                reason: "NATS connection is down".into(),
            });
        }
        Ok(link)
    }

    async fn connect_client(&self) -> Result<async_nats::Client, BusError> {
        let connects = self.connects.clone();
        async_nats::ConnectOptions::new()
            .event_callback(move |event| {
                if matches!(event, async_nats::Event::Connected) {
                    connects.fetch_add(1, Ordering::Relaxed);
                }
                std::future::ready(())
            })
            .name(&self.name)
            .connection_timeout(TIMEOUT)
            // The client reconnects for ever by itself once connected; the
            // state it reports is what `/readyz` shows.
            .max_reconnects(None)
            .connect(
                self.url
                    .split(',')
                    .map(str::trim)
                    .collect::<Vec<_>>()
                    .as_slice(),
            )
            .await
            .map_err(BusError::unavailable)
    }

    /// Connects and makes sure the stream exists with this configuration.
    async fn connect(&self) -> Result<Link, BusError> {
        let client = self.connect_client().await?;
        let mut js = jetstream::new(client.clone());
        // Acks may come until the deadline's grace is over; publishes stop
        // waiting at the deadline plus grace themselves.
        js.set_timeout(PUBLISH_TIMEOUT + DEADLINE_GRACE);
        js.create_or_update_stream(self.stream_config())
            .await
            .map_err(BusError::unavailable)?;
        js.create_or_update_stream(self.requests_config())
            .await
            .map_err(BusError::unavailable)?;
        let stream = js
            .get_stream(&self.stream)
            .await
            .map_err(BusError::unavailable)?;
        let requests = js
            .get_stream(format!("{}_requests", self.stream))
            .await
            .map_err(BusError::unavailable)?;
        Ok(Link {
            client,
            js,
            stream,
            requests,
        })
    }

    async fn publish(&self, batch: Batch) -> Result<Published, BusError> {
        let link = self.link()?;
        let remaining = batch
            .deadline
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            + DEADLINE_GRACE;
        match tokio::time::timeout(remaining, self.publish_on(&link, batch)).await {
            Ok(r) => r,
            Err(_) => Err(BusError::unavailable(
                "NATS did not acknowledge before the publish deadline; what it stores later is never delivered",
            )),
        }
    }

    async fn publish_on(&self, link: &Link, batch: Batch) -> Result<Published, BusError> {
        let n = batch.events.len();
        if let Some(r) = batch.request {
            match link
                .requests
                .get_last_raw_message_by_subject(&self.request_subject(r))
                .await
            {
                Ok(_) => {
                    return Ok(Published {
                        duplicate: vec![true; n],
                    });
                }
                Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {}
                Err(e) => return Err(BusError::unavailable(e)),
            }
        }
        let deadline = batch.deadline_ms().to_string();
        let mut acks = Vec::with_capacity(n);
        for e in &batch.events {
            let ack = link
                .js
                .publish_with_headers(
                    subject(&self.stream, &e.topic),
                    headers(e.id.as_deref(), &deadline),
                    payload(e),
                )
                .await
                .map_err(BusError::unavailable)?;
            acks.push(ack);
        }
        let mut duplicate = Vec::with_capacity(n);
        for (ack, e) in acks.into_iter().zip(&batch.events) {
            let ack = ack.await.map_err(BusError::unavailable)?;
            let dup = match (&e.id, ack.duplicate) {
                (Some(id), true) => {
                    self.still_duplicate(link, e, id, ack.sequence, &deadline)
                        .await?
                }
                (_, dup) => dup,
            };
            duplicate.push(dup);
        }
        if let Some(r) = batch.request {
            // The events are stored: the answer is 202 whatever happens to
            // the marker. Without it, a replay is still caught event by
            // event (every event of such a request has an id).
            let marked = match link.js.publish(self.request_subject(r), Bytes::new()).await {
                Ok(ack) => ack.await.map(drop).map_err(BusError::unavailable),
                Err(e) => Err(BusError::unavailable(e)),
            };
            if let Err(e) = marked {
                tracing::warn!(error = %e, "cannot record the webhook-id in NATS");
            }
        }
        Ok(Published { duplicate })
    }

    /// An ack said `e` duplicates the message at `seq`: whether it really
    /// is one, i.e. that message is delivered. A message stored after its
    /// deadline is not, so `e` is published again under a derived id.
    async fn still_duplicate(
        &self,
        link: &Link,
        e: &Event,
        id: &str,
        mut seq: u64,
        deadline: &str,
    ) -> Result<bool, BusError> {
        let mut id = id.to_owned();
        for _ in 0..LATE_RETRIES {
            let original = match link.stream.get_raw_message(seq).await {
                Ok(m) => m,
                // Gone from the history: it was delivered long ago.
                Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => {
                    return Ok(true);
                }
                Err(e) => return Err(BusError::unavailable(e)),
            };
            if !late(Some(&original.headers), original.time) {
                return Ok(true);
            }
            id = format!("{id}~{seq}");
            let ack = link
                .js
                .publish_with_headers(
                    subject(&self.stream, &e.topic),
                    headers(Some(&id), deadline),
                    payload(e),
                )
                .await
                .map_err(BusError::unavailable)?
                .await
                .map_err(BusError::unavailable)?;
            if !ack.duplicate {
                return Ok(false);
            }
            seq = ack.sequence;
        }
        Err(BusError::unavailable(
            "too many late copies of this event id in NATS",
        ))
    }

    /// Asks JetStream for the stream's info every [`PROBE_INTERVAL`]; whether
    /// it answers within [`PROBE_TIMEOUT`] is what `state()` reports.
    async fn probe(self: Arc<Self>, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(PROBE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let link = self.link.lock().clone();
            let ok = match link {
                Some(link) => matches!(
                    tokio::time::timeout(PROBE_TIMEOUT, link.stream.get_info()).await,
                    Ok(Ok(_))
                ),
                None => false,
            };
            if self.answering.swap(ok, Ordering::Relaxed) && !ok {
                tracing::warn!(
                    timeout = ?PROBE_TIMEOUT,
                    "NATS does not answer its health probe; the bus counts as down"
                );
            }
        }
    }

    /// Connects (with backoff) and then reads the stream into the feed until
    /// cancelled.
    async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut backoff = Backoff::new();
        let mut attempts = 0u32;
        let link = loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.connect() => match r {
                    Ok(link) => break link,
                    // Loud once, then quiet: the state is in /readyz.
                    Err(e) if attempts == 0 => tracing::warn!(error = %e, url = %crate::config::Redacted(&self.url), "cannot reach NATS yet; retrying"),
                    Err(e) => tracing::debug!(error = %e, "NATS connect failed"),
                },
            }
            attempts += 1;
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(backoff.next()) => {}
            }
        };
        backoff.reset();
        // Where a replica that just started begins: after what is stored.
        let mut stream = link.stream.clone();
        loop {
            match stream.info().await {
                Ok(info) => {
                    self.last.store(info.state.last_sequence, Ordering::Relaxed);
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "NATS stream info failed");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(backoff.next()) => {}
                    }
                }
            }
        }
        *self.link.lock() = Some(link.clone());
        tracing::info!(stream = %self.stream, "NATS bus connected");
        loop {
            let err = tokio::select! {
                _ = cancel.cancelled() => return,
                e = self.read(&link, &mut backoff) => e,
            };
            self.reader_up.store(false, Ordering::Relaxed);
            tracing::warn!(error = %err, "NATS stream reader failed; recreating it");
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(backoff.next()) => {}
            }
        }
    }

    /// One ordered consumer's worth of reading; returns why it stopped.
    async fn read(&self, link: &Link, backoff: &mut Backoff) -> BusError {
        let generation = self.connects.load(Ordering::Relaxed);
        if link.client.connection_state() != State::Connected {
            return BusError::unavailable("NATS connection is down");
        }
        // A server that lost its store (a crash before it synced, a stream
        // deleted and recreated) numbers from below what was read: start
        // from its end then, or new messages would be skipped as seen.
        match link.stream.get_info().await {
            Ok(info) if info.state.last_sequence < self.last.load(Ordering::Relaxed) => {
                tracing::warn!(
                    stream = %self.stream,
                    "the JetStream stream is behind what this replica read (server lost data or the stream was recreated); reading on from its end"
                );
                self.last.store(info.state.last_sequence, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(e) => return BusError::unavailable(e),
        }
        let start = self.last.load(Ordering::Relaxed) + 1;
        let consumer = match link
            .stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: start,
                },
                ..Default::default()
            })
            .await
        {
            Ok(c) => c,
            Err(e) => return BusError::unavailable(e),
        };
        let mut messages = match consumer.messages().await {
            Ok(m) => m,
            Err(e) => return BusError::unavailable(e),
        };
        self.reader_up.store(true, Ordering::Relaxed);
        backoff.reset();
        // The ordered consumer would notice a lost connection only after
        // missed heartbeats (seconds); the client's state says it at once,
        // and a consumer recreated from the next sequence after the
        // reconnect is the quickest way back.
        let mut watch = tokio::time::interval(STATE_POLL);
        watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let m = tokio::select! {
                m = messages.next() => m,
                _ = watch.tick() => {
                    if link.client.connection_state() != State::Connected
                        || self.connects.load(Ordering::Relaxed) != generation
                    {
                        return BusError::unavailable("NATS connection lost");
                    }
                    continue;
                }
            };
            let m = match m {
                Some(Ok(m)) => m,
                Some(Err(e)) => return BusError::unavailable(e),
                None => return BusError::Closed,
            };
            let Ok(info) = m.info() else { continue };
            let seq = info.stream_sequence;
            if seq <= self.last.load(Ordering::Relaxed) {
                continue;
            }
            let last = self.last.swap(seq, Ordering::Relaxed);
            if last > 0 && seq > last + 1 {
                // Sequences are dense over the whole stream, and this
                // consumer reads all of it: the missing ones were removed
                // (history limit) before this replica read them.
                tracing::warn!(
                    missed = seq - last - 1,
                    "events left the JetStream history before this replica read them; raise bus.history"
                );
                // Counted where every lag is (subcar_bus_lagged_events).
                self.feed.lagged(seq - last - 1, None);
            }
            if late(m.headers.as_ref(), info.published) {
                tracing::debug!(
                    seq,
                    "message stored after its publish deadline; not delivered"
                );
                continue;
            }
            if let Some(event) = decode(&self.stream, &m.subject, m.headers.as_ref(), &m.payload) {
                self.feed.send(Arc::new(event), Cursor::seq(seq));
            }
        }
    }

    async fn replay(&self, topic: Arc<str>, after: Cursor) -> Result<Replay, BusError> {
        let link = self.link()?;
        let subject = subject(&self.stream, &topic);
        let first = match link
            .stream
            .get_first_raw_message_by_subject(&subject, 1)
            .await
        {
            Ok(m) => m.sequence,
            Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => {
                return Ok(Replay::Events(Vec::new()));
            }
            Err(e) => return Err(BusError::unavailable(e)),
        };
        // Per-subject limits remove a topic's oldest messages: the history
        // reaches back to the cursor while something at or before it is kept.
        if first > after.major {
            return Ok(Replay::Expired);
        }
        let end = link
            .stream
            .get_last_raw_message_by_subject(&subject)
            .await
            .map_err(BusError::unavailable)?
            .sequence;
        if end <= after.major {
            return Ok(Replay::Events(Vec::new()));
        }
        let from = consumer::DeliverPolicy::ByStartSequence {
            start_sequence: after.major + 1,
        };
        Ok(Replay::Events(
            read(&link, &self.stream, subject, from, end).await?,
        ))
    }

    /// The messages of the topic stored at or after `since`. The history
    /// reaches back to it when its oldest message is older, or when the
    /// topic holds fewer than `bus.history` messages (nothing was trimmed).
    async fn replay_since(&self, topic: Arc<str>, since: SystemTime) -> Result<Replay, BusError> {
        let link = self.link()?;
        let subject = subject(&self.stream, &topic);
        let oldest = match link
            .stream
            .get_first_raw_message_by_subject(&subject, 1)
            .await
        {
            Ok(m) => SystemTime::from(m.time),
            Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => {
                return Ok(Replay::Events(Vec::new()));
            }
            Err(e) => return Err(BusError::unavailable(e)),
        };
        if oldest >= since && self.retained(&link, &subject).await? >= self.history {
            return Ok(Replay::TooOld {
                oldest: Some(oldest),
            });
        }
        let last = link
            .stream
            .get_last_raw_message_by_subject(&subject)
            .await
            .map_err(BusError::unavailable)?;
        if SystemTime::from(last.time) < since {
            return Ok(Replay::Events(Vec::new()));
        }
        let from = consumer::DeliverPolicy::ByStartTime {
            start_time: async_nats::datetime::DateTime::from(since),
        };
        Ok(Replay::Events(
            read(&link, &self.stream, subject, from, last.sequence).await?,
        ))
    }

    /// How many messages the stream holds on `subject`.
    async fn retained(&self, link: &Link, subject: &str) -> Result<usize, BusError> {
        let mut subjects = link
            .stream
            .info_with_subjects(subject)
            .await
            .map_err(BusError::unavailable)?;
        let mut count = 0;
        while let Some(entry) = subjects.next().await {
            let (name, n) = entry.map_err(BusError::unavailable)?;
            if name == subject {
                count += n;
            }
        }
        Ok(count)
    }
}

/// The events on `subject` from `from` through stream sequence `end`,
/// read with an ordered consumer; late messages are left out.
async fn read(
    link: &Link,
    stream: &str,
    subject: String,
    from: consumer::DeliverPolicy,
    end: u64,
) -> Result<Vec<(Cursor, Arc<Event>)>, BusError> {
    let consumer = link
        .stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: subject,
            deliver_policy: from,
            ..Default::default()
        })
        .await
        .map_err(BusError::unavailable)?;
    let mut messages = consumer.messages().await.map_err(BusError::unavailable)?;
    let mut events = Vec::new();
    loop {
        let m = match tokio::time::timeout(TIMEOUT, messages.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => return Err(BusError::unavailable(e)),
            Ok(None) => return Err(BusError::Closed),
            Err(_) => return Err(BusError::unavailable("replay timed out")),
        };
        let Ok(info) = m.info() else { continue };
        let seq = info.stream_sequence;
        if !late(m.headers.as_ref(), info.published)
            && let Some(event) = decode(stream, &m.subject, m.headers.as_ref(), &m.payload)
        {
            events.push((Cursor::seq(seq), Arc::new(event)));
        }
        if seq >= end {
            return Ok(events);
        }
    }
}

fn headers(id: Option<&str>, deadline: &str) -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    if let Some(id) = id {
        headers.insert("Nats-Msg-Id", id);
    }
    headers.insert(DEADLINE, deadline);
    headers
}

fn payload(e: &Event) -> Bytes {
    Bytes::from(serde_json::to_vec(&e.payload).expect("JSON values serialise"))
}

/// Whether the stream stored a message after its publish deadline (then
/// its publisher answered `503` and no reader delivers it). Messages
/// without a deadline (older replicas) are never late.
fn late(headers: Option<&async_nats::HeaderMap>, stored: async_nats::datetime::DateTime) -> bool {
    let Some(deadline) = headers
        .and_then(|h| h.get(DEADLINE))
        .and_then(|v| v.as_str().parse::<i128>().ok())
    else {
        return false;
    };
    stored.unix_timestamp_nanos() / 1_000_000 > deadline
}

fn decode(
    stream: &str,
    subject: &str,
    headers: Option<&async_nats::HeaderMap>,
    payload: &[u8],
) -> Option<Event> {
    let topic = subject
        .strip_prefix(stream)
        .and_then(|s| s.strip_prefix('.'))
        .and_then(|t| URL_SAFE_NO_PAD.decode(t).ok())
        .and_then(|t| String::from_utf8(t).ok());
    let (Some(topic), Ok(payload)) = (topic, serde_json::from_slice(payload)) else {
        tracing::warn!(%subject, "JetStream message that is not a subcar event; skipped");
        return None;
    };
    let id = headers
        .and_then(|h| h.get("Nats-Msg-Id"))
        .map(|v| Arc::from(v.as_str()));
    Some(Event {
        topic: Arc::from(topic),
        id,
        payload,
    })
}

impl Bus for NatsBus {
    fn publish_batch(&self, batch: Batch) -> BoxFuture<'_, Result<Published, BusError>> {
        Box::pin(self.shared.publish(batch))
    }

    fn subscribe(&self) -> Box<dyn BusSubscription> {
        self.shared.feed.subscribe()
    }

    fn replay(
        &self,
        topic: Arc<str>,
        after: Cursor,
    ) -> BoxFuture<'static, Result<Replay, BusError>> {
        let shared = self.shared.clone();
        Box::pin(async move { shared.replay(topic, after).await })
    }

    fn replay_since(
        &self,
        topic: Arc<str>,
        since: SystemTime,
    ) -> BoxFuture<'static, Result<Replay, BusError>> {
        let shared = self.shared.clone();
        Box::pin(async move { shared.replay_since(topic, since).await })
    }

    fn start(&self, shutdown: &Shutdown) {
        shutdown.spawn(self.shared.clone().run(shutdown.token().clone()));
        shutdown.spawn(self.shared.clone().probe(shutdown.token().clone()));
    }

    fn check(&self) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            let client = self.shared.connect_client().await?;
            client.flush().await.map_err(BusError::unavailable)
        })
    }

    fn state(&self) -> BusState {
        let connected = self
            .shared
            .link
            .lock()
            .as_ref()
            .is_some_and(|l| l.client.connection_state() == State::Connected);
        if connected
            && self.shared.reader_up.load(Ordering::Relaxed)
            && self.shared.answering.load(Ordering::Relaxed)
        {
            BusState::Connected
        } else {
            BusState::Disconnected
        }
    }

    fn kind(&self) -> &'static str {
        "nats"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_topic_maps_to_one_subject_token_and_back() {
        for topic in ["incident.updated", "a b*>", "ünï", ""] {
            let subject = subject("app", topic);
            assert_eq!(subject.matches('.').count(), 1, "{subject}");
            assert!(!subject.contains([' ', '*', '>']), "{subject}");
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", "e1");
            let event = decode("app", &subject, Some(&headers), b"{\"n\":1}").unwrap();
            assert_eq!(&*event.topic, topic);
            assert_eq!(event.id.as_deref(), Some("e1"));
            assert_eq!(event.payload, serde_json::json!({"n": 1}));
        }
        assert!(decode("other", &subject("app", "t"), None, b"1").is_none());
        assert!(decode("app", &subject("app", "t"), None, b"not json").is_none());
    }
}
