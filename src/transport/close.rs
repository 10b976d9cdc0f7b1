//! [`Close`]: why a WebSocket session closes its socket, as a typed value;
//! its close code, reason text and metrics reason are read from it here,
//! never matched back out of the text. The legacy `graphql-ws` protocol
//! says the same reason in a `connection_error` first.

use std::borrow::Cow;

use super::protocol::CloseCode;
use crate::metrics::Refusal;
use crate::subscriptions::operation::Ending;

/// Why a session closes.
#[derive(Debug)]
pub enum Close {
    /// The drain is over: `1001`, the client reconnects elsewhere.
    ShuttingDown,
    /// A heartbeat ping went unanswered.
    HeartbeatTimeout,
    /// No `connection_init` within `heartbeat.init_timeout`.
    InitTimeout,
    /// A second `connection_init`.
    TooManyInits,
    /// `subscribe` before `connection_ack`.
    Unauthorized,
    /// `subscribe` with the id of a running operation.
    Duplicate(String),
    /// Not a protocol message; the parser's reason.
    Invalid(String),
    /// A frame over `limits.max_message_bytes`.
    TooBig,
    /// The client kept sending after `RATE_LIMITED` errors.
    Flooding,
    /// The engine failed.
    Internal,
    /// The core ended the client (slow consumer, token expiry, credentials).
    Ended(Ending),
    /// The client asked for it (legacy `connection_terminate`): `1000`.
    Terminated,
}

impl From<Ending> for Close {
    fn from(e: Ending) -> Self {
        Self::Ended(e)
    }
}

impl Close {
    /// The close frame's code and reason (the reason is cut to fit by
    /// [`super::protocol::Outbound::close`]).
    pub fn frame(&self) -> (CloseCode, Cow<'_, str>) {
        let fixed = |code, reason: &'static str| (code, Cow::Borrowed(reason));
        match self {
            Self::ShuttingDown => fixed(CloseCode::GoingAway, "server shutting down"),
            Self::HeartbeatTimeout => fixed(CloseCode::GoingAway, "heartbeat timeout"),
            Self::InitTimeout => fixed(
                CloseCode::ConnectionInitTimeout,
                "Connection initialisation timeout",
            ),
            Self::TooManyInits => fixed(
                CloseCode::TooManyRequests,
                "Too many initialisation requests",
            ),
            Self::Flooding => fixed(CloseCode::TooManyRequests, "Too many messages"),
            Self::Unauthorized => fixed(CloseCode::Unauthorized, "Unauthorized"),
            Self::Duplicate(id) => (
                CloseCode::SubscriberAlreadyExists,
                format!("Subscriber for {id} already exists").into(),
            ),
            Self::Invalid(reason) => (CloseCode::BadRequest, Cow::Borrowed(reason)),
            Self::TooBig => fixed(CloseCode::MessageTooBig, "message too big"),
            Self::Internal => fixed(CloseCode::InternalServerError, "Internal server error"),
            Self::Terminated => fixed(CloseCode::Normal, "connection_terminate"),
            Self::Ended(e @ (Ending::SlowConsumer | Ending::WritesStalled)) => {
                (CloseCode::TryAgainLater, e.to_string().into())
            }
            Self::Ended(e @ Ending::TokenExpired) => (CloseCode::Forbidden, e.to_string().into()),
            Self::Ended(Ending::Auth(e)) => {
                let (code, reason) = crate::error::auth_close(e);
                (code, reason.into())
            }
        }
    }

    /// The metrics reason of this close, when it is a refusal. Slow
    /// consumers are counted where they are detected.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            Self::InitTimeout => Some(Refusal::init_timeout),
            Self::HeartbeatTimeout => Some(Refusal::heartbeat_timeout),
            Self::Flooding => Some(Refusal::rate_limit_message),
            Self::TooManyInits
            | Self::Unauthorized
            | Self::Duplicate(_)
            | Self::Invalid(_)
            | Self::TooBig => Some(Refusal::invalid_message),
            Self::ShuttingDown | Self::Internal | Self::Terminated => None,
            Self::Ended(e) => e.refusal(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heartbeat_and_shutdown_share_a_code_not_a_metric() {
        assert_eq!(
            Close::HeartbeatTimeout.frame().0,
            Close::ShuttingDown.frame().0
        );
        assert_eq!(
            Close::HeartbeatTimeout.refusal(),
            Some(Refusal::heartbeat_timeout)
        );
        assert_eq!(Close::ShuttingDown.refusal(), None);
        assert_eq!(Close::Flooding.frame().0, Close::TooManyInits.frame().0);
        assert_eq!(Close::Flooding.refusal(), Some(Refusal::rate_limit_message));
        assert_eq!(
            Close::TooManyInits.refusal(),
            Some(Refusal::invalid_message)
        );
    }
}
