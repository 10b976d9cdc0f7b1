//! Deciding whether an HTTP GraphQL request is a subscription, parsing only
//! what that takes: a byte scan first, the document only when the word
//! `subscription` appears in it.

use graphql_parser::query::{Definition, OperationDefinition};
use serde::Deserialize;

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
    if !(contains(bytes, b"__schema") || contains(bytes, b"__type")) {
        return None;
    }
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
    (!request.query.is_empty()).then_some(request)
}

/// Whether a JSON request body (one operation or a batch) selects a
/// subscription. Bodies that are not valid JSON are left to the upstream.
pub fn json_body_is_subscription(body: &[u8]) -> bool {
    if !contains(body, KEYWORD) {
        return false;
    }
    if let Ok(peek) = serde_json::from_slice::<Peek>(body) {
        return selects_subscription(peek.query.as_deref(), peek.operation_name.as_deref());
    }
    if let Ok(batch) = serde_json::from_slice::<Vec<Peek>>(body) {
        return batch
            .iter()
            .any(|p| selects_subscription(p.query.as_deref(), p.operation_name.as_deref()));
    }
    false
}

/// Whether a GET query string selects a subscription.
pub fn query_string_is_subscription(query_string: &str) -> bool {
    if !contains(query_string.as_bytes(), KEYWORD) {
        return false;
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
    selects_subscription(query.as_deref(), operation_name.as_deref())
}

/// Whether the operation selected by `operation_name` (or the only one) in
/// `query` is a subscription. Unparseable documents are not: the upstream
/// answers them with its own syntax error.
pub fn selects_subscription(query: Option<&str>, operation_name: Option<&str>) -> bool {
    let Some(query) = query else { return false };
    if !contains(query.as_bytes(), KEYWORD) {
        return false;
    }
    let Ok(doc) = graphql_parser::parse_query::<&str>(query) else {
        return false;
    };
    let mut operations = doc.definitions.iter().filter_map(|d| match d {
        Definition::Operation(op) => Some(op),
        Definition::Fragment(_) => None,
    });
    let selected = match operation_name.filter(|n| !n.is_empty()) {
        Some(name) => operations.find(|op| operation_name_of(op) == Some(name)),
        None => {
            let first = operations.next();
            // Several operations and no name: the upstream reports the error.
            if operations.next().is_some() {
                None
            } else {
                first
            }
        }
    };
    matches!(selected, Some(OperationDefinition::Subscription(_)))
}

fn operation_name_of<'a>(op: &OperationDefinition<'a, &'a str>) -> Option<&'a str> {
    match op {
        OperationDefinition::Subscription(s) => s.name,
        OperationDefinition::Query(q) => q.name,
        OperationDefinition::Mutation(m) => m.name,
        OperationDefinition::SelectionSet(_) => None,
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_query_is_not_parsed_as_subscription() {
        assert!(!json_body_is_subscription(br#"{"query":"{ hello }"}"#));
        assert!(!json_body_is_subscription(
            br#"{"query":"query subscriptionCount { n }"}"#
        ));
    }

    #[test]
    fn subscription_is_detected() {
        assert!(json_body_is_subscription(
            br#"{"query":"subscription { incidentUpdated { id } }"}"#
        ));
        assert!(json_body_is_subscription(
            br#"[{"query":"{ a }"},{"query":"subscription S { x }"}]"#
        ));
    }

    #[test]
    fn operation_name_selects_among_several() {
        let doc = "query Q { a } subscription S { b }";
        assert!(selects_subscription(Some(doc), Some("S")));
        assert!(!selects_subscription(Some(doc), Some("Q")));
        // Ambiguous without a name: left to the upstream to reject.
        assert!(!selects_subscription(Some(doc), None));
        assert!(!selects_subscription(Some(doc), Some("Missing")));
    }

    #[test]
    fn get_query_string() {
        assert!(query_string_is_subscription(
            "query=subscription%20%7B%20x%20%7D"
        ));
        assert!(!query_string_is_subscription(
            "query=%7B%20subscriptionCount%20%7D"
        ));
    }

    #[test]
    fn invalid_documents_go_to_upstream() {
        assert!(!json_body_is_subscription(br#"{"query":"subscription {"}"#));
        assert!(!json_body_is_subscription(b"subscription not json"));
    }
}
