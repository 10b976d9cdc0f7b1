//! Rate limits per client IP on HTTP requests: `429 Too Many Requests` with
//! `Retry-After` and a GraphQL-shaped `RATE_LIMITED` body.
//!
//! The client IP is the peer address, or for a peer in
//! `server.trusted_proxies` the last `X-Forwarded-For` entry that is not a
//! trusted proxy itself ([`crate::proxy::client_ip`]), so a client cannot
//! pick its own bucket by sending the header.
//!
//! Memory is bounded: every [`EVICT_EVERY`] checks, once more than
//! [`RETAIN_ABOVE`] addresses are tracked, addresses whose bucket is full
//! again are forgotten (governor's `retain_recent`: such an address is
//! indistinguishable from a new one). If more than [`MAX_KEYS`] addresses
//! are still mid-burst, the table starts over: under a flood from that many
//! addresses the limit is briefly lenient rather than memory unbounded.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use arc_swap::ArcSwapOption;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use http::{HeaderValue, Request, Response, StatusCode, header};
use parking_lot::RwLock;
use tower::{Layer, Service};

pub use super::ResponseFuture;
use crate::config::IpNet;
use crate::http::body::Body;
use crate::metrics::{Metrics, Refusal};
use crate::proxy::{ClientConnection, client_ip};

/// How often (in checks) the table is considered for eviction.
pub const EVICT_EVERY: u64 = 1024;
/// Below this many addresses nothing is evicted.
pub const RETAIN_ABOVE: usize = 4096;
/// More addresses than this mid-burst: the table starts over.
pub const MAX_KEYS: usize = 65_536;

type Keyed<C> =
    RateLimiter<IpAddr, DashMapStateStore<IpAddr>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// A per-IP limiter with bounded memory; shared by every clone of the layer.
pub struct IpLimiter<C: Clock + Clone = DefaultClock> {
    quota: Quota,
    clock: C,
    table: RwLock<Arc<Keyed<C>>>,
    checks: AtomicU64,
}

impl IpLimiter {
    pub fn new(quota: Quota) -> Self {
        Self::with_clock(quota, DefaultClock::default())
    }
}

impl<C: Clock + Clone> IpLimiter<C> {
    /// A limiter on a given clock (tests use governor's fake clock).
    pub fn with_clock(quota: Quota, clock: C) -> Self {
        Self {
            table: RwLock::new(Arc::new(RateLimiter::dashmap_with_clock(
                quota,
                clock.clone(),
            ))),
            quota,
            clock,
            checks: AtomicU64::new(0),
        }
    }

    /// `Ok` when `ip` may go on, else how long it should wait.
    pub fn check(&self, ip: IpAddr) -> Result<(), std::time::Duration> {
        let result = self.table.read().check_key(&ip);
        if self.checks.fetch_add(1, Ordering::Relaxed) % EVICT_EVERY == EVICT_EVERY - 1 {
            self.evict();
        }
        result.map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Addresses tracked now.
    pub fn len(&self) -> usize {
        self.table.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn evict(&self) {
        let table = self.table.read().clone();
        if table.len() <= RETAIN_ABOVE {
            return;
        }
        table.retain_recent();
        table.shrink_to_fit();
        if table.len() > MAX_KEYS {
            tracing::warn!(
                addresses = table.len(),
                "rate limiter table over {MAX_KEYS} addresses mid-burst; starting over"
            );
            *self.table.write() = Arc::new(RateLimiter::dashmap_with_clock(
                self.quota,
                self.clock.clone(),
            ));
        }
    }
}

/// Applies an [`IpLimiter`]; off (a pass-through) without a quota. Every
/// clone shares one slot, which [`IpRateLimitLayer::set_quota`] refills on
/// a reload (the addresses' state starts over then).
pub struct IpRateLimitLayer<C: Clock + Clone = DefaultClock> {
    limiter: Arc<ArcSwapOption<IpLimiter<C>>>,
    trusted: Arc<[IpNet]>,
    metrics: Arc<Metrics>,
    reason: Refusal,
}

impl<C: Clock + Clone> Clone for IpRateLimitLayer<C> {
    fn clone(&self) -> Self {
        Self {
            limiter: self.limiter.clone(),
            trusted: self.trusted.clone(),
            metrics: self.metrics.clone(),
            reason: self.reason,
        }
    }
}

impl IpRateLimitLayer {
    /// `quota` per client IP; refusals counted in `metrics` as `reason`.
    pub fn new(
        quota: Option<Quota>,
        trusted: &[IpNet],
        metrics: Arc<Metrics>,
        reason: Refusal,
    ) -> Self {
        Self::with_limiter(
            quota.map(|q| Arc::new(IpLimiter::new(q))),
            trusted,
            metrics,
            reason,
        )
    }

    /// A new limiter of `quota` (or none) for every clone of this layer,
    /// when the quota differs from the one in force.
    pub fn set_quota(&self, quota: Option<Quota>) {
        let running = self.limiter.load().as_ref().map(|l| l.quota);
        if running != quota {
            self.limiter
                .store(quota.map(|q| Arc::new(IpLimiter::new(q))));
        }
    }
}

impl<C: Clock + Clone> IpRateLimitLayer<C> {
    pub fn with_limiter(
        limiter: Option<Arc<IpLimiter<C>>>,
        trusted: &[IpNet],
        metrics: Arc<Metrics>,
        reason: Refusal,
    ) -> Self {
        Self {
            limiter: Arc::new(ArcSwapOption::new(limiter)),
            trusted: trusted.into(),
            metrics,
            reason,
        }
    }
}

impl<S, C: Clock + Clone> Layer<S> for IpRateLimitLayer<C> {
    type Service = IpRateLimit<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        IpRateLimit {
            inner,
            layer: self.clone(),
        }
    }
}

/// The middleware of [`IpRateLimitLayer`].
pub struct IpRateLimit<S, C: Clock + Clone = DefaultClock> {
    inner: S,
    layer: IpRateLimitLayer<C>,
}

impl<S: Clone, C: Clock + Clone> Clone for IpRateLimit<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S, B, C> Service<Request<B>> for IpRateLimit<S, C>
where
    S: Service<Request<B>, Response = Response<Body>>,
    C: Clock + Clone,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if let Some(limiter) = &*self.layer.limiter.load()
            && let Some(client) = request.extensions().get::<ClientConnection>()
        {
            let ip = client_ip(request.headers(), *client, &self.layer.trusted);
            if let Err(wait) = limiter.check(ip) {
                self.layer.metrics.refused(self.layer.reason);
                return ResponseFuture::Refused {
                    response: Some(too_many_requests(wait)),
                };
            }
        }
        ResponseFuture::Inner {
            future: self.inner.call(request),
        }
    }
}

/// `429` with `Retry-After` and a GraphQL-shaped body.
pub fn too_many_requests(wait: std::time::Duration) -> Response<Body> {
    let secs = super::retry_after_secs(wait);
    let mut res = crate::error::graphql_error(
        StatusCode::TOO_MANY_REQUESTS,
        "RATE_LIMITED",
        &format!("too many requests from this address: retry after {secs} s"),
    );
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;
    use std::net::{Ipv4Addr, SocketAddr};
    use std::time::Duration;
    use tower::ServiceExt;

    fn ip(i: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
    }

    #[test]
    fn a_burst_is_refused_with_the_wait_and_refills() {
        let clock = FakeRelativeClock::default();
        let l = IpLimiter::with_clock(Quota::per_second(NonZero::new(2).unwrap()), clock.clone());
        assert!(l.check(ip(1)).is_ok());
        assert!(l.check(ip(1)).is_ok());
        let wait = l.check(ip(1)).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        // Another address has its own bucket.
        assert!(l.check(ip(2)).is_ok());
        clock.advance(Duration::from_millis(500));
        assert!(l.check(ip(1)).is_ok());
    }

    use std::num::NonZero;

    #[test]
    fn memory_stays_bounded_with_100k_addresses_arriving_over_time() {
        let clock = FakeRelativeClock::default();
        let l = IpLimiter::with_clock(Quota::per_second(NonZero::new(10).unwrap()), clock.clone());
        let mut peak = 0;
        for i in 0..100_000 {
            assert!(l.check(ip(i)).is_ok());
            if i % 100 == 99 {
                // 100 new addresses per second: older buckets refill.
                clock.advance(Duration::from_secs(1));
            }
            peak = peak.max(l.len());
        }
        assert!(peak <= RETAIN_ABOVE + EVICT_EVERY as usize, "peak {peak}");
    }

    #[test]
    fn memory_stays_bounded_with_100k_addresses_in_one_burst() {
        // No time passes: every bucket is mid-burst, none can be evicted
        // by age, and the table starts over instead of growing.
        let clock = FakeRelativeClock::default();
        let l = IpLimiter::with_clock(Quota::per_second(NonZero::new(10).unwrap()), clock);
        let mut peak = 0;
        for i in 0..100_000 {
            assert!(l.check(ip(i)).is_ok());
            peak = peak.max(l.len());
        }
        assert!(peak <= MAX_KEYS + EVICT_EVERY as usize, "peak {peak}");
    }

    #[tokio::test]
    async fn the_layer_answers_429_with_retry_after_and_trusts_only_trusted_proxies() {
        let clock = FakeRelativeClock::default();
        let limiter = Arc::new(IpLimiter::with_clock(
            Quota::per_second(NonZero::new(1).unwrap()),
            clock,
        ));
        let layer = IpRateLimitLayer::with_limiter(
            Some(limiter.clone()),
            &["10.0.0.0/8".parse().unwrap()],
            Arc::new(Metrics::new()),
            Refusal::rate_limit_request,
        );
        let ok = tower::service_fn(|_: Request<()>| async {
            Ok::<_, std::convert::Infallible>(Response::new(crate::http::body::empty()))
        });
        let svc = layer.layer(ok);
        let request = |peer: &str, xff: Option<&str>| {
            let mut r = Request::new(());
            r.extensions_mut().insert(ClientConnection {
                remote: SocketAddr::new(peer.parse().unwrap(), 1),
                tls: false,
            });
            if let Some(x) = xff {
                r.headers_mut()
                    .insert("x-forwarded-for", x.parse().unwrap());
            }
            r
        };
        let status = |r| {
            let svc = svc.clone();
            async move { svc.oneshot(r).await.unwrap() }
        };
        // Two clients behind one trusted proxy have their own buckets.
        assert_eq!(
            status(request("10.0.0.1", Some("203.0.113.1")))
                .await
                .status(),
            200
        );
        assert_eq!(
            status(request("10.0.0.1", Some("203.0.113.2")))
                .await
                .status(),
            200
        );
        let refused = status(request("10.0.0.1", Some("203.0.113.1"))).await;
        assert_eq!(refused.status(), 429);
        assert_eq!(refused.headers()["retry-after"], "1");
        // An untrusted peer cannot choose its bucket with the header.
        assert_eq!(
            status(request("192.0.2.7", Some("198.51.100.1")))
                .await
                .status(),
            200
        );
        assert_eq!(
            status(request("192.0.2.7", Some("198.51.100.2")))
                .await
                .status(),
            429
        );
        assert_eq!(limiter.len(), 3);
    }
}
