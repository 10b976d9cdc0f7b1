//! The legacy `graphql-ws` protocol's decisions ([`Legacy`],
//! subscriptions-transport-ws): what each client message does and how the
//! core's outputs are framed. The [`super::session::Socket`] carries them out,
//! with the same timers, limits and close handling as graphql-transport-ws.
//!
//! Where the protocol leaves room, subcar does what the reference server
//! (`SubscriptionServer` 0.11) does, so that the reference client and the
//! Apollo clients built on it see what they expect:
//!
//! - validation errors of a `start` are a `data` message carrying `errors`,
//!   then `complete` (the reference server runs a failed validation as an
//!   execution result `{errors}`; its client hands that to the observer's
//!   `next`, as GraphQL-over-HTTP clients read a 200 with errors). The same
//!   for a query or mutation the upstream answers with errors only;
//! - `error` (one error object) is for an operation refused before it runs
//!   (`FORBIDDEN`, `RATE_LIMITED`, cursors): the client drops the operation,
//!   no `complete` follows;
//! - `stop` of a running operation is answered with `complete`;
//! - a frame that is not JSON gets `connection_error`, a JSON message of an
//!   unknown type (or a `start` without id or query) gets `error`; neither
//!   closes the socket, both count against the per-message rate limit;
//! - a `start` with the id of a running operation replaces it.
//!
//! Where subcar is stricter: a `start` before `connection_init` closes the
//! connection (credentials come with the init), as does a second
//! `connection_init`; every close is preceded by `connection_error` with
//! its reason, also on drain. The server also pings at the WebSocket level
//! beside `ka` (every RFC 6455 client answers), so a dead peer is noticed
//! within `heartbeat.timeout` as on graphql-transport-ws.

use bytes::BytesMut;

use super::close::Close;
use super::inbound::MessageKind;
use super::legacy_protocol::{LegacyFrame, LegacyMessage};
use super::protocol::{Frame, NextEnvelope, Outbound};
use super::session::{Action, Protocol, Socket};
use crate::subscriptions::operation::{OperationError, Operations, Output};

/// The legacy `graphql-ws` subprotocol.
pub struct Legacy;

/// A legacy `graphql-ws` session.
pub type LegacySession<T> = Socket<Legacy, T>;

impl Protocol for Legacy {
    type Message = LegacyMessage;
    /// Each operation's `data` envelope.
    type Tag = NextEnvelope;

    fn kind(message: &LegacyMessage) -> MessageKind {
        match message {
            LegacyMessage::ConnectionInit { .. } => MessageKind::ConnectionInit,
            LegacyMessage::Start { .. } => MessageKind::Subscribe,
            // Both only lower the load.
            LegacyMessage::Stop { .. } | LegacyMessage::ConnectionTerminate => {
                MessageKind::Complete
            }
            // Answered, like a ping.
            LegacyMessage::Refused { .. } => MessageKind::Ping,
        }
    }

    fn on_message(
        message: LegacyMessage,
        acked: bool,
        ops: &Operations<NextEnvelope>,
    ) -> Action<NextEnvelope> {
        match message {
            LegacyMessage::ConnectionInit { payload } => Action::Init(payload),
            LegacyMessage::Start { .. } if !acked => Action::Close(Close::Unauthorized),
            LegacyMessage::Start { id, payload } => Action::Start {
                tag: LegacyFrame::data_envelope(&id),
                id,
                request: payload,
            },
            LegacyMessage::Stop { id } if ops.contains(&id) => Action::Stop {
                reply: Some(Outbound::Text(Frame::complete(&id))),
                id,
            },
            // Unknown or finished ids.
            LegacyMessage::Stop { .. } => Action::Nothing,
            LegacyMessage::ConnectionTerminate => Action::Close(Close::Terminated),
            LegacyMessage::Refused { id, reason } => Action::Refuse(Outbound::Text(
                LegacyFrame::error(id.as_deref(), &crate::graphql::GraphQLError::new(reason)),
            )),
        }
    }

    fn refused_start(message: LegacyMessage) -> Option<String> {
        match message {
            LegacyMessage::Start { id, .. } => Some(id),
            _ => None,
        }
    }

    /// Not JSON: `connection_error`, and the connection goes on.
    fn on_invalid(reason: String) -> Action<NextEnvelope> {
        Action::Refuse(Outbound::Text(LegacyFrame::connection_error(&reason)))
    }

    /// The first `ka` right behind the ack, as the protocol wants.
    fn acked() -> Vec<Outbound> {
        vec![
            Outbound::Text(LegacyFrame::connection_ack()),
            Outbound::Text(LegacyFrame::ka()),
        ]
    }

    fn heartbeat() -> Vec<Outbound> {
        vec![Outbound::Text(LegacyFrame::ka()), Outbound::Ping]
    }

    fn output(out: Output<'_, NextEnvelope>, buf: &mut BytesMut, frames: &mut Vec<Outbound>) {
        match out {
            Output::Next { tag, payload, .. } => {
                frames.push(Outbound::Text(tag.frame(payload, buf)));
            }
            Output::Complete { id, .. } => frames.push(Outbound::Text(Frame::complete(id))),
            Output::Error { id, error, .. } => Self::error(id, error, frames),
        }
    }

    fn error(id: &str, error: &OperationError, frames: &mut Vec<Outbound>) {
        match error {
            // Execution results with errors: `data` then `complete`.
            OperationError::Invalid(errors) | OperationError::Upstream(errors) => {
                let result = LegacyFrame::errors_result(errors);
                frames.push(Outbound::Text(LegacyFrame::data(id, &result)));
                frames.push(Outbound::Text(Frame::complete(id)));
            }
            other => {
                let errors = other.errors();
                if let Some(first) = errors.first() {
                    frames.push(Outbound::Text(LegacyFrame::error(Some(id), first)));
                }
            }
        }
    }

    /// `connection_error` with the close's reason; nothing after the
    /// client's own `connection_terminate`.
    fn farewell(close: &Close) -> Option<Outbound> {
        match close {
            Close::Terminated => None,
            other => Some(Outbound::Text(LegacyFrame::connection_error(
                &other.frame().1,
            ))),
        }
    }
}
