//! Path routing of the public listener (the admin listener's is
//! [`crate::admin::AdminRouter`]).

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use either::Either;
use futures_util::FutureExt;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};

use super::graphiql::Graphiql;
use crate::admin::health::Health;
use crate::admin::probes;
use crate::error;
use crate::http::body::{self, Body};
use crate::metrics::Metrics;
use crate::proxy::schema::LiveSchema;
use crate::transport::WsEndpoint;

/// The GraphQL path's handler for queries and mutations (the proxy stack).
pub type GraphqlService = BoxCloneSyncService<Request<Body>, Response<Body>, tower::BoxError>;

/// The GraphQL path's handler for subscription clients: WebSocket upgrades,
/// SSE and multipart requests (an admission stack and its transport).
pub type ClientService = BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

/// Routes of the public listener.
#[derive(Clone)]
pub struct PublicRouter {
    routes: Arc<PublicRoutes>,
}

struct PublicRoutes {
    graphql_path: String,
    schema_path: String,
    graphql: GraphqlService,
    health: Arc<Health>,
    schema: LiveSchema,
    metrics: Arc<Metrics>,
    /// WebSocket upgrades on the GraphQL path (subscriptions).
    websocket: Option<ClientService>,
    /// SSE and multipart requests on the GraphQL path.
    streams: Option<ClientService>,
    /// The IDE page for browsers on the GraphQL path, when enabled.
    graphiql: Option<Graphiql>,
}

impl PublicRouter {
    pub fn new(
        graphql_path: &str,
        graphql: GraphqlService,
        health: Arc<Health>,
        schema: LiveSchema,
        metrics: Arc<Metrics>,
    ) -> Self {
        let graphql_path = graphql_path.trim_end_matches('/').to_owned();
        Self {
            routes: Arc::new(PublicRoutes {
                schema_path: format!("{graphql_path}/schema.graphql"),
                graphql_path,
                graphql,
                health,
                schema,
                metrics,
                websocket: None,
                streams: None,
                graphiql: None,
            }),
        }
    }

    /// Serves GraphiQL to browsers on the GraphQL path.
    pub fn with_graphiql(mut self, page: Graphiql) -> Self {
        if let Some(routes) = Arc::get_mut(&mut self.routes) {
            routes.graphiql = Some(page);
        }
        self
    }

    /// Serves SSE and multipart requests on the GraphQL path with `endpoint`.
    pub fn with_streams(mut self, endpoint: ClientService) -> Self {
        if let Some(routes) = Arc::get_mut(&mut self.routes) {
            routes.streams = Some(endpoint);
        }
        self
    }

    /// Serves WebSocket upgrades on the GraphQL path with `endpoint`.
    pub fn with_websocket(mut self, endpoint: ClientService) -> Self {
        if let Some(routes) = Arc::get_mut(&mut self.routes) {
            routes.websocket = Some(endpoint);
        }
        self
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

impl Service<Request<Body>> for PublicRouter {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Either<BoxFuture, Ready<Result<Response<Body>, Infallible>>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let routes = &self.routes;
        let path = request.uri().path();
        if path == routes.graphql_path || path.strip_suffix('/') == Some(&routes.graphql_path) {
            // Upgrades are answered here, never proxied: subcar terminates subscriptions.
            if let Some(ws) = &routes.websocket
                && WsEndpoint::is_upgrade(request.headers())
            {
                // The upgrade stack is always ready; its layers answer refusals.
                let upgrade = ws.clone().oneshot(request);
                return Either::Left(Box::pin(upgrade));
            }
            if let Some(page) = &routes.graphiql
                && Graphiql::wants_page(request.method(), request.headers())
            {
                return Either::Right(ready(Ok(page.response())));
            }
            // Streams decide for themselves: subscriptions are served there,
            // queries and mutations go on to the proxy stack.
            if let Some(streams) = &routes.streams
                && crate::transport::stream::is_stream_request(&request)
            {
                return Either::Left(Box::pin(streams.clone().oneshot(request)));
            }
            // The proxy stack is always ready; a clone keeps this router shareable.
            let graphql = routes.graphql.clone().oneshot(request);
            let metrics = routes.metrics.clone();
            let started = Instant::now();
            return Either::Left(Box::pin(graphql.map(move |result| {
                let response = result.unwrap_or_else(error::rescue_boxed);
                metrics.observe_proxy(response.status().as_u16(), started.elapsed());
                Ok(response)
            })));
        }
        let response = match (request.method(), path) {
            (&Method::GET | &Method::HEAD, "/healthz") => probes::healthz(),
            (&Method::GET | &Method::HEAD, "/readyz") => probes::readyz(&routes.health),
            (&Method::GET, p) if p == routes.schema_path => {
                let schema = routes.schema.current();
                // schema.introspection = false: the SDL is not published.
                if schema.introspection_enabled() {
                    sdl_response(&schema.sdl())
                } else {
                    probes::not_found()
                }
            }
            _ => probes::not_found(),
        };
        Either::Right(ready(Ok(response)))
    }
}

fn sdl_response(sdl: &str) -> Response<Body> {
    let mut res = Response::new(body::full(sdl.to_owned()));
    *res.status_mut() = StatusCode::OK;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/graphql; charset=utf-8"),
    );
    res
}
