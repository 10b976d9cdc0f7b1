//! A stream request read into the core's [`Request`]: the GraphQL over
//! HTTP shapes (`GET` query string, `POST` JSON body), and what else the
//! request says (a `Last-Event-ID` to resume after).

use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use serde_json::{Map, Value};

use super::Framing;
use crate::error;
use crate::graphql::GraphQLError;
use crate::http::body::{self, Body};
use crate::subscriptions::operation::{Core, Request, Resume, ResumeError, parse_since};

/// The request and, for a `POST`, the body it was read from (a query or
/// mutation is forwarded with it).
pub async fn read(parts: &Parts, body: Body) -> Result<(Request, Bytes), Response<Body>> {
    if parts.method == Method::GET {
        let request = of_query_string(parts.uri.query().unwrap_or("")).map_err(bad_request)?;
        return Ok((request, Bytes::new()));
    }
    let bytes = body::read_whole(body)
        .await
        .map_err(|e| error::rescue_proxy(&e.into()))?;
    let request = serde_json::from_slice::<Request>(&bytes)
        .map_err(|e| bad_request(format!("the body is not a GraphQL request: {e}")))?;
    Ok((request, bytes))
}

fn bad_request(message: impl AsRef<str>) -> Response<Body> {
    error::graphql_error(StatusCode::BAD_REQUEST, "BAD_REQUEST", message.as_ref())
}

/// `?query=…&operationName=…&variables=<JSON>&extensions=<JSON>`, what an
/// `EventSource` can send.
pub fn of_query_string(q: &str) -> Result<Request, String> {
    let mut request = Request {
        query: String::new(),
        operation_name: None,
        variables: None,
        extensions: None,
    };
    let mut query = None;
    let object = |name: &str, v: &str| -> Result<Map<String, Value>, String> {
        match serde_json::from_str::<Value>(v) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(format!("the {name} parameter must be a JSON object")),
        }
    };
    for (k, v) in form_urlencoded::parse(q.as_bytes()) {
        match &*k {
            "query" => query = Some(v.into_owned()),
            "operationName" if !v.is_empty() => request.operation_name = Some(v.into_owned()),
            "variables" if !v.is_empty() => request.variables = Some(object("variables", &v)?),
            "extensions" if !v.is_empty() => request.extensions = Some(object("extensions", &v)?),
            _ => {}
        }
    }
    request.query = query.ok_or("a GET request needs a query parameter")?;
    Ok(request)
}

/// Whether the selected operation is a subscription (parsed off the async
/// workers when large); `Err` is the answer to a document over a cap or
/// one that does not parse: graphql-sse answers those before any stream.
pub async fn is_subscription(core: &Arc<Core>, request: &Request) -> Result<bool, Response<Body>> {
    let limits = core.schema.current().document_limits().clone();
    let (query, name) = (request.query.clone(), request.operation_name.clone());
    let decided = crate::graphql::offload::run(query.len(), move || {
        match crate::proxy::operation::selects_subscription(Some(&query), name.as_deref(), &limits)
        {
            Ok(false) => match crate::graphql::document::parse(&query, &limits) {
                Err(errors) if is_syntax_error(&errors) => Err(errors),
                _ => Ok(false),
            },
            Ok(is) => Ok(is),
            Err(e) => Err(vec![e]),
        }
    })
    .await;
    match decided {
        Ok(Ok(is)) => Ok(is),
        Ok(Err(errors)) => Err(error::graphql_errors(StatusCode::BAD_REQUEST, &errors)),
        Err(_) => Err(error::graphql_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_SERVER_ERROR",
            "the document could not be inspected",
        )),
    }
}

/// An SSE client's query goes to an upstream that may not stream: it may
/// answer JSON too (subcar then wraps it).
pub fn also_accept_json(headers: &mut HeaderMap) {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let json = ["application/json", "application/graphql-response+json"];
    if crate::http::media::quality(accept, &json) == 0.0 {
        let widened = format!("{accept}, application/json;q=0.5");
        if let Ok(v) = HeaderValue::from_str(&widened) {
            headers.insert(header::ACCEPT, v);
        }
    }
}

/// Where a stream starts. SSE: after `Last-Event-ID` (what `EventSource`
/// sends on reconnect), else from the time of `?since=` in the URL (which
/// an `EventSource` keeps sending, so a reconnect goes on from its last
/// event), else as `extensions.resume` says, else now, with cursors: every
/// `next` then carries its `id`. Multipart carries no cursors unless
/// `?since=` or `extensions.resume` asks.
pub fn resume(
    framing: Framing,
    headers: &HeaderMap,
    query: Option<&str>,
    extensions: Option<&Map<String, Value>>,
) -> Result<Resume, ResumeError> {
    if framing == Framing::Sse
        && let Some(last) = headers.get("last-event-id")
    {
        let text = String::from_utf8_lossy(last.as_bytes());
        let text = text.trim();
        if !text.is_empty() {
            return text.parse().map(Resume::After).map_err(ResumeError::Cursor);
        }
    }
    let since = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == "since")
        .map(|(_, v)| v.into_owned());
    if let Some(since) = since {
        return parse_since(&since).map(Resume::Since);
    }
    if framing != Framing::Sse {
        return Resume::from_extensions(extensions);
    }
    match Resume::from_extensions(extensions)? {
        Resume::Off => Ok(Resume::Now),
        other => Ok(other),
    }
}

/// Whether a document's errors are a syntax error: graphql-sse answers
/// those before the stream, as GraphQL over HTTP does.
pub fn is_syntax_error(errors: &[GraphQLError]) -> bool {
    errors
        .first()
        .is_some_and(|e| e.message.starts_with("Syntax Error"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_get_form() {
        let r = of_query_string(
            "query=subscription%7Ba%7D&operationName=&variables=%7B%22x%22%3A1%7D&token=t",
        )
        .unwrap();
        assert_eq!(r.query, "subscription{a}");
        assert_eq!(r.operation_name, None);
        assert_eq!(r.variables.unwrap()["x"], 1);
        assert!(
            of_query_string("variables=%7B%7D")
                .unwrap_err()
                .contains("query")
        );
        assert!(
            of_query_string("query=x&variables=5")
                .unwrap_err()
                .contains("variables")
        );
    }

    #[test]
    fn last_event_id_wins_and_sse_always_sends_cursors() {
        let mut h = HeaderMap::new();
        assert_eq!(resume(Framing::Sse, &h, None, None), Ok(Resume::Now));
        assert_eq!(resume(Framing::Multipart, &h, None, None), Ok(Resume::Off));
        let since = Some("query=x&since=1970-01-01T00%3A00%3A10Z");
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(10);
        assert_eq!(resume(Framing::Sse, &h, since, None), Ok(Resume::Since(at)));
        assert_eq!(
            resume(Framing::Sse, &h, Some("since=soon"), None),
            Err(ResumeError::Time("soon".into()))
        );
        h.insert("last-event-id", HeaderValue::from_static("12"));
        assert_eq!(
            resume(Framing::Sse, &h, since, None),
            Ok(Resume::After(crate::bus::Cursor::seq(12)))
        );
        h.insert("last-event-id", HeaderValue::from_static("nope"));
        assert!(matches!(
            resume(Framing::Sse, &h, None, None),
            Err(ResumeError::Cursor(_))
        ));
    }

    #[test]
    fn json_is_added_only_when_missing() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        );
        also_accept_json(&mut h);
        assert_eq!(
            h[header::ACCEPT],
            "text/event-stream, application/json;q=0.5"
        );
        also_accept_json(&mut h);
        assert_eq!(
            h[header::ACCEPT],
            "text/event-stream, application/json;q=0.5"
        );
    }
}
