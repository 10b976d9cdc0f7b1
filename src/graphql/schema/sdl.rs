//! SDL in and out: turns a parsed SDL document into schema parts, and prints
//! the merged schema back as SDL (graphql-js `printSchema` layout).
//!
//! Spec: <https://spec.graphql.org/October2021/#sec-Type-System>. The
//! same parser reads subcar's subscription SDL and an upstream SDL; which
//! types a part may define or extend is decided when the parts are merged
//! ([`super::build`]).

use std::fmt::Write;

use graphql_parser::schema::{self as ast, Definition, TypeDefinition, TypeExtension};

use super::super::value::print_ast_value;
use super::builtin::BUILTIN_SCALARS;
use super::{
    DirectiveDef, EnumValueDef, FieldDef, InputValueDef, Part, Schema, SchemaError, TypeDef,
    TypeKind, TypeRef, TypeSource,
};

pub(crate) fn parse(
    text: &str,
    source: TypeSource,
    source_name: &str,
) -> Result<Part, SchemaError> {
    let doc = graphql_parser::parse_schema::<String>(text)
        .map_err(|e| SchemaError::Parse {
            source_name: source_name.to_owned(),
            message: e.to_string(),
        })?
        .into_static();
    let mut part = Part::default();
    for def in doc.definitions {
        match def {
            Definition::SchemaDefinition(s) => {
                part.query = s.query;
                part.mutation = s.mutation;
                part.subscription = s.subscription;
            }
            Definition::TypeDefinition(t) => part.types.push(type_def(t, source)),
            Definition::TypeExtension(TypeExtension::Object(e)) => {
                part.extensions
                    .push((e.name, e.fields.into_iter().map(field_def).collect()));
            }
            // subcar's own limit: an extension can only add fields to an
            // object type (in practice, the subscription root). Other kinds
            // are refused rather than half-applied.
            Definition::TypeExtension(_) => {
                return Err(SchemaError::Invalid {
                    source_name: source_name.to_owned(),
                    message: "only object types may be extended".into(),
                });
            }
            Definition::DirectiveDefinition(d) => part.directives.push(DirectiveDef {
                name: d.name,
                description: d.description,
                args: d.arguments.into_iter().map(input_value).collect(),
                locations: d.locations.iter().map(|l| l.as_str().to_owned()).collect(),
                repeatable: d.repeatable,
            }),
        }
    }
    // With no `schema { … }` definition, the types named `Query`, `Mutation`
    // and `Subscription` are the roots
    // (<https://spec.graphql.org/October2021/#sec-Root-Operation-Types.Default-Root-Operation-Type-Names>).
    // subcar's SDL may only extend `Subscription`, so an extension names the
    // root too.
    if part.query.is_none() && part.types.iter().any(|t| t.name == "Query") {
        part.query = Some("Query".into());
    }
    if part.mutation.is_none() && part.types.iter().any(|t| t.name == "Mutation") {
        part.mutation = Some("Mutation".into());
    }
    if part.subscription.is_none()
        && (part.types.iter().any(|t| t.name == "Subscription")
            || part.extensions.iter().any(|(n, _)| n == "Subscription"))
    {
        part.subscription = Some("Subscription".into());
    }
    Ok(part)
}

fn directive_arg<'a>(
    dirs: &'a [ast::Directive<'static, String>],
    name: &str,
    arg: &str,
) -> Option<Option<&'a ast::Value<'static, String>>> {
    let d = dirs.iter().find(|d| d.name == name)?;
    Some(d.arguments.iter().find(|(n, _)| n == arg).map(|(_, v)| v))
}

/// `@deprecated` with no `reason` has the spec's default reason
/// (<https://spec.graphql.org/October2021/#sec--deprecated>).
fn deprecation(dirs: &[ast::Directive<'static, String>]) -> Option<String> {
    directive_arg(dirs, "deprecated", "reason").map(|v| match v {
        Some(ast::Value::String(s)) => s.clone(),
        _ => "No longer supported".to_owned(),
    })
}

fn input_value(v: ast::InputValue<'static, String>) -> InputValueDef {
    InputValueDef {
        deprecation: deprecation(&v.directives),
        name: v.name,
        description: v.description,
        ty: TypeRef::from_ast(&v.value_type),
        default: v.default_value,
    }
}

fn field_def(f: ast::Field<'static, String>) -> FieldDef {
    FieldDef {
        deprecation: deprecation(&f.directives),
        name: f.name,
        description: f.description,
        args: f.arguments.into_iter().map(input_value).collect(),
        ty: TypeRef::from_ast(&f.field_type),
    }
}

fn type_def(t: TypeDefinition<'static, String>, source: TypeSource) -> TypeDef {
    let (name, description, kind) = match t {
        TypeDefinition::Scalar(s) => {
            let specified_by = match directive_arg(&s.directives, "specifiedBy", "url") {
                Some(Some(ast::Value::String(u))) => Some(u.clone()),
                _ => None,
            };
            (s.name, s.description, TypeKind::Scalar { specified_by })
        }
        TypeDefinition::Object(o) => (
            o.name,
            o.description,
            TypeKind::Object {
                interfaces: o.implements_interfaces,
                fields: o.fields.into_iter().map(field_def).collect(),
            },
        ),
        TypeDefinition::Interface(i) => (
            i.name,
            i.description,
            TypeKind::Interface {
                interfaces: i.implements_interfaces,
                fields: i.fields.into_iter().map(field_def).collect(),
            },
        ),
        TypeDefinition::Union(u) => (u.name, u.description, TypeKind::Union { members: u.types }),
        TypeDefinition::Enum(e) => (
            e.name,
            e.description,
            TypeKind::Enum {
                values: e
                    .values
                    .into_iter()
                    .map(|v| EnumValueDef {
                        deprecation: deprecation(&v.directives),
                        name: v.name,
                        description: v.description,
                    })
                    .collect(),
            },
        ),
        TypeDefinition::InputObject(i) => (
            i.name,
            i.description,
            TypeKind::InputObject {
                fields: i.fields.into_iter().map(input_value).collect(),
            },
        ),
    };
    TypeDef {
        name,
        description,
        kind,
        source,
    }
}

/// Left out of printed SDL, as `printSchema` does: every schema has them
/// (<https://spec.graphql.org/October2021/#sec-Type-System.Directives.Built-in-Directives>).
const BUILTIN_DIRECTIVES: [&str; 4] = ["include", "skip", "deprecated", "specifiedBy"];

/// A block string when the text would not fit a plain string well
/// (a line break, a quote, or over 70 characters), as graphql-js chooses.
fn description(out: &mut String, d: &Option<String>, indent: &str) {
    let Some(d) = d else { return };
    if d.contains('\n') || d.contains('"') || d.len() > 70 {
        let _ = writeln!(out, "{indent}\"\"\"");
        for line in d.replace("\"\"\"", "\\\"\"\"").lines() {
            let _ = writeln!(out, "{indent}{line}");
        }
        let _ = writeln!(out, "{indent}\"\"\"");
    } else {
        let _ = writeln!(out, "{indent}\"{d}\"");
    }
}

fn deprecated(reason: &Option<String>) -> String {
    match reason.as_deref() {
        None => String::new(),
        Some("No longer supported") => " @deprecated".into(),
        Some(r) => format!(
            " @deprecated(reason: {})",
            serde_json::Value::String(r.into())
        ),
    }
}

fn input_values(args: &[InputValueDef], indent: &str) -> String {
    if args.is_empty() {
        return String::new();
    }
    let one = |a: &InputValueDef| {
        let mut s = format!("{}: {}", a.name, a.ty);
        if let Some(d) = &a.default {
            let _ = write!(s, " = {}", print_ast_value(d));
        }
        s.push_str(&deprecated(&a.deprecation));
        s
    };
    if args.iter().all(|a| a.description.is_none()) {
        return format!("({})", args.iter().map(one).collect::<Vec<_>>().join(", "));
    }
    let mut out = String::from("(\n");
    for a in args {
        description(&mut out, &a.description, &format!("{indent}  "));
        let _ = writeln!(out, "{indent}  {}", one(a));
    }
    let _ = write!(out, "{indent})");
    out
}

fn implements(interfaces: &[String]) -> String {
    if interfaces.is_empty() {
        String::new()
    } else {
        format!(" implements {}", interfaces.join(" & "))
    }
}

fn fields(out: &mut String, fields: &[FieldDef]) {
    out.push_str(" {\n");
    for f in fields {
        description(out, &f.description, "  ");
        let _ = writeln!(
            out,
            "  {}{}: {}{}",
            f.name,
            input_values(&f.args, "  "),
            f.ty,
            deprecated(&f.deprecation)
        );
    }
    out.push('}');
}

/// Prints the merged schema like graphql-js `printSchema`.
pub(crate) fn print(schema: &Schema) -> String {
    let mut blocks: Vec<String> = Vec::new();
    // The `schema { … }` block is printed only when it says something the
    // default root names do not (graphql-js `isSchemaOfCommonNames`).
    let standard = schema.query.as_deref().is_none_or(|q| q == "Query")
        && schema.mutation.as_deref().is_none_or(|m| m == "Mutation")
        && schema.subscription == "Subscription";
    if !standard || schema.description.is_some() {
        let mut s = String::new();
        description(&mut s, &schema.description, "");
        s.push_str("schema {\n");
        if let Some(q) = &schema.query {
            let _ = writeln!(s, "  query: {q}");
        }
        if let Some(m) = &schema.mutation {
            let _ = writeln!(s, "  mutation: {m}");
        }
        let _ = writeln!(s, "  subscription: {}", schema.subscription);
        s.push('}');
        blocks.push(s);
    }
    for d in &schema.directives {
        if BUILTIN_DIRECTIVES.contains(&d.name.as_str()) {
            continue;
        }
        let mut s = String::new();
        description(&mut s, &d.description, "");
        let _ = write!(
            s,
            "directive @{}{}{} on {}",
            d.name,
            input_values(&d.args, ""),
            if d.repeatable { " repeatable" } else { "" },
            d.locations.join(" | ")
        );
        blocks.push(s);
    }
    for t in schema.types.values() {
        if BUILTIN_SCALARS.contains(&t.name.as_str()) || t.name.starts_with("__") {
            continue;
        }
        let mut s = String::new();
        description(&mut s, &t.description, "");
        match &t.kind {
            TypeKind::Scalar { specified_by } => {
                let _ = write!(s, "scalar {}", t.name);
                if let Some(url) = specified_by {
                    let _ = write!(
                        s,
                        " @specifiedBy(url: {})",
                        serde_json::Value::String(url.clone())
                    );
                }
            }
            TypeKind::Object {
                interfaces,
                fields: f,
            } => {
                let _ = write!(s, "type {}{}", t.name, implements(interfaces));
                fields(&mut s, f);
            }
            TypeKind::Interface {
                interfaces,
                fields: f,
            } => {
                let _ = write!(s, "interface {}{}", t.name, implements(interfaces));
                fields(&mut s, f);
            }
            TypeKind::Union { members } => {
                let _ = write!(s, "union {} = {}", t.name, members.join(" | "));
            }
            TypeKind::Enum { values } => {
                let _ = writeln!(s, "enum {} {{", t.name);
                for v in values {
                    description(&mut s, &v.description, "  ");
                    let _ = writeln!(s, "  {}{}", v.name, deprecated(&v.deprecation));
                }
                s.push('}');
            }
            TypeKind::InputObject { fields } => {
                let _ = writeln!(s, "input {} {{", t.name);
                for f in fields {
                    description(&mut s, &f.description, "  ");
                    let mut line = format!("  {}: {}", f.name, f.ty);
                    if let Some(d) = &f.default {
                        let _ = write!(line, " = {}", print_ast_value(d));
                    }
                    line.push_str(&deprecated(&f.deprecation));
                    let _ = writeln!(s, "{line}");
                }
                s.push('}');
            }
        }
        blocks.push(s);
    }
    let mut out = blocks.join("\n\n");
    out.push('\n');
    out
}
