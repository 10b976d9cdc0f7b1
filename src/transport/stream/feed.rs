//! One HTTP stream's life: a task that owns the client's [`Operations`],
//! writes the core's outputs in the stream's [`Framing`] into the response
//! body, sends heartbeats, and ends in the protocol's terms. A stream has
//! no client→server channel: the client stops by closing it, noticed when
//! the body is dropped (at the next write, a heartbeat at the latest).
//!
//! In single-connection mode the task starts at the reservation, before
//! the stream is open; operations then arrive as [`Command`]s from the
//! requests that carry the reservation's token.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};

use super::framing::{Envelope, Framing};
use crate::graphql::GraphQLError;
use crate::subscriptions::latch::Latch;
use crate::subscriptions::operation::{
    Ending, OperationError, Operations, Output, PreparedOperation, Resume, Wake,
};

/// Outputs written per body chunk at most.
const MAX_WRITE_BATCH: usize = 512;

/// Body chunks in flight between the task and hyper: the client's socket
/// buffers do the rest of the queueing; past them the outbox fills and the
/// client is a slow consumer.
const BODY_CHANNEL: usize = 4;

/// The response body of a stream: the chunks its task sends. When hyper
/// drops it (the client went away), the task sees its sender closed.
pub struct StreamBody {
    rx: mpsc::Receiver<Bytes>,
}

impl http_body::Body for StreamBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(http_body::Frame::data(c))))
    }
}

/// A stream's body channel.
pub fn channel() -> (mpsc::Sender<Bytes>, StreamBody) {
    let (tx, rx) = mpsc::channel(BODY_CHANNEL);
    (tx, StreamBody { rx })
}

/// What a request carrying a reservation's token asks of its task.
pub enum Command {
    /// Open the stream on this body.
    Attach {
        tx: mpsc::Sender<Bytes>,
        reply: oneshot::Sender<Result<(), Refused>>,
    },
    /// Start an operation (`extensions.operationId`).
    Start {
        id: String,
        op: PreparedOperation,
        resume: Resume,
        reply: oneshot::Sender<Result<(), Refused>>,
    },
    /// `DELETE ?operationId=`.
    Stop { id: String },
}

/// Why a reservation's task refused a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The stream is already open, or the operation id is running.
    Conflict,
}

/// Timers of a stream.
#[derive(Debug, Clone, Copy)]
pub struct FeedLimits {
    pub heartbeat: Duration,
    /// How long one write may wait for the client before it is a slow consumer.
    pub write_timeout: Duration,
    /// How long a reservation waits for its stream to open.
    pub reservation_ttl: Duration,
}

/// One stream's task state.
pub struct Feed {
    framing: Framing,
    ops: Operations<Envelope>,
    /// `None` until a reservation's stream opens.
    tx: Option<mpsc::Sender<Bytes>>,
    commands: Option<mpsc::Receiver<Command>>,
    cancel: Latch,
    limits: FeedLimits,
    buf: BytesMut,
}

/// How the task goes on after one event.
enum Flow {
    Continue,
    /// The client went away, or a reservation was never taken up.
    Gone,
    /// The distinct-connections operation is over: close the stream.
    Done,
    /// Drain: SSE ends without `complete` (the client reconnects
    /// elsewhere, resuming), multipart with a fatal `SHUTTING_DOWN` part.
    ShuttingDown,
    Ended(Ending),
}

impl Feed {
    /// A stream open at once (distinct connections, multipart).
    pub fn open(
        framing: Framing,
        ops: Operations<Envelope>,
        tx: mpsc::Sender<Bytes>,
        cancel: Latch,
        limits: FeedLimits,
    ) -> Self {
        let mut feed = Self::new(framing, ops, cancel, limits);
        feed.tx = Some(tx);
        feed
    }

    /// A reservation (single connection): commands come on `commands`.
    pub fn reserved(
        ops: Operations<Envelope>,
        commands: mpsc::Receiver<Command>,
        cancel: Latch,
        limits: FeedLimits,
    ) -> Self {
        let mut feed = Self::new(Framing::SseSingle, ops, cancel, limits);
        feed.commands = Some(commands);
        feed
    }

    fn new(framing: Framing, ops: Operations<Envelope>, cancel: Latch, limits: FeedLimits) -> Self {
        Self {
            framing,
            ops,
            tx: None,
            commands: None,
            cancel,
            limits,
            buf: BytesMut::new(),
        }
    }

    /// Raised to end the stream in its protocol's terms (the drain).
    pub fn cancel(&self) -> Latch {
        self.cancel.clone()
    }

    /// Runs until the stream ends; dropping the operations at the end
    /// unsubscribes everything it held.
    pub async fn run(mut self) {
        let every = self.limits.heartbeat;
        let mut heartbeat = tokio::time::interval_at(Instant::now() + every, every);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let reservation = tokio::time::sleep(self.limits.reservation_ttl);
        tokio::pin!(reservation);
        if self.tx.is_some() {
            self.framing.open(&mut self.buf);
        }
        let mut flow = self.flush().await;
        while let Flow::Continue = flow {
            let open = self.tx.is_some();
            flow = tokio::select! {
                _ = self.cancel.raised() => Flow::ShuttingDown,
                _ = closed(&self.tx) => Flow::Gone,
                () = &mut reservation, if !open => Flow::Gone,
                c = recv(&mut self.commands) => match c {
                    Some(c) => self.on_command(c).await,
                    // Every sender is gone: nobody can reach this reservation.
                    None if !open => Flow::Gone,
                    None => {
                        self.commands = None;
                        Flow::Continue
                    }
                },
                w = self.ops.wake(), if open => self.on_wake(w),
                _ = heartbeat.tick(), if open => {
                    self.framing.heartbeat(&mut self.buf);
                    Flow::Continue
                }
            };
            if let Flow::Continue = flow {
                flow = self.flush().await;
            }
        }
        self.ops.stop_all();
        let fatal = match &flow {
            Flow::Gone => return,
            Flow::Done => None,
            Flow::ShuttingDown => Some(
                GraphQLError::new("server shutting down: reconnect").with_code("SHUTTING_DOWN"),
            ),
            Flow::Ended(e) => Some(GraphQLError::new(e.to_string()).with_code(e.code())),
            Flow::Continue => unreachable!("the loop runs until the flow is not Continue"),
        };
        if let Some(error) = &fatal {
            self.framing.fatal(error, &mut self.buf);
            // SSE tells a distinct stream's one operation why it ends,
            // unless the client should reconnect (drain, slow consumer:
            // it resumes from its Last-Event-ID).
            let reconnect = matches!(
                flow,
                Flow::ShuttingDown | Flow::Ended(Ending::SlowConsumer | Ending::WritesStalled)
            );
            if self.framing == Framing::Sse && !reconnect {
                let envelope = self.framing.envelope("");
                self.framing
                    .errors(&envelope, std::slice::from_ref(error), &mut self.buf);
            }
        }
        self.framing.end(&mut self.buf);
        if let Some(tx) = &self.tx
            && !self.buf.is_empty()
        {
            // The client may not read at all (slow consumer): bounded.
            let last = self.buf.split().freeze();
            let _ = tokio::time::timeout(self.limits.write_timeout, tx.send(last)).await;
        }
    }

    fn on_wake(&mut self, wake: Wake) -> Flow {
        let (framing, buf) = (self.framing, &mut self.buf);
        let mut done = false;
        let taken = self.ops.take(wake, MAX_WRITE_BATCH, |out| match out {
            Output::Next {
                tag,
                payload,
                cursor,
            } => framing.next(tag, payload, cursor, buf),
            Output::Complete { tag, .. } => {
                framing.complete(tag, buf);
                done = true;
            }
            Output::Error { tag, error, .. } => {
                if error.ends_running() {
                    framing.ended(tag, &error.errors(), buf);
                } else {
                    framing.errors(tag, &error.errors(), buf);
                }
                done = true;
            }
        });
        match taken {
            Err(ending) => Flow::Ended(ending),
            // Distinct connections and multipart carry one operation.
            Ok(()) if done && self.framing != Framing::SseSingle => Flow::Done,
            Ok(()) => Flow::Continue,
        }
    }

    async fn on_command(&mut self, command: Command) -> Flow {
        match command {
            Command::Attach { tx, reply } => {
                if self.tx.is_some() {
                    let _ = reply.send(Err(Refused::Conflict));
                    return Flow::Continue;
                }
                self.tx = Some(tx);
                self.framing.open(&mut self.buf);
                let _ = reply.send(Ok(()));
            }
            Command::Start {
                id,
                op,
                resume,
                reply,
            } => {
                if self.ops.contains(&id) {
                    let _ = reply.send(Err(Refused::Conflict));
                    return Flow::Continue;
                }
                let _ = reply.send(Ok(()));
                let envelope = self.framing.envelope(&id);
                if let Err(e) = self.ops.start(&id, op, resume, envelope) {
                    self.operation_refused(&id, &e);
                }
            }
            Command::Stop { id } => self.ops.stop(&id),
        }
        Flow::Continue
    }

    /// An operation that could not start: its errors on the stream.
    fn operation_refused(&mut self, id: &str, error: &OperationError) {
        let envelope = self.framing.envelope(id);
        self.framing
            .errors(&envelope, &error.errors(), &mut self.buf);
    }

    /// Sends what is buffered. A client that does not take it within the
    /// write timeout, or a slow-consumer mark or shutdown meanwhile, ends
    /// the stream.
    async fn flush(&mut self) -> Flow {
        let Some(tx) = &self.tx else {
            return Flow::Continue;
        };
        if self.buf.is_empty() {
            return Flow::Continue;
        }
        let chunk = self.buf.split().freeze();
        tokio::select! {
            biased;
            r = tokio::time::timeout(self.limits.write_timeout, tx.send(chunk)) => match r {
                Ok(Ok(())) => Flow::Continue,
                Ok(Err(_)) => Flow::Gone,
                Err(_) => Flow::Ended(self.ops.writes_stalled()),
            },
            _ = self.ops.overflowed() => Flow::Ended(Ending::SlowConsumer),
            _ = self.cancel.raised() => Flow::ShuttingDown,
        }
    }
}

async fn closed(tx: &Option<mpsc::Sender<Bytes>>) {
    match tx {
        Some(tx) => tx.closed().await,
        None => std::future::pending().await,
    }
}

async fn recv(commands: &mut Option<mpsc::Receiver<Command>>) -> Option<Command> {
    match commands {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
