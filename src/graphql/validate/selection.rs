//! The per-selection rules: fields on correct type, leaf selections,
//! arguments (known, unique, required, well-typed), directives (known, in
//! valid locations, unique), fragment spreads (known, possible) and inline
//! fragment type conditions.
//!
//! Spec: <https://spec.graphql.org/October2021/#sec-Validation.Fields>,
//! <https://spec.graphql.org/October2021/#sec-Validation.Arguments>,
//! <https://spec.graphql.org/October2021/#sec-Validation.Fragments>,
//! <https://spec.graphql.org/October2021/#sec-Validation.Directives>.

use std::collections::HashMap;

use graphql_parser::Pos;
use graphql_parser::query::{Directive, Field, Selection, TypeCondition, Value as AstValue};

use super::super::ast::Sel;
use super::super::error::error;
use super::super::literal::{check_literal, collect_variables};
use super::super::locate::ValueLoc;
use super::super::schema::{FieldDef, InputValueDef, TypeDef, TypeRef};
use super::super::value::{did_you_mean, suggestion_list};
use super::{Validator, suggested_type_names, types_overlap};

type Args = [(String, AstValue<'static, String>)];

impl<'s, 'd> Validator<'s, 'd> {
    pub(super) fn selection_set(&mut self, parent: Option<&'s TypeDef>, set: &'d Sel) {
        for sel in &set.items {
            match sel {
                Selection::Field(f) => self.field(parent, f),
                Selection::FragmentSpread(sp) => {
                    self.directives(&sp.directives, "FRAGMENT_SPREAD");
                    // Not walked here: the fragment is validated once on its
                    // own type condition; the spread is kept so the operation
                    // can gather the fragment's variable usages later.
                    self.spreads.push(&sp.fragment_name);
                    let Some(frag) = self.fragments.get(sp.fragment_name.as_str()).copied() else {
                        self.errors.push(error(
                            format!("Unknown fragment \"{}\".", sp.fragment_name),
                            &[sp.position],
                        ));
                        continue;
                    };
                    // <https://spec.graphql.org/October2021/#sec-Fragment-spread-is-possible>.
                    // An unknown or non-composite condition is reported on
                    // the fragment's definition, not again at each spread.
                    let TypeCondition::On(tc) = &frag.type_condition;
                    if let (Some(p), Some(ft)) = (parent, self.schema.get(tc))
                        && ft.is_composite()
                        && !types_overlap(self.schema, ft, p)
                    {
                        self.errors.push(error(
                                format!(
                                    "Fragment \"{}\" cannot be spread here as objects of type \"{}\" can never be of type \"{}\".",
                                    sp.fragment_name, p.name, ft.name
                                ),
                                &[self.loc.before(sp.position)],
                            ));
                    }
                }
                Selection::InlineFragment(i) => {
                    let ty = match &i.type_condition {
                        Some(TypeCondition::On(tc)) => {
                            let t =
                                self.type_condition(tc, self.loc.name_after(i.position, 1), None);
                            if let (Some(p), Some(ft)) = (parent, t)
                                && !types_overlap(self.schema, ft, p)
                            {
                                self.errors.push(error(
                                        format!(
                                            "Fragment cannot be spread here as objects of type \"{}\" can never be of type \"{}\".",
                                            p.name, ft.name
                                        ),
                                        &[self.loc.before(i.position)],
                                    ));
                            }
                            t
                        }
                        None => parent,
                    };
                    self.directives(&i.directives, "INLINE_FRAGMENT");
                    self.selection_set(ty, &i.selection_set);
                }
            }
        }
    }

    /// <https://spec.graphql.org/October2021/#sec-Field-Selections>,
    /// then its arguments and directives, then
    /// <https://spec.graphql.org/October2021/#sec-Leaf-Field-Selections>.
    /// Under an unknown field (`parent` is `None`) only the rules that need
    /// no type still run, so one typo gives one error, not one per subfield.
    fn field(&mut self, parent: Option<&'s TypeDef>, f: &'d Field<'static, String>) {
        let def = parent.and_then(|p| self.field_def(p, &f.name));
        if let (Some(p), None) = (parent, &def) {
            let mut suggestion = did_you_mean(
                Some("to use an inline fragment on"),
                &suggested_type_names(self.schema, p, &f.name),
            );
            if suggestion.is_empty() {
                let names = p
                    .fields()
                    .unwrap_or_default()
                    .iter()
                    .map(|f| f.name.as_str());
                suggestion = did_you_mean(None, &suggestion_list(&f.name, names));
            }
            self.errors.push(error(
                format!(
                    "Cannot query field \"{}\" on type \"{}\".{suggestion}",
                    f.name, p.name
                ),
                &[f.position],
            ));
        }
        match &def {
            Some(FieldRef::Def(d)) => {
                let owner = parent.map(|p| p.name.as_str()).unwrap_or_default();
                self.arguments(
                    &f.arguments,
                    &d.args,
                    f.position,
                    &ArgOwner::Field(owner, &d.name),
                );
            }
            _ => self.unknown_arguments(&f.arguments, f.position),
        }
        self.directives(&f.directives, "FIELD");
        let ty: Option<TypeRef> = match &def {
            Some(FieldRef::Def(d)) => Some(d.ty.clone()),
            Some(FieldRef::Typename) => {
                Some(TypeRef::NonNull(Box::new(TypeRef::Named("String".into()))))
            }
            None => None,
        };
        let named = ty.as_ref().and_then(|t| self.schema.get(t.named()));
        if let (Some(ty), Some(nt)) = (&ty, named) {
            if nt.is_leaf() {
                if !f.selection_set.items.is_empty() {
                    self.errors.push(error(
                        format!(
                            "Field \"{}\" must not have a selection since type \"{ty}\" has no subfields.",
                            f.name
                        ),
                        &[f.selection_set.span.0],
                    ));
                }
            } else if f.selection_set.items.is_empty() {
                self.errors.push(error(
                    format!(
                        "Field \"{0}\" of type \"{ty}\" must have a selection of subfields. Did you mean \"{0} {{ ... }}\"?",
                        f.name
                    ),
                    &[f.position],
                ));
            }
        }
        let child = named.filter(|t| t.is_composite());
        self.selection_set(child, &f.selection_set);
    }

    /// The meta-fields are not in any type's field list: `__typename` is on
    /// every composite type
    /// (<https://spec.graphql.org/October2021/#sec-Type-Name-Introspection>),
    /// `__schema` and `__type` only on the query root
    /// (<https://spec.graphql.org/October2021/#sec-Schema-Introspection>).
    fn field_def(&self, parent: &'s TypeDef, name: &str) -> Option<FieldRef<'s>> {
        if name == "__typename" {
            return parent.is_composite().then_some(FieldRef::Typename);
        }
        if let Some(meta) = super::super::schema::builtin::meta_field(name) {
            return (self.schema.query.as_deref() == Some(parent.name.as_str()))
                .then_some(FieldRef::Def(meta));
        }
        parent.field(name).map(FieldRef::Def)
    }

    fn unknown_arguments(&mut self, args: &Args, at: Pos) {
        // Usages under an unknown field or argument still count as used.
        let located = self.loc.arguments(at);
        for (i, (_, v)) in args.iter().enumerate() {
            let value = located.get(i).map(|a| &a.value);
            collect_variables(v, value.unwrap_or(&ValueLoc::unknown(at)), &mut self.usages);
        }
    }

    fn arguments(
        &mut self,
        args: &'d Args,
        defs: &'s [InputValueDef],
        at: Pos,
        owner: &ArgOwner<'_>,
    ) {
        // <https://spec.graphql.org/October2021/#sec-Argument-Uniqueness>,
        // <https://spec.graphql.org/October2021/#sec-Argument-Names>,
        // <https://spec.graphql.org/October2021/#sec-Values-of-Correct-Type>,
        // then <https://spec.graphql.org/October2021/#sec-Required-Arguments>.
        let located = self.loc.arguments(at);
        let names = args
            .iter()
            .enumerate()
            .map(|(i, (name, _))| (name.as_str(), located.get(i).map_or(at, |a| a.at)));
        for (name, all) in repeated(names) {
            self.errors.push(error(
                format!("There can be only one argument named \"{name}\"."),
                &all,
            ));
        }
        for (i, (name, value)) in args.iter().enumerate() {
            let unknown = ValueLoc::unknown(at);
            let (name_at, value_at) = located.get(i).map_or((at, &unknown), |a| (a.at, &a.value));
            match defs.iter().find(|d| &d.name == name) {
                None => {
                    let suggestions = suggestion_list(name, defs.iter().map(|d| d.name.as_str()));
                    let msg = match owner {
                        ArgOwner::Field(t, f) => {
                            format!("Unknown argument \"{name}\" on field \"{t}.{f}\".")
                        }
                        ArgOwner::Directive(d) => {
                            format!("Unknown argument \"{name}\" on directive \"@{d}\".")
                        }
                    };
                    self.errors.push(error(
                        format!("{msg}{}", did_you_mean(None, &suggestions)),
                        &[name_at],
                    ));
                    collect_variables(value, value_at, &mut self.usages);
                }
                Some(def) => check_literal(
                    self.schema,
                    &def.ty,
                    value,
                    value_at,
                    &mut self.errors,
                    &mut self.usages,
                    def.default.is_some(),
                ),
            }
        }
        // Required means non-null with no default: a nullable argument, or
        // one with a default, may be left out.
        for def in defs {
            if def.ty.is_non_null()
                && def.default.is_none()
                && !args.iter().any(|(n, _)| n == &def.name)
            {
                let msg = match owner {
                    ArgOwner::Field(_, f) => format!(
                        "Field \"{f}\" argument \"{}\" of type \"{}\" is required, but it was not provided.",
                        def.name, def.ty
                    ),
                    ArgOwner::Directive(d) => format!(
                        "Directive \"@{d}\" argument \"{}\" of type \"{}\" is required, but it was not provided.",
                        def.name, def.ty
                    ),
                };
                self.errors.push(error(msg, &[at]));
            }
        }
    }

    /// <https://spec.graphql.org/October2021/#sec-Directives-Are-Defined>,
    /// <https://spec.graphql.org/October2021/#sec-Directives-Are-In-Valid-Locations>,
    /// <https://spec.graphql.org/October2021/#sec-Directives-Are-Unique-Per-Location>
    /// (a `repeatable` directive is exempt), then the directive's arguments
    /// as a field's.
    pub(super) fn directives(&mut self, dirs: &'d [Directive<'static, String>], location: &str) {
        let mut seen: HashMap<&str, Pos> = HashMap::new();
        for d in dirs {
            let Some(def) = self.schema.directive(&d.name) else {
                self.errors.push(error(
                    format!("Unknown directive \"@{}\".", d.name),
                    &[d.position],
                ));
                self.unknown_arguments(&d.arguments, d.position);
                continue;
            };
            if !def.locations.iter().any(|l| l == location) {
                self.errors.push(error(
                    format!("Directive \"@{}\" may not be used on {location}.", d.name),
                    &[d.position],
                ));
            }
            if !def.repeatable {
                if let Some(first) = seen.get(d.name.as_str()) {
                    self.errors.push(error(
                        format!(
                            "The directive \"@{}\" can only be used once at this location.",
                            d.name
                        ),
                        &[*first, d.position],
                    ));
                } else {
                    seen.insert(&d.name, d.position);
                }
            }
            self.arguments(
                &d.arguments,
                &def.args,
                d.position,
                &ArgOwner::Directive(&d.name),
            );
        }
    }
}

/// Names given more than once, each with every place it is given, in
/// source order (graphql-js reports a repeated argument or variable once,
/// at all its places).
pub(super) fn repeated<'a>(
    names: impl Iterator<Item = (&'a str, Pos)>,
) -> Vec<(&'a str, Vec<Pos>)> {
    let mut all: Vec<(&str, Vec<Pos>)> = Vec::new();
    for (name, at) in names {
        match all.iter_mut().find(|(n, _)| *n == name) {
            Some((_, places)) => places.push(at),
            None => all.push((name, vec![at])),
        }
    }
    all.retain(|(_, places)| places.len() > 1);
    all
}

enum FieldRef<'s> {
    Def(&'s FieldDef),
    Typename,
}

enum ArgOwner<'a> {
    Field(&'a str, &'a str),
    Directive(&'a str),
}
