//! The root fields of a mutation, for `[[triggers]]`: which fields the
//! selected operation runs, under which response key (aliases resolved,
//! fragments and `@skip`/`@include` applied), with their coerced arguments
//! (variables substituted). Pure; the upstream stays the authority on
//! whether the mutation is valid: this only reads what it asks for.

use graphql_parser::query::OperationDefinition;
use serde_json::{Map, Value};

use super::ast::{Doc, fragments, op_view};
use super::schema::{Schema, TypeDef, TypeKind, TypeSource};
use super::{coerce, document, plan, select_operation};

/// One root field of a mutation operation.
#[derive(Debug, Clone, PartialEq)]
pub struct RootField {
    /// The schema field (`updateIncident`).
    pub name: String,
    /// Where its value is in the response's `data` (the alias, or the name).
    pub key: String,
    /// Its arguments, coerced against the Mutation type when the upstream's
    /// schema is known, the literals with variables substituted otherwise.
    pub args: Map<String, Value>,
}

impl Schema {
    /// The Mutation root's name and field names, or `None` while the
    /// upstream's schema is not loaded (it defines the Mutation type). An
    /// upstream without mutations has none.
    pub fn mutation_fields(&self) -> Option<(&str, Vec<&str>)> {
        if !self.upstream_loaded {
            return None;
        }
        let Some(root) = self.mutation.as_deref().and_then(|m| self.get(m)) else {
            return Some(("Mutation", Vec::new()));
        };
        let fields = root.fields().unwrap_or_default();
        Some((&root.name, fields.iter().map(|f| f.name.as_str()).collect()))
    }

    /// The root fields named by `wanted` that the operation selected in
    /// `query` (by `operation_name`) runs, when it is a mutation; `None`
    /// for a query, a subscription or a document that does not parse
    /// (under the document limits) or select an operation: the upstream
    /// answers those with its own errors, and nothing triggers.
    pub fn mutation_root_fields(
        &self,
        query: &str,
        operation_name: Option<&str>,
        variables: &Map<String, Value>,
        wanted: &dyn Fn(&str) -> bool,
    ) -> Option<Vec<RootField>> {
        let doc: Doc = document::parse(query, &self.limits).ok()?;
        let op = select_operation(&doc, operation_name.filter(|n| !n.is_empty())).ok()?;
        if !matches!(op, OperationDefinition::Mutation(_)) {
            return None;
        }
        let view = op_view(op);
        let root = self.mutation.as_deref().and_then(|m| self.get(m));
        // Without the upstream's schema the variables cannot be coerced; the
        // upstream coerced them anyway, and they are taken as sent.
        let vars = match root {
            Some(_) => coerce::coerce_variables(self, view.vars, variables).ok()?,
            None => variables.clone(),
        };
        let unknown = TypeDef {
            name: "Mutation".into(),
            description: None,
            kind: TypeKind::Object {
                interfaces: Vec::new(),
                fields: Vec::new(),
            },
            source: TypeSource::Upstream,
        };
        let ty = root.unwrap_or(&unknown);
        let fragments = fragments(&doc);
        let compiler = plan::Compiler::new(self, &fragments, &vars);
        let mut out = Vec::new();
        for (key, nodes) in compiler.collect(ty, &[view.selection_set]) {
            let node = nodes[0];
            if !wanted(&node.name) {
                continue;
            }
            let args = match ty.field(&node.name) {
                Some(def) => {
                    coerce::argument_values(self, &def.args, &node.arguments, &vars, node.position)
                        .ok()?
                }
                None => node
                    .arguments
                    .iter()
                    .map(|(name, v)| (name.clone(), coerce::untyped(v, Some(&vars))))
                    .collect(),
            };
            out.push(RootField {
                name: node.name.clone(),
                key: key.to_owned(),
                args,
            });
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const SUB: &str = "type Subscription { x: Int }";
    const UPSTREAM: &str = "type Query { a: Int } enum Severity { P1 P2 } type Incident { id: ID! } type Mutation { updateIncident(id: ID!, severity: Severity = P2): Incident other: Int }";

    fn fields(schema: &Schema, query: &str, vars: serde_json::Value) -> Option<Vec<RootField>> {
        let vars = vars.as_object().cloned().unwrap_or_default();
        schema.mutation_root_fields(query, None, &vars, &|f| f == "updateIncident")
    }

    fn known() -> Schema {
        Schema::build(SUB, Some(UPSTREAM)).unwrap()
    }

    #[test]
    fn aliases_fragments_and_skip_are_resolved_and_arguments_coerced() {
        let q = "mutation($id: ID!, $no: Boolean!) { a: updateIncident(id: $id) { id } other ...F b: updateIncident(id: 7, severity: P1) @skip(if: $no) } fragment F on Mutation { c: updateIncident(id: \"9\") { id } }";
        let got = fields(&known(), q, json!({"id": 4, "no": false})).unwrap();
        let keys: Vec<_> = got
            .iter()
            .map(|f| (f.key.as_str(), json!(f.args)))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("a", json!({"id": "4", "severity": "P2"})),
                ("c", json!({"id": "9", "severity": "P2"})),
                ("b", json!({"id": "7", "severity": "P1"})),
            ]
        );
        let skipped = fields(&known(), q, json!({"id": 4, "no": true})).unwrap();
        assert_eq!(skipped.len(), 2);
    }

    #[test]
    fn queries_and_broken_documents_trigger_nothing() {
        assert_eq!(fields(&known(), "{ a }", json!({})), None);
        assert_eq!(
            fields(&known(), "mutation { updateIncident(", json!({})),
            None
        );
        assert_eq!(
            fields(&known(), "mutation { other }", json!({})),
            Some(vec![])
        );
    }

    #[test]
    fn without_the_upstream_schema_arguments_are_taken_as_sent() {
        let schema = Schema::build(SUB, None).unwrap();
        let got = fields(
            &schema,
            "mutation($s: String) { updateIncident(id: 4, severity: $s) { id } }",
            json!({"s": "P1"}),
        )
        .unwrap();
        assert_eq!(json!(got[0].args), json!({"id": 4, "severity": "P1"}));
    }
}
