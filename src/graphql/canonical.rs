//! Grouping keys: the canonical form of a prepared subscription (root field,
//! coerced arguments, the compiled selection with fragments inlined,
//! `@skip`/`@include` decided and variables substituted). Documents that
//! differ only in whitespace, argument order or fragment naming get equal
//! keys, and so share filter evaluation and serialised output.
//!
//! Beyond the document's spelling, what is left out of the key is only what
//! the spec says cannot change the answer: argument order
//! (<https://spec.graphql.org/October2021/#sec-Language.Arguments.Arguments-are-unordered>)
//! and input object field order
//! (<https://spec.graphql.org/October2021/#sec-Input-Object-Values.Input-object-fields-are-unordered>).
//! Field order and aliases stay in: the response's keys and their order
//! follow the selection (<https://spec.graphql.org/October2021/#sec-Objects.Field-Ordering>),
//! so two selections differing in either serialise differently.

use std::fmt::Write;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde_json::{Map, Value};

use super::plan::{Completion, FieldPlan, ObjectPlan};

/// Identifies a group of identical subscriptions. Cheap to clone and hash
/// (the hash is computed once).
#[derive(Debug, Clone)]
pub struct GroupKey {
    hash: u64,
    text: Arc<str>,
}

impl PartialEq for GroupKey {
    // The text is compared too: a 64-bit hash collision must never put two
    // different subscriptions in one group.
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.text == other.text
    }
}

impl Eq for GroupKey {}

impl Hash for GroupKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl GroupKey {
    /// `args` are the coerced arguments, defaults filled in, so leaving out
    /// an argument and giving its default value yield one key.
    pub(crate) fn new(root: &FieldPlan, args: &Map<String, Value>) -> Self {
        let mut text = String::with_capacity(128);
        text.push_str(&root.name);
        text.push('(');
        let mut sorted: Vec<_> = args.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        for (i, (k, v)) in sorted.into_iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            let _ = write!(text, "{k}:");
            canonical_json(&mut text, v);
        }
        text.push(')');
        write_completion(&mut text, &root.completion);
        let mut h = std::collections::hash_map::DefaultHasher::new();
        text.hash(&mut h);
        Self {
            hash: h.finish(),
            text: Arc::from(text),
        }
    }

    /// The canonical text (for logs and debugging).
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl std::fmt::Display for GroupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

fn canonical_json(out: &mut String, v: &Value) {
    match v {
        Value::Object(m) => {
            let mut sorted: Vec<_> = m.iter().collect();
            sorted.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{}:", Value::String(k.clone()));
                canonical_json(out, v);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(out, v);
            }
            out.push(']');
        }
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

fn write_object(out: &mut String, obj: &ObjectPlan) {
    out.push('{');
    for (i, f) in obj.fields.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if f.key != f.name {
            let _ = write!(out, "{}:", f.key);
        }
        out.push_str(&f.name);
        out.push_str(&f.args_canon);
        write_completion(out, &f.completion);
    }
    out.push('}');
}

fn write_completion(out: &mut String, c: &Completion) {
    match c {
        Completion::Object(o) => write_object(out, o),
        // The possible types in name order: the map's own order is not
        // stable, and it does not show in the answer.
        Completion::Abstract(a) => {
            let mut types: Vec<_> = a.by_type.iter().collect();
            types.sort_by(|x, y| x.0.cmp(y.0));
            out.push('<');
            for (name, o) in types {
                out.push_str(name);
                write_object(out, o);
            }
            out.push('>');
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, json};

    use crate::graphql::{Prepared, Schema};

    const SDL: &str = r#"
        enum Severity { P1 P2 P3 }
        type Incident { id: ID! title: String severity: Severity owner: User }
        type User { id: ID! name: String }
        type Subscription {
          incidentUpdated(id: ID, severities: [Severity!], limit: Int = 10): Incident
        }
    "#;

    fn key(q: &str, vars: serde_json::Value) -> crate::graphql::GroupKey {
        let schema = Schema::build(SDL, None).unwrap();
        let vars: Map<String, serde_json::Value> = serde_json::from_value(vars).unwrap();
        match schema.prepare(q, None, &vars).unwrap() {
            Prepared::Subscription(s) => s.group_key().clone(),
            Prepared::Passthrough(_) => panic!("not a subscription"),
        }
    }

    #[test]
    fn whitespace_argument_order_and_fragment_names_do_not_matter() {
        let a = key(
            "subscription { incidentUpdated(id: \"1\", severities: [P1]) { id title owner { name } } }",
            json!({}),
        );
        let b = key(
            "subscription S {\n  incidentUpdated(severities: [P1]   id: \"1\") {\n ...F } }\nfragment F on Incident { id title owner { ...U } } fragment U on User { name }",
            json!({}),
        );
        let c = key(
            "subscription($s: [Severity!], $id: ID) { incidentUpdated(severities: $s, id: $id) { ...Other } } fragment Other on Incident { id ... on Incident { title } owner { name } }",
            json!({"s": "P1", "id": "1"}),
        );
        assert_eq!(a, b);
        assert_eq!(a, c);
    }

    #[test]
    fn selection_and_arguments_matter() {
        let base = key(
            "subscription { incidentUpdated(id: \"1\") { id title } }",
            json!({}),
        );
        assert_ne!(
            base,
            key(
                "subscription { incidentUpdated(id: \"2\") { id title } }",
                json!({})
            )
        );
        assert_ne!(
            base,
            key(
                "subscription { incidentUpdated(id: \"1\") { id } }",
                json!({})
            )
        );
        assert_ne!(
            base,
            key(
                "subscription { incidentUpdated(id: \"1\") { id t: title } }",
                json!({})
            )
        );
        assert_ne!(
            base,
            key(
                "subscription { incidentUpdated(id: \"1\") { title id } }",
                json!({})
            )
        );
        assert_ne!(
            base,
            key(
                "subscription { incidentUpdated(id: \"1\", limit: 3) { id title } }",
                json!({})
            )
        );
    }

    #[test]
    fn skip_and_include_are_decided_by_variables() {
        let a = key(
            "subscription($x: Boolean!) { incidentUpdated { id title @include(if: $x) } }",
            json!({"x": false}),
        );
        let b = key("subscription { incidentUpdated { id } }", json!({}));
        assert_eq!(a, b);
        let c = key(
            "subscription($x: Boolean!) { incidentUpdated { id title @include(if: $x) } }",
            json!({"x": true}),
        );
        assert_ne!(a, c);
    }
}
