//! The query/mutation path: every request on the GraphQL path that is not a
//! subscription goes to the upstream with method, query string, body and
//! end-to-end headers kept, and its response streams back as it arrives.

mod headers;
pub mod operation;
mod upstream;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response, header};
use http_body_util::BodyExt;

pub use headers::{
    ClientConnection, FORWARDING, client_ip, for_upstream, is_trusted, on_behalf_of,
    remove_hop_by_hop,
};
pub use upstream::{PROBE_USER_AGENT, Upstream, UpstreamBuildError};

use crate::body::{self, Body, BoxError};
use crate::config::IpNet;
use crate::schema::LiveSchema;

/// Why a request could not be proxied; [`crate::error::rescue_proxy`] turns
/// each into the response the client sees.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("the upstream did not answer within upstream.timeout")]
    Timeout,
    #[error("the upstream is unreachable")]
    Unreachable(#[source] BoxError),
    #[error("the upstream sent an invalid response")]
    BadResponse(#[source] BoxError),
    #[error("the request body is larger than {limit} bytes")]
    RequestTooLarge { limit: usize },
    #[error("cannot read the request body")]
    ReadRequest(#[source] BoxError),
    #[error("the request body stalled for longer than server.body_timeout")]
    BodyTimeout,
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),
    #[error(
        "subscriptions are served over WebSocket (subprotocol graphql-transport-ws) on this path, not over plain HTTP"
    )]
    SubscriptionOverHttp,
}

/// Forwards requests to the upstream. Cheap to clone.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

struct Inner {
    upstream: Upstream,
    schema: LiveSchema,
    trusted_proxies: Vec<IpNet>,
    max_request_bytes: usize,
}

impl Proxy {
    pub fn new(
        upstream: Upstream,
        schema: LiveSchema,
        trusted_proxies: Vec<IpNet>,
        max_request_bytes: usize,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                upstream,
                schema,
                trusted_proxies,
                max_request_bytes,
            }),
        }
    }

    pub fn upstream(&self) -> &Upstream {
        &self.inner.upstream
    }
}

impl tower::Service<Request<Body>> for Proxy {
    type Response = Response<Body>;
    type Error = ProxyError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, ProxyError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move { inner.forward(request).await })
    }
}

/// How the request body travels, decided by its content type.
enum BodyKind {
    /// JSON or `application/graphql`: small, read whole to check the operation.
    Inspect { json: bool },
    /// Anything else (uploads, …): streamed untouched.
    Stream,
}

impl Inner {
    async fn forward(&self, request: Request<Body>) -> Result<Response<Body>, ProxyError> {
        let (mut parts, body) = request.into_parts();
        let body = match (&parts.method, body_kind(&parts.headers)) {
            (&Method::GET, _) => {
                if parts
                    .uri
                    .query()
                    .is_some_and(operation::query_string_is_subscription)
                {
                    return Err(ProxyError::SubscriptionOverHttp);
                }
                body
            }
            (_, BodyKind::Inspect { json }) => {
                let bytes = self.read_body(body).await?;
                let subscription = if json {
                    operation::json_body_is_subscription(&bytes)
                } else {
                    operation::selects_subscription(std::str::from_utf8(&bytes).ok(), None)
                };
                if subscription {
                    return Err(ProxyError::SubscriptionOverHttp);
                }
                if let Some(answer) = json
                    .then(|| operation::json_introspection_request(&bytes))
                    .flatten()
                    .and_then(|r| self.introspect(r))
                {
                    return Ok(answer);
                }
                body::full(bytes)
            }
            (_, BodyKind::Stream) => body,
        };

        let client = parts.extensions.get::<ClientConnection>().copied().ok_or(
            ProxyError::InvalidRequest("no client connection information"),
        )?;
        headers::for_upstream(&mut parts.headers, client, &self.trusted_proxies);
        let mut upstream_request = Request::new(body);
        *upstream_request.method_mut() = parts.method;
        *upstream_request.uri_mut() = self.upstream.url_with_query(parts.uri.query());
        *upstream_request.headers_mut() = parts.headers;

        let response = self.upstream.send(upstream_request).await?;
        let (mut parts, body) = response.into_parts();
        headers::remove_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, body::boxed(body)))
    }

    /// Answers an introspection query from the merged schema, so tools see
    /// subcar's Subscription root beside the upstream's types. `None` when
    /// the query also selects ordinary fields: the upstream answers those.
    fn introspect(&self, request: operation::GraphqlRequest) -> Option<Response<Body>> {
        let schema = self.schema.current();
        let variables = request.variables.unwrap_or_default();
        let result = crate::graphql::introspection::execute(
            &schema,
            &request.query,
            request.operation_name.as_deref(),
            &variables,
        )?;
        let mut response = Response::new(body::full(result.to_string()));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        Some(response)
    }

    /// Reads a request body whole, refusing it past `max_request_bytes`.
    async fn read_body(&self, mut body: Body) -> Result<Bytes, ProxyError> {
        let limit = self.max_request_bytes;
        let mut buf = bytes::BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                if e.is::<tower_http::timeout::TimeoutError>() {
                    ProxyError::BodyTimeout
                } else {
                    ProxyError::ReadRequest(e)
                }
            })?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > limit {
                    return Err(ProxyError::RequestTooLarge { limit });
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(buf.freeze())
    }
}

fn body_kind(headers: &http::HeaderMap) -> BodyKind {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim_start()
        .to_ascii_lowercase();
    if content_type.starts_with("application/json") {
        BodyKind::Inspect { json: true }
    } else if content_type.starts_with("application/graphql") {
        BodyKind::Inspect { json: false }
    } else {
        BodyKind::Stream
    }
}
