//! Client transports: the WebSocket upgrade on the GraphQL path
//! ([`upgrade`]), the frames at the edge ([`protocol`]) and the server
//! messages sent as them ([`frame`]), one session per
//! socket ([`session`]: timers, admission, writes, close) and each
//! subprotocol's decisions: graphql-transport-ws ([`transport_ws`]) and the
//! legacy `graphql-ws` ([`legacy`], its messages in [`legacy_protocol`]). What an
//! operation is (prepare, authorize, register, resume, execute, end) is the
//! core's ([`crate::subscriptions::operation`]); a transport converts its
//! frames to the core's typed values and the core's outputs to frames.

pub mod close;
pub mod frame;
pub mod inbound;
pub mod legacy;
pub mod legacy_protocol;
pub mod protocol;
pub mod session;
pub mod transport_ws;
pub mod upgrade;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::HeaderMap;

use crate::config::Config;
use crate::subscriptions::operation::Core;

pub use crate::auth::{AllowAll, Authenticator};
pub use crate::subscriptions::operation::{CountLimits, ExecuteError, Executor, OperationLimits};
pub use close::Close;
pub use inbound::InboundStack;
pub use legacy::LegacySession;
pub use session::Session;
pub use upgrade::WsEndpoint;

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

/// A socket's timers and frame limit, from `heartbeat` and `limits`.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    pub init_timeout: Duration,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub max_message_bytes: usize,
}

impl SessionLimits {
    pub fn from_config(config: &Config) -> Self {
        Self {
            init_timeout: config.heartbeat.init_timeout,
            heartbeat_interval: config.heartbeat.interval,
            heartbeat_timeout: config.heartbeat.timeout,
            max_message_bytes: config.limits.max_message_bytes,
        }
    }
}

/// What every session of the process shares; built once by the composition root.
pub struct Shared {
    /// The operation core every transport calls.
    pub core: Arc<Core>,
    /// Policies on each client message (rate limit per connection).
    pub inbound: InboundStack,
    /// Which headers `connection_init.payload` may set for upstream calls.
    pub init_headers: crate::auth::credentials::InitHeaders,
    /// Peers whose forwarding headers are believed (`server.trusted_proxies`).
    pub trusted_proxies: Vec<crate::config::IpNet>,
    pub limits: SessionLimits,
}
