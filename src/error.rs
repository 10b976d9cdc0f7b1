//! The one place where error causes become HTTP responses ("rescue").
//!
//! Every refusal subcar answers over HTTP on the GraphQL path is
//! GraphQL-shaped: `{"errors":[{"message":…,"extensions":{"code":…}}]}`,
//! so GraphQL clients surface it like any other error.

use http::{HeaderValue, Response, StatusCode, header};
use serde_json::json;

use crate::http::body::{self, Body};
use crate::proxy::ProxyError;
use crate::transport::protocol::CloseCode;

/// A GraphQL-shaped error response.
pub fn graphql_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = json!({ "errors": [{ "message": message, "extensions": { "code": code } }] });
    let mut res = Response::new(body::full(body.to_string()));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// Maps a failed proxy call to the response the client sees.
pub fn rescue_proxy(error: &ProxyError) -> Response<Body> {
    use ProxyError::*;
    if let Document(e) = error {
        let body = json!({ "errors": [e] });
        let mut res = Response::new(body::full(body.to_string()));
        *res.status_mut() = StatusCode::BAD_REQUEST;
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return res;
    }
    let (status, code) = match error {
        Timeout => (StatusCode::GATEWAY_TIMEOUT, "UPSTREAM_UNAVAILABLE"),
        Unreachable(_) | BadResponse(_) => (StatusCode::BAD_GATEWAY, "UPSTREAM_UNAVAILABLE"),
        RequestTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
        ReadRequest(_) => (StatusCode::BAD_REQUEST, "BAD_REQUEST"),
        BodyTimeout => (StatusCode::REQUEST_TIMEOUT, "BODY_TIMEOUT"),
        InvalidRequest(_) => (StatusCode::BAD_REQUEST, "BAD_REQUEST"),
        SubscriptionOverHttp => (StatusCode::BAD_REQUEST, "SUBSCRIPTION_REQUIRES_WEBSOCKET"),
        Document(_) => (StatusCode::BAD_REQUEST, "BAD_REQUEST"),
    };
    graphql_error(status, code, &error.to_string())
}

/// Maps an error from the proxy stack (a [`ProxyError`] or the stack's
/// timeout) to a response.
pub fn rescue_boxed(error: tower::BoxError) -> Response<Body> {
    if error.is::<tower::timeout::error::Elapsed>() {
        return rescue_proxy(&ProxyError::Timeout);
    }
    match error.downcast::<ProxyError>() {
        Ok(e) => {
            if matches!(*e, ProxyError::Unreachable(_) | ProxyError::BadResponse(_)) {
                tracing::warn!(error = %crate::log::error_chain(&*e), "upstream request failed");
            }
            rescue_proxy(&e)
        }
        Err(e) => {
            tracing::error!(error = %e, "unexpected error in the proxy stack");
            graphql_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_SERVER_ERROR",
                "internal error",
            )
        }
    }
}

/// Maps a failed authentication on the proxy path (`auth.proxy =
/// "require"`) to `401 UNAUTHENTICATED`, or `503` when the check could not
/// be made.
pub fn rescue_auth_http(error: &crate::auth::AuthError) -> Response<Body> {
    use crate::auth::AuthError;
    match error {
        AuthError::Refused(r) => {
            let mut res = graphql_error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
                &format!("unauthenticated: {r}"),
            );
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            res
        }
        AuthError::Unavailable(_) => {
            tracing::warn!(error = %error, "authentication check failed");
            let mut res = graphql_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "AUTH_UNAVAILABLE",
                "authentication is unavailable, retry later",
            );
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            res
        }
    }
}

/// The close code and reason for a socket whose `connection_init` failed
/// authentication: `4403` for refused credentials (the reference client
/// retries it, a fresh token may pass), `1013` when the check could not be
/// made.
pub fn auth_close(error: &crate::auth::AuthError) -> (CloseCode, String) {
    use crate::auth::AuthError;
    match error {
        AuthError::Refused(r) => (CloseCode::Forbidden, format!("Forbidden: {r}")),
        AuthError::Unavailable(_) => {
            tracing::warn!(error = %error, "authentication check failed");
            (
                CloseCode::TryAgainLater,
                "authentication unavailable".into(),
            )
        }
    }
}
