//! One graphql-transport-ws session: the protocol state machine of a socket.
//!
//! Generic over any `Stream<Item = Inbound> + Sink<Outbound>`, so tests
//! drive it with channels. The loop is a `select!` whose arms await only
//! cancel-safe futures (`next`, `recv`, `raised`, `tick`, a pinned
//! `Sleep`); writes happen in arm bodies, guarded so that a client that
//! stops reading cannot pin the session forever.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use http::HeaderMap;
use serde_json::{Map, Value, json};
use tokio::time::{Instant, Interval, MissedTickBehavior, Sleep};
use tower::{Service, ServiceExt};

use super::inbound::{Admission, InboundService, MessageKind};
use super::protocol::{ClientMessage, CloseCode, Frame, Inbound, Outbound, SubscribePayload};
use super::{ExecuteError, Shared};
use crate::bus::{BusError, Cursor, Replay};
use crate::graphql::{GraphQLError, Prepared, PreparedSubscription};
use crate::metrics::Refusal;
use crate::signal::Signal;
use crate::subscriptions::dispatcher::with_cursor;
use crate::subscriptions::outbox::{Inbox, Outbox, outbox};
use crate::subscriptions::registry::{ConnectionSlot, Subscriber};
use crate::subscriptions::{Delivery, FetchCredentials, Route, SubscriptionHandle};

/// The close reason for a client that kept flooding after being told.
const FLOODING: &str = "Too many messages";

/// How long a close frame may take to reach the client (queued behind
/// frames a slow consumer has not read yet), and the client's close to
/// come back, before the connection is dropped: a client that pauses
/// reading for a moment still learns why it was closed.
pub const CLOSE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(3);

/// The close reason of a client whose outbound queue overflowed.
const SLOW: &str = "slow consumer: too many undelivered messages";

/// Deliveries written per flush at most, so that one busy connection
/// still yields to its own inbound messages.
const MAX_WRITE_BATCH: usize = 512;

/// A running operation of this connection.
enum Op {
    /// Dropping the handle unsubscribes.
    Subscription {
        serial: u64,
        _handle: SubscriptionHandle,
    },
    /// A query or mutation in flight at the upstream.
    Single { serial: u64 },
}

impl Op {
    fn serial(&self) -> u64 {
        match self {
            Op::Subscription { serial, .. } | Op::Single { serial } => *serial,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deadline {
    Off,
    /// `connection_init` must arrive before it (close 4408).
    Init,
    /// Something must arrive after a heartbeat ping before it.
    Heartbeat,
}

/// How the loop goes on after one event.
enum Flow {
    Continue,
    Close(CloseCode, String),
    /// The socket is gone or unusable: just drop it.
    Stop,
}

type Single = BoxFuture<'static, (String, u64, Result<Bytes, ExecuteError>)>;
type ReplayDone = BoxFuture<'static, (String, u64, Result<Replay, BusError>)>;

/// Events a resuming subscription buffers from the live stream while its
/// replay is fetched, as a multiple of `limits.outbound_queue`; past it the
/// client is a slow consumer.
const RESUME_BUFFER_FACTOR: usize = 4;

/// A subscription that asked for cursors (`extensions.resume`).
struct Resuming {
    serial: u64,
    /// `Some` while the replay of missed events is being fetched; live
    /// deliveries wait here meanwhile.
    replay: Option<Pending>,
    /// The newest cursor sent (or the client's own): live deliveries at or
    /// before it were covered by the replay and are dropped.
    last: Option<Cursor>,
}

struct Pending {
    prepared: Arc<PreparedSubscription>,
    route: Route,
    buffer: Vec<Delivery>,
}

/// What to do with a delivery for a resuming subscription.
enum Admit {
    Send(Delivery),
    Hold,
    Overflow,
}

impl Resuming {
    fn admit(&mut self, d: Delivery, limit: usize) -> Admit {
        // Planned before this member was registered: the replay covers it.
        let Some(cursor) = d.cursor else {
            return Admit::Hold;
        };
        if let Some(p) = &mut self.replay {
            if p.buffer.len() >= limit {
                return Admit::Overflow;
            }
            p.buffer.push(d);
            return Admit::Hold;
        }
        if self.last.is_some_and(|l| cursor <= l) {
            return Admit::Hold;
        }
        self.last = Some(cursor);
        Admit::Send(d)
    }
}

/// `payload.extensions.resume`: `{}` (start now, send cursors) or
/// `{"after": "<cursor>"}` (first the missed events after the cursor).
fn resume_request(
    extensions: Option<&Map<String, Value>>,
) -> Result<Option<Option<Cursor>>, String> {
    let Some(resume) = extensions.and_then(|e| e.get("resume")) else {
        return Ok(None);
    };
    let Value::Object(r) = resume else {
        return Err("extensions.resume must be an object".into());
    };
    if let Some(k) = r.keys().find(|k| *k != "after") {
        return Err(format!("extensions.resume has an unknown key {k:?}"));
    }
    match r.get("after") {
        None | Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(c)) => c
            .parse::<Cursor>()
            .map(|c| Some(Some(c)))
            .map_err(|e| format!("extensions.resume.after: {e}")),
        Some(_) => Err("extensions.resume.after must be a cursor string".into()),
    }
}

/// The state of one connection.
pub struct Session<T> {
    io: T,
    shared: Arc<Shared>,
    cancel: Signal,
    slot: ConnectionSlot,
    outbox: Outbox,
    inbox: Inbox,
    /// Credentials forwarded with queries and mutations.
    headers: HeaderMap,
    claims: Arc<Value>,
    init_received: bool,
    acked: bool,
    ops: HashMap<String, Op>,
    /// Serials of live subscriptions: deliveries queued before a client
    /// `complete` are dropped, not sent. A vector: connections hold few
    /// subscriptions and a scan beats hashing on every delivery.
    live: Vec<u64>,
    next_serial: u64,
    singles: FuturesUnordered<Single>,
    /// Subscriptions that asked for cursors; empty for most connections.
    resuming: Vec<Resuming>,
    replays: FuturesUnordered<ReplayDone>,
    deadline: Pin<Box<Sleep>>,
    deadline_kind: Deadline,
    heartbeat: Option<Interval>,
    /// When the credential expires (a JWT's `exp`): close `4403` then. A
    /// timer entry of this task, not a task of its own.
    expiry: Option<Pin<Box<Sleep>>>,
    /// This connection's inbound-message policies.
    inbound: InboundService,
}

impl<T, E> Session<T>
where
    T: Stream<Item = Inbound> + Sink<Outbound, Error = E> + Unpin,
    E: std::fmt::Display,
{
    /// A session for a socket just upgraded; `headers` are those of its
    /// upstream calls, built by [`crate::proxy::on_behalf_of`] from the
    /// upgrade request.
    pub fn new(io: T, shared: Arc<Shared>, headers: HeaderMap, cancel: Signal) -> Self {
        let (outbox, inbox) = outbox(shared.limits.outbound_queue);
        let slot = shared.registry.connect();
        let deadline = Box::pin(tokio::time::sleep(shared.limits.init_timeout));
        Self {
            io,
            cancel,
            slot,
            outbox,
            inbox,
            headers,
            claims: Arc::new(Value::Object(Map::new())),
            init_received: false,
            acked: false,
            ops: HashMap::new(),
            live: Vec::new(),
            next_serial: 0,
            singles: FuturesUnordered::new(),
            resuming: Vec::new(),
            replays: FuturesUnordered::new(),
            deadline,
            deadline_kind: Deadline::Init,
            heartbeat: None,
            expiry: None,
            inbound: shared.inbound.service(),
            shared,
        }
    }

    /// Runs until either side closes; everything the session held is
    /// released when it returns.
    pub async fn run(mut self) {
        let end = loop {
            let flow = tokio::select! {
                _ = self.cancel.raised() => Flow::Close(CloseCode::GoingAway, "server shutting down".into()),
                _ = self.inbox.slow.raised() => {
                    Flow::Close(CloseCode::TryAgainLater, SLOW.into())
                }
                _ = &mut self.deadline, if self.deadline_kind != Deadline::Off => self.on_deadline(),
                Some(d) = self.inbox.rx.recv() => self.on_delivery(d).await,
                Some(r) = self.singles.next(), if !self.singles.is_empty() => self.on_single(r).await,
                Some(r) = self.replays.next(), if !self.replays.is_empty() => self.on_replay(r).await,
                _ = async { self.heartbeat.as_mut().expect("guarded").tick().await }, if self.heartbeat.is_some() => {
                    self.on_heartbeat().await
                }
                _ = async { self.expiry.as_mut().expect("guarded").await }, if self.expiry.is_some() => {
                    Flow::Close(CloseCode::Forbidden, "Forbidden: token expired".into())
                }
                m = self.io.next() => self.on_inbound(m).await,
            };
            match flow {
                Flow::Continue => continue,
                end => break end,
            }
        };
        if let Flow::Close(code, reason) = end {
            if let Some(r) = refusal(code, &reason) {
                self.shared.metrics.refused(r);
            }
            tracing::debug!(code = code as u16, %reason, "closing websocket");
            // Nothing more is queued for a socket that is closing.
            self.ops.clear();
            self.live.clear();
            self.singles = FuturesUnordered::new();
            let io = &mut self.io;
            let close = async move {
                io.send(Outbound::close(code, reason)).await?;
                // The transport's close ends our side and reads what the
                // client still sends: closing a socket with unread input
                // resets it, and the reset can cost the client the frame.
                io.close().await
            };
            // The client may not read at all (slow consumer): bounded.
            let _ = tokio::time::timeout(CLOSE_DEADLINE, close).await;
        }
        // Dropping `ops` here unsubscribes everything this socket held.
    }

    fn on_deadline(&mut self) -> Flow {
        match std::mem::replace(&mut self.deadline_kind, Deadline::Off) {
            Deadline::Init => Flow::Close(
                CloseCode::ConnectionInitTimeout,
                "Connection initialisation timeout".into(),
            ),
            Deadline::Heartbeat => Flow::Close(CloseCode::GoingAway, "heartbeat timeout".into()),
            Deadline::Off => Flow::Continue,
        }
    }

    async fn on_heartbeat(&mut self) -> Flow {
        if self.deadline_kind == Deadline::Off {
            let at = Instant::now() + self.shared.limits.heartbeat_timeout;
            self.deadline.as_mut().reset(at);
            self.deadline_kind = Deadline::Heartbeat;
        }
        self.write([Outbound::Ping]).await
    }

    fn alive(&mut self) {
        if self.deadline_kind == Deadline::Heartbeat {
            self.deadline_kind = Deadline::Off;
        }
    }

    async fn on_delivery(&mut self, first: Delivery) -> Flow {
        let mut frames = Vec::with_capacity(16);
        let mut next = Some(first);
        let limit = self.shared.limits.outbound_queue * RESUME_BUFFER_FACTOR;
        while let Some(d) = next.take() {
            if self.live.contains(&d.serial) {
                let d = match self.resuming.iter_mut().find(|r| r.serial == d.serial) {
                    None => Some(d),
                    Some(r) => match r.admit(d, limit) {
                        Admit::Send(d) => Some(d),
                        Admit::Hold => None,
                        Admit::Overflow => {
                            self.shared
                                .registry
                                .stats
                                .slow_consumers
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            return Flow::Close(CloseCode::TryAgainLater, SLOW.into());
                        }
                    },
                };
                if let Some(d) = d {
                    frames.push(Outbound::Text(Frame::from_trusted(d.frame)));
                }
            }
            if frames.len() < MAX_WRITE_BATCH {
                next = self.inbox.rx.try_recv().ok();
            }
        }
        self.write(frames).await
    }

    async fn on_inbound(&mut self, inbound: Option<Inbound>) -> Flow {
        let msg = match inbound {
            None => return Flow::Stop,
            Some(Inbound::Closed) => {
                // Lets tungstenite send its reply to the client's close.
                let _ =
                    tokio::time::timeout(std::time::Duration::from_secs(1), self.io.flush()).await;
                return Flow::Stop;
            }
            Some(Inbound::TooBig) => {
                return Flow::Close(CloseCode::MessageTooBig, "message too big".into());
            }
            Some(Inbound::Invalid(reason)) => return Flow::Close(CloseCode::BadRequest, reason),
            Some(Inbound::Alive) => {
                self.alive();
                return Flow::Continue;
            }
            Some(Inbound::Message(m)) => m,
        };
        self.alive();
        let admission = match self.inbound.ready().await {
            Ok(svc) => svc.call(MessageKind::of(&msg)).await,
            Err(never) => match never {},
        };
        match admission {
            Ok(Admission::Admit) => {}
            Ok(Admission::Limited { retry_after }) => {
                return self.on_limited(msg, retry_after).await;
            }
            Ok(Admission::Flooding) => {
                return Flow::Close(CloseCode::TooManyRequests, FLOODING.into());
            }
            Err(never) => match never {},
        }
        match msg {
            ClientMessage::ConnectionInit { payload } => self.on_init(payload).await,
            // Answered in any state, like the reference server does.
            ClientMessage::Ping { payload } => {
                self.write([Outbound::Text(Frame::pong(payload.as_ref()))])
                    .await
            }
            ClientMessage::Pong { .. } => Flow::Continue,
            ClientMessage::Subscribe { id, payload } => self.on_subscribe(id, payload).await,
            ClientMessage::Complete { id } => {
                // Not echoed; unknown or finished ids are ignored.
                if let Some(op) = self.ops.remove(&id) {
                    self.forget(op.serial());
                }
                Flow::Continue
            }
        }
    }

    /// A message refused by the inbound stack's rate limit: an `error` for
    /// a `subscribe`; a `ping` goes unanswered (there is no operation).
    async fn on_limited(&mut self, msg: ClientMessage, retry_after: std::time::Duration) -> Flow {
        self.shared.metrics.refused(Refusal::rate_limit_message);
        match msg {
            ClientMessage::Subscribe { id, .. } => {
                let e = coded_error(
                    &format!(
                        "Too many messages on this connection: retry after {} ms",
                        retry_after.as_millis().max(1)
                    ),
                    "RATE_LIMITED",
                );
                self.write([Outbound::Text(Frame::error(&id, &[e]))]).await
            }
            _ => Flow::Continue,
        }
    }

    async fn on_init(&mut self, payload: Option<Map<String, Value>>) -> Flow {
        if self.init_received {
            return Flow::Close(
                CloseCode::TooManyRequests,
                "Too many initialisation requests".into(),
            );
        }
        self.init_received = true;
        self.deadline_kind = Deadline::Off;
        if let Some(p) = &payload {
            self.shared.init_headers.merge(&mut self.headers, p);
        }
        let auth = self.shared.authenticator.authenticate(&self.headers);
        // Upstream authentication may take up to upstream.timeout: shutdown
        // must not wait for it.
        let auth = tokio::select! {
            r = auth => r,
            _ = self.cancel.raised() => return Flow::Stop,
        };
        match auth {
            Ok(identity) => {
                if let Some(at) = identity.expires {
                    let Ok(left) = at.duration_since(std::time::SystemTime::now()) else {
                        return Flow::Close(
                            CloseCode::Forbidden,
                            "Forbidden: token expired".into(),
                        );
                    };
                    self.expiry = Some(Box::pin(tokio::time::sleep(left)));
                }
                self.claims = Arc::new(identity.claims);
            }
            Err(e) => {
                let (code, reason) = crate::error::auth_close(&e);
                return Flow::Close(code, reason);
            }
        }
        // Acknowledged before the ack is written: a subscribe right behind
        // the ack is valid.
        self.acked = true;
        let period = self.shared.limits.heartbeat_interval;
        let mut heartbeat = tokio::time::interval_at(Instant::now() + period, period);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Skip);
        self.heartbeat = Some(heartbeat);
        self.write([Outbound::Text(Frame::connection_ack(None))])
            .await
    }

    async fn on_subscribe(&mut self, id: String, payload: SubscribePayload) -> Flow {
        if !self.acked {
            return Flow::Close(CloseCode::Unauthorized, "Unauthorized".into());
        }
        if self.ops.contains_key(&id) {
            return Flow::Close(
                CloseCode::SubscriberAlreadyExists,
                format!("Subscriber for {id} already exists"),
            );
        }
        let variables = payload.variables.clone().unwrap_or_default();
        let schema = self.shared.schema.current();
        let shared = self.shared.clone();
        let query = payload.query.clone();
        let operation_name = payload.operation_name.clone();
        // Large documents are prepared off the async workers (graphql::offload).
        let prepared = crate::graphql::offload::run(query.len(), move || {
            schema.prepare_with(&query, operation_name.as_deref(), &variables, &|field| {
                shared.routes.resolve_config(field)
            })
        })
        .await;
        let prepared = match prepared {
            Ok(Ok(p)) => p,
            Ok(Err(errors)) => {
                return self
                    .write([Outbound::Text(Frame::error(&id, &errors))])
                    .await;
            }
            Err(_) => {
                tracing::error!("the engine panicked preparing an operation");
                return Flow::Close(
                    CloseCode::InternalServerError,
                    "Internal server error".into(),
                );
            }
        };
        let resume = match resume_request(payload.extensions.as_ref()) {
            Ok(r) => r,
            Err(message) => {
                let e = coded_error(&message, "INVALID_CURSOR");
                return self.write([Outbound::Text(Frame::error(&id, &[e]))]).await;
            }
        };
        self.next_serial += 1;
        let serial = self.next_serial;
        match prepared {
            Prepared::Subscription(p) => {
                let route = self.shared.routes.route(p.field());
                if resume.is_some() && p.fetch().is_some() {
                    let e = coded_error(
                        "extensions.resume is not supported on a field completed from the upstream (resolve): subscribe without it",
                        "RESUME_UNSUPPORTED",
                    );
                    return self.write([Outbound::Text(Frame::error(&id, &[e]))]).await;
                }
                if !route.rules.allows(&self.claims, p.rule_args()) {
                    let e = coded_error("Forbidden: not allowed to subscribe", "FORBIDDEN");
                    return self.write([Outbound::Text(Frame::error(&id, &[e]))]).await;
                }
                let count = self
                    .ops
                    .values()
                    .filter(|o| matches!(o, Op::Subscription { .. }))
                    .count();
                if count >= self.shared.limits.counts.max_subscriptions() {
                    self.shared
                        .metrics
                        .refused(Refusal::rate_limit_subscription);
                    let e =
                        coded_error("Too many subscriptions on this connection", "RATE_LIMITED");
                    return self.write([Outbound::Text(Frame::error(&id, &[e]))]).await;
                }
                let topic = route.topic.clone();
                let pending = Pending {
                    prepared: p.clone(),
                    route: route.clone(),
                    buffer: Vec::new(),
                };
                // Registered before the replay is fetched: an event published
                // meanwhile is in the replay, or live, or both (then the
                // cursor drops the second copy), never in neither.
                let handle = self.shared.registry.register(
                    &self.slot,
                    Subscriber {
                        prepared: p,
                        route,
                        claims: self.claims.clone(),
                        op_id: &id,
                        serial,
                        resume: resume.is_some(),
                        outbox: self.outbox.clone(),
                        credentials: FetchCredentials::from_headers(&self.headers),
                    },
                );
                self.live.push(serial);
                if let Some(after) = resume {
                    let replay = after.map(|after| {
                        let fetch = self.shared.bus.replay(topic, after);
                        let op_id = id.clone();
                        self.replays
                            .push(Box::pin(async move { (op_id, serial, fetch.await) }));
                        pending
                    });
                    self.resuming.push(Resuming {
                        serial,
                        replay,
                        last: after,
                    });
                }
                self.ops.insert(
                    id,
                    Op::Subscription {
                        serial,
                        _handle: handle,
                    },
                );
            }
            Prepared::Passthrough(_) => {
                if self.singles.len() >= self.shared.limits.max_inflight {
                    self.shared.metrics.refused(Refusal::rate_limit_inflight);
                    let e = coded_error(
                        &format!(
                            "Too many queries and mutations in flight on this connection (at most {}): wait for one to finish",
                            self.shared.limits.max_inflight
                        ),
                        "RATE_LIMITED",
                    );
                    return self.write([Outbound::Text(Frame::error(&id, &[e]))]).await;
                }
                let body = json!({
                    "query": payload.query,
                    "operationName": payload.operation_name,
                    "variables": payload.variables,
                    "extensions": payload.extensions,
                });
                let run = self
                    .shared
                    .executor
                    .execute(Bytes::from(body.to_string()), self.headers.clone());
                let op_id = id.clone();
                self.singles
                    .push(Box::pin(async move { (op_id, serial, run.await) }));
                self.ops.insert(id, Op::Single { serial });
            }
        }
        Flow::Continue
    }

    /// Stops delivering to subscription `serial` (its op is gone).
    fn forget(&mut self, serial: u64) {
        self.live.retain(|s| *s != serial);
        self.resuming.retain(|r| r.serial != serial);
    }

    /// The missed events of a resuming subscription arrived: sends those
    /// that pass its filter, then the live ones buffered meanwhile that are
    /// newer, and turns it live.
    async fn on_replay(
        &mut self,
        (id, serial, result): (String, u64, Result<Replay, BusError>),
    ) -> Flow {
        match self.ops.get(&id) {
            Some(op) if op.serial() == serial => {}
            // Completed by the client meanwhile.
            _ => return Flow::Continue,
        }
        let Some(r) = self.resuming.iter_mut().find(|r| r.serial == serial) else {
            return Flow::Continue;
        };
        let pending = r
            .replay
            .take()
            .expect("a replay is fetched only while pending");
        let refusal = match result {
            Ok(Replay::Events(events)) => {
                let mut frames = Vec::with_capacity(events.len() + pending.buffer.len());
                for (cursor, event) in &events {
                    if r.last.is_some_and(|l| *cursor <= l) {
                        continue;
                    }
                    r.last = Some(*cursor);
                    if !pending.route.rules.matches(
                        &event.payload,
                        pending.prepared.rule_args(),
                        &self.claims,
                    ) {
                        continue;
                    }
                    let payload = with_cursor(&pending.prepared.project(&event.payload), *cursor);
                    if std::str::from_utf8(&payload).is_ok() {
                        frames.push(Outbound::Text(Frame::next(&id, &payload)));
                    }
                }
                for d in pending.buffer {
                    if let Admit::Send(d) = r.admit(d, usize::MAX) {
                        frames.push(Outbound::Text(Frame::from_trusted(d.frame)));
                    }
                }
                return self.write(frames).await;
            }
            Ok(Replay::Expired) => coded_error(
                "the resume cursor is older than the retained history: events after it may be lost; subscribe again without a cursor",
                "CURSOR_EXPIRED",
            ),
            Err(e) => coded_error(&format!("cannot resume: {e}"), "BUS_UNAVAILABLE"),
        };
        self.ops.remove(&id);
        self.forget(serial);
        self.write([Outbound::Text(Frame::error(&id, &[refusal]))])
            .await
    }

    async fn on_single(
        &mut self,
        (id, serial, result): (String, u64, Result<Bytes, ExecuteError>),
    ) -> Flow {
        // Completed by the client meanwhile, or the id was reused: drop it.
        match self.ops.get(&id) {
            Some(Op::Single { serial: s }) if *s == serial => {
                self.ops.remove(&id);
            }
            _ => return Flow::Continue,
        }
        let frames = match result {
            Ok(body) => match serde_json::from_slice::<Value>(&body) {
                Ok(Value::Object(o)) if o.contains_key("data") => vec![
                    // Valid JSON parsed from these bytes, hence UTF-8.
                    Outbound::Text(Frame::next(&id, &body)),
                    Outbound::Text(Frame::complete(&id)),
                ],
                Ok(Value::Object(mut o)) if matches!(o.get("errors"), Some(Value::Array(_))) => {
                    let errors: Vec<GraphQLError> = match o.remove("errors") {
                        Some(Value::Array(list)) => list.into_iter().map(upstream_error).collect(),
                        _ => Vec::new(),
                    };
                    vec![Outbound::Text(Frame::error(&id, &errors))]
                }
                _ => vec![Outbound::Text(Frame::error(
                    &id,
                    &[coded_error(
                        "the upstream sent an invalid response",
                        "UPSTREAM_UNAVAILABLE",
                    )],
                ))],
            },
            Err(e) => vec![Outbound::Text(Frame::error(
                &id,
                &[coded_error(&e.to_string(), "UPSTREAM_UNAVAILABLE")],
            ))],
        };
        self.write(frames).await
    }

    /// Writes frames with one flush. A client that does not take them
    /// within the heartbeat timeout, or a slow-consumer mark or shutdown
    /// meanwhile, ends the session.
    async fn write(&mut self, frames: impl IntoIterator<Item = Outbound>) -> Flow {
        let io = &mut self.io;
        let send = async move {
            for f in frames {
                io.feed(f).await?;
            }
            io.flush().await
        };
        tokio::select! {
            // The write first: the other arms only matter when it is stuck.
            biased;
            r = tokio::time::timeout(self.shared.limits.heartbeat_timeout, send) => match r {
                Ok(Ok(())) => Flow::Continue,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "websocket write failed");
                    Flow::Stop
                }
                Err(_) => {
                    // Not reading for a whole heartbeat timeout: a slow
                    // consumer too, told if it reads within the deadline.
                    self.shared
                        .registry
                        .stats
                        .slow_consumers
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    Flow::Close(CloseCode::TryAgainLater, "slow consumer: writes stalled".into())
                }
            },
            _ = self.inbox.slow.raised() => Flow::Close(CloseCode::TryAgainLater, SLOW.into()),
            _ = self.cancel.raised() => Flow::Stop,
        }
    }
}

/// The metrics reason of a close, when it is a refusal. Slow consumers are
/// counted where they are detected (the registry).
fn refusal(code: CloseCode, reason: &str) -> Option<Refusal> {
    Some(match code {
        CloseCode::Forbidden => Refusal::auth,
        CloseCode::ConnectionInitTimeout => Refusal::init_timeout,
        CloseCode::GoingAway if reason.starts_with("heartbeat") => Refusal::heartbeat_timeout,
        CloseCode::TooManyRequests if reason == FLOODING => Refusal::rate_limit_message,
        CloseCode::BadRequest
        | CloseCode::MessageTooBig
        | CloseCode::Unauthorized
        | CloseCode::SubscriberAlreadyExists
        | CloseCode::TooManyRequests => Refusal::invalid_message,
        _ => return None,
    })
}

fn coded_error(message: &str, code: &str) -> GraphQLError {
    let mut e = GraphQLError::new(message);
    let mut ext = Map::new();
    ext.insert("code".into(), Value::from(code));
    e.extensions = Some(ext);
    e
}

/// An upstream error entry, kept as close to what it sent as the type allows.
fn upstream_error(v: Value) -> GraphQLError {
    let message = v
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("upstream error")
        .to_owned();
    let mut e = GraphQLError::new(message);
    if let Some(Value::Object(ext)) = v.get("extensions") {
        e.extensions = Some(ext.clone());
    }
    if let Some(Value::Array(path)) = v.get("path") {
        e.path = path.clone();
    }
    e
}
