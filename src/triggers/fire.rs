//! Judging a mutation's answer: which planned root fields came back with a
//! value and no error on their path, their payloads (CEL), their event ids,
//! and one publish for the whole request, exactly as the webhook publishes.
//!
//! # Event ids
//!
//! An event's id is a digest of what makes it the same event again: the
//! trigger (its mutation, topic and payload source), the caller's subject,
//! the operation's position in a batch and the field's response key, and
//! either the client's `Idempotency-Key` header, when it sent one, or the
//! operation as sent (document, operation name, variables) together with
//! the field's answer. A retried request (to this replica or another one,
//! over HTTP or a socket) thus gets the same ids and the bus's dedup
//! delivers its events once within `webhook.dedup_window`; two requests
//! that differ in what they asked or in what the upstream answered get
//! different ids. Two identical requests with identical answers within the
//! window are one event, unless they carry different `Idempotency-Key`s.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use serde_json::{Map, Value};

use super::{Answer, Caller, MAX_RESPONSE_BYTES, Operation, Plan, Rule, Triggers, hex};
use crate::bus::{Batch, BusError, DEADLINE_GRACE, Event, PUBLISH_TIMEOUT};
use crate::graphql::RootField;
use crate::metrics::TriggerFailure;

/// How long the rest of an answer the client stopped reading may take.
const READ_REST_TIMEOUT: Duration = Duration::from_secs(30);

impl Triggers {
    pub(super) async fn fire(
        &self,
        plan: Plan,
        answer: Answer,
        caller: Caller,
        idempotency_key: Option<String>,
    ) {
        let body = match read(answer).await {
            Ok(body) => body,
            Err(why) => return self.unreadable(&plan, why),
        };
        let Some(parsed) = parse_answer(&body) else {
            return self.unreadable(&plan, "the answer is neither JSON nor an SSE stream of it");
        };
        let (mut claims, headers) = match caller {
            Caller::Claims(c) => (Some(c), None),
            Caller::Headers(h) => (None, Some(h)),
        };
        let mut events = Vec::new();
        let mut fired: Vec<usize> = Vec::new();
        for op in &plan.operations {
            let answer = match op.batch_index {
                Some(i) if plan.batched => parsed.get(i),
                _ if plan.batched => None,
                _ => Some(&parsed),
            };
            let Some(answer) = answer else {
                self.unreadable_operation(op, "the batch answer has no item for the operation");
                continue;
            };
            for field in &op.fields {
                let Some(result) = succeeded(answer, &field.key) else {
                    continue;
                };
                let claims = match &claims {
                    Some(c) => c.clone(),
                    None => {
                        let c = self.claims_of(headers.as_ref()).await;
                        claims = Some(c.clone());
                        c
                    }
                };
                let args = Value::Object(field.args.clone());
                for &i in self.rules.by_field.get(&field.name).into_iter().flatten() {
                    let rule = &self.rules.rules[i];
                    let vars = [("args", &args), ("result", result), ("claims", &*claims)];
                    match rule.payload.eval_with(&vars) {
                        Ok(payload) => {
                            let id = event_id(
                                rule,
                                op,
                                field,
                                &claims,
                                result,
                                idempotency_key.as_deref(),
                            );
                            events.push(Event {
                                topic: rule.topic.clone(),
                                id: Some(Arc::from(id)),
                                payload,
                            });
                            fired.push(i);
                        }
                        Err(error) => {
                            tracing::warn!(trigger = %rule.label, %error, "trigger payload failed; no event for this mutation");
                            self.failed(rule, TriggerFailure::cel);
                        }
                    }
                }
            }
        }
        if events.is_empty() {
            return;
        }
        match self.publish(events).await {
            Ok(duplicate) => {
                for (&i, dup) in fired.iter().zip(duplicate) {
                    self.metrics.trigger_event(&self.rules.rules[i].label, dup);
                }
            }
            Err(error) => {
                for &i in &fired {
                    let rule = &self.rules.rules[i];
                    tracing::warn!(trigger = %rule.label, %error, "trigger event not published");
                    self.failed(rule, TriggerFailure::publish);
                }
            }
        }
    }

    /// Published as the webhook publishes, within the same deadline; one
    /// flag per event, `true` for a duplicate.
    async fn publish(&self, events: Vec<Event>) -> Result<Vec<bool>, BusError> {
        tokio::time::timeout(
            PUBLISH_TIMEOUT + DEADLINE_GRACE,
            self.bus.publish_batch(Batch::new(events)),
        )
        .await
        .unwrap_or_else(|_| {
            Err(BusError::Unavailable {
                reason: "no answer before the publish deadline".into(),
            })
        })
        .map(|p| p.duplicate)
    }

    /// The claims of an HTTP caller: what its credentials authenticate to,
    /// `{}` when they do not (the upstream took the mutation anyway).
    async fn claims_of(&self, headers: Option<&http::HeaderMap>) -> Arc<Value> {
        let anonymous = || Arc::new(Value::Object(Map::new()));
        let Some(headers) = headers else {
            return anonymous();
        };
        match self.authenticator.authenticate(headers).await {
            Ok(identity) => Arc::new(identity.claims),
            Err(e) => {
                tracing::debug!(error = %e, "trigger caller not authenticated; claims are {{}}");
                anonymous()
            }
        }
    }

    fn unreadable(&self, plan: &Plan, why: &str) {
        for op in &plan.operations {
            self.unreadable_operation(op, why);
        }
    }

    fn unreadable_operation(&self, op: &Operation, why: &str) {
        for field in &op.fields {
            for &i in self.rules.by_field.get(&field.name).into_iter().flatten() {
                let rule = &self.rules.rules[i];
                tracing::warn!(trigger = %rule.label, reason = why, "mutation answer unreadable; no event");
                self.failed(rule, TriggerFailure::response);
            }
        }
    }

    fn failed(&self, rule: &Rule, reason: TriggerFailure) {
        self.metrics.trigger_failed(&rule.label, reason);
    }
}

/// The whole answer, or why not.
async fn read(answer: Answer) -> Result<Bytes, &'static str> {
    match answer {
        Answer::Complete(b) => Ok(b),
        Answer::Unreadable(why) => Err(why),
        Answer::Partial(chunks, mut rest) => {
            let mut all = BytesMut::new();
            for c in chunks {
                all.extend_from_slice(&c);
            }
            let read_rest = async {
                while let Some(frame) = rest.frame().await {
                    let frame = frame.map_err(|_| "the rest of the answer could not be read")?;
                    if let Ok(data) = frame.into_data() {
                        if all.len() + data.len() > MAX_RESPONSE_BYTES {
                            return Err("the answer is larger than 16 MiB");
                        }
                        all.extend_from_slice(&data);
                    }
                }
                Ok(())
            };
            tokio::time::timeout(READ_REST_TIMEOUT, read_rest)
                .await
                .map_err(|_| "the rest of the answer stalled")??;
            Ok(all.freeze())
        }
    }
}

/// The execution result in an answer: a JSON body (one result, or a
/// batch's array of them), or the first `next` event of an upstream that
/// answered a mutation as GraphQL over SSE.
fn parse_answer(body: &[u8]) -> Option<Value> {
    if let Ok(v) = serde_json::from_slice(body) {
        return Some(v);
    }
    let text = std::str::from_utf8(body).ok()?.replace("\r\n", "\n");
    text.split("\n\n").find_map(|event| {
        let mut name = None;
        let mut data = Vec::new();
        for line in event.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                name = Some(v.trim());
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push(v.strip_prefix(' ').unwrap_or(v));
            }
        }
        if !matches!(name, None | Some("next")) || data.is_empty() {
            return None;
        }
        serde_json::from_str(&data.join("\n")).ok()
    })
}

/// The field's value when the upstream answered it: non-null, and no error
/// whose path starts at it.
fn succeeded<'a>(answer: &'a Value, key: &str) -> Option<&'a Value> {
    let value = answer.get("data")?.get(key).filter(|v| !v.is_null())?;
    let errors = answer.get("errors").and_then(Value::as_array);
    let failed = errors.into_iter().flatten().any(|e| {
        e.get("path")
            .and_then(Value::as_array)
            .and_then(|p| p.first())
            .and_then(Value::as_str)
            == Some(key)
    });
    (!failed).then_some(value)
}

/// The event's id (see the module's documentation).
fn event_id(
    rule: &Rule,
    op: &Operation,
    field: &RootField,
    claims: &Value,
    result: &Value,
    idempotency_key: Option<&str>,
) -> String {
    let subject = match claims.get("sub").and_then(Value::as_str) {
        Some(sub) => sub.to_owned(),
        None => claims.to_string(),
    };
    let position = op.batch_index.map_or(String::new(), |i| i.to_string());
    let what = match idempotency_key {
        Some(key) => format!("key\0{key}"),
        None => format!("operation\0{}\0{result}", op.identity),
    };
    let material = format!(
        "{}\0{subject}\0{position}\0{}\0{what}",
        rule.identity, field.key
    );
    format!(
        "trg_{}",
        hex(&crate::bus::digest(b"trigger-event", &material))
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_field_succeeded_when_it_has_a_value_and_no_error_on_its_path() {
        let answer = json!({
            "data": {"a": {"id": 1}, "b": null, "c": {"id": 3}},
            "errors": [{"message": "x", "path": ["c", "id"]}, {"message": "y"}]
        });
        assert_eq!(succeeded(&answer, "a"), Some(&json!({"id": 1})));
        assert_eq!(succeeded(&answer, "b"), None);
        assert_eq!(succeeded(&answer, "c"), None);
        assert_eq!(succeeded(&answer, "d"), None);
        assert_eq!(succeeded(&json!({"errors": []}), "a"), None);
    }

    #[test]
    fn an_answer_is_json_or_the_first_next_of_an_sse_stream() {
        assert_eq!(
            parse_answer(br#"[{"data":{}}]"#),
            Some(json!([{"data": {}}]))
        );
        let sse = b": hi\r\n\r\nevent: next\r\ndata: {\"data\":\r\ndata: {\"a\":1}}\r\n\r\nevent: complete\r\ndata:\r\n\r\n";
        assert_eq!(parse_answer(sse), Some(json!({"data": {"a": 1}})));
        assert_eq!(parse_answer(b"<html>"), None);
    }

    fn rule() -> Rule {
        Rule {
            topic: Arc::from("t"),
            payload: crate::subscriptions::filter::Expression::compile("m", "payload", "args")
                .unwrap(),
            label: "m:t".into(),
            identity: "m\0t\0args".into(),
        }
    }

    fn op(identity: &str, batch_index: Option<usize>) -> Operation {
        Operation {
            batch_index,
            fields: Vec::new(),
            identity: identity.into(),
        }
    }

    #[test]
    fn ids_are_equal_for_a_retry_and_differ_for_another_request() {
        let field = RootField {
            name: "m".into(),
            key: "m".into(),
            args: Map::new(),
        };
        let (r, claims) = (rule(), json!({"sub": "u1", "exp": 1}));
        let id = |op: &Operation, claims: &Value, result: Value, key: Option<&str>| {
            event_id(&r, op, &field, claims, &result, key)
        };
        let first = id(&op("q1", None), &claims, json!(1), None);
        assert!(first.starts_with("trg_") && first.len() == 36, "{first}");
        // A retry, with a refreshed token of the same subject.
        assert_eq!(
            first,
            id(
                &op("q1", None),
                &json!({"sub": "u1", "exp": 2}),
                json!(1),
                None
            )
        );
        for other in [
            id(&op("q2", None), &claims, json!(1), None),
            id(&op("q1", None), &claims, json!(2), None),
            id(&op("q1", Some(0)), &claims, json!(1), None),
            id(&op("q1", None), &json!({"sub": "u2"}), json!(1), None),
            id(&op("q1", None), &claims, json!(1), Some("k1")),
        ] {
            assert_ne!(first, other);
        }
        // With an Idempotency-Key the answer does not matter.
        assert_eq!(
            id(&op("q1", None), &claims, json!(1), Some("k1")),
            id(&op("q1", None), &claims, json!(2), Some("k1"))
        );
    }
}
