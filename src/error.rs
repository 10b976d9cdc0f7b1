//! The one place where error causes become HTTP responses and close codes
//! ("rescue"), and the one builder of the JSON bodies subcar writes itself.
//!
//! Every refusal subcar answers over HTTP on the GraphQL path is
//! GraphQL-shaped: `{"errors":[{"message":…,"extensions":{"code":…}}]}`,
//! so GraphQL clients surface it like any other error. The webhook's
//! refusals have the shape SPEC section 4 gives them:
//! `{"error":{"code":…,"message":…,"index"?:…}}`.

use http::{HeaderValue, Response, StatusCode, header};
use serde_json::json;

use crate::graphql::GraphQLError;
use crate::http::body::{self, Body};
use crate::ingest::WebhookError;
use crate::proxy::ProxyError;
use crate::transport::protocol::CloseCode;

/// A JSON response: every JSON body subcar builds itself goes through here.
pub fn json_response(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let bytes = serde_json::to_vec(value).expect("JSON values serialise");
    let mut res = Response::new(body::full(bytes));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// A GraphQL-shaped error response with one error coded `code`.
pub fn graphql_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    graphql_errors(status, &[GraphQLError::new(message).with_code(code)])
}

/// A GraphQL-shaped error response: `{"errors":[…]}`.
pub fn graphql_errors(status: StatusCode, errors: &[GraphQLError]) -> Response<Body> {
    json_response(status, &json!({ "errors": errors }))
}

/// Maps a failed proxy call to the response the client sees.
pub fn rescue_proxy(error: &ProxyError) -> Response<Body> {
    use ProxyError::*;
    let (status, code) = match error {
        Document(e) => return graphql_errors(StatusCode::BAD_REQUEST, std::slice::from_ref(e)),
        Timeout => (StatusCode::GATEWAY_TIMEOUT, "UPSTREAM_UNAVAILABLE"),
        Unreachable(_) | BadResponse(_) => (StatusCode::BAD_GATEWAY, "UPSTREAM_UNAVAILABLE"),
        RequestTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
        ReadRequest(_) => (StatusCode::BAD_REQUEST, "BAD_REQUEST"),
        BodyTimeout => (StatusCode::REQUEST_TIMEOUT, "BODY_TIMEOUT"),
        InvalidRequest(_) => (StatusCode::BAD_REQUEST, "BAD_REQUEST"),
        SubscriptionOverHttp => (StatusCode::NOT_ACCEPTABLE, "SUBSCRIPTION_BAD_HEADER"),
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

/// Maps a refused webhook request to the response SPEC section 4 gives it.
pub fn rescue_webhook(error: &WebhookError) -> Response<Body> {
    use WebhookError::*;
    let (status, code) = match error {
        InvalidEvent(_) | BodyRead(_) => (StatusCode::BAD_REQUEST, "INVALID_EVENT"),
        BodyTimeout => (StatusCode::REQUEST_TIMEOUT, "BODY_TIMEOUT"),
        InvalidSignature(_) => (StatusCode::UNAUTHORIZED, "INVALID_SIGNATURE"),
        PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
        UnsupportedMediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE"),
        UnknownTopic { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "UNKNOWN_TOPIC"),
        RateLimited { .. } | BatchOverRate { .. } => {
            (StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED")
        }
        BusUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "BUS_UNAVAILABLE"),
        NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND"),
        MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED"),
    };
    let mut body = json!({ "code": code, "message": error.to_string() });
    if let Some(i) = error.index() {
        body["index"] = json!(i);
    }
    let mut res = json_response(status, &json!({ "error": body }));
    let headers = res.headers_mut();
    match error {
        BusUnavailable(_) | BatchOverRate { .. } => {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        RateLimited { retry_after } => {
            let secs = crate::layers::retry_after_secs(*retry_after);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        MethodNotAllowed => {
            headers.insert(header::ALLOW, HeaderValue::from_static("POST"));
        }
        _ => {}
    }
    res
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
