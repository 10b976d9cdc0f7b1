//! Fuzzes the GraphQL document pipeline a subscribe message goes through:
//! parse → validate → coerce variables → plan, then the projection of an
//! event payload, against the test schema (tests/fixtures/graphql).
//!
//! Input: `<document> \0 <variables JSON object> \0 <event payload JSON>`;
//! missing parts are empty.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use subcar::graphql::{Prepared, Schema};

static SCHEMA: LazyLock<Schema> = LazyLock::new(|| {
    Schema::build(
        include_str!("../../tests/fixtures/graphql/subscriptions.graphql"),
        Some(include_str!("../../tests/fixtures/graphql/upstream.graphql")),
    )
    .expect("the fixture schema builds")
});

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |b| *b == 0);
    let Ok(query) = std::str::from_utf8(parts.next().unwrap_or_default()) else {
        return;
    };
    let variables: Map<String, Value> = parts
        .next()
        .and_then(|v| serde_json::from_slice(v).ok())
        .unwrap_or_default();
    let payload = parts.next().unwrap_or_default();
    // An operation name taken from the document's first named operation
    // reaches the selection of one among several.
    let operation_name = query
        .split_whitespace()
        .skip_while(|w| !matches!(*w, "query" | "mutation" | "subscription"))
        .nth(1)
        .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric() && c != '_'))
        .filter(|w| !w.is_empty());
    for name in [None, operation_name] {
        if let Ok(Prepared::Subscription(sub)) = SCHEMA.prepare(query, name, &variables) {
            let out = sub.project_bytes(payload);
            serde_json::from_slice::<Value>(&out).expect("a projection is JSON");
            let _ = sub.group_key();
        }
    }
});
