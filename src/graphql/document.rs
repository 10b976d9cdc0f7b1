//! Bounded cost for every document subcar parses: a cheap lexical pre-scan
//! (tokens, bracket nesting) before graphql-parser sees the text, then
//! structural caps on the parsed document (fragments, aliases, depth through
//! fragment spreads) before any rule or plan walks it. Each refusal is a
//! [`GraphQLError`] coded [`DOCUMENT_TOO_COMPLEX`] whose `extensions.limit`
//! names the `[limits.document]` key.

use std::collections::HashMap;

use graphql_parser::query::{Definition, Selection};
use serde_json::Value;

use super::ast::{Doc, Frag, Sel};
use super::error::GraphQLError;

/// `[limits.document]`: caps on every GraphQL document subcar parses (the
/// proxy's subscription decision, introspection, subscriptions and queries
/// over a socket), so that no document costs more than a bounded amount of
/// CPU and memory. Over a cap: a GraphQL error coded `DOCUMENT_TOO_COMPLEX`
/// with `extensions.limit` naming the key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DocumentLimits {
    /// Lexical tokens (names, punctuators, values), counted before parsing.
    pub max_tokens: usize,
    /// Nesting of selection sets, counted through fragment spreads.
    pub max_depth: usize,
    /// Fields with an alias, in the whole document.
    pub max_aliases: usize,
    /// Fragment definitions in the document.
    pub max_fragments: usize,
    /// Size of an introspection response subcar answers itself.
    pub max_introspection_bytes: usize,
    /// Work of the field-merge validation rule: pairs of fields sharing a
    /// response key compared, plus fields collected to compare them.
    pub max_merge_comparisons: usize,
}

/// graphql-parser refuses brackets nested deeper than 50; `max_depth`
/// stays below so that a selection at the limit can still take arguments.
pub const MAX_DOCUMENT_DEPTH: usize = 40;

impl Default for DocumentLimits {
    fn default() -> Self {
        Self {
            max_tokens: 15_000,
            max_depth: 32,
            max_aliases: 100,
            max_fragments: 200,
            max_introspection_bytes: 2 * 1024 * 1024,
            max_merge_comparisons: 100_000,
        }
    }
}

/// `extensions.code` of a document over a `[limits.document]` cap.
pub const DOCUMENT_TOO_COMPLEX: &str = "DOCUMENT_TOO_COMPLEX";
/// `extensions.code` of introspection while `schema.introspection = false`.
pub const INTROSPECTION_DISABLED: &str = "INTROSPECTION_DISABLED";

/// graphql-parser's own recursion limit is 50 brackets; refusing at 48 here
/// turns its syntax error into a coded refusal and keeps the parser's stack
/// use known.
const MAX_BRACKETS: usize = 48;

/// A refusal for the cap `limit` (a key of `[limits.document]`).
pub fn too_complex(limit: &str, message: String) -> GraphQLError {
    let mut e = GraphQLError::new(message).with_code(DOCUMENT_TOO_COMPLEX);
    if let Some(ext) = e.extensions.as_mut() {
        ext.insert("limit".into(), Value::String(limit.into()));
    }
    e
}

/// The refusal of an introspection field while introspection is off.
pub fn introspection_disabled() -> GraphQLError {
    GraphQLError::new("GraphQL introspection is not allowed on this server")
        .with_code(INTROSPECTION_DISABLED)
}

/// Counts the lexical tokens of `text` and its bracket nesting, without
/// building anything: linear in the text, no recursion. Refuses past
/// `max_tokens` or brackets nested deeper than graphql-parser allows.
/// Malformed text passes: the parser reports it.
pub fn prescan(text: &str, limits: &DocumentLimits) -> Result<(), GraphQLError> {
    let b = text.as_bytes();
    let (mut i, mut tokens, mut depth) = (0usize, 0usize, 0usize);
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' | b',' => {
                i += 1;
                continue;
            }
            b'#' => {
                while i < b.len() && b[i] != b'\n' && b[i] != b'\r' {
                    i += 1;
                }
                continue;
            }
            b'"' if b[i..].starts_with(b"\"\"\"") => {
                i += 3;
                while i < b.len() && !b[i..].starts_with(b"\"\"\"") {
                    i += if b[i..].starts_with(b"\\\"\"\"") {
                        4
                    } else {
                        1
                    };
                }
                i += 3;
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' && b[i] != b'\n' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'{' | b'[' | b'(' => {
                depth += 1;
                if depth > MAX_BRACKETS {
                    return Err(too_complex(
                        "max_depth",
                        format!(
                            "The document nests brackets more than {MAX_BRACKETS} deep (limits.document.max_depth)."
                        ),
                    ));
                }
                i += 1;
            }
            b'}' | b']' | b')' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b'.' if b[i..].starts_with(b"...") => i += 3,
            c if c == b'_' || c == b'-' || c.is_ascii_alphanumeric() => {
                i += 1;
                while i < b.len() && (b[i] == b'_' || b[i] == b'.' || b[i].is_ascii_alphanumeric())
                {
                    i += 1;
                }
            }
            _ => i += 1,
        }
        tokens += 1;
        if tokens > limits.max_tokens {
            return Err(too_complex(
                "max_tokens",
                format!(
                    "The document has more than {} tokens (limits.document.max_tokens).",
                    limits.max_tokens
                ),
            ));
        }
    }
    Ok(())
}

/// Pre-scans and parses `text` under `limits`, then applies the structural
/// caps: what every path that parses a document calls.
pub fn parse(text: &str, limits: &DocumentLimits) -> Result<Doc, Vec<GraphQLError>> {
    prescan(text, limits).map_err(|e| vec![e])?;
    let doc: Doc = graphql_parser::parse_query::<String>(text)
        .map_err(|e| vec![super::error::syntax_error(e)])?
        .into_static();
    structure(&doc, limits).map_err(|e| vec![e])?;
    Ok(doc)
}

/// Fragment count, alias count and selection depth through fragment
/// spreads. The depth walk remembers each fragment's depth (linear in the
/// document) and treats a spread of a fragment being walked (a cycle,
/// reported by validation) as adding nothing.
pub(crate) fn structure(doc: &Doc, limits: &DocumentLimits) -> Result<(), GraphQLError> {
    let fragments = super::ast::fragments(doc);
    let defined = doc
        .definitions
        .iter()
        .filter(|d| matches!(d, Definition::Fragment(_)))
        .count();
    if defined > limits.max_fragments {
        return Err(too_complex(
            "max_fragments",
            format!(
                "The document defines {defined} fragments, more than {} (limits.document.max_fragments).",
                limits.max_fragments
            ),
        ));
    }
    let mut walk = Walk {
        fragments: &fragments,
        limits,
        aliases: 0,
        depths: HashMap::new(),
    };
    for def in &doc.definitions {
        let set = match def {
            Definition::Operation(op) => super::ast::op_view(op).selection_set,
            Definition::Fragment(f) => &f.selection_set,
        };
        walk.aliases(set)?;
        walk.depth(set, 1)?;
    }
    Ok(())
}

struct Walk<'d, 'l> {
    fragments: &'d HashMap<&'d str, &'d Frag>,
    limits: &'l DocumentLimits,
    aliases: usize,
    /// Depth of each fragment's selection set below the spread; `None`
    /// while it is being walked.
    depths: HashMap<&'d str, Option<usize>>,
}

impl<'d> Walk<'d, '_> {
    fn too_deep(&self) -> GraphQLError {
        too_complex(
            "max_depth",
            format!(
                "The document nests selections more than {} deep (limits.document.max_depth).",
                self.limits.max_depth
            ),
        )
    }

    /// Counts aliases syntactically (not through spreads: each definition
    /// is walked once).
    fn aliases(&mut self, set: &'d Sel) -> Result<(), GraphQLError> {
        for sel in &set.items {
            match sel {
                Selection::Field(f) => {
                    if f.alias.is_some() {
                        self.aliases += 1;
                        if self.aliases > self.limits.max_aliases {
                            return Err(too_complex(
                                "max_aliases",
                                format!(
                                    "The document has more than {} aliases (limits.document.max_aliases).",
                                    self.limits.max_aliases
                                ),
                            ));
                        }
                    }
                    self.aliases(&f.selection_set)?;
                }
                Selection::InlineFragment(i) => self.aliases(&i.selection_set)?,
                Selection::FragmentSpread(_) => {}
            }
        }
        Ok(())
    }

    /// The deepest nesting reached from `set`, which sits at depth `at`;
    /// refuses as soon as it passes `max_depth`, so the recursion is at most
    /// `max_depth` fields (plus one frame per spread) deep.
    fn depth(&mut self, set: &'d Sel, at: usize) -> Result<usize, GraphQLError> {
        if at > self.limits.max_depth {
            return Err(self.too_deep());
        }
        let mut deepest = at;
        for sel in &set.items {
            let reached = match sel {
                Selection::Field(f) if f.selection_set.items.is_empty() => at,
                Selection::Field(f) => self.depth(&f.selection_set, at + 1)?,
                Selection::InlineFragment(i) => self.depth(&i.selection_set, at)?,
                Selection::FragmentSpread(sp) => {
                    let name = sp.fragment_name.as_str();
                    let below = match self.depths.get(name) {
                        Some(Some(d)) => *d,
                        Some(None) => 0,
                        None => match self.fragments.get(name) {
                            None => 0,
                            Some(frag) => {
                                let name: &'d str = frag.name.as_str();
                                self.depths.insert(name, None);
                                let d = self.depth(&frag.selection_set, at)? - at;
                                self.depths.insert(name, Some(d));
                                d
                            }
                        },
                    };
                    let reached = at + below;
                    if reached > self.limits.max_depth {
                        return Err(self.too_deep());
                    }
                    reached
                }
            };
            deepest = deepest.max(reached);
        }
        Ok(deepest)
    }
}

/// Whether any field of the document (any operation or fragment) is
/// `__schema` or `__type`. `__typename` is not introspection.
pub fn mentions_introspection(doc: &Doc) -> bool {
    fn set_mentions(set: &Sel) -> bool {
        set.items.iter().any(|s| match s {
            Selection::Field(f) => {
                f.name == "__schema" || f.name == "__type" || set_mentions(&f.selection_set)
            }
            Selection::InlineFragment(i) => set_mentions(&i.selection_set),
            Selection::FragmentSpread(_) => false,
        })
    }
    doc.definitions.iter().any(|d| match d {
        Definition::Operation(op) => set_mentions(super::ast::op_view(op).selection_set),
        Definition::Fragment(f) => set_mentions(&f.selection_set),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> DocumentLimits {
        DocumentLimits::default()
    }

    fn limit_of(e: &GraphQLError) -> &str {
        let ext = e.extensions.as_ref().unwrap();
        assert_eq!(ext["code"], DOCUMENT_TOO_COMPLEX);
        ext["limit"].as_str().unwrap()
    }

    #[test]
    fn tokens_are_counted_before_parsing() {
        let l = DocumentLimits {
            max_tokens: 10,
            ..limits()
        };
        // { a b c d e f g h } is 10 tokens.
        assert!(prescan("{ a b c d e f g h }", &l).is_ok());
        let e = prescan("{ a b c d e f g h i }", &l).unwrap_err();
        assert_eq!(limit_of(&e), "max_tokens");
        // Strings, block strings, comments and spreads are one token each
        // (or none).
        assert!(prescan("# a b c d e f g h i j k\n{ a(s: \"x y z w v u t\") }", &l).is_ok());
        assert!(prescan("{ a(s: \"\"\"x \\\"\"\" y z w v u t\"\"\") ...F }", &l).is_ok());
    }

    #[test]
    fn deep_brackets_are_refused_before_parsing() {
        let deep = "{a".repeat(100_000);
        let e = prescan(&deep, &limits()).unwrap_err();
        assert_eq!(limit_of(&e), "max_depth");
        let list = format!("{{ a(x: {}) }}", "[".repeat(100_000));
        assert_eq!(
            limit_of(&prescan(&list, &limits()).unwrap_err()),
            "max_depth"
        );
    }

    #[test]
    fn depth_counts_through_fragments() {
        let l = DocumentLimits {
            max_depth: 3,
            ..limits()
        };
        assert!(parse("{ a { b { c } } }", &l).is_ok());
        let e = &parse("{ a { b { c { d } } } }", &l).unwrap_err()[0];
        assert_eq!(limit_of(e), "max_depth");
        let via = "{ a { ...F } } fragment F on T { b { ...G } } fragment G on T { c { d } }";
        assert_eq!(limit_of(&parse(via, &l).unwrap_err()[0]), "max_depth");
        // A cycle adds nothing here; validation reports it.
        assert!(parse("{ a { ...F } } fragment F on T { b ...F }", &l).is_ok());
    }

    #[test]
    fn depth_walk_is_linear_in_a_doubling_chain() {
        let mut doc = String::from("{ ...F0 }");
        for i in 0..200 {
            doc.push_str(&format!(
                " fragment F{i} on T {{ ...F{n} ...F{n} }}",
                n = i + 1
            ));
        }
        doc.push_str(" fragment F200 on T { x }");
        let started = std::time::Instant::now();
        let l = DocumentLimits {
            max_fragments: 1000,
            ..limits()
        };
        assert!(parse(&doc, &l).is_ok());
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn aliases_and_fragments_are_capped() {
        let l = DocumentLimits {
            max_aliases: 2,
            max_fragments: 1,
            ..limits()
        };
        assert!(parse("{ a: x b: x }", &l).is_ok());
        assert_eq!(
            limit_of(&parse("{ a: x b: x c: x }", &l).unwrap_err()[0]),
            "max_aliases"
        );
        let two = "{ ...A } fragment A on T { x } fragment B on T { y }";
        assert_eq!(limit_of(&parse(two, &l).unwrap_err()[0]), "max_fragments");
    }

    #[test]
    fn introspection_fields_are_found_anywhere() {
        let l = limits();
        let found = |q: &str| mentions_introspection(&parse(q, &l).unwrap());
        assert!(found("{ __schema { types { name } } }"));
        assert!(found(
            "{ a { ...F } } fragment F on T { b { __type(name: \"X\") { name } } }"
        ));
        assert!(!found("{ a { __typename } }"));
    }
}
