//! `/healthz` and `/readyz` answers, served on both the public and admin
//! listeners.

use http::{HeaderValue, Response, StatusCode, header};

use super::health::Health;
use crate::http::body::{self, Body};

/// The process is alive and its runtime answers.
pub fn healthz() -> Response<Body> {
    let mut res = Response::new(body::full("ok\n"));
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    res
}

/// `200` while serving, `503` once draining or while the bus is down; the
/// body reports upstream
/// reachability and the bus either way.
pub fn readyz(health: &Health) -> Response<Body> {
    let readiness = health.readiness();
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(status, &readiness)
}

pub fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let bytes = serde_json::to_vec(value).expect("status types serialise");
    let mut res = Response::new(body::full(bytes));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

pub fn not_found() -> Response<Body> {
    let mut res = Response::new(body::full("not found\n"));
    *res.status_mut() = StatusCode::NOT_FOUND;
    res
}
