//! Reads the upstream's schema from an introspection result (the answer to
//! [`crate::graphql::INTROSPECTION_QUERY`], as graphql-js `buildClientSchema` does).
//!
//! Spec: <https://spec.graphql.org/October2021/#sec-Schema-Introspection.Schema-Introspection-Schema>.
//! The reader is lenient where a missing part has an obvious meaning (an
//! absent list is empty, an unreadable default is no default) and strict
//! where guessing would change the schema (a nameless type or reference, an
//! unknown kind).

use serde_json::Value;

use super::{
    ConstValue, DirectiveDef, EnumValueDef, FieldDef, InputValueDef, Part, SchemaError, TypeDef,
    TypeKind, TypeRef, TypeSource,
};

fn invalid(message: impl Into<String>) -> SchemaError {
    SchemaError::Invalid {
        source_name: "the upstream introspection result".into(),
        message: message.into(),
    }
}

fn s(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn list<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// A wrapped type is nested `ofType`s, as deep as the introspection query
/// asked for; a reference cut short has no `kind`.
fn type_ref(v: &Value) -> Result<TypeRef, SchemaError> {
    match v.get("kind").and_then(Value::as_str) {
        Some("NON_NULL") => Ok(TypeRef::NonNull(Box::new(type_ref(
            v.get("ofType").unwrap_or(&Value::Null),
        )?))),
        Some("LIST") => Ok(TypeRef::List(Box::new(type_ref(
            v.get("ofType").unwrap_or(&Value::Null),
        )?))),
        Some(_) => s(v, "name")
            .map(TypeRef::Named)
            .ok_or_else(|| invalid("a type reference has no name")),
        None => Err(invalid(
            "a type reference has no kind (is the introspection query deep enough?)",
        )),
    }
}

/// Parses a printed default value back into a literal: introspection gives
/// a default as GraphQL source text, not as JSON
/// (<https://spec.graphql.org/October2021/#sec-The-__InputValue-Type>).
/// It is parsed as the argument of a throwaway query, as graphql-parser
/// reads whole documents only.
fn default_value(text: &str) -> Option<ConstValue> {
    let doc = graphql_parser::parse_query::<String>(&format!("{{ f(a: {text}) }}"))
        .ok()?
        .into_static();
    use graphql_parser::query::{Definition, OperationDefinition, Selection};
    let Some(Definition::Operation(OperationDefinition::SelectionSet(set))) =
        doc.definitions.into_iter().next()
    else {
        return None;
    };
    let Some(Selection::Field(f)) = set.items.into_iter().next() else {
        return None;
    };
    f.arguments.into_iter().next().map(|(_, v)| v)
}

fn deprecation(v: &Value) -> Option<String> {
    (v.get("isDeprecated").and_then(Value::as_bool) == Some(true))
        .then(|| s(v, "deprecationReason").unwrap_or_else(|| "No longer supported".into()))
}

fn input_value(v: &Value) -> Result<InputValueDef, SchemaError> {
    Ok(InputValueDef {
        name: s(v, "name").ok_or_else(|| invalid("an input value has no name"))?,
        description: s(v, "description"),
        ty: type_ref(v.get("type").unwrap_or(&Value::Null))?,
        default: v
            .get("defaultValue")
            .and_then(Value::as_str)
            .and_then(default_value),
        deprecation: deprecation(v),
    })
}

fn field(v: &Value) -> Result<FieldDef, SchemaError> {
    Ok(FieldDef {
        name: s(v, "name").ok_or_else(|| invalid("a field has no name"))?,
        description: s(v, "description"),
        args: list(v, "args")
            .iter()
            .map(input_value)
            .collect::<Result<_, _>>()?,
        ty: type_ref(v.get("type").unwrap_or(&Value::Null))?,
        deprecation: deprecation(v),
    })
}

fn names(v: &Value, key: &str) -> Vec<String> {
    list(v, key).iter().filter_map(|t| s(t, "name")).collect()
}

/// The schema part an introspection result describes.
pub(crate) fn from_introspection(json: &Value) -> Result<Part, SchemaError> {
    let root = json.get("data").unwrap_or(json);
    let schema = root
        .get("__schema")
        .ok_or_else(|| invalid("no __schema in the introspection result"))?;
    let mut part = Part {
        query: schema.get("queryType").and_then(|t| s(t, "name")),
        mutation: schema.get("mutationType").and_then(|t| s(t, "name")),
        subscription: schema.get("subscriptionType").and_then(|t| s(t, "name")),
        description: s(schema, "description"),
        ..Part::default()
    };
    for t in list(schema, "types") {
        let name = s(t, "name").ok_or_else(|| invalid("a type has no name"))?;
        // Built-in scalars and the introspection types are subcar's own
        // copies; the upstream's would be the same by the spec, and a
        // different one must not replace them.
        if name.starts_with("__") || super::builtin::BUILTIN_SCALARS.contains(&name.as_str()) {
            continue;
        }
        let kind = match t.get("kind").and_then(Value::as_str) {
            Some("SCALAR") => TypeKind::Scalar {
                // `specifiedByURL` in the spec; graphql-js 15 said
                // `specifiedByUrl`.
                specified_by: s(t, "specifiedByURL").or_else(|| s(t, "specifiedByUrl")),
            },
            Some("OBJECT") => TypeKind::Object {
                interfaces: names(t, "interfaces"),
                fields: list(t, "fields")
                    .iter()
                    .map(field)
                    .collect::<Result<_, _>>()?,
            },
            Some("INTERFACE") => TypeKind::Interface {
                interfaces: names(t, "interfaces"),
                fields: list(t, "fields")
                    .iter()
                    .map(field)
                    .collect::<Result<_, _>>()?,
            },
            Some("UNION") => TypeKind::Union {
                members: names(t, "possibleTypes"),
            },
            Some("ENUM") => TypeKind::Enum {
                values: list(t, "enumValues")
                    .iter()
                    .map(|v| EnumValueDef {
                        name: s(v, "name").unwrap_or_default(),
                        description: s(v, "description"),
                        deprecation: deprecation(v),
                    })
                    .collect(),
            },
            Some("INPUT_OBJECT") => TypeKind::InputObject {
                fields: list(t, "inputFields")
                    .iter()
                    .map(input_value)
                    .collect::<Result<_, _>>()?,
            },
            other => {
                return Err(invalid(format!(
                    "type {name:?} has an unknown kind {other:?}"
                )));
            }
        };
        part.types.push(TypeDef {
            name,
            description: s(t, "description"),
            kind,
            source: TypeSource::Upstream,
        });
    }
    for d in list(schema, "directives") {
        part.directives.push(DirectiveDef {
            name: s(d, "name").ok_or_else(|| invalid("a directive has no name"))?,
            description: s(d, "description"),
            args: list(d, "args")
                .iter()
                .map(input_value)
                .collect::<Result<_, _>>()?,
            locations: list(d, "locations")
                .iter()
                .filter_map(|l| l.as_str().map(str::to_owned))
                .collect(),
            repeatable: d
                .get("isRepeatable")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        });
    }
    Ok(part)
}
