//! Client transports: the WebSocket upgrade on the GraphQL path
//! ([`upgrade`]), the frames at the edge ([`protocol`]) and the server
//! messages sent as them ([`frame`]), one session per socket ([`session`]:
//! timers, admission, writes, close) and each subprotocol's decisions:
//! graphql-transport-ws ([`transport_ws`]) and the legacy `graphql-ws`
//! ([`legacy`], its messages in [`legacy_protocol`]); the HTTP streams, SSE
//! and multipart ([`stream`]). What an operation is (prepare, authorize,
//! register, resume, execute, end) is the core's
//! ([`crate::subscriptions::operation`]); a transport converts its frames
//! to the core's typed values and the core's outputs to frames.

pub mod close;
pub mod frame;
pub mod inbound;
pub mod legacy;
pub mod legacy_protocol;
pub mod protocol;
pub mod session;
pub mod stream;
pub mod transport_ws;
pub mod upgrade;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

use crate::config::Config;
use crate::http::body::Body;
use crate::metrics::{GaugeGuard, Refusal, Transport, TransportLabel};
use crate::shutdown::Shutdown;
use crate::subscriptions::directory::ClientInfo;
use crate::subscriptions::latch::Latch;
use crate::subscriptions::operation::Core;

pub use crate::auth::{AllowAll, Authenticator};
pub use crate::subscriptions::operation::{CountLimits, ExecuteError, Executor, OperationLimits};
pub use close::Close;
pub use inbound::InboundStack;
pub use legacy::LegacySession;
pub use session::Session;
pub use stream::StreamEndpoint;
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
#[derive(Debug, Clone, PartialEq)]
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

/// The [`SessionLimits`] in force, shared by every session; a reload
/// replaces them and each session reads them when it needs one (new
/// connections get all of them, open ones the new heartbeat timers).
#[derive(Clone)]
pub struct LiveSessionLimits(Arc<arc_swap::ArcSwap<SessionLimits>>);

impl LiveSessionLimits {
    pub fn load(&self) -> arc_swap::Guard<Arc<SessionLimits>> {
        self.0.load()
    }

    pub fn set(&self, limits: SessionLimits) {
        self.0.store(Arc::new(limits));
    }
}

impl From<SessionLimits> for LiveSessionLimits {
    fn from(limits: SessionLimits) -> Self {
        Self(Arc::new(arc_swap::ArcSwap::from_pointee(limits)))
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
    pub limits: LiveSessionLimits,
}

impl Shared {
    /// The headers of a client's upstream calls, built once from its
    /// request with forwarding headers set by subcar; `None` without the
    /// connection information the listener attaches.
    pub fn headers_for_upstream(&self, request: &http::request::Parts) -> Option<HeaderMap> {
        let client = request
            .extensions
            .get::<crate::proxy::ClientConnection>()
            .copied()?;
        let mut headers =
            crate::proxy::on_behalf_of(&request.headers, client, &self.trusted_proxies);
        // What the client asked of the stream itself is not for the upstream.
        headers.remove(header::ACCEPT);
        headers.remove("last-event-id");
        headers.remove(stream::TOKEN_HEADER);
        Some(detached(&headers))
    }

    /// Who a client is for the directory and the audit log: its IP (a
    /// trusted proxy's forwarded one) and transport.
    pub fn client_info(&self, request: &http::request::Parts, transport: Transport) -> ClientInfo {
        let ip = request
            .extensions
            .get::<crate::proxy::ClientConnection>()
            .map(|c| crate::proxy::client_ip(&request.headers, *c, &self.trusted_proxies))
            .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
        ClientInfo { ip, transport }
    }
}

/// `headers` with every value in an allocation of its own. hyper parses
/// header values as slices of the connection's read buffer (8 KiB,
/// `INIT_BUFFER_SIZE` in its `proto/h1/io.rs`), so a single value kept (the
/// `Host` copied into `X-Forwarded-Host`, a `User-Agent`) would keep that
/// whole buffer for as long as the session holds its headers: its life.
fn detached(headers: &HeaderMap) -> HeaderMap {
    let mut owned = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let mut copy = HeaderValue::from_bytes(value.as_bytes())
            .expect("the bytes of a header value are a valid header value");
        copy.set_sensitive(value.is_sensitive());
        owned.append(name.clone(), copy);
    }
    owned
}

/// Why a new client may not connect, if it may not: `503` at
/// `limits.max_connections` and while draining.
fn refusal(core: &Core, drain: &Shutdown, client: ClientInfo) -> Option<Response<Body>> {
    let (refusal, why) = if core.registry.stats.connections.load(Ordering::Relaxed)
        >= core.limits.counts.max_connections()
    {
        (Refusal::capacity, "too many connections")
    } else if drain.is_triggered() {
        (Refusal::draining, "server shutting down")
    } else {
        return None;
    };
    core.metrics.refused(refusal);
    core.audit
        .connection(false, client.transport.name(), &client.ip.to_string(), why);
    Some(refuse(StatusCode::SERVICE_UNAVAILABLE, why))
}

fn no_client_connection() -> Response<Body> {
    refuse(
        StatusCode::INTERNAL_SERVER_ERROR,
        "no client connection information",
    )
}

/// A refused connection; a `503` (capacity, drain) says when to come back.
fn refuse(status: StatusCode, message: &str) -> Response<Body> {
    if status != StatusCode::SERVICE_UNAVAILABLE {
        return crate::error::graphql_error(status, "BAD_REQUEST", message);
    }
    let mut res = crate::error::graphql_error(status, "UNAVAILABLE", message);
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    res
}

/// Runs one client's task (`run`), tracked by the drain and counted in its
/// transport's connections gauge. When the drain time is up, `cancel` is
/// raised, spread over [`upgrade::CLOSE_SPREAD`] by `accepted` so that
/// clients do not all reconnect in the same instant; `run` then ends in its
/// protocol's terms.
fn spawn_client(
    shared: &Shared,
    sessions: &Shutdown,
    accepted: &AtomicU64,
    transport: Transport,
    cancel: Latch,
    run: impl Future<Output = ()> + Send + 'static,
) {
    // A child token per client: polling it locks the client's own node,
    // not the one node every client would otherwise share.
    let closing = sessions.token().child_token();
    let delay = upgrade::close_delay(accepted.fetch_add(1, Ordering::Relaxed));
    // A clone: the family's guard must not live across awaits.
    let gauge = shared
        .core
        .metrics
        .connections
        .get_or_create(&TransportLabel { transport })
        .clone();
    sessions.spawn(async move {
        // Held by a guard, so a task that panics gives it back.
        let _connected = GaugeGuard::hold(gauge);
        let close_later = async {
            closing.cancelled().await;
            tokio::time::sleep(delay).await;
            cancel.raise();
            std::future::pending::<()>().await
        };
        tokio::select! {
            () = run => {}
            () = close_later => {}
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detached_headers_hold_no_slice_of_the_parsed_buffer() {
        let buffer = Bytes::from(vec![b'a'; 8192]);
        let inside = buffer.as_ptr_range();
        let mut headers = HeaderMap::new();
        let agent = HeaderValue::from_maybe_shared(buffer.slice(0..10)).unwrap();
        assert!(
            inside.contains(&agent.as_bytes().as_ptr()),
            "the source shares the buffer"
        );
        headers.append(header::USER_AGENT, agent);
        headers.append(header::USER_AGENT, HeaderValue::from_static("second"));
        let mut secret = HeaderValue::from_maybe_shared(buffer.slice(10..20)).unwrap();
        secret.set_sensitive(true);
        headers.append(header::AUTHORIZATION, secret);

        let owned = detached(&headers);
        assert_eq!(owned, headers);
        assert_eq!(owned.get_all(header::USER_AGENT).iter().count(), 2);
        assert!(owned[header::AUTHORIZATION].is_sensitive());
        for value in owned.values() {
            assert!(!inside.contains(&value.as_bytes().as_ptr()));
        }
    }
}
