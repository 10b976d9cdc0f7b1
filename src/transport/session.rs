//! One graphql-transport-ws session: the protocol state machine of a socket.
//! What its operations do is the core's ([`Operations`]); this file reads
//! client messages into the core's calls and writes the core's outputs as
//! protocol frames.
//!
//! Generic over any `Stream<Item = Inbound> + Sink<Outbound>`, so tests
//! drive it with channels. The loop is a `select!` whose arms await only
//! cancel-safe futures (`next`, `wake`, `raised`, `tick`, a pinned
//! `Sleep`); writes happen in arm bodies, guarded so that a client that
//! stops reading cannot pin the session forever.

use std::pin::Pin;
use std::sync::Arc;

use bytes::BytesMut;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use http::HeaderMap;
use serde_json::{Map, Value};
use tokio::time::{Instant, Interval, MissedTickBehavior, Sleep};
use tower::{Service, ServiceExt};

use super::Shared;
use super::close::Close;
use super::inbound::{Admission, InboundService, MessageKind};
use super::protocol::{ClientMessage, Frame, Inbound, NextEnvelope, Outbound, SubscribePayload};
use crate::metrics::Refusal;
use crate::subscriptions::latch::Latch;
use crate::subscriptions::operation::{Ending, OperationError, Operations, Output, Resume, Wake};

/// How long a close frame may take to reach the client (queued behind
/// frames a slow consumer has not read yet), and the client's close to
/// come back, before the connection is dropped: a client that pauses
/// reading for a moment still learns why it was closed.
pub const CLOSE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(3);

/// Outputs written per flush at most, so that one busy connection still
/// yields to its own inbound messages.
const MAX_WRITE_BATCH: usize = 512;

/// Where the protocol is.
enum State {
    /// Until `connection_init`; `deadline` is the init timeout.
    AwaitingInit,
    /// `connection_ack` sent: operations may start, `heartbeat` pings, and
    /// with `pong_due` the `deadline` is the ping's.
    Acked { heartbeat: Interval, pong_due: bool },
}

impl State {
    fn deadline_armed(&self) -> bool {
        matches!(
            self,
            State::AwaitingInit | State::Acked { pong_due: true, .. }
        )
    }
}

/// The next heartbeat tick; never, before the ack.
async fn heartbeat(state: &mut State) {
    match state {
        State::Acked { heartbeat, .. } => {
            heartbeat.tick().await;
        }
        State::AwaitingInit => std::future::pending().await,
    }
}

/// How the loop goes on after one event.
enum Flow {
    Continue,
    Close(Close),
    /// The socket is gone or unusable: just drop it.
    Stop,
}

impl From<Ending> for Flow {
    fn from(e: Ending) -> Self {
        Flow::Close(e.into())
    }
}

/// The state of one connection.
pub struct Session<T> {
    io: T,
    shared: Arc<Shared>,
    cancel: Latch,
    /// Each operation tagged with its `next` envelope.
    ops: Operations<NextEnvelope>,
    state: State,
    deadline: Pin<Box<Sleep>>,
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
    pub fn new(io: T, shared: Arc<Shared>, headers: HeaderMap, cancel: Latch) -> Self {
        Self {
            io,
            cancel,
            ops: Operations::new(shared.core.clone(), headers),
            state: State::AwaitingInit,
            deadline: Box::pin(tokio::time::sleep(shared.limits.init_timeout)),
            inbound: shared.inbound.service(),
            shared,
        }
    }

    /// Who the client is, for `/status/connections` and the audit log.
    pub fn describe(mut self, client: crate::subscriptions::directory::ClientInfo) -> Self {
        self.ops.describe(client);
        self
    }

    /// Runs until either side closes; everything the session held is
    /// released when it returns.
    pub async fn run(mut self) {
        let end = loop {
            let flow = tokio::select! {
                _ = self.cancel.raised() => Flow::Close(Close::ShuttingDown),
                _ = &mut self.deadline, if self.state.deadline_armed() => self.on_deadline(),
                w = self.ops.wake() => self.on_wake(w).await,
                _ = heartbeat(&mut self.state), if matches!(self.state, State::Acked { .. }) => {
                    self.on_heartbeat().await
                }
                m = self.io.next() => self.on_inbound(m).await,
            };
            match flow {
                Flow::Continue => continue,
                end => break end,
            }
        };
        if let Flow::Close(close) = end {
            if let Some(r) = close.refusal() {
                self.shared.core.metrics.refused(r);
            }
            let (code, reason) = close.frame();
            tracing::debug!(code = code as u16, %reason, "closing websocket");
            let frame = Outbound::close(code, reason);
            // Nothing more is queued for a socket that is closing.
            self.ops.stop_all();
            let io = &mut self.io;
            let close = async move {
                io.send(frame).await?;
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
        match &mut self.state {
            State::AwaitingInit => Flow::Close(Close::InitTimeout),
            State::Acked { .. } => Flow::Close(Close::HeartbeatTimeout),
        }
    }

    async fn on_heartbeat(&mut self) -> Flow {
        if let State::Acked { pong_due, .. } = &mut self.state
            && !*pong_due
        {
            let at = Instant::now() + self.shared.limits.heartbeat_timeout;
            self.deadline.as_mut().reset(at);
            *pong_due = true;
        }
        self.write([Outbound::Ping]).await
    }

    fn alive(&mut self) {
        if let State::Acked { pong_due, .. } = &mut self.state {
            *pong_due = false;
        }
    }

    /// The core's outputs as frames: `next` frames of one wake share their
    /// buffer's allocations.
    async fn on_wake(&mut self, wake: Wake) -> Flow {
        let mut frames = Vec::with_capacity(16);
        let mut buf = BytesMut::new();
        let taken = self.ops.take(wake, MAX_WRITE_BATCH, |out| {
            frames.push(Outbound::Text(match out {
                Output::Next { tag, payload, .. } => tag.frame(payload, &mut buf),
                Output::Complete { id, .. } => Frame::complete(id),
                Output::Error { id, error, .. } => Frame::error(id, &error.errors()),
            }))
        });
        match taken {
            Ok(()) => self.write(frames).await,
            Err(ending) => ending.into(),
        }
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
            Some(Inbound::TooBig) => return Flow::Close(Close::TooBig),
            Some(Inbound::Invalid(reason)) => return Flow::Close(Close::Invalid(reason)),
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
            Ok(Admission::Flooding) => return Flow::Close(Close::Flooding),
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
                self.ops.stop(&id);
                Flow::Continue
            }
        }
    }

    /// A message refused by the inbound stack's rate limit: an `error` for
    /// a `subscribe`; a `ping` goes unanswered (there is no operation).
    async fn on_limited(&mut self, msg: ClientMessage, retry_after: std::time::Duration) -> Flow {
        self.shared
            .core
            .metrics
            .refused(Refusal::rate_limit_message);
        match msg {
            ClientMessage::Subscribe { id, .. } => {
                let e = OperationError::RateLimited {
                    retry_after_ms: retry_after.as_millis().max(1),
                };
                self.error(&id, &e).await
            }
            _ => Flow::Continue,
        }
    }

    async fn on_init(&mut self, payload: Option<Map<String, Value>>) -> Flow {
        if let State::Acked { .. } = self.state {
            return Flow::Close(Close::TooManyInits);
        }
        if let Some(p) = &payload {
            self.shared.init_headers.merge(self.ops.headers_mut(), p);
        }
        // Upstream authentication may take up to upstream.timeout: shutdown
        // must not wait for it.
        let auth = tokio::select! {
            r = self.ops.authenticate() => r,
            _ = self.cancel.raised() => return Flow::Stop,
        };
        if let Err(ending) = auth {
            return ending.into();
        }
        // Acknowledged before the ack is written: a subscribe right behind
        // the ack is valid.
        let period = self.shared.limits.heartbeat_interval;
        let mut heartbeat = tokio::time::interval_at(Instant::now() + period, period);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Skip);
        self.state = State::Acked {
            heartbeat,
            pong_due: false,
        };
        self.write([Outbound::Text(Frame::connection_ack(None))])
            .await
    }

    async fn on_subscribe(&mut self, id: String, payload: SubscribePayload) -> Flow {
        if let State::AwaitingInit = self.state {
            return Flow::Close(Close::Unauthorized);
        }
        if self.ops.contains(&id) {
            return Flow::Close(Close::Duplicate(id));
        }
        // Read now, reported after the document's own errors.
        let resume = Resume::from_extensions(payload.extensions.as_ref());
        let started = match self.ops.prepare(payload).await {
            Ok(op) => resume
                .map_err(OperationError::from)
                .and_then(|resume| self.ops.start(&id, op, resume, NextEnvelope::new(&id))),
            Err(e) => Err(e),
        };
        match started {
            Ok(()) => Flow::Continue,
            Err(OperationError::Internal) => Flow::Close(Close::Internal),
            Err(e) => self.error(&id, &e).await,
        }
    }

    /// An `error` message: operation `id` is over.
    async fn error(&mut self, id: &str, error: &OperationError) -> Flow {
        self.write([Outbound::Text(Frame::error(id, &error.errors()))])
            .await
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
                // Not reading for a whole heartbeat timeout: a slow
                // consumer too, told if it reads within the deadline.
                Err(_) => self.ops.writes_stalled().into(),
            },
            _ = self.ops.overflowed() => Ending::SlowConsumer.into(),
            _ = self.cancel.raised() => Flow::Stop,
        }
    }
}
