//! `OverlappingFieldsCanBeMerged`: fields sharing a response key in one
//! selection set must be the same field with the same arguments (unless
//! their parents are distinct object types) and have compatible shapes.
//! Fragments are inlined before comparing, which finds the same conflicts
//! as graphql-js's pairwise fragment comparison.
//!
//! Spec: <https://spec.graphql.org/October2021/#sec-Field-Selection-Merging>
//! (`FieldsInSetCanMerge` and `SameResponseShape`). Directives are not
//! compared: fields may differ in them.
//!
//! Cost: each pair of AST fields is compared once per (parents, mutual
//! exclusion) and remembered, as graphql-js's `PairSet` does for fragment
//! pairs, so a chain of fragments that each repeat a field costs linear,
//! not exponential, time; identical fields (same parent, name, arguments
//! and selection, as printed) sharing a response key are compared once, so
//! many repeats of one field are not quadratic. It runs only on documents
//! without fragment cycles, whose depth through fragments is capped by
//! `limits.document.max_depth`, so its recursion is bounded. What is left
//! quadratic (many fields sharing a response key with different
//! selections, as in graphql-js) is counted, and past
//! `limits.document.max_merge_comparisons` the check stops with a
//! `DOCUMENT_TOO_COMPLEX` refusal.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};

use graphql_parser::Pos;
use graphql_parser::query::{Definition, Field, OperationDefinition, Selection, TypeCondition};

use super::ast::{Doc, Frag, Sel};
use super::error::GraphQLError;
use super::error::error;
use super::schema::{Schema, TypeDef, TypeRef};
use super::value::print_ast_value;

type AstField = Field<'static, String>;

struct Entry<'d, 's> {
    parent: Option<&'s TypeDef>,
    field: &'d AstField,
    ty: Option<TypeRef>,
}

#[derive(Clone)]
enum Reason {
    Msg(String),
    Sub(Vec<(String, Reason)>),
}

impl Reason {
    fn message(&self) -> String {
        match self {
            Reason::Msg(m) => m.clone(),
            Reason::Sub(subs) => subs
                .iter()
                .map(|(k, r)| format!("subfields \"{k}\" conflict because {}", r.message()))
                .collect::<Vec<_>>()
                .join(" and "),
        }
    }
}

/// A conflict: why, and where on each side.
type Conflict = Option<(Reason, Vec<Pos>, Vec<Pos>)>;

/// Identity of one comparison: both AST fields, both parent types, and
/// whether the parents are already known to be mutually exclusive.
type PairKey = (usize, usize, usize, usize, bool);

/// Errors reported at most (graphql-js `validate` stops at 100 too; a
/// subcar safety bound, not a spec rule), so
/// that many conflicting repeats cannot build a huge answer.
const MAX_ERRORS: usize = 100;

struct Checker<'s, 'd> {
    schema: &'s Schema,
    fragments: &'d HashMap<&'d str, &'d Frag>,
    compared: RefCell<HashMap<PairKey, Conflict>>,
    /// Work done so far: one per comparison and per field collected for
    /// one; past `limits.document.max_merge_comparisons` the check stops
    /// and the document is refused.
    work: Cell<usize>,
}

/// Every merge conflict in `doc`.
pub(crate) fn check<'d>(
    schema: &Schema,
    fragments: &'d HashMap<&'d str, &'d Frag>,
    doc: &'d Doc,
) -> Vec<GraphQLError> {
    let c = Checker {
        schema,
        fragments,
        compared: RefCell::new(HashMap::new()),
        work: Cell::new(0),
    };
    let mut errors = Vec::new();
    for def in &doc.definitions {
        match def {
            Definition::Operation(op) => {
                let (root, set) = match op {
                    OperationDefinition::SelectionSet(s) => (schema.query.as_deref(), s),
                    OperationDefinition::Query(q) => (schema.query.as_deref(), &q.selection_set),
                    OperationDefinition::Mutation(m) => {
                        (schema.mutation.as_deref(), &m.selection_set)
                    }
                    OperationDefinition::Subscription(s) => {
                        (Some(schema.subscription.as_str()), &s.selection_set)
                    }
                };
                c.visit(root.and_then(|r| schema.get(r)), set, &mut errors);
            }
            Definition::Fragment(f) => {
                let TypeCondition::On(tc) = &f.type_condition;
                c.visit(schema.get(tc), &f.selection_set, &mut errors);
            }
        }
    }
    if c.exhausted() {
        let max = schema.limits.max_merge_comparisons;
        errors.push(super::document::too_complex(
            "max_merge_comparisons",
            format!(
                "Checking that the document's fields can be merged takes more than {max} comparisons (limits.document.max_merge_comparisons)."
            ),
        ));
    }
    errors
}

impl<'s, 'd> Checker<'s, 'd> {
    /// Counts `n` units of work; false once the budget is spent.
    fn spend(&self, n: usize) -> bool {
        self.work.set(self.work.get().saturating_add(n));
        !self.exhausted()
    }

    fn exhausted(&self) -> bool {
        self.work.get() > self.schema.limits.max_merge_comparisons
    }

    fn visit(&self, parent: Option<&'s TypeDef>, set: &'d Sel, errors: &mut Vec<GraphQLError>) {
        if errors.len() >= MAX_ERRORS || self.exhausted() {
            return;
        }
        let fields = self.collect(parent, set);
        for entries in fields.values() {
            let entries = distinct(entries);
            for i in 0..entries.len() {
                if errors.len() >= MAX_ERRORS || self.exhausted() {
                    return;
                }
                for j in i + 1..entries.len() {
                    if let Some((reason, l1, l2)) = self.conflict(false, entries[i], entries[j]) {
                        let key = response_key(entries[i].field);
                        let mut at = l1;
                        at.extend(l2);
                        errors.push(error(
                            format!(
                                "Fields \"{key}\" conflict because {}. Use different aliases on the fields to fetch both if this was intentional.",
                                reason.message()
                            ),
                            &at,
                        ));
                    }
                }
            }
        }
        // Every nested selection set is checked on its own too.
        self.visit_nested(parent, set, errors);
    }

    fn visit_nested(
        &self,
        parent: Option<&'s TypeDef>,
        set: &'d Sel,
        errors: &mut Vec<GraphQLError>,
    ) {
        for sel in &set.items {
            match sel {
                Selection::Field(f) if !f.selection_set.items.is_empty() => {
                    let child = parent
                        .and_then(|p| p.field(&f.name))
                        .and_then(|d| self.schema.get(d.ty.named()));
                    self.visit(child, &f.selection_set, errors);
                }
                Selection::InlineFragment(i) => {
                    let t = match &i.type_condition {
                        Some(TypeCondition::On(tc)) => self.schema.get(tc),
                        None => parent,
                    };
                    self.visit_nested(t, &i.selection_set, errors);
                }
                _ => {}
            }
        }
    }

    fn collect(
        &self,
        parent: Option<&'s TypeDef>,
        set: &'d Sel,
    ) -> indexmap_lite::Map<'d, Entry<'d, 's>> {
        let mut out = indexmap_lite::Map::default();
        let mut visited = HashSet::new();
        self.collect_into(parent, set, &mut out, &mut visited);
        out
    }

    fn collect_into(
        &self,
        parent: Option<&'s TypeDef>,
        set: &'d Sel,
        out: &mut indexmap_lite::Map<'d, Entry<'d, 's>>,
        visited: &mut HashSet<&'d str>,
    ) {
        for sel in &set.items {
            match sel {
                Selection::Field(f) => {
                    let ty = if f.name == "__typename" {
                        Some(TypeRef::NonNull(Box::new(TypeRef::Named("String".into()))))
                    } else {
                        parent.and_then(|p| p.field(&f.name)).map(|d| d.ty.clone())
                    };
                    out.push(
                        response_key(f),
                        Entry {
                            parent,
                            field: f,
                            ty,
                        },
                    );
                }
                Selection::InlineFragment(i) => {
                    let t = match &i.type_condition {
                        Some(TypeCondition::On(tc)) => self.schema.get(tc),
                        None => parent,
                    };
                    self.collect_into(t, &i.selection_set, out, visited);
                }
                Selection::FragmentSpread(sp) => {
                    if !visited.insert(&sp.fragment_name) {
                        continue;
                    }
                    if let Some(frag) = self.fragments.get(sp.fragment_name.as_str()) {
                        let TypeCondition::On(tc) = &frag.type_condition;
                        self.collect_into(self.schema.get(tc), &frag.selection_set, out, visited);
                    }
                }
            }
        }
    }

    /// [`Self::compare`], remembered per pair.
    fn conflict(&self, mutex: bool, a: &Entry<'d, 's>, b: &Entry<'d, 's>) -> Conflict {
        if std::ptr::eq(a.field, b.field) || !self.spend(1) {
            return None;
        }
        let parent = |e: &Entry<'d, 's>| e.parent.map_or(0, |p| p as *const TypeDef as usize);
        let key = (
            a.field as *const AstField as usize,
            b.field as *const AstField as usize,
            parent(a),
            parent(b),
            mutex,
        );
        if let Some(known) = self.compared.borrow().get(&key) {
            return known.clone();
        }
        let found = self.compare(mutex, a, b);
        self.compared.borrow_mut().insert(key, found.clone());
        found
    }

    /// Two fields sharing a response key. When their parents are distinct
    /// object types they can never both apply to one result object, so only
    /// the shape must agree; otherwise they must also be the same field with
    /// the same arguments. Once parents are exclusive, so are all their
    /// subfields (`mutex` carries it down), as in the spec's
    /// `FieldsInSetCanMerge`.
    fn compare(&self, mutex: bool, a: &Entry<'d, 's>, b: &Entry<'d, 's>) -> Conflict {
        let exclusive = mutex
            || match (a.parent, b.parent) {
                (Some(p1), Some(p2)) => {
                    p1.name != p2.name
                        && matches!(p1.kind, super::schema::TypeKind::Object { .. })
                        && matches!(p2.kind, super::schema::TypeKind::Object { .. })
                }
                _ => false,
            };
        let here = (vec![a.field.position], vec![b.field.position]);
        if !exclusive {
            if a.field.name != b.field.name {
                return Some((
                    Reason::Msg(format!(
                        "\"{}\" and \"{}\" are different fields",
                        a.field.name, b.field.name
                    )),
                    here.0,
                    here.1,
                ));
            }
            if !same_arguments(a.field, b.field) {
                return Some((
                    Reason::Msg("they have differing arguments".into()),
                    here.0,
                    here.1,
                ));
            }
        }
        if let (Some(t1), Some(t2)) = (&a.ty, &b.ty)
            && self.types_conflict(t1, t2)
        {
            return Some((
                Reason::Msg(format!(
                    "they return conflicting types \"{t1}\" and \"{t2}\""
                )),
                here.0,
                here.1,
            ));
        }
        // Subselections are merged as one and compared the same way, so a
        // conflict deep down is reported on the top pair with the subfields
        // as reasons.
        if a.field.selection_set.items.is_empty() || b.field.selection_set.items.is_empty() {
            return None;
        }
        let t1 = a.ty.as_ref().and_then(|t| self.schema.get(t.named()));
        let t2 = b.ty.as_ref().and_then(|t| self.schema.get(t.named()));
        let f1 = self.collect(t1, &a.field.selection_set);
        let f2 = self.collect(t2, &b.field.selection_set);
        if !self.spend(f1.len() + f2.len()) {
            return None;
        }
        let mut subs = Vec::new();
        let (mut l1, mut l2) = here;
        for (key, e1) in f1.iter() {
            let Some(e2) = f2.get(key) else { continue };
            let (e1, e2) = (distinct(e1), distinct(e2));
            for x in &e1 {
                if subs.len() >= MAX_ERRORS {
                    break;
                }
                for y in &e2 {
                    if let Some((r, s1, s2)) = self.conflict(exclusive, x, y) {
                        subs.push((key.to_owned(), r));
                        l1.extend(s1);
                        l2.extend(s2);
                    }
                }
            }
        }
        (!subs.is_empty()).then_some((Reason::Sub(subs), l1, l2))
    }

    /// `SameResponseShape` on the types alone: list and non-null wrappers
    /// must match one for one, and where either named type is a leaf
    /// (scalar or enum) both must be the same type. Two composite types
    /// never conflict here; their subfields are compared instead.
    fn types_conflict(&self, a: &TypeRef, b: &TypeRef) -> bool {
        match (a, b) {
            (TypeRef::List(x), TypeRef::List(y)) | (TypeRef::NonNull(x), TypeRef::NonNull(y)) => {
                self.types_conflict(x, y)
            }
            (TypeRef::List(_), _) | (_, TypeRef::List(_)) => true,
            (TypeRef::NonNull(_), _) | (_, TypeRef::NonNull(_)) => true,
            (TypeRef::Named(x), TypeRef::Named(y)) => {
                let leaf = |n: &str| self.schema.get(n).is_some_and(|t| t.is_leaf());
                (leaf(x) || leaf(y)) && x != y
            }
        }
    }
}

/// The entries of one response key with identical fields (same parent,
/// name, arguments and selection, as printed) kept once: they cannot
/// conflict with each other, and conflict with a third field alike.
fn distinct<'e, 'd, 's>(entries: &'e [Entry<'d, 's>]) -> Vec<&'e Entry<'d, 's>> {
    if entries.len() < 2 {
        return entries.iter().collect();
    }
    let mut seen = HashSet::new();
    entries
        .iter()
        .filter(|e| {
            let parent = e.parent.map_or(0, |p| p as *const TypeDef as usize);
            seen.insert((parent, e.field.to_string()))
        })
        .collect()
}

fn response_key(f: &AstField) -> &str {
    f.alias.as_deref().unwrap_or(&f.name)
}

/// Same names with the same values, in any order (arguments are unordered,
/// <https://spec.graphql.org/October2021/#sec-Language.Arguments.Arguments-are-unordered>).
/// Values are compared as printed: `$a` equals only `$a`, whatever value the
/// variable holds, since validation runs before variables are known.
fn same_arguments(a: &AstField, b: &AstField) -> bool {
    a.arguments.len() == b.arguments.len()
        && a.arguments.iter().all(|(n, v)| {
            b.arguments
                .iter()
                .any(|(n2, v2)| n == n2 && print_ast_value(v) == print_ast_value(v2))
        })
}

/// A tiny insertion-ordered multimap keyed by response key.
mod indexmap_lite {
    use std::collections::HashMap;

    pub(super) struct Map<'k, V> {
        keys: Vec<&'k str>,
        values: Vec<Vec<V>>,
        index: HashMap<&'k str, usize>,
    }

    impl<V> Default for Map<'_, V> {
        fn default() -> Self {
            Self {
                keys: Vec::new(),
                values: Vec::new(),
                index: HashMap::new(),
            }
        }
    }

    impl<'k, V> Map<'k, V> {
        pub(super) fn push(&mut self, key: &'k str, v: V) {
            match self.index.get(key) {
                Some(&i) => self.values[i].push(v),
                None => {
                    self.index.insert(key, self.keys.len());
                    self.keys.push(key);
                    self.values.push(vec![v]);
                }
            }
        }

        /// Values held, over all keys.
        pub(super) fn len(&self) -> usize {
            self.values.iter().map(Vec::len).sum()
        }

        pub(super) fn get(&self, key: &str) -> Option<&Vec<V>> {
            self.index.get(key).map(|&i| &self.values[i])
        }

        pub(super) fn iter(&self) -> impl Iterator<Item = (&'k str, &Vec<V>)> {
            self.keys.iter().copied().zip(self.values.iter())
        }

        pub(super) fn values(&self) -> impl Iterator<Item = &Vec<V>> {
            self.values.iter()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use crate::graphql::Schema;

    const SDL: &str =
        "type Query { a: Int t: T } type T { a: Int b: Int t: T } type Subscription { t: T }";

    fn schema() -> Schema {
        Schema::build(SDL, None).unwrap().with_document_policy(
            crate::graphql::document::DocumentLimits {
                max_tokens: 1_000_000,
                max_fragments: 1000,
                ..Default::default()
            },
            true,
        )
    }

    /// Fast enough that the exponential or quadratic versions (seconds to
    /// hours) cannot pass; generous for a debug build on a busy machine.
    const FAST: Duration = Duration::from_secs(5);

    #[test]
    fn a_doubling_chain_is_linear() {
        let mut doc = String::from("{ t { ...F0 } }");
        for i in 0..30 {
            doc.push_str(&format!(
                " fragment F{i} on T {{ t {{ ...F{j} }} t {{ ...F{j} a }} }}",
                j = i + 1
            ));
        }
        doc.push_str(" fragment F30 on T { a }");
        let started = Instant::now();
        assert_eq!(schema().validate(&doc), vec![]);
        assert!(started.elapsed() < FAST, "{:?}", started.elapsed());
    }

    #[test]
    fn many_repeated_fields_compare_once() {
        let doc = format!("{{ t {{ {} }} }}", "a t { b } ".repeat(10_000));
        let started = Instant::now();
        assert_eq!(schema().validate(&doc), vec![]);
        assert!(started.elapsed() < FAST, "{:?}", started.elapsed());
    }

    #[test]
    fn conflicts_are_still_found_and_capped() {
        let errors = schema().validate("{ t { x: a x: b } }");
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0]
                .message
                .contains("\"a\" and \"b\" are different fields")
        );
        let many: String = (0..300).map(|i| format!("x: a(n: {i}) ")).collect();
        let errors = schema().validate(&format!("{{ t {{ {many} }} }}"));
        assert!(errors.len() <= 100 + 300, "{}", errors.len());
    }

    #[test]
    fn same_key_fields_with_distinct_selections_hit_the_work_cap() {
        let s = Schema::build(SDL, None).unwrap().with_document_policy(
            crate::graphql::document::DocumentLimits {
                max_tokens: 1_000_000,
                max_aliases: 100_000,
                ..Default::default()
            },
            true,
        );
        let many: String = (0..1800).map(|i| format!("t {{ x{i}: a }} ")).collect();
        let started = Instant::now();
        let errors = s.validate(&format!("{{ t {{ {many} }} }}"));
        assert!(started.elapsed() < FAST, "{:?}", started.elapsed());
        let last = errors.last().unwrap();
        let ext = last.extensions.as_ref().unwrap();
        assert_eq!(ext["code"], "DOCUMENT_TOO_COMPLEX");
        assert_eq!(ext["limit"], "max_merge_comparisons");
    }

    #[test]
    fn a_cycle_stops_validation_before_the_merge_check() {
        let doc = "{ t { ...A } } fragment A on T { t { ...A } t { ...A } }";
        let errors = schema().validate(doc);
        // One per spread, as graphql-js; no merge error after them.
        assert_eq!(
            errors
                .iter()
                .map(|e| e.message.as_str())
                .collect::<Vec<_>>(),
            vec!["Cannot spread fragment \"A\" within itself."; 2]
        );
    }
}
