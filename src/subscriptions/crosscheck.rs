//! The `[[subscriptions]]` blocks checked against the schema they serve:
//! each `field` is a field of the Subscription type, each CEL rule reads only
//! the variables it is evaluated with, and a rule that reads an argument the
//! field does not declare is warned about (it is always `null`). Run by
//! `subcar check`, at start-up and on every reload, against the schema known
//! then; the Subscription type is subcar's own (`schema.path`), so none of
//! this waits for the upstream.
//!
//! `[[triggers]]` are checked here too ([`check_triggers`]): the `payload`
//! reads only `args`, `result` and `claims`, the `topic` feeds some
//! subscription field (unless `webhook.unknown_topics = "accept"`), and the
//! `mutation` is a field of the upstream's Mutation type, once that is known.

use std::fmt;

use crate::config::{SubscriptionConfig, TriggerConfig};
use crate::graphql::Schema;
use crate::subscriptions::filter::{Expression, FilterError};

/// The variables of the rules evaluated for each event (`filter`,
/// `resolve.args`).
const PER_EVENT: &[&str] = &["event", "args", "claims"];
/// `allow` and `resolve.share_by` are evaluated when a client subscribes,
/// before any event.
const AT_SUBSCRIBE: &[&str] = &["args", "claims"];
/// A trigger's `payload` is evaluated on a mutation's answer.
const ON_MUTATION: &[&str] = &["args", "result", "claims"];

/// A `[[subscriptions]]` block that does not fit the schema.
#[derive(Debug, thiserror::Error)]
pub enum Mismatch {
    #[error(
        "subscriptions[{index}].field: {field:?} is not a field of the {type_name} type (fields: {})",
        known.join(", ")
    )]
    UnknownField {
        index: usize,
        field: String,
        type_name: String,
        known: Vec<String>,
    },
    #[error(
        "subscriptions[{index}].{rule}: {variable:?} is not a variable of this rule: expected {}",
        expected.join(", ")
    )]
    UnknownVariable {
        index: usize,
        rule: String,
        variable: String,
        expected: &'static [&'static str],
    },
    #[error(
        "subscriptions[{index}].{rule}: not a valid CEL expression (line {line}, column {column}): {message}"
    )]
    Invalid {
        index: usize,
        rule: String,
        line: isize,
        column: isize,
        message: String,
    },
    #[error(
        "triggers[{index}].mutation: {mutation:?} is not a field of the {type_name} type (fields: {})",
        known.join(", ")
    )]
    UnknownMutation {
        index: usize,
        mutation: String,
        type_name: String,
        known: Vec<String>,
    },
    #[error(
        "triggers[{index}].topic: {topic:?} feeds no subscription field (topics: {}): expected one of them, or webhook.unknown_topics = \"accept\"",
        known.join(", ")
    )]
    UnknownTopic {
        index: usize,
        topic: String,
        known: Vec<String>,
    },
    #[error(
        "triggers[{index}].payload: {variable:?} is not a variable of this rule: expected {}",
        ON_MUTATION.join(", ")
    )]
    UnknownPayloadVariable { index: usize, variable: String },
    #[error(
        "triggers[{index}].payload: not a valid CEL expression (line {line}, column {column}): {message}"
    )]
    InvalidPayload {
        index: usize,
        line: isize,
        column: isize,
        message: String,
    },
}

/// Every mismatch found, one line each.
#[derive(Debug, thiserror::Error)]
pub struct CrossCheckError(pub Vec<Mismatch>);

impl fmt::Display for CrossCheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the configuration does not match the schema:")?;
        for m in &self.0 {
            write!(f, "\n{m}")?;
        }
        Ok(())
    }
}

/// A rule reading `args.<argument>` of a field without that argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UndeclaredArgument {
    pub index: usize,
    pub rule: String,
    pub field: String,
    pub argument: String,
    pub declared: Vec<String>,
}

impl fmt::Display for UndeclaredArgument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "subscriptions[{}].{}: args.{} is always null: {:?} declares no argument {:?} ({})",
            self.index,
            self.rule,
            self.argument,
            self.field,
            self.argument,
            if self.declared.is_empty() {
                "it takes none".to_owned()
            } else {
                format!("arguments: {}", self.declared.join(", "))
            }
        )
    }
}

/// Checks `configs` against `schema`: the mismatches (any refuses the
/// configuration) or the warnings to print.
pub fn check(
    configs: &[SubscriptionConfig],
    schema: &Schema,
) -> Result<Vec<UndeclaredArgument>, CrossCheckError> {
    let root = schema.subscription_type();
    let fields = root.fields().unwrap_or_default();
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    for (index, config) in configs.iter().enumerate() {
        let declared = match root.field(&config.field) {
            Some(def) => Some(def.args.iter().map(|a| a.name.clone()).collect::<Vec<_>>()),
            None => {
                errors.push(Mismatch::UnknownField {
                    index,
                    field: config.field.clone(),
                    type_name: root.name.clone(),
                    known: fields.iter().map(|f| f.name.clone()).collect(),
                });
                None
            }
        };
        for (rule, source, expected) in rules(config) {
            let expression = match Expression::compile(&config.field, &rule, source) {
                Ok(e) => e,
                Err(FilterError::Compile {
                    line,
                    column,
                    message,
                    ..
                }) => {
                    errors.push(Mismatch::Invalid {
                        index,
                        rule,
                        line,
                        column,
                        message,
                    });
                    continue;
                }
            };
            let reads = expression.reads();
            for variable in reads
                .variables
                .iter()
                .filter(|v| !expected.contains(&v.as_str()))
            {
                errors.push(Mismatch::UnknownVariable {
                    index,
                    rule: rule.clone(),
                    variable: variable.clone(),
                    expected,
                });
            }
            let Some(declared) = &declared else { continue };
            for argument in reads.args.iter().filter(|a| !declared.contains(a)) {
                warnings.push(UndeclaredArgument {
                    index,
                    rule: rule.clone(),
                    field: config.field.clone(),
                    argument: argument.clone(),
                    declared: declared.clone(),
                });
            }
        }
    }
    if errors.is_empty() {
        Ok(warnings)
    } else {
        Err(CrossCheckError(errors))
    }
}

/// Checks `[[triggers]]` against `schema` and the `topics` subscription
/// fields are fed by (`None`: any topic is accepted). The mutation field is
/// checked only once the upstream's part of the schema is loaded: call it
/// again then.
pub fn check_triggers(
    triggers: &[TriggerConfig],
    schema: &Schema,
    topics: Option<&[String]>,
) -> Result<(), CrossCheckError> {
    let mutations = schema.mutation_fields();
    let mut errors = Vec::new();
    for (index, t) in triggers.iter().enumerate() {
        if let Some((type_name, known)) = &mutations
            && !known.contains(&t.mutation.as_str())
        {
            errors.push(Mismatch::UnknownMutation {
                index,
                mutation: t.mutation.clone(),
                type_name: (*type_name).to_owned(),
                known: known.iter().map(|f| (*f).to_owned()).collect(),
            });
        }
        if let Some(known) = topics
            && !known.contains(&t.topic)
        {
            errors.push(Mismatch::UnknownTopic {
                index,
                topic: t.topic.clone(),
                known: known.to_vec(),
            });
        }
        match Expression::compile(&t.mutation, "payload", &t.payload) {
            Ok(e) => errors.extend(
                e.reads()
                    .variables
                    .into_iter()
                    .filter(|v| !ON_MUTATION.contains(&v.as_str()))
                    .map(|variable| Mismatch::UnknownPayloadVariable { index, variable }),
            ),
            Err(FilterError::Compile {
                line,
                column,
                message,
                ..
            }) => errors.push(Mismatch::InvalidPayload {
                index,
                line,
                column,
                message,
            }),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CrossCheckError(errors))
    }
}

/// Every CEL rule of one block: its key, its source, the variables it has.
fn rules(config: &SubscriptionConfig) -> Vec<(String, &str, &'static [&'static str])> {
    let mut rules = Vec::new();
    if let Some(filter) = &config.filter {
        rules.push(("filter".to_owned(), filter.as_str(), PER_EVENT));
    }
    if let Some(allow) = &config.allow {
        rules.push(("allow".to_owned(), allow.as_str(), AT_SUBSCRIBE));
    }
    if let Some(resolve) = &config.resolve {
        for (name, source) in &resolve.args {
            rules.push((format!("resolve.args.{name}"), source.as_str(), PER_EVENT));
        }
        if let Some(share_by) = &resolve.share_by {
            rules.push((
                "resolve.share_by".to_owned(),
                share_by.as_str(),
                AT_SUBSCRIBE,
            ));
        }
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDL: &str = "type Query { a: Int } type Subscription { incidentUpdated(severities: [String]): Int counter: Int }";

    fn block(field: &str, filter: Option<&str>, allow: Option<&str>) -> SubscriptionConfig {
        SubscriptionConfig {
            field: field.into(),
            topic: None,
            filter: filter.map(str::to_owned),
            allow: allow.map(str::to_owned),
            resolve: None,
        }
    }

    fn run(configs: &[SubscriptionConfig]) -> Result<Vec<String>, String> {
        let schema = Schema::build(SDL, None).unwrap();
        check(configs, &schema)
            .map(|w| w.iter().map(ToString::to_string).collect())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn an_unknown_field_is_named_with_the_fields_there_are() {
        let err = run(&[
            block("counter", None, None),
            block("incidentUpdatd", None, None),
        ])
        .unwrap_err();
        assert!(
            err.contains(
                "subscriptions[1].field: \"incidentUpdatd\" is not a field of the Subscription type (fields: incidentUpdated, counter)"
            ),
            "{err}"
        );
    }

    #[test]
    fn rules_read_only_their_variables() {
        let err = run(&[
            block("counter", Some("evnt.n > 1"), None),
            block(
                "incidentUpdated",
                None,
                Some("event.n > 1 && 'ops' in claims.roles"),
            ),
        ])
        .unwrap_err();
        assert!(
            err.contains("subscriptions[0].filter: \"evnt\" is not a variable of this rule: expected event, args, claims"),
            "{err}"
        );
        assert!(
            err.contains("subscriptions[1].allow: \"event\" is not a variable of this rule: expected args, claims"),
            "{err}"
        );
        assert!(
            run(&[block(
                "counter",
                Some("event.tags.exists(t, t == claims.team)"),
                None
            )])
            .is_ok()
        );
    }

    #[test]
    fn every_mismatch_is_reported_at_once() {
        let err = run(&[
            block("nope", Some("event.n >"), None),
            block("counter", None, Some("who == 1")),
        ])
        .unwrap_err();
        assert_eq!(err.lines().count(), 4, "{err}");
        assert!(
            err.contains("subscriptions[0].filter: not a valid CEL expression (line 1, column"),
            "{err}"
        );
    }

    fn trigger(mutation: &str, topic: &str, payload: &str) -> TriggerConfig {
        TriggerConfig {
            mutation: mutation.into(),
            topic: topic.into(),
            payload: payload.into(),
        }
    }

    #[test]
    fn triggers_name_their_mutation_topic_and_payload_problems() {
        let upstream = "type Query { a: Int } type Mutation { updateIncident(id: ID!): Int }";
        let schema = Schema::build(SDL, Some(upstream)).unwrap();
        let topics = ["counter".to_owned(), "incidentUpdated".to_owned()];
        let triggers = [
            trigger(
                "updateIncident",
                "incidentUpdated",
                "{'id': args.id, 'by': claims.sub, 'n': result}",
            ),
            trigger("updateIncidnt", "incident.updated", "event.id"),
            trigger("updateIncident", "counter", "args.id +"),
        ];
        let err = check_triggers(&triggers, &schema, Some(&topics))
            .unwrap_err()
            .to_string();
        for line in [
            "triggers[1].mutation: \"updateIncidnt\" is not a field of the Mutation type (fields: updateIncident)",
            "triggers[1].topic: \"incident.updated\" feeds no subscription field (topics: counter, incidentUpdated)",
            "triggers[1].payload: \"event\" is not a variable of this rule: expected args, result, claims",
            "triggers[2].payload: not a valid CEL expression (line 1, column",
        ] {
            assert!(err.contains(line), "{line} in\n{err}");
        }
        assert_eq!(err.lines().count(), 5, "{err}");
        // Any topic with unknown_topics = "accept"; the mutation waits for
        // the upstream's schema.
        let offline = Schema::build(SDL, None).unwrap();
        assert!(check_triggers(&triggers[1..2], &offline, None).is_err());
        assert!(check_triggers(&[trigger("x", "y", "args")], &offline, None).is_ok());
    }

    #[test]
    fn an_undeclared_argument_is_a_warning() {
        let warnings = run(&[
            block(
                "incidentUpdated",
                Some("args.severity == null || event.s in args.severities"),
                None,
            ),
            block("counter", None, Some("args.tenant == claims.tenant")),
        ])
        .unwrap();
        assert_eq!(
            warnings,
            vec![
                "subscriptions[0].filter: args.severity is always null: \"incidentUpdated\" declares no argument \"severity\" (arguments: severities)",
                "subscriptions[1].allow: args.tenant is always null: \"counter\" declares no argument \"tenant\" (it takes none)",
            ]
        );
    }
}
