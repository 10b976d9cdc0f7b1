//! The merged schema model: every named type, the root types and the
//! directives, with where each type came from. Built from subcar's SDL and
//! the upstream's SDL or introspection result by [`Schema::build`] and
//! [`Schema::build_with_introspection`].

use std::collections::{BTreeMap, BTreeSet, HashMap};

use graphql_parser::query::Value as AstValue;

mod build;
pub(crate) mod builtin;
pub(crate) mod sdl;
mod upstream;

/// A literal as written in a schema (default values).
pub(crate) type ConstValue = AstValue<'static, String>;

/// Where a type definition came from; named in conflict errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeSource {
    BuiltIn,
    /// subcar's own SDL (`schema.path`).
    Local,
    /// The upstream's schema (`schema.upstream_sdl` or introspection).
    Upstream,
}

impl std::fmt::Display for TypeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TypeSource::BuiltIn => "the built-in types",
            TypeSource::Local => "the subscription schema (schema.path)",
            TypeSource::Upstream => "the upstream schema",
        })
    }
}

/// A type reference with its list and non-null wrappers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum TypeRef {
    Named(String),
    List(Box<TypeRef>),
    NonNull(Box<TypeRef>),
}

impl TypeRef {
    pub(crate) fn named(&self) -> &str {
        match self {
            TypeRef::Named(n) => n,
            TypeRef::List(t) | TypeRef::NonNull(t) => t.named(),
        }
    }

    pub(crate) fn is_non_null(&self) -> bool {
        matches!(self, TypeRef::NonNull(_))
    }

    pub(crate) fn from_ast(ty: &graphql_parser::query::Type<'_, String>) -> Self {
        use graphql_parser::query::Type;
        match ty {
            Type::NamedType(n) => TypeRef::Named(n.clone()),
            Type::ListType(t) => TypeRef::List(Box::new(Self::from_ast(t))),
            Type::NonNullType(t) => TypeRef::NonNull(Box::new(Self::from_ast(t))),
        }
    }
}

impl std::fmt::Display for TypeRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TypeRef::Named(n) => f.write_str(n),
            TypeRef::List(t) => write!(f, "[{t}]"),
            TypeRef::NonNull(t) => write!(f, "{t}!"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct InputValueDef {
    pub name: String,
    pub description: Option<String>,
    pub ty: TypeRef,
    pub default: Option<ConstValue>,
    pub deprecation: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FieldDef {
    pub name: String,
    pub description: Option<String>,
    pub args: Vec<InputValueDef>,
    pub ty: TypeRef,
    pub deprecation: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EnumValueDef {
    pub name: String,
    pub description: Option<String>,
    pub deprecation: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TypeKind {
    Scalar {
        specified_by: Option<String>,
    },
    Object {
        interfaces: Vec<String>,
        fields: Vec<FieldDef>,
    },
    Interface {
        interfaces: Vec<String>,
        fields: Vec<FieldDef>,
    },
    Union {
        members: Vec<String>,
    },
    Enum {
        values: Vec<EnumValueDef>,
    },
    InputObject {
        fields: Vec<InputValueDef>,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct TypeDef {
    pub name: String,
    pub description: Option<String>,
    pub kind: TypeKind,
    pub source: TypeSource,
}

impl TypeDef {
    pub(crate) fn fields(&self) -> Option<&[FieldDef]> {
        match &self.kind {
            TypeKind::Object { fields, .. } | TypeKind::Interface { fields, .. } => Some(fields),
            _ => None,
        }
    }

    pub(crate) fn field(&self, name: &str) -> Option<&FieldDef> {
        self.fields()?.iter().find(|f| f.name == name)
    }

    pub(crate) fn is_composite(&self) -> bool {
        matches!(
            self.kind,
            TypeKind::Object { .. } | TypeKind::Interface { .. } | TypeKind::Union { .. }
        )
    }

    pub(crate) fn is_abstract(&self) -> bool {
        matches!(
            self.kind,
            TypeKind::Interface { .. } | TypeKind::Union { .. }
        )
    }

    /// Input and output kinds as in
    /// <https://spec.graphql.org/October2021/#sec-Input-and-Output-Types>:
    /// scalars and enums are both, input objects input only.
    pub(crate) fn is_input(&self) -> bool {
        matches!(
            self.kind,
            TypeKind::Scalar { .. } | TypeKind::Enum { .. } | TypeKind::InputObject { .. }
        )
    }

    pub(crate) fn is_leaf(&self) -> bool {
        matches!(self.kind, TypeKind::Scalar { .. } | TypeKind::Enum { .. })
    }

    /// Structural equality, ignoring descriptions: what "defined
    /// differently" means for a type present on both sides. Field,
    /// argument and member order is ignored too, as it shapes no response;
    /// deprecations and defaults are not compared.
    fn same_shape(&self, other: &TypeDef) -> bool {
        type Shape<'a> = (&'a str, &'a TypeRef, Vec<(&'a str, &'a TypeRef)>);
        fn strip_fields(f: &[FieldDef]) -> Vec<Shape<'_>> {
            let mut v: Vec<_> = f
                .iter()
                .map(|f| {
                    let mut a: Vec<_> = f.args.iter().map(|a| (a.name.as_str(), &a.ty)).collect();
                    a.sort();
                    (f.name.as_str(), &f.ty, a)
                })
                .collect();
            v.sort_by(|a, b| a.0.cmp(b.0));
            v
        }
        fn sorted(v: &[String]) -> BTreeSet<&str> {
            v.iter().map(String::as_str).collect()
        }
        match (&self.kind, &other.kind) {
            (TypeKind::Scalar { .. }, TypeKind::Scalar { .. }) => true,
            (
                TypeKind::Object {
                    interfaces: i1,
                    fields: f1,
                },
                TypeKind::Object {
                    interfaces: i2,
                    fields: f2,
                },
            )
            | (
                TypeKind::Interface {
                    interfaces: i1,
                    fields: f1,
                },
                TypeKind::Interface {
                    interfaces: i2,
                    fields: f2,
                },
            ) => sorted(i1) == sorted(i2) && strip_fields(f1) == strip_fields(f2),
            (TypeKind::Union { members: m1 }, TypeKind::Union { members: m2 }) => {
                sorted(m1) == sorted(m2)
            }
            (TypeKind::Enum { values: v1 }, TypeKind::Enum { values: v2 }) => {
                v1.iter().map(|v| &v.name).collect::<BTreeSet<_>>()
                    == v2.iter().map(|v| &v.name).collect::<BTreeSet<_>>()
            }
            (TypeKind::InputObject { fields: f1 }, TypeKind::InputObject { fields: f2 }) => {
                let a: BTreeMap<_, _> = f1.iter().map(|f| (&f.name, &f.ty)).collect();
                let b: BTreeMap<_, _> = f2.iter().map(|f| (&f.name, &f.ty)).collect();
                a == b
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct DirectiveDef {
    pub name: String,
    pub description: Option<String>,
    pub args: Vec<InputValueDef>,
    pub locations: Vec<String>,
    pub repeatable: bool,
}

/// Errors that make a schema unusable at start-up.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("cannot parse {source_name}: {message}")]
    Parse {
        source_name: String,
        message: String,
    },
    #[error(
        "type {type_name:?} is defined differently in {first} and in {second}; define it once or identically"
    )]
    Conflict {
        type_name: String,
        first: TypeSource,
        second: TypeSource,
    },
    #[error(
        "type {type_name:?}, used by {used_by}, is defined neither in the subscription schema (schema.path) nor in the upstream schema"
    )]
    UnknownType { type_name: String, used_by: String },
    #[error("the subscription schema (schema.path) defines no Subscription type")]
    NoSubscriptionType,
    #[error("{source_name}: {message}")]
    Invalid {
        source_name: String,
        message: String,
    },
}

/// The upstream's schema as subcar learns it.
#[derive(Debug, Clone, Copy)]
pub enum UpstreamSchema<'a> {
    /// SDL text (`schema.upstream_sdl`).
    Sdl(&'a str),
    /// The `data` (or whole response) of [`super::INTROSPECTION_QUERY`].
    Introspection(&'a serde_json::Value),
}

/// The merged schema: the upstream's types plus subcar's Subscription root.
#[derive(Debug)]
pub struct Schema {
    pub(crate) types: BTreeMap<String, TypeDef>,
    pub(crate) directives: Vec<DirectiveDef>,
    pub(crate) query: Option<String>,
    pub(crate) mutation: Option<String>,
    pub(crate) subscription: String,
    pub(crate) description: Option<String>,
    /// Subscription fields that reference types only the upstream can
    /// define, while the upstream schema is not loaded yet.
    pub(crate) pending_fields: BTreeSet<String>,
    pub(crate) upstream_loaded: bool,
    possible: HashMap<String, BTreeSet<String>>,
    /// What one document may cost (`[limits.document]`).
    pub(crate) limits: crate::graphql::document::DocumentLimits,
    /// `schema.introspection`: whether `__schema` / `__type` are answered.
    pub(crate) introspection: bool,
}

impl Schema {
    pub(crate) fn get(&self, name: &str) -> Option<&TypeDef> {
        self.types.get(name)
    }

    pub(crate) fn subscription_type(&self) -> &TypeDef {
        &self.types[&self.subscription]
    }

    pub(crate) fn directive(&self, name: &str) -> Option<&DirectiveDef> {
        self.directives.iter().find(|d| d.name == name)
    }

    /// Object types an abstract type (or object type) can be at run time.
    pub(crate) fn possible_types(&self, name: &str) -> Option<&BTreeSet<String>> {
        self.possible.get(name)
    }

    pub(crate) fn is_possible(&self, abstract_or_object: &str, object: &str) -> bool {
        self.possible
            .get(abstract_or_object)
            .is_some_and(|s| s.contains(object))
    }

    /// The same schema with the documents it prepares capped by `limits`
    /// and introspection answered or refused (`schema.introspection`).
    pub fn with_document_policy(
        mut self,
        limits: crate::graphql::document::DocumentLimits,
        introspection: bool,
    ) -> Self {
        self.limits = limits;
        self.introspection = introspection;
        self
    }

    /// The caps on documents (`[limits.document]`).
    pub fn document_limits(&self) -> &crate::graphql::document::DocumentLimits {
        &self.limits
    }

    /// Whether introspection is answered (`schema.introspection`).
    pub fn introspection_enabled(&self) -> bool {
        self.introspection
    }

    /// Whether the upstream schema has been merged in.
    pub fn upstream_loaded(&self) -> bool {
        self.upstream_loaded
    }

    /// The Subscription root's field names.
    pub fn subscription_fields(&self) -> Vec<&str> {
        self.subscription_type()
            .fields()
            .unwrap_or_default()
            .iter()
            .map(|f| f.name.as_str())
            .collect()
    }

    /// The merged schema as SDL.
    pub fn sdl(&self) -> String {
        sdl::print(self)
    }
}

/// What a parsed SDL or introspection result contributes.
#[derive(Debug, Default)]
pub(crate) struct Part {
    pub types: Vec<TypeDef>,
    pub directives: Vec<DirectiveDef>,
    pub query: Option<String>,
    pub mutation: Option<String>,
    pub subscription: Option<String>,
    pub description: Option<String>,
    /// Fields of `extend type X` blocks, by type name.
    pub extensions: Vec<(String, Vec<FieldDef>)>,
}
