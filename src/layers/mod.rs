//! Tower middleware, each a `Layer` + `Service` pair in tower-http's shape
//! (a cheap `Clone` layer, the service generic over its inner one, a named
//! response future, bounds only on impls). Refusals are responses.
//!
//! - [`ip_rate_limit`]: per-client-IP rate limits on HTTP requests
//!   (WebSocket upgrade attempts, proxied queries and mutations): `429`.
//! - [`require_auth`]: `auth.proxy = "require"` on the proxy path: `401`.
//! - [`origin`]: browser origins on the subscription transports
//!   (WebSocket upgrades; SSE and multipart when they come): `403`.
//! - [`body_limit`]: request body sizes on the public and webhook
//!   listeners: `413`.
//! - [`message_rate_limit`]: client messages per WebSocket session, a layer
//!   around the session's inbound-message service
//!   ([`crate::transport::inbound`]).
//!
//! What is deliberately not a layer: heartbeats, the `connection_init`
//! deadline and the JWT expiry timer live in the session loop, the only
//! place that owns the socket's writes and timers; the webhook's events per
//! second are counted in [`crate::ingest`] after parsing, because a request
//! carries any number of events; `limits.max_connections` and
//! `limits.max_subscriptions_per_connection` are counts of live things,
//! checked where those things are created.

pub mod body_limit;
pub mod ip_rate_limit;
pub mod message_rate_limit;
pub mod origin;
pub mod require_auth;

use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use governor::Quota;
use http::Response;

use crate::http::body::Body;

/// `n` events per second with a burst of `n` (SPEC section 8); `None` for 0.
pub fn per_second(n: u32) -> Option<Quota> {
    NonZeroU32::new(n).map(Quota::per_second)
}

/// `Retry-After` seconds for a wait: rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

pin_project_lite::pin_project! {
    /// The response of a layer that may refuse: the inner service's, or the
    /// refusal it answered with instead.
    #[project = Proj]
    pub enum ResponseFuture<F> {
        Inner { #[pin] future: F },
        Refused { response: Option<Response<Body>> },
    }
}

impl<F> ResponseFuture<F> {
    fn inner(future: F) -> Self {
        Self::Inner { future }
    }

    fn refused(response: Response<Body>) -> Self {
        Self::Refused {
            response: Some(response),
        }
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            Proj::Inner { future } => Poll::Ready(ready!(future.poll(cx))),
            Proj::Refused { response } => {
                Poll::Ready(Ok(response.take().expect("polled after completion")))
            }
        }
    }
}
