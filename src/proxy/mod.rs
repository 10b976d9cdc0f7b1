//! The query/mutation path: every request on the GraphQL path that is not a
//! subscription goes to the upstream with method, query string, body and
//! end-to-end headers kept, and its response streams back as it arrives.
//! The schema learned from the upstream lives here too ([`schema`]).
//! A mutation some `[[triggers]]` entry names gets its response body
//! copied on its way to the client, for [`crate::triggers`].

mod headers;
pub mod operation;
pub mod schema;
mod upstream;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Method, Request, Response, header};

pub use headers::{
    ClientConnection, FORWARDING, client_ip, for_upstream, is_trusted, on_behalf_of,
    remove_hop_by_hop,
};
pub use upstream::{PROBE_USER_AGENT, Upstream, UpstreamBuildError};

use crate::config::IpNet;
use crate::http::body::{self, Body, BoxError};
use crate::proxy::schema::LiveSchema;
use crate::triggers::{Caller, Sent, Tee, Triggers};

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
        "a subscription needs a stream: a WebSocket (subprotocol graphql-transport-ws or graphql-ws), Accept: text/event-stream (GraphQL over SSE) or Accept: multipart/mixed;subscriptionSpec=1.0 (multipart)"
    )]
    SubscriptionOverHttp,
    /// A document subcar had to parse is refused (`DOCUMENT_TOO_COMPLEX`,
    /// `INTROSPECTION_DISABLED`): answered 400 with that error.
    #[error("{}", .0.message)]
    Document(Box<crate::graphql::GraphQLError>),
}

impl From<body::ReadError> for ProxyError {
    fn from(e: body::ReadError) -> Self {
        match e {
            body::ReadError::TooLarge(t) => Self::RequestTooLarge { limit: t.limit },
            body::ReadError::Stalled => Self::BodyTimeout,
            body::ReadError::Failed(e) => Self::ReadRequest(e),
        }
    }
}

fn refused(e: crate::graphql::GraphQLError) -> ProxyError {
    ProxyError::Document(Box::new(e))
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
    triggers: Arc<Triggers>,
}

impl Proxy {
    pub fn new(
        upstream: Upstream,
        schema: LiveSchema,
        trusted_proxies: Vec<IpNet>,
        triggers: Arc<Triggers>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                upstream,
                schema,
                trusted_proxies,
                triggers,
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
        let schema = self.schema.current();
        // A body that may hold a mutation a trigger names (a byte scan; it
        // is parsed after the answer). Mutations are POSTs (GraphQL over
        // HTTP), so a GET never does.
        let mut sent: Option<Sent> = None;
        let body = match (&parts.method, body_kind(&parts.headers)) {
            (&Method::GET, _) => {
                if let Some(q) = parts.uri.query()
                    && (!schema.introspection_enabled()
                        || operation::may_need_parsing(q.as_bytes()))
                {
                    let (schema, q) = (schema.clone(), q.to_owned());
                    let answer =
                        offloaded(q.len(), move || inspect_query_string(&schema, &q)).await?;
                    if let Some(answer) = answer {
                        return Ok(answer);
                    }
                }
                body
            }
            (_, BodyKind::Inspect { json }) => {
                let bytes = body::read_whole(body).await?;
                if !schema.introspection_enabled() || operation::may_need_parsing(&bytes) {
                    let (schema, inspected) = (schema.clone(), bytes.clone());
                    let answer =
                        offloaded(bytes.len(), move || inspect(&schema, &inspected, json)).await?;
                    if let Some(answer) = answer {
                        return Ok(answer);
                    }
                }
                if self.triggers.may_trigger(&bytes) {
                    sent = Some(Sent::Http {
                        body: bytes.clone(),
                        json,
                    });
                }
                body::full(bytes)
            }
            (_, BodyKind::Stream) => body,
        };

        let client = parts.extensions.get::<ClientConnection>().copied().ok_or(
            ProxyError::InvalidRequest("no client connection information"),
        )?;
        headers::for_upstream(&mut parts.headers, client, &self.trusted_proxies);
        let triggered = sent.map(|sent| {
            // The copy is read as JSON: the answer must come unencoded
            // (between containers of one pod compression buys nothing).
            parts.headers.remove(header::ACCEPT_ENCODING);
            let caller = match parts.extensions.get::<crate::auth::ClientClaims>() {
                Some(c) => Caller::Claims(c.0.clone()),
                None => {
                    let mut headers = parts.headers.clone();
                    headers.remove(header::CONTENT_LENGTH);
                    Caller::Headers(headers)
                }
            };
            let key = parts
                .headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            ((schema, sent), caller, key)
        });
        let mut upstream_request = Request::new(body);
        *upstream_request.method_mut() = parts.method;
        *upstream_request.uri_mut() = self.upstream.url_with_query(parts.uri.query());
        *upstream_request.headers_mut() = parts.headers;

        let response = self.upstream.send(upstream_request).await?;
        let (mut parts, body) = response.into_parts();
        headers::remove_hop_by_hop(&mut parts.headers);
        let body = match triggered {
            Some((request, caller, key)) => body::boxed(Tee::new(
                body::boxed(body),
                self.triggers.clone(),
                request,
                caller,
                key,
            )),
            None => body::boxed(body),
        };
        Ok(Response::from_parts(parts, body))
    }
}

/// Runs an inspection of `size` bytes of document: a large one is parsed
/// off the async workers.
async fn offloaded<F>(size: usize, inspect: F) -> Result<Option<Response<Body>>, ProxyError>
where
    F: FnOnce() -> Result<Option<Response<Body>>, ProxyError> + Send + 'static,
{
    crate::graphql::offload::run(size, inspect)
        .await
        .map_err(|_| ProxyError::InvalidRequest("the document could not be inspected"))?
}

/// The GET form of [`inspect`]: refuses a document that is a subscription,
/// over a cap, or forbidden introspection, and answers an introspection
/// query from the merged schema exactly as a POST is answered (IDEs and
/// codegen tools send it as a GET).
fn inspect_query_string(
    schema: &crate::graphql::Schema,
    q: &str,
) -> Result<Option<Response<Body>>, ProxyError> {
    if operation::query_string_is_subscription(q, schema.document_limits()).map_err(refused)? {
        return Err(ProxyError::SubscriptionOverHttp);
    }
    if let Some(doc) = operation::document_of_query_string(q) {
        operation::refuse_introspection(schema, &[&doc]).map_err(refused)?;
    }
    Ok(operation::query_string_introspection_request(q).and_then(|r| introspect(schema, r)))
}

/// Decides what a buffered body is: a subscription (refused), a document
/// over a cap or forbidden introspection (refused), an introspection query
/// subcar answers itself (`Some` response), or something for the upstream
/// (`None`).
fn inspect(
    schema: &crate::graphql::Schema,
    bytes: &[u8],
    json: bool,
) -> Result<Option<Response<Body>>, ProxyError> {
    let limits = schema.document_limits();
    let subscription = if json {
        operation::json_body_is_subscription(bytes, limits)
    } else {
        operation::selects_subscription(std::str::from_utf8(bytes).ok(), None, limits)
    }
    .map_err(refused)?;
    if subscription {
        return Err(ProxyError::SubscriptionOverHttp);
    }
    if !schema.introspection_enabled() {
        let documents = if json {
            operation::documents_of_json(bytes)
        } else {
            std::str::from_utf8(bytes)
                .map(|s| vec![s.to_owned()])
                .unwrap_or_default()
        };
        let documents: Vec<&str> = documents.iter().map(String::as_str).collect();
        operation::refuse_introspection(schema, &documents).map_err(refused)?;
    }
    Ok(json
        .then(|| operation::json_introspection_request(bytes))
        .flatten()
        .and_then(|r| introspect(schema, r)))
}

/// Answers an introspection query from the merged schema, so tools see
/// subcar's Subscription root beside the upstream's types. `None` when
/// the query also selects ordinary fields: the upstream answers those.
fn introspect(
    schema: &crate::graphql::Schema,
    request: operation::GraphqlRequest,
) -> Option<Response<Body>> {
    let variables = request.variables.unwrap_or_default();
    let result = crate::graphql::introspection::execute(
        schema,
        &request.query,
        request.operation_name.as_deref(),
        &variables,
    )?;
    Some(crate::error::json_response(http::StatusCode::OK, &result))
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
