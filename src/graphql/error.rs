//! The GraphQL error every stage of the engine reports, as it appears in
//! responses and `error` messages
//! (<https://spec.graphql.org/October2021/#sec-Errors>), and the helpers
//! that place it in the document.

use graphql_parser::Pos;
use serde::Serialize;
use serde_json::{Map, Value};

/// A GraphQL error as it appears in responses and `error` messages.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GraphQLError {
    pub message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub locations: Vec<Location>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub path: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Map<String, Value>>,
}

impl GraphQLError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            locations: Vec::new(),
            path: Vec::new(),
            extensions: None,
        }
    }

    /// The same error with `extensions.code` set.
    pub fn with_code(mut self, code: &str) -> Self {
        self.extensions
            .get_or_insert_with(Map::new)
            .insert("code".into(), Value::String(code.into()));
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

pub(crate) fn syntax_error(e: graphql_parser::query::ParseError) -> GraphQLError {
    // graphql-parser reports "query parse error: Parse error at L:C\n…".
    let text = e.to_string();
    let mut err = GraphQLError::new(format!("Syntax Error: {}", text.trim()));
    if let Some(rest) = text.split("Parse error at ").nth(1) {
        let pos: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == ':')
            .collect();
        if let Some((l, c)) = pos.split_once(':')
            && let (Ok(line), Ok(column)) = (l.parse(), c.parse())
        {
            err.locations.push(Location { line, column });
        }
    }
    err.with_code("GRAPHQL_PARSE_FAILED")
}

pub(crate) fn loc(p: Pos) -> Location {
    Location {
        line: p.line,
        column: p.column,
    }
}

/// An error located at `at` (graphql-js lists every node a rule blames).
pub(crate) fn error(message: impl Into<String>, at: &[Pos]) -> GraphQLError {
    let mut e = GraphQLError::new(message);
    e.locations = at.iter().copied().map(loc).collect();
    e
}
