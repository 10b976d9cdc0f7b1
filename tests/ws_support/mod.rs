//! Harness for the realtime tests: subcar in-process on ephemeral ports
//! (public + webhook listeners) with a test schema, the real async-graphql
//! upstream of `tests/support` for queries over the socket, a
//! graphql-transport-ws client over a real socket, and a webhook sender.
#![allow(dead_code)]

#[path = "../support/mod.rs"]
pub mod support;

use support::TestUpstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use subcar::app::App;
use subcar::config::Config;
use subcar::shutdown::Shutdown;
use subcar::subscriptions::Registry;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Message, http::HeaderValue};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for something that should happen; never asserted on.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub const SCHEMA: &str = r#"
type Query { hello: String }
type Incident { id: ID! title: String severity: String }
type Item { kind: String n: Int }
type Subscription {
  incidentUpdated(severity: String): Incident
  counter: Int
  item(kind: String): Item
}
"#;

/// A running subcar; stops when dropped.
pub struct Rt {
    pub addr: SocketAddr,
    pub webhook: SocketAddr,
    pub admin: SocketAddr,
    pub registry: Arc<Registry>,
    shutdown: Shutdown,
    _schema: tempfile::NamedTempFile,
}

impl Drop for Rt {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// Starts subcar with `extra` TOML appended (sections other than
/// `[server]`, `[upstream]`, `[schema]`).
pub async fn spawn(extra: &str) -> Rt {
    let upstream = TestUpstream::start().await;
    spawn_with_upstream(&upstream.url(), extra).await
}

/// Like [`spawn`], with queries (and upstream authentication) going to
/// `upstream_url`.
pub async fn spawn_with_upstream(upstream_url: &str, extra: &str) -> Rt {
    spawn_with_server(upstream_url, "", extra).await
}

/// Like [`spawn_with_upstream`], with `server` lines added to `[server]`.
pub async fn spawn_with_server(upstream_url: &str, server: &str, extra: &str) -> Rt {
    let schema = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(schema.path(), SCHEMA).unwrap();
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
drain_timeout = "2s"
{server}
[admin]
listen = "127.0.0.1:0"
[upstream]
url = "{upstream_url}"
timeout = "5s"
[schema]
path = "{schema}"
introspect_upstream = false
{extra}
"#,
        schema = schema.path().display(),
    );
    let text = if text.contains("[webhook]") {
        text
    } else {
        format!("{text}\n[webhook]\nlisten = \"127.0.0.1:0\"\n")
    };
    let config = Config::parse(&text, std::iter::empty()).expect("test config is valid");
    let bound = App::build(config)
        .expect("app builds")
        .bind()
        .await
        .expect("binds");
    let rt = Rt {
        addr: bound.public_addr(),
        webhook: bound.webhook_addr(),
        admin: bound.admin_addr(),
        registry: bound.registry(),
        shutdown: Shutdown::new(),
        _schema: schema,
    };
    tokio::spawn(bound.run(rt.shutdown.clone()));
    rt
}

/// A graphql-transport-ws client on a real socket.
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

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

/// POSTs to the webhook; returns status, headers and JSON body.
pub async fn post(
    webhook: SocketAddr,
    body: impl Into<Bytes>,
    content_type: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap, Value) {
    let stream = TcpStream::connect(webhook).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::post("/webhook")
        .header("host", webhook.to_string())
        .header("content-type", content_type);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = send
        .send_request(req.body(Full::new(body.into())).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        headers,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

/// The admin listener's `/metrics` text.
pub async fn metrics(admin: SocketAddr) -> String {
    let stream = TcpStream::connect(admin).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/metrics")
        .header("host", admin.to_string())
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = send.send_request(req).await.unwrap();
    String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

/// POSTs JSON events and expects `202`.
pub async fn publish(webhook: SocketAddr, body: Value) -> Value {
    let (status, _, json) = post(webhook, body.to_string(), "application/json", &[]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{json}");
    json
}

/// Waits until the registry holds `n` subscriptions (registration follows
/// the `subscribe` message asynchronously).
pub async fn wait_subscriptions(rt: &Rt, n: usize) {
    tokio::time::timeout(PATIENCE, async {
        while rt.registry.sizes().subscriptions != n {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "registry reached {n} subscriptions, has {:?}",
            rt.registry.sizes()
        )
    });
}
