//! Path routing of the admin listener: probes, `/metrics`, `/status` and
//! `/status/connections`.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use tower::Service;

use super::health::Health;
use super::probes;
use super::status::StatusSource;
use crate::http::body::{self, Body};
use crate::metrics::{Format, Metrics};

/// Routes of the admin listener.
#[derive(Clone)]
pub struct AdminRouter {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    status: Arc<StatusSource>,
}

impl AdminRouter {
    pub fn new(health: Arc<Health>, metrics: Arc<Metrics>, status: Arc<StatusSource>) -> Self {
        Self {
            health,
            metrics,
            status,
        }
    }
}

impl<B> Service<Request<B>> for AdminRouter {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Ready<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let response = match (request.method(), request.uri().path()) {
            (&Method::GET | &Method::HEAD, "/healthz") => probes::healthz(),
            (&Method::GET | &Method::HEAD, "/readyz") => probes::readyz(&self.health),
            (&Method::GET, "/metrics") => metrics_response(&request, &self.metrics, &self.health),
            (&Method::GET, "/status") => probes::json(StatusCode::OK, &self.status.snapshot()),
            (&Method::GET, "/status/connections") => probes::json(
                StatusCode::OK,
                &self.status.connections(request.uri().query()),
            ),
            _ => probes::not_found(),
        };
        ready(Ok(response))
    }
}

fn metrics_response<B>(request: &Request<B>, metrics: &Metrics, health: &Health) -> Response<Body> {
    let format = Format::negotiate(
        request
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok()),
    );
    let reachable = health.readiness().upstream.reachable == Some(true);
    metrics.upstream_up.set(i64::from(reachable));
    let mut res = Response::new(body::full(metrics.render_as(format)));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    res
}
