//! Compiles a validated subscription's selection set into a projection
//! plan, once per subscription: fragments inlined, `@skip`/`@include`
//! decided with the coerced variables, fields collected per possible
//! runtime type (graphql-js `collectFields` / `collectSubfields`).
//!
//! Spec: <https://spec.graphql.org/October2021/#sec-Field-Collection> (`CollectFields`,
//! `DoesFragmentTypeApply`) and
//! <https://spec.graphql.org/October2021/#sec-Value-Completion.Merging-Selection-Sets>.
//! Doing this once per subscription, not once per event, is sound because
//! an event changes neither the document nor the variables; only which
//! possible type an abstract value has, and every one is planned ahead.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use graphql_parser::query::{Directive, Field, Selection, TypeCondition, Value as AstValue};
use serde_json::{Map, Value};

use super::ast::{Frag, Sel};
use super::error::Location;
use super::error::loc;
use super::schema::{Schema, TypeDef, TypeKind, TypeRef};
use super::value::write_str;

/// How a named type's values are completed.
#[derive(Debug)]
pub(crate) enum Completion {
    Int,
    Float,
    String,
    Boolean,
    Id,
    Enum(Arc<str>, HashSet<String>),
    /// Custom scalars pass through untouched.
    Custom,
    Typename,
    Object(ObjectPlan),
    Abstract(AbstractPlan),
}

#[derive(Debug)]
pub(crate) struct AbstractPlan {
    pub name: String,
    /// One plan per possible runtime type, by `__typename`.
    pub by_type: HashMap<String, ObjectPlan>,
    /// Every type name of the schema and whether it is an object type
    /// (to word errors for impossible `__typename`s as graphql-js does).
    pub kinds: Arc<HashMap<String, bool>>,
}

#[derive(Debug)]
pub(crate) struct ObjectPlan {
    pub fields: Vec<FieldPlan>,
}

#[derive(Debug)]
pub(crate) struct FieldPlan {
    pub key: String,
    /// `"key":` pre-serialised.
    pub key_json: Box<[u8]>,
    pub name: String,
    pub parent_type: Arc<str>,
    pub ty: TypeRef,
    pub locations: Vec<Location>,
    /// Arguments as written, variables substituted, sorted by name
    /// (part of the grouping key).
    pub args_canon: String,
    pub completion: Completion,
}

pub(crate) struct Compiler<'a> {
    pub schema: &'a Schema,
    pub fragments: &'a HashMap<&'a str, &'a Frag>,
    pub vars: &'a Map<String, Value>,
    pub kinds: Arc<HashMap<String, bool>>,
}

type AstField = Field<'static, String>;

impl<'a> Compiler<'a> {
    pub fn new(
        schema: &'a Schema,
        fragments: &'a HashMap<&'a str, &'a Frag>,
        vars: &'a Map<String, Value>,
    ) -> Self {
        let kinds = schema
            .types
            .values()
            .map(|t| (t.name.clone(), matches!(t.kind, TypeKind::Object { .. })))
            .collect();
        Self {
            schema,
            fragments,
            vars,
            kinds: Arc::new(kinds),
        }
    }

    /// The fields of `sets` that apply to runtime type `ty`, grouped by
    /// response key in first-seen order.
    pub fn collect<'s>(&self, ty: &TypeDef, sets: &[&'s Sel]) -> Vec<(&'s str, Vec<&'s AstField>)>
    where
        'a: 's,
    {
        let mut out: Vec<(&'s str, Vec<&'s AstField>)> = Vec::new();
        let mut visited = HashSet::new();
        for s in sets {
            self.collect_into(ty, s, &mut out, &mut visited);
        }
        out
    }

    fn collect_into<'s>(
        &self,
        ty: &TypeDef,
        set: &'s Sel,
        out: &mut Vec<(&'s str, Vec<&'s AstField>)>,
        visited: &mut HashSet<&'s str>,
    ) where
        'a: 's,
    {
        for sel in &set.items {
            match sel {
                Selection::Field(f) => {
                    if !self.included(&f.directives) {
                        continue;
                    }
                    let key = f.alias.as_deref().unwrap_or(&f.name);
                    match out.iter_mut().find(|(k, _)| *k == key) {
                        Some((_, v)) => v.push(f),
                        None => out.push((key, vec![f])),
                    }
                }
                Selection::InlineFragment(i) => {
                    if !self.included(&i.directives) {
                        continue;
                    }
                    if let Some(TypeCondition::On(tc)) = &i.type_condition
                        && !self.applies(tc, ty)
                    {
                        continue;
                    }
                    self.collect_into(ty, &i.selection_set, out, visited);
                }
                // A fragment spread again in the same collection adds
                // nothing; a skipped spread is not marked visited, so a later
                // included spread of it still counts (spec's `CollectFields`).
                Selection::FragmentSpread(sp) => {
                    if visited.contains(sp.fragment_name.as_str()) || !self.included(&sp.directives)
                    {
                        continue;
                    }
                    visited.insert(&sp.fragment_name);
                    let Some(frag) = self.fragments.get(sp.fragment_name.as_str()).copied() else {
                        continue;
                    };
                    let TypeCondition::On(tc) = &frag.type_condition;
                    if !self.applies(tc, ty) {
                        continue;
                    }
                    self.collect_into(ty, &frag.selection_set, out, visited);
                }
            }
        }
    }

    /// The spec's `DoesFragmentTypeApply`: the condition is the type itself,
    /// or an interface or union it belongs to.
    fn applies(&self, condition: &str, ty: &TypeDef) -> bool {
        condition == ty.name || self.schema.is_possible(condition, &ty.name)
    }

    /// The `if:` of `@skip`/`@include`, literal or from a coerced variable;
    /// `None`, which leaves the selection in, when the directive is absent
    /// or (ruled out by validation and coercion) its `if` is no boolean.
    fn directive_if(&self, dirs: &[Directive<'static, String>], name: &str) -> Option<bool> {
        let d = dirs.iter().find(|d| d.name == name)?;
        match &d.arguments.iter().find(|(n, _)| n == "if")?.1 {
            AstValue::Boolean(b) => Some(*b),
            AstValue::Variable(v) => self.vars.get(v).and_then(Value::as_bool),
            _ => None,
        }
    }

    /// Neither `@skip(if: true)` nor `@include(if: false)`: with both
    /// present, a selection is kept only if both agree
    /// (<https://spec.graphql.org/October2021/#sec--skip>,
    /// <https://spec.graphql.org/October2021/#sec--include>).
    pub fn included(&self, dirs: &[Directive<'static, String>]) -> bool {
        if dirs.is_empty() {
            return true;
        }
        self.directive_if(dirs, "skip") != Some(true)
            && self.directive_if(dirs, "include") != Some(false)
    }

    pub fn object(&self, ty: &TypeDef, sets: &[&Sel]) -> ObjectPlan {
        let parent: Arc<str> = Arc::from(ty.name.as_str());
        let fields = self
            .collect(ty, sets)
            .into_iter()
            .filter_map(|(key, nodes)| self.field(ty, &parent, key, &nodes))
            .collect();
        ObjectPlan { fields }
    }

    pub fn field(
        &self,
        parent: &TypeDef,
        parent_name: &Arc<str>,
        key: &str,
        nodes: &[&AstField],
    ) -> Option<FieldPlan> {
        // Every node of one response key is the same field with the same
        // arguments (validation's field merging guarantees it), so the first
        // speaks for all; their subselections are merged, and every node's
        // location is kept for errors, as graphql-js reports them.
        let first = nodes[0];
        let mut key_json = Vec::with_capacity(key.len() + 3);
        write_str(&mut key_json, key);
        key_json.push(b':');
        let (ty, completion) = if first.name == "__typename" {
            (
                TypeRef::NonNull(Box::new(TypeRef::Named("String".into()))),
                Completion::Typename,
            )
        } else {
            let def = parent.field(&first.name)?;
            let sets: Vec<&Sel> = nodes.iter().map(|n| &n.selection_set).collect();
            (def.ty.clone(), self.completion(def.ty.named(), &sets)?)
        };
        Some(FieldPlan {
            key: key.to_owned(),
            key_json: key_json.into_boxed_slice(),
            name: first.name.clone(),
            parent_type: parent_name.clone(),
            ty,
            locations: nodes.iter().map(|n| loc(n.position)).collect(),
            args_canon: self.args_canon(&first.arguments),
            completion,
        })
    }

    fn completion(&self, named: &str, sets: &[&Sel]) -> Option<Completion> {
        let t = self.schema.get(named)?;
        Some(match &t.kind {
            TypeKind::Scalar { .. } => match named {
                "Int" => Completion::Int,
                "Float" => Completion::Float,
                "String" => Completion::String,
                "Boolean" => Completion::Boolean,
                "ID" => Completion::Id,
                _ => Completion::Custom,
            },
            TypeKind::Enum { values } => Completion::Enum(
                Arc::from(named),
                values.iter().map(|v| v.name.clone()).collect(),
            ),
            TypeKind::Object { .. } => Completion::Object(self.object(t, sets)),
            // Which fields apply depends on the runtime type (type
            // conditions), so each possible object type gets its own plan;
            // the event's `__typename` picks one.
            TypeKind::Interface { .. } | TypeKind::Union { .. } => {
                let mut by_type = HashMap::new();
                for p in self.schema.possible_types(named).into_iter().flatten() {
                    if let Some(pt) = self.schema.get(p) {
                        by_type.insert(p.clone(), self.object(pt, sets));
                    }
                }
                Completion::Abstract(AbstractPlan {
                    name: named.to_owned(),
                    by_type,
                    kinds: self.kinds.clone(),
                })
            }
            TypeKind::InputObject { .. } => return None,
        })
    }

    fn args_canon(&self, args: &[(String, AstValue<'static, String>)]) -> String {
        if args.is_empty() {
            return String::new();
        }
        let mut sorted: Vec<_> = args.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        let parts: Vec<String> = sorted
            .iter()
            .map(|(n, v)| format!("{n}:{}", self.canon_value(v)))
            .collect();
        format!("({})", parts.join(","))
    }

    fn canon_value(&self, v: &AstValue<'static, String>) -> String {
        match v {
            // An unset variable leaves the argument out (its default
            // applies), which differs from an explicit null: the two must
            // not share a key.
            AstValue::Variable(n) => match self.vars.get(n) {
                Some(v) => v.to_string(),
                None => "<unset>".into(),
            },
            AstValue::List(items) => {
                format!(
                    "[{}]",
                    items
                        .iter()
                        .map(|i| self.canon_value(i))
                        .collect::<Vec<_>>()
                        .join(",")
                )
            }
            AstValue::Object(fields) => format!(
                "{{{}}}",
                fields
                    .iter()
                    .map(|(k, v)| format!("{k}:{}", self.canon_value(v)))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            other => super::value::print_ast_value(other),
        }
    }
}
