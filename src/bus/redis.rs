//! The Redis bus: one Redis Stream per topic, read by every replica.
//!
//! - Keys: `{prefix}:topic:<topic>` (a stream) and `{prefix}:id:<id>` (a
//!   dedup marker). The braces are a hash tag: every key of one prefix lives
//!   in one cluster slot, so a batch can touch them atomically.
//! - Publish: one `EVALSHA` per request. The script first compares Redis's
//!   clock with the batch's deadline (translated to Redis's clock with the
//!   offset the health probe measures) and writes nothing when it is past:
//!   a request the webhook answered `503` because Redis did not answer in
//!   time (a hung server) is never written when Redis gets to it later.
//!   Then, unless the request key `{prefix}:req:<digest>` exists (the
//!   request was published before: every event a duplicate), it marks each
//!   id with `SET NX PX <dedup window>`, `XADD`s only the fresh events, with
//!   `MAXLEN ~ <history>` per topic stream, and sets the request key. A
//!   script runs atomically: readers see a whole batch or none of it, a
//!   duplicate inside a batch is caught, and ids are marked seen only
//!   together with the events being written, so a refused request (no
//!   script run, or a late one) marks nothing. One round trip per batch.
//! - Read: every replica `XREAD BLOCK`s all topic streams on a connection
//!   of its own (plain XREAD, not consumer groups: each replica needs every
//!   event), remembering the last entry id per stream. After a lost
//!   connection it reconnects with backoff and reads on from those ids, so
//!   what was written meanwhile arrives (as long as it is still retained).
//! - Gaps: when entries after the last id read have left a stream (an
//!   outage longer than the history, or a reader that fell that far
//!   behind), the feed says so for that topic ([`super::BusItem::Lagged`], its
//!   subscriptions end with `EVENTS_LOST`). Checked after every reconnect,
//!   and after any read that returned a history's worth of entries (only
//!   then can unread entries have been trimmed), by whether the oldest
//!   entry kept is newer than the last one read. That also flags a reader
//!   exactly at the trim edge, which may have lost nothing: it errs on the
//!   side of telling.
//! - Cursors are stream entry ids; per topic, which is all a subscription
//!   needs.
//! - Publishes go through a second connection that is dropped on any error
//!   and re-established with backoff; meanwhile publishes fail at once with
//!   [`BusError::Unavailable`] (webhook `503`). A health probe (`TIME`)
//!   runs on it twice a second; one unanswered within a second (a hung
//!   server keeps its sockets open) marks the bus down and replaces the
//!   connection.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamId, StreamRangeReply, StreamReadReply};
use redis::{AsyncConnectionConfig, Client, Script, Value};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::feed::Feed;
use super::{
    Backoff, Batch, Bus, BusBuildError, BusError, BusState, BusSubscription, Cursor,
    DEADLINE_GRACE, Event, PROBE_INTERVAL, PROBE_TIMEOUT, PUBLISH_TIMEOUT, Published, Replay,
    unix_ms,
};
use crate::config::BusConfig;
use crate::shutdown::Shutdown;

/// Time allowed to connect, and for a publish or a replay page to answer.
const TIMEOUT: Duration = Duration::from_secs(2);
/// How long one `XREAD` blocks; the read gets this plus [`TIMEOUT`].
const BLOCK: Duration = Duration::from_secs(5);
/// Entries taken per `XREAD` and per replay page.
const PAGE: usize = 1000;

const PUBLISH: &str = r#"
-- KEYS[1..n]: the stream of event i's topic; then dedup keys; then the
-- request key when ARGV[5] > 0; last, this publish's outcome key.
-- ARGV[1]: history (MAXLEN ~), ARGV[2]: dedup window (ms), ARGV[3]: n,
-- ARGV[4]: deadline (ms on this server's clock), ARGV[5]: index of the
-- request key in KEYS (0: none),
-- then per event: index of its dedup key in KEYS (0: none), id, payload.
-- The outcome key gets one '1' (duplicate) or '0' per event, for a
-- publisher that lost the answer (see settle()).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now > tonumber(ARGV[4]) then
  return redis.error_reply('SUBCAR_LATE the publish deadline passed before Redis ran it; nothing was written')
end
local n = tonumber(ARGV[3])
local r = tonumber(ARGV[5])
local outcome = KEYS[#KEYS]
local out = {}
if r > 0 and redis.call('EXISTS', KEYS[r]) == 1 then
  for i = 1, n do
    out[i] = 0
  end
  redis.call('SET', outcome, string.rep('1', n), 'PX', 60000)
  return out
end
for i = 1, n do
  local at = 5 + (i - 1) * 3
  local d = tonumber(ARGV[at + 1])
  local fresh = true
  if d > 0 then
    fresh = redis.call('SET', KEYS[d], '1', 'NX', 'PX', ARGV[2])
  end
  if fresh then
    local id = ARGV[at + 2]
    if id == '' then
      out[i] = redis.call('XADD', KEYS[i], 'MAXLEN', '~', ARGV[1], '*', 'p', ARGV[at + 3])
    else
      out[i] = redis.call('XADD', KEYS[i], 'MAXLEN', '~', ARGV[1], '*', 'p', ARGV[at + 3], 'i', id)
    end
  else
    out[i] = 0
  end
end
if r > 0 then
  redis.call('SET', KEYS[r], '1', 'PX', ARGV[2])
end
local flags = {}
for i = 1, n do
  flags[i] = (out[i] == 0) and '1' or '0'
end
redis.call('SET', outcome, table.concat(flags), 'PX', 60000)
return out
"#;

/// A bus shared through Redis Streams.
pub struct RedisBus {
    shared: Arc<Shared>,
}

struct Shared {
    client: Client,
    /// `{prefix}`, the hash tag every key starts with.
    tag: String,
    /// Identifies this replica's connections in `CLIENT LIST`.
    name: String,
    history: usize,
    dedup_ms: u64,
    script: Script,
    /// Topics that feed some field, and their stream keys.
    streams: Vec<(Arc<str>, String)>,
    /// The publish connection; `None` while down. Cloned out (a multiplexed
    /// connection is a handle), never held across an await.
    conn: Mutex<Option<MultiplexedConnection>>,
    reconnect: Notify,
    reader_up: AtomicBool,
    /// The last health probe (`TIME` on the publish connection) answered
    /// within [`PROBE_TIMEOUT`].
    answering: AtomicBool,
    /// Redis's clock minus ours (ms), measured by the probe: deadlines are
    /// given to the script on Redis's clock.
    clock_offset_ms: AtomicI64,
    feed: Feed,
}

impl RedisBus {
    /// Parses `bus.url`; connects only once started. `topics` are the
    /// topics some subscription field is fed by: the streams to read.
    pub fn new(
        config: &BusConfig,
        dedup_window: Duration,
        topics: &[String],
    ) -> Result<Self, BusBuildError> {
        let url = config.url.as_deref().unwrap_or_default();
        let client = Client::open(url).map_err(|e| BusBuildError::Url(e.to_string()))?;
        let tag = format!("{{{}}}", config.prefix);
        let streams = topics
            .iter()
            .map(|t| (Arc::from(t.as_str()), format!("{tag}:topic:{t}")))
            .collect();
        let instance = uuid::Uuid::new_v4().simple().to_string();
        Ok(Self {
            shared: Arc::new(Shared {
                client,
                name: format!("subcar-{}-{}", config.prefix, &instance[..12]),
                tag,
                history: config.history.max(1),
                dedup_ms: dedup_window.as_millis().clamp(1, u64::MAX as u128) as u64,
                script: Script::new(PUBLISH),
                streams,
                conn: Mutex::new(None),
                reconnect: Notify::new(),
                reader_up: AtomicBool::new(false),
                answering: AtomicBool::new(false),
                clock_offset_ms: AtomicI64::new(0),
                feed: Feed::new(),
            }),
        })
    }
}

impl Shared {
    async fn connect(
        &self,
        role: &str,
        response_timeout: Option<Duration>,
    ) -> redis::RedisResult<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(response_timeout);
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(format!("{}-{role}", self.name))
            .query_async::<()>(&mut conn)
            .await?;
        Ok(conn)
    }

    fn publish_conn(&self) -> Result<MultiplexedConnection, BusError> {
        self.conn
            .lock()
            .clone()
            .ok_or_else(|| BusError::Unavailable {
                reason: "not connected to Redis".into(),
            })
    }

    fn lost(&self, e: &redis::RedisError) {
        tracing::warn!(error = %e, "Redis publish connection lost; reconnecting");
        *self.conn.lock() = None;
        self.reconnect.notify_one();
    }

    async fn publish(&self, batch: Batch) -> Result<Published, BusError> {
        let mut conn = self.publish_conn()?;
        let deadline_ms = batch.deadline_ms();
        let remaining = batch
            .deadline
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            + DEADLINE_GRACE;
        let events = &batch.events;
        let n = events.len();
        let mut invocation = self.script.prepare_invoke();
        for e in events {
            invocation.key(format!("{}:topic:{}", self.tag, e.topic));
        }
        let mut dedup_keys = 0;
        for e in events {
            if let Some(id) = &e.id {
                invocation.key(format!("{}:id:{id}", self.tag));
            }
        }
        let ids = events.iter().filter(|e| e.id.is_some()).count();
        let request = match batch.request {
            Some(r) => {
                invocation.key(format!("{}:req:{}", self.tag, r.hex()));
                n + ids + 1
            }
            None => 0,
        };
        let outcome = format!("{}:pub:{}", self.tag, uuid::Uuid::new_v4().simple());
        invocation.key(&outcome);
        let offset = self.clock_offset_ms.load(Ordering::Relaxed);
        let server_deadline = i64::try_from(deadline_ms)
            .unwrap_or(i64::MAX)
            .saturating_add(offset);
        invocation
            .arg(self.history)
            .arg(self.dedup_ms)
            .arg(n)
            .arg(server_deadline)
            .arg(request);
        for e in events {
            let d = match e.id {
                Some(_) => {
                    dedup_keys += 1;
                    n + dedup_keys
                }
                None => 0,
            };
            let payload = serde_json::to_vec(&e.payload).expect("JSON values serialise");
            invocation
                .arg(d)
                .arg(e.id.as_deref().unwrap_or(""))
                .arg(payload);
        }
        let reply: Vec<Value> =
            match tokio::time::timeout(remaining, invocation.invoke_async(&mut conn)).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) if e.code() == Some("SUBCAR_LATE") => {
                    return Err(BusError::unavailable(e));
                }
                Ok(Err(e)) => {
                    // Whatever went wrong, a fresh connection is cheap and rules
                    // out a connection left in a bad state.
                    self.lost(&e);
                    return self.settle(&batch, &outcome, e.to_string()).await;
                }
                Err(_) => {
                    // Redis may still run the script when it gets to it; the
                    // deadline makes it write nothing then.
                    self.lost(&redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "no answer before the publish deadline",
                    )));
                    return Err(BusError::unavailable(
                        "Redis did not answer before the publish deadline; nothing is written",
                    ));
                }
            };
        let duplicate = reply.iter().map(|v| matches!(v, Value::Int(0))).collect();
        Ok(Published { duplicate })
    }

    /// The script may have run although its answer was lost (the connection
    /// broke after sending it). Waits until the deadline has passed, when
    /// Redis no longer runs it, then reads its outcome key on a fresh
    /// connection: written (the answer it would have given) or certainly
    /// not. Only when Redis cannot be asked within the grace does the
    /// publish fail without knowing (see docs/scale-out.md, Outages).
    async fn settle(
        &self,
        batch: &Batch,
        outcome: &str,
        error: String,
    ) -> Result<Published, BusError> {
        const MARGIN: Duration = Duration::from_millis(100);
        let wait = batch
            .deadline
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            + MARGIN;
        tokio::time::sleep(wait).await;
        let ask = async {
            let mut conn = self.connect("settle", Some(DEADLINE_GRACE)).await?;
            redis::cmd("GET")
                .arg(outcome)
                .query_async::<Option<String>>(&mut conn)
                .await
        };
        match tokio::time::timeout(DEADLINE_GRACE - 2 * MARGIN, ask).await {
            Ok(Ok(Some(flags))) if flags.len() == batch.events.len() => Ok(Published {
                duplicate: flags.bytes().map(|b| b == b'1').collect(),
            }),
            Ok(Ok(_)) => Err(BusError::unavailable(format!(
                "{error}; nothing was written"
            ))),
            Ok(Err(e)) => Err(BusError::unavailable(format!(
                "{error}; the outcome is unknown: {e}"
            ))),
            Err(_) => Err(BusError::unavailable(format!(
                "{error}; the outcome is unknown: no answer"
            ))),
        }
    }

    /// Sends `TIME` on the publish connection every [`PROBE_INTERVAL`]:
    /// whether Redis answers within [`PROBE_TIMEOUT`] is what `state()`
    /// reports, and the answer gives the clock offset for deadlines.
    async fn probe(self: Arc<Self>, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(PROBE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let Ok(mut conn) = self.publish_conn() else {
                self.answering.store(false, Ordering::Relaxed);
                continue;
            };
            let sent = SystemTime::now();
            let cmd = redis::cmd("TIME");
            let time = cmd.query_async::<(i64, i64)>(&mut conn);
            match tokio::time::timeout(PROBE_TIMEOUT, time).await {
                Ok(Ok((secs, micros))) => {
                    let rtt = sent.elapsed().unwrap_or_default();
                    let ours = i64::try_from(unix_ms(sent + rtt / 2)).unwrap_or(i64::MAX);
                    let theirs = secs.saturating_mul(1000).saturating_add(micros / 1000);
                    self.clock_offset_ms
                        .store(theirs.saturating_sub(ours), Ordering::Relaxed);
                    self.answering.store(true, Ordering::Relaxed);
                }
                Ok(Err(e)) => {
                    self.answering.store(false, Ordering::Relaxed);
                    self.lost(&e);
                }
                Err(_) => {
                    if self.answering.swap(false, Ordering::Relaxed) {
                        tracing::warn!(
                            timeout = ?PROBE_TIMEOUT,
                            "Redis does not answer its health probe; the bus counts as down"
                        );
                    }
                    // A late answer must not be taken for the next command's.
                    *self.conn.lock() = None;
                    self.reconnect.notify_one();
                }
            }
        }
    }

    /// Keeps the publish connection up until cancelled.
    async fn maintain(self: Arc<Self>, cancel: CancellationToken) {
        let mut backoff = Backoff::new();
        loop {
            if self.conn.lock().is_none() {
                match self
                    .connect("publisher", Some(PUBLISH_TIMEOUT + DEADLINE_GRACE))
                    .await
                {
                    Ok(c) => {
                        *self.conn.lock() = Some(c);
                        backoff.reset();
                        tracing::info!("Redis publish connection up");
                    }
                    Err(e) => {
                        // Loud once per outage, then quiet: the state is in /readyz.
                        if backoff.is_fresh() {
                            tracing::warn!(error = %e, "cannot reach Redis; retrying");
                        } else {
                            tracing::debug!(error = %e, "Redis connect failed");
                        }
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            _ = tokio::time::sleep(backoff.next()) => continue,
                        }
                    }
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.reconnect.notified() => {}
            }
        }
    }

    /// Reads every topic stream into the feed until cancelled, resuming
    /// from the last id seen after every reconnect.
    async fn read(self: Arc<Self>, cancel: CancellationToken) {
        let mut backoff = Backoff::new();
        let mut last: Option<Vec<String>> = None;
        loop {
            let err = tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.read_connected(&mut last, &mut backoff) => match r {
                    Err(e) => e,
                    Ok(never) => match never {},
                },
            };
            self.reader_up.store(false, Ordering::Relaxed);
            tracing::warn!(error = %err, "Redis read connection lost; reconnecting");
            // The publish connection most likely went with it: replace it
            // now rather than fail the next webhook request on it.
            *self.conn.lock() = None;
            self.reconnect.notify_one();
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(backoff.next()) => {}
            }
        }
    }

    /// One connection's worth of reading; returns only when it failed.
    async fn read_connected(
        &self,
        last: &mut Option<Vec<String>>,
        backoff: &mut Backoff,
    ) -> Result<Infallible, redis::RedisError> {
        let mut conn = self.connect("reader", None).await?;
        let reconnected = last.is_some();
        if !reconnected {
            *last = Some(self.tails(&mut conn).await?);
        }
        let ids = last.as_mut().expect("set above");
        if reconnected {
            // What was written while this replica was away may be gone.
            for (slot, id) in ids.iter().enumerate() {
                self.check_gap(&mut conn, slot, id).await?;
            }
        }
        self.reader_up.store(true, Ordering::Relaxed);
        backoff.reset();
        loop {
            let cmd = if self.streams.is_empty() {
                // Nothing to read; still notice when the server goes away.
                tokio::time::sleep(BLOCK).await;
                redis::cmd("PING")
            } else {
                let mut cmd = redis::cmd("XREAD");
                cmd.arg("COUNT")
                    .arg(PAGE)
                    .arg("BLOCK")
                    .arg(BLOCK.as_millis() as u64)
                    .arg("STREAMS");
                for (_, k) in &self.streams {
                    cmd.arg(k);
                }
                cmd.arg(&*ids);
                cmd
            };
            let reply: Value =
                match tokio::time::timeout(BLOCK + TIMEOUT, cmd.query_async(&mut conn)).await {
                    Ok(r) => r?,
                    Err(_) => {
                        return Err(redis::RedisError::from((
                            redis::ErrorKind::Io,
                            "XREAD timed out",
                        )));
                    }
                };
            if self.streams.is_empty() || matches!(reply, Value::Nil) {
                continue;
            }
            let reply: StreamReadReply = redis::from_redis_value(reply)?;
            for key in reply.keys {
                let Some(slot) = self.streams.iter().position(|(_, k)| *k == key.key) else {
                    continue;
                };
                let topic = &self.streams[slot].0;
                if key.ids.len() >= self.history.min(PAGE) {
                    let before = ids[slot].clone();
                    self.check_gap(&mut conn, slot, &before).await?;
                }
                for entry in key.ids {
                    ids[slot] = entry.id.clone();
                    if let Some((event, cursor)) = decode(topic, &entry) {
                        self.feed.send(Arc::new(event), cursor);
                    }
                }
            }
        }
    }

    /// Tells the feed when entries of stream `slot` after `after` (the last
    /// id read) may have been trimmed before this replica read them: the
    /// oldest entry kept is newer than `after`. Trimming removes the oldest
    /// entries first, so while `after` (or anything older) is kept nothing
    /// newer is gone. (`XINFO STREAM`'s `max-deleted-entry-id` would be
    /// exact, but Redis moves it for `XDEL` only, not for trimming.)
    async fn check_gap(
        &self,
        conn: &mut MultiplexedConnection,
        slot: usize,
        after: &str,
    ) -> redis::RedisResult<()> {
        let (topic, key) = &self.streams[slot];
        let after = parse_id(after).unwrap_or_default();
        let oldest: StreamRangeReply = redis::cmd("XRANGE")
            .arg(key)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query_async(conn)
            .await?;
        if oldest
            .ids
            .first()
            .and_then(|e| parse_id(&e.id))
            .is_some_and(|first| first > after)
        {
            tracing::warn!(%topic, after = %after, "events may have left the Redis stream before this replica read them; raise bus.history");
            self.feed.lagged(0, Some(topic.clone()));
        }
        Ok(())
    }

    /// The newest id of every stream (`0-0` for an empty one): where a
    /// replica that just started begins.
    async fn tails(&self, conn: &mut MultiplexedConnection) -> redis::RedisResult<Vec<String>> {
        if self.streams.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (_, k) in &self.streams {
            pipe.cmd("XREVRANGE")
                .arg(k)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1);
        }
        let replies: Vec<StreamRangeReply> = pipe.query_async(conn).await?;
        Ok(replies
            .into_iter()
            .map(|r| {
                r.ids
                    .first()
                    .map_or_else(|| "0-0".to_owned(), |e| e.id.clone())
            })
            .collect())
    }

    async fn replay(&self, topic: Arc<str>, after: Cursor) -> Result<Replay, BusError> {
        let mut conn = self.publish_conn()?;
        let key = format!("{}:topic:{topic}", self.tag);
        let Some((first, end)) = ends(&mut conn, &key).await? else {
            return Ok(Replay::Events(Vec::new()));
        };
        // Trimming removes the oldest entries: the history reaches back to
        // the cursor as long as something at or before it is still there.
        if first > after {
            return Ok(Replay::Expired);
        }
        let events = range(
            &mut conn,
            &key,
            &topic,
            format!("({}-{}", after.major, after.minor),
            end,
        )
        .await?;
        Ok(Replay::Events(events))
    }

    /// Stream ids are milliseconds: the entries from `<ms>-0` on. The
    /// history reaches back to `since` when nothing was ever trimmed
    /// (`entries-added` is the length) or its oldest entry is older.
    async fn replay_since(&self, topic: Arc<str>, since: SystemTime) -> Result<Replay, BusError> {
        let mut conn = self.publish_conn()?;
        let key = format!("{}:topic:{topic}", self.tag);
        let Some((first, end)) = ends(&mut conn, &key).await? else {
            return Ok(Replay::Events(Vec::new()));
        };
        let ms = unix_ms(since);
        if first.major >= ms {
            let info: std::collections::HashMap<String, Value> = redis::cmd("XINFO")
                .arg("STREAM")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .map_err(BusError::unavailable)?;
            let number = |k: &str| match info.get(k) {
                Some(Value::Int(n)) => Some(*n),
                _ => None,
            };
            if number("entries-added") != number("length") {
                return Ok(Replay::TooOld {
                    oldest: Some(std::time::UNIX_EPOCH + Duration::from_millis(first.major)),
                });
            }
        }
        if end.major < ms {
            return Ok(Replay::Events(Vec::new()));
        }
        let events = range(&mut conn, &key, &topic, format!("{ms}-0"), end).await?;
        Ok(Replay::Events(events))
    }
}

/// The oldest and the newest entry id of `key`, `None` when it is empty.
async fn ends(
    conn: &mut MultiplexedConnection,
    key: &str,
) -> Result<Option<(Cursor, Cursor)>, BusError> {
    let (first, newest): (StreamRangeReply, StreamRangeReply) = redis::pipe()
        .atomic()
        .cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .cmd("XREVRANGE")
        .arg(key)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(conn)
        .await
        .map_err(BusError::unavailable)?;
    let id = |r: &StreamRangeReply| r.ids.first().and_then(|e| parse_id(&e.id));
    Ok(id(&first).zip(id(&newest)))
}

/// The entries of `key` from `start` (an XRANGE bound) to `end`, in pages.
async fn range(
    conn: &mut MultiplexedConnection,
    key: &str,
    topic: &Arc<str>,
    start: String,
    end: Cursor,
) -> Result<Vec<(Cursor, Arc<Event>)>, BusError> {
    let mut events = Vec::new();
    let mut start = start;
    loop {
        let page: StreamRangeReply = redis::cmd("XRANGE")
            .arg(key)
            .arg(&start)
            .arg(format!("{}-{}", end.major, end.minor))
            .arg("COUNT")
            .arg(PAGE)
            .query_async(conn)
            .await
            .map_err(BusError::unavailable)?;
        let Some(tail) = page.ids.last().and_then(|e| parse_id(&e.id)) else {
            return Ok(events);
        };
        for entry in &page.ids {
            if let Some((event, cursor)) = decode(topic, entry) {
                events.push((cursor, Arc::new(event)));
            }
        }
        if tail >= end {
            return Ok(events);
        }
        start = format!("({}-{}", tail.major, tail.minor);
    }
}

fn parse_id(id: &str) -> Option<Cursor> {
    let (ms, seq) = id.split_once('-')?;
    Some(Cursor {
        major: ms.parse().ok()?,
        minor: seq.parse().ok()?,
    })
}

fn decode(topic: &Arc<str>, entry: &StreamId) -> Option<(Event, Cursor)> {
    let cursor = parse_id(&entry.id)?;
    let bytes = |field: &str| match entry.map.get(field) {
        Some(Value::BulkString(b)) => Some(b.as_slice()),
        _ => None,
    };
    let payload = match bytes("p").map(serde_json::from_slice) {
        Some(Ok(p)) => p,
        _ => {
            tracing::warn!(%topic, id = %entry.id, "Redis stream entry without a JSON payload; skipped");
            return None;
        }
    };
    let id = bytes("i")
        .and_then(|b| std::str::from_utf8(b).ok())
        .map(Arc::from);
    Some((
        Event {
            topic: topic.clone(),
            id,
            payload,
        },
        cursor,
    ))
}

impl Bus for RedisBus {
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
        let cancel = shutdown.token().clone();
        shutdown.spawn(self.shared.clone().maintain(cancel.clone()));
        shutdown.spawn(self.shared.clone().probe(cancel.clone()));
        shutdown.spawn(self.shared.clone().read(cancel));
    }

    fn check(&self) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            let mut conn = self
                .shared
                .connect("check", Some(TIMEOUT))
                .await
                .map_err(BusError::unavailable)?;
            redis::cmd("PING")
                .query_async::<()>(&mut conn)
                .await
                .map_err(BusError::unavailable)
        })
    }

    fn state(&self) -> BusState {
        if self.shared.reader_up.load(Ordering::Relaxed)
            && self.shared.answering.load(Ordering::Relaxed)
            && self.shared.conn.lock().is_some()
        {
            BusState::Connected
        } else {
            BusState::Disconnected
        }
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_are_cursors_in_stream_order() {
        let a = parse_id("1700000000000-0").unwrap();
        let b = parse_id("1700000000000-7").unwrap();
        let c = parse_id("1700000000001-0").unwrap();
        assert!(a < b && b < c);
        // What clients see parses back to the same entry.
        for id in [a, b, c] {
            assert_eq!(id.to_string().parse::<Cursor>().unwrap(), id);
        }
        assert!(parse_id("17").is_none());
    }

    #[test]
    fn entries_decode_to_events() {
        let entry = StreamId {
            id: "5-1".into(),
            map: [
                ("p".to_owned(), Value::BulkString(br#"{"a":1}"#.to_vec())),
                ("i".to_owned(), Value::BulkString(b"evt".to_vec())),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        };
        let topic: Arc<str> = Arc::from("t");
        let (event, cursor) = decode(&topic, &entry).unwrap();
        assert_eq!(cursor, Cursor { major: 5, minor: 1 });
        assert_eq!(event.id.as_deref(), Some("evt"));
        assert_eq!(event.payload, serde_json::json!({"a": 1}));
    }
}
