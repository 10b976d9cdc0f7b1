//! Argument and variable coercion (GraphQL spec §6.1.2, §6.4.1): the
//! coerced `args()` a subscription sees, and spec-shaped errors.

#[path = "support/fixtures.rs"]
mod fixtures;

use fixtures::{fixture, schema};
use serde_json::{Map, Value, json};
use subcar::graphql::{GraphQLError, Prepared, PreparedSubscription, Schema};

fn prepare(
    q: &str,
    vars: Value,
) -> Result<std::sync::Arc<PreparedSubscription>, Vec<GraphQLError>> {
    let vars: Map<String, Value> = serde_json::from_value(vars).unwrap();
    match schema().prepare(q, None, &vars)? {
        Prepared::Subscription(s) => Ok(s),
        Prepared::Passthrough(k) => panic!("passthrough {k:?}"),
    }
}

fn args(q: &str, vars: Value) -> Value {
    Value::Object(prepare(q, vars).unwrap().args().clone())
}

fn error(q: &str, vars: Value) -> String {
    prepare(q, vars).unwrap_err()[0].message.clone()
}

#[test]
fn defaults_and_literals() {
    assert_eq!(
        args("subscription { counter }", json!({})),
        json!({"step": 1})
    );
    assert_eq!(
        args("subscription { counter(step: 3, ratio: 2) }", json!({})),
        json!({"step": 3, "ratio": 2})
    );
    assert_eq!(
        args("subscription { counter(ratio: 2.5) }", json!({})),
        json!({"step": 1, "ratio": 2.5})
    );
    assert_eq!(
        args(
            "subscription { incidentCreated(teamId: 42) { id } }",
            json!({})
        ),
        json!({"teamId": "42"})
    );
}

#[test]
fn lists_from_single_values_and_enums() {
    assert_eq!(
        args(
            "subscription { incidentUpdated(severities: P1) { id } }",
            json!({})
        ),
        json!({"severities": ["P1"]})
    );
    assert_eq!(
        args(
            "subscription ($s: [Severity!]) { incidentUpdated(severities: $s) { id } }",
            json!({"s": "P2"})
        ),
        json!({"severities": ["P2"]})
    );
    assert_eq!(
        args(
            "subscription ($s: Severity!) { incidentUpdated(severities: [$s, P3]) { id } }",
            json!({"s": "P2"})
        ),
        json!({"severities": ["P2", "P3"]})
    );
}

#[test]
fn input_objects_get_their_defaults() {
    assert_eq!(
        args(
            "subscription { incidentUpdated(filter: {teamId: 7}) { id } }",
            json!({})
        ),
        json!({"filter": {"teamId": "7", "status": "OPEN", "minPriority": 0}})
    );
    assert_eq!(
        args(
            "subscription ($f: IncidentFilter) { incidentUpdated(filter: $f) { id } }",
            json!({"f": {"severities": "P1", "status": null}})
        ),
        json!({"filter": {"severities": ["P1"], "status": null, "minPriority": 0}})
    );
}

#[test]
fn nulls_and_absent_values() {
    assert_eq!(
        args(
            "subscription { incidentUpdated(id: null) { id } }",
            json!({})
        ),
        json!({"id": null})
    );
    assert_eq!(
        args("subscription { incidentUpdated { id } }", json!({})),
        json!({})
    );
    // An absent variable leaves the argument absent; an explicit null stays null.
    assert_eq!(
        args(
            "subscription ($id: ID) { incidentUpdated(id: $id) { id } }",
            json!({})
        ),
        json!({})
    );
    assert_eq!(
        args(
            "subscription ($id: ID) { incidentUpdated(id: $id) { id } }",
            json!({"id": null})
        ),
        json!({"id": null})
    );
    // A nullable variable with a default fills a non-null argument.
    assert_eq!(
        args(
            "subscription ($t: ID = \"x\") { incidentCreated(teamId: $t) { id } }",
            json!({})
        ),
        json!({"teamId": "x"})
    );
}

#[test]
fn variable_errors_are_spec_shaped() {
    assert_eq!(
        error(
            "subscription ($n: Int!) { counter(step: $n) }",
            json!({"n": 2147483648i64})
        ),
        "Variable \"$n\" got invalid value 2147483648; Int cannot represent non 32-bit signed integer value: 2147483648"
    );
    assert_eq!(
        error(
            "subscription ($n: Int!) { counter(step: $n) }",
            json!({"n": 1.5})
        ),
        "Variable \"$n\" got invalid value 1.5; Int cannot represent non-integer value: 1.5"
    );
    assert_eq!(
        args(
            "subscription ($n: Int!) { counter(step: $n) }",
            json!({"n": 4.0})
        ),
        json!({"step": 4})
    );
    assert_eq!(
        error(
            "subscription ($r: Float) { counter(ratio: $r) }",
            json!({"r": "1"})
        ),
        "Variable \"$r\" got invalid value \"1\"; Float cannot represent non numeric value: \"1\""
    );
    assert_eq!(
        error(
            "subscription ($t: ID!) { incidentCreated(teamId: $t) { id } }",
            json!({})
        ),
        "Variable \"$t\" of required type \"ID!\" was not provided."
    );
    assert_eq!(
        error(
            "subscription ($t: ID!) { incidentCreated(teamId: $t) { id } }",
            json!({"t": null})
        ),
        "Variable \"$t\" of non-null type \"ID!\" must not be null."
    );
    assert_eq!(
        error(
            "subscription ($s: [Severity!]) { incidentUpdated(severities: $s) { id } }",
            json!({"s": ["P1", "p2"]})
        ),
        "Variable \"$s\" got invalid value \"p2\" at \"s[1]\"; Value \"p2\" does not exist in \"Severity\" enum. Did you mean the enum value \"P1\", \"P2\", \"P3\", or \"P4\"?"
    );
    assert_eq!(
        error(
            "subscription ($r: Range) { counter(range: $r) }",
            json!({"r": {"to": 1}})
        ),
        "Variable \"$r\" got invalid value { to: 1 }; Field \"from\" of required type \"Int!\" was not provided."
    );
    let e = &prepare(
        "subscription ($r: Range) { counter(range: $r) }",
        json!({"r": 1}),
    )
    .unwrap_err()[0];
    assert_eq!(
        e.message,
        "Variable \"$r\" got invalid value 1; Expected type \"Range\" to be an object."
    );
    assert_eq!((e.locations[0].line, e.locations[0].column), (1, 15));
}

#[test]
fn schema_without_upstream_serves_local_fields_and_waits_for_the_rest() {
    let schema = Schema::build(&fixture("subscriptions.graphql"), None).unwrap();
    assert!(!schema.upstream_loaded());
    let ok = schema.prepare("subscription { counter }", None, &Map::new());
    assert!(matches!(ok, Ok(Prepared::Subscription(_))));
    let err = schema
        .prepare(
            "subscription { userChanged(id: \"1\") { id } }",
            None,
            &Map::new(),
        )
        .unwrap_err();
    assert!(
        err[0].message.contains("not loaded yet"),
        "{}",
        err[0].message
    );
    assert_eq!(
        err[0].extensions.as_ref().unwrap()["code"],
        "SCHEMA_NOT_READY"
    );
    // Incident implements the upstream's Node: it waits too.
    assert!(
        schema
            .prepare("subscription { incidentUpdated { id } }", None, &Map::new())
            .is_err()
    );
}

#[test]
fn schema_conflicts_and_unknown_types_are_errors() {
    let local = "type User { id: ID! nick: String } type Subscription { userChanged: User }";
    let err = Schema::build(local, Some(&fixture("upstream.graphql"))).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("\"User\"") && text.contains("upstream") && text.contains("schema.path"),
        "{text}"
    );
    let err = Schema::build(
        "type Subscription { x: Missing }",
        Some(&fixture("upstream.graphql")),
    )
    .unwrap_err();
    assert!(err.to_string().contains("\"Missing\""), "{err}");
    // The same type defined identically on both sides is fine.
    let same = "scalar DateTime type Subscription { tick: DateTime }";
    assert!(Schema::build(same, Some(&fixture("upstream.graphql"))).is_ok());
}

#[test]
fn queries_and_mutations_pass_through() {
    let s = schema();
    assert!(matches!(
        s.prepare("{ teams { id } }", None, &Map::new()),
        Ok(Prepared::Passthrough(subcar::graphql::OperationKind::Query))
    ));
    assert!(matches!(
        s.prepare(
            "mutation M { createUser(name: \"x\") { id } } subscription S { ping }",
            Some("M"),
            &Map::new()
        ),
        Ok(Prepared::Passthrough(
            subcar::graphql::OperationKind::Mutation
        ))
    ));
    let err = s
        .prepare(
            "subscription A { ping } subscription B { counter }",
            None,
            &Map::new(),
        )
        .unwrap_err();
    assert_eq!(
        err[0].message,
        "Must provide operation name if query contains multiple operations."
    );
}

#[test]
fn merged_sdl_round_trips() {
    let s = schema();
    let sdl = s.sdl();
    assert!(
        sdl.contains("type Subscription {") && sdl.contains("type Query {"),
        "{sdl}"
    );
    let again = Schema::build(&sdl, None).unwrap();
    assert_eq!(again.sdl(), sdl);
}
