//! The WebSocket upgrade on the GraphQL path (hyper's upgrade model): the
//! handshake is checked and answered here, then the upgraded socket becomes
//! a tokio-tungstenite stream with deliberately small buffers and a
//! [`Session`] runs on it as a tracked task.
//!
//! The subprotocol is `graphql-transport-ws`, or the legacy `graphql-ws`
//! when a client offers only that ([`Subprotocol::negotiate`]).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use super::legacy_protocol::LEGACY_SUBPROTOCOL;
use super::protocol::{SUBPROTOCOL, WsTransport, websocket_config};
use super::{LegacySession, Session, Shared, refuse};
use crate::http::body::{self, Body};
use crate::metrics::Transport;
use crate::shutdown::Shutdown;
use crate::subscriptions::latch::Latch;

/// The subprotocol a socket speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subprotocol {
    /// `graphql-transport-ws`.
    TransportWs,
    /// The legacy `graphql-ws` (subscriptions-transport-ws).
    Legacy,
}

impl Subprotocol {
    /// The choice among the client's offers: `graphql-transport-ws` wins
    /// when both are offered, whatever their order.
    pub fn negotiate(offered: &[&str]) -> Option<Self> {
        if offered.contains(&SUBPROTOCOL) {
            Some(Self::TransportWs)
        } else if offered.contains(&LEGACY_SUBPROTOCOL) {
            Some(Self::Legacy)
        } else {
            None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::TransportWs => SUBPROTOCOL,
            Self::Legacy => LEGACY_SUBPROTOCOL,
        }
    }

    /// Its metrics label.
    pub fn transport(self) -> Transport {
        match self {
            Self::TransportWs => Transport::graphql_transport_ws,
            Self::Legacy => Transport::graphql_ws,
        }
    }
}

/// At the end of a drain, open sockets are closed over this window rather
/// than all at once, so their clients do not reconnect in the same instant.
pub const CLOSE_SPREAD: Duration = Duration::from_secs(1);

/// Accepts WebSocket upgrades; cheap to clone.
#[derive(Clone)]
pub struct WsEndpoint {
    shared: Arc<Shared>,
    config: WebSocketConfig,
    /// Triggered when the drain starts: new upgrades are refused.
    drain: Shutdown,
    /// Tracks the sessions; triggered when the drain time is up and open
    /// sockets are to be closed with `1001`.
    sessions: Shutdown,
    accepted: Arc<AtomicU64>,
}

impl WsEndpoint {
    pub fn new(shared: Arc<Shared>, drain: Shutdown, sessions: Shutdown) -> Self {
        let config = websocket_config(shared.limits.load().max_message_bytes);
        Self {
            shared,
            config,
            drain,
            sessions,
            accepted: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Whether `headers` ask for a WebSocket upgrade (then [`Self::upgrade`]
    /// answers the request, not the proxy).
    pub fn is_upgrade(headers: &HeaderMap) -> bool {
        headers
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
    }

    /// Answers an upgrade request: `101` and a session, or a refusal.
    pub fn upgrade<B>(&self, mut request: Request<B>) -> Response<Body> {
        let headers = request.headers();
        if request.method() != Method::GET {
            return refuse(
                StatusCode::METHOD_NOT_ALLOWED,
                "a WebSocket upgrade must be a GET request",
            );
        }
        let connection_upgrade = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
        let Some(key) = headers
            .get(header::SEC_WEBSOCKET_KEY)
            .filter(|_| connection_upgrade)
        else {
            return refuse(StatusCode::BAD_REQUEST, "not a valid WebSocket handshake");
        };
        if headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .map(HeaderValue::as_bytes)
            != Some(b"13")
        {
            let mut res = refuse(
                StatusCode::UPGRADE_REQUIRED,
                "WebSocket version 13 is required",
            );
            res.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
            return res;
        }
        let offered: Vec<&str> = headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let Some(subprotocol) = Subprotocol::negotiate(&offered) else {
            return refuse(
                StatusCode::BAD_REQUEST,
                "the WebSocket subprotocol graphql-transport-ws (or the legacy graphql-ws) is required",
            );
        };
        let accept = derive_accept_key(key.as_bytes());
        let on_upgrade = hyper::upgrade::on(&mut request);
        let (parts, _) = request.into_parts();
        let client = self.shared.client_info(&parts, subprotocol.transport());
        if let Some(refused) = super::refusal(&self.shared.core, &self.drain, client) {
            return refused;
        }
        let Some(headers) = self.shared.headers_for_upstream(&parts) else {
            return super::no_client_connection();
        };
        let (shared, config) = (self.shared.clone(), self.config);
        let cancel = Latch::new();
        let closing = cancel.clone();
        let run = async move {
            let upgraded = match on_upgrade.await {
                Ok(u) => u,
                Err(e) => {
                    tracing::debug!(error = %e, "websocket upgrade failed");
                    return;
                }
            };
            let ws = WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                Some(config),
            )
            .await;
            tracing::debug!(subprotocol = subprotocol.name(), "websocket connected");
            match subprotocol {
                Subprotocol::TransportWs => {
                    Session::new(WsTransport::new(ws), shared, headers, closing)
                        .describe(client)
                        .run()
                        .await
                }
                Subprotocol::Legacy => {
                    LegacySession::new(WsTransport::new(ws), shared, headers, closing)
                        .describe(client)
                        .run()
                        .await
                }
            }
            tracing::debug!("websocket session ended");
        };
        super::spawn_client(
            &self.shared,
            &self.sessions,
            &self.accepted,
            subprotocol.transport(),
            cancel,
            run,
        );
        let mut res = Response::new(body::empty());
        *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = res.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(
            header::SEC_WEBSOCKET_ACCEPT,
            HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
        );
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(subprotocol.name()),
        );
        res
    }
}

/// The endpoint as the innermost service of the upgrade stack, so the
/// composition root can put layers (connection-attempt rate limits) in
/// front of it.
impl<B> tower::Service<Request<B>> for WsEndpoint {
    type Response = Response<Body>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Response<Body>, std::convert::Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        std::future::ready(Ok(self.upgrade(request)))
    }
}

/// The `n`th connection's place in [`CLOSE_SPREAD`]: Fibonacci hashing
/// spreads consecutive connections evenly over the window.
pub(super) fn close_delay(n: u64) -> Duration {
    let fraction = (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64 / (1u64 << 53) as f64;
    CLOSE_SPREAD.mul_f64(fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graphql_transport_ws_wins_when_both_are_offered() {
        use Subprotocol::*;
        for (offered, chosen) in [
            (
                &["graphql-ws", "graphql-transport-ws"][..],
                Some(TransportWs),
            ),
            (&["graphql-transport-ws", "graphql-ws"], Some(TransportWs)),
            (&["graphql-ws"], Some(Legacy)),
            (&["chat", "graphql-ws"], Some(Legacy)),
            (&["chat"], None),
            (&[], None),
        ] {
            assert_eq!(Subprotocol::negotiate(offered), chosen, "{offered:?}");
        }
    }

    #[test]
    fn close_delays_cover_the_window_evenly() {
        let mut buckets = [0u32; 10];
        for n in 0..10_000 {
            let d = close_delay(n);
            assert!(d < CLOSE_SPREAD);
            buckets[(d.as_secs_f64() / CLOSE_SPREAD.as_secs_f64() * 10.0) as usize] += 1;
        }
        for b in buckets {
            assert!((900..=1100).contains(&b), "{buckets:?}");
        }
    }
}
