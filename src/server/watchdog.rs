//! Listener timeouts (SPEC section 5 "Idle and slow peers"), the same on
//! every listener: a connection must complete a request head within
//! `server.header_timeout` of its accept (TLS handshake and HTTP version
//! detection included, so one that sends nothing is closed too) or of the
//! first byte of a later request, and a connection with no request in
//! flight that sends nothing for `server.idle_timeout` is closed.
//!
//! hyper alone cannot do this: its h1 `header_read_timeout` starts only once
//! the auto builder has read enough bytes to choose h1 or h2, and it restarts
//! right after each response (so an idle keep-alive connection would be cut
//! at the header timeout), and h1 has no idle timeout. So the connection's
//! reads ([`Watched`]) and requests ([`Tracked`]) update one [`Activity`],
//! and the accept loop drops the connection when [`Activity::deadline`]
//! passes. Once a connection is upgraded to a WebSocket, hyper's connection
//! future ends and so does the watch: the session's heartbeats take over.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::proxy::ClientConnection;

/// `server.header_timeout` and `server.idle_timeout`.
#[derive(Debug, Clone, Copy)]
pub struct ConnTimeouts {
    pub header: Duration,
    pub idle: Duration,
}

/// No request head in progress.
const NO_HEAD: u64 = u64::MAX;

/// What a connection has done, in nanoseconds since its accept. Atomics:
/// the reader, the requests and the timer run in different tasks (h2).
#[derive(Debug)]
pub struct Activity {
    accepted: Instant,
    /// The last byte read or response finished.
    last: AtomicU64,
    /// When the request head now awaited began: the accept for the first
    /// one, else the first byte read with nothing in flight.
    head_started: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    pub fn new(accepted: Instant) -> Arc<Self> {
        Arc::new(Self {
            accepted,
            last: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        })
    }

    fn now(&self) -> u64 {
        u64::try_from(self.accepted.elapsed().as_nanos()).unwrap_or(u64::MAX - 1)
    }

    fn read(&self) {
        let now = self.now();
        self.last.store(now, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Relaxed) == 0 {
            let _ = self.head_started.compare_exchange(
                NO_HEAD,
                now,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_started.store(NO_HEAD, Ordering::Relaxed);
    }

    fn request_finished(&self) {
        self.last.store(self.now(), Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// When the connection is to be closed if nothing changes; `None` while
    /// a request is in flight (its body has `body_timeout`, its response is
    /// the service's).
    pub fn deadline(&self, timeouts: ConnTimeouts) -> Option<Instant> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX / 2);
        let mut at = self
            .last
            .load(Ordering::Relaxed)
            .saturating_add(nanos(timeouts.idle));
        let head = self.head_started.load(Ordering::Relaxed);
        if head != NO_HEAD {
            at = at.min(head.saturating_add(nanos(timeouts.header)));
        }
        Some(self.accepted + Duration::from_nanos(at))
    }

    /// Whether a request head is awaited (for the log line of a close).
    pub fn awaiting_head(&self) -> bool {
        self.head_started.load(Ordering::Relaxed) != NO_HEAD
    }
}

pin_project_lite::pin_project! {
    /// A connection's IO that reports its reads to [`Activity`].
    pub struct Watched<S> {
        #[pin]
        inner: S,
        activity: Arc<Activity>,
    }
}

impl<S> Watched<S> {
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<S: AsyncRead> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let result = this.inner.poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.read();
        }
        result
    }
}

impl<S: AsyncWrite> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A connection's service: attaches the client's connection facts to each
/// request and counts the request in flight until its response body is
/// done or dropped.
#[derive(Clone)]
pub struct Tracked<S> {
    inner: S,
    client: ClientConnection,
    activity: Arc<Activity>,
}

impl<S> Tracked<S> {
    pub fn new(inner: S, client: ClientConnection, activity: Arc<Activity>) -> Self {
        Self {
            inner,
            client,
            activity,
        }
    }
}

/// Ends a request's time in flight when dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, Infallible>> + Send>>;

impl<S, B> tower::Service<Request<Incoming>> for Tracked<S>
where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>,
    S::Future: Send + 'static,
    B: 'static,
{
    type Response = Response<TrackedBody<B>>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Incoming>) -> Self::Future {
        self.activity.request_started();
        let guard = InFlight(self.activity.clone());
        request.extensions_mut().insert(self.client);
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| TrackedBody {
                inner: body,
                _guard: guard,
            }))
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request in flight.
    pub struct TrackedBody<B> {
        #[pin]
        inner: B,
        _guard: InFlight,
    }
}

impl<B: http_body::Body> http_body::Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: ConnTimeouts = ConnTimeouts {
        header: Duration::from_secs(10),
        idle: Duration::from_secs(60),
    };

    #[tokio::test(start_paused = true)]
    async fn header_deadline_from_accept_then_idle_between_requests() {
        let accepted = Instant::now();
        let a = Activity::new(accepted);
        assert_eq!(a.deadline(T), Some(accepted + T.header));
        // Bytes that are not yet a whole head do not extend it.
        tokio::time::advance(Duration::from_secs(3)).await;
        a.read();
        assert_eq!(a.deadline(T), Some(accepted + T.header));
        a.request_started();
        assert_eq!(a.deadline(T), None);
        tokio::time::advance(Duration::from_secs(100)).await;
        a.request_finished();
        let done = Instant::now();
        assert_eq!(a.deadline(T), Some(done + T.idle));
        // A later request's first byte starts its own header deadline.
        tokio::time::advance(Duration::from_secs(5)).await;
        a.read();
        assert_eq!(a.deadline(T), Some(Instant::now() + T.header));
    }
}
