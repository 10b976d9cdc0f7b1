//! Building the merged schema: subcar's subscription SDL merged with the
//! upstream's SDL or introspection result, the built-ins added, and every
//! reference checked, so that the rest of the engine reads a complete model.
//!
//! The merge rules are subcar's, not the spec's (which knows one schema):
//! the subscription root is always subcar's own; the query and mutation
//! roots are the upstream's where it names them, since the upstream
//! executes those; a type both sides define must have the same shape, so
//! that an event and an enrichment query mean the same thing by it;
//! built-in types and directives cannot be redefined by either side.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::builtin::{self, BUILTIN_SCALARS};
use super::{
    FieldDef, Part, Schema, SchemaError, TypeDef, TypeKind, TypeSource, UpstreamSchema, sdl,
    upstream,
};

impl Schema {
    /// Merges `subscription_sdl` with the upstream SDL, if known yet. With
    /// `None`, Subscription fields whose types are all local work at once;
    /// the others answer `prepare` with a `SCHEMA_NOT_READY` error.
    pub fn build(subscription_sdl: &str, upstream_sdl: Option<&str>) -> Result<Self, SchemaError> {
        Self::build_from(subscription_sdl, upstream_sdl.map(UpstreamSchema::Sdl))
    }

    /// Merges `subscription_sdl` with the upstream's introspection result
    /// (the response to [`crate::graphql::INTROSPECTION_QUERY`], with or without its
    /// `data` envelope).
    pub fn build_with_introspection(
        subscription_sdl: &str,
        introspection: &serde_json::Value,
    ) -> Result<Self, SchemaError> {
        Self::build_from(
            subscription_sdl,
            Some(UpstreamSchema::Introspection(introspection)),
        )
    }

    /// Merges `subscription_sdl` with the upstream schema in either form.
    pub fn build_from(
        subscription_sdl: &str,
        upstream: Option<UpstreamSchema<'_>>,
    ) -> Result<Self, SchemaError> {
        let local = sdl::parse(subscription_sdl, TypeSource::Local, "schema.path")?;
        let upstream = match upstream {
            None => None,
            Some(UpstreamSchema::Sdl(text)) => {
                Some(sdl::parse(text, TypeSource::Upstream, "the upstream SDL")?)
            }
            Some(UpstreamSchema::Introspection(json)) => Some(upstream::from_introspection(json)?),
        };
        merge(local, upstream)
    }
}

fn merge(local: Part, upstream: Option<Part>) -> Result<Schema, SchemaError> {
    let upstream_loaded = upstream.is_some();
    let upstream = upstream.unwrap_or_default();
    let mut types: BTreeMap<String, TypeDef> = BTreeMap::new();
    for name in BUILTIN_SCALARS {
        types.insert(
            name.to_owned(),
            TypeDef {
                name: name.to_owned(),
                description: None,
                kind: TypeKind::Scalar { specified_by: None },
                source: TypeSource::BuiltIn,
            },
        );
    }
    let intro = sdl::parse(
        builtin::INTROSPECTION_SDL,
        TypeSource::BuiltIn,
        "the introspection types",
    )?;
    for t in intro.types {
        types.insert(t.name.clone(), t);
    }
    let sub_name = local
        .subscription
        .clone()
        .unwrap_or_else(|| "Subscription".into());
    let upstream_sub = upstream.subscription.clone();
    for t in upstream.types {
        if upstream_sub.as_deref() == Some(t.name.as_str()) && t.name == sub_name {
            // subcar terminates every subscription: its own root replaces the upstream's.
            continue;
        }
        types.entry(t.name.clone()).or_insert(t);
    }
    // An upstream SDL printed in pieces uses `extend type`: its extensions
    // add fields to its own object types
    // (<https://spec.graphql.org/October2021/#sec-Object-Extensions>).
    for (name, fields) in upstream.extensions {
        if upstream_sub.as_deref() == Some(name.as_str()) && name == sub_name {
            continue;
        }
        match types.get_mut(&name) {
            Some(TypeDef {
                kind: TypeKind::Object { fields: own, .. },
                source: TypeSource::Upstream,
                ..
            }) => own.extend(fields),
            _ => {
                return Err(SchemaError::Invalid {
                    source_name: "the upstream SDL".into(),
                    message: format!("extend type {name}: no object type {name} is defined in it"),
                });
            }
        }
    }
    let mut sub_fields: Vec<FieldDef> = Vec::new();
    for t in local.types {
        if t.name == sub_name
            && let TypeKind::Object { fields, .. } = t.kind
        {
            sub_fields.extend(fields);
            continue;
        }
        match types.get(&t.name) {
            Some(existing) if existing.source == TypeSource::BuiltIn => {}
            Some(existing) if !existing.same_shape(&t) => {
                return Err(SchemaError::Conflict {
                    type_name: t.name,
                    first: existing.source,
                    second: TypeSource::Local,
                });
            }
            _ => {
                types.insert(t.name.clone(), t);
            }
        }
    }
    for (name, fields) in local.extensions {
        if name == sub_name {
            sub_fields.extend(fields);
        } else {
            return Err(SchemaError::Invalid {
                source_name: "schema.path".into(),
                message: format!("only the {sub_name} type may be extended, not {name:?}"),
            });
        }
    }
    if sub_fields.is_empty() {
        return Err(SchemaError::NoSubscriptionType);
    }
    types.insert(
        sub_name.clone(),
        TypeDef {
            name: sub_name.clone(),
            description: None,
            kind: TypeKind::Object {
                interfaces: Vec::new(),
                fields: sub_fields,
            },
            source: TypeSource::Local,
        },
    );
    // The first definition of a name wins: built-ins, then the upstream's,
    // then subcar's own.
    let mut directives = builtin::directives();
    for d in upstream.directives.into_iter().chain(local.directives) {
        if !directives.iter().any(|e| e.name == d.name) {
            directives.push(d);
        }
    }
    let mut schema = Schema {
        query: upstream.query.or(local.query),
        mutation: upstream.mutation.or(local.mutation),
        subscription: sub_name,
        description: upstream.description.or(local.description),
        types,
        directives,
        pending_fields: BTreeSet::new(),
        upstream_loaded,
        possible: HashMap::new(),
        limits: crate::graphql::document::DocumentLimits::default(),
        introspection: true,
    };
    schema.possible = possible_types(&schema.types);
    check_references(&mut schema)?;
    Ok(schema)
}

/// The object types each object, interface and union may be at runtime.
/// An interface's set is read from what objects declare, with no
/// transitive closure: an object must itself list every interface it
/// implements, transitively ones too
/// (<https://spec.graphql.org/October2021/#sec-Interfaces.Interfaces-Implementing-Interfaces>).
fn possible_types(types: &BTreeMap<String, TypeDef>) -> HashMap<String, BTreeSet<String>> {
    let mut map: HashMap<String, BTreeSet<String>> = HashMap::new();
    for t in types.values() {
        match &t.kind {
            TypeKind::Object { interfaces, .. } => {
                map.entry(t.name.clone())
                    .or_default()
                    .insert(t.name.clone());
                for i in interfaces {
                    map.entry(i.clone()).or_default().insert(t.name.clone());
                }
            }
            TypeKind::Union { members } => {
                map.entry(t.name.clone())
                    .or_default()
                    .extend(members.iter().cloned());
            }
            TypeKind::Interface { .. } => {
                map.entry(t.name.clone()).or_default();
            }
            _ => {}
        }
    }
    map
}

/// Finds the types each Subscription field needs; unknown ones are a
/// start-up error once the upstream is loaded, and park the field before.
/// Parking is subcar's way to start before the upstream answers: a field
/// whose types are all local serves at once, the others wait for the
/// upstream schema instead of failing the start.
fn check_references(schema: &mut Schema) -> Result<(), SchemaError> {
    let fields: Vec<FieldDef> = schema
        .subscription_type()
        .fields()
        .unwrap_or_default()
        .to_vec();
    for field in &fields {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<(String, String)> = Vec::new();
        let owner = format!("{}.{}", schema.subscription, field.name);
        stack.push((field.ty.named().to_owned(), owner.clone()));
        for a in &field.args {
            stack.push((a.ty.named().to_owned(), format!("{owner}({}:)", a.name)));
        }
        while let Some((name, used_by)) = stack.pop() {
            if !seen.insert(name.clone()) {
                continue;
            }
            let Some(t) = schema.types.get(&name) else {
                if schema.upstream_loaded {
                    return Err(SchemaError::UnknownType {
                        type_name: name,
                        used_by,
                    });
                }
                schema.pending_fields.insert(field.name.clone());
                continue;
            };
            let refs: Vec<(String, String)> = match &t.kind {
                TypeKind::Object { interfaces, fields }
                | TypeKind::Interface { interfaces, fields } => {
                    let mut r: Vec<_> = interfaces
                        .iter()
                        .map(|i| (i.clone(), name.clone()))
                        .collect();
                    for f in fields {
                        r.push((f.ty.named().to_owned(), format!("{name}.{}", f.name)));
                        for a in &f.args {
                            r.push((
                                a.ty.named().to_owned(),
                                format!("{name}.{}({}:)", f.name, a.name),
                            ));
                        }
                    }
                    r
                }
                TypeKind::Union { members } => {
                    members.iter().map(|m| (m.clone(), name.clone())).collect()
                }
                TypeKind::InputObject { fields } => fields
                    .iter()
                    .map(|f| (f.ty.named().to_owned(), format!("{name}.{}", f.name)))
                    .collect(),
                _ => Vec::new(),
            };
            // Abstract types also need every implementation known.
            if t.is_abstract()
                && let Some(p) = schema.possible.get(&name)
            {
                stack.extend(p.iter().map(|p| (p.clone(), name.clone())));
            }
            stack.extend(refs);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: &str = "type Subscription { ping: Int }";

    #[test]
    fn upstream_sdl_extensions_add_fields_to_its_types() {
        let upstream = "type Query { a: Int }\nextend type Query { b: String }";
        let schema = Schema::build(LOCAL, Some(upstream)).unwrap();
        let query = schema.get("Query").unwrap();
        assert!(query.field("a").is_some());
        assert!(query.field("b").is_some());
    }

    #[test]
    fn an_upstream_extension_of_an_unknown_type_is_an_error() {
        let err = Schema::build(
            LOCAL,
            Some("type Query { a: Int }\nextend type Mutation { m: Int }"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("extend type Mutation"), "{err}");
    }
}
