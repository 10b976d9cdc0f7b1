//! Enrichment in the engine: checking `[subscriptions.resolve]` against the
//! merged schema, writing the upstream query for one subscription from its
//! own selection set, and completing an event from the upstream's answer.
//!
//! The query keeps the client's selection as written (aliases, fragments,
//! variables, directives) under the subscription's response key, so the
//! upstream's `data` already has the response's shape and its error paths
//! are the client's. The payload is reshaped to response keys, merged in,
//! and the result projected by response key.

mod complete;
mod query;
mod spec;
mod target;

pub(crate) use complete::complete;
pub use complete::{FetchResponse, Policy};
pub use query::FetchQuery;
pub use spec::{OnNull, Prefer, ResolveConfig};
pub use target::{ResolveSchemaError, ResolveTarget};

/// The operation name of every enrichment query (for upstream logs).
pub const OPERATION_NAME: &str = "SubcarResolve";

#[cfg(test)]
mod testing {
    use std::sync::Arc;

    use serde_json::{Map, Value};

    use crate::graphql::fetch::{OnNull, Prefer, ResolveConfig};
    use crate::graphql::{Prepared, PreparedSubscription, Schema};

    pub const UPSTREAM: &str = r#"
    type Query { incident(id: ID!): Incident  other: Int  many(ids: [ID!]!): [Incident] }
    type Incident { id: ID! title: String severity: Severity! owner: User tags: [String!]! last: Activity }
    type User { id: ID! name: String }
    union Activity = Comment | Change
    type Comment { text: String }
    type Change { from: String to: String }
    enum Severity { P1 P2 }
"#;
    pub const LOCAL: &str =
        "type Subscription { incidentUpdated(id: ID): Incident  counter: Int  list: [Incident] }";

    pub fn schema() -> Schema {
        Schema::build(LOCAL, Some(UPSTREAM)).unwrap()
    }

    pub fn resolve(query_field: &str, args: &[(&str, &str)]) -> ResolveConfig {
        ResolveConfig {
            query_field: query_field.into(),
            args: args
                .iter()
                .map(|(a, e)| (a.to_string(), e.to_string()))
                .collect(),
            share_by: None,
            on_null: OnNull::Skip,
            prefer: Prefer::Payload,
            max_concurrency: 4,
        }
    }

    pub fn prepare(q: &str, vars: Value) -> Arc<PreparedSubscription> {
        let s = schema();
        let r = resolve("incident", &[("id", "event.id")]);
        let vars: Map<String, Value> = serde_json::from_value(vars).unwrap();
        match s.prepare_with(q, None, &vars, &|f| (f == "incidentUpdated").then_some(&r)) {
            Ok(Prepared::Subscription(p)) => p,
            other => panic!("{other:?}"),
        }
    }
}
