//! The graphql-transport-ws protocol's decisions ([`TransportWs`]): what
//! each client message does and how the core's outputs are framed. The
//! [`super::Session`] carries them out.
//!
//! Protocol: <https://github.com/enisdenjo/graphql-ws/blob/master/PROTOCOL.md>.

use bytes::BytesMut;

use super::close::Close;
use super::inbound::MessageKind;
use super::protocol::{ClientMessage, Frame, NextEnvelope, Outbound};
use super::session::{Action, Protocol};
use crate::subscriptions::operation::{OperationError, Operations, Output};

/// The `graphql-transport-ws` subprotocol.
pub struct TransportWs;

impl Protocol for TransportWs {
    type Message = ClientMessage;
    /// Each operation's `next` envelope.
    type Tag = NextEnvelope;

    fn kind(message: &ClientMessage) -> MessageKind {
        MessageKind::of(message)
    }

    fn on_message(
        message: ClientMessage,
        acked: bool,
        ops: &Operations<NextEnvelope>,
    ) -> Action<NextEnvelope> {
        match message {
            ClientMessage::ConnectionInit { payload } => Action::Init(payload),
            // Answered in any state, like the reference server does.
            ClientMessage::Ping { payload } => {
                Action::Reply(Outbound::Text(Frame::pong(payload.as_ref())))
            }
            ClientMessage::Pong { .. } => Action::Nothing,
            ClientMessage::Subscribe { .. } if !acked => Action::Close(Close::Unauthorized),
            ClientMessage::Subscribe { id, .. } if ops.contains(&id) => {
                Action::Close(Close::Duplicate(id))
            }
            ClientMessage::Subscribe { id, payload } => Action::Start {
                tag: NextEnvelope::new(&id),
                id,
                request: payload,
            },
            // Not echoed; unknown or finished ids are ignored.
            ClientMessage::Complete { id } => Action::Stop { id, reply: None },
        }
    }

    /// A `subscribe` refused gets an `error`; a `ping` goes unanswered.
    fn refused_start(message: ClientMessage) -> Option<String> {
        match message {
            ClientMessage::Subscribe { id, .. } => Some(id),
            _ => None,
        }
    }

    /// Close `4400` with the parser's reason.
    fn on_invalid(reason: String) -> Action<NextEnvelope> {
        Action::Close(Close::Invalid(reason))
    }

    fn acked() -> Vec<Outbound> {
        vec![Outbound::Text(Frame::connection_ack(None))]
    }

    fn heartbeat() -> Vec<Outbound> {
        vec![Outbound::Ping]
    }

    fn output(out: Output<'_, NextEnvelope>, buf: &mut BytesMut, frames: &mut Vec<Outbound>) {
        frames.push(Outbound::Text(match out {
            Output::Next { tag, payload, .. } => tag.frame(payload, buf),
            Output::Complete { id, .. } => Frame::complete(id),
            Output::Error { id, error, .. } => Frame::error(id, &error.errors()),
        }))
    }

    /// An `error` message: the operation is over, no `complete` follows.
    fn error(id: &str, error: &OperationError, frames: &mut Vec<Outbound>) {
        frames.push(Outbound::Text(Frame::error(id, &error.errors())));
    }

    /// The close code and reason say it all.
    fn farewell(_: &Close) -> Option<Outbound> {
        None
    }
}
