//! The GraphQL lexer of [`super::Locator`], reduced to what locating
//! needs: token kinds, where each token starts and its byte range.
//!
//! Spec: <https://spec.graphql.org/October2021/#sec-Language.Source-Text.Lexical-Tokens>.
//! It runs only on documents graphql-parser has accepted, so it need not
//! reject anything: a number is any run of digits, signs, `.` and
//! exponents, and a token it cannot follow only costs a precise location.

use graphql_parser::Pos;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Punct(u8),
    Spread,
    Name,
    Number,
    String,
}

#[derive(Debug, Clone)]
pub(super) struct Token {
    pub kind: Kind,
    pub at: Pos,
    pub start: usize,
    pub end: usize,
}

/// The GraphQL lexer, reduced to what locating needs: token kinds and where
/// each token starts (lines and columns from 1, columns in characters as
/// graphql-parser counts them).
///
/// One known difference: graphql-parser counts a tab as 8 columns and a
/// lone `\r` as none, where this counts each as one character. On a line
/// with either before a token the positions disagree, the lookup misses,
/// and the error falls back to its owner's position.
pub(super) fn lex(source: &str) -> Vec<Token> {
    let bytes = source.as_bytes();
    let mut tokens = Vec::new();
    let (mut i, mut line, mut line_start) = (0usize, 1usize, 0usize);
    let column = |i: usize, line_start: usize| source[line_start..i].chars().count() + 1;
    while i < bytes.len() {
        let b = bytes[i];
        let at = Pos {
            line,
            column: column(i, line_start),
        };
        let start = i;
        let kind = match b {
            b'\n' => {
                i += 1;
                line += 1;
                line_start = i;
                continue;
            }
            // Commas are insignificant, like white space
            // (<https://spec.graphql.org/October2021/#sec-Insignificant-Commas>).
            b' ' | b'\t' | b'\r' | b',' => {
                i += 1;
                continue;
            }
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'.' if bytes[i..].starts_with(b"...") => {
                i += 3;
                Kind::Spread
            }
            // A block string may span lines; `\"""` inside it is an
            // escaped quote triple, not its end
            // (<https://spec.graphql.org/October2021/#sec-String-Value.Block-Strings>).
            b'"' if bytes[i..].starts_with(b"\"\"\"") => {
                i += 3;
                while i < bytes.len() && !bytes[i..].starts_with(b"\"\"\"") {
                    if bytes[i..].starts_with(b"\\\"\"\"") {
                        i += 4;
                        continue;
                    }
                    if bytes[i] == b'\n' {
                        line += 1;
                        line_start = i + 1;
                    }
                    i += 1;
                }
                i = (i + 3).min(bytes.len());
                Kind::String
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i = (i + 1).min(bytes.len());
                Kind::String
            }
            b'-' | b'0'..=b'9' => {
                i += 1;
                while i < bytes.len() {
                    match bytes[i] {
                        b'0'..=b'9' | b'.' | b'e' | b'E' => i += 1,
                        b'+' | b'-' if matches!(bytes[i - 1], b'e' | b'E') => i += 1,
                        _ => break,
                    }
                }
                Kind::Number
            }
            b'_' | b'a'..=b'z' | b'A'..=b'Z' => {
                while i < bytes.len() && (bytes[i] == b'_' || bytes[i].is_ascii_alphanumeric()) {
                    i += 1;
                }
                Kind::Name
            }
            _ if b.is_ascii() => {
                i += 1;
                Kind::Punct(b)
            }
            _ => {
                // A byte order mark or another non-ASCII character outside a
                // string: skip the whole character.
                i += source[i..].chars().next().map_or(1, char::len_utf8);
                continue;
            }
        };
        tokens.push(Token {
            kind,
            at,
            start,
            end: i,
        });
    }
    tokens
}
