//! Deciding whether an HTTP GraphQL request is a subscription, parsing only
//! what that takes: a byte scan first, the document only when the word
//! `subscription` appears in it.

use graphql_parser::query::OperationDefinition;
use serde::Deserialize;

use crate::config::DocumentLimits;
use crate::graphql::{GraphQLError, Schema, document, select_operation};

/// The fields of a GraphQL-over-HTTP request that decide its kind. Borrowed
/// where the JSON has no escapes; everything else in the body is skipped.
#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(borrow, default)]
    query: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default, rename = "operationName")]
    operation_name: Option<std::borrow::Cow<'a, str>>,
}

const KEYWORD: &[u8] = b"subscription";

/// A single GraphQL request, owned, for the few requests subcar answers
/// itself (introspection).
#[derive(Debug, Deserialize)]
pub struct GraphqlRequest {
    pub query: String,
    #[serde(default, rename = "operationName")]
    pub operation_name: Option<String>,
    #[serde(default)]
    pub variables: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A JSON body that may be an introspection query: it mentions `__schema`
/// or `__type`. Batches are left to the upstream.
pub fn json_introspection_request(body: &[u8]) -> Option<GraphqlRequest> {
    if !(contains(body, b"__schema") || contains(body, b"__type")) {
        return None;
    }
    serde_json::from_slice(body).ok()
}

/// The GET form of [`json_introspection_request`].
pub fn query_string_introspection_request(query_string: &str) -> Option<GraphqlRequest> {
    let bytes = query_string.as_bytes();
    let mut request = GraphqlRequest {
        query: String::new(),
        operation_name: None,
        variables: None,
    };
    for (k, v) in form_urlencoded::parse(bytes) {
        match &*k {
            "query" => request.query = v.into_owned(),
            "operationName" => request.operation_name = Some(v.into_owned()),
            "variables" => request.variables = serde_json::from_str(&v).ok(),
            _ => {}
        }
    }
    // Checked once decoded: `%5F%5Fschema` is `__schema` too.
    let query = request.query.as_bytes();
    (contains(query, b"__schema") || contains(query, b"__type")).then_some(request)
}

/// Whether a JSON request body (one operation or a batch) selects a
/// subscription. Bodies that are not valid JSON are left to the upstream.
/// `Err` when a document it must parse to decide is over `limits`.
pub fn json_body_is_subscription(
    body: &[u8],
    limits: &DocumentLimits,
) -> Result<bool, GraphQLError> {
    if !contains(body, KEYWORD) {
        return Ok(false);
    }
    if let Ok(peek) = serde_json::from_slice::<Peek>(body) {
        return selects_subscription(
            peek.query.as_deref(),
            peek.operation_name.as_deref(),
            limits,
        );
    }
    if let Ok(batch) = serde_json::from_slice::<Vec<Peek>>(body) {
        for p in &batch {
            if selects_subscription(p.query.as_deref(), p.operation_name.as_deref(), limits)? {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Whether a GET query string selects a subscription.
pub fn query_string_is_subscription(
    query_string: &str,
    limits: &DocumentLimits,
) -> Result<bool, GraphQLError> {
    if !contains(query_string.as_bytes(), KEYWORD) {
        return Ok(false);
    }
    let mut query = None;
    let mut operation_name = None;
    for (k, v) in form_urlencoded::parse(query_string.as_bytes()) {
        match &*k {
            "query" => query = Some(v),
            "operationName" => operation_name = Some(v),
            _ => {}
        }
    }
    selects_subscription(query.as_deref(), operation_name.as_deref(), limits)
}

/// With `schema.introspection = false`, refuses a request any of whose
/// documents (a JSON body, a batch, a GET query string or an
/// `application/graphql` body) selects `__schema` or `__type` anywhere.
/// Only text that mentions those names is parsed (under the limits).
pub fn refuse_introspection(schema: &Schema, documents: &[&str]) -> Result<(), GraphQLError> {
    if schema.introspection_enabled() {
        return Ok(());
    }
    for text in documents {
        if !(contains(text.as_bytes(), b"__schema") || contains(text.as_bytes(), b"__type")) {
            continue;
        }
        match document::parse(text, schema.document_limits()) {
            Ok(doc) if document::mentions_introspection(&doc) => {
                return Err(document::introspection_disabled());
            }
            Ok(_) => {}
            Err(errors) => {
                // A syntax error cannot run upstream either; a cap can.
                if let Some(e) = errors.into_iter().find(is_limit_error) {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

fn is_limit_error(e: &GraphQLError) -> bool {
    e.extensions.as_ref().is_some_and(|x| {
        x.get("code").and_then(|c| c.as_str()) == Some(document::DOCUMENT_TOO_COMPLEX)
    })
}

/// The documents of a request body or query string, for
/// [`refuse_introspection`]: the `query` of a JSON body or of each item of
/// a batch, or the whole text of an `application/graphql` body.
pub fn documents_of_json(body: &[u8]) -> Vec<String> {
    if let Ok(peek) = serde_json::from_slice::<Peek>(body) {
        return peek.query.map(|q| q.into_owned()).into_iter().collect();
    }
    serde_json::from_slice::<Vec<Peek>>(body)
        .map(|batch| {
            batch
                .into_iter()
                .filter_map(|p| p.query.map(|q| q.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// The `query` parameter of a GET query string.
pub fn document_of_query_string(query_string: &str) -> Option<String> {
    form_urlencoded::parse(query_string.as_bytes())
        .find(|(k, _)| k == "query")
        .map(|(_, v)| v.into_owned())
}

/// Whether the operation selected by `operation_name` (or the only one) in
/// `query` is a subscription. Unparseable documents are not: the upstream
/// answers them with its own syntax error. The text is pre-scanned under
/// `limits` first (`Err` over a cap), which bounds the parser's work.
pub fn selects_subscription(
    query: Option<&str>,
    operation_name: Option<&str>,
    limits: &DocumentLimits,
) -> Result<bool, GraphQLError> {
    let Some(query) = query else { return Ok(false) };
    if !contains(query.as_bytes(), KEYWORD) {
        return Ok(false);
    }
    document::prescan(query, limits)?;
    let Ok(doc) = graphql_parser::parse_query::<&str>(query) else {
        return Ok(false);
    };
    // Several operations and no name, or an unknown name: the upstream
    // reports the error in its own words.
    let selected = select_operation(&doc, operation_name.filter(|n| !n.is_empty())).ok();
    Ok(matches!(
        selected,
        Some(OperationDefinition::Subscription(_))
    ))
}

/// Whether a body or query string mentions `subscription`, `__schema` or
/// `__type`, as raw bytes: with introspection on, only then does the proxy
/// parse anything. (With it off the proxy always decodes and looks, since
/// `\u005f` or `%5F` would hide the names from this scan.)
pub fn may_need_parsing(text: &[u8]) -> bool {
    contains(text, KEYWORD) || contains(text, b"__schema") || contains(text, b"__type")
}

/// Whether `needle` (not empty) occurs in `haystack`: a linear scan, so a
/// request body costs its length once per needle.
pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && memchr::memmem::find(haystack, needle).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> DocumentLimits {
        DocumentLimits::default()
    }

    #[test]
    fn plain_query_is_not_parsed_as_subscription() {
        assert!(!json_body_is_subscription(br#"{"query":"{ hello }"}"#, &limits()).unwrap());
        assert!(
            !json_body_is_subscription(br#"{"query":"query subscriptionCount { n }"}"#, &limits())
                .unwrap()
        );
    }

    #[test]
    fn subscription_is_detected() {
        assert!(
            json_body_is_subscription(
                br#"{"query":"subscription { incidentUpdated { id } }"}"#,
                &limits()
            )
            .unwrap()
        );
        assert!(
            json_body_is_subscription(
                br#"[{"query":"{ a }"},{"query":"subscription S { x }"}]"#,
                &limits()
            )
            .unwrap()
        );
    }

    #[test]
    fn operation_name_selects_among_several() {
        let doc = "query Q { a } subscription S { b }";
        assert!(selects_subscription(Some(doc), Some("S"), &limits()).unwrap());
        assert!(!selects_subscription(Some(doc), Some("Q"), &limits()).unwrap());
        // Ambiguous without a name: left to the upstream to reject.
        assert!(!selects_subscription(Some(doc), None, &limits()).unwrap());
        assert!(!selects_subscription(Some(doc), Some("Missing"), &limits()).unwrap());
    }

    #[test]
    fn get_query_string() {
        assert!(
            query_string_is_subscription("query=subscription%20%7B%20x%20%7D", &limits()).unwrap()
        );
        assert!(
            !query_string_is_subscription("query=%7B%20subscriptionCount%20%7D", &limits())
                .unwrap()
        );
    }

    #[test]
    fn invalid_documents_go_to_upstream() {
        assert!(!json_body_is_subscription(br#"{"query":"subscription {"}"#, &limits()).unwrap());
        assert!(!json_body_is_subscription(b"subscription not json", &limits()).unwrap());
    }
}
