//! Quick end-to-end checks of the engine's public API.

use serde_json::{Map, Value, json};
use subcar::graphql::{Prepared, Schema};

const SDL: &str = r#"
    enum Severity { P1 P2 P3 }
    interface Node { id: ID! }
    type Incident implements Node { id: ID! title: String severity: Severity! tags: [String!] }
    type Subscription { incidentUpdated(id: ID): Incident node: Node }
"#;

fn project(q: &str, vars: Value, payload: Value) -> Value {
    let schema = Schema::build(SDL, None).unwrap();
    let vars: Map<String, Value> = serde_json::from_value(vars).unwrap();
    let Prepared::Subscription(s) = schema.prepare(q, None, &vars).unwrap() else {
        panic!()
    };
    serde_json::from_slice(&s.project(&payload)).unwrap()
}

#[test]
fn projects_and_propagates_nulls() {
    assert_eq!(
        project(
            "subscription { incidentUpdated { id t: title __typename } }",
            json!({}),
            json!({"id": 4, "title": "x", "extra": 1})
        ),
        json!({"data": {"incidentUpdated": {"id": "4", "t": "x", "__typename": "Incident"}}})
    );
    assert_eq!(
        project(
            "subscription { incidentUpdated { id severity } }",
            json!({}),
            json!({"id": "1"})
        ),
        json!({"errors": [{"message": "Cannot return null for non-nullable field Incident.severity.", "locations": [{"line": 1, "column": 37}], "path": ["incidentUpdated", "severity"]}], "data": {"incidentUpdated": null}})
    );
    assert_eq!(
        project(
            "subscription { node { id ... on Incident { title } } }",
            json!({}),
            json!({"__typename": "Incident", "id": "1", "title": "t"})
        ),
        json!({"data": {"node": {"id": "1", "title": "t"}}})
    );
}

#[test]
fn validation_errors_are_reported() {
    let schema = Schema::build(SDL, None).unwrap();
    let err = schema
        .prepare(
            "subscription { incidentUpdated { nope } }",
            None,
            &Map::new(),
        )
        .unwrap_err();
    assert_eq!(
        err[0].message,
        "Cannot query field \"nope\" on type \"Incident\"."
    );
}
