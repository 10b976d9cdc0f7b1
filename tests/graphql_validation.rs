//! The validation corpus: every document of
//! `tests/fixtures/graphql/validation.json` (written by graphql-js `validate`,
//! `tests/fixtures/graphql/generate.mjs`; `tests/js/graphql-corpus.test.mjs`
//! keeps it equal to what graphql-js says) gets the same verdict from subcar,
//! and the same errors: each message with its locations.

#[path = "support/fixtures.rs"]
mod fixtures;

use fixtures::{cases, schema};
use serde::Deserialize;
use subcar::graphql::GraphQLError;

#[derive(Deserialize)]
struct Case {
    name: String,
    query: String,
    valid: bool,
    errors: Vec<Expected>,
}

#[derive(Deserialize)]
struct Expected {
    message: String,
    #[serde(default)]
    locations: Vec<Loc>,
}

#[derive(Deserialize, PartialEq, Eq, PartialOrd, Ord, Debug, Clone, Copy)]
struct Loc {
    line: usize,
    column: usize,
}

/// An error as compared: its message and its locations, in order.
type Seen = (String, Vec<(usize, usize)>);

fn ours(errors: &[GraphQLError]) -> Vec<Seen> {
    sorted(errors.iter().map(|e| {
        let at = e.locations.iter().map(|l| (l.line, l.column)).collect();
        (e.message.clone(), at)
    }))
}

fn theirs(errors: &[Expected]) -> Vec<Seen> {
    sorted(errors.iter().map(|e| {
        (
            e.message.clone(),
            e.locations.iter().map(|l| (l.line, l.column)).collect(),
        )
    }))
}

/// Errors in a canonical order: graphql-js's order of rules is not compared.
fn sorted(errors: impl Iterator<Item = Seen>) -> Vec<Seen> {
    let mut seen: Vec<Seen> = errors.collect();
    seen.sort();
    seen
}

#[test]
fn same_verdicts_errors_and_locations_as_graphql_js() {
    let cases: Vec<Case> = cases("validation.json");
    assert!(cases.len() >= 300, "{} documents", cases.len());
    let schema = schema();
    let mut disagreements = Vec::new();
    for case in &cases {
        let got = ours(&schema.validate(&case.query));
        let expected = theirs(&case.errors);
        if got.is_empty() != case.valid || got != expected {
            disagreements.push(format!(
                "{}: {:?}\n  got      {got:?}\n  expected {expected:?}",
                case.name, case.query
            ));
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} of {} documents differ from graphql-js:\n{}",
        disagreements.len(),
        cases.len(),
        disagreements.join("\n")
    );
}
