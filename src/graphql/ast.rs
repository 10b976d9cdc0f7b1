//! The parsed-document types every stage of the engine reads, and the
//! selection of the operation a request asks for. Documents are parsed by
//! graphql-parser; the engine keeps them as owned (`'static`) trees.

use std::collections::HashMap;

use graphql_parser::Pos;
use graphql_parser::query::{
    Definition, Directive, Document, FragmentDefinition, OperationDefinition, SelectionSet, Text,
    VariableDefinition,
};

use super::error::GraphQLError;

pub(crate) type Doc = Document<'static, String>;
pub(crate) type Frag = FragmentDefinition<'static, String>;
pub(crate) type Sel = SelectionSet<'static, String>;

/// The parts of an operation the rules need, whatever its kind.
pub(crate) struct OpView<'d> {
    pub kind: &'static str,
    pub name: Option<&'d str>,
    pub position: Pos,
    pub vars: &'d [VariableDefinition<'static, String>],
    pub directives: &'d [Directive<'static, String>],
    pub selection_set: &'d Sel,
}

pub(crate) fn op_view<'d>(op: &'d OperationDefinition<'static, String>) -> OpView<'d> {
    match op {
        OperationDefinition::SelectionSet(s) => OpView {
            kind: "query",
            name: None,
            position: s.span.0,
            vars: &[],
            directives: &[],
            selection_set: s,
        },
        OperationDefinition::Query(q) => OpView {
            kind: "query",
            name: q.name.as_deref(),
            position: q.position,
            vars: &q.variable_definitions,
            directives: &q.directives,
            selection_set: &q.selection_set,
        },
        OperationDefinition::Mutation(q) => OpView {
            kind: "mutation",
            name: q.name.as_deref(),
            position: q.position,
            vars: &q.variable_definitions,
            directives: &q.directives,
            selection_set: &q.selection_set,
        },
        OperationDefinition::Subscription(q) => OpView {
            kind: "subscription",
            name: q.name.as_deref(),
            position: q.position,
            vars: &q.variable_definitions,
            directives: &q.directives,
            selection_set: &q.selection_set,
        },
    }
}

/// The fragment definitions of `doc` by name.
pub(crate) fn fragments(doc: &Doc) -> HashMap<&str, &Frag> {
    doc.definitions
        .iter()
        .filter_map(|d| match d {
            Definition::Fragment(f) => Some((f.name.as_str(), f)),
            Definition::Operation(_) => None,
        })
        .collect()
}

/// The name of `op`, `None` for an anonymous one.
pub fn operation_name<'d, 'a, T: Text<'a>>(op: &'d OperationDefinition<'a, T>) -> Option<&'d str> {
    match op {
        OperationDefinition::SelectionSet(_) => None,
        OperationDefinition::Query(q) => q.name.as_ref().map(AsRef::as_ref),
        OperationDefinition::Mutation(m) => m.name.as_ref().map(AsRef::as_ref),
        OperationDefinition::Subscription(s) => s.name.as_ref().map(AsRef::as_ref),
    }
}

/// The operation a request runs: the one called `name`, or the only one
/// when no name is given (graphql-js `getOperation`, with its messages;
/// <https://spec.graphql.org/October2021/#GetOperation()>). Every place
/// that picks an operation (preparation, introspection, the proxy's
/// subscription check) goes through here.
pub fn select_operation<'d, 'a, T: Text<'a>>(
    doc: &'d Document<'a, T>,
    name: Option<&str>,
) -> Result<&'d OperationDefinition<'a, T>, GraphQLError> {
    let mut ops = doc.definitions.iter().filter_map(|d| match d {
        Definition::Operation(op) => Some(op),
        Definition::Fragment(_) => None,
    });
    match name {
        Some(n) => ops
            .find(|op| operation_name(op) == Some(n))
            .ok_or_else(|| GraphQLError::new(format!("Unknown operation named \"{n}\"."))),
        None => match (ops.next(), ops.next()) {
            (Some(one), None) => Ok(one),
            (None, _) => Err(GraphQLError::new("Must provide an operation.")),
            (Some(_), Some(_)) => Err(GraphQLError::new(
                "Must provide operation name if query contains multiple operations.",
            )),
        },
    }
}
