//! Completing an event from the upstream's answer: the payload reshaped to
//! response keys, merged into the upstream's value and projected.
//!
//! The answer is read as a GraphQL response
//! (<https://spec.graphql.org/October2021/#sec-Response-Format>):
//! `data` absent means the request failed before execution, `data` present with a `null` entity
//! means the entity is not there (or not for this subscriber). What a
//! subscriber then gets (`on_null`, `prefer`) is subcar's policy, from
//! `[subscriptions.resolve]`.

use bytes::Bytes;
use serde_json::{Map, Value};

use super::spec::{OnNull, Prefer};
use crate::graphql::error::GraphQLError;
use crate::graphql::plan::{Completion, FieldPlan, ObjectPlan};
use crate::graphql::project::{self, Lookup};

/// `extensions.code`s of upstream errors that mean "not yours to see".
/// The spec defines no error codes: these are a convention (Apollo
/// Server's `UNAUTHENTICATED` and `FORBIDDEN`, and the common
/// `UNAUTHORIZED`), not a rule.
const FORBIDDEN_CODES: [&str; 3] = ["FORBIDDEN", "UNAUTHORIZED", "UNAUTHENTICATED"];

/// What the upstream answered for one fetch.
#[derive(Debug)]
pub enum FetchResponse<'a> {
    /// A GraphQL response object.
    Response(&'a Value),
    /// HTTP 401 or 403: the subscriber may not see the entity.
    Forbidden,
    /// No usable answer (unreachable, timeout, garbage); the message says why.
    Failed(&'a str),
}

/// How to treat the upstream's answer.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub on_null: OnNull,
    pub prefer: Prefer,
}

/// The `next` payload for an event of the subscription planned as `root`,
/// completed by `response`, or `None` when this subscriber must not receive
/// the event (`on_null = "skip"` and the upstream answered null or
/// forbidden).
pub(crate) fn complete(
    root: &FieldPlan,
    response: FetchResponse<'_>,
    payload: &Value,
    policy: Policy,
) -> Option<Bytes> {
    let object = match response {
        FetchResponse::Forbidden => return on_null(root, policy, Vec::new()),
        FetchResponse::Failed(why) => return Some(unavailable(root, payload, why)),
        FetchResponse::Response(v) => match v.as_object() {
            Some(o) if o.contains_key("data") || o.contains_key("errors") => o,
            _ => {
                return Some(unavailable(
                    root,
                    payload,
                    "the upstream sent no GraphQL response",
                ));
            }
        },
    };
    let errors: Vec<GraphQLError> = object
        .get("errors")
        .and_then(Value::as_array)
        .map(|list| list.iter().map(upstream_error).collect())
        .unwrap_or_default();
    let forbidden = errors.iter().any(|e| {
        e.extensions
            .as_ref()
            .and_then(|x| x.get("code"))
            .and_then(Value::as_str)
            .is_some_and(|c| FORBIDDEN_CODES.contains(&c))
    });
    if forbidden {
        return on_null(root, policy, errors);
    }
    // No `data` at all: the upstream refused the request before running
    // it (e.g. the query does not fit its schema;
    // <https://spec.graphql.org/October2021/#sec-Errors.Request-errors>).
    // Nothing says the entity is null, so the subscriber is told instead of
    // skipped.
    let Some(data) = object.get("data") else {
        let first = errors.first().map_or("no data", |e| e.message.as_str());
        return Some(unavailable(
            root,
            payload,
            &format!("the upstream refused the query: {first}"),
        ));
    };
    let Some(data) = data.get(&root.key).filter(|d| !d.is_null()) else {
        return on_null(root, policy, errors);
    };
    let mut merged = data.clone();
    merge(root, &mut merged, payload, policy.prefer);
    Some(Bytes::from(project::execute_with(
        root,
        &merged,
        Lookup::ResponseKey,
        errors,
    )))
}

fn on_null(root: &FieldPlan, policy: Policy, errors: Vec<GraphQLError>) -> Option<Bytes> {
    match policy.on_null {
        OnNull::Skip => None,
        OnNull::Deliver => Some(Bytes::from(project::execute_with(
            root,
            &Value::Null,
            Lookup::ResponseKey,
            errors,
        ))),
    }
}

/// The payload as it is, with an error saying why it is not completed.
fn unavailable(root: &FieldPlan, payload: &Value, why: &str) -> Bytes {
    let mut e = GraphQLError::new(format!(
        "cannot complete the event from the upstream: {why}"
    ))
    .with_code("UPSTREAM_UNAVAILABLE");
    e.path = vec![Value::String(root.key.clone())];
    Bytes::from(project::execute_with(
        root,
        payload,
        Lookup::FieldName,
        vec![e],
    ))
}

/// An upstream error as the client gets it: its own query's locations mean
/// nothing to the client and are left out. Its `path` is kept: the query
/// puts the entity under the subscription's response key and keeps the
/// client's aliases, so the path already points into the client's answer.
fn upstream_error(v: &Value) -> GraphQLError {
    let mut e = GraphQLError::new(
        v.get("message")
            .and_then(Value::as_str)
            .unwrap_or("upstream error"),
    );
    if let Some(Value::Array(path)) = v.get("path") {
        e.path = path.clone();
    }
    if let Some(Value::Object(x)) = v.get("extensions") {
        e.extensions = Some(x.clone());
    }
    e
}

/// Merges the payload (by field name) into the upstream's value (by
/// response key) along the plan.
fn merge(plan: &FieldPlan, target: &mut Value, payload: &Value, prefer: Prefer) {
    let (Value::Object(t), Value::Object(p)) = (target, payload) else {
        return;
    };
    let object = match &plan.completion {
        Completion::Object(o) => o,
        Completion::Abstract(a) => {
            let ty = t
                .get("__typename")
                .or_else(|| p.get("__typename"))
                .and_then(Value::as_str);
            match ty.and_then(|n| a.by_type.get(n)) {
                Some(o) => o,
                None => return,
            }
        }
        _ => return,
    };
    merge_object(object, t, p, prefer);
}

fn merge_object(
    o: &ObjectPlan,
    t: &mut Map<String, Value>,
    p: &Map<String, Value>,
    prefer: Prefer,
) {
    for f in &o.fields {
        if matches!(f.completion, Completion::Typename) {
            continue;
        }
        let Some(pv) = p.get(&f.name) else {
            continue;
        };
        match t.get_mut(&f.key) {
            Some(tv) if tv.is_object() && pv.is_object() => merge(f, tv, pv, prefer),
            Some(_) if prefer == Prefer::Upstream => {}
            Some(tv) => *tv = reshape(f, pv),
            None => {
                t.insert(f.key.clone(), reshape(f, pv));
            }
        }
    }
}

/// A payload value (keyed by field names) keyed by response keys instead.
fn reshape(plan: &FieldPlan, v: &Value) -> Value {
    match v {
        Value::Array(items) => Value::Array(items.iter().map(|i| reshape(plan, i)).collect()),
        Value::Object(m) => {
            let object = match &plan.completion {
                Completion::Object(o) => Some(o),
                Completion::Abstract(a) => m
                    .get("__typename")
                    .and_then(Value::as_str)
                    .and_then(|n| a.by_type.get(n)),
                _ => None,
            };
            let Some(o) = object else {
                return v.clone();
            };
            let mut out = Map::new();
            if let Some(t) = m.get("__typename") {
                out.insert("__typename".into(), t.clone());
            }
            for f in &o.fields {
                if let Some(child) = m.get(&f.name)
                    && !matches!(f.completion, Completion::Typename)
                {
                    out.insert(f.key.clone(), reshape(f, child));
                }
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graphql::fetch::testing::prepare;
    use serde_json::json;

    #[test]
    fn completes_with_the_payload_winning_and_response_keys() {
        let p = prepare(
            r#"subscription { inc: incidentUpdated { id t: title severity owner { name } last { __typename ... on Change { to } } } }"#,
            json!({}),
        );
        let upstream = json!({"data": {"inc": {"__typename": "Incident", "id": "1", "t": "old", "severity": "P2",
            "owner": {"__typename": "User", "name": "ann"}, "last": {"__typename": "Change", "to": "done"}}}});
        let payload = json!({"id": "1", "title": "new", "owner": {"name": "bob"}});
        let policy = Policy {
            on_null: OnNull::Skip,
            prefer: Prefer::Payload,
        };
        let out = p
            .complete(FetchResponse::Response(&upstream), &payload, policy)
            .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            json!({"data": {"inc": {"id": "1", "t": "new", "severity": "P2",
            "owner": {"name": "bob"}, "last": {"__typename": "Change", "to": "done"}}}})
        );
        let upstream_wins = Policy {
            prefer: Prefer::Upstream,
            ..policy
        };
        let out = p
            .complete(FetchResponse::Response(&upstream), &payload, upstream_wins)
            .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["data"]["inc"]["t"], "old");
        assert_eq!(v["data"]["inc"]["owner"]["name"], "ann");
    }

    #[test]
    fn null_forbidden_errors_and_failures() {
        let p = prepare("subscription { incidentUpdated { id title } }", json!({}));
        let payload = json!({"id": "1"});
        let skip = Policy {
            on_null: OnNull::Skip,
            prefer: Prefer::Payload,
        };
        let deliver = Policy {
            on_null: OnNull::Deliver,
            ..skip
        };
        let null = json!({"data": {"incidentUpdated": null}});
        assert!(
            p.complete(FetchResponse::Response(&null), &payload, skip)
                .is_none()
        );
        assert!(
            p.complete(FetchResponse::Forbidden, &payload, skip)
                .is_none()
        );
        let forbidden = json!({"data": {"incidentUpdated": {"id": "1", "title": "x"}},
            "errors": [{"message": "no", "extensions": {"code": "FORBIDDEN"}}]});
        assert!(
            p.complete(FetchResponse::Response(&forbidden), &payload, skip)
                .is_none()
        );
        let out = p
            .complete(FetchResponse::Response(&null), &payload, deliver)
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&out).unwrap(),
            json!({"data": {"incidentUpdated": null}})
        );

        let partial = json!({"data": {"incidentUpdated": {"id": "1", "title": null}},
            "errors": [{"message": "title broke", "path": ["incidentUpdated", "title"], "locations": [{"line": 1, "column": 2}]}]});
        let out = p
            .complete(FetchResponse::Response(&partial), &json!({}), skip)
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&out).unwrap(),
            json!({
            "errors": [{"message": "title broke", "path": ["incidentUpdated", "title"]}],
            "data": {"incidentUpdated": {"id": "1", "title": null}}})
        );

        let out = p
            .complete(FetchResponse::Failed("timed out"), &payload, skip)
            .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v["data"],
            json!({"incidentUpdated": {"id": "1", "title": null}})
        );
        assert_eq!(v["errors"][0]["extensions"]["code"], "UPSTREAM_UNAVAILABLE");
        assert_eq!(v["errors"][0]["path"], json!(["incidentUpdated"]));
        let refused = json!({"errors": [{"message": "Cannot query field \"x\""}]});
        let out = p
            .complete(FetchResponse::Response(&refused), &payload, skip)
            .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["errors"][0]["extensions"]["code"], "UPSTREAM_UNAVAILABLE");
        assert!(
            v["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("Cannot query field")
        );
        let garbage = json!([1, 2]);
        let out = p
            .complete(FetchResponse::Response(&garbage), &payload, skip)
            .unwrap();
        assert!(
            std::str::from_utf8(&out)
                .unwrap()
                .contains("UPSTREAM_UNAVAILABLE")
        );
    }
}
