//! One WebSocket session, whatever its subprotocol: the timers (init
//! timeout, heartbeat and its deadline), per-message admission, writes that
//! a slow client cannot pin, and the close. What a subprotocol's messages
//! mean is its [`Protocol`] ([`super::transport_ws::TransportWs`],
//! [`super::legacy::Legacy`]): pure decisions this loop carries out. What
//! operations do is the core's ([`Operations`]).
//!
//! [`Socket`] is the loop; [`Session`] its graphql-transport-ws instance.
//!
//! Generic over any `Stream<Item = Inbound<M>> + Sink<Outbound>`, so tests
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
use super::protocol::{Inbound, Outbound, SubscribePayload};
use super::transport_ws::TransportWs;
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

/// What a subprotocol decides; [`Session`] carries it out. Stateless: the
/// session's state is the session's.
pub trait Protocol: Send + 'static {
    /// A client message, as the edge parsed it.
    type Message: Send;
    /// The per-operation value handed back with each output (its envelope).
    type Tag: Send;

    /// What `message` is for the inbound policies.
    fn kind(message: &Self::Message) -> MessageKind;
    /// What to do with an admitted message; `acked` once `connection_init`
    /// succeeded, `ops` to look up running ids.
    fn on_message(
        message: Self::Message,
        acked: bool,
        ops: &Operations<Self::Tag>,
    ) -> Action<Self::Tag>;
    /// The operation id a message refused by the rate limit would have
    /// started: it is told `RATE_LIMITED`; other refused messages go unanswered.
    fn refused_start(message: Self::Message) -> Option<String>;
    /// A frame that is not one of the protocol's messages.
    fn on_invalid(reason: String) -> Action<Self::Tag>;
    /// Frames of a successful `connection_init`.
    fn acked() -> Vec<Outbound>;
    /// Frames of one heartbeat tick (a WebSocket ping at least, answered by
    /// every RFC 6455 client: its pong is what the deadline waits for).
    fn heartbeat() -> Vec<Outbound>;
    /// One output of the core as frames, made into `buf`.
    fn output(out: Output<'_, Self::Tag>, buf: &mut BytesMut, frames: &mut Vec<Outbound>);
    /// Frames of an operation that did not start, or ended with `error`.
    fn error(id: &str, error: &OperationError, frames: &mut Vec<Outbound>);
    /// What is said before the close frame, if anything.
    fn farewell(close: &Close) -> Option<Outbound>;
}

/// One decision of a [`Protocol`].
pub enum Action<T> {
    Nothing,
    Reply(Outbound),
    /// Answers a message the protocol cannot act on; counted as an
    /// invalid message, the connection goes on.
    Refuse(Outbound),
    /// Authenticate with the credentials of a `connection_init` payload,
    /// then send [`Protocol::acked`].
    Init(Option<Map<String, Value>>),
    /// Prepare and start an operation (one already running as `id` is
    /// stopped first).
    Start {
        id: String,
        request: SubscribePayload,
        tag: T,
    },
    /// Stop operation `id`, then send `reply`.
    Stop {
        id: String,
        reply: Option<Outbound>,
    },
    Close(Close),
}

/// Where the protocol is.
enum State {
    /// Until `connection_init`; `deadline` is the init timeout.
    AwaitingInit,
    /// `connection_init` accepted: operations may start, `heartbeat`
    /// ticks, and with `pong_due` the `deadline` is the ping's.
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

/// A graphql-transport-ws session.
pub type Session<T> = Socket<TransportWs, T>;

/// The state of one connection speaking protocol `P`.
pub struct Socket<P: Protocol, T> {
    io: T,
    shared: Arc<Shared>,
    cancel: Latch,
    /// Each operation tagged with its result envelope.
    ops: Operations<P::Tag>,
    state: State,
    deadline: Pin<Box<Sleep>>,
    /// This connection's inbound-message policies.
    inbound: InboundService,
}

impl<P, T, E> Socket<P, T>
where
    P: Protocol,
    T: Stream<Item = Inbound<P::Message>> + Sink<Outbound, Error = E> + Unpin,
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
            deadline: Box::pin(tokio::time::sleep(shared.limits.load().init_timeout)),
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
            self.close(close).await;
        }
        // Dropping `ops` here unsubscribes everything this socket held.
    }

    /// The protocol's farewell, if any, then the close frame.
    async fn close(&mut self, close: Close) {
        if let Some(r) = close.refusal() {
            self.shared.core.metrics.refused(r);
        }
        let farewell = P::farewell(&close);
        let (code, reason) = close.frame();
        tracing::debug!(code = code as u16, %reason, "closing websocket");
        let frame = Outbound::close(code, reason);
        // Nothing more is queued for a socket that is closing.
        self.ops.stop_all();
        let io = &mut self.io;
        let close = async move {
            if let Some(f) = farewell {
                io.feed(f).await?;
            }
            io.send(frame).await?;
            // The transport's close ends our side and reads what the
            // client still sends: closing a socket with unread input
            // resets it, and the reset can cost the client the frame.
            io.close().await
        };
        // The client may not read at all (slow consumer): bounded.
        let _ = tokio::time::timeout(CLOSE_DEADLINE, close).await;
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
            let at = Instant::now() + self.shared.limits.load().heartbeat_timeout;
            self.deadline.as_mut().reset(at);
            *pong_due = true;
        }
        self.write(P::heartbeat()).await
    }

    fn alive(&mut self) {
        if let State::Acked { pong_due, .. } = &mut self.state {
            *pong_due = false;
        }
    }

    /// The core's outputs as frames: result frames of one wake share their
    /// buffer's allocations.
    async fn on_wake(&mut self, wake: Wake) -> Flow {
        let mut frames = Vec::with_capacity(16);
        let mut buf = BytesMut::new();
        let taken = self.ops.take(wake, MAX_WRITE_BATCH, |out| {
            P::output(out, &mut buf, &mut frames)
        });
        match taken {
            Ok(()) => self.write(frames).await,
            Err(ending) => ending.into(),
        }
    }

    async fn on_inbound(&mut self, inbound: Option<Inbound<P::Message>>) -> Flow {
        let msg = match inbound {
            None => return Flow::Stop,
            Some(Inbound::Closed) => {
                // Lets tungstenite send its reply to the client's close.
                let _ =
                    tokio::time::timeout(std::time::Duration::from_secs(1), self.io.flush()).await;
                return Flow::Stop;
            }
            Some(Inbound::TooBig) => return Flow::Close(Close::TooBig),
            Some(Inbound::Invalid(reason)) => {
                let action = P::on_invalid(reason);
                if matches!(action, Action::Close(_)) {
                    return self.act(action).await;
                }
                // One that is answered counts like a ping: a client sending
                // garbage in a loop meets the same rate limit.
                return match self.admission(MessageKind::Ping).await {
                    Admission::Admit => self.act(action).await,
                    Admission::Limited { .. } => Flow::Continue,
                    Admission::Flooding => Flow::Close(Close::Flooding),
                };
            }
            Some(Inbound::Alive) => {
                self.alive();
                return Flow::Continue;
            }
            Some(Inbound::Message(m)) => m,
        };
        self.alive();
        match self.admission(P::kind(&msg)).await {
            Admission::Admit => {}
            // An operation refused is told so; anything else goes unanswered.
            Admission::Limited { retry_after } => {
                let Some(id) = P::refused_start(msg) else {
                    return Flow::Continue;
                };
                let e = OperationError::RateLimited {
                    retry_after_ms: retry_after.as_millis().max(1),
                };
                return self.error(&id, &e).await;
            }
            Admission::Flooding => return Flow::Close(Close::Flooding),
        }
        let acked = matches!(self.state, State::Acked { .. });
        let action = P::on_message(msg, acked, &self.ops);
        self.act(action).await
    }

    /// The inbound stack's verdict on a message of `kind`; refusals counted.
    async fn admission(&mut self, kind: MessageKind) -> Admission {
        let admission = match self.inbound.ready().await {
            Ok(svc) => match svc.call(kind).await {
                Ok(a) => a,
                Err(never) => match never {},
            },
            Err(never) => match never {},
        };
        if let Admission::Limited { .. } = admission {
            self.shared
                .core
                .metrics
                .refused(Refusal::rate_limit_message);
        }
        admission
    }

    async fn act(&mut self, action: Action<P::Tag>) -> Flow {
        match action {
            Action::Nothing => Flow::Continue,
            Action::Reply(frame) => self.write([frame]).await,
            Action::Refuse(frame) => {
                self.shared.core.metrics.refused(Refusal::invalid_message);
                self.write([frame]).await
            }
            Action::Init(payload) => self.on_init(payload).await,
            Action::Start { id, request, tag } => self.on_start(id, request, tag).await,
            Action::Stop { id, reply } => {
                self.ops.stop(&id);
                match reply {
                    Some(frame) => self.write([frame]).await,
                    None => Flow::Continue,
                }
            }
            Action::Close(close) => Flow::Close(close),
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
        // Acknowledged before the ack is written: an operation right behind
        // the ack is valid.
        let period = self.shared.limits.load().heartbeat_interval;
        let mut heartbeat = tokio::time::interval_at(Instant::now() + period, period);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Skip);
        self.state = State::Acked {
            heartbeat,
            pong_due: false,
        };
        self.write(P::acked()).await
    }

    async fn on_start(&mut self, id: String, request: SubscribePayload, tag: P::Tag) -> Flow {
        // Read now, reported after the document's own errors.
        let resume = Resume::from_extensions(request.extensions.as_ref());
        let started = match self.ops.prepare(request).await {
            Ok(op) => resume
                .map_err(OperationError::from)
                .and_then(|resume| self.ops.start(&id, op, resume, tag)),
            Err(e) => Err(e),
        };
        match started {
            Ok(()) => Flow::Continue,
            Err(OperationError::Internal) => Flow::Close(Close::Internal),
            Err(e) => self.error(&id, &e).await,
        }
    }

    /// Operation `id` is over with `error`.
    async fn error(&mut self, id: &str, error: &OperationError) -> Flow {
        let mut frames = Vec::with_capacity(2);
        P::error(id, error, &mut frames);
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
            r = tokio::time::timeout(self.shared.limits.load().heartbeat_timeout, send) => match r {
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
