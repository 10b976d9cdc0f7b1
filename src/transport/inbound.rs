//! A session's inbound client messages as a tower [`Service`]: before the
//! session acts on a message it asks its inbound stack whether to, so
//! per-connection policies are ordinary layers
//! ([`crate::layers::message_rate_limit`]) wrapped around [`Admit`]. The
//! stack is built per connection from layers the composition root built
//! once, because its state (a connection's bucket) belongs to the
//! connection.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower::util::BoxService;
use tower::{Layer, Service};

use super::protocol::ClientMessage;

/// What an inbound message is, as far as policies care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    ConnectionInit,
    Ping,
    Pong,
    Subscribe,
    Complete,
}

impl MessageKind {
    pub fn of(message: &ClientMessage) -> Self {
        match message {
            ClientMessage::ConnectionInit { .. } => Self::ConnectionInit,
            ClientMessage::Ping { .. } => Self::Ping,
            ClientMessage::Pong { .. } => Self::Pong,
            ClientMessage::Subscribe { .. } => Self::Subscribe,
            ClientMessage::Complete { .. } => Self::Complete,
        }
    }

    /// Messages that only lower the load (`complete`, `pong`) or that the
    /// protocol allows once (`connection_init`): never limited.
    pub fn is_free(self) -> bool {
        matches!(self, Self::ConnectionInit | Self::Pong | Self::Complete)
    }
}

/// The verdict on one inbound message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Handle it.
    Admit,
    /// Refuse it (`error` with `RATE_LIMITED` for a `subscribe`); the
    /// client may go on after `retry_after`.
    Limited { retry_after: Duration },
    /// The client kept sending while refused: close `4429`.
    Flooding,
}

/// The innermost inbound service: admits everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct Admit;

impl Service<MessageKind> for Admit {
    type Response = Admission;
    type Error = Infallible;
    type Future = Ready<Result<Admission, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: MessageKind) -> Self::Future {
        ready(Ok(Admission::Admit))
    }
}

/// One connection's inbound stack.
pub type InboundService = BoxService<MessageKind, Admission, Infallible>;

/// Makes each connection's inbound stack from shared layers.
#[derive(Clone)]
pub struct InboundStack {
    make: Arc<dyn Fn() -> InboundService + Send + Sync>,
}

impl InboundStack {
    /// `layer` (a `ServiceBuilder`'s layers, say) around [`Admit`].
    pub fn new<L>(layer: L) -> Self
    where
        L: Layer<Admit> + Send + Sync + 'static,
        L::Service: Service<MessageKind, Response = Admission, Error = Infallible> + Send + 'static,
        <L::Service as Service<MessageKind>>::Future: Send + 'static,
    {
        Self {
            make: Arc::new(move || BoxService::new(layer.layer(Admit))),
        }
    }

    /// No policies: every message is admitted.
    pub fn admit_all() -> Self {
        Self::new(tower::layer::util::Identity::new())
    }

    /// A fresh stack for a new connection.
    pub fn service(&self) -> InboundService {
        (self.make)()
    }
}
