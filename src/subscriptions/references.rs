//! What a compiled CEL rule reads: the variables it names and the fields of
//! `args` it selects. The `cel` crate's own `Program::references` counts a
//! comprehension's loop variable (`t` in `event.tags.exists(t, t == 'x')`)
//! as a variable, so the AST is walked here with the bindings in scope.

use std::collections::BTreeSet;

use cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue};

/// The free variables and the `args` fields of one expression.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reads {
    /// Names the expression resolves from its evaluation context.
    pub variables: BTreeSet<String>,
    /// `args.x`, `has(args.x)` and `args['x']`: the argument names read.
    pub args: BTreeSet<String>,
}

impl Reads {
    /// Walks `root`; `is_type` tells type names (`int`, `string`, …), which
    /// are identifiers too but not variables.
    pub fn of(root: &IdedExpr, is_type: &dyn Fn(&str) -> bool) -> Self {
        let mut reads = Self::default();
        let mut bound = Vec::new();
        reads.walk(root, &mut bound, is_type);
        reads
    }

    fn walk<'e>(
        &mut self,
        e: &'e IdedExpr,
        bound: &mut Vec<&'e str>,
        is_type: &dyn Fn(&str) -> bool,
    ) {
        match &e.expr {
            Expr::Unspecified | Expr::Literal(_) => {}
            Expr::Ident(name) => {
                // `@result` and the like are the macros' own accumulators.
                if !name.starts_with('@') && !bound.contains(&name.as_str()) && !is_type(name) {
                    self.variables.insert(name.clone());
                }
            }
            Expr::Select(select) => {
                if is_args(&select.operand, bound) {
                    self.args.insert(select.field.clone());
                }
                self.walk(&select.operand, bound, is_type);
            }
            Expr::Call(call) => {
                if call.func_name == "_[_]"
                    && let [target, key] = call.args.as_slice()
                    && is_args(target, bound)
                    && let Expr::Literal(LiteralValue::String(key)) = &key.expr
                {
                    self.args.insert(key.inner().to_owned());
                }
                for arg in call.target.iter().map(|t| &**t).chain(&call.args) {
                    self.walk(arg, bound, is_type);
                }
            }
            Expr::List(list) => {
                for item in &list.elements {
                    self.walk(item, bound, is_type);
                }
            }
            Expr::Map(map) => {
                for entry in &map.entries {
                    self.walk_entry(&entry.expr, bound, is_type);
                }
            }
            Expr::Struct(s) => {
                for entry in &s.entries {
                    self.walk_entry(&entry.expr, bound, is_type);
                }
            }
            Expr::Comprehension(c) => {
                // The range and the initial value are outside the loop's scope.
                self.walk(&c.iter_range, bound, is_type);
                self.walk(&c.accu_init, bound, is_type);
                let depth = bound.len();
                bound.push(&c.iter_var);
                bound.extend(c.iter_var2.as_deref());
                bound.push(&c.accu_var);
                for inner in [&c.loop_cond, &c.loop_step, &c.result] {
                    self.walk(inner, bound, is_type);
                }
                bound.truncate(depth);
            }
        }
    }

    fn walk_entry<'e>(
        &mut self,
        entry: &'e EntryExpr,
        bound: &mut Vec<&'e str>,
        is_type: &dyn Fn(&str) -> bool,
    ) {
        match entry {
            EntryExpr::StructField(f) => self.walk(&f.value, bound, is_type),
            EntryExpr::MapEntry(m) => {
                self.walk(&m.key, bound, is_type);
                self.walk(&m.value, bound, is_type);
            }
        }
    }
}

/// Whether `e` is the variable `args` (not a loop variable of that name).
fn is_args(e: &IdedExpr, bound: &[&str]) -> bool {
    matches!(&e.expr, Expr::Ident(name) if name == "args" && !bound.contains(&"args"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reads(source: &str) -> (Vec<String>, Vec<String>) {
        let program = cel::Env::stdlib().compile(source).unwrap();
        let r = Reads::of(program.expression(), &|n| n == "int");
        (
            r.variables.into_iter().collect(),
            r.args.into_iter().collect(),
        )
    }

    #[test]
    fn variables_and_argument_names() {
        assert_eq!(
            reads("args.severities == null || event.severity in args.severities"),
            (
                vec!["args".into(), "event".into()],
                vec!["severities".into()]
            )
        );
        assert_eq!(
            reads("has(args.team) && args['tenant'] == claims.tenant"),
            (
                vec!["args".into(), "claims".into()],
                vec!["team".into(), "tenant".into()]
            )
        );
        assert_eq!(reads("evnt.id == 1"), (vec!["evnt".into()], vec![]));
    }

    #[test]
    fn loop_variables_and_type_names_are_not_variables() {
        assert_eq!(
            reads("event.tags.exists(t, t == 'x') && type(event.n) == int"),
            (vec!["event".into()], vec![])
        );
        // The loop variable is bound inside the loop only.
        assert_eq!(
            reads("event.tags.all(t, t != '') && t == 1"),
            (vec!["event".into(), "t".into()], vec![])
        );
        assert_eq!(
            reads("[1].map(args, args + 1) == [2]"),
            (vec![], vec![]),
            "a loop variable named args is not the args variable"
        );
    }
}
