//! HTTP streams on the GraphQL path: GraphQL over SSE in both of its
//! modes (graphql-sse's `PROTOCOL.md`) and Apollo's multipart
//! subscriptions (`subscriptionSpec=1.0`). Like the WebSocket transport,
//! these only convert: a request becomes the core's [`Request`], the
//! core's outputs become events or parts ([`framing`]), written by one
//! task per stream ([`feed`]).
//!
//! Which requests are streams: `PUT` and `DELETE` (single-connection
//! reservations), any request carrying a reservation token, and `GET` or
//! `POST` whose `Accept` asks for `text/event-stream` or for
//! `multipart/mixed` with `subscriptionSpec=1.0`. Of those, queries and
//! mutations go on to the proxy stack (the upstream's own streamed answer
//! passes through; a JSON answer is wrapped as `next` + `complete` for an
//! SSE client); subscriptions are terminated here.

mod feed;
mod framing;
mod request;
mod single;

pub use request::of_query_string;
pub use single::TOKEN_HEADER;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version, header};
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

use self::feed::{Feed, FeedLimits};
pub use self::framing::Framing;
use super::Shared;
use crate::error;
use crate::http::body::{self, Body};
use crate::http::media;
use crate::metrics::Transport;
use crate::shutdown::Shutdown;
use crate::subscriptions::latch::Latch;
use crate::subscriptions::operation::{
    self, Ending, OperationError, Operations, Request as GraphqlRequest, Resume,
};

/// The proxy stack, for queries and mutations that arrive as stream requests.
pub type Fallback = BoxCloneSyncService<Request<Body>, Response<Body>, tower::BoxError>;

/// Apollo clients treat a multipart subscription as dead after some
/// seconds without a part: heartbeats go at least this often.
const MULTIPART_HEARTBEAT_MAX: Duration = Duration::from_secs(5);

/// How long a single-connection reservation waits for its stream.
const RESERVATION_TTL: Duration = Duration::from_secs(30);

/// The stream format `headers` ask for, if any: the media range with the
/// higher quality wins, SSE on a tie.
pub fn negotiate(headers: &HeaderMap) -> Option<Framing> {
    let accept = headers.get(header::ACCEPT)?.to_str().ok()?;
    let (mut sse, mut multipart) = (0.0f32, 0.0f32);
    for range in media::parse(accept) {
        match range.media.as_str() {
            "text/event-stream" => sse = sse.max(range.q),
            "multipart/mixed" if range.param("subscriptionspec").is_some() => {
                multipart = multipart.max(range.q);
            }
            _ => {}
        }
    }
    match (sse, multipart) {
        (s, m) if s > 0.0 && s >= m => Some(Framing::Sse),
        (_, m) if m > 0.0 => Some(Framing::Multipart),
        _ => None,
    }
}

/// Whether the router hands `request` to the stream endpoint.
pub fn is_stream_request<B>(request: &Request<B>) -> bool {
    matches!(*request.method(), Method::PUT | Method::DELETE)
        || single::token_of(request).is_some()
        || negotiate(request.headers()).is_some()
}

/// Serves HTTP streams; cheap to clone.
#[derive(Clone)]
pub struct StreamEndpoint {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    fallback: Fallback,
    /// Triggered when the drain starts: new streams are refused.
    drain: Shutdown,
    /// Tracks the streams' tasks; triggered when open streams are to end.
    sessions: Shutdown,
    reservations: single::Reservations,
    accepted: AtomicU64,
}

impl StreamEndpoint {
    pub fn new(
        shared: Arc<Shared>,
        fallback: Fallback,
        drain: Shutdown,
        sessions: Shutdown,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                shared,
                fallback,
                drain,
                sessions,
                reservations: single::Reservations::default(),
                accepted: AtomicU64::new(0),
            }),
        }
    }
}

impl tower::Service<Request<Body>> for StreamEndpoint {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move { Ok(inner.serve(request).await) })
    }
}

impl Inner {
    async fn serve(self: Arc<Self>, request: Request<Body>) -> Response<Body> {
        let token = single::token_of(&request);
        let framing = negotiate(request.headers());
        match (request.method().clone(), token, framing) {
            (Method::PUT, _, _) => self.reserve(request).await,
            (Method::DELETE, Some(token), _) => self.reservations.stop(&token, request.uri()).await,
            (Method::GET | Method::POST, Some(token), Some(Framing::Sse)) => {
                let version = request.version();
                self.reservations.attach(&token, version).await
            }
            (Method::GET | Method::POST, Some(token), _) => {
                self.single_operation(&token, request).await
            }
            (Method::GET | Method::POST, None, Some(framing)) => {
                self.distinct(framing, request).await
            }
            (Method::DELETE, None, _) => single::stream_not_found(),
            _ => {
                let mut res = error::graphql_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "BAD_REQUEST",
                    "streams on this path take GET, POST, PUT and DELETE",
                );
                res.headers_mut().insert(
                    header::ALLOW,
                    HeaderValue::from_static("GET, POST, PUT, DELETE"),
                );
                res
            }
        }
    }

    /// A distinct-connections SSE stream or a multipart subscription; a
    /// query or mutation goes on to the proxy.
    async fn distinct(&self, framing: Framing, request: Request<Body>) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let (req, bytes) = match request::read(&parts, body).await {
            Ok(read) => read,
            Err(res) => return res,
        };
        match request::is_subscription(&self.shared.core, &req).await {
            Err(res) => res,
            Ok(false) => self.forward(framing, parts, bytes).await,
            Ok(true) => self.subscribe(framing, &parts, req).await,
        }
    }

    /// A query or mutation on a stream request: the proxy's answer, as an
    /// SSE `next` + `complete` when the upstream answered JSON.
    async fn forward(&self, framing: Framing, mut parts: Parts, bytes: Bytes) -> Response<Body> {
        if framing == Framing::Sse {
            request::also_accept_json(&mut parts.headers);
        }
        let request = Request::from_parts(parts, body::full(bytes));
        let response = match self.call_fallback(request).await {
            Ok(res) => res,
            Err(e) => error::rescue_boxed(e),
        };
        if framing == Framing::Sse {
            wrap_json_as_sse(response)
        } else {
            response
        }
    }

    // Boxed outside any async fn: `oneshot`'s future named inside one
    // trips rustc's higher-ranked `Send` inference.
    fn call_fallback(
        &self,
        request: Request<Body>,
    ) -> futures_util::future::BoxFuture<'static, Result<Response<Body>, tower::BoxError>> {
        Box::pin(self.fallback.clone().oneshot(request))
    }

    async fn subscribe(
        &self,
        framing: Framing,
        parts: &Parts,
        req: GraphqlRequest,
    ) -> Response<Body> {
        let core = &self.shared.core;
        let client = self.shared.client_info(parts, transport_of(framing));
        if let Some(refused) = super::refusal(core, &self.drain, client) {
            return refused;
        }
        let Some(headers) = self.shared.headers_for_upstream(parts) else {
            return super::no_client_connection();
        };
        let mut ops = Operations::new(core.clone(), headers);
        ops.describe(client);
        if let Err(e) = ops.authenticate().await {
            return refused_credentials(&e);
        }
        let resume = request::resume(
            framing,
            &parts.headers,
            parts.uri.query(),
            req.extensions.as_ref(),
        );
        let started = match ops.prepare(req).await {
            Ok(op) => resume
                .map_err(OperationError::from)
                .and_then(|resume| ops.start("", op, resume, framing.envelope(""))),
            Err(e) => Err(e),
        };
        match started {
            Ok(()) => {}
            Err(OperationError::Invalid(errors)) if request::is_syntax_error(&errors) => {
                return error::graphql_errors(StatusCode::BAD_REQUEST, &errors);
            }
            Err(OperationError::Internal) => {
                return error::graphql_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "INTERNAL_SERVER_ERROR",
                    "the operation could not be prepared",
                );
            }
            // Validation, rules, cursors: the stream opens and says it, as
            // graphql-sse wants (EventSource cannot read a 4xx body).
            Err(e) => return refused_in_stream(framing, &e, parts.version),
        }
        let (tx, body) = feed::channel();
        let feed = Feed::open(framing, ops, tx, Latch::new(), self.feed_limits(framing));
        self.spawn(feed, transport_of(framing));
        stream_response(framing, body::boxed(body), parts.version)
    }

    /// A single-connection `PUT`: a reservation and its task.
    async fn reserve(&self, request: Request<Body>) -> Response<Body> {
        if let Some(refused) = single::refuse_reservation(request.headers()) {
            return refused;
        }
        let core = &self.shared.core;
        let (parts, _) = request.into_parts();
        let client = self.shared.client_info(&parts, Transport::sse);
        if let Some(refused) = super::refusal(core, &self.drain, client) {
            return refused;
        }
        let Some(headers) = self.shared.headers_for_upstream(&parts) else {
            return super::no_client_connection();
        };
        let mut ops = Operations::new(core.clone(), headers);
        ops.describe(client);
        if let Err(e) = ops.authenticate().await {
            return refused_credentials(&e);
        }
        let (token, commands) = self.reservations.reserve();
        let feed = Feed::reserved(
            ops,
            commands,
            Latch::new(),
            self.feed_limits(Framing::SseSingle),
        );
        let reservations = self.reservations.clone();
        let ended = token.clone();
        self.spawn_then(feed, Transport::sse, move || reservations.remove(&ended));
        single::reserved(token)
    }

    /// An operation `POST`ed to a reservation (`extensions.operationId`).
    async fn single_operation(&self, token: &str, request: Request<Body>) -> Response<Body> {
        let Some(commands) = self.reservations.get(token) else {
            return single::stream_not_found();
        };
        if let Some(refused) = single::refuse_operation_accept(request.headers()) {
            return refused;
        }
        let (parts, body) = request.into_parts();
        let (req, _) = match request::read(&parts, body).await {
            Ok(read) => read,
            Err(res) => return res,
        };
        let Some(id) = single::operation_id(&req) else {
            return single::operation_id_missing();
        };
        let resume = match Resume::from_extensions(req.extensions.as_ref()) {
            Ok(r) => r,
            Err(e) => {
                return error::graphql_error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_CURSOR",
                    &e.to_string(),
                );
            }
        };
        match operation::prepare(self.shared.core.clone(), req).await {
            Ok(op) => single::start(&commands, id, op, resume).await,
            Err(OperationError::Internal) => error::graphql_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_SERVER_ERROR",
                "the operation could not be prepared",
            ),
            // GraphQL over HTTP: the request's problems are its response's.
            Err(e) => error::graphql_errors(StatusCode::BAD_REQUEST, &e.errors()),
        }
    }

    fn feed_limits(&self, framing: Framing) -> FeedLimits {
        let limits = self.shared.limits.load();
        let heartbeat = match framing {
            Framing::Multipart => limits.heartbeat_interval.min(MULTIPART_HEARTBEAT_MAX),
            Framing::Sse | Framing::SseSingle => limits.heartbeat_interval,
        };
        FeedLimits {
            heartbeat,
            write_timeout: limits.heartbeat_timeout,
            reservation_ttl: RESERVATION_TTL,
        }
    }

    fn spawn(&self, feed: Feed, transport: Transport) {
        self.spawn_then(feed, transport, || {});
    }

    /// Runs a stream's task, tracked by the drain, counted in the
    /// transport's connections gauge; `then` runs when it ends.
    fn spawn_then(&self, feed: Feed, transport: Transport, then: impl FnOnce() + Send + 'static) {
        let cancel = feed.cancel();
        super::spawn_client(
            &self.shared,
            &self.sessions,
            &self.accepted,
            transport,
            cancel,
            async move {
                feed.run().await;
                then();
            },
        );
    }
}

fn transport_of(framing: Framing) -> Transport {
    match framing {
        Framing::Sse | Framing::SseSingle => Transport::sse,
        Framing::Multipart => Transport::multipart,
    }
}

/// The response that starts a stream.
fn stream_response(framing: Framing, body: Body, version: Version) -> Response<Body> {
    let mut res = Response::new(body);
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, framing.content_type());
    // No hop may buffer or cache a stream.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    // A connection-specific header: HTTP/2 forbids it.
    if version == Version::HTTP_11 {
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
    }
    res
}

/// A stream that only says why its operation did not start.
fn refused_in_stream(framing: Framing, error: &OperationError, version: Version) -> Response<Body> {
    let mut buf = BytesMut::new();
    let envelope = framing.envelope("");
    framing.open(&mut buf);
    framing.errors(&envelope, &error.errors(), &mut buf);
    framing.end(&mut buf);
    stream_response(framing, body::full(buf.freeze()), version)
}

/// Credentials refused before a stream opens: an HTTP answer.
fn refused_credentials(ending: &Ending) -> Response<Body> {
    match ending {
        Ending::Auth(e) => error::rescue_auth_http(e),
        other => error::graphql_error(StatusCode::UNAUTHORIZED, other.code(), &other.to_string()),
    }
}

/// An upstream's JSON answer to a query sent as an SSE request, as one
/// `next` and a `complete`; anything else (its own stream, an error
/// status) passes as it is. Raw line breaks in JSON are whitespace outside
/// strings (inside they are escaped), so turning them into spaces keeps
/// the document and makes it one `data:` line, chunk by chunk.
fn wrap_json_as_sse(response: Response<Body>) -> Response<Body> {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| {
            let ct = ct.trim_start().to_ascii_lowercase();
            ct.starts_with("application/json")
                || ct.starts_with("application/graphql-response+json")
        })
        .unwrap_or(false);
    if !response.status().is_success() || !is_json {
        return response;
    }
    let (mut parts, upstream) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_TYPE, Framing::Sse.content_type());
    parts
        .headers
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    let head = futures_util::stream::once(async { Ok(Bytes::from_static(b"event: next\ndata: ")) });
    let data = upstream.into_data_stream().map(|chunk| {
        chunk.map(|c| {
            Bytes::from(
                c.iter()
                    .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b })
                    .collect::<Vec<u8>>(),
            )
        })
    });
    let tail = futures_util::stream::once(async {
        Ok(Bytes::from_static(b"\n\nevent: complete\ndata: null\n\n"))
    });
    let frames = head
        .chain(data)
        .chain(tail)
        .map(|r: Result<Bytes, body::BoxError>| r.map(http_body::Frame::data));
    Response::from_parts(parts, body::boxed(http_body_util::StreamBody::new(frames)))
}
