//! Checking a `[subscriptions.resolve]` against the merged schema.
//!
//! These checks are subcar's own. They run when a schema with the
//! upstream's part is loaded (at start-up and on refresh) and as each
//! subscription is prepared, so a misconfigured `resolve` is reported then,
//! not as a failure on every event.

use super::spec::ResolveConfig;
use crate::graphql::schema::{Schema, TypeKind, TypeRef};

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
    pub(super) query_field: String,
    pub(super) args: Vec<(String, TypeRef)>,
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
        // Lists and named type must agree; nullability need not, as the
        // answer is completed against the subscription field's own type.
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
            // Only a plain `event.<field>` has a type known now; any other
            // expression is CEL, whose value is checked per event.
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
        // Required as in
        // <https://spec.graphql.org/October2021/#sec-Required-Arguments>:
        // non-null and without a default.
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
/// of named type `value` (IDs are written as strings or integers). The
/// pairs follow input coercion: an `ID` takes a string or an integer
/// (<https://spec.graphql.org/October2021/#sec-ID.Input-Coercion>),
/// a `Float` an integer
/// (<https://spec.graphql.org/October2021/#sec-Float.Input-Coercion>),
/// and an `ID` value is a string on the wire
/// (<https://spec.graphql.org/October2021/#sec-ID.Result-Coercion>).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graphql::fetch::testing::{resolve, schema};

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
}
