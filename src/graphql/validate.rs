//! Validation of executable documents against the merged schema: the rules
//! of the GraphQL specification's Validation section that apply to
//! subscription documents, with graphql-js's messages and locations.
//! Literal values are checked in [`super::literal`], field merging in
//! [`super::overlap`].
//!
//! Spec: <https://spec.graphql.org/October2021/#sec-Validation>. Each
//! rule below names its graphql-js rule and links its spec section. The
//! messages and the order errors come in are graphql-js's (the spec fixes
//! neither), so a client sees what a graphql-js server would say.

use std::collections::{BTreeMap, HashMap, HashSet};

use graphql_parser::Pos;
use graphql_parser::query::{Definition, Directive, Selection, TypeCondition, VariableDefinition};

use super::ast::{Doc, Frag, OpView, Sel, op_view};
use super::error::{GraphQLError, error};
use super::literal::{VarUsage, check_literal};
use super::locate::Locator;
use super::schema::{Schema, TypeDef, TypeKind, TypeRef};
use super::value::{did_you_mean, suggestion_list};

struct Validator<'s, 'd> {
    schema: &'s Schema,
    fragments: HashMap<&'d str, &'d Frag>,
    errors: Vec<GraphQLError>,
    /// Variable usages of each executable definition, direct only.
    usages: Vec<VarUsage>,
    /// Fragment names spread directly by the definition being walked.
    spreads: Vec<&'d str>,
    /// Positions graphql-parser does not keep.
    loc: Locator,
}

/// Every validation error of `doc`, in rule order.
pub(crate) fn validate(schema: &Schema, doc: &Doc, source: &str) -> Vec<GraphQLError> {
    let mut v = Validator {
        loc: Locator::new(source),
        schema,
        fragments: HashMap::new(),
        errors: Vec::new(),
        usages: Vec::new(),
        spreads: Vec::new(),
    };
    let ops: Vec<OpView<'_>> = doc
        .definitions
        .iter()
        .filter_map(|d| match d {
            Definition::Operation(op) => Some(op_view(op)),
            Definition::Fragment(_) => None,
        })
        .collect();
    let frags: Vec<&Frag> = doc
        .definitions
        .iter()
        .filter_map(|d| match d {
            Definition::Fragment(f) => Some(f),
            Definition::Operation(_) => None,
        })
        .collect();

    // UniqueOperationNames, LoneAnonymousOperation:
    // <https://spec.graphql.org/October2021/#sec-Operation-Name-Uniqueness>,
    // <https://spec.graphql.org/October2021/#sec-Lone-Anonymous-Operation>.
    let mut seen_ops: HashMap<&str, Pos> = HashMap::new();
    for op in &ops {
        if let Some(name) = op.name {
            if let Some(first) = seen_ops.get(name) {
                v.errors.push(error(
                    format!("There can be only one operation named \"{name}\"."),
                    &[*first, v.loc.name_after(op.position, 1)],
                ));
            } else {
                seen_ops.insert(name, v.loc.name_after(op.position, 1));
            }
        } else if ops.len() > 1 {
            v.errors.push(error(
                "This anonymous operation must be the only defined operation.",
                &[op.position],
            ));
        }
    }
    // UniqueFragmentNames: <https://spec.graphql.org/October2021/#sec-Fragment-Name-Uniqueness>.
    for f in &frags {
        if let Some(first) = v.fragments.get(f.name.as_str()) {
            v.errors.push(error(
                format!("There can be only one fragment named \"{}\".", f.name),
                &[
                    v.loc.name_after(first.position, 1),
                    v.loc.name_after(f.position, 1),
                ],
            ));
        } else {
            v.fragments.insert(&f.name, f);
        }
    }

    // Each fragment is walked once, on its own type condition, and its
    // direct variable usages and spreads are kept; operations then gather
    // them through their spreads. An error inside a fragment is so reported
    // once, however many operations spread it (as graphql-js does).
    let mut frag_info: HashMap<&str, (Vec<VarUsage>, Vec<&str>)> = HashMap::new();
    for f in &frags {
        let TypeCondition::On(tc) = &f.type_condition;
        let ty = v.type_condition(tc, v.loc.name_after(f.position, 3), Some(&f.name));
        v.directives(&f.directives, "FRAGMENT_DEFINITION");
        v.selection_set(ty, &f.selection_set);
        let usages = std::mem::take(&mut v.usages);
        let spreads = std::mem::take(&mut v.spreads);
        frag_info.entry(&f.name).or_insert((usages, spreads));
    }

    let mut used_fragments: HashSet<&str> = HashSet::new();
    for op in &ops {
        // <https://spec.graphql.org/October2021/#sec-Root-Operation-Types>. The
        // subscription root always exists: subcar's own schema must define it.
        let root = match op.kind {
            "query" => schema.query.as_deref(),
            "mutation" => schema.mutation.as_deref(),
            _ => Some(schema.subscription.as_str()),
        };
        let root_type = root.and_then(|r| schema.get(r));
        if root_type.is_none() {
            v.errors.push(error(
                format!("Schema is not configured to execute {} operation.", op.kind),
                &[op.position],
            ));
        }
        if op.kind == "subscription" {
            v.single_root_field(op);
        }
        v.variable_definitions(op);
        v.directives(op.directives, &op.kind.to_uppercase());
        v.selection_set(root_type, op.selection_set);
        // Variables are defined per operation, but used anywhere its
        // fragments reach, transitively: the usages checked are the
        // operation's own plus those of every fragment it spreads
        // (<https://spec.graphql.org/October2021/#sec-All-Variable-Uses-Defined>,
        // <https://spec.graphql.org/October2021/#sec-All-Variables-Used>).
        let mut usages = std::mem::take(&mut v.usages);
        let mut stack = std::mem::take(&mut v.spreads);
        let mut visited: HashSet<&str> = HashSet::new();
        while let Some(name) = stack.pop() {
            if !visited.insert(name) {
                continue;
            }
            used_fragments.insert(name);
            if let Some((u, s)) = frag_info.get(name) {
                usages.extend(u.iter().cloned());
                stack.extend(s.iter().copied());
            }
        }
        v.variables_used(op, &usages);
    }

    // NoUnusedFragments: <https://spec.graphql.org/October2021/#sec-Fragments-Must-Be-Used>.
    for f in &frags {
        if !used_fragments.contains(f.name.as_str()) {
            v.errors.push(error(
                format!("Fragment \"{}\" is never used.", f.name),
                &[f.position],
            ));
        }
    }
    // NoFragmentCycles:
    // <https://spec.graphql.org/October2021/#sec-Fragment-spreads-must-not-form-cycles>.
    let before = v.errors.len();
    v.fragment_cycles(&frags, &frag_info);
    if v.errors.len() > before {
        // Every later walk follows spreads: nothing more runs on a document
        // whose fragments are cyclic.
        return v.errors;
    }
    // OverlappingFieldsCanBeMerged:
    // <https://spec.graphql.org/October2021/#sec-Field-Selection-Merging>.
    let overlap = super::overlap::check(schema, &v.fragments, doc);
    v.errors.extend(overlap);
    v.errors
}

impl<'s, 'd> Validator<'s, 'd> {
    /// A type condition names a known type
    /// (<https://spec.graphql.org/October2021/#sec-Fragment-Spread-Type-Existence>)
    /// that is composite
    /// (<https://spec.graphql.org/October2021/#sec-Fragments-On-Composite-Types>).
    fn type_condition(
        &mut self,
        name: &str,
        at: Pos,
        fragment: Option<&str>,
    ) -> Option<&'s TypeDef> {
        let Some(t) = self.schema.get(name) else {
            let suggestions = suggestion_list(name, self.schema.types.keys().map(String::as_str));
            self.errors.push(error(
                format!(
                    "Unknown type \"{name}\".{}",
                    did_you_mean(None, &suggestions)
                ),
                &[at],
            ));
            return None;
        };
        if !t.is_composite() {
            let msg = match fragment {
                Some(f) => {
                    format!("Fragment \"{f}\" cannot condition on non composite type \"{name}\".")
                }
                None => format!("Fragment cannot condition on non composite type \"{name}\"."),
            };
            self.errors.push(error(msg, &[at]));
            return None;
        }
        Some(t)
    }

    /// <https://spec.graphql.org/October2021/#sec-Single-root-field>: the root
    /// selection, collected as execution would with no variables, has one
    /// response key, and it is not an introspection field. With no
    /// variables only a literal `@skip`/`@include` can drop a field; one
    /// conditioned on a variable still counts.
    fn single_root_field(&mut self, op: &OpView<'d>) {
        let mut fields: Vec<(&str, &str, Pos)> = Vec::new();
        let mut visited = HashSet::new();
        collect_root_fields(op.selection_set, &self.fragments, &mut visited, &mut fields);
        let subject = match op.name {
            Some(n) => format!("Subscription \"{n}\""),
            None => "Anonymous Subscription".to_owned(),
        };
        let mut keys: Vec<&str> = Vec::new();
        for (k, _, _) in &fields {
            if !keys.contains(k) {
                keys.push(k);
            }
        }
        if keys.len() > 1 {
            let extra: Vec<Pos> = fields
                .iter()
                .filter(|(k, _, _)| *k != keys[0])
                .map(|(_, _, p)| *p)
                .collect();
            self.errors.push(error(
                format!("{subject} must select only one top level field."),
                &extra,
            ));
        }
        let intro: Vec<Pos> = fields
            .iter()
            .filter(|(_, name, _)| name.starts_with("__"))
            .map(|(_, _, p)| *p)
            .collect();
        if !intro.is_empty() {
            self.errors.push(error(
                format!("{subject} must not select an introspection top level field."),
                &intro,
            ));
        }
    }

    /// <https://spec.graphql.org/October2021/#sec-Variable-Uniqueness>,
    /// <https://spec.graphql.org/October2021/#sec-Variables-Are-Input-Types>,
    /// and a default value must itself be a valid literal of the type
    /// (<https://spec.graphql.org/October2021/#sec-Values-of-Correct-Type>).
    fn variable_definitions(&mut self, op: &OpView<'d>) {
        let names = op
            .vars
            .iter()
            .map(|d| (d.name.as_str(), self.loc.variable(d.position).name));
        for (name, all) in selection::repeated(names) {
            self.errors.push(error(
                format!("There can be only one variable named \"${name}\"."),
                &all,
            ));
        }
        for def in op.vars {
            let at = self.loc.variable(def.position);
            let ty = TypeRef::from_ast(&def.var_type);
            match self.schema.get(ty.named()) {
                None => {
                    let suggestions =
                        suggestion_list(ty.named(), self.schema.types.keys().map(String::as_str));
                    self.errors.push(error(
                        format!(
                            "Unknown type \"{}\".{}",
                            ty.named(),
                            did_you_mean(None, &suggestions)
                        ),
                        &[at.named],
                    ));
                }
                Some(t) if !t.is_input() => self.errors.push(error(
                    format!(
                        "Variable \"${}\" cannot be non-input type \"{ty}\".",
                        def.name
                    ),
                    &[at.ty],
                )),
                Some(_) => {
                    if let Some(d) = &def.default_value {
                        let mut ignored = Vec::new();
                        check_literal(
                            self.schema,
                            &ty,
                            d,
                            &at.default,
                            &mut self.errors,
                            &mut ignored,
                            false,
                        );
                    }
                }
            }
        }
    }

    fn variables_used(&mut self, op: &OpView<'d>, usages: &[VarUsage]) {
        let defs: BTreeMap<&str, &VariableDefinition<'static, String>> =
            op.vars.iter().map(|d| (d.name.as_str(), d)).collect();
        for u in usages {
            match defs.get(u.name.as_str()) {
                None => {
                    let msg = match op.name {
                        Some(n) => format!(
                            "Variable \"${}\" is not defined by operation \"{n}\".",
                            u.name
                        ),
                        None => format!("Variable \"${}\" is not defined.", u.name),
                    };
                    self.errors.push(error(msg, &[u.at, op.position]));
                }
                Some(def) => {
                    let Some(expected) = &u.expected else {
                        continue;
                    };
                    let var_ty = TypeRef::from_ast(&def.var_type);
                    if self.schema.get(var_ty.named()).is_none() {
                        continue;
                    }
                    // A nullable variable may feed a non-null position if
                    // the variable or the position has a default
                    // (<https://spec.graphql.org/October2021/#sec-All-Variable-Usages-are-Allowed.Allowing-optional-variables-when-default-values-exist>).
                    // An explicit `= null` default is no default here, as in
                    // graphql-js: it would still put null in the position.
                    let has_default = def
                        .default_value
                        .as_ref()
                        .is_some_and(|d| !matches!(d, graphql_parser::query::Value::Null));
                    let allowed = match expected {
                        TypeRef::NonNull(inner) if !var_ty.is_non_null() => {
                            (has_default || u.location_has_default)
                                && self.is_subtype(&var_ty, inner)
                        }
                        _ => self.is_subtype(&var_ty, expected),
                    };
                    if !allowed {
                        self.errors.push(error(
                            format!(
                                "Variable \"${}\" of type \"{var_ty}\" used in position expecting type \"{expected}\".",
                                u.name
                            ),
                            &[def.position, u.at],
                        ));
                    }
                }
            }
        }
        let used: HashSet<&str> = usages.iter().map(|u| u.name.as_str()).collect();
        for def in op.vars {
            if !used.contains(def.name.as_str()) {
                let msg = match op.name {
                    Some(n) => format!(
                        "Variable \"${}\" is never used in operation \"{n}\".",
                        def.name
                    ),
                    None => format!("Variable \"${}\" is never used.", def.name),
                };
                self.errors.push(error(msg, &[def.position]));
            }
        }
    }

    /// graphql-js `isTypeSubTypeOf` for input positions: the spec's
    /// `AreTypesCompatible` in
    /// <https://spec.graphql.org/October2021/#sec-All-Variable-Usages-are-Allowed>.
    /// A non-null variable fits a nullable position, not the reverse; list
    /// depth must match. Input types have no subtypes, so the last arm is
    /// name equality in practice.
    fn is_subtype(&self, maybe_sub: &TypeRef, sup: &TypeRef) -> bool {
        match (maybe_sub, sup) {
            (TypeRef::NonNull(a), TypeRef::NonNull(b)) => self.is_subtype(a, b),
            (TypeRef::NonNull(a), b) => self.is_subtype(a, b),
            (_, TypeRef::NonNull(_)) => false,
            (TypeRef::List(a), TypeRef::List(b)) => self.is_subtype(a, b),
            (TypeRef::List(_), _) | (_, TypeRef::List(_)) => false,
            (TypeRef::Named(a), TypeRef::Named(b)) => a == b || self.schema.is_possible(b, a),
        }
    }

    fn fragment_cycles(
        &mut self,
        frags: &[&'d Frag],
        info: &HashMap<&'d str, (Vec<VarUsage>, Vec<&'d str>)>,
    ) {
        // graphql-js: depth-first from each fragment not yet visited, one
        // error per cycle found, naming the spread path. `visited` is shared
        // across starting fragments, so a cycle is not reported again from
        // each fragment on it.
        let mut visited: HashSet<&str> = HashSet::new();
        for f in frags {
            let mut path: Vec<(&str, Pos)> = Vec::new();
            let mut index: HashMap<&str, usize> = HashMap::new();
            self.detect_cycle(&f.name, info, &mut visited, &mut path, &mut index);
        }
    }

    fn detect_cycle(
        &mut self,
        name: &'d str,
        info: &HashMap<&'d str, (Vec<VarUsage>, Vec<&'d str>)>,
        visited: &mut HashSet<&'d str>,
        path: &mut Vec<(&'d str, Pos)>,
        index: &mut HashMap<&'d str, usize>,
    ) {
        if !visited.insert(name) {
            return;
        }
        let Some((_, spreads)) = info.get(name) else {
            return;
        };
        index.insert(name, path.len());
        let positions = self.spread_positions(name);
        for (i, spread) in spreads.iter().enumerate() {
            let at = self
                .loc
                .before(positions.get(i).copied().unwrap_or_default());
            match index.get(spread).copied() {
                None => {
                    path.push((spread, at));
                    self.detect_cycle(spread, info, visited, path, index);
                    path.pop();
                }
                Some(start) => {
                    let mut cycle: Vec<(&str, Pos)> = path[start..].to_vec();
                    cycle.push((spread, at));
                    let via: Vec<&str> = cycle[..cycle.len() - 1].iter().map(|c| c.0).collect();
                    let msg = if via.is_empty() {
                        format!("Cannot spread fragment \"{spread}\" within itself.")
                    } else {
                        let via: Vec<String> = via.iter().map(|v| format!("\"{v}\"")).collect();
                        format!(
                            "Cannot spread fragment \"{spread}\" within itself via {}.",
                            via.join(", ")
                        )
                    };
                    let at: Vec<Pos> = cycle.iter().map(|c| c.1).collect();
                    self.errors.push(error(msg, &at));
                }
            }
        }
        index.remove(name);
    }

    fn spread_positions(&self, fragment: &str) -> Vec<Pos> {
        let mut out = Vec::new();
        if let Some(f) = self.fragments.get(fragment) {
            spread_positions(&f.selection_set, &mut out);
        }
        out
    }
}

fn spread_positions(set: &Sel, out: &mut Vec<Pos>) {
    for s in &set.items {
        match s {
            Selection::Field(f) => spread_positions(&f.selection_set, out),
            Selection::FragmentSpread(sp) => out.push(sp.position),
            Selection::InlineFragment(i) => spread_positions(&i.selection_set, out),
        }
    }
}

fn literal_if(d: &[Directive<'static, String>], name: &str) -> Option<bool> {
    let dir = d.iter().find(|x| x.name == name)?;
    match dir.arguments.iter().find(|(n, _)| n == "if") {
        Some((_, graphql_parser::query::Value::Boolean(b))) => Some(*b),
        _ => None,
    }
}

/// Excluded by a literal `@skip(if: true)` / `@include(if: false)`
/// (<https://spec.graphql.org/October2021/#sec--skip>,
/// <https://spec.graphql.org/October2021/#sec--include>):
/// what can be decided without variables, for the rules that collect fields
/// before any variable is known.
pub(crate) fn statically_excluded(d: &[Directive<'static, String>]) -> bool {
    literal_if(d, "skip") == Some(true) || literal_if(d, "include") == Some(false)
}

fn collect_root_fields<'d>(
    set: &'d Sel,
    fragments: &HashMap<&'d str, &'d Frag>,
    visited: &mut HashSet<&'d str>,
    out: &mut Vec<(&'d str, &'d str, Pos)>,
) {
    for s in &set.items {
        match s {
            Selection::Field(f) => {
                if !statically_excluded(&f.directives) {
                    out.push((f.alias.as_deref().unwrap_or(&f.name), &f.name, f.position));
                }
            }
            Selection::FragmentSpread(sp) => {
                if statically_excluded(&sp.directives) || !visited.insert(&sp.fragment_name) {
                    continue;
                }
                if let Some(frag) = fragments.get(sp.fragment_name.as_str()) {
                    collect_root_fields(&frag.selection_set, fragments, visited, out);
                }
            }
            Selection::InlineFragment(i) => {
                if !statically_excluded(&i.directives) {
                    collect_root_fields(&i.selection_set, fragments, visited, out);
                }
            }
        }
    }
}

/// Whether some object type can be both `a` and `b`: a spread is only
/// allowed where its type condition and the parent type share a possible
/// type (<https://spec.graphql.org/October2021/#sec-Fragment-spread-is-possible>).
pub(crate) fn types_overlap(schema: &Schema, a: &TypeDef, b: &TypeDef) -> bool {
    if a.name == b.name {
        return true;
    }
    match (a.is_abstract(), b.is_abstract()) {
        (true, true) => {
            let (pa, pb) = (
                schema.possible_types(&a.name),
                schema.possible_types(&b.name),
            );
            match (pa, pb) {
                (Some(pa), Some(pb)) => pa.iter().any(|t| pb.contains(t)),
                _ => false,
            }
        }
        (true, false) => schema.is_possible(&a.name, &b.name),
        (false, true) => schema.is_possible(&b.name, &a.name),
        (false, false) => false,
    }
}

fn is_sub_type(schema: &Schema, abstract_name: &str, maybe: &TypeDef) -> bool {
    match &maybe.kind {
        TypeKind::Interface { interfaces, .. } | TypeKind::Object { interfaces, .. } => {
            interfaces.iter().any(|i| i == abstract_name)
        }
        _ => schema.is_possible(abstract_name, &maybe.name),
    }
}

/// graphql-js `getSuggestedTypeNames` for a field missing on an abstract type.
/// Not a spec rule: only the "Did you mean" hint. Types that define the
/// field are ranked by how many of the possible types they cover, an
/// interface before its implementations, then by name, so the hint matches
/// graphql-js word for word.
pub(crate) fn suggested_type_names(schema: &Schema, ty: &TypeDef, field: &str) -> Vec<String> {
    if !ty.is_abstract() {
        return Vec::new();
    }
    let mut usage: BTreeMap<&str, usize> = BTreeMap::new();
    let mut order: Vec<&TypeDef> = Vec::new();
    for p in schema.possible_types(&ty.name).into_iter().flatten() {
        let Some(pt) = schema.get(p) else { continue };
        if pt.field(field).is_none() {
            continue;
        }
        order.push(pt);
        usage.insert(&pt.name, 1);
        if let TypeKind::Object { interfaces, .. } = &pt.kind {
            for i in interfaces {
                let Some(it) = schema.get(i) else { continue };
                if it.field(field).is_none() {
                    continue;
                }
                if !usage.contains_key(it.name.as_str()) {
                    order.push(it);
                }
                *usage.entry(&it.name).or_insert(0) += 1;
            }
        }
    }
    order.sort_by(|a, b| {
        let d = usage[b.name.as_str()].cmp(&usage[a.name.as_str()]);
        if d != std::cmp::Ordering::Equal {
            return d;
        }
        if matches!(a.kind, TypeKind::Interface { .. }) && is_sub_type(schema, &a.name, b) {
            return std::cmp::Ordering::Less;
        }
        if matches!(b.kind, TypeKind::Interface { .. }) && is_sub_type(schema, &b.name, a) {
            return std::cmp::Ordering::Greater;
        }
        a.name.cmp(&b.name)
    });
    order.into_iter().map(|t| t.name.clone()).collect()
}

mod selection;
