//! What every GraphQL schema has without declaring it
//! (<https://spec.graphql.org/October2021/#sec-Schema-Introspection>): the
//! built-in scalars, the introspection types, the `__schema` / `__type`
//! meta-fields and the directives graphql-js defines.

use std::sync::OnceLock;

use graphql_parser::schema as ast;

use super::{DirectiveDef, FieldDef, InputValueDef, TypeRef};

/// The scalars of the specification (<https://spec.graphql.org/October2021/#sec-Scalars.Built-in-Scalars>).
pub(crate) const BUILTIN_SCALARS: [&str; 5] = ["Int", "Float", "String", "Boolean", "ID"];

/// The introspection types of the GraphQL specification (§4.2).
pub(crate) const INTROSPECTION_SDL: &str = r#"
"The schema: its types, directives and root operation types."
type __Schema {
  description: String
  types: [__Type!]!
  queryType: __Type!
  mutationType: __Type
  subscriptionType: __Type
  directives: [__Directive!]!
}
"A type of the schema, or a list or non-null wrapper around one."
type __Type {
  kind: __TypeKind!
  name: String
  description: String
  specifiedByURL: String
  fields(includeDeprecated: Boolean = false): [__Field!]
  interfaces: [__Type!]
  possibleTypes: [__Type!]
  enumValues(includeDeprecated: Boolean = false): [__EnumValue!]
  inputFields(includeDeprecated: Boolean = false): [__InputValue!]
  ofType: __Type
  isOneOf: Boolean
}
"What kind of type a `__Type` is."
enum __TypeKind { SCALAR OBJECT INTERFACE UNION ENUM INPUT_OBJECT LIST NON_NULL }
"A field of an object or interface type."
type __Field {
  name: String!
  description: String
  args(includeDeprecated: Boolean = false): [__InputValue!]!
  type: __Type!
  isDeprecated: Boolean!
  deprecationReason: String
}
"An argument, or a field of an input object type."
type __InputValue {
  name: String!
  description: String
  type: __Type!
  defaultValue: String
  isDeprecated: Boolean!
  deprecationReason: String
}
"A value of an enum type."
type __EnumValue {
  name: String!
  description: String
  isDeprecated: Boolean!
  deprecationReason: String
}
"A directive the schema supports."
type __Directive {
  name: String!
  description: String
  isRepeatable: Boolean!
  locations: [__DirectiveLocation!]!
  args(includeDeprecated: Boolean = false): [__InputValue!]!
}
"Where a directive may appear."
enum __DirectiveLocation {
  QUERY MUTATION SUBSCRIPTION FIELD FRAGMENT_DEFINITION FRAGMENT_SPREAD INLINE_FRAGMENT
  VARIABLE_DEFINITION SCHEMA SCALAR OBJECT FIELD_DEFINITION ARGUMENT_DEFINITION INTERFACE
  UNION ENUM ENUM_VALUE INPUT_OBJECT INPUT_FIELD_DEFINITION
}
"#;

/// `__schema` and `__type`, the query root's implicit fields.
pub(crate) fn meta_field(name: &str) -> Option<&'static FieldDef> {
    static FIELDS: OnceLock<[FieldDef; 2]> = OnceLock::new();
    let [schema, ty] = FIELDS.get_or_init(|| {
        let non_null = |n: &str| TypeRef::NonNull(Box::new(TypeRef::Named(n.into())));
        [
            FieldDef {
                name: "__schema".into(),
                description: Some("Access the current type schema of this server.".into()),
                args: Vec::new(),
                ty: non_null("__Schema"),
                deprecation: None,
            },
            FieldDef {
                name: "__type".into(),
                description: Some("Request the type information of a single type.".into()),
                args: vec![InputValueDef {
                    name: "name".into(),
                    description: None,
                    ty: non_null("String"),
                    default: None,
                    deprecation: None,
                }],
                ty: TypeRef::Named("__Type".into()),
                deprecation: None,
            },
        ]
    });
    match name {
        "__schema" => Some(schema),
        "__type" => Some(ty),
        _ => None,
    }
}

/// `@skip`, `@include`, `@deprecated`, `@specifiedBy` as graphql-js defines them.
pub(crate) fn directives() -> Vec<DirectiveDef> {
    let arg = |name: &str, ty: TypeRef, description: &str, default: Option<&str>| InputValueDef {
        name: name.into(),
        description: Some(description.into()),
        ty,
        default: default.map(|d| ast::Value::String(d.into())),
        deprecation: None,
    };
    let non_null = |n: &str| TypeRef::NonNull(Box::new(TypeRef::Named(n.into())));
    let locs = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect();
    vec![
        DirectiveDef {
            name: "include".into(),
            description: Some("Directs the executor to include this field or fragment only when the `if` argument is true.".into()),
            args: vec![arg("if", non_null("Boolean"), "Included when true.", None)],
            locations: locs(&["FIELD", "FRAGMENT_SPREAD", "INLINE_FRAGMENT"]),
            repeatable: false,
        },
        DirectiveDef {
            name: "skip".into(),
            description: Some("Directs the executor to skip this field or fragment when the `if` argument is true.".into()),
            args: vec![arg("if", non_null("Boolean"), "Skipped when true.", None)],
            locations: locs(&["FIELD", "FRAGMENT_SPREAD", "INLINE_FRAGMENT"]),
            repeatable: false,
        },
        DirectiveDef {
            name: "deprecated".into(),
            description: Some("Marks an element of a GraphQL schema as no longer supported.".into()),
            args: vec![arg(
                "reason",
                TypeRef::Named("String".into()),
                "Explains why this element was deprecated, usually also including a suggestion for how to access supported similar data. Formatted using the Markdown syntax, as specified by [CommonMark](https://commonmark.org/).",
                Some("No longer supported"),
            )],
            locations: locs(&["FIELD_DEFINITION", "ARGUMENT_DEFINITION", "INPUT_FIELD_DEFINITION", "ENUM_VALUE"]),
            repeatable: false,
        },
        DirectiveDef {
            name: "specifiedBy".into(),
            description: Some("Exposes a URL that specifies the behavior of this scalar.".into()),
            args: vec![arg("url", non_null("String"), "The URL that specifies the behavior of this scalar.", None)],
            locations: locs(&["SCALAR"]),
            repeatable: false,
        },
    ]
}
