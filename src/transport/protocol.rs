//! The WebSocket edge: frames become typed client messages ([`ClientMessage`]
//! for graphql-transport-ws, [`super::legacy_protocol::LegacyMessage`] for the
//! legacy `graphql-ws`) and [`Outbound`] values become frames. This is the
//! only file that sees `tungstenite::Message`.
//!
//! Protocol: <https://github.com/enisdenjo/graphql-ws/blob/master/PROTOCOL.md>.

use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::{Sink, Stream};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

pub use super::frame::{Frame, NextEnvelope};

/// The subprotocol this module speaks.
pub const SUBPROTOCOL: &str = "graphql-transport-ws";

/// Close reasons must fit a control frame (125 bytes, 2 of them the code).
pub const MAX_CLOSE_REASON: usize = 123;

/// A message from the client.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    ConnectionInit {
        #[serde(default)]
        payload: Option<Map<String, Value>>,
    },
    Ping {
        #[serde(default)]
        payload: Option<Value>,
    },
    Pong {
        #[serde(default)]
        payload: Option<Value>,
    },
    Subscribe {
        id: String,
        payload: SubscribePayload,
    },
    Complete {
        id: String,
    },
}

/// The operation of a `subscribe` message: the request every transport
/// reads.
pub use crate::subscriptions::operation::Request as SubscribePayload;

/// A subprotocol's client messages, read from one text (or binary) frame.
pub trait TextMessage: Sized {
    /// The message in `text`; the error is the parser's reason.
    fn parse(text: &[u8]) -> Result<Self, String>;
}

impl TextMessage for ClientMessage {
    fn parse(text: &[u8]) -> Result<Self, String> {
        Self::parse(text)
    }
}

impl ClientMessage {
    /// Parses one text frame; the error is the reason for a `4400` close.
    pub fn parse(text: &[u8]) -> Result<Self, String> {
        let msg: Self =
            serde_json::from_slice(text).map_err(|e| format!("Invalid message: {e}"))?;
        match &msg {
            Self::Subscribe { id, .. } | Self::Complete { id } if id.is_empty() => {
                Err("Invalid message: \"id\" must be a non-empty string".into())
            }
            _ => Ok(msg),
        }
    }
}

/// Close codes subcar sends. Codes a client should retry on are the ones
/// the reference graphql-ws client retries (`1001`, `1013`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum CloseCode {
    Normal = 1000,
    /// Server draining or a heartbeat that went unanswered: reconnect.
    GoingAway = 1001,
    /// A frame over `limits.max_message_bytes`.
    MessageTooBig = 1009,
    /// Slow consumer: reconnect later.
    TryAgainLater = 1013,
    BadRequest = 4400,
    Unauthorized = 4401,
    Forbidden = 4403,
    ConnectionInitTimeout = 4408,
    SubscriberAlreadyExists = 4409,
    /// A second `connection_init`, or a client that kept flooding after
    /// `RATE_LIMITED` errors.
    TooManyRequests = 4429,
    InternalServerError = 4500,
}

/// What the session sends.
#[derive(Debug, Clone, PartialEq)]
pub enum Outbound {
    Text(Frame),
    /// A WebSocket-level ping (the heartbeat); every RFC 6455 client answers it.
    Ping,
    /// The reason is cut to [`MAX_CLOSE_REASON`] bytes on a char boundary.
    Close(CloseCode, String),
}

impl Outbound {
    pub fn close(code: CloseCode, reason: impl Into<String>) -> Self {
        Self::Close(code, cut_reason(reason.into(), MAX_CLOSE_REASON))
    }
}

/// `reason` cut to at most `max` bytes on a char boundary: parser reasons
/// may quote client input, and what is sent back about it stays small.
pub fn cut_reason(mut reason: String, max: usize) -> String {
    if reason.len() > max {
        let mut cut = max;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
    }
    reason
}

/// What the session receives; `M` is the subprotocol's client message.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound<M = ClientMessage> {
    Message(M),
    /// Not a protocol message, with the parser's reason.
    Invalid(String),
    /// A frame over the size limit: close `1009`.
    TooBig,
    /// A WebSocket ping or pong: the client is alive.
    Alive,
    /// The client closed the socket.
    Closed,
}

/// tokio-tungstenite buffers sized for many mostly idle connections: the
/// default 128 KiB read buffer would cost 128 KiB per connection, touched on
/// every read. Frames queued together are written with one flush.
pub fn websocket_config(max_message_bytes: usize) -> WebSocketConfig {
    let write_buffer = 16 * 1024;
    WebSocketConfig::default()
        .read_buffer_size(2 * 1024)
        .write_buffer_size(write_buffer)
        .max_write_buffer_size(write_buffer + 2 * max_message_bytes + 64 * 1024)
        .max_message_size(Some(max_message_bytes))
        .max_frame_size(Some(max_message_bytes))
}

/// A WebSocket as a typed [`Stream`] of [`Inbound`] and [`Sink`] of [`Outbound`].
///
/// Its `close` is the server's half of the closing handshake: it flushes
/// the close frame, then reads until the client's close (or the end of the
/// input), so that the socket is not dropped with unread input, which
/// resets the connection and can cost the client the close frame. After an
/// oversized frame the input is no longer frames (the rest of the refused
/// payload follows): it is then read raw and discarded, after our side of
/// the TCP connection is shut down. The caller bounds the whole in time.
pub struct WsTransport<S, M = ClientMessage> {
    inner: WebSocketStream<S>,
    /// Reads `M`s (`fn` so the transport is `Send`/`Sync` whatever `M` is).
    message: PhantomData<fn() -> M>,
    /// A frame header announced more than the limit: tungstenite would
    /// go on buffering the payload, so the frames are not read again.
    oversized: bool,
    closing: Closing,
}

/// Where `poll_close` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    /// The close frame is still to be flushed.
    Flush,
    /// Reading frames until the client's close.
    Frames,
    /// Ending our side of the TCP connection, then reading raw bytes.
    Shutdown,
    Raw,
    Done,
}

/// Reads of the close drain per poll, so that a client that keeps
/// sending cannot hold a worker.
const DRAIN_READS_PER_POLL: usize = 16;

impl<S, M> WsTransport<S, M> {
    pub fn new(inner: WebSocketStream<S>) -> Self {
        Self {
            inner,
            message: PhantomData,
            oversized: false,
            closing: Closing::Flush,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin, M: TextMessage> Stream for WsTransport<S, M> {
    type Item = Inbound<M>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Inbound<M>>> {
        loop {
            let item = match ready!(Pin::new(&mut self.inner).poll_next(cx)) {
                None => return Poll::Ready(None),
                Some(Ok(Message::Text(t))) => Inbound::from_text(t.as_bytes()),
                Some(Ok(Message::Binary(b))) => Inbound::from_text(&b),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => Inbound::Alive,
                Some(Ok(Message::Close(_))) => Inbound::Closed,
                Some(Ok(Message::Frame(_))) => continue,
                Some(Err(tungstenite::Error::Capacity(_))) => {
                    self.oversized = true;
                    Inbound::TooBig
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "websocket read failed");
                    return Poll::Ready(None);
                }
            };
            return Poll::Ready(Some(item));
        }
    }
}

impl<M: TextMessage> Inbound<M> {
    fn from_text(text: &[u8]) -> Self {
        match M::parse(text) {
            Ok(m) => Self::Message(m),
            Err(reason) => Self::Invalid(reason),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin, M> Sink<Outbound> for WsTransport<S, M> {
    type Error = tungstenite::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.inner).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Outbound) -> Result<(), Self::Error> {
        let msg = match item {
            // SAFETY: a Frame is UTF-8 by construction (serde_json output, or
            // bytes the dispatcher validated once per group).
            Outbound::Text(f) => {
                let b = f.into_bytes();
                Message::Text(unsafe { Utf8Bytes::from_bytes_unchecked(b) })
            }
            Outbound::Ping => Message::Ping(Bytes::new()),
            Outbound::Close(code, reason) => Message::Close(Some(CloseFrame {
                code: WsCloseCode::from(code as u16),
                reason: reason.into(),
            })),
        };
        Pin::new(&mut self.inner).start_send(msg)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = &mut *self;
        let mut reads = 0;
        loop {
            if reads >= DRAIN_READS_PER_POLL {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            match this.closing {
                Closing::Flush => {
                    ready!(Pin::new(&mut this.inner).poll_close(cx))?;
                    this.closing = if this.oversized {
                        Closing::Shutdown
                    } else {
                        Closing::Frames
                    };
                }
                Closing::Frames => match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
                    // tungstenite answers nothing more once closing; a
                    // server's stream ends at the client's close.
                    Some(Ok(_)) => reads += 1,
                    None | Some(Err(_)) => this.closing = Closing::Done,
                },
                Closing::Shutdown => {
                    let _ = ready!(Pin::new(this.inner.get_mut()).poll_shutdown(cx));
                    this.closing = Closing::Raw;
                }
                Closing::Raw => {
                    let mut buf = [0u8; 4096];
                    let mut rb = tokio::io::ReadBuf::new(&mut buf);
                    match ready!(Pin::new(this.inner.get_mut()).poll_read(cx, &mut rb)) {
                        Ok(()) if !rb.filled().is_empty() => reads += 1,
                        _ => this.closing = Closing::Done,
                    }
                }
                Closing::Done => return Poll::Ready(Ok(())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_client_messages() {
        assert_eq!(
            ClientMessage::parse(br#"{"type":"connection_init"}"#),
            Ok(ClientMessage::ConnectionInit { payload: None })
        );
        let sub = ClientMessage::parse(
            br#"{"id":"1","type":"subscribe","payload":{"query":"subscription{a}","operationName":null,"variables":{"x":1}}}"#,
        )
        .unwrap();
        assert!(
            matches!(sub, ClientMessage::Subscribe { ref id, ref payload } if id == "1" && payload.variables.is_some())
        );
        for bad in [
            &br#"{"type":"next","id":"1","payload":{}}"#[..],
            br#"{"type":"subscribe","id":"","payload":{"query":"x"}}"#,
            br#"{"type":"subscribe","id":"1"}"#,
            br#"{"type":"connection_init","payload":5}"#,
            b"not json",
        ] {
            assert!(
                ClientMessage::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn close_reasons_fit_a_control_frame() {
        let Outbound::Close(_, r) = Outbound::close(CloseCode::BadRequest, "é".repeat(100)) else {
            unreachable!()
        };
        assert!(r.len() <= MAX_CLOSE_REASON);
    }
}
