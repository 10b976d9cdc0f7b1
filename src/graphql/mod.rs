//! The GraphQL engine: schema merge, subscription validation, input coercion,
//! projection of event payloads onto selection sets, grouping keys
//! and introspection. Pure: no sockets, no HTTP, no clocks.
//!
//! - [`Schema::build`] / [`Schema::build_with_introspection`] merge the
//!   subscription SDL with the upstream schema (SDL or introspection result).
//! - [`Schema::prepare`] validates a document and returns [`Prepared`].
//! - [`PreparedSubscription::project`] turns an event payload into the
//!   serialised `ExecutionResult` bytes (`{"data":…}` / `{"errors":[…],"data":…}`).
//! - [`PreparedSubscription::group_key`] is equal for identical subscriptions.
//! - [`introspection::execute`] answers introspection queries from the
//!   merged schema.

mod ast;
pub mod canonical;
mod coerce;
pub mod document;
mod error;
pub mod fetch;
pub mod introspection;
mod literal;
mod locate;
mod mutation;
pub mod offload;
mod overlap;
mod plan;
mod project;
pub mod schema;
mod validate;
mod value;

use std::sync::Arc;

use bytes::Bytes;
use graphql_parser::query::{OperationDefinition, Selection};
use serde_json::{Map, Value};

pub use ast::select_operation;
pub use canonical::GroupKey;
pub use document::{DOCUMENT_TOO_COMPLEX, INTROSPECTION_DISABLED};
pub use error::{GraphQLError, Location};
pub use introspection::INTROSPECTION_QUERY;
pub use mutation::RootField;
pub use schema::{Schema, SchemaError, TypeSource, UpstreamSchema};

use ast::{Doc, fragments, op_view};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationKind {
    Query,
    Mutation,
    Subscription,
}

/// What a validated document asks for.
#[derive(Debug)]
pub enum Prepared {
    /// A subscription subcar serves itself.
    Subscription(Arc<PreparedSubscription>),
    /// A query or mutation, to be executed by the upstream (not validated
    /// here: the upstream is the authority on it).
    Passthrough(OperationKind),
}

/// A validated subscription operation with its arguments coerced and its
/// selection set compiled for projection.
#[derive(Debug)]
pub struct PreparedSubscription {
    root: plan::FieldPlan,
    args: Map<String, Value>,
    rule_args: Map<String, Value>,
    variables: Map<String, Value>,
    group_key: GroupKey,
    /// The upstream query completing its events, for an enriched field.
    fetch: Option<Box<fetch::FetchQuery>>,
}

/// `extensions.code` of the error `prepare` answers while a field waits
/// for the upstream schema.
pub const SCHEMA_NOT_READY: &str = "SCHEMA_NOT_READY";

/// The root field's coerced arguments with every declared argument the
/// client left out (and that has no default) bound to `null`, so `filter`,
/// `allow` and `resolve.args` read `args.x == null` for it instead of
/// failing on a missing key. Coercion itself keeps graphql-js's rule (an
/// absent argument is absent) for projection and introspection.
fn absent_as_null(
    mut args: Map<String, Value>,
    defs: &[schema::InputValueDef],
) -> Map<String, Value> {
    for def in defs {
        args.entry(def.name.clone()).or_insert(Value::Null);
    }
    args
}

impl Schema {
    /// Parses `query`, selects its operation (by `operation_name` when the
    /// document holds several) and, for a subscription, validates the
    /// document against the merged schema, coerces variables and arguments
    /// and compiles the projection. Queries and mutations are only
    /// identified.
    ///
    /// This is the whole document pipeline (pre-scan → parse →
    /// `[limits.document]` → introspection policy → validate → coerce →
    /// plan); its cost is bounded by the schema's document limits whatever
    /// the input, which is what the fuzz target relies on.
    pub fn prepare(
        &self,
        query: &str,
        operation_name: Option<&str>,
        variables: &Map<String, Value>,
    ) -> Result<Prepared, Vec<GraphQLError>> {
        self.prepare_with(query, operation_name, variables, &|_| None)
    }

    /// [`Self::prepare`] where `resolve` gives the `[subscriptions.resolve]`
    /// of enriched Subscription fields: their subscriptions also get the
    /// upstream query that completes each event ([`PreparedSubscription::fetch`]).
    pub fn prepare_with<'r>(
        &self,
        query: &str,
        operation_name: Option<&str>,
        variables: &Map<String, Value>,
        resolve: &dyn Fn(&str) -> Option<&'r crate::graphql::fetch::ResolveConfig>,
    ) -> Result<Prepared, Vec<GraphQLError>> {
        let doc: Doc = document::parse(query, &self.limits)?;
        if !self.introspection && document::mentions_introspection(&doc) {
            return Err(vec![document::introspection_disabled()]);
        }
        let op = select_operation(&doc, operation_name).map_err(|e| vec![e])?;
        match op {
            OperationDefinition::Subscription(_) => {}
            OperationDefinition::Mutation(_) => {
                return Ok(Prepared::Passthrough(OperationKind::Mutation));
            }
            _ => return Ok(Prepared::Passthrough(OperationKind::Query)),
        }
        let view = op_view(op);
        if let Some(pending) = self.pending_root_field(&doc, view.selection_set) {
            return Err(vec![GraphQLError::new(format!(
                "the upstream schema is not loaded yet, and the subscription field \"{pending}\" needs its types; try again shortly"
            ))
            .with_code(SCHEMA_NOT_READY)]);
        }
        let errors = validate::validate(self, &doc, query);
        if !errors.is_empty() {
            return Err(errors
                .into_iter()
                .map(|e| {
                    // A cap reached while validating keeps its own code.
                    if e.extensions.is_some() {
                        e
                    } else {
                        e.with_code("GRAPHQL_VALIDATION_FAILED")
                    }
                })
                .collect());
        }
        let vars = coerce::coerce_variables(self, view.vars, variables)?;
        let fragments = fragments(&doc);
        let compiler = plan::Compiler::new(self, &fragments, &vars);
        let sub = self.subscription_type();
        let parent: Arc<str> = Arc::from(sub.name.as_str());
        let mut groups = compiler.collect(sub, &[view.selection_set]);
        let Some((key, nodes)) = groups.pop() else {
            return Err(vec![GraphQLError::new(
                "The subscription selects no field.",
            )]);
        };
        let def = sub
            .field(&nodes[0].name)
            .ok_or_else(|| vec![GraphQLError::new("The subscription selects no field.")])?;
        let args = coerce::argument_values(
            self,
            &def.args,
            &nodes[0].arguments,
            &vars,
            nodes[0].position,
        )
        .map_err(|e| vec![e])?;
        let root = compiler
            .field(sub, &parent, key, &nodes)
            .ok_or_else(|| vec![GraphQLError::new("The subscription selects no field.")])?;
        let fetch = match resolve(&def.name) {
            None => None,
            Some(config) => {
                let target = self.resolve_target(&def.name, config).map_err(|e| {
                    let code = match *e {
                        fetch::ResolveSchemaError::NotLoaded { .. } => SCHEMA_NOT_READY,
                        _ => "INTERNAL_SERVER_ERROR",
                    };
                    vec![GraphQLError::new(e.to_string()).with_code(code)]
                })?;
                Some(Box::new(fetch::FetchQuery::build(
                    &doc, view.vars, &nodes, key, &target, &vars,
                )))
            }
        };
        let group_key = GroupKey::new(&root, &args);
        let rule_args = absent_as_null(args.clone(), &def.args);
        Ok(Prepared::Subscription(Arc::new(PreparedSubscription {
            root,
            args,
            rule_args,
            variables: vars,
            group_key,
            fetch,
        })))
    }

    /// Every validation error of `query` against the merged schema (all
    /// operations and fragments of the document, as graphql-js `validate`).
    pub fn validate(&self, query: &str) -> Vec<GraphQLError> {
        match document::parse(query, &self.limits) {
            Ok(doc) => validate::validate(self, &doc, query),
            Err(errors) => errors,
        }
    }

    /// The first Subscription field of the operation that waits for the
    /// upstream schema, if any.
    fn pending_root_field(&self, doc: &Doc, set: &ast::Sel) -> Option<String> {
        if self.pending_fields.is_empty() {
            return None;
        }
        let frags = fragments(doc);
        let mut stack = vec![set];
        let mut seen = std::collections::HashSet::new();
        while let Some(s) = stack.pop() {
            for sel in &s.items {
                match sel {
                    Selection::Field(f) if self.pending_fields.contains(&f.name) => {
                        return Some(f.name.clone());
                    }
                    Selection::Field(_) => {}
                    Selection::InlineFragment(i) => stack.push(&i.selection_set),
                    Selection::FragmentSpread(sp) => {
                        if seen.insert(sp.fragment_name.as_str())
                            && let Some(f) = frags.get(sp.fragment_name.as_str())
                        {
                            stack.push(&f.selection_set);
                        }
                    }
                }
            }
        }
        None
    }
}

impl PreparedSubscription {
    /// The upstream query of this subscription, when its field is enriched.
    pub fn fetch(&self) -> Option<&fetch::FetchQuery> {
        self.fetch.as_deref()
    }

    /// The `next` payload for an event completed by `response`, or `None`
    /// when this subscriber must not receive the event (`on_null = "skip"`
    /// and the upstream answered null or forbidden).
    pub fn complete(
        &self,
        response: fetch::FetchResponse<'_>,
        payload: &Value,
        policy: fetch::Policy,
    ) -> Option<Bytes> {
        fetch::complete(&self.root, response, payload, policy)
    }

    /// The Subscription root field (its name in the schema, not the alias).
    pub fn field(&self) -> &str {
        &self.root.name
    }

    /// The root field's response key (its alias, or its name).
    pub fn response_key(&self) -> &str {
        &self.root.key
    }

    /// The field's arguments, coerced against the schema (defaults applied,
    /// enums as strings, IDs as strings).
    pub fn args(&self) -> &Map<String, Value> {
        &self.args
    }

    /// What `filter`, `allow` and `resolve` rules read as `args`: [`Self::args`]
    /// with every argument the client left out (and without a default) `null`.
    pub fn rule_args(&self) -> &Map<String, Value> {
        &self.rule_args
    }

    /// The operation's coerced variables.
    pub fn variables(&self) -> &Map<String, Value> {
        &self.variables
    }

    pub fn group_key(&self) -> &GroupKey {
        &self.group_key
    }

    /// Projects one event payload onto the selection set: the serialised
    /// execution result, ready to be wrapped into a `next` payload. Computed
    /// once per group; the bytes are shared by its subscribers.
    pub fn project(&self, payload: &Value) -> Bytes {
        Bytes::from(project::execute(&self.root, payload))
    }

    /// [`Self::project`] from the payload's JSON bytes; a payload that is
    /// not JSON projects as `null`.
    pub fn project_bytes(&self, payload: &[u8]) -> Bytes {
        let v: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
        self.project(&v)
    }
}
