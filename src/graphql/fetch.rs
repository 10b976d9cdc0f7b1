//! Enrichment in the engine: checking `[subscriptions.resolve]` against the
//! merged schema, writing the upstream query for one subscription from its
//! own selection set, and completing an event from the upstream's answer.
//!
//! The query keeps the client's selection as written (aliases, fragments,
//! variables, directives) under the subscription's response key, so the
//! upstream's `data` already has the response's shape and its error paths
//! are the client's. The payload is reshaped to response keys, merged in,
//! and the result projected by response key.

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;
use graphql_parser::Pos;
use graphql_parser::query::{
    Definition, Document, Field, OperationDefinition, Query, Selection, SelectionSet, Type,
    Value as AstValue, VariableDefinition,
};
use serde_json::{Map, Value};

use super::plan::{Completion, FieldPlan, ObjectPlan};
use super::project::{self, Lookup};
use super::schema::{Schema, TypeKind, TypeRef};
use super::validate::{Doc, Frag, Sel};
use super::{GraphQLError, PreparedSubscription};
use crate::config::{OnNull, Prefer, ResolveConfig};

/// The operation name of every enrichment query (for upstream logs).
pub const OPERATION_NAME: &str = "SubcarResolve";

/// `extensions.code`s of upstream errors that mean "not yours to see".
const FORBIDDEN_CODES: [&str; 3] = ["FORBIDDEN", "UNAUTHORIZED", "UNAUTHENTICATED"];

/// A `[subscriptions.resolve]` that does not fit the merged schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveSchemaError {
    #[error(
        "subscriptions field {field:?}: resolve needs the upstream schema, which is not loaded yet"
    )]
    NotLoaded { field: String },
    #[error(
        "subscriptions field {field:?}: resolve.query_field {query_field:?} is not a field of the upstream's Query type: expected one of {known}"
    )]
    UnknownQueryField {
        field: String,
        query_field: String,
        known: String,
    },
    #[error(
        "subscriptions field {field:?}: resolve.query_field {query_field:?} returns {found} but the subscription field returns {expected}: expected the same type"
    )]
    TypeMismatch {
        field: String,
        query_field: String,
        found: String,
        expected: String,
    },
    #[error(
        "subscriptions field {field:?}: resolve.args.{arg} is not an argument of Query.{query_field}: expected one of {known}"
    )]
    UnknownArgument {
        field: String,
        query_field: String,
        arg: String,
        known: String,
    },
    #[error(
        "subscriptions field {field:?}: resolve.args has no expression for {arg:?}, a required argument of Query.{query_field}"
    )]
    MissingArgument {
        field: String,
        query_field: String,
        arg: String,
    },
    #[error(
        "subscriptions field {field:?}: resolve.args.{arg} = {expression:?} is a {found} but Query.{query_field}({arg}:) takes {expected}"
    )]
    ArgumentType {
        field: String,
        query_field: String,
        arg: String,
        expression: String,
        found: String,
        expected: String,
    },
}

/// A `[subscriptions.resolve]` checked against the schema: the query field
/// and the declared types of the arguments it is given.
#[derive(Debug, Clone)]
pub struct ResolveTarget {
    query_field: String,
    args: Vec<(String, TypeRef)>,
}

impl Schema {
    /// Checks `resolve` of Subscription field `field`: the query field
    /// exists, returns the field's type, and its arguments are the
    /// configured ones (those read straight from a payload field of another
    /// type are refused).
    pub fn resolve_target(
        &self,
        field: &str,
        resolve: &ResolveConfig,
    ) -> Result<ResolveTarget, Box<ResolveSchemaError>> {
        let not_loaded = || ResolveSchemaError::NotLoaded {
            field: field.to_owned(),
        };
        let query = self
            .query
            .as_deref()
            .and_then(|q| self.get(q))
            .filter(|_| self.upstream_loaded)
            .ok_or_else(|| Box::new(not_loaded()))?;
        let sub_field = self
            .subscription_type()
            .field(field)
            .ok_or_else(|| Box::new(not_loaded()))?;
        let qf = &resolve.query_field;
        let Some(def) = query.field(qf) else {
            let known = query
                .fields()
                .unwrap_or_default()
                .iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(Box::new(ResolveSchemaError::UnknownQueryField {
                field: field.to_owned(),
                query_field: qf.clone(),
                known,
            }));
        };
        if shape(&def.ty) != shape(&sub_field.ty) {
            return Err(Box::new(ResolveSchemaError::TypeMismatch {
                field: field.to_owned(),
                query_field: qf.clone(),
                found: print_type(&def.ty),
                expected: print_type(&sub_field.ty),
            }));
        }
        let mut args = Vec::new();
        for (arg, expression) in &resolve.args {
            let Some(a) = def.args.iter().find(|a| &a.name == arg) else {
                return Err(Box::new(ResolveSchemaError::UnknownArgument {
                    field: field.to_owned(),
                    query_field: qf.clone(),
                    arg: arg.clone(),
                    known: def
                        .args
                        .iter()
                        .map(|a| a.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                }));
            };
            if let Some(found) = self.payload_field_type(sub_field.ty.named(), expression)
                && !accepts(a.ty.named(), found)
            {
                return Err(Box::new(ResolveSchemaError::ArgumentType {
                    field: field.to_owned(),
                    query_field: qf.clone(),
                    arg: arg.clone(),
                    expression: expression.clone(),
                    found: found.to_owned(),
                    expected: print_type(&a.ty),
                }));
            }
            args.push((arg.clone(), a.ty.clone()));
        }
        if let Some(a) = def.args.iter().find(|a| {
            a.ty.is_non_null() && a.default.is_none() && !resolve.args.contains_key(&a.name)
        }) {
            return Err(Box::new(ResolveSchemaError::MissingArgument {
                field: field.to_owned(),
                query_field: qf.clone(),
                arg: a.name.clone(),
            }));
        }
        Ok(ResolveTarget {
            query_field: qf.clone(),
            args,
        })
    }

    /// For an expression that is just `event.<name>`: the named type of
    /// field `name` of the payload's type `ty`, when it has one.
    fn payload_field_type(&self, ty: &str, expression: &str) -> Option<&str> {
        let name = expression.trim().strip_prefix("event.")?;
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return None;
        }
        let t = self.get(ty)?;
        if !matches!(t.kind, TypeKind::Object { .. } | TypeKind::Interface { .. }) {
            return None;
        }
        Some(t.field(name)?.ty.named())
    }
}

/// Whether an argument of named type `arg` takes values of a payload field
/// of named type `value` (IDs are written as strings or integers).
fn accepts(arg: &str, value: &str) -> bool {
    arg == value
        || (arg == "ID" && matches!(value, "String" | "Int"))
        || (arg == "String" && value == "ID")
        || (arg == "Float" && value == "Int")
}

/// A type with its non-null markers removed: what must match between the
/// query field and the subscription field.
fn shape(t: &TypeRef) -> String {
    match t {
        TypeRef::NonNull(inner) => shape(inner),
        TypeRef::List(inner) => format!("[{}]", shape(inner)),
        TypeRef::Named(n) => n.clone(),
    }
}

fn print_type(t: &TypeRef) -> String {
    match t {
        TypeRef::NonNull(inner) => format!("{}!", print_type(inner)),
        TypeRef::List(inner) => format!("[{}]", print_type(inner)),
        TypeRef::Named(n) => n.clone(),
    }
}

fn ast_type(t: &TypeRef) -> Type<'static, String> {
    match t {
        TypeRef::NonNull(inner) => Type::NonNullType(Box::new(ast_type(inner))),
        TypeRef::List(inner) => Type::ListType(Box::new(ast_type(inner))),
        TypeRef::Named(n) => Type::NamedType(n.clone()),
    }
}

/// The upstream query of one subscription, ready to be sent per event.
#[derive(Debug)]
pub struct FetchQuery {
    document: String,
    /// The client's variables the selection uses.
    variables: Map<String, Value>,
    /// Argument of the query field → the variable carrying it.
    key_variables: Vec<(String, String)>,
}

impl FetchQuery {
    /// Writes the query for the selection of the subscription's root field
    /// (`nodes`, all with response key `key`): the query field under that
    /// key, its arguments as fresh variables, the client's fragments and
    /// variables that the selection uses, and `__typename` in every
    /// selection set (runtime types of abstract fields are read from it).
    pub(crate) fn build(
        doc: &Doc,
        op_vars: &[VariableDefinition<'static, String>],
        nodes: &[&Field<'static, String>],
        key: &str,
        target: &ResolveTarget,
        coerced: &Map<String, Value>,
    ) -> Self {
        let fragments = super::fragments(doc);
        let mut items: Vec<Selection<'static, String>> = Vec::new();
        for n in nodes {
            items.extend(n.selection_set.items.iter().cloned());
        }
        let mut uses = Uses::default();
        for item in &items {
            uses.selection(item, &fragments);
        }
        let mut definitions = Vec::new();
        let mut variable_definitions: Vec<VariableDefinition<'static, String>> = op_vars
            .iter()
            .filter(|v| uses.variables.contains(&v.name))
            .cloned()
            .collect();
        let mut key_variables = Vec::new();
        let mut arguments = Vec::new();
        for (arg, ty) in &target.args {
            let mut var = format!("subcar_{arg}");
            while op_vars.iter().any(|v| v.name == var) {
                var.push('_');
            }
            variable_definitions.push(VariableDefinition {
                position: Pos::default(),
                name: var.clone(),
                var_type: ast_type(ty),
                default_value: None,
            });
            arguments.push((arg.clone(), AstValue::Variable(var.clone())));
            key_variables.push((arg.clone(), var));
        }
        let mut root = Field {
            position: Pos::default(),
            alias: (key != target.query_field).then(|| key.to_owned()),
            name: target.query_field.clone(),
            arguments,
            directives: Vec::new(),
            selection_set: SelectionSet {
                span: (Pos::default(), Pos::default()),
                items,
            },
        };
        with_typename(&mut root.selection_set);
        definitions.push(Definition::Operation(OperationDefinition::Query(Query {
            position: Pos::default(),
            name: Some(OPERATION_NAME.to_owned()),
            variable_definitions,
            directives: Vec::new(),
            selection_set: SelectionSet {
                span: (Pos::default(), Pos::default()),
                items: vec![Selection::Field(root)],
            },
        })));
        for name in &uses.fragments {
            if let Some(f) = fragments.get(name.as_str()) {
                let mut f = (*f).clone();
                with_typename(&mut f.selection_set);
                definitions.push(Definition::Fragment(f));
            }
        }
        let document = Document { definitions }.format(graphql_parser::Style::default().indent(0));
        let variables = coerced
            .iter()
            .filter(|(k, _)| uses.variables.contains(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Self {
            document,
            variables,
            key_variables,
        }
    }

    pub fn document(&self) -> &str {
        &self.document
    }

    /// The request body for one event: `args` holds the value of each of
    /// the query field's configured arguments.
    pub fn body(&self, args: &Map<String, Value>) -> Bytes {
        let mut variables = self.variables.clone();
        for (arg, var) in &self.key_variables {
            variables.insert(var.clone(), args.get(arg).cloned().unwrap_or(Value::Null));
        }
        let body = serde_json::json!({
            "query": self.document,
            "operationName": OPERATION_NAME,
            "variables": variables,
        });
        Bytes::from(serde_json::to_vec(&body).expect("JSON values serialise"))
    }
}

/// The fragments and variables a selection refers to, transitively.
#[derive(Default)]
struct Uses {
    fragments: BTreeSet<String>,
    variables: BTreeSet<String>,
}

impl Uses {
    fn set(&mut self, set: &Sel, fragments: &HashMap<&str, &Frag>) {
        for item in &set.items {
            self.selection(item, fragments);
        }
    }

    fn selection(&mut self, sel: &Selection<'static, String>, fragments: &HashMap<&str, &Frag>) {
        match sel {
            Selection::Field(f) => {
                for (_, v) in &f.arguments {
                    self.value(v);
                }
                self.directives(&f.directives);
                self.set(&f.selection_set, fragments);
            }
            Selection::InlineFragment(i) => {
                self.directives(&i.directives);
                self.set(&i.selection_set, fragments);
            }
            Selection::FragmentSpread(s) => {
                self.directives(&s.directives);
                if self.fragments.insert(s.fragment_name.clone())
                    && let Some(f) = fragments.get(s.fragment_name.as_str())
                {
                    self.directives(&f.directives);
                    self.set(&f.selection_set, fragments);
                }
            }
        }
    }

    fn directives(&mut self, dirs: &[graphql_parser::query::Directive<'static, String>]) {
        for d in dirs {
            for (_, v) in &d.arguments {
                self.value(v);
            }
        }
    }

    fn value(&mut self, v: &AstValue<'static, String>) {
        match v {
            AstValue::Variable(n) => {
                self.variables.insert(n.clone());
            }
            AstValue::List(items) => items.iter().for_each(|i| self.value(i)),
            AstValue::Object(fields) => fields.values().for_each(|i| self.value(i)),
            _ => {}
        }
    }
}

/// Adds `__typename` to every selection set with fields (a harmless extra
/// key: projection only writes the fields the client selected).
fn with_typename(set: &mut SelectionSet<'static, String>) {
    if set.items.is_empty() {
        return;
    }
    for item in &mut set.items {
        match item {
            Selection::Field(f) => with_typename(&mut f.selection_set),
            Selection::InlineFragment(i) => with_typename(&mut i.selection_set),
            Selection::FragmentSpread(_) => {}
        }
    }
    set.items.insert(
        0,
        Selection::Field(Field {
            position: Pos::default(),
            alias: None,
            name: "__typename".to_owned(),
            arguments: Vec::new(),
            directives: Vec::new(),
            selection_set: SelectionSet {
                span: (Pos::default(), Pos::default()),
                items: Vec::new(),
            },
        }),
    );
}

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

impl PreparedSubscription {
    /// The upstream query of this subscription, when its field is enriched.
    pub fn fetch(&self) -> Option<&FetchQuery> {
        self.fetch.as_deref()
    }

    /// The `next` payload for an event completed by `response`, or `None`
    /// when this subscriber must not receive the event (`on_null = "skip"`
    /// and the upstream answered null or forbidden).
    pub fn complete(
        &self,
        response: FetchResponse<'_>,
        payload: &Value,
        policy: Policy,
    ) -> Option<Bytes> {
        let root = &self.root;
        let object = match response {
            FetchResponse::Forbidden => return self.on_null(policy, Vec::new()),
            FetchResponse::Failed(why) => return Some(self.unavailable(payload, why)),
            FetchResponse::Response(v) => match v.as_object() {
                Some(o) if o.contains_key("data") || o.contains_key("errors") => o,
                _ => {
                    return Some(
                        self.unavailable(payload, "the upstream sent no GraphQL response"),
                    );
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
            return self.on_null(policy, errors);
        }
        // No `data` at all: the upstream refused the request before running
        // it (e.g. the query does not fit its schema). Nothing says the
        // entity is null, so the subscriber is told instead of skipped.
        let Some(data) = object.get("data") else {
            let first = errors.first().map_or("no data", |e| e.message.as_str());
            return Some(
                self.unavailable(payload, &format!("the upstream refused the query: {first}")),
            );
        };
        let Some(data) = data.get(&root.key).filter(|d| !d.is_null()) else {
            return self.on_null(policy, errors);
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

    fn on_null(&self, policy: Policy, errors: Vec<GraphQLError>) -> Option<Bytes> {
        match policy.on_null {
            OnNull::Skip => None,
            OnNull::Deliver => Some(Bytes::from(project::execute_with(
                &self.root,
                &Value::Null,
                Lookup::ResponseKey,
                errors,
            ))),
        }
    }

    /// The payload as it is, with an error saying why it is not completed.
    fn unavailable(&self, payload: &Value, why: &str) -> Bytes {
        let mut e = GraphQLError::new(format!(
            "cannot complete the event from the upstream: {why}"
        ))
        .with_code("UPSTREAM_UNAVAILABLE");
        e.path = vec![Value::String(self.root.key.clone())];
        Bytes::from(project::execute_with(
            &self.root,
            payload,
            Lookup::FieldName,
            vec![e],
        ))
    }
}

/// An upstream error as the client gets it: its own query's locations mean
/// nothing to the client and are left out.
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
    use crate::graphql::Prepared;
    use serde_json::json;

    const UPSTREAM: &str = r#"
        type Query { incident(id: ID!): Incident  other: Int  many(ids: [ID!]!): [Incident] }
        type Incident { id: ID! title: String severity: Severity! owner: User tags: [String!]! last: Activity }
        type User { id: ID! name: String }
        union Activity = Comment | Change
        type Comment { text: String }
        type Change { from: String to: String }
        enum Severity { P1 P2 }
    "#;
    const LOCAL: &str =
        "type Subscription { incidentUpdated(id: ID): Incident  counter: Int  list: [Incident] }";

    fn schema() -> Schema {
        Schema::build(LOCAL, Some(UPSTREAM)).unwrap()
    }

    fn resolve(query_field: &str, args: &[(&str, &str)]) -> ResolveConfig {
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

    fn prepare(q: &str, vars: Value) -> std::sync::Arc<PreparedSubscription> {
        let s = schema();
        let r = resolve("incident", &[("id", "event.id")]);
        let vars: Map<String, Value> = serde_json::from_value(vars).unwrap();
        match s.prepare_with(q, None, &vars, &|f| (f == "incidentUpdated").then_some(&r)) {
            Ok(Prepared::Subscription(p)) => p,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn targets_are_checked_against_the_schema() {
        let s = schema();
        let ok = s.resolve_target(
            "incidentUpdated",
            &resolve("incident", &[("id", "event.id")]),
        );
        assert!(ok.is_ok(), "{ok:?}");
        let err =
            |r: ResolveConfig, field: &str| s.resolve_target(field, &r).unwrap_err().to_string();
        let e = err(resolve("nope", &[]), "incidentUpdated");
        assert!(
            e.contains("resolve.query_field \"nope\"") && e.contains("incident, other"),
            "{e}"
        );
        let e = err(resolve("other", &[]), "incidentUpdated");
        assert!(
            e.contains("returns Int but the subscription field returns Incident"),
            "{e}"
        );
        let e = err(
            resolve("incident", &[("id", "event.id"), ("x", "1")]),
            "incidentUpdated",
        );
        assert!(
            e.contains("resolve.args.x is not an argument of Query.incident"),
            "{e}"
        );
        let e = err(resolve("incident", &[]), "incidentUpdated");
        assert!(e.contains("no expression for \"id\""), "{e}");
        let e = err(
            resolve("incident", &[("id", "event.severity")]),
            "incidentUpdated",
        );
        assert!(
            e.contains("is a Severity but Query.incident(id:) takes ID!"),
            "{e}"
        );
        let e = err(resolve("many", &[("ids", "[event.id]")]), "incidentUpdated");
        assert!(e.contains("returns [Incident] but"), "{e}");
        assert!(
            s.resolve_target("list", &resolve("many", &[("ids", "[event.id]")]))
                .is_ok()
        );
        let pending = Schema::build("type Subscription { x: Int }", None).unwrap();
        assert!(matches!(
            pending.resolve_target("x", &resolve("incident", &[])),
            Err(e) if matches!(*e, ResolveSchemaError::NotLoaded { .. })
        ));
    }

    #[test]
    fn the_query_keeps_the_clients_selection() {
        let p = prepare(
            r#"subscription S($full: Boolean!, $n: ID) {
                 inc: incidentUpdated(id: $n) { id ...Owner @include(if: $full) t: title last { ... on Comment { text } } }
                 ...Root
               }
               fragment Owner on Incident { owner { name } }
               fragment Root on Subscription { inc: incidentUpdated(id: $n) { severity } }"#,
            json!({"full": true, "n": "7"}),
        );
        let f = p.fetch().unwrap();
        let doc = f.document();
        let parsed = graphql_parser::parse_query::<String>(doc).expect("the query parses");
        assert_eq!(parsed.definitions.len(), 2, "{doc}");
        assert!(
            doc.contains("query SubcarResolve($full: Boolean!, $subcar_id: ID!)"),
            "{doc}"
        );
        assert!(doc.contains("inc: incident(id: $subcar_id)"), "{doc}");
        assert!(doc.contains("...Owner @include(if: $full)"), "{doc}");
        assert!(doc.contains("fragment Owner on Incident"), "{doc}");
        // The root field's own arguments and the fragments on Subscription
        // are the subscription's, not the query's.
        assert!(doc.contains("severity"), "{doc}");
        assert!(!doc.contains("Root") && !doc.contains("$n"), "{doc}");
        let body: Value =
            serde_json::from_slice(&f.body(&serde_json::from_value(json!({"id": "42"})).unwrap()))
                .unwrap();
        assert_eq!(body["variables"], json!({"full": true, "subcar_id": "42"}));
        assert_eq!(body["operationName"], "SubcarResolve");
    }

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
