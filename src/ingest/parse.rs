//! Webhook bodies to events: one JSON event, a JSON array of events, or
//! NDJSON (one event a line). The whole body is validated before anything
//! is returned, so a bad event rejects its batch.

use std::sync::Arc;

use serde_json::Value;

use crate::bus::{Event, MAX_ID_BYTES};

/// The body encodings the webhook accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Ndjson,
}

impl Format {
    /// From a `Content-Type` value; `None` is a `415`.
    pub fn from_content_type(value: &str) -> Option<Self> {
        let essence = value.split(';').next()?.trim();
        if essence.eq_ignore_ascii_case("application/json") {
            Some(Self::Json)
        } else if essence.eq_ignore_ascii_case("application/x-ndjson")
            || essence.eq_ignore_ascii_case("application/ndjson")
        {
            Some(Self::Ndjson)
        } else {
            None
        }
    }
}

/// Why a body holds no valid batch; `index` is set when the body is a batch.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{message}")]
pub struct InvalidEvent {
    pub message: String,
    pub index: Option<usize>,
}

/// Parses and validates a whole body. `header_id` (`webhook-id`) stands in
/// for the id of a single event that has none; an event of a batch that has
/// none gets `<webhook-id>#<its index>`, so that a request sent again with
/// the same `webhook-id` is deduplicated event by event too. Ids are at
/// most [`MAX_ID_BYTES`] long.
pub fn parse(
    body: &[u8],
    format: Format,
    header_id: Option<&str>,
) -> Result<Vec<Event>, InvalidEvent> {
    match format {
        Format::Json => {
            let value: Value = serde_json::from_slice(body).map_err(|e| InvalidEvent {
                message: format!("body is not valid JSON: {e}"),
                index: None,
            })?;
            match value {
                // Found by the webhook_body fuzzer: `[]` was a 202 for
                // nothing, where an empty NDJSON body is refused.
                Value::Array(items) if items.is_empty() => Err(no_event()),
                Value::Array(items) => items
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| event(v, derived(header_id, i).as_deref()).map_err(|m| at(m, i)))
                    .collect(),
                single => Ok(vec![event(single, header_id).map_err(|message| {
                    InvalidEvent {
                        message,
                        index: None,
                    }
                })?]),
            }
        }
        Format::Ndjson => {
            let mut events = Vec::new();
            for line in body.split(|b| *b == b'\n') {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let i = events.len();
                let value: Value = serde_json::from_slice(line)
                    .map_err(|e| at(format!("line is not valid JSON: {e}"), i))?;
                events.push(event(value, derived(header_id, i).as_deref()).map_err(|m| at(m, i))?);
            }
            if events.is_empty() {
                return Err(no_event());
            }
            Ok(events)
        }
    }
}

fn no_event() -> InvalidEvent {
    InvalidEvent {
        message: "body holds no event".into(),
        index: None,
    }
}

fn at(message: String, index: usize) -> InvalidEvent {
    InvalidEvent {
        message,
        index: Some(index),
    }
}

/// The id of event `index` of a batch without one of its own.
fn derived(header_id: Option<&str>, index: usize) -> Option<String> {
    header_id
        .filter(|h| !h.is_empty())
        .map(|h| format!("{h}#{index}"))
}

fn event(value: Value, header_id: Option<&str>) -> Result<Event, String> {
    let Value::Object(mut obj) = value else {
        return Err("an event must be a JSON object".into());
    };
    let topic = match obj.remove("topic") {
        Some(Value::String(t)) if !t.is_empty() => Arc::<str>::from(t),
        Some(_) => return Err("\"topic\" must be a non-empty string".into()),
        None => return Err("\"topic\" is required".into()),
    };
    let payload = obj.remove("payload").ok_or("\"payload\" is required")?;
    let id = match obj.remove("id") {
        Some(Value::String(id)) if id.len() > MAX_ID_BYTES => {
            return Err(format!(
                "\"id\" is {} bytes long; at most {MAX_ID_BYTES} are allowed",
                id.len()
            ));
        }
        Some(Value::String(id)) if !id.is_empty() => Some(Arc::<str>::from(id)),
        Some(Value::Null) | None => header_id.filter(|s| !s.is_empty()).map(Arc::from),
        Some(_) => return Err("\"id\" must be a non-empty string".into()),
    };
    Ok(Event { topic, id, payload })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn single_array_and_ndjson() {
        let one = parse(
            br#"{"topic":"a","payload":{"x":1}}"#,
            Format::Json,
            Some("h1"),
        )
        .unwrap();
        assert_eq!(one[0].id.as_deref(), Some("h1"));
        assert_eq!(one[0].payload, json!({"x": 1}));
        let many = parse(
            br#"[{"topic":"a","payload":1,"id":"e1"},{"topic":"b","payload":null}]"#,
            Format::Json,
            Some("h1"),
        )
        .unwrap();
        assert_eq!(many.len(), 2);
        assert_eq!(many[0].id.as_deref(), Some("e1"));
        assert_eq!(
            many[1].id.as_deref(),
            Some("h1#1"),
            "derived from the header"
        );
        let many = parse(
            br#"[{"topic":"a","payload":1},{"topic":"b","payload":null}]"#,
            Format::Json,
            None,
        )
        .unwrap();
        assert_eq!(many[1].id, None, "no header, no id");
        let nd = parse(
            b"{\"topic\":\"a\",\"payload\":1}\n\n{\"topic\":\"a\",\"payload\":2}\n",
            Format::Ndjson,
            None,
        )
        .unwrap();
        assert_eq!(nd.len(), 2);
    }

    #[test]
    fn errors_name_the_index() {
        let err = parse(
            br#"[{"topic":"a","payload":1},{"payload":1}]"#,
            Format::Json,
            None,
        )
        .unwrap_err();
        assert_eq!(err.index, Some(1));
        assert!(err.message.contains("topic"));
        let err = parse(
            b"{\"topic\":\"a\",\"payload\":1}\nnope\n",
            Format::Ndjson,
            None,
        )
        .unwrap_err();
        assert_eq!(err.index, Some(1));
        let err = parse(br#"{"topic":"a"}"#, Format::Json, None).unwrap_err();
        assert_eq!(err.index, None);
        assert!(parse(b"{", Format::Json, None).is_err());
        assert!(parse(br#"{"topic":1,"payload":1}"#, Format::Json, None).is_err());
    }

    #[test]
    fn ids_are_bounded() {
        let ok = "i".repeat(MAX_ID_BYTES);
        let body = format!(r#"[{{"topic":"a","payload":1,"id":"{ok}"}}]"#);
        assert!(parse(body.as_bytes(), Format::Json, None).is_ok());
        let long = "i".repeat(MAX_ID_BYTES + 1);
        let body =
            format!(r#"[{{"topic":"a","payload":1}},{{"topic":"a","payload":1,"id":"{long}"}}]"#);
        let err = parse(body.as_bytes(), Format::Json, None).unwrap_err();
        assert_eq!(err.index, Some(1));
        assert!(err.message.contains("257 bytes"), "{}", err.message);
        let body = format!("{{\"topic\":\"a\",\"payload\":1,\"id\":\"{long}\"}}\n");
        let err = parse(body.as_bytes(), Format::Ndjson, None).unwrap_err();
        assert_eq!(err.index, Some(0));
    }

    #[test]
    fn a_body_without_events_is_refused_in_both_formats() {
        for (body, format) in [
            (&b"[]"[..], Format::Json),
            (b" [ ] ", Format::Json),
            (b"\n \n", Format::Ndjson),
            (b"", Format::Ndjson),
        ] {
            let err = parse(body, format, Some("h1")).unwrap_err();
            assert_eq!(err.message, "body holds no event");
            assert_eq!(err.index, None);
        }
    }

    #[test]
    fn content_types() {
        assert_eq!(
            Format::from_content_type("application/json; charset=utf-8"),
            Some(Format::Json)
        );
        assert_eq!(
            Format::from_content_type("application/x-ndjson"),
            Some(Format::Ndjson)
        );
        assert_eq!(Format::from_content_type("text/plain"), None);
    }
}
