//! The GraphQL engine: schema merge, subscription validation, input coercion,
//! projection of event payloads onto selection sets, filters, grouping keys
//! and introspection. Pure: no sockets, no HTTP, no clocks.
//!
//! CONTRACT (stable API the rest of the crate codes against; the engine issue
//! replaces this placeholder implementation, keeping these signatures):
//!
//! - [`Schema::build`] merges the subscription SDL with the upstream schema.
//! - [`Schema::prepare`] validates a document and returns [`Prepared`].
//! - [`PreparedSubscription::project`] turns an event payload into the
//!   serialised `ExecutionResult` bytes (`{"data":…}` / `{"data":…,"errors":[…]}`).
//! - [`PreparedSubscription::group_key`] is equal for identical subscriptions.
//! - [`filter::FieldRules`] evaluates `allow` / `filter` for one field.

pub mod filter;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value};

/// A GraphQL error as it appears in responses and `error` messages.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GraphQLError {
    pub message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub locations: Vec<Location>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub path: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Map<String, Value>>,
}

impl GraphQLError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            locations: Vec::new(),
            path: Vec::new(),
            extensions: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationKind {
    Query,
    Mutation,
    Subscription,
}

/// Errors that make a schema unusable at start-up.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("cannot parse {source_name}: {message}")]
    Parse {
        source_name: String,
        message: String,
    },
}

/// The merged schema: the upstream's types plus subcar's Subscription root.
#[derive(Debug)]
pub struct Schema {
    subscription_sdl: String,
}

impl Schema {
    /// Merges `subscription_sdl` with the upstream SDL, if known yet.
    pub fn build(subscription_sdl: &str, upstream_sdl: Option<&str>) -> Result<Self, SchemaError> {
        let _ = upstream_sdl;
        graphql_parser::parse_schema::<String>(subscription_sdl).map_err(|e| {
            SchemaError::Parse {
                source_name: "schema.path".into(),
                message: e.to_string(),
            }
        })?;
        Ok(Self {
            subscription_sdl: subscription_sdl.to_owned(),
        })
    }

    /// The merged schema as SDL.
    pub fn sdl(&self) -> String {
        self.subscription_sdl.clone()
    }

    /// Validates `query` and selects its operation.
    pub fn prepare(
        &self,
        query: &str,
        operation_name: Option<&str>,
        variables: &Map<String, Value>,
    ) -> Result<Prepared, Vec<GraphQLError>> {
        let _ = variables;
        use graphql_parser::query::{Definition, OperationDefinition, Selection};
        let doc = graphql_parser::parse_query::<String>(query)
            .map_err(|e| vec![GraphQLError::new(format!("Syntax Error: {e}"))])?;
        let op = doc
            .definitions
            .iter()
            .filter_map(|d| match d {
                Definition::Operation(op) => Some(op),
                Definition::Fragment(_) => None,
            })
            .find(|op| {
                let name = match op {
                    OperationDefinition::Subscription(s) => s.name.as_deref(),
                    OperationDefinition::Query(q) => q.name.as_deref(),
                    OperationDefinition::Mutation(m) => m.name.as_deref(),
                    OperationDefinition::SelectionSet(_) => None,
                };
                operation_name.is_none() || name == operation_name
            })
            .ok_or_else(|| vec![GraphQLError::new("Unknown operation")])?;
        match op {
            OperationDefinition::Subscription(s) => {
                let Some(Selection::Field(f)) = s.selection_set.items.first() else {
                    return Err(vec![GraphQLError::new("subscription has no root field")]);
                };
                let response_key = f.alias.clone().unwrap_or_else(|| f.name.clone());
                let mut h = DefaultHasher::new();
                query.hash(&mut h);
                Ok(Prepared::Subscription(Arc::new(PreparedSubscription {
                    field: f.name.clone(),
                    response_key,
                    args: Map::new(),
                    group_key: GroupKey(h.finish()),
                })))
            }
            OperationDefinition::Mutation(_) => Ok(Prepared::Passthrough(OperationKind::Mutation)),
            _ => Ok(Prepared::Passthrough(OperationKind::Query)),
        }
    }
}

/// What a validated document asks for.
#[derive(Debug)]
pub enum Prepared {
    /// A subscription subcar serves itself.
    Subscription(Arc<PreparedSubscription>),
    /// A query or mutation, to be executed by the upstream.
    Passthrough(OperationKind),
}

/// Identifies a group of identical subscriptions (same field, canonical
/// selection set, coerced arguments and variables).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupKey(u64);

/// A validated subscription operation with its arguments coerced.
#[derive(Debug)]
pub struct PreparedSubscription {
    field: String,
    response_key: String,
    args: Map<String, Value>,
    group_key: GroupKey,
}

impl PreparedSubscription {
    /// The Subscription root field (its name in the schema, not the alias).
    pub fn field(&self) -> &str {
        &self.field
    }

    /// The field's arguments, coerced against the schema.
    pub fn args(&self) -> &Map<String, Value> {
        &self.args
    }

    pub fn group_key(&self) -> &GroupKey {
        &self.group_key
    }

    /// Projects one event payload onto the selection set: the serialised
    /// execution result, ready to be wrapped into a `next` payload.
    pub fn project(&self, payload: &Value) -> Bytes {
        let mut data = Map::new();
        data.insert(self.response_key.clone(), payload.clone());
        Bytes::from(
            serde_json::to_vec(&serde_json::json!({ "data": data }))
                .expect("JSON values serialise"),
        )
    }
}
