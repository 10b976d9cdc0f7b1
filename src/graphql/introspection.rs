//! Introspection answered from the merged schema, so that GraphiQL, codegen
//! and `getIntrospectionQuery()` see subcar's Subscription root and types
//! beside the upstream's. A query whose root fields are only `__schema`,
//! `__type` and `__typename` is validated and executed here, shaped by the
//! client's own selection set; anything else is the upstream's business.
//!
//! Spec: <https://spec.graphql.org/October2021/#sec-Introspection>,
//! <https://spec.graphql.org/October2021/#sec-Schema-Introspection>,
//! <https://spec.graphql.org/October2021/#sec-Type-Name-Introspection>.
//! The introspection types are graphql-js 16's, a little past that
//! edition: `args` and `inputFields` take `includeDeprecated`, and
//! `__Type.isOneOf` exists (from
//! <https://spec.graphql.org/September2025/#sec-OneOf-Input-Objects>);
//! subcar defines no OneOf input objects, so it is always `false`.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};

use graphql_parser::query::{Field, Selection};
use serde_json::{Map, Value, json};

use super::ast::{Doc, Frag, Sel, op_view};
use super::error::GraphQLError;
use super::plan::Compiler;
use super::schema::builtin::meta_field;
use super::schema::{
    DirectiveDef, EnumValueDef, FieldDef, InputValueDef, Schema, TypeDef, TypeKind, TypeRef,
};
use super::value::print_ast_value;

/// graphql-js `getIntrospectionQuery()` (default options): what subcar
/// sends to learn the upstream's schema.
pub const INTROSPECTION_QUERY: &str = r#"query IntrospectionQuery {
  __schema {
    queryType { name kind }
    mutationType { name kind }
    subscriptionType { name kind }
    types { ...FullType }
    directives { name description locations args { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind
  name
  description
  fields(includeDeprecated: true) {
    name
    description
    args { ...InputValue }
    type { ...TypeRef }
    isDeprecated
    deprecationReason
  }
  inputFields { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue {
  name
  description
  type { ...TypeRef }
  defaultValue
}
fragment TypeRef on __Type {
  kind
  name
  ofType { kind name ofType { kind name ofType { kind name ofType { kind name
    ofType { kind name ofType { kind name ofType { kind name ofType { kind name
      ofType { kind name } } } } } } } } }
}
"#;

/// Answers `query` from the merged schema when the selected operation is a
/// query whose root fields are only introspection fields: `Some` response
/// (`{"data":…}`, or `{"errors":[…]}` when invalid). `None` means "not an
/// introspection-only query": forward it to the upstream.
pub fn execute(
    schema: &Schema,
    query: &str,
    operation_name: Option<&str>,
    variables: &Map<String, Value>,
) -> Option<Value> {
    let refuse = |e: GraphQLError| Some(json!({ "errors": [e] }));
    if let Err(e) = super::document::prescan(query, &schema.limits) {
        return refuse(e);
    }
    // A syntax error is the upstream's to answer, in its own words.
    let doc: Doc = graphql_parser::parse_query::<String>(query)
        .ok()?
        .into_static();
    if let Err(e) = super::document::structure(&doc, &schema.limits) {
        return refuse(e);
    }
    if !schema.introspection && super::document::mentions_introspection(&doc) {
        return refuse(super::document::introspection_disabled());
    }
    // Only a query can be introspection-only; a mutation or subscription,
    // even one selecting just `__typename`, is not answered here.
    let op = super::ast::select_operation(&doc, operation_name).ok()?;
    let view = op_view(op);
    if view.kind != "query" {
        return None;
    }
    let query_type = schema.get(schema.query.as_deref()?)?;
    let fragments = super::ast::fragments(&doc);
    if !only_introspection(view.selection_set, &fragments, &mut HashSet::new()) {
        return None;
    }
    let errors = super::validate::validate(schema, &doc, query);
    if !errors.is_empty() {
        return Some(json!({ "errors": errors }));
    }
    let vars = match super::coerce::coerce_variables(schema, view.vars, variables) {
        Ok(v) => v,
        Err(errors) => return Some(json!({ "errors": errors })),
    };
    let exec = Exec {
        schema,
        compiler: Compiler::new(schema, &fragments, &vars),
        vars: &vars,
        budget: Cell::new(schema.limits.max_introspection_bytes),
    };
    let data = exec.selection(Obj::Root(query_type), &[view.selection_set]);
    if exec.budget.get() == 0 {
        let limit = schema.limits.max_introspection_bytes;
        return refuse(super::document::too_complex(
            "max_introspection_bytes",
            format!(
                "The introspection response would exceed {limit} bytes (limits.document.max_introspection_bytes)."
            ),
        ));
    }
    Some(json!({ "data": data }))
}

/// Whether every root field of `set` (through fragments, each followed
/// once) is an introspection field. One ordinary field sends the whole
/// query upstream: subcar does not split a query, so the upstream then
/// answers its introspection fields from its own schema.
fn only_introspection<'d>(
    set: &'d Sel,
    fragments: &HashMap<&str, &'d Frag>,
    visited: &mut HashSet<&'d str>,
) -> bool {
    set.items.iter().all(|s| match s {
        Selection::Field(f) => f.name.starts_with("__"),
        Selection::InlineFragment(i) => only_introspection(&i.selection_set, fragments, visited),
        Selection::FragmentSpread(sp) => {
            if !visited.insert(sp.fragment_name.as_str()) {
                return true;
            }
            fragments
                .get(sp.fragment_name.as_str())
                .is_some_and(|f| only_introspection(&f.selection_set, fragments, visited))
        }
    })
}

#[derive(Clone, Copy)]
enum Obj<'s> {
    Root(&'s TypeDef),
    Schema,
    Named(&'s TypeDef),
    Wrapped(&'s TypeRef),
    Field(&'s FieldDef),
    Input(&'s InputValueDef),
    Enum(&'s EnumValueDef),
    Directive(&'s DirectiveDef),
}

enum Out<'s> {
    Value(Value),
    Obj(Obj<'s>),
    List(Vec<Out<'s>>),
}

struct Exec<'s, 'a> {
    schema: &'s Schema,
    compiler: Compiler<'a>,
    vars: &'a Map<String, Value>,
    /// Bytes the response may still take, estimated as it is built; at 0
    /// the execution stops producing values (the answer is then an error).
    /// A subcar safety bound (`limits.document.max_introspection_bytes`):
    /// nested selections such as `types { fields { type { fields … } } }`
    /// grow the answer multiplicatively while the query stays small.
    budget: Cell<usize>,
}

fn opt(s: &Option<String>) -> Out<'static> {
    Out::Value(s.as_ref().map_or(Value::Null, |s| Value::String(s.clone())))
}

fn text(s: &str) -> Out<'static> {
    Out::Value(Value::String(s.to_owned()))
}

impl<'s> Exec<'s, '_> {
    fn type_name(&self, obj: Obj<'s>) -> &'s str {
        match obj {
            Obj::Root(t) => &t.name,
            Obj::Schema => "__Schema",
            Obj::Named(_) | Obj::Wrapped(_) => "__Type",
            Obj::Field(_) => "__Field",
            Obj::Input(_) => "__InputValue",
            Obj::Enum(_) => "__EnumValue",
            Obj::Directive(_) => "__Directive",
        }
    }

    /// Takes `bytes` from the budget; false once it is spent.
    fn spend(&self, bytes: usize) -> bool {
        let left = self.budget.get().saturating_sub(bytes);
        self.budget.set(left);
        left > 0
    }

    fn selection(&self, obj: Obj<'s>, sets: &[&Sel]) -> Value {
        let Some(ty) = self.schema.get(self.type_name(obj)) else {
            return Value::Null;
        };
        let mut out = Map::new();
        for (key, nodes) in self.compiler.collect(ty, sets) {
            // `"key":` and a separator.
            if !self.spend(key.len() + 4) {
                return Value::Null;
            }
            let field = nodes[0];
            let value = if field.name == "__typename" {
                Value::String(ty.name.clone())
            } else {
                let args = self.args(ty, field);
                let sub: Vec<&Sel> = nodes.iter().map(|n| &n.selection_set).collect();
                self.complete(self.resolve(obj, &field.name, &args), &sub)
            };
            out.insert(key.to_owned(), value);
        }
        Value::Object(out)
    }

    fn args(&self, ty: &TypeDef, field: &Field<'static, String>) -> Map<String, Value> {
        let def = meta_field(&field.name).or_else(|| ty.field(&field.name));
        def.and_then(|d| {
            super::coerce::argument_values(
                self.schema,
                &d.args,
                &field.arguments,
                self.vars,
                field.position,
            )
            .ok()
        })
        .unwrap_or_default()
    }

    fn complete(&self, out: Out<'s>, sets: &[&Sel]) -> Value {
        match out {
            Out::Value(v) => {
                let size = match &v {
                    Value::String(s) => s.len() + 2,
                    _ => 5,
                };
                if self.spend(size) { v } else { Value::Null }
            }
            Out::Obj(o) => {
                if self.spend(2) {
                    self.selection(o, sets)
                } else {
                    Value::Null
                }
            }
            Out::List(items) => {
                let mut list = Vec::with_capacity(items.len());
                for i in items {
                    if !self.spend(1) {
                        break;
                    }
                    list.push(self.complete(i, sets));
                }
                Value::Array(list)
            }
        }
    }

    fn type_ref(&self, t: &'s TypeRef) -> Out<'s> {
        match t {
            TypeRef::Named(n) => self.named(n),
            _ => Out::Obj(Obj::Wrapped(t)),
        }
    }

    fn named(&self, name: &str) -> Out<'s> {
        self.schema
            .get(name)
            .map_or(Out::Value(Value::Null), |t| Out::Obj(Obj::Named(t)))
    }

    /// The introspection schema's resolvers
    /// (<https://spec.graphql.org/October2021/#sec-Schema-Introspection.Schema-Introspection-Schema>).
    fn resolve(&self, obj: Obj<'s>, field: &str, args: &Map<String, Value>) -> Out<'s> {
        // Deprecated fields, values and arguments are listed only when asked
        // for (<https://spec.graphql.org/October2021/#sec-Schema-Introspection.Deprecation>).
        let include_deprecated = args
            .get("includeDeprecated")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let keep = |d: &Option<String>| include_deprecated || d.is_none();
        let inputs = |list: &'s [InputValueDef]| {
            Out::List(
                list.iter()
                    .filter(|a| keep(&a.deprecation))
                    .map(|a| Out::Obj(Obj::Input(a)))
                    .collect(),
            )
        };
        let null = Out::Value(Value::Null);
        match (obj, field) {
            (Obj::Root(_), "__schema") => Out::Obj(Obj::Schema),
            // `__type` is nullable
            // (<https://spec.graphql.org/October2021/#sec-Schema-Introspection>): an
            // unknown name is `null`, not an error, as in graphql-js.
            (Obj::Root(_), "__type") => args
                .get("name")
                .and_then(Value::as_str)
                .map_or(null, |n| self.named(n)),
            (Obj::Schema, "description") => opt(&self.schema.description),
            (Obj::Schema, "types") => Out::List(
                self.schema
                    .types
                    .values()
                    .map(|t| Out::Obj(Obj::Named(t)))
                    .collect(),
            ),
            (Obj::Schema, "queryType") => {
                self.schema.query.as_deref().map_or(null, |n| self.named(n))
            }
            (Obj::Schema, "mutationType") => self
                .schema
                .mutation
                .as_deref()
                .map_or(null, |n| self.named(n)),
            (Obj::Schema, "subscriptionType") => self.named(&self.schema.subscription),
            (Obj::Schema, "directives") => Out::List(
                self.schema
                    .directives
                    .iter()
                    .map(|d| Out::Obj(Obj::Directive(d)))
                    .collect(),
            ),
            (Obj::Named(t), _) => self.type_field(t, field, include_deprecated),
            (Obj::Wrapped(t), "kind") => text(if matches!(t, TypeRef::List(_)) {
                "LIST"
            } else {
                "NON_NULL"
            }),
            (Obj::Wrapped(TypeRef::List(inner) | TypeRef::NonNull(inner)), "ofType") => {
                self.type_ref(inner)
            }
            (Obj::Field(f), "name") => text(&f.name),
            (Obj::Field(f), "description") => opt(&f.description),
            (Obj::Field(f), "args") => inputs(&f.args),
            (Obj::Field(f), "type") => self.type_ref(&f.ty),
            (Obj::Field(f), "isDeprecated") => Out::Value(Value::Bool(f.deprecation.is_some())),
            (Obj::Field(f), "deprecationReason") => opt(&f.deprecation),
            (Obj::Input(a), "name") => text(&a.name),
            (Obj::Input(a), "description") => opt(&a.description),
            (Obj::Input(a), "type") => self.type_ref(&a.ty),
            // A default is given as GraphQL source text, not JSON
            // (<https://spec.graphql.org/October2021/#sec-The-__InputValue-Type>).
            (Obj::Input(a), "defaultValue") => a
                .default
                .as_ref()
                .map_or(null, |d| text(&print_ast_value(d))),
            (Obj::Input(a), "isDeprecated") => Out::Value(Value::Bool(a.deprecation.is_some())),
            (Obj::Input(a), "deprecationReason") => opt(&a.deprecation),
            (Obj::Enum(e), "name") => text(&e.name),
            (Obj::Enum(e), "description") => opt(&e.description),
            (Obj::Enum(e), "isDeprecated") => Out::Value(Value::Bool(e.deprecation.is_some())),
            (Obj::Enum(e), "deprecationReason") => opt(&e.deprecation),
            (Obj::Directive(d), "name") => text(&d.name),
            (Obj::Directive(d), "description") => opt(&d.description),
            (Obj::Directive(d), "isRepeatable") => Out::Value(Value::Bool(d.repeatable)),
            (Obj::Directive(d), "locations") => {
                Out::List(d.locations.iter().map(|l| text(l)).collect())
            }
            (Obj::Directive(d), "args") => inputs(&d.args),
            _ => null,
        }
    }

    fn type_field(&self, t: &'s TypeDef, field: &str, include_deprecated: bool) -> Out<'s> {
        let null = Out::Value(Value::Null);
        let keep = |d: &Option<String>| include_deprecated || d.is_none();
        let types = |names: &'s [String]| Out::List(names.iter().map(|n| self.named(n)).collect());
        match (field, &t.kind) {
            ("kind", k) => text(match k {
                TypeKind::Scalar { .. } => "SCALAR",
                TypeKind::Object { .. } => "OBJECT",
                TypeKind::Interface { .. } => "INTERFACE",
                TypeKind::Union { .. } => "UNION",
                TypeKind::Enum { .. } => "ENUM",
                TypeKind::InputObject { .. } => "INPUT_OBJECT",
            }),
            ("name", _) => text(&t.name),
            ("description", _) => opt(&t.description),
            ("specifiedByURL" | "specifiedByUrl", TypeKind::Scalar { specified_by }) => {
                opt(specified_by)
            }
            ("fields", TypeKind::Object { fields, .. } | TypeKind::Interface { fields, .. }) => {
                Out::List(
                    fields
                        .iter()
                        .filter(|f| keep(&f.deprecation))
                        .map(|f| Out::Obj(Obj::Field(f)))
                        .collect(),
                )
            }
            (
                "interfaces",
                TypeKind::Object { interfaces, .. } | TypeKind::Interface { interfaces, .. },
            ) => types(interfaces),
            ("possibleTypes", TypeKind::Union { .. } | TypeKind::Interface { .. }) => Out::List(
                self.schema
                    .possible_types(&t.name)
                    .into_iter()
                    .flatten()
                    .map(|n| self.named(n))
                    .collect(),
            ),
            ("enumValues", TypeKind::Enum { values }) => Out::List(
                values
                    .iter()
                    .filter(|v| keep(&v.deprecation))
                    .map(|v| Out::Obj(Obj::Enum(v)))
                    .collect(),
            ),
            ("inputFields", TypeKind::InputObject { fields }) => Out::List(
                fields
                    .iter()
                    .filter(|f| keep(&f.deprecation))
                    .map(|f| Out::Obj(Obj::Input(f)))
                    .collect(),
            ),
            ("isOneOf", TypeKind::InputObject { .. }) => Out::Value(Value::Bool(false)),
            _ => null,
        }
    }
}
