//! A graphql-transport-ws client on a real socket.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Message, http::HeaderValue};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::PATIENCE;

pub struct Client {
    pub ws: Ws,
}

/// The socket under a [`Client`], for readers that want raw frames.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

impl Client {
    /// Connects with the graphql-transport-ws subprotocol.
    pub async fn connect(addr: SocketAddr) -> Self {
        Self::connect_with(addr, Some("graphql-transport-ws"), &[])
            .await
            .expect("upgrade accepted")
    }

    pub async fn connect_with(
        addr: SocketAddr,
        protocol: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Result<Self, tokio_tungstenite::tungstenite::Error> {
        let mut req = format!("ws://{addr}/graphql")
            .into_client_request()
            .unwrap();
        if let Some(p) = protocol {
            req.headers_mut()
                .insert("sec-websocket-protocol", HeaderValue::from_str(p).unwrap());
        }
        for (k, v) in headers {
            req.headers_mut().insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let (ws, _) = tokio_tungstenite::connect_async(req).await?;
        Ok(Self { ws })
    }

    /// Connects and sends `connection_init` with `payload`; returns the
    /// client and the first answer (the ack, or the close).
    pub async fn init(addr: SocketAddr, headers: &[(&str, &str)], payload: Value) -> (Self, Next) {
        let mut c = Self::connect_with(addr, Some("graphql-transport-ws"), headers)
            .await
            .expect("upgrade accepted");
        c.send(json!({"type": "connection_init", "payload": payload}))
            .await;
        let first = c.next().await;
        (c, first)
    }

    /// Connects, sends `connection_init` and waits for the ack.
    pub async fn ready(addr: SocketAddr) -> Self {
        let mut c = Self::connect(addr).await;
        c.send(json!({"type": "connection_init"})).await;
        assert_eq!(c.recv().await["type"], "connection_ack");
        c
    }

    pub async fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).await.unwrap();
    }

    pub async fn send_raw(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    pub async fn subscribe(&mut self, id: &str, query: &str) {
        self.send(json!({"id": id, "type": "subscribe", "payload": {"query": query}}))
            .await;
    }

    /// The next protocol message (WebSocket pings are skipped).
    pub async fn recv(&mut self) -> Value {
        match self.next().await {
            Next::Json(v) => v,
            Next::Closed(code, reason) => {
                panic!("expected a message, socket closed {code} {reason}")
            }
        }
    }

    pub async fn next(&mut self) -> Next {
        loop {
            let msg = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("server answered in time");
            match msg {
                Some(Ok(Message::Text(t))) => return Next::Json(serde_json::from_str(&t).unwrap()),
                Some(Ok(Message::Close(Some(f)))) => {
                    return Next::Closed(u16::from(f.code), f.reason.to_string());
                }
                Some(Ok(Message::Close(None))) | None | Some(Err(_)) => {
                    return Next::Closed(1006, String::new());
                }
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Waits for the close frame; returns code and reason.
    pub async fn closed(&mut self) -> (u16, String) {
        match self.next().await {
            Next::Closed(c, r) => (c, r),
            Next::Json(v) => panic!("expected close, got {v}"),
        }
    }

    pub async fn close(mut self) {
        let _ = self
            .ws
            .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            }))
            .await;
    }
}

#[derive(Debug)]
pub enum Next {
    Json(Value),
    Closed(u16, String),
}

/// Whether `next` is the `connection_ack`.
pub fn acked(next: &Next) -> bool {
    matches!(next, Next::Json(v) if v["type"] == "connection_ack")
}

/// Asserts that `next` is a close with `code` and a reason containing
/// `reason`.
#[track_caller]
pub fn closed_with(next: Next, code: u16, reason: &str) {
    match next {
        Next::Closed(c, r) => {
            assert_eq!(c, code, "{r}");
            assert!(r.contains(reason), "reason {r:?} lacks {reason:?}");
        }
        Next::Json(v) => panic!("expected close {code}, got {v}"),
    }
}

/// The HTTP response of an upgrade the server refused: status, headers and
/// JSON body (`null` when there is none).
pub fn refused_upgrade(
    result: Result<Client, tokio_tungstenite::tungstenite::Error>,
) -> (u16, http::HeaderMap, Value) {
    match result {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            let body = res
                .body()
                .as_deref()
                .map(|b| serde_json::from_slice(b).unwrap())
                .unwrap_or(Value::Null);
            (res.status().as_u16(), res.headers().clone(), body)
        }
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("upgrade accepted"),
    }
}
