//! Introspection answered from the merged schema. The full answer to
//! graphql-js `getIntrospectionQuery()` with every option is kept in
//! `tests/fixtures/graphql/introspection.out.json` (rewrite it with
//! `SUBCAR_UPDATE_FIXTURES=1`), and `check-introspection.mjs` checks it with
//! graphql-js `buildClientSchema`.

#[path = "support/fixtures.rs"]
mod fixtures;

use std::collections::BTreeMap;

use fixtures::{fixture, fixture_path, schema};
use serde_json::{Map, Value, json};
use subcar::graphql::{INTROSPECTION_QUERY, Schema, introspection};

fn run(q: &str) -> Option<Value> {
    introspection::execute(&schema(), q, None, &Map::new())
}

#[test]
fn graphql_js_introspection_queries_are_answered() {
    let queries: BTreeMap<String, String> =
        serde_json::from_str(&fixture("introspection-queries.json")).unwrap();
    for (name, q) in &queries {
        let result = run(q).unwrap_or_else(|| panic!("{name}: not answered"));
        assert!(result.get("errors").is_none(), "{name}: {result}");
        let types = result["data"]["__schema"]["types"].as_array().unwrap();
        for t in ["Subscription", "Incident", "User", "Query", "__Type"] {
            assert!(types.iter().any(|x| x["name"] == t), "{name}: {t} missing");
        }
        assert_eq!(
            result["data"]["__schema"]["subscriptionType"]["name"],
            "Subscription"
        );
    }
    let all = run(&queries["all"]).unwrap();
    let path = fixture_path("introspection.out.json");
    let text = serde_json::to_string_pretty(&all).unwrap() + "\n";
    if std::env::var_os("SUBCAR_UPDATE_FIXTURES").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    assert_eq!(
        serde_json::from_str::<Value>(&fixture("introspection.out.json")).unwrap(),
        all,
        "introspection output changed: rerun with SUBCAR_UPDATE_FIXTURES=1 and `node check-introspection.mjs`"
    );
}

#[test]
fn the_upstream_query_is_answered_and_reads_back() {
    let result = run(INTROSPECTION_QUERY).unwrap();
    let again =
        Schema::build_with_introspection("type Subscription { ping: String }", &result).unwrap();
    assert!(
        again
            .sdl()
            .contains("type Incident implements Node & Event")
    );
}

#[test]
fn answers_are_shaped_by_the_selection() {
    assert_eq!(
        run("{ __type(name: \"Activity\") { kind name possibleTypes { name } t: __typename } }")
            .unwrap(),
        json!({"data": {"__type": {"kind": "UNION", "name": "Activity", "possibleTypes": [{"name": "Comment"}, {"name": "Incident"}], "t": "__Type"}}})
    );
    assert_eq!(
        run("{ __typename }").unwrap(),
        json!({"data": {"__typename": "Query"}})
    );
    assert_eq!(
        run("query ($n: String!) { __type(name: $n) { name } }"),
        Some(
            json!({"errors": [{"message": "Variable \"$n\" of required type \"String!\" was not provided.", "locations": [{"line": 1, "column": 8}]}]})
        )
    );
    assert_eq!(
        run("{ __type(name: \"Role\") { enumValues { name } all: enumValues(includeDeprecated: true) { name isDeprecated deprecationReason } } }").unwrap(),
        json!({"data": {"__type": {"enumValues": [{"name": "ADMIN"}, {"name": "OPS"}], "all": [
            {"name": "ADMIN", "isDeprecated": false, "deprecationReason": null},
            {"name": "OPS", "isDeprecated": false, "deprecationReason": null},
            {"name": "DEV", "isDeprecated": true, "deprecationReason": "merged into OPS"}]}}})
    );
    assert_eq!(
        run("{ __type(name: \"Nope\") { name } }").unwrap(),
        json!({"data": {"__type": null}})
    );
    let invalid = run("{ __schema { nope } }").unwrap();
    assert_eq!(
        invalid["errors"][0]["message"],
        "Cannot query field \"nope\" on type \"__Schema\"."
    );
}

#[test]
fn other_queries_go_upstream() {
    assert_eq!(run("{ teams { id } __typename }"), None);
    assert_eq!(run("mutation { createUser(name: \"x\") { id } }"), None);
    assert_eq!(run("subscription { ping }"), None);
    assert_eq!(run("{ broken"), None);
}
