//! Server messages as they are sent: [`Frame`], serialised JSON text, and
//! [`NextEnvelope`], an operation's result envelope built once and spliced
//! around each shared execution result. The graphql-transport-ws messages
//! are made here; the legacy ones in [`super::legacy_protocol`].

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::Value;

use crate::graphql::GraphQLError;

/// A serialised server message: valid UTF-8 JSON text, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame(Bytes);

impl Frame {
    /// Wraps bytes that the caller guarantees to be UTF-8 JSON (the
    /// dispatcher validates each shared payload once).
    pub fn from_trusted(bytes: Bytes) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// `value` serialised.
    pub fn json(value: &Value) -> Self {
        Self(Bytes::from(value.to_string()))
    }

    pub fn connection_ack(payload: Option<&Value>) -> Self {
        match payload {
            Some(p) => Self::json(&serde_json::json!({"type": "connection_ack", "payload": p})),
            None => Self(Bytes::from_static(br#"{"type":"connection_ack"}"#)),
        }
    }

    pub fn pong(payload: Option<&Value>) -> Self {
        match payload {
            Some(p) => Self::json(&serde_json::json!({"type": "pong", "payload": p})),
            None => Self(Bytes::from_static(br#"{"type":"pong"}"#)),
        }
    }

    /// `next` around an already serialised execution result.
    pub fn next(id: &str, result: &[u8]) -> Self {
        let envelope = NextEnvelope::new(id);
        let mut buf = BytesMut::with_capacity(envelope.prefix.len() + result.len() + 1);
        envelope.frame(result, &mut buf)
    }

    pub fn error(id: &str, errors: &[GraphQLError]) -> Self {
        Self::json(&serde_json::json!({"id": id, "type": "error", "payload": errors}))
    }

    pub fn complete(id: &str) -> Self {
        Self::json(&serde_json::json!({"id": id, "type": "complete"}))
    }
}

/// The result envelope of one operation, built once when it starts
/// (`{"id":<id>,"type":"next","payload":` … `}`; `"data"` for the legacy
/// protocol) and spliced around each shared execution result: the one place
/// result frames are made.
#[derive(Debug, Clone)]
pub struct NextEnvelope {
    prefix: Bytes,
}

/// Frames of one write share allocations of about this size.
const FRAME_CHUNK: usize = 16 * 1024;

impl NextEnvelope {
    /// A graphql-transport-ws `next` envelope.
    pub fn new(id: &str) -> Self {
        Self::typed(id, "next")
    }

    /// An envelope of message type `kind` (a protocol constant, not escaped).
    pub fn typed(id: &str, kind: &str) -> Self {
        let id = Value::from(id).to_string();
        let mut prefix = Vec::with_capacity(id.len() + kind.len() + 24);
        prefix.extend_from_slice(br#"{"id":"#);
        prefix.extend_from_slice(id.as_bytes());
        prefix.extend_from_slice(br#","type":""#);
        prefix.extend_from_slice(kind.as_bytes());
        prefix.extend_from_slice(br#"","payload":"#);
        Self {
            prefix: Bytes::from(prefix),
        }
    }

    /// The frame for `result` (UTF-8 JSON), written into `buf`: frames made
    /// one after another into the same buffer share its allocations.
    pub fn frame(&self, result: &[u8], buf: &mut BytesMut) -> Frame {
        let n = self.prefix.len() + result.len() + 1;
        if buf.capacity() < n {
            buf.reserve(n.max(FRAME_CHUNK));
        }
        buf.put_slice(&self.prefix);
        buf.put_slice(result);
        buf.put_u8(b'}');
        Frame(buf.split().freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_json() {
        let f = Frame::next("a\"b", br#"{"data":{"x":1}}"#);
        let v: Value = serde_json::from_slice(f.as_bytes()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"id": "a\"b", "type": "next", "payload": {"data": {"x": 1}}})
        );
        // Frames made into one buffer stay whole.
        let envelope = NextEnvelope::new("7");
        let mut buf = BytesMut::new();
        let frames: Vec<Frame> = (0..3)
            .map(|n| envelope.frame(format!(r#"{{"data":{n}}}"#).as_bytes(), &mut buf))
            .collect();
        for (n, f) in frames.iter().enumerate() {
            let v: Value = serde_json::from_slice(f.as_bytes()).unwrap();
            assert_eq!(
                v,
                serde_json::json!({"id": "7", "type": "next", "payload": {"data": n}})
            );
        }
    }
}
