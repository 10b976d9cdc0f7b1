//! The legacy `graphql-ws` subprotocol's messages (subscriptions-transport-ws):
//! client messages parsed into [`LegacyMessage`], server messages built as
//! [`Frame`]s. Raw WebSocket frames stay in [`super::protocol`].
//!
//! Protocol:
//! <https://github.com/apollographql/subscriptions-transport-ws/blob/master/PROTOCOL.md>.

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::protocol::{Frame, NextEnvelope, TextMessage, cut_reason};
use crate::graphql::GraphQLError;
use crate::subscriptions::operation::Request;

/// The subprotocol this module speaks.
pub const LEGACY_SUBPROTOCOL: &str = "graphql-ws";

/// What is said back about a message that could not be read, at most.
pub const MAX_REASON: usize = 200;

/// A message from a legacy client.
#[derive(Debug, Clone, PartialEq)]
pub enum LegacyMessage {
    /// `connection_init`; the payload is the client's `connectionParams`.
    ConnectionInit { payload: Option<Map<String, Value>> },
    /// `start`: an operation.
    Start { id: String, payload: Request },
    /// `stop`: the client ends operation `id`.
    Stop { id: String },
    /// `connection_terminate`: the client ends the connection.
    ConnectionTerminate,
    /// A JSON message the protocol cannot act on (unknown `type`, a
    /// `start` without a valid id or query): answered with an `error` for
    /// `id`, as the reference server does; the connection goes on.
    Refused { id: Option<String>, reason: String },
}

/// The envelope every message shares; `payload` is read by type.
#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    payload: Option<Value>,
}

impl TextMessage for LegacyMessage {
    /// `Err` (not JSON, not an object, an init payload that is not an
    /// object) is answered with `connection_error`, like the reference
    /// server answers a frame `JSON.parse` refuses.
    fn parse(text: &[u8]) -> Result<Self, String> {
        let bounded = |e: String| cut_reason(e, MAX_REASON);
        let envelope: Envelope =
            serde_json::from_slice(text).map_err(|e| bounded(format!("Invalid message: {e}")))?;
        let id = match envelope.id {
            Some(Value::String(id)) if !id.is_empty() => Some(id),
            _ => None,
        };
        let refused = |id: Option<String>, reason: &str| Self::Refused {
            id,
            reason: bounded(reason.to_owned()),
        };
        Ok(match (envelope.kind.as_deref(), id) {
            (Some("connection_init"), _) => match envelope.payload {
                None | Some(Value::Null) => Self::ConnectionInit { payload: None },
                Some(Value::Object(p)) => Self::ConnectionInit { payload: Some(p) },
                Some(_) => {
                    return Err("Invalid message: connection_init payload must be an object".into());
                }
            },
            (Some("connection_terminate"), _) => Self::ConnectionTerminate,
            (Some("start" | "stop"), None) => {
                refused(None, "Invalid message: \"id\" must be a non-empty string")
            }
            (Some("stop"), Some(id)) => Self::Stop { id },
            (Some("start"), Some(id)) => {
                match Request::deserialize(envelope.payload.unwrap_or(Value::Null)) {
                    Ok(payload) => Self::Start { id, payload },
                    Err(e) => refused(Some(id), &format!("Invalid start payload: {e}")),
                }
            }
            (_, id) => refused(id, "Invalid message type!"),
        })
    }
}

/// Server messages.
pub struct LegacyFrame;

impl LegacyFrame {
    pub fn connection_ack() -> Frame {
        Frame::from_trusted(Bytes::from_static(br#"{"type":"connection_ack"}"#))
    }

    /// The keep-alive.
    pub fn ka() -> Frame {
        Frame::from_trusted(Bytes::from_static(br#"{"type":"ka"}"#))
    }

    /// `connection_error` with the server's reason (the client is closed
    /// after it, except when it answers a frame that could not be read).
    pub fn connection_error(message: &str) -> Frame {
        Frame::json(&json!({"type": "connection_error", "payload": {"message": message}}))
    }

    /// The `data` envelope of operation `id`, built once when it starts.
    pub fn data_envelope(id: &str) -> NextEnvelope {
        NextEnvelope::typed(id, "data")
    }

    /// One `data` message around `result` (UTF-8 JSON), for the rare ones
    /// made without the operation's envelope at hand.
    pub fn data(id: &str, result: &[u8]) -> Frame {
        Self::data_envelope(id).frame(result, &mut BytesMut::new())
    }

    /// `error` for operation `id`: one error object, the shape the
    /// reference server sends (`{message}`); the reference client wraps it
    /// in a list.
    pub fn error(id: Option<&str>, error: &GraphQLError) -> Frame {
        match id {
            Some(id) => Frame::json(&json!({"id": id, "type": "error", "payload": error})),
            None => Frame::json(&json!({"type": "error", "payload": error})),
        }
    }

    /// `{"errors": […]}` as an execution result, for a `data` message.
    pub fn errors_result(errors: &[GraphQLError]) -> Vec<u8> {
        json!({ "errors": errors }).to_string().into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<LegacyMessage, String> {
        LegacyMessage::parse(text.as_bytes())
    }

    #[test]
    fn parses_client_messages() {
        assert_eq!(
            parse(r#"{"type":"connection_init","payload":{"Authorization":"x"}}"#),
            Ok(LegacyMessage::ConnectionInit {
                payload: Some(json!({"Authorization": "x"}).as_object().unwrap().clone())
            })
        );
        assert_eq!(
            parse(r#"{"type":"connection_init","payload":null}"#),
            Ok(LegacyMessage::ConnectionInit { payload: None })
        );
        let start = parse(
            r#"{"id":"1","type":"start","payload":{"query":"subscription{a}","variables":null,"operationName":null}}"#,
        )
        .unwrap();
        assert!(
            matches!(start, LegacyMessage::Start { ref id, ref payload } if id == "1" && payload.query == "subscription{a}")
        );
        assert_eq!(
            parse(r#"{"id":"1","type":"stop"}"#),
            Ok(LegacyMessage::Stop { id: "1".into() })
        );
        assert_eq!(
            parse(r#"{"type":"connection_terminate"}"#),
            Ok(LegacyMessage::ConnectionTerminate)
        );
    }

    #[test]
    fn what_cannot_be_acted_on_is_refused_with_its_id() {
        for (text, id) in [
            (r#"{"id":"7","type":"subscribe"}"#, Some("7")),
            (r#"{"type":"bogus"}"#, None),
            (r#"{"id":"2","type":"start"}"#, Some("2")),
            (
                r#"{"id":"3","type":"start","payload":{"query":5}}"#,
                Some("3"),
            ),
            (r#"{"id":4,"type":"start","payload":{"query":"{a}"}}"#, None),
            (r#"{"type":"stop"}"#, None),
        ] {
            match parse(text) {
                Ok(LegacyMessage::Refused { id: got, reason }) => {
                    assert_eq!(got.as_deref(), id, "{text}");
                    assert!(reason.len() <= MAX_REASON);
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        for bad in [
            "not json",
            "[1]",
            r#"{"type":"connection_init","payload":5}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        // A reason quoting a long client string is cut.
        let long = format!(
            r#"{{"id":"1","type":"start","payload":{{"query":"{{a}}","variables":"{}"}}}}"#,
            "x".repeat(5000)
        );
        let Ok(LegacyMessage::Refused { reason, .. }) = parse(&long) else {
            panic!()
        };
        assert!(reason.len() <= MAX_REASON);
    }

    #[test]
    fn frames_are_json() {
        let mut buf = bytes::BytesMut::new();
        let f = LegacyFrame::data_envelope("a\"b").frame(br#"{"data":{"x":1}}"#, &mut buf);
        let v: Value = serde_json::from_slice(f.as_bytes()).unwrap();
        assert_eq!(
            v,
            json!({"id": "a\"b", "type": "data", "payload": {"data": {"x": 1}}})
        );
        let e: Value = serde_json::from_slice(
            LegacyFrame::error(Some("1"), &GraphQLError::new("no")).as_bytes(),
        )
        .unwrap();
        assert_eq!(
            e,
            json!({"id": "1", "type": "error", "payload": {"message": "no"}})
        );
        let c: Value =
            serde_json::from_slice(LegacyFrame::connection_error("bye").as_bytes()).unwrap();
        assert_eq!(
            c,
            json!({"type": "connection_error", "payload": {"message": "bye"}})
        );
    }
}
