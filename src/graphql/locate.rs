//! Source positions graphql-parser does not keep: argument names and values
//! (nested list items and input fields too), variable names and types,
//! definition names and the `...` of spreads. graphql-js reports validation
//! errors at those nodes, so validation re-reads them here from the source
//! text, starting at a position graphql-parser does keep (a field, a
//! directive, a variable definition) and walking the tokens from there.
//!
//! Every lookup falls back to the position it started from, so a document
//! this reader does not follow still gets an error at its owner.

use std::collections::HashMap;

use graphql_parser::Pos;

use lex::{Kind, Token, lex};

mod lex;

/// The tokens of one document, indexed by where they start.
pub(crate) struct Locator {
    source: String,
    tokens: Vec<Token>,
    by_pos: HashMap<(usize, usize), usize>,
}

/// Where a literal value and its parts are.
#[derive(Debug, Clone)]
pub(crate) struct ValueLoc {
    pub at: Pos,
    /// A number as written: graphql-js prints `1e3` where graphql-parser
    /// keeps only `1000`.
    pub raw: Option<String>,
    parts: Parts,
}

#[derive(Debug, Clone)]
enum Parts {
    Leaf,
    List(Vec<ValueLoc>),
    Object(Vec<FieldLoc>),
}

/// One `name: value` of an argument list or an input object, in source order.
#[derive(Debug, Clone)]
pub(crate) struct FieldLoc {
    pub name: String,
    pub at: Pos,
    pub value: ValueLoc,
}

/// Where the parts of `$name: Type = default` are.
pub(crate) struct VariableLoc {
    pub name: Pos,
    pub ty: Pos,
    /// The named type inside the list and non-null wrappers.
    pub named: Pos,
    pub default: ValueLoc,
}

impl ValueLoc {
    /// A value whose parts are unknown: every part is reported at `at`.
    pub(crate) fn unknown(at: Pos) -> Self {
        ValueLoc {
            at,
            raw: None,
            parts: Parts::Leaf,
        }
    }

    /// The `i`th item of a list value (this value itself when it is not a
    /// list, as graphql-js coerces a single value to a list of one:
    /// <https://spec.graphql.org/October2021/#sec-List.Input-Coercion>).
    pub(crate) fn item(&self, i: usize) -> &ValueLoc {
        match &self.parts {
            Parts::List(items) => items.get(i).unwrap_or(self),
            _ => self,
        }
    }

    /// The input field `name` of an object value; graphql-parser keeps the
    /// last of duplicated fields, so this does too.
    pub(crate) fn field(&self, name: &str) -> Option<&FieldLoc> {
        match &self.parts {
            Parts::Object(fields) => fields.iter().rev().find(|f| f.name == name),
            _ => None,
        }
    }

    /// Where the input field `name` is written (this value when unknown).
    pub(crate) fn field_at(&self, name: &str) -> Pos {
        self.field(name).map_or(self.at, |f| f.at)
    }

    /// The value of input field `name` (this value when unknown).
    pub(crate) fn field_value(&self, name: &str) -> &ValueLoc {
        self.field(name).map_or(self, |f| &f.value)
    }

    /// Input fields written more than once (graphql-js
    /// `UniqueInputFieldNamesRule`,
    /// <https://spec.graphql.org/October2021/#sec-Input-Object-Field-Uniqueness>):
    /// (name, first, repeated) for each repeat. Only the source shows them:
    /// graphql-parser's object value is a map and keeps one.
    pub(crate) fn repeated_fields(&self) -> Vec<(&str, Pos, Pos)> {
        let Parts::Object(fields) = &self.parts else {
            return Vec::new();
        };
        let mut first: HashMap<&str, Pos> = HashMap::new();
        let mut out = Vec::new();
        for f in fields {
            match first.get(f.name.as_str()) {
                Some(p) => out.push((f.name.as_str(), *p, f.at)),
                None => {
                    first.insert(&f.name, f.at);
                }
            }
        }
        out
    }
}

impl Locator {
    pub(crate) fn new(source: &str) -> Self {
        let tokens = lex(source);
        let by_pos = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| ((t.at.line, t.at.column), i))
            .collect();
        Locator {
            source: source.to_owned(),
            tokens,
            by_pos,
        }
    }

    fn index(&self, p: Pos) -> Option<usize> {
        self.by_pos.get(&(p.line, p.column)).copied()
    }

    fn kind(&self, i: usize) -> Option<Kind> {
        self.tokens.get(i).map(|t| t.kind)
    }

    fn at(&self, i: usize) -> Option<Pos> {
        self.tokens.get(i).map(|t| t.at)
    }

    /// The token just before `p`: the `...` of a spread or inline fragment,
    /// whose graphql-parser position is the token after it.
    pub(crate) fn before(&self, p: Pos) -> Pos {
        self.index(p)
            .and_then(|i| i.checked_sub(1))
            .filter(|i| self.kind(*i) == Some(Kind::Spread))
            .and_then(|i| self.at(i))
            .unwrap_or(p)
    }

    /// The name `n` tokens after the keyword at `p` (`subscription Name`,
    /// `fragment Name on Type`, `... on Type`).
    pub(crate) fn name_after(&self, p: Pos, n: usize) -> Pos {
        self.index(p)
            .map(|i| i + n)
            .filter(|i| self.kind(*i) == Some(Kind::Name))
            .and_then(|i| self.at(i))
            .unwrap_or(p)
    }

    /// The arguments of the field or directive at `owner`, in source order.
    pub(crate) fn arguments(&self, owner: Pos) -> Vec<FieldLoc> {
        let Some(mut i) = self.index(owner) else {
            return Vec::new();
        };
        if self.kind(i) == Some(Kind::Punct(b'@')) {
            i += 1;
        }
        // alias `:` name, or name
        if self.kind(i + 1) == Some(Kind::Punct(b':')) {
            i += 2;
        }
        i += 1;
        if self.kind(i) != Some(Kind::Punct(b'(')) {
            return Vec::new();
        }
        let mut reader = Reader {
            loc: self,
            i: i + 1,
        };
        reader.fields(b')').unwrap_or_default()
    }

    /// The parts of the variable definition at `def` (its `$`).
    pub(crate) fn variable(&self, def: Pos) -> VariableLoc {
        let unknown = VariableLoc {
            name: def,
            ty: def,
            named: def,
            default: ValueLoc::unknown(def),
        };
        let Some(i) = self.index(def) else {
            return unknown;
        };
        let (Some(name), Some(ty)) = (self.at(i + 1), self.at(i + 3)) else {
            return unknown;
        };
        // The type: names, brackets and `!` up to the `=`, `)`, `$` or `@`.
        let mut j = i + 3;
        let mut depth = 0usize;
        let mut named = ty;
        while let Some(k) = self.kind(j) {
            match k {
                Kind::Punct(b'[') => depth += 1,
                Kind::Punct(b']') => depth = depth.saturating_sub(1),
                Kind::Punct(b'!') => {}
                Kind::Name => named = self.at(j).unwrap_or(ty),
                _ => break,
            }
            j += 1;
            if depth == 0 && self.kind(j) != Some(Kind::Punct(b'!')) {
                break;
            }
        }
        let default = if self.kind(j) == Some(Kind::Punct(b'=')) {
            let mut reader = Reader {
                loc: self,
                i: j + 1,
            };
            reader.value().unwrap_or_else(|| ValueLoc::unknown(def))
        } else {
            ValueLoc::unknown(def)
        };
        VariableLoc {
            name,
            ty,
            named,
            default,
        }
    }
}

/// Reads values from a token index on; `None` when the tokens are not a
/// value (the parser accepted the document, so only on a reader bug).
struct Reader<'l> {
    loc: &'l Locator,
    i: usize,
}

impl Reader<'_> {
    fn next(&mut self) -> Option<&Token> {
        let t = self.loc.tokens.get(self.i)?;
        self.i += 1;
        Some(t)
    }

    fn fields(&mut self, close: u8) -> Option<Vec<FieldLoc>> {
        let mut out = Vec::new();
        loop {
            let t = self.next()?.clone();
            match t.kind {
                Kind::Punct(c) if c == close => return Some(out),
                Kind::Name => {
                    if self.next()?.kind != Kind::Punct(b':') {
                        return None;
                    }
                    let value = self.value()?;
                    out.push(FieldLoc {
                        name: self.loc.source[t.start..t.end].to_owned(),
                        at: t.at,
                        value,
                    });
                }
                _ => return None,
            }
        }
    }

    fn value(&mut self) -> Option<ValueLoc> {
        let t = self.next()?.clone();
        let parts = match t.kind {
            Kind::Punct(b'$') => {
                self.next()?;
                Parts::Leaf
            }
            Kind::Punct(b'[') => {
                let mut items = Vec::new();
                while self.loc.kind(self.i) != Some(Kind::Punct(b']')) {
                    items.push(self.value()?);
                }
                self.i += 1;
                Parts::List(items)
            }
            Kind::Punct(b'{') => Parts::Object(self.fields(b'}')?),
            Kind::Name | Kind::String => Parts::Leaf,
            Kind::Number => {
                return Some(ValueLoc {
                    at: t.at,
                    raw: Some(self.loc.source[t.start..t.end].to_owned()),
                    parts: Parts::Leaf,
                });
            }
            _ => return None,
        };
        Some(ValueLoc {
            at: t.at,
            raw: None,
            parts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(line: usize, column: usize) -> Pos {
        Pos { line, column }
    }

    #[test]
    fn nested_values_are_found_from_their_field() {
        let src = "subscription {\n  a: f(x: [1, {y: 1e3, y: \"s\"}], z: $v) { id }\n}";
        let loc = Locator::new(src);
        let args = loc.arguments(pos(2, 3));
        assert_eq!(args.len(), 2);
        assert_eq!((args[0].name.as_str(), args[0].at), ("x", pos(2, 8)));
        let list = &args[0].value;
        assert_eq!(list.at, pos(2, 11));
        assert_eq!(list.item(0).at, pos(2, 12));
        let obj = list.item(1);
        assert_eq!(obj.field_value("y").at, pos(2, 27));
        assert_eq!(obj.item(0).at, obj.at);
        assert_eq!(obj.repeated_fields(), vec![("y", pos(2, 16), pos(2, 24))]);
        assert_eq!(obj.field("y").map(|f| f.at), Some(pos(2, 24)));
        assert_eq!(list.item(1).field_at("y"), pos(2, 24));
        assert_eq!(args[1].value.at, pos(2, 37));
        let number = Locator::new("{ f(x: 1e3) }").arguments(pos(1, 3));
        assert_eq!(number[0].value.raw.as_deref(), Some("1e3"));
    }

    #[test]
    fn variables_keywords_and_spreads() {
        let src = "subscription S($a: [Int!]! = [1], $b: Int) { ...F ... on T { x } }";
        let loc = Locator::new(src);
        let a = loc.variable(pos(1, 16));
        assert_eq!(
            (a.name, a.ty, a.default.at),
            (pos(1, 17), pos(1, 20), pos(1, 30))
        );
        assert_eq!(a.named, pos(1, 21));
        let b = loc.variable(pos(1, 35));
        assert_eq!(
            (b.name, b.ty, b.default.at),
            (pos(1, 36), pos(1, 39), pos(1, 35))
        );
        assert_eq!(loc.name_after(pos(1, 1), 1), pos(1, 14));
        assert_eq!(loc.before(pos(1, 49)), pos(1, 46));
        assert_eq!(loc.name_after(pos(1, 55), 1), pos(1, 58));
        // Not a token start: the position itself.
        assert_eq!(loc.before(pos(1, 2)), pos(1, 2));
    }

    #[test]
    fn strings_comments_and_lines() {
        let src = "# c (x: 1)\n{ f(a: \"\"\"x\n\"\"\" b: \"q\\\"(\" c: 2) }";
        let args = Locator::new(src).arguments(pos(2, 3));
        let at: Vec<Pos> = args.iter().map(|a| a.value.at).collect();
        assert_eq!(at, vec![pos(2, 8), pos(3, 8), pos(3, 18)]);
    }
}
