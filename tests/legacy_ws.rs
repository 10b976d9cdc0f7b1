//! The legacy `graphql-ws` subprotocol (subscriptions-transport-ws) over
//! real sockets: negotiation, `connection_init` / `connection_ack` / `ka`,
//! `start` / `data` / `error` / `complete` / `stop`, `connection_terminate`,
//! and every way subcar ends a legacy connection (`connection_error`, then
//! the close).

mod auth_support;
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use auth_support::{hs256, jwt_auth};
use serde_json::{Value, json};
use support::{Client, Next, metrics, publish, spawn, wait_subscriptions, watcher};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// A legacy client: a [`Client`] whose `ka` messages are skipped.
struct Legacy(Client);

impl Legacy {
    async fn connect(addr: SocketAddr) -> Self {
        let (c, protocol) = connect(addr, "graphql-ws").await.expect("upgrade accepted");
        assert_eq!(protocol, "graphql-ws");
        Self(c)
    }

    /// Connected, `connection_init` with `payload` sent, and the ack read.
    async fn ready_with(addr: SocketAddr, payload: Value) -> Self {
        let mut c = Self::connect(addr).await;
        c.send(json!({"type": "connection_init", "payload": payload}))
            .await;
        assert_eq!(c.recv().await, json!({"type": "connection_ack"}));
        c
    }

    async fn ready(addr: SocketAddr) -> Self {
        Self::ready_with(addr, json!({})).await
    }

    async fn send(&mut self, v: Value) {
        self.0.send(v).await
    }

    async fn start(&mut self, id: &str, query: &str) {
        self.send(
            json!({"id": id, "type": "start", "payload": {"query": query, "variables": null}}),
        )
        .await
    }

    /// The next message that is not a `ka`, or the close.
    async fn next(&mut self) -> Next {
        loop {
            match self.0.next().await {
                Next::Json(v) if v["type"] == "ka" => continue,
                other => return other,
            }
        }
    }

    async fn recv(&mut self) -> Value {
        match self.next().await {
            Next::Json(v) => v,
            Next::Closed(code, reason) => panic!("expected a message, closed {code} {reason}"),
        }
    }

    /// `connection_error` with a message containing `reason`, then the
    /// close with `code`.
    async fn ended(&mut self, code: u16, reason: &str) {
        let error = self.recv().await;
        assert_eq!(error["type"], "connection_error", "{error}");
        let message = error["payload"]["message"].as_str().unwrap();
        assert!(message.contains(reason), "{message:?} lacks {reason:?}");
        match self.next().await {
            Next::Closed(c, _) => assert_eq!(c, code),
            Next::Json(v) => panic!("expected the close, got {v}"),
        }
    }
}

/// Connects offering `protocols`; the subprotocol the server chose.
async fn connect(
    addr: SocketAddr,
    protocols: &str,
) -> Result<(Client, String), tokio_tungstenite::tungstenite::Error> {
    let mut req = format!("ws://{addr}/graphql")
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(protocols).unwrap(),
    );
    let (ws, res) = tokio_tungstenite::connect_async(req).await?;
    let chosen = res.headers()["sec-websocket-protocol"]
        .to_str()
        .unwrap()
        .to_owned();
    Ok((Client { ws }, chosen))
}

#[tokio::test]
async fn graphql_transport_ws_wins_and_graphql_ws_alone_gets_the_legacy_protocol() {
    let rt = spawn("").await;
    for both in [
        "graphql-ws, graphql-transport-ws",
        "graphql-transport-ws, graphql-ws",
    ] {
        let (_, chosen) = connect(rt.addr, both).await.unwrap();
        assert_eq!(chosen, "graphql-transport-ws", "{both}");
    }
    let (_, chosen) = connect(rt.addr, "chat, graphql-ws").await.unwrap();
    assert_eq!(chosen, "graphql-ws");
    match connect(rt.addr, "chat").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => assert_eq!(res.status(), 400),
        other => panic!("expected 400, got {:?}", other.map(|(_, p)| p)),
    }
}

#[tokio::test]
async fn init_is_acked_then_ka_right_away_and_every_interval() {
    let rt = spawn("[heartbeat]\ninterval = \"100ms\"").await;
    let mut c = Legacy::connect(rt.addr).await;
    c.send(json!({"type": "connection_init"})).await;
    assert_eq!(c.0.recv().await, json!({"type": "connection_ack"}));
    assert_eq!(c.0.recv().await, json!({"type": "ka"}));
    let started = tokio::time::Instant::now();
    assert_eq!(c.0.recv().await, json!({"type": "ka"}));
    assert!(started.elapsed() >= Duration::from_millis(50));
    // The connection is counted under its own transport.
    let text = metrics(rt.admin).await;
    assert!(
        text.contains("subcar_connections{transport=\"graphql_ws\"} 1"),
        "{text}"
    );
    let status = rt.admin_json("/status").await;
    assert_eq!(status["connections"]["graphql-ws"], 1);
    assert_eq!(status["connections"]["graphql-transport-ws"], 0);
}

#[tokio::test]
async fn a_client_that_answers_no_ping_ends_with_a_heartbeat_timeout() {
    let rt = spawn("[heartbeat]\ninterval = \"100ms\"\ntimeout = \"200ms\"").await;
    let mut c = Legacy::ready(rt.addr).await;
    // Not reading: the WebSocket pongs are not sent either.
    tokio::time::sleep(Duration::from_millis(800)).await;
    c.ended(1001, "heartbeat timeout").await;
}

#[tokio::test]
async fn start_delivers_data_and_stop_completes() {
    let rt = spawn("").await;
    let mut c = Legacy::ready(rt.addr).await;
    c.start("1", "subscription { counter }").await;
    wait_subscriptions(&rt, 1).await;
    publish(rt.webhook, json!({"topic": "counter", "payload": 7})).await;
    assert_eq!(
        c.recv().await,
        json!({"id": "1", "type": "data", "payload": {"data": {"counter": 7}}})
    );
    c.send(json!({"id": "1", "type": "stop"})).await;
    assert_eq!(c.recv().await, json!({"id": "1", "type": "complete"}));
    wait_subscriptions(&rt, 0).await;
    // A stop of an unknown id is ignored; the socket goes on.
    c.send(json!({"id": "nope", "type": "stop"})).await;
    c.start("2", "subscription { counter }").await;
    wait_subscriptions(&rt, 1).await;
    publish(rt.webhook, json!({"topic": "counter", "payload": 8})).await;
    assert_eq!(c.recv().await["id"], "2");
}

#[tokio::test]
async fn queries_are_data_then_complete_with_the_init_credentials() {
    let rt = spawn("").await;
    let mut c = Legacy::ready_with(rt.addr, json!({"Authorization": "Bearer t0k"})).await;
    c.start(
        "q",
        r#"query { hello auth: header(name: "authorization") }"#,
    )
    .await;
    assert_eq!(
        c.recv().await,
        json!({"id": "q", "type": "data", "payload": {"data": {"hello": "Hello, world!", "auth": "Bearer t0k"}}})
    );
    assert_eq!(c.recv().await, json!({"id": "q", "type": "complete"}));
}

#[tokio::test]
async fn validation_errors_are_data_with_errors_then_complete() {
    let rt = spawn("").await;
    let mut c = Legacy::ready(rt.addr).await;
    for (id, query) in [
        ("bad", "subscription { nope }"),
        ("syntax", "subscription { counter"),
    ] {
        c.start(id, query).await;
        let data = c.recv().await;
        assert_eq!((&data["type"], &data["id"]), (&json!("data"), &json!(id)));
        assert!(
            data["payload"]["errors"][0]["message"].is_string(),
            "{data}"
        );
        assert!(data["payload"].get("data").is_none());
        assert_eq!(c.recv().await, json!({"id": id, "type": "complete"}));
    }
    // The socket goes on.
    c.start("1", "subscription { counter }").await;
    wait_subscriptions(&rt, 1).await;
}

#[tokio::test]
async fn connection_terminate_closes_normally_and_frees_subscriptions() {
    let rt = spawn("").await;
    let mut c = Legacy::ready(rt.addr).await;
    c.start("1", "subscription { counter }").await;
    wait_subscriptions(&rt, 1).await;
    c.send(json!({"type": "connection_terminate"})).await;
    match c.next().await {
        Next::Closed(code, _) => assert_eq!(code, 1000),
        Next::Json(v) => panic!("expected the close, got {v}"),
    }
    wait_subscriptions(&rt, 0).await;
}

#[tokio::test]
async fn init_timeout_is_a_connection_error_then_the_close() {
    let rt = spawn("[heartbeat]\ninit_timeout = \"200ms\"").await;
    let mut c = Legacy::connect(rt.addr).await;
    c.ended(4408, "initialisation timeout").await;
}

#[tokio::test]
async fn start_before_init_and_a_second_init_end_the_connection() {
    let rt = spawn("").await;
    let mut c = Legacy::connect(rt.addr).await;
    c.start("1", "subscription { counter }").await;
    c.ended(4401, "Unauthorized").await;
    let mut c = Legacy::ready(rt.addr).await;
    c.send(json!({"type": "connection_init"})).await;
    c.ended(4429, "Too many initialisation requests").await;
}

#[tokio::test]
async fn malformed_frames_are_answered_and_everything_goes_on() {
    let rt = spawn("").await;
    let mut w = watcher(&rt).await;
    let mut c = Legacy::ready(rt.addr).await;
    c.start("1", "subscription { counter }").await;
    wait_subscriptions(&rt, 2).await;
    c.0.send_raw("not json").await;
    assert_eq!(c.recv().await["type"], "connection_error");
    c.0.send_raw(&format!(r#"{{"id":"{}","type":"bogus"}}"#, "x".repeat(50)))
        .await;
    let error = c.recv().await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["payload"]["message"], "Invalid message type!");
    c.send(json!({"id": "2", "type": "start", "payload": {"query": 5}}))
        .await;
    let error = c.recv().await;
    assert_eq!(
        (&error["type"], &error["id"]),
        (&json!("error"), &json!("2"))
    );
    let text = metrics(rt.admin).await;
    assert!(
        text.contains("subcar_refusals_total{reason=\"invalid_message\"} 3"),
        "{text}"
    );
    // The process serves, the other client and this one's subscription too.
    support::still_serving(&rt, &mut w, 3).await;
    assert_eq!(
        c.recv().await,
        json!({"id": "1", "type": "data", "payload": {"data": {"counter": 3}}})
    );
}

#[tokio::test]
async fn a_garbage_flood_ends_the_connection() {
    let rt = spawn("[rate_limits]\nmessages_per_connection = 1").await;
    let mut c = Legacy::ready(rt.addr).await;
    for _ in 0..20 {
        c.0.send_raw("not json").await;
    }
    // One answer; the refused ones cost nothing until the flood is closed.
    assert_eq!(c.recv().await["type"], "connection_error");
    c.ended(4429, "Too many messages").await;
}

#[tokio::test]
async fn oversized_frames_end_the_connection_with_1009() {
    let rt = spawn("[limits]\nmax_message_bytes = 1024").await;
    let mut c = Legacy::ready(rt.addr).await;
    c.start(
        "1",
        &format!("subscription {{ counter }} # {}", "x".repeat(4096)),
    )
    .await;
    c.ended(1009, "too big").await;
}

#[tokio::test]
async fn refused_init_credentials_are_a_connection_error() {
    let rt = spawn(&jwt_auth("")).await;
    let token = hs256(json!({"sub": "u1"}), 600);
    let mut ok =
        Legacy::ready_with(rt.addr, json!({"Authorization": format!("Bearer {token}")})).await;
    ok.start("1", "subscription { counter }").await;
    wait_subscriptions(&rt, 1).await;
    let mut c = Legacy::connect(rt.addr).await;
    c.send(json!({"type": "connection_init", "payload": {"Authorization": "Bearer garbage"}}))
        .await;
    c.ended(4403, "Forbidden").await;
}

#[tokio::test]
async fn a_token_expiring_while_connected_ends_with_a_connection_error() {
    let rt = spawn(&jwt_auth("")).await;
    let token = hs256(json!({"sub": "u1", "exp": auth_support::now() + 2}), 0);
    let mut c =
        Legacy::ready_with(rt.addr, json!({"Authorization": format!("Bearer {token}")})).await;
    c.ended(4403, "expired").await;
}

#[tokio::test]
async fn extensions_resume_carries_cursors_and_replays_what_was_missed() {
    let rt = spawn("").await;
    let resume = |id: &str, after: Value| {
        json!({"id": id, "type": "start", "payload": {
            "query": "subscription { counter }", "extensions": {"resume": after}}})
    };
    let mut c = Legacy::ready(rt.addr).await;
    c.send(resume("r", json!({}))).await;
    wait_subscriptions(&rt, 1).await;
    publish(rt.webhook, json!({"topic": "counter", "payload": 1})).await;
    let first = c.recv().await;
    assert_eq!(first["payload"]["data"]["counter"], 1);
    let cursor = first["payload"]["extensions"]["cursor"].clone();
    assert!(cursor.is_string(), "{first}");
    drop(c);
    wait_subscriptions(&rt, 0).await;
    publish(rt.webhook, json!({"topic": "counter", "payload": 2})).await;
    let mut c = Legacy::ready(rt.addr).await;
    c.send(resume("r", json!({"after": cursor}))).await;
    let missed = c.recv().await;
    assert_eq!(
        (&missed["type"], &missed["id"]),
        (&json!("data"), &json!("r"))
    );
    assert_eq!(missed["payload"]["data"]["counter"], 2);
    // A cursor that is not one is an `error` for the operation.
    c.send(resume("bad", json!({"after": "nope"}))).await;
    let error = c.recv().await;
    assert_eq!(
        (&error["type"], &error["id"]),
        (&json!("error"), &json!("bad"))
    );
    assert_eq!(error["payload"]["extensions"]["code"], "INVALID_CURSOR");
    // From a time: what was published since (live "r" gets it too).
    let since = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    publish(rt.webhook, json!({"topic": "counter", "payload": 3})).await;
    c.send(resume("t", json!({"since": since}))).await;
    let mut got = [c.recv().await, c.recv().await];
    got.sort_by_key(|m| m["id"].to_string());
    for (m, id) in got.iter().zip(["r", "t"]) {
        assert_eq!(
            (&m["id"], &m["payload"]["data"]["counter"]),
            (&json!(id), &json!(3)),
            "{m}"
        );
    }
    c.send(resume("badtime", json!({"since": "noon"}))).await;
    let error = c.recv().await;
    assert_eq!(error["id"], "badtime", "{error}");
    assert_eq!(error["payload"]["extensions"]["code"], "INVALID_CURSOR");
}

#[tokio::test]
async fn allow_rules_refuse_a_start_with_an_error() {
    let rt = spawn(&format!(
        "{}[[subscriptions]]\nfield = \"counter\"\nallow = \"'ops' in claims.roles\"\n",
        jwt_auth("")
    ))
    .await;
    let token = hs256(json!({"sub": "u1", "roles": ["dev"]}), 600);
    let mut c =
        Legacy::ready_with(rt.addr, json!({"Authorization": format!("Bearer {token}")})).await;
    c.start("1", "subscription { counter }").await;
    let error = c.recv().await;
    assert_eq!(
        (&error["type"], &error["id"]),
        (&json!("error"), &json!("1"))
    );
    assert_eq!(error["payload"]["extensions"]["code"], "FORBIDDEN");
    // Still open: another field is allowed.
    c.start("2", "subscription { item { n } }").await;
    wait_subscriptions(&rt, 1).await;
}

#[tokio::test]
async fn a_start_flood_is_refused_with_rate_limited() {
    let rt = spawn("[rate_limits]\nmessages_per_connection = 1").await;
    let mut c = Legacy::ready(rt.addr).await;
    for n in 0..5 {
        c.start(&n.to_string(), "subscription { counter }").await;
    }
    let mut limited = false;
    for _ in 0..5 {
        let m = c.recv().await;
        if m["type"] == "error" && m["payload"]["extensions"]["code"] == "RATE_LIMITED" {
            limited = true;
            break;
        }
    }
    assert!(limited);
}

#[tokio::test]
async fn shutdown_is_a_connection_error_then_1001() {
    let rt = spawn("").await;
    let mut c = Legacy::ready(rt.addr).await;
    drop(rt);
    c.ended(1001, "shutting down").await;
}
