//! The wire formats of the HTTP streams: GraphQL over SSE (both modes) and
//! Apollo's multipart subscriptions. Every byte a stream writes is built
//! here; [`super::feed`] only decides when.

use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderValue;
use serde_json::json;

use crate::bus::Cursor;
use crate::graphql::GraphQLError;

/// The multipart boundary Apollo clients expect (`boundary="graphql"`).
const PART: &[u8] = b"\r\n--graphql\r\ncontent-type: application/json\r\n\r\n";
const END: &[u8] = b"\r\n--graphql--\r\n";

/// One HTTP stream's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// graphql-sse, distinct connections: one operation per stream, each
    /// `next` with the event's cursor as its SSE `id`.
    Sse,
    /// graphql-sse, single connection: many operations, their ids in the data.
    SseSingle,
    /// Apollo multipart subscriptions (`subscriptionSpec=1.0`).
    Multipart,
}

/// Per operation: the bytes around its payloads, built once at its start
/// so that each delivery is one splice.
#[derive(Debug)]
pub struct Envelope {
    prefix: Bytes,
    suffix: &'static [u8],
    /// `complete` for this operation (SSE only).
    complete: Bytes,
}

impl Framing {
    pub fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Self::Sse | Self::SseSingle => "text/event-stream; charset=utf-8",
            Self::Multipart => "multipart/mixed;boundary=\"graphql\";subscriptionSpec=1.0",
        })
    }

    /// What the stream starts with, so that proxies and browsers see bytes
    /// at once: an SSE comment, or an empty multipart heartbeat part.
    pub fn open(self, buf: &mut BytesMut) {
        self.heartbeat(buf);
    }

    pub fn heartbeat(self, buf: &mut BytesMut) {
        match self {
            Self::Sse | Self::SseSingle => buf.put_slice(b":\n\n"),
            Self::Multipart => {
                buf.put_slice(PART);
                buf.put_slice(b"{}");
            }
        }
    }

    pub fn envelope(self, id: &str) -> Envelope {
        let quoted = serde_json::to_string(id).expect("strings serialise");
        let (prefix, suffix, complete) = match self {
            Self::Sse => (
                Bytes::from_static(b"event: next\ndata: "),
                &b"\n\n"[..],
                // EventSource dispatches no event without data: `null`
                // lets a browser see the end and close its stream.
                Bytes::from_static(b"event: complete\ndata: null\n\n"),
            ),
            Self::SseSingle => (
                Bytes::from(format!("event: next\ndata: {{\"id\":{quoted},\"payload\":")),
                &b"}\n\n"[..],
                Bytes::from(format!("event: complete\ndata: {{\"id\":{quoted}}}\n\n")),
            ),
            Self::Multipart => {
                let mut prefix = BytesMut::from(PART);
                prefix.put_slice(b"{\"payload\":");
                (prefix.freeze(), &b"}"[..], Bytes::new())
            }
        };
        Envelope {
            prefix,
            suffix,
            complete,
        }
    }

    /// One execution result of `envelope`'s operation.
    pub fn next(
        self,
        envelope: &Envelope,
        payload: &[u8],
        cursor: Option<Cursor>,
        buf: &mut BytesMut,
    ) {
        if let (Self::Sse, Some(cursor)) = (self, cursor) {
            use std::fmt::Write;
            let _ = writeln!(buf, "id: {cursor}");
        }
        buf.reserve(envelope.prefix.len() + payload.len() + envelope.suffix.len());
        buf.put_slice(&envelope.prefix);
        buf.put_slice(payload);
        buf.put_slice(envelope.suffix);
    }

    /// The operation is over. Multipart has no per-operation end: its
    /// stream ends with [`Self::end`].
    pub fn complete(self, envelope: &Envelope, buf: &mut BytesMut) {
        buf.put_slice(&envelope.complete);
    }

    /// An operation that ended with errors: an execution result carrying
    /// them, then its end.
    pub fn errors(self, envelope: &Envelope, errors: &[GraphQLError], buf: &mut BytesMut) {
        let payload = serde_json::to_vec(&json!({ "errors": errors })).expect("errors serialise");
        self.next(envelope, &payload, None, buf);
        self.complete(envelope, buf);
    }

    /// The server ended a running operation (`SCHEMA_CHANGED`,
    /// `EVENTS_LOST`, `FORBIDDEN` after a reload): on SSE like
    /// [`Self::errors`], on multipart a fatal part, as Apollo's protocol
    /// says a subscription ends for a reason other than its own result.
    pub fn ended(self, envelope: &Envelope, errors: &[GraphQLError], buf: &mut BytesMut) {
        match self {
            Self::Multipart => self.fatal_errors(errors, buf),
            Self::Sse | Self::SseSingle => self.errors(envelope, errors, buf),
        }
    }

    /// The whole stream ends for a reason that is not one operation's
    /// (token expiry, slow consumer, shutdown): a multipart fatal part.
    /// SSE says it per operation ([`Self::errors`]) or not at all.
    pub fn fatal(self, error: &GraphQLError, buf: &mut BytesMut) {
        self.fatal_errors(std::slice::from_ref(error), buf);
    }

    fn fatal_errors(self, errors: &[GraphQLError], buf: &mut BytesMut) {
        if self == Self::Multipart {
            // Written in the order Apollo's docs show it.
            buf.put_slice(PART);
            buf.put_slice(b"{\"payload\":null,\"errors\":");
            buf.put_slice(&serde_json::to_vec(errors).expect("errors serialise"));
            buf.put_slice(b"}");
        }
    }

    /// The last bytes of the stream: multipart's close delimiter.
    pub fn end(self, buf: &mut BytesMut) {
        if self == Self::Multipart {
            buf.put_slice(END);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(f: impl FnOnce(&mut BytesMut)) -> String {
        let mut buf = BytesMut::new();
        f(&mut buf);
        String::from_utf8(buf.to_vec()).unwrap()
    }

    #[test]
    fn sse_next_carries_the_cursor_as_its_id() {
        let e = Framing::Sse.envelope("");
        let out = written(|b| Framing::Sse.next(&e, br#"{"data":{}}"#, Some(Cursor::seq(7)), b));
        assert_eq!(out, "id: 7\nevent: next\ndata: {\"data\":{}}\n\n");
        assert_eq!(
            written(|b| Framing::Sse.complete(&e, b)),
            "event: complete\ndata: null\n\n"
        );
    }

    #[test]
    fn single_connection_events_name_their_operation() {
        let f = Framing::SseSingle;
        let e = f.envelope("op\"1");
        assert_eq!(
            written(|b| f.next(&e, b"{}", Some(Cursor::seq(1)), b)),
            "event: next\ndata: {\"id\":\"op\\\"1\",\"payload\":{}}\n\n"
        );
        assert_eq!(
            written(|b| f.complete(&e, b)),
            "event: complete\ndata: {\"id\":\"op\\\"1\"}\n\n"
        );
    }

    #[test]
    fn multipart_parts_are_framed_as_apollo_clients_parse_them() {
        let f = Framing::Multipart;
        let e = f.envelope("");
        let out = written(|b| {
            f.open(b);
            f.next(&e, br#"{"data":{"a":1}}"#, None, b);
            f.fatal(&GraphQLError::new("bye").with_code("SHUTTING_DOWN"), b);
            f.end(b);
        });
        assert_eq!(
            out,
            "\r\n--graphql\r\ncontent-type: application/json\r\n\r\n{}\
             \r\n--graphql\r\ncontent-type: application/json\r\n\r\n{\"payload\":{\"data\":{\"a\":1}}}\
             \r\n--graphql\r\ncontent-type: application/json\r\n\r\n{\"payload\":null,\"errors\":[{\"message\":\"bye\",\"extensions\":{\"code\":\"SHUTTING_DOWN\"}}]}\
             \r\n--graphql--\r\n"
        );
    }

    #[test]
    fn an_ended_operation_is_a_fatal_part_on_multipart_and_errors_on_sse() {
        let error = [GraphQLError::new("gone").with_code("SCHEMA_CHANGED")];
        let f = Framing::Multipart;
        let e = f.envelope("");
        assert_eq!(
            written(|b| f.ended(&e, &error, b)),
            "\r\n--graphql\r\ncontent-type: application/json\r\n\r\n{\"payload\":null,\"errors\":[{\"message\":\"gone\",\"extensions\":{\"code\":\"SCHEMA_CHANGED\"}}]}"
        );
        let f = Framing::SseSingle;
        let e = f.envelope("s");
        assert_eq!(
            written(|b| f.ended(&e, &error, b)),
            written(|b| f.errors(&e, &error, b))
        );
    }

    #[test]
    fn sse_errors_are_a_next_then_complete() {
        let f = Framing::Sse;
        let e = f.envelope("");
        let out = written(|b| f.errors(&e, &[GraphQLError::new("no")], b));
        assert_eq!(
            out,
            "event: next\ndata: {\"errors\":[{\"message\":\"no\"}]}\n\nevent: complete\ndata: null\n\n"
        );
    }
}
