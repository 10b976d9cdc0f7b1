//! The GraphQL engine's fixtures (`tests/fixtures/graphql`): the schema the
//! engine tests and benches run on, and the graphql-js cases beside it.
//! Light on purpose: the engine tests include this file alone
//! (`#[path = "support/fixtures.rs"] mod fixtures;`), not the harness.
#![allow(dead_code)]

use subcar::graphql::Schema;

pub fn fixture_path(name: &str) -> String {
    format!(
        "{}/tests/fixtures/graphql/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(fixture_path(name)).unwrap()
}

/// `subscriptions.graphql` merged with `upstream.graphql`.
pub fn schema() -> Schema {
    Schema::build(
        &fixture("subscriptions.graphql"),
        Some(&fixture("upstream.graphql")),
    )
    .unwrap()
}

/// The cases of the JSON fixture `name` (graphql-js's answers beside them).
pub fn cases<T: serde::de::DeserializeOwned>(name: &str) -> Vec<T> {
    serde_json::from_str(&fixture(name)).unwrap()
}
