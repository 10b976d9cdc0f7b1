//! Input coercion (graphql-js `coerceVariableValues`, `coerceInputValue`,
//! `valueFromAST`, `getArgumentValues`): variables from JSON, arguments from
//! literals, with graphql-js's error messages.
//!
//! Spec: <https://spec.graphql.org/October2021/#sec-Coercing-Variable-Values>,
//! <https://spec.graphql.org/October2021/#sec-Coercing-Field-Arguments>, and the
//! "Input Coercion" paragraph of each type:
//! <https://spec.graphql.org/October2021/#sec-Int.Input-Coercion>,
//! <https://spec.graphql.org/October2021/#sec-Float.Input-Coercion>,
//! <https://spec.graphql.org/October2021/#sec-String.Input-Coercion>,
//! <https://spec.graphql.org/October2021/#sec-Boolean.Input-Coercion>,
//! <https://spec.graphql.org/October2021/#sec-ID.Input-Coercion>,
//! <https://spec.graphql.org/October2021/#sec-Enums.Input-Coercion>,
//! <https://spec.graphql.org/October2021/#sec-Input-Objects.Input-Coercion>,
//! <https://spec.graphql.org/October2021/#sec-List.Input-Coercion>,
//! <https://spec.graphql.org/October2021/#sec-Non-Null.Input-Coercion>.
//!
//! Throughout, a value that is absent and one that is explicitly `null` are
//! different: only an absent one takes the default.

use graphql_parser::Pos;
use graphql_parser::query::{Value as AstValue, VariableDefinition};
use serde_json::{Map, Number, Value};

use super::error::GraphQLError;
use super::error::error;
use super::schema::{InputValueDef, Schema, TypeKind, TypeRef};
use super::value::{did_you_mean, inspect, js_number_of, print_ast_value, suggestion_list};

/// Coerces the request's `variables` against the operation's definitions
/// (<https://spec.graphql.org/October2021/#sec-Coercing-Variable-Values>).
/// Every variable is checked and all errors are returned together; a
/// variable left out of the map is one the caller treats as "not provided".
pub(crate) fn coerce_variables(
    schema: &Schema,
    defs: &[VariableDefinition<'static, String>],
    inputs: &Map<String, Value>,
) -> Result<Map<String, Value>, Vec<GraphQLError>> {
    let mut out = Map::new();
    let mut errors = Vec::new();
    for def in defs {
        let ty = TypeRef::from_ast(&def.var_type);
        let name = &def.name;
        // Validation already refuses this; it is checked again, as
        // graphql-js does, so that coercion holds on its own.
        if !schema.get(ty.named()).is_some_and(|t| t.is_input()) {
            errors.push(error(
                format!("Variable \"${name}\" expected value of type \"{ty}\" which cannot be used as an input type."),
                &[def.position],
            ));
            continue;
        }
        let Some(value) = inputs.get(name) else {
            // Absent: the default, written as a literal, is coerced with no
            // variables (defaults are constant). With neither a value nor a
            // default, a nullable variable stays absent, not null.
            if let Some(d) = &def.default_value {
                if let Some(v) = value_from_ast(schema, d, &ty, None) {
                    out.insert(name.clone(), v);
                }
            } else if ty.is_non_null() {
                errors.push(error(
                    format!("Variable \"${name}\" of required type \"{ty}\" was not provided."),
                    &[def.position],
                ));
            }
            continue;
        };
        // An explicit null beats the default; only a non-null type refuses it.
        if value.is_null() && ty.is_non_null() {
            errors.push(error(
                format!("Variable \"${name}\" of non-null type \"{ty}\" must not be null."),
                &[def.position],
            ));
            continue;
        }
        let mut path = Vec::new();
        let mut problems = Vec::new();
        let coerced = coerce_input(schema, value, &ty, &mut path, &mut problems);
        if problems.is_empty() {
            out.insert(name.clone(), coerced.unwrap_or(Value::Null));
        }
        for p in problems {
            let mut prefix = format!(
                "Variable \"${name}\" got invalid value {}",
                inspect(&p.value)
            );
            if !p.path.is_empty() {
                prefix.push_str(&format!(" at \"{name}{}\"", print_path(&p.path)));
            }
            errors.push(error(format!("{prefix}; {}", p.message), &[def.position]));
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn print_path(path: &[Value]) -> String {
    path.iter()
        .map(|k| match k {
            Value::Number(n) => format!("[{n}]"),
            Value::String(s) => format!(".{s}"),
            _ => String::new(),
        })
        .collect()
}

struct Problem {
    path: Vec<Value>,
    value: Value,
    message: String,
}

/// `coerceInputValue`: a JSON input against an input type. A failing part
/// records a [`Problem`] and yields `None` (put as `null` in its parent) so
/// that the walk goes on and every problem is reported; the caller drops the
/// whole value if any was found.
fn coerce_input(
    schema: &Schema,
    v: &Value,
    ty: &TypeRef,
    path: &mut Vec<Value>,
    problems: &mut Vec<Problem>,
) -> Option<Value> {
    let mut fail = |message: String| {
        problems.push(Problem {
            path: path.clone(),
            value: v.clone(),
            message,
        });
        None
    };
    match ty {
        TypeRef::NonNull(inner) => {
            if v.is_null() {
                return fail(format!(
                    "Expected non-nullable type \"{ty}\" not to be null."
                ));
            }
            coerce_input(schema, v, inner, path, problems)
        }
        _ if v.is_null() => Some(Value::Null),
        TypeRef::List(item) => match v {
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, it) in items.iter().enumerate() {
                    path.push(Value::from(i));
                    out.push(coerce_input(schema, it, item, path, problems).unwrap_or(Value::Null));
                    path.pop();
                }
                Some(Value::Array(out))
            }
            // A single value where a list is expected is a list of one
            // (<https://spec.graphql.org/October2021/#sec-List.Input-Coercion>).
            _ => Some(Value::Array(vec![
                coerce_input(schema, v, item, path, problems).unwrap_or(Value::Null),
            ])),
        },
        TypeRef::Named(name) => {
            let t = schema.get(name)?;
            match &t.kind {
                TypeKind::InputObject { fields } => {
                    let Value::Object(given) = v else {
                        return fail(format!("Expected type \"{name}\" to be an object."));
                    };
                    // <https://spec.graphql.org/October2021/#sec-Input-Objects.Input-Coercion>:
                    // an absent field takes its default or, if non-null
                    // without one, is an error; an explicit null is kept as
                    // given; a field the type does not define is an error.
                    let mut out = Map::new();
                    for f in fields {
                        match given.get(&f.name) {
                            None => {
                                if let Some(d) = &f.default {
                                    if let Some(dv) = value_from_ast(schema, d, &f.ty, None) {
                                        out.insert(f.name.clone(), dv);
                                    }
                                } else if f.ty.is_non_null() {
                                    problems.push(Problem {
                                        path: path.clone(),
                                        value: v.clone(),
                                        message: format!("Field \"{}\" of required type \"{}\" was not provided.", f.name, f.ty),
                                    });
                                }
                            }
                            Some(fv) => {
                                path.push(Value::String(f.name.clone()));
                                let c = coerce_input(schema, fv, &f.ty, path, problems);
                                path.pop();
                                out.insert(f.name.clone(), c.unwrap_or(Value::Null));
                            }
                        }
                    }
                    for k in given.keys() {
                        if !fields.iter().any(|f| &f.name == k) {
                            let s = suggestion_list(k, fields.iter().map(|f| f.name.as_str()));
                            problems.push(Problem {
                                path: path.clone(),
                                value: v.clone(),
                                message: format!(
                                    "Field \"{k}\" is not defined by type \"{name}\".{}",
                                    did_you_mean(None, &s)
                                ),
                            });
                        }
                    }
                    Some(Value::Object(out))
                }
                // JSON has no enum token: a variable's enum value is the
                // value's name as a string
                // (<https://spec.graphql.org/October2021/#sec-Enums.Input-Coercion>).
                TypeKind::Enum { values } => {
                    let hint = |s: &str| {
                        did_you_mean(
                            Some("the enum value"),
                            &suggestion_list(s, values.iter().map(|v| v.name.as_str())),
                        )
                    };
                    match v {
                        Value::String(s) if values.iter().any(|x| &x.name == s) => Some(v.clone()),
                        Value::String(s) => fail(format!(
                            "Value \"{s}\" does not exist in \"{name}\" enum.{}",
                            hint(s)
                        )),
                        _ => {
                            let shown = inspect(v);
                            fail(format!(
                                "Enum \"{name}\" cannot represent non-string value: {shown}.{}",
                                hint(&shown)
                            ))
                        }
                    }
                }
                TypeKind::Scalar { .. } => match parse_scalar_value(name, v) {
                    Ok(c) => Some(c),
                    Err(m) => fail(m),
                },
                _ => None,
            }
        }
    }
}

fn as_js_integer(n: &Number) -> Option<f64> {
    let f = n.as_f64()?;
    (f.fract() == 0.0 && f.is_finite()).then_some(f)
}

/// `parseValue` of the built-in scalars; custom scalars pass through.
///
/// JSON numbers are read as JavaScript reads them, as graphql-js does: a
/// number with no fraction, such as `1.0` or `1e3`, is an integer, so it is a
/// valid `Int` (in 32-bit range,
/// <https://spec.graphql.org/October2021/#sec-Int.Input-Coercion>) and a valid `ID`.
/// `Float` takes any number, integers too
/// (<https://spec.graphql.org/October2021/#sec-Float.Input-Coercion>). An `ID` given as
/// an integer becomes its string, written as JavaScript would
/// (<https://spec.graphql.org/October2021/#sec-ID.Input-Coercion>). `String` and
/// `Boolean` take only their own JSON kind: no conversions.
///
/// Custom scalars are passed on unchanged: their rules are the upstream's,
/// and subcar only forwards the value to it.
fn parse_scalar_value(scalar: &str, v: &Value) -> Result<Value, String> {
    match (scalar, v) {
        ("Int", Value::Number(n)) => match as_js_integer(n) {
            Some(f) if (i32::MIN as f64..=i32::MAX as f64).contains(&f) => {
                Ok(Value::from(f as i64))
            }
            Some(_) => Err(format!(
                "Int cannot represent non 32-bit signed integer value: {}",
                js_number_of(n)
            )),
            None => Err(format!(
                "Int cannot represent non-integer value: {}",
                inspect(v)
            )),
        },
        ("Int", _) => Err(format!(
            "Int cannot represent non-integer value: {}",
            inspect(v)
        )),
        ("Float", Value::Number(_)) => Ok(v.clone()),
        ("Float", _) => Err(format!(
            "Float cannot represent non numeric value: {}",
            inspect(v)
        )),
        ("String", Value::String(_)) => Ok(v.clone()),
        ("String", _) => Err(format!(
            "String cannot represent a non string value: {}",
            inspect(v)
        )),
        ("Boolean", Value::Bool(_)) => Ok(v.clone()),
        ("Boolean", _) => Err(format!(
            "Boolean cannot represent a non boolean value: {}",
            inspect(v)
        )),
        ("ID", Value::String(_)) => Ok(v.clone()),
        ("ID", Value::Number(n)) if as_js_integer(n).is_some() => {
            Ok(Value::String(js_number_of(n)))
        }
        ("ID", _) => Err(format!("ID cannot represent value: {}", inspect(v))),
        _ => Ok(v.clone()),
    }
}

fn is_missing_variable(v: &AstValue<'static, String>, vars: Option<&Map<String, Value>>) -> bool {
    matches!(v, AstValue::Variable(n) if vars.is_none_or(|m| !m.contains_key(n)))
}

/// `valueFromAST`: a literal against an input type; `None` when invalid.
///
/// `vars` are already coerced, so a variable's value is used as it is. A
/// variable with no runtime value makes the whole value invalid at the top,
/// is `null` as a list item, and leaves an input object field absent, so the
/// field's default applies
/// (<https://spec.graphql.org/October2021/#sec-Input-Objects.Input-Coercion>).
pub(crate) fn value_from_ast(
    schema: &Schema,
    v: &AstValue<'static, String>,
    ty: &TypeRef,
    vars: Option<&Map<String, Value>>,
) -> Option<Value> {
    if let AstValue::Variable(n) = v {
        let value = vars?.get(n)?;
        if value.is_null() && ty.is_non_null() {
            return None;
        }
        return Some(value.clone());
    }
    match ty {
        TypeRef::NonNull(inner) => {
            if matches!(v, AstValue::Null) {
                return None;
            }
            value_from_ast(schema, v, inner, vars)
        }
        _ if matches!(v, AstValue::Null) => Some(Value::Null),
        TypeRef::List(item) => match v {
            AstValue::List(items) => {
                let mut out = Vec::with_capacity(items.len());
                for it in items {
                    if is_missing_variable(it, vars) {
                        if item.is_non_null() {
                            return None;
                        }
                        out.push(Value::Null);
                    } else {
                        out.push(value_from_ast(schema, it, item, vars)?);
                    }
                }
                Some(Value::Array(out))
            }
            _ => Some(Value::Array(vec![value_from_ast(schema, v, item, vars)?])),
        },
        TypeRef::Named(name) => {
            let t = schema.get(name)?;
            match (&t.kind, v) {
                (TypeKind::InputObject { fields }, AstValue::Object(given)) => {
                    let mut out = Map::new();
                    for f in fields {
                        match given.get(&f.name) {
                            Some(fv) if !is_missing_variable(fv, vars) => {
                                out.insert(
                                    f.name.clone(),
                                    value_from_ast(schema, fv, &f.ty, vars)?,
                                );
                            }
                            _ => {
                                if let Some(d) = &f.default {
                                    out.insert(
                                        f.name.clone(),
                                        value_from_ast(schema, d, &f.ty, None)?,
                                    );
                                } else if f.ty.is_non_null() {
                                    return None;
                                }
                            }
                        }
                    }
                    Some(Value::Object(out))
                }
                (TypeKind::InputObject { .. }, _) => None,
                // Only an enum token is an enum literal: `"RED"` (a string)
                // is not `RED` (<https://spec.graphql.org/October2021/#sec-Enums.Input-Coercion>).
                (TypeKind::Enum { values }, AstValue::Enum(e)) => values
                    .iter()
                    .any(|x| &x.name == e)
                    .then(|| Value::String(e.clone())),
                (TypeKind::Enum { .. }, _) => None,
                (TypeKind::Scalar { .. }, _) => parse_scalar_literal(name, v, vars),
                _ => None,
            }
        }
    }
}

/// `parseLiteral` of the built-in scalars; custom scalars take the literal
/// as plain JSON (`valueFromASTUntyped`).
///
/// Literals keep their token kind, unlike JSON: an `Int` must be an integer
/// token within 32 bits, a `Float` takes an integer or float token, and an
/// `ID` a string or integer token (made a string). See the type sections
/// linked in the module doc.
fn parse_scalar_literal(
    scalar: &str,
    v: &AstValue<'static, String>,
    vars: Option<&Map<String, Value>>,
) -> Option<Value> {
    match (scalar, v) {
        ("Int", AstValue::Int(n)) => n
            .as_i64()
            .filter(|i| i32::try_from(*i).is_ok())
            .map(Value::from),
        ("Float", AstValue::Int(n)) => n.as_i64().map(Value::from),
        ("Float", AstValue::Float(f)) => Number::from_f64(*f).map(Value::Number),
        ("String", AstValue::String(s)) => Some(Value::String(s.clone())),
        ("Boolean", AstValue::Boolean(b)) => Some(Value::Bool(*b)),
        ("ID", AstValue::String(s)) => Some(Value::String(s.clone())),
        ("ID", AstValue::Int(n)) => n.as_i64().map(|i| Value::String(i.to_string())),
        ("Int" | "Float" | "String" | "Boolean" | "ID", _) => None,
        _ => Some(untyped(v, vars)),
    }
}

pub(crate) fn untyped(v: &AstValue<'static, String>, vars: Option<&Map<String, Value>>) -> Value {
    match v {
        AstValue::Variable(n) => vars.and_then(|m| m.get(n)).cloned().unwrap_or(Value::Null),
        AstValue::Int(n) => n.as_i64().map(Value::from).unwrap_or(Value::Null),
        AstValue::Float(f) => Number::from_f64(*f)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        AstValue::String(s) | AstValue::Enum(s) => Value::String(s.clone()),
        AstValue::Boolean(b) => Value::Bool(*b),
        AstValue::Null => Value::Null,
        AstValue::List(items) => Value::Array(items.iter().map(|i| untyped(i, vars)).collect()),
        AstValue::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, i)| (k.clone(), untyped(i, vars)))
                .collect(),
        ),
    }
}

/// `getArgumentValues`: the coerced arguments of a field or directive
/// (<https://spec.graphql.org/October2021/#sec-Coercing-Field-Arguments>).
/// An argument given as a variable that has no runtime value counts as
/// absent, so the argument's own default applies; the first problem ends
/// the call, as in graphql-js.
pub(crate) fn argument_values(
    schema: &Schema,
    defs: &[InputValueDef],
    args: &[(String, AstValue<'static, String>)],
    vars: &Map<String, Value>,
    at: Pos,
) -> Result<Map<String, Value>, GraphQLError> {
    let mut out = Map::new();
    for def in defs {
        let name = &def.name;
        let ty = &def.ty;
        let default = || {
            def.default
                .as_ref()
                .and_then(|d| value_from_ast(schema, d, ty, None))
        };
        let Some((_, node)) = args.iter().find(|(n, _)| n == name) else {
            if let Some(d) = default() {
                out.insert(name.clone(), d);
            } else if ty.is_non_null() {
                return Err(error(
                    format!("Argument \"{name}\" of required type \"{ty}\" was not provided."),
                    &[at],
                ));
            }
            continue;
        };
        let mut is_null = matches!(node, AstValue::Null);
        if let AstValue::Variable(var) = node {
            match vars.get(var) {
                None => {
                    if let Some(d) = default() {
                        out.insert(name.clone(), d);
                    } else if ty.is_non_null() {
                        return Err(error(
                            format!(
                                "Argument \"{name}\" of required type \"{ty}\" was provided the variable \"${var}\" which was not provided a runtime value."
                            ),
                            &[at],
                        ));
                    }
                    continue;
                }
                Some(v) => is_null = v.is_null(),
            }
        }
        if is_null && ty.is_non_null() {
            return Err(error(
                format!("Argument \"{name}\" of non-null type \"{ty}\" must not be null."),
                &[at],
            ));
        }
        let Some(v) = value_from_ast(schema, node, ty, Some(vars)) else {
            return Err(error(
                format!(
                    "Argument \"{name}\" has invalid value {}.",
                    print_ast_value(node)
                ),
                &[at],
            ));
        };
        out.insert(name.clone(), v);
    }
    Ok(out)
}
