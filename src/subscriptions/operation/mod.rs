//! The operation core: one client operation's life, for every transport,
//! knowing no wire format.
//!
//! ```text
//! prepare ─▶ start ─┬─ subscription: authorize (allow) ─▶ limit ─▶ register ─▶ resume? ─▶ Next… ─▶ (client stops)
//!                   └─ query/mutation: limit ─▶ execute at the upstream ─▶ Next + Complete | Error
//!                                                          └─ a mutation's answer ─▶ triggers
//! ```
//!
//! # The seam
//!
//! A transport (the sockets, graphql-transport-ws and the legacy
//! `graphql-ws`, both driven by [`crate::transport::session::Socket`]; the
//! HTTP streams, SSE and multipart, in [`crate::transport::stream`]) does
//! four things and nothing else:
//!
//! 1. **accept**: checks its handshake and builds an [`Operations`] for the
//!    client with the headers its upstream calls carry
//!    ([`Operations::new`]; this counts the connection);
//! 2. **reads** client messages into typed values: a [`Request`] and, if
//!    the protocol carries one, a [`Resume`] ([`Resume::from_extensions`]
//!    for a socket, a `Last-Event-ID` parsed as a [`crate::bus::Cursor`]
//!    for SSE);
//! 3. **calls the core**: [`Operations::authenticate`] once it has the
//!    credentials, [`Operations::prepare`] and [`Operations::start`] per
//!    operation, [`Operations::stop`] when the client stops one; and in its
//!    loop awaits [`Operations::wake`] (cancel-safe) and passes what it
//!    returns to [`Operations::take`];
//! 4. **writes** the core's typed outputs ([`Output`]) in its own framing:
//!    each [`Output::Next`] hands over the group's shared payload bytes and
//!    the transport's own per-operation value (its pre-built envelope, the
//!    `T` of [`Operations<T>`]), so the envelope is built in one place per
//!    protocol and the per-subscriber cost is one splice. Errors are
//!    [`OperationError`]s (one operation ends) and [`Ending`]s (the whole
//!    client ends: slow consumer, token expiry, refused credentials); the
//!    transport says them in its terms (close codes, error events, a fatal
//!    part).
//!
//! What stays in the transport: timers of its own protocol (init timeout,
//! pings), per-message admission, the drain signal and how a write that
//! does not finish is noticed ([`Ending::WritesStalled`]).

mod client;
mod resume;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::HeaderMap;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{Registry, Routes};
use crate::auth::{AuthError, Authenticator};
use crate::bus::{BusError, Cursor};
use crate::graphql::GraphQLError;
use crate::metrics::{Metrics, Refusal};
use crate::proxy::schema::LiveSchema;

pub use client::{Operations, Output, PreparedOperation, Wake, prepare};
pub use resume::{Resume, ResumeError, parse_since};

/// What every client's operations share; built once by the composition root.
pub struct Core {
    pub schema: LiveSchema,
    /// For resume: the history subscriptions replay from.
    pub bus: Arc<dyn crate::bus::Bus>,
    pub routes: Arc<Routes>,
    pub registry: Arc<Registry>,
    /// Queries and mutations, executed at the upstream with the client's credentials.
    pub executor: Arc<dyn Executor>,
    pub authenticator: Arc<dyn Authenticator>,
    /// Refusals by reason.
    pub metrics: Arc<Metrics>,
    pub limits: OperationLimits,
    /// Who is connected (`/status/connections`).
    pub directory: Arc<crate::subscriptions::directory::Directory>,
    pub audit: crate::log::Audit,
    /// Events from the mutations clients send over sockets and streams.
    pub triggers: Arc<crate::triggers::Triggers>,
}

/// The limits of one client's operations.
#[derive(Debug, Clone)]
pub struct OperationLimits {
    /// Payloads queued for a client before it is a slow consumer.
    pub outbound_queue: usize,
    /// Queries and mutations of one client at the upstream at once.
    pub max_inflight: usize,
    /// The limits that are counts of live things, changeable while running.
    pub counts: Arc<CountLimits>,
}

impl OperationLimits {
    pub fn from_config(config: &crate::config::Config, counts: Arc<CountLimits>) -> Self {
        Self {
            outbound_queue: config.limits.outbound_queue,
            max_inflight: config.limits.max_inflight_per_connection,
            counts,
        }
    }
}

/// `limits.max_connections` and `limits.max_subscriptions_per_connection`:
/// checked against live counts at each connection and subscription, so a
/// configuration reload can change them without touching a connection.
#[derive(Debug)]
pub struct CountLimits {
    max_connections: AtomicUsize,
    max_subscriptions: AtomicUsize,
}

impl CountLimits {
    pub fn new(max_connections: usize, max_subscriptions: usize) -> Self {
        Self {
            max_connections: AtomicUsize::new(max_connections),
            max_subscriptions: AtomicUsize::new(max_subscriptions),
        }
    }

    pub fn from_config(limits: &crate::config::LimitsConfig) -> Self {
        Self::new(
            limits.max_connections,
            limits.max_subscriptions_per_connection,
        )
    }

    pub fn max_connections(&self) -> usize {
        self.max_connections.load(Ordering::Relaxed)
    }

    pub fn max_subscriptions(&self) -> usize {
        self.max_subscriptions.load(Ordering::Relaxed)
    }

    /// Applies new values (a reload); connections over a lowered limit stay,
    /// only new ones are refused.
    pub fn set(&self, max_connections: usize, max_subscriptions: usize) {
        self.max_connections
            .store(max_connections, Ordering::Relaxed);
        self.max_subscriptions
            .store(max_subscriptions, Ordering::Relaxed);
    }
}

/// Why an operation could not be run by the upstream.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    #[error("the upstream is unavailable: {0}")]
    Unavailable(String),
}

/// Runs queries and mutations for a client (the upstream client).
pub trait Executor: Send + Sync + 'static {
    /// POSTs a GraphQL request body with the client's `headers`; returns
    /// the response body.
    fn execute(
        &self,
        body: Bytes,
        headers: HeaderMap,
    ) -> BoxFuture<'static, Result<Bytes, ExecuteError>>;
}

/// One GraphQL request as every transport receives it (the
/// GraphQL-over-HTTP request shape, also the payload of a socket's
/// `subscribe`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub query: String,
    #[serde(default)]
    pub operation_name: Option<String>,
    #[serde(default)]
    pub variables: Option<Map<String, Value>>,
    #[serde(default)]
    pub extensions: Option<Map<String, Value>>,
}

/// Why one operation did not start, or ended without completing. The
/// operation is gone; other operations of the client go on.
#[derive(Debug, thiserror::Error)]
pub enum OperationError {
    /// Parse, validation or coercion errors (with locations).
    #[error("the operation is invalid")]
    Invalid(Vec<GraphQLError>),
    /// The engine panicked preparing it: a transport closes the client.
    #[error("the engine panicked preparing an operation")]
    Internal,
    #[error(transparent)]
    InvalidCursor(#[from] ResumeError),
    #[error(
        "extensions.resume is not supported on a field completed from the upstream (resolve): subscribe without it"
    )]
    ResumeUnsupported,
    #[error("Forbidden: not allowed to subscribe")]
    Forbidden,
    #[error("Too many subscriptions on this connection")]
    TooManySubscriptions,
    #[error(
        "Too many queries and mutations in flight on this connection (at most {max}): wait for one to finish"
    )]
    TooManyInFlight { max: usize },
    /// The client's messages were refused by its rate limit.
    #[error("Too many messages on this connection: retry after {retry_after_ms} ms")]
    RateLimited { retry_after_ms: u128 },
    #[error(
        "the resume cursor is older than the retained history: events after it may be lost; subscribe again without a cursor"
    )]
    CursorExpired,
    /// `extensions.resume.since` (SSE `?since=`) before what the history
    /// still holds; `oldest` is the oldest retained event's time.
    #[error(
        "the resume time is older than the retained history{}: events after it may be lost; resume from a later time or subscribe again without one",
        .oldest.as_ref().map(|t| format!(" (oldest retained event: {t})")).unwrap_or_default()
    )]
    SinceExpired { oldest: Option<String> },
    #[error("cannot resume: {0}")]
    BusUnavailable(#[source] BusError),
    /// The upstream answered a query or mutation with errors only.
    #[error("the upstream answered with errors")]
    Upstream(Vec<GraphQLError>),
    #[error("the upstream sent an invalid response")]
    UpstreamInvalid,
    #[error("{0}")]
    UpstreamUnavailable(#[source] ExecuteError),
    /// A running subscription whose field is gone, or whose document no
    /// longer validates against the refreshed schema.
    #[error(
        "the schema changed and this subscription no longer fits it ({reason}): subscribe again"
    )]
    SchemaChanged { reason: Arc<str> },
    /// A running subscription missed events that are gone from the bus
    /// history; `last` is the cursor of the last event it was sent.
    #[error("{}", events_lost_message(.last))]
    EventsLost { last: Option<Cursor> },
    /// A running subscription that a changed `allow` now refuses.
    #[error("Forbidden: no longer allowed to subscribe (the allow rule changed)")]
    NoLongerAllowed,
}

fn events_lost_message(last: &Option<Cursor>) -> String {
    match last {
        Some(c) => format!(
            "events this subscription should have received are gone from the bus history: resubscribe from extensions.cursor ({c}) or refetch"
        ),
        None => "events this subscription should have received are gone from the bus history, and it had received none: there is no cursor to resume from, subscribe again and refetch".to_owned(),
    }
}

impl OperationError {
    /// The `extensions.code` of the error entry, for errors subcar makes.
    pub fn code(&self) -> Option<&'static str> {
        Some(match self {
            Self::Invalid(_) | Self::Upstream(_) => return None,
            Self::Internal => "INTERNAL_SERVER_ERROR",
            Self::InvalidCursor(_) => "INVALID_CURSOR",
            Self::ResumeUnsupported => "RESUME_UNSUPPORTED",
            Self::Forbidden => "FORBIDDEN",
            Self::TooManySubscriptions
            | Self::TooManyInFlight { .. }
            | Self::RateLimited { .. } => "RATE_LIMITED",
            Self::CursorExpired | Self::SinceExpired { .. } => "CURSOR_EXPIRED",
            Self::BusUnavailable(_) => "BUS_UNAVAILABLE",
            Self::UpstreamInvalid | Self::UpstreamUnavailable(_) => "UPSTREAM_UNAVAILABLE",
            Self::SchemaChanged { .. } => "SCHEMA_CHANGED",
            Self::EventsLost { .. } => "EVENTS_LOST",
            Self::NoLongerAllowed => "FORBIDDEN",
        })
    }

    /// Whether the server ended a subscription that was running (rather
    /// than refusing an operation): a multipart stream says it with a
    /// fatal part.
    pub fn ends_running(&self) -> bool {
        matches!(
            self,
            Self::SchemaChanged { .. } | Self::EventsLost { .. } | Self::NoLongerAllowed
        )
    }

    /// The GraphQL errors a client is sent for it.
    pub fn errors(&self) -> Vec<GraphQLError> {
        match self {
            Self::Invalid(errors) | Self::Upstream(errors) => errors.clone(),
            Self::SinceExpired { oldest } => {
                let mut e = coded_error(&self.to_string(), "CURSOR_EXPIRED");
                if let (Some(ext), Some(t)) = (&mut e.extensions, oldest) {
                    ext.insert("oldest".into(), Value::from(t.as_str()));
                }
                vec![e]
            }
            Self::EventsLost { last } => {
                let mut e = coded_error(&self.to_string(), "EVENTS_LOST");
                let cursor = last.map_or(Value::Null, |c| Value::from(c.to_string()));
                e.extensions
                    .get_or_insert_with(Map::new)
                    .insert("cursor".into(), cursor);
                vec![e]
            }
            other => vec![coded_error(&other.to_string(), other.code().unwrap_or(""))],
        }
    }

    /// How the server ends a running subscription for `why`; `last` is
    /// the newest cursor its session sent, when it tracks them (resume).
    pub fn ended(why: crate::subscriptions::Ended, last: Option<Cursor>) -> Self {
        use crate::subscriptions::Ended;
        match why {
            Ended::SchemaChanged(reason) => Self::SchemaChanged { reason },
            Ended::EventsLost(queued) => Self::EventsLost {
                last: last.or(queued),
            },
            Ended::Forbidden => Self::NoLongerAllowed,
        }
    }
}

/// Why a client's operations all end, whatever the transport: the
/// transport closes in its own terms.
#[derive(Debug, thiserror::Error)]
pub enum Ending {
    /// Its queue overflowed: the client does not read fast enough.
    #[error("slow consumer: too many undelivered messages")]
    SlowConsumer,
    /// A write did not finish within the heartbeat timeout.
    #[error("slow consumer: writes stalled")]
    WritesStalled,
    /// The credential's expiry (a JWT's `exp`) passed.
    #[error("Forbidden: token expired")]
    TokenExpired,
    /// The credentials were refused or could not be checked.
    #[error(transparent)]
    Auth(AuthError),
}

impl Ending {
    /// The `extensions.code` a transport that says it in an error uses.
    pub fn code(&self) -> &'static str {
        match self {
            Self::SlowConsumer | Self::WritesStalled => "SLOW_CONSUMER",
            Self::TokenExpired | Self::Auth(AuthError::Refused(_)) => "FORBIDDEN",
            Self::Auth(AuthError::Unavailable(_)) => "AUTH_UNAVAILABLE",
        }
    }

    /// The metrics reason of this ending, when it is a refusal. Slow
    /// consumers are counted where they are detected.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            Self::TokenExpired | Self::Auth(AuthError::Refused(_)) => Some(Refusal::auth),
            Self::SlowConsumer | Self::WritesStalled | Self::Auth(AuthError::Unavailable(_)) => {
                None
            }
        }
    }
}

/// An error entry with `extensions.code`.
pub fn coded_error(message: &str, code: &str) -> GraphQLError {
    let mut e = GraphQLError::new(message);
    let mut ext = Map::new();
    ext.insert("code".into(), Value::from(code));
    e.extensions = Some(ext);
    e
}
