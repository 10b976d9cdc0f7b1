//! WebSocket termination: the upgrade on the GraphQL path ([`upgrade`]),
//! the graphql-transport-ws messages ([`protocol`]) and one session per
//! socket ([`session`]), which registers subscriptions with the registry and
//! runs queries and mutations through an [`Executor`].

pub mod inbound;
pub mod protocol;
pub mod session;
pub mod upgrade;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::HeaderMap;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::schema::LiveSchema;
use crate::subscriptions::{Registry, Routes};

pub use crate::auth::{AllowAll, Authenticator};
pub use inbound::InboundStack;
pub use session::Session;
pub use upgrade::WsEndpoint;

/// Why an operation sent over the socket could not be run by the upstream.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    #[error("the upstream is unavailable: {0}")]
    Unavailable(String),
}

/// Runs queries and mutations received over a socket (the upstream client).
pub trait Executor: Send + Sync + 'static {
    /// POSTs a GraphQL request body with the connection's `headers`; returns
    /// the response body.
    fn execute(
        &self,
        body: Bytes,
        headers: HeaderMap,
    ) -> BoxFuture<'static, Result<Bytes, ExecuteError>>;
}

/// Queries and mutations over a socket go through the proxy's pooled client.
impl Executor for crate::proxy::Upstream {
    fn execute(
        &self,
        body: Bytes,
        headers: HeaderMap,
    ) -> BoxFuture<'static, Result<Bytes, ExecuteError>> {
        let upstream = self.clone();
        Box::pin(async move {
            upstream
                .post_graphql(body, &headers)
                .await
                .map(|(_, body)| body)
                .map_err(|e| ExecuteError::Unavailable(e.to_string()))
        })
    }
}

/// Per-connection limits and timers, from `heartbeat` and `limits`.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    pub init_timeout: Duration,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub outbound_queue: usize,
    pub max_message_bytes: usize,
    /// Queries and mutations of one connection at the upstream at once.
    pub max_inflight: usize,
    /// The limits that are counts of live things, changeable while running.
    pub counts: Arc<CountLimits>,
}

/// `limits.max_connections` and `limits.max_subscriptions_per_connection`:
/// checked against live counts at each upgrade and `subscribe`, so a
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

impl SessionLimits {
    pub fn from_config(config: &Config, counts: Arc<CountLimits>) -> Self {
        Self {
            init_timeout: config.heartbeat.init_timeout,
            heartbeat_interval: config.heartbeat.interval,
            heartbeat_timeout: config.heartbeat.timeout,
            outbound_queue: config.limits.outbound_queue,
            max_message_bytes: config.limits.max_message_bytes,
            max_inflight: config.limits.max_inflight_per_connection,
            counts,
        }
    }
}

/// What every session of the process shares; built once by the composition root.
pub struct Shared {
    pub schema: LiveSchema,
    /// For resume: the history subscriptions replay from.
    pub bus: Arc<dyn crate::bus::Bus>,
    pub routes: Arc<Routes>,
    pub registry: Arc<Registry>,
    pub executor: Arc<dyn Executor>,
    pub authenticator: Arc<dyn Authenticator>,
    /// Policies on each client message (rate limit per connection).
    pub inbound: InboundStack,
    /// Which headers `connection_init.payload` may set for upstream calls.
    pub init_headers: crate::auth::credentials::InitHeaders,
    /// Peers whose forwarding headers are believed (`server.trusted_proxies`).
    pub trusted_proxies: Vec<crate::config::IpNet>,
    pub limits: SessionLimits,
    /// Connections and refusals by reason.
    pub metrics: Arc<Metrics>,
}
