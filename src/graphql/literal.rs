//! Checking a literal value against an input type (graphql-js
//! `ValuesOfCorrectTypeRule`), collecting the variables it uses and the
//! type each position expects (for `VariablesInAllowedPosition`).
//!
//! Spec: <https://spec.graphql.org/October2021/#sec-Values-of-Correct-Type>,
//! <https://spec.graphql.org/October2021/#sec-Input-Object-Field-Names>,
//! <https://spec.graphql.org/October2021/#sec-Input-Object-Field-Uniqueness>,
//! <https://spec.graphql.org/October2021/#sec-Input-Object-Required-Fields>; the usages feed
//! <https://spec.graphql.org/October2021/#sec-All-Variable-Usages-are-Allowed>.

use graphql_parser::Pos;
use graphql_parser::query::Value as AstValue;

use super::error::GraphQLError;
use super::error::error;
use super::locate::ValueLoc;
use super::schema::{Schema, TypeKind, TypeRef};
use super::value::{did_you_mean, print_ast_value, suggestion_list};

/// One `$variable` in a value, with the type its position expects.
#[derive(Debug, Clone)]
pub(crate) struct VarUsage {
    pub name: String,
    pub expected: Option<TypeRef>,
    pub at: Pos,
    /// The argument or input field has a default value, which lets a
    /// nullable variable stand in a non-null position (see
    /// <https://spec.graphql.org/October2021/#sec-All-Variable-Usages-are-Allowed.Allowing-optional-variables-when-default-values-exist>).
    /// Only the argument or field itself counts: a list item never has one.
    pub location_has_default: bool,
}

/// Records every variable in `v` (written at `at`) with no expected type.
/// Used where the value is already wrong or has no known type: its
/// variables still count as used (so no "never used" error follows), but
/// with no type to check their position against.
pub(crate) fn collect_variables(
    v: &AstValue<'static, String>,
    at: &ValueLoc,
    out: &mut Vec<VarUsage>,
) {
    match v {
        AstValue::Variable(name) => out.push(VarUsage {
            name: name.clone(),
            expected: None,
            at: at.at,
            location_has_default: false,
        }),
        AstValue::List(items) => {
            for (n, i) in items.iter().enumerate() {
                collect_variables(i, at.item(n), out);
            }
        }
        AstValue::Object(fields) => {
            for (k, i) in fields {
                collect_variables(i, at.field_value(k), out);
            }
        }
        _ => {}
    }
}

/// Checks `v` against `ty`, reporting graphql-js's messages where `at`
/// says each part of `v` is.
pub(crate) fn check_literal(
    schema: &Schema,
    ty: &TypeRef,
    v: &AstValue<'static, String>,
    at: &ValueLoc,
    errors: &mut Vec<GraphQLError>,
    usages: &mut Vec<VarUsage>,
    location_has_default: bool,
) {
    // A variable's type is checked against its definition later, per
    // operation, once every usage is known.
    if let AstValue::Variable(name) = v {
        usages.push(VarUsage {
            name: name.clone(),
            expected: Some(ty.clone()),
            at: at.at,
            location_has_default,
        });
        return;
    }
    // graphql-js prints numbers as written.
    let printed = || at.raw.clone().unwrap_or_else(|| print_ast_value(v));
    let expected = |errors: &mut Vec<GraphQLError>| {
        errors.push(error(
            format!("Expected value of type \"{ty}\", found {}.", printed()),
            &[at.at],
        ));
    };
    match (ty, v) {
        (TypeRef::NonNull(_), AstValue::Null) => expected(errors),
        (TypeRef::NonNull(inner), _) => check_literal(schema, inner, v, at, errors, usages, false),
        (_, AstValue::Null) => {}
        (TypeRef::List(item), AstValue::List(items)) => {
            for (n, i) in items.iter().enumerate() {
                check_literal(schema, item, i, at.item(n), errors, usages, false);
            }
        }
        // A single value is accepted where a list is expected
        // (<https://spec.graphql.org/October2021/#sec-List.Input-Coercion>).
        (TypeRef::List(item), _) => check_literal(schema, item, v, at, errors, usages, false),
        (TypeRef::Named(name), _) => {
            // An unknown type is reported where it is named, not here.
            let Some(t) = schema.get(name) else { return };
            match (&t.kind, v) {
                (TypeKind::InputObject { fields }, AstValue::Object(given)) => {
                    for (k, first, again) in at.repeated_fields() {
                        errors.push(error(
                            format!("There can be only one input field named \"{k}\"."),
                            &[first, again],
                        ));
                    }
                    for f in fields {
                        if f.ty.is_non_null() && f.default.is_none() && !given.contains_key(&f.name)
                        {
                            errors.push(error(
                                format!(
                                    "Field \"{}.{}\" of required type \"{}\" was not provided.",
                                    t.name, f.name, f.ty
                                ),
                                &[at.at],
                            ));
                        }
                    }
                    for (k, fv) in given {
                        match fields.iter().find(|f| &f.name == k) {
                            Some(f) => check_literal(
                                schema,
                                &f.ty,
                                fv,
                                at.field_value(k),
                                errors,
                                usages,
                                f.default.is_some(),
                            ),
                            None => {
                                let s = suggestion_list(k, fields.iter().map(|f| f.name.as_str()));
                                errors.push(error(
                                    format!(
                                        "Field \"{k}\" is not defined by type \"{}\".{}",
                                        t.name,
                                        did_you_mean(None, &s)
                                    ),
                                    &[at.field_at(k)],
                                ));
                                collect_variables(fv, at.field_value(k), usages);
                            }
                        }
                    }
                }
                (TypeKind::InputObject { .. }, _) => {
                    collect_variables(v, at, usages);
                    expected(errors)
                }
                (TypeKind::Enum { values }, _) => {
                    let printed = printed();
                    let s = suggestion_list(&printed, values.iter().map(|v| v.name.as_str()));
                    let hint = did_you_mean(Some("the enum value"), &s);
                    match v {
                        AstValue::Enum(e) if values.iter().any(|x| &x.name == e) => {}
                        AstValue::Enum(_) => errors.push(error(
                            format!(
                                "Value \"{printed}\" does not exist in \"{}\" enum.{hint}",
                                t.name
                            ),
                            &[at.at],
                        )),
                        _ => {
                            collect_variables(v, at, usages);
                            errors.push(error(
                                format!(
                                    "Enum \"{}\" cannot represent non-enum value: {printed}.{hint}",
                                    t.name
                                ),
                                &[at.at],
                            ))
                        }
                    }
                }
                (TypeKind::Scalar { .. }, _) => {
                    collect_variables(v, at, usages);
                    if let Some(msg) = scalar_literal_error(&t.name, v, &printed()) {
                        errors.push(error(msg, &[at.at]));
                    }
                }
                _ => {}
            }
        }
    }
}

/// The error graphql-js's built-in scalars' `parseLiteral` throws, if any.
/// The same token rules as `coerce::parse_scalar_literal`, kept apart
/// because validation needs the message and coercion the value. Custom
/// scalars accept any literal: only the upstream knows their rules.
fn scalar_literal_error(
    scalar: &str,
    v: &AstValue<'static, String>,
    printed: &str,
) -> Option<String> {
    let printed = || printed;
    match (scalar, v) {
        ("Int", AstValue::Int(n)) => match n.as_i64() {
            Some(i) if i32::try_from(i).is_ok() => None,
            _ => Some(format!(
                "Int cannot represent non 32-bit signed integer value: {}",
                printed()
            )),
        },
        ("Int", _) => Some(format!(
            "Int cannot represent non-integer value: {}",
            printed()
        )),
        ("Float", AstValue::Int(_) | AstValue::Float(_)) => None,
        ("Float", _) => Some(format!(
            "Float cannot represent non numeric value: {}",
            printed()
        )),
        ("String", AstValue::String(_)) => None,
        ("String", _) => Some(format!(
            "String cannot represent a non string value: {}",
            printed()
        )),
        ("Boolean", AstValue::Boolean(_)) => None,
        ("Boolean", _) => Some(format!(
            "Boolean cannot represent a non boolean value: {}",
            printed()
        )),
        ("ID", AstValue::String(_) | AstValue::Int(_)) => None,
        ("ID", _) => Some(format!(
            "ID cannot represent a non-string and non-integer value: {}",
            printed()
        )),
        _ => None,
    }
}
