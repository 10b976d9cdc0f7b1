//! Client messages per WebSocket connection (`rate_limits.messages_per_connection`),
//! a layer around the session's inbound-message service
//! ([`crate::transport::inbound`]).
//!
//! A message over the limit is [`Admission::Limited`]: the session answers a
//! `subscribe` with an `error` whose `extensions.code` is `RATE_LIMITED`
//! (a `ping` over the limit goes unanswered: there is no operation to
//! answer for). A client that sends [`FLOOD_STRIKES`] refused messages in a
//! row, without one admitted in between, gets [`Admission::Flooding`] and
//! is closed `4429`. `connection_init`, `pong` and `complete` are never
//! limited: they only lower the load.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context, Poll};

use either::Either;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tower::{Layer, Service};

use crate::transport::inbound::{Admission, MessageKind};

/// Refused messages in a row after which a client counts as flooding.
pub const FLOOD_STRIKES: u32 = 10;

/// Gives each connection its own bucket of `quota`; off without one. The
/// quota is shared by the clones and read when a connection starts, so a
/// reload ([`Self::set_quota`]) applies to the connections that follow.
#[derive(Debug, Clone)]
pub struct MessageRateLimitLayer {
    quota: Arc<parking_lot::RwLock<Option<Quota>>>,
    /// One clock for every connection's bucket: creating a clock probes the
    /// CPU (CPUID, a VM exit under virtualisation), too slow per connection.
    clock: DefaultClock,
}

impl MessageRateLimitLayer {
    pub fn new(quota: Option<Quota>) -> Self {
        Self {
            quota: Arc::new(parking_lot::RwLock::new(quota)),
            clock: DefaultClock::default(),
        }
    }

    pub fn set_quota(&self, quota: Option<Quota>) {
        *self.quota.write() = quota;
    }
}

impl<S> Layer<S> for MessageRateLimitLayer {
    type Service = MessageRateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MessageRateLimit {
            inner,
            limiter: self
                .quota
                .read()
                .map(|q| RateLimiter::direct_with_clock(q, self.clock.clone())),
            strikes: 0,
        }
    }
}

/// The middleware of [`MessageRateLimitLayer`]; one per connection, so not
/// `Clone`: its bucket is the connection's.
pub struct MessageRateLimit<S> {
    inner: S,
    limiter: Option<DefaultDirectRateLimiter>,
    /// Refused messages since the last admitted one.
    strikes: u32,
}

impl<S> Service<MessageKind> for MessageRateLimit<S>
where
    S: Service<MessageKind, Response = Admission, Error = Infallible>,
{
    type Response = Admission;
    type Error = Infallible;
    type Future = Either<S::Future, Ready<Result<Admission, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, kind: MessageKind) -> Self::Future {
        if let Some(limiter) = &self.limiter
            && !kind.is_free()
        {
            match limiter.check() {
                Ok(()) => self.strikes = 0,
                Err(not_until) => {
                    self.strikes += 1;
                    let verdict = if self.strikes >= FLOOD_STRIKES {
                        Admission::Flooding
                    } else {
                        Admission::Limited {
                            retry_after: not_until.wait_time_from(limiter.clock().now()),
                        }
                    };
                    return Either::Right(ready(Ok(verdict)));
                }
            }
        }
        Either::Left(self.inner.call(kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::inbound::Admit;
    use std::num::NonZeroU32;
    use tower::ServiceExt;

    async fn verdict(svc: &mut MessageRateLimit<Admit>, kind: MessageKind) -> Admission {
        svc.ready().await.unwrap().call(kind).await.unwrap()
    }

    #[tokio::test]
    async fn over_the_limit_is_limited_then_flooding_and_free_messages_pass() {
        let quota = Quota::per_minute(NonZeroU32::new(2).unwrap());
        let mut svc = MessageRateLimitLayer::new(Some(quota)).layer(Admit);
        assert_eq!(
            verdict(&mut svc, MessageKind::Subscribe).await,
            Admission::Admit
        );
        assert_eq!(verdict(&mut svc, MessageKind::Ping).await, Admission::Admit);
        for _ in 1..FLOOD_STRIKES {
            assert!(matches!(
                verdict(&mut svc, MessageKind::Subscribe).await,
                Admission::Limited { retry_after } if !retry_after.is_zero()
            ));
            assert_eq!(
                verdict(&mut svc, MessageKind::Complete).await,
                Admission::Admit
            );
        }
        assert_eq!(
            verdict(&mut svc, MessageKind::Subscribe).await,
            Admission::Flooding
        );
    }

    #[tokio::test]
    async fn without_a_quota_everything_passes() {
        let mut svc = MessageRateLimitLayer::new(None).layer(Admit);
        for _ in 0..1000 {
            assert_eq!(
                verdict(&mut svc, MessageKind::Subscribe).await,
                Admission::Admit
            );
        }
    }
}
