//! The upstream query of one subscription, written from its own document.
//!
//! The query must be valid for the upstream, so it carries only what its
//! selection uses: a declared but unused variable or an unused fragment
//! would make the whole query invalid
//! (<https://spec.graphql.org/October2021/#sec-All-Variables-Used>,
//! <https://spec.graphql.org/October2021/#sec-Fragments-Must-Be-Used>).
//! The root field's own arguments and the client's fragments on the
//! Subscription type stay out: they belong to the subscription; only the
//! root field's selection becomes the query field's.

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;
use graphql_parser::Pos;
use graphql_parser::query::{
    Definition, Document, Field, OperationDefinition, Query, Selection, SelectionSet, Type,
    Value as AstValue, VariableDefinition,
};
use serde_json::{Map, Value};

use super::OPERATION_NAME;
use super::target::ResolveTarget;
use crate::graphql::ast::{Doc, Frag, Sel};
use crate::graphql::schema::TypeRef;

fn ast_type(t: &TypeRef) -> Type<'static, String> {
    match t {
        TypeRef::NonNull(inner) => Type::NonNullType(Box::new(ast_type(inner))),
        TypeRef::List(inner) => Type::ListType(Box::new(ast_type(inner))),
        TypeRef::Named(n) => Type::NamedType(n.clone()),
    }
}

/// The upstream query of one subscription, ready to be sent per event.
#[derive(Debug)]
pub struct FetchQuery {
    document: String,
    /// The client's variables the selection uses.
    variables: Map<String, Value>,
    /// Argument of the query field → the variable carrying it.
    key_variables: Vec<(String, String)>,
}

impl FetchQuery {
    /// Writes the query for the selection of the subscription's root field
    /// (`nodes`, all with response key `key`): the query field under that
    /// key, its arguments as fresh variables, the client's fragments and
    /// variables that the selection uses, and `__typename` in every
    /// selection set (runtime types of abstract fields are read from it).
    pub(crate) fn build(
        doc: &Doc,
        op_vars: &[VariableDefinition<'static, String>],
        nodes: &[&Field<'static, String>],
        key: &str,
        target: &ResolveTarget,
        coerced: &Map<String, Value>,
    ) -> Self {
        let fragments = crate::graphql::ast::fragments(doc);
        let mut items: Vec<Selection<'static, String>> = Vec::new();
        for n in nodes {
            items.extend(n.selection_set.items.iter().cloned());
        }
        let mut uses = Uses::default();
        for item in &items {
            uses.selection(item, &fragments);
        }
        let mut definitions = Vec::new();
        let mut variable_definitions: Vec<VariableDefinition<'static, String>> = op_vars
            .iter()
            .filter(|v| uses.variables.contains(&v.name))
            .cloned()
            .collect();
        let mut key_variables = Vec::new();
        let mut arguments = Vec::new();
        for (arg, ty) in &target.args {
            // Named apart from every client variable, since the query
            // declares both
            // (<https://spec.graphql.org/October2021/#sec-Variable-Uniqueness>).
            let mut var = format!("subcar_{arg}");
            while op_vars.iter().any(|v| v.name == var) {
                var.push('_');
            }
            variable_definitions.push(VariableDefinition {
                position: Pos::default(),
                name: var.clone(),
                var_type: ast_type(ty),
                default_value: None,
            });
            arguments.push((arg.clone(), AstValue::Variable(var.clone())));
            key_variables.push((arg.clone(), var));
        }
        let mut root = Field {
            position: Pos::default(),
            alias: (key != target.query_field).then(|| key.to_owned()),
            name: target.query_field.clone(),
            arguments,
            directives: Vec::new(),
            selection_set: SelectionSet {
                span: (Pos::default(), Pos::default()),
                items,
            },
        };
        with_typename(&mut root.selection_set);
        definitions.push(Definition::Operation(OperationDefinition::Query(Query {
            position: Pos::default(),
            name: Some(OPERATION_NAME.to_owned()),
            variable_definitions,
            directives: Vec::new(),
            selection_set: SelectionSet {
                span: (Pos::default(), Pos::default()),
                items: vec![Selection::Field(root)],
            },
        })));
        for name in &uses.fragments {
            if let Some(f) = fragments.get(name.as_str()) {
                let mut f = (*f).clone();
                with_typename(&mut f.selection_set);
                definitions.push(Definition::Fragment(f));
            }
        }
        let document = Document { definitions }.format(graphql_parser::Style::default().indent(0));
        let variables = coerced
            .iter()
            .filter(|(k, _)| uses.variables.contains(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Self {
            document,
            variables,
            key_variables,
        }
    }

    pub fn document(&self) -> &str {
        &self.document
    }

    /// The request body for one event: `args` holds the value of each of
    /// the query field's configured arguments.
    pub fn body(&self, args: &Map<String, Value>) -> Bytes {
        let mut variables = self.variables.clone();
        for (arg, var) in &self.key_variables {
            variables.insert(var.clone(), args.get(arg).cloned().unwrap_or(Value::Null));
        }
        let body = serde_json::json!({
            "query": self.document,
            "operationName": OPERATION_NAME,
            "variables": variables,
        });
        Bytes::from(serde_json::to_vec(&body).expect("JSON values serialise"))
    }
}

/// The fragments and variables a selection refers to, transitively.
#[derive(Default)]
struct Uses {
    fragments: BTreeSet<String>,
    variables: BTreeSet<String>,
}

impl Uses {
    fn set(&mut self, set: &Sel, fragments: &HashMap<&str, &Frag>) {
        for item in &set.items {
            self.selection(item, fragments);
        }
    }

    fn selection(&mut self, sel: &Selection<'static, String>, fragments: &HashMap<&str, &Frag>) {
        match sel {
            Selection::Field(f) => {
                for (_, v) in &f.arguments {
                    self.value(v);
                }
                self.directives(&f.directives);
                self.set(&f.selection_set, fragments);
            }
            Selection::InlineFragment(i) => {
                self.directives(&i.directives);
                self.set(&i.selection_set, fragments);
            }
            Selection::FragmentSpread(s) => {
                self.directives(&s.directives);
                if self.fragments.insert(s.fragment_name.clone())
                    && let Some(f) = fragments.get(s.fragment_name.as_str())
                {
                    self.directives(&f.directives);
                    self.set(&f.selection_set, fragments);
                }
            }
        }
    }

    fn directives(&mut self, dirs: &[graphql_parser::query::Directive<'static, String>]) {
        for d in dirs {
            for (_, v) in &d.arguments {
                self.value(v);
            }
        }
    }

    fn value(&mut self, v: &AstValue<'static, String>) {
        match v {
            AstValue::Variable(n) => {
                self.variables.insert(n.clone());
            }
            AstValue::List(items) => items.iter().for_each(|i| self.value(i)),
            AstValue::Object(fields) => fields.values().for_each(|i| self.value(i)),
            _ => {}
        }
    }
}

/// Adds `__typename` to every selection set with fields (a harmless extra
/// key: projection only writes the fields the client selected). It is valid
/// on any composite type
/// (<https://spec.graphql.org/October2021/#sec-Type-Name-Introspection>);
/// a leaf's empty selection set is left empty, as a leaf may have none
/// (<https://spec.graphql.org/October2021/#sec-Leaf-Field-Selections>).
/// A spread gets it in its fragment's definition instead.
fn with_typename(set: &mut SelectionSet<'static, String>) {
    if set.items.is_empty() {
        return;
    }
    for item in &mut set.items {
        match item {
            Selection::Field(f) => with_typename(&mut f.selection_set),
            Selection::InlineFragment(i) => with_typename(&mut i.selection_set),
            Selection::FragmentSpread(_) => {}
        }
    }
    set.items.insert(
        0,
        Selection::Field(Field {
            position: Pos::default(),
            alias: None,
            name: "__typename".to_owned(),
            arguments: Vec::new(),
            directives: Vec::new(),
            selection_set: SelectionSet {
                span: (Pos::default(), Pos::default()),
                items: Vec::new(),
            },
        }),
    );
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::graphql::fetch::testing::prepare;

    #[test]
    fn the_query_keeps_the_clients_selection() {
        let p = prepare(
            r#"subscription S($full: Boolean!, $n: ID) {
                 inc: incidentUpdated(id: $n) { id ...Owner @include(if: $full) t: title last { ... on Comment { text } } }
                 ...Root
               }
               fragment Owner on Incident { owner { name } }
               fragment Root on Subscription { inc: incidentUpdated(id: $n) { severity } }"#,
            json!({"full": true, "n": "7"}),
        );
        let f = p.fetch().unwrap();
        let doc = f.document();
        let parsed = graphql_parser::parse_query::<String>(doc).expect("the query parses");
        assert_eq!(parsed.definitions.len(), 2, "{doc}");
        assert!(
            doc.contains("query SubcarResolve($full: Boolean!, $subcar_id: ID!)"),
            "{doc}"
        );
        assert!(doc.contains("inc: incident(id: $subcar_id)"), "{doc}");
        assert!(doc.contains("...Owner @include(if: $full)"), "{doc}");
        assert!(doc.contains("fragment Owner on Incident"), "{doc}");
        // The root field's own arguments and the fragments on Subscription
        // are the subscription's, not the query's.
        assert!(doc.contains("severity"), "{doc}");
        assert!(!doc.contains("Root") && !doc.contains("$n"), "{doc}");
        let body: Value =
            serde_json::from_slice(&f.body(&serde_json::from_value(json!({"id": "42"})).unwrap()))
                .unwrap();
        assert_eq!(body["variables"], json!({"full": true, "subcar_id": "42"}));
        assert_eq!(body["operationName"], "SubcarResolve");
    }
}
