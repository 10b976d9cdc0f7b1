//! Projection of an event payload onto a compiled plan: what graphql-js
//! `execute` returns with the payload as the root field's resolved value and
//! default resolvers (leaf serialisation, abstract types by `__typename`,
//! null propagation with located errors), written straight to JSON bytes.
//!
//! Spec: <https://spec.graphql.org/October2021/#sec-Value-Completion>,
//! <https://spec.graphql.org/October2021/#sec-Handling-Field-Errors> (null propagation), and the
//! "Result Coercion" paragraph of each type, e.g.
//! <https://spec.graphql.org/October2021/#sec-Int.Result-Coercion>. Where the spec lets a service
//! choose (which non-string values a `String` accepts, and so on), subcar
//! does what graphql-js's serialisers do, so that a subscription answered
//! by subcar reads like one answered by a graphql-js server.

use serde_json::{Map, Value};

use super::error::GraphQLError;
use super::plan::{Completion, FieldPlan, ObjectPlan};
use super::schema::TypeRef;
use super::value::{inspect, js_number, write_json, write_number, write_str};

#[derive(Clone, Copy)]
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

struct Run<'p> {
    out: Vec<u8>,
    errors: Vec<GraphQLError>,
    path: Vec<Seg<'p>>,
    lookup: Lookup,
}

/// How the value's objects are keyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// By field name: an event payload.
    FieldName,
    /// By response key (aliases): a value already shaped like the response,
    /// such as the upstream's answer to an enrichment query.
    ResponseKey,
}

/// The serialised execution result for `payload` as the value of `root`.
pub(crate) fn execute(root: &FieldPlan, payload: &Value) -> Vec<u8> {
    execute_with(root, payload, Lookup::FieldName, Vec::new())
}

/// [`execute`] for a value keyed as `lookup` says, with `errors` listed
/// before those of the projection itself.
pub(crate) fn execute_with(
    root: &FieldPlan,
    payload: &Value,
    lookup: Lookup,
    errors: Vec<GraphQLError>,
) -> Vec<u8> {
    let mut run = Run {
        out: Vec::with_capacity(256),
        errors,
        path: Vec::with_capacity(8),
        lookup,
    };
    run.out.push(b'{');
    run.out.extend_from_slice(&root.key_json);
    run.path.push(Seg::Key(&root.key));
    let ok = match run.field_value(root, Some(payload)) {
        Ok(()) => true,
        Err(e) => {
            run.errors.push(e);
            false
        }
    };
    run.out.push(b'}');
    // A failure that reached the root (a non-null root field) nulls all of
    // `data`: there is no nullable parent left to stop it.
    let data = if ok { run.out } else { b"null".to_vec() };
    if run.errors.is_empty() {
        let mut out = Vec::with_capacity(data.len() + 9);
        out.extend_from_slice(b"{\"data\":");
        out.extend_from_slice(&data);
        out.push(b'}');
        return out;
    }
    // `errors` first, as <https://spec.graphql.org/October2021/#sec-Response-Format>
    // suggests and graphql-js does.
    let mut out = Vec::with_capacity(data.len() + 128);
    out.extend_from_slice(b"{\"errors\":");
    let _ = serde_json::to_writer(&mut out, &run.errors);
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(&data);
    out.push(b'}');
    out
}

type Flow = Result<(), GraphQLError>;

impl<'p> Run<'p> {
    fn error(&self, plan: &FieldPlan, message: String) -> GraphQLError {
        let mut e = GraphQLError::new(message);
        e.locations = plan.locations.clone();
        e.path = self
            .path
            .iter()
            .map(|s| match s {
                Seg::Key(k) => Value::String((*k).to_owned()),
                Seg::Index(i) => Value::from(*i),
            })
            .collect();
        e
    }

    /// Completes one field (its path already pushed); a failure in a
    /// nullable position becomes `null` plus an error, in a non-null one it
    /// propagates
    /// (<https://spec.graphql.org/October2021/#sec-Handling-Field-Errors>).
    fn field_value(&mut self, plan: &'p FieldPlan, value: Option<&Value>) -> Flow {
        self.position(plan, &plan.ty, value)
    }

    /// One place a value can be null: the field itself, and each list item.
    /// An error travels up to the nearest nullable one; as the answer is
    /// written as it goes, what this position already wrote is taken back
    /// before its `null` is written.
    fn position(&mut self, plan: &'p FieldPlan, ty: &'p TypeRef, value: Option<&Value>) -> Flow {
        let start = self.out.len();
        match self.complete(plan, ty, value) {
            Ok(()) => Ok(()),
            Err(e) if ty.is_non_null() => Err(e),
            Err(e) => {
                self.out.truncate(start);
                self.out.extend_from_slice(b"null");
                self.errors.push(e);
                Ok(())
            }
        }
    }

    fn complete(&mut self, plan: &'p FieldPlan, ty: &'p TypeRef, value: Option<&Value>) -> Flow {
        // A key missing from the payload is null, as a default resolver
        // reading an absent property gives.
        let value = value.filter(|v| !v.is_null());
        match ty {
            TypeRef::NonNull(inner) => {
                if value.is_none() {
                    return Err(self.error(
                        plan,
                        format!(
                            "Cannot return null for non-nullable field {}.{}.",
                            plan.parent_type, plan.name
                        ),
                    ));
                }
                self.complete(plan, inner, value)
            }
            _ if value.is_none() => {
                self.out.extend_from_slice(b"null");
                Ok(())
            }
            TypeRef::List(item) => {
                let Some(Value::Array(items)) = value else {
                    return Err(self.error(
                        plan,
                        format!(
                            "Expected Iterable, but did not find one for field \"{}.{}\".",
                            plan.parent_type, plan.name
                        ),
                    ));
                };
                self.out.push(b'[');
                for (i, it) in items.iter().enumerate() {
                    if i > 0 {
                        self.out.push(b',');
                    }
                    self.path.push(Seg::Index(i));
                    let r = self.position(plan, item, Some(it));
                    self.path.pop();
                    r?;
                }
                self.out.push(b']');
                Ok(())
            }
            TypeRef::Named(_) => self.named(plan, value.unwrap_or(&Value::Null)),
        }
    }

    fn named(&mut self, plan: &'p FieldPlan, v: &Value) -> Flow {
        match &plan.completion {
            Completion::Object(obj) => self.object(obj, v),
            // An event has no resolvers, so its object says which type it
            // is, by a `__typename` key, as graphql-js's default type
            // resolver reads it
            // (<https://spec.graphql.org/October2021/#sec-Value-Completion.Resolving-Abstract-Types>).
            Completion::Abstract(a) => {
                let name = v.get("__typename").and_then(Value::as_str);
                let Some(name) = name else {
                    return Err(self.error(plan, format!(
                        "Abstract type \"{0}\" must resolve to an Object type at runtime for field \"{1}.{2}\". Either the \"{0}\" type should provide a \"resolveType\" function or each possible type should provide an \"isTypeOf\" function.",
                        a.name, plan.parent_type, plan.name
                    )));
                };
                if let Some(obj) = a.by_type.get(name) {
                    return self.object(obj, v);
                }
                let msg = match a.kinds.get(name) {
                    None => format!(
                        "Abstract type \"{}\" was resolved to a type \"{name}\" that does not exist inside the schema.",
                        a.name
                    ),
                    Some(false) => format!(
                        "Abstract type \"{}\" was resolved to a non-object type \"{name}\".",
                        a.name
                    ),
                    Some(true) => format!(
                        "Runtime Object type \"{name}\" is not a possible type for \"{}\".",
                        a.name
                    ),
                };
                Err(self.error(plan, msg))
            }
            Completion::Typename => {
                write_str(&mut self.out, &plan.parent_type);
                Ok(())
            }
            // A custom scalar's serialisation is not known to subcar: the
            // publisher's value is passed on unchanged.
            Completion::Custom => {
                write_json(&mut self.out, v);
                Ok(())
            }
            Completion::Enum(name, values) => match v {
                Value::String(s) if values.contains(s) => {
                    write_str(&mut self.out, s);
                    Ok(())
                }
                _ => Err(self.error(
                    plan,
                    format!("Enum \"{name}\" cannot represent value: {}", inspect(v)),
                )),
            },
            // <https://spec.graphql.org/October2021/#sec-String.Result-Coercion> allows
            // converting other scalars; graphql-js converts booleans and
            // numbers (as JavaScript prints them) and nothing else.
            Completion::String => match v {
                Value::String(s) => {
                    write_str(&mut self.out, s);
                    Ok(())
                }
                Value::Bool(b) => {
                    write_str(&mut self.out, if *b { "true" } else { "false" });
                    Ok(())
                }
                Value::Number(n) => {
                    write_str(&mut self.out, &super::value::js_number_of(n));
                    Ok(())
                }
                _ => Err(self.error(
                    plan,
                    format!("String cannot represent value: {}", inspect(v)),
                )),
            },
            // graphql-js also takes a number: non-zero is `true`
            // (<https://spec.graphql.org/October2021/#sec-Boolean.Result-Coercion>).
            Completion::Boolean => match v {
                Value::Bool(b) => {
                    self.out
                        .extend_from_slice(if *b { b"true" } else { b"false" });
                    Ok(())
                }
                Value::Number(n) => {
                    let nz = n.as_f64().is_some_and(|f| f != 0.0);
                    self.out
                        .extend_from_slice(if nz { b"true" } else { b"false" });
                    Ok(())
                }
                _ => Err(self.error(
                    plan,
                    format!(
                        "Boolean cannot represent a non boolean value: {}",
                        inspect(v)
                    ),
                )),
            },
            // A string, or an integer written as its string
            // (<https://spec.graphql.org/October2021/#sec-ID.Result-Coercion>).
            Completion::Id => match v {
                Value::String(s) => {
                    write_str(&mut self.out, s);
                    Ok(())
                }
                Value::Number(n) if n.as_f64().is_some_and(|f| f.fract() == 0.0) => {
                    write_str(&mut self.out, &super::value::js_number_of(n));
                    Ok(())
                }
                _ => Err(self.error(plan, format!("ID cannot represent value: {}", inspect(v)))),
            },
            // <https://spec.graphql.org/October2021/#sec-Int.Result-Coercion>: a whole
            // number in 32-bit range. Booleans and numeric strings are
            // converted first, as graphql-js's `serializeInt` does.
            Completion::Int => {
                let num = js_to_number(v);
                match num {
                    Some(f) if f.fract() == 0.0 && f.is_finite() => {
                        if f > i32::MAX as f64 || f < i32::MIN as f64 {
                            return Err(self.error(
                                plan,
                                format!(
                                    "Int cannot represent non 32-bit signed integer value: {}",
                                    inspect(v)
                                ),
                            ));
                        }
                        let _ =
                            std::io::Write::write_fmt(&mut self.out, format_args!("{}", f as i64));
                        Ok(())
                    }
                    _ => Err(self.error(
                        plan,
                        format!("Int cannot represent non-integer value: {}", inspect(v)),
                    )),
                }
            }
            // <https://spec.graphql.org/October2021/#sec-Float.Result-Coercion>: any finite
            // number; one in the payload is written as JavaScript would.
            Completion::Float => match (v, js_to_number(v)) {
                (Value::Number(n), _) => {
                    write_number(&mut self.out, n);
                    Ok(())
                }
                (_, Some(f)) if f.is_finite() => {
                    self.out.extend_from_slice(js_number(f).as_bytes());
                    Ok(())
                }
                _ => Err(self.error(
                    plan,
                    format!("Float cannot represent non numeric value: {}", inspect(v)),
                )),
            },
        }
    }

    fn object(&mut self, obj: &'p ObjectPlan, v: &Value) -> Flow {
        let map: Option<&Map<String, Value>> = v.as_object();
        self.out.push(b'{');
        for (i, f) in obj.fields.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            self.out.extend_from_slice(&f.key_json);
            self.path.push(Seg::Key(&f.key));
            // `__typename` comes from the plan, not the payload; the object
            // itself is given only so the non-null check passes.
            let child = if matches!(f.completion, Completion::Typename) {
                Some(v)
            } else {
                let key = match self.lookup {
                    Lookup::FieldName => &f.name,
                    Lookup::ResponseKey => &f.key,
                };
                map.and_then(|m| m.get(key))
            };
            let r = self.field_value(f, child);
            self.path.pop();
            r?;
        }
        self.out.push(b'}');
        Ok(())
    }
}

/// JavaScript's `Number(x)` for the values graphql-js's Int and Float
/// serialisers accept (booleans, numbers, non-empty strings). The string
/// rules are JavaScript's: surrounding white space is ignored, white space
/// alone is 0, `0x`/`0o`/`0b` prefixes and `Infinity` are read; anything else
/// not a decimal number is `NaN` (here `None`).
fn js_to_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        Value::String(s) if !s.is_empty() => {
            let t = s.trim();
            if t.is_empty() {
                return Some(0.0);
            }
            let radix = |p: &str, r: u32| {
                t.strip_prefix(p)
                    .and_then(|d| i64::from_str_radix(d, r).ok())
                    .map(|i| i as f64)
            };
            if let Some(x) = radix("0x", 16)
                .or_else(|| radix("0X", 16))
                .or_else(|| radix("0o", 8))
                .or_else(|| radix("0b", 2))
            {
                return Some(x);
            }
            match t {
                "Infinity" | "+Infinity" => return Some(f64::INFINITY),
                "-Infinity" => return Some(f64::NEG_INFINITY),
                _ => {}
            }
            if t.chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
            {
                t.parse::<f64>().ok()
            } else {
                None
            }
        }
        _ => None,
    }
}
