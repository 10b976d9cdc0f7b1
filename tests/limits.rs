//! Rate limits, capacity and heartbeats seen from outside, over real
//! sockets: every refusal path with its status or close code.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::ws::refused_upgrade;
use support::{Client, Next, post, publish, spawn, wait_subscriptions};
use support::{TestSubcar, TestUpstream};
use tokio_tungstenite::tungstenite::{self, Message};

/// The `Retry-After` seconds of a refusal.
fn retry_after(headers: &http::HeaderMap) -> u64 {
    headers["retry-after"].to_str().unwrap().parse().unwrap()
}

async fn connect(rt: &support::TestSubcar) -> Result<Client, tungstenite::Error> {
    Client::connect_with(rt.addr, Some("graphql-transport-ws"), &[]).await
}

#[tokio::test]
async fn connection_attempts_per_ip_over_the_limit_are_429_with_retry_after() {
    let rt = spawn("[rate_limits]\nconnection_attempts_per_ip = 3").await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(connect(&rt).await.expect("within the limit"));
    }
    let (status, headers, body) = refused_upgrade(connect(&rt).await);
    assert_eq!(status, 429);
    assert!(retry_after(&headers) >= 1);
    assert_eq!(body["errors"][0]["extensions"]["code"], "RATE_LIMITED");
    // Open sockets are not affected.
    let mut c = open.pop().unwrap();
    c.send(json!({"type": "connection_init"})).await;
    assert_eq!(c.recv().await["type"], "connection_ack");
    let metrics = support::metrics(rt.admin).await;
    assert!(
        metrics.contains("subcar_refusals_total{reason=\"rate_limit_connection\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn proxy_requests_per_ip_are_limited_by_the_client_address() {
    let upstream = TestUpstream::start().await;
    let subcar = TestSubcar::builder(upstream.url())
        .server("trusted_proxies = [\"127.0.0.1\"]")
        .extra("[rate_limits]\nrequests_per_ip = 2")
        .spawn()
        .await;
    let client = reqwest::Client::new();
    let send = |xff: &'static str| {
        client
            .post(subcar.graphql_url())
            .header("x-forwarded-for", xff)
            .json(&json!({"query": "{ hello }"}))
            .send()
    };
    assert_eq!(send("203.0.113.1").await.unwrap().status(), 200);
    assert_eq!(send("203.0.113.1").await.unwrap().status(), 200);
    let res = send("203.0.113.1").await.unwrap();
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "RATE_LIMITED");
    // Another client behind the same trusted proxy has its own bucket.
    assert_eq!(send("203.0.113.2").await.unwrap().status(), 200);
    assert_eq!(upstream.recorded().len(), 3);
}

#[tokio::test]
async fn a_flood_of_messages_gets_rate_limited_errors_then_4429() {
    // One message per second: the flood below takes far less than that.
    let rt = spawn("[rate_limits]\nmessages_per_connection = 1").await;
    let mut c = Client::ready(rt.addr).await;
    for i in 0..40 {
        let subscribe = json!({"id": format!("s{i}"), "type": "subscribe", "payload": {"query": "subscription { counter }"}});
        // The server may close mid-flood: later sends may fail.
        let _ = c.ws.send(Message::text(subscribe.to_string())).await;
    }
    let mut limited = 0;
    let close = loop {
        match c.next().await {
            Next::Json(m) => {
                assert_eq!(m["type"], "error", "{m}");
                assert_eq!(m["payload"][0]["extensions"]["code"], "RATE_LIMITED", "{m}");
                limited += 1;
            }
            Next::Closed(code, reason) => break (code, reason),
        }
    };
    assert_eq!(close.0, 4429, "{}", close.1);
    assert_eq!(close.1, "Too many messages");
    // Told first: the errors came before the close.
    assert!(
        limited >= 9,
        "{limited} RATE_LIMITED errors before the close"
    );
    wait_subscriptions(&rt, 0).await;
}

#[tokio::test]
async fn subscriptions_per_connection_over_the_limit_are_rate_limited_errors() {
    let rt = spawn("[limits]\nmax_subscriptions_per_connection = 2").await;
    let mut c = Client::ready(rt.addr).await;
    c.subscribe("1", "subscription { counter }").await;
    c.subscribe("2", "subscription { counter }").await;
    c.subscribe("3", "subscription { counter }").await;
    let m = c.recv().await;
    assert_eq!(m["id"], "3");
    assert_eq!(m["payload"][0]["extensions"]["code"], "RATE_LIMITED");
    wait_subscriptions(&rt, 2).await;
    // Completing one makes room again.
    c.send(json!({"id": "1", "type": "complete"})).await;
    wait_subscriptions(&rt, 1).await;
    c.subscribe("4", "subscription { counter }").await;
    wait_subscriptions(&rt, 2).await;
    publish(rt.webhook, json!({"topic": "counter", "payload": 1})).await;
    let mut ids: Vec<String> = Vec::new();
    for _ in 0..2 {
        ids.push(c.recv().await["id"].as_str().unwrap().to_owned());
    }
    ids.sort();
    assert_eq!(ids, ["2", "4"]);
}

#[tokio::test]
async fn webhook_events_per_second_over_the_limit_are_429_and_deliver_nothing() {
    let rt = spawn("[rate_limits]\nwebhook_events_per_second = 5").await;
    let mut c = rt.subscriber("1", "subscription { counter }").await;
    let batch = |n: usize| {
        Value::Array(
            (0..n)
                .map(|i| json!({"topic": "counter", "payload": i}))
                .collect(),
        )
        .to_string()
    };
    let (status, _, _) = post(rt.webhook, batch(5), "application/json", &[]).await;
    assert_eq!(status, 202);
    let (status, headers, body) = post(rt.webhook, batch(1), "application/json", &[]).await;
    assert_eq!(status, 429);
    assert!(retry_after(&headers) >= 1);
    assert_eq!(body["error"]["code"], "RATE_LIMITED");
    // A request larger than the burst can never pass: it says so.
    let (status, _, body) = post(rt.webhook, batch(6), "application/json", &[]).await;
    assert_eq!(status, 429);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("split it"),
        "{body}"
    );
    for i in 0..5 {
        assert_eq!(c.recv().await["payload"]["data"]["counter"], i);
    }
    // Nothing of the refused requests arrives.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), c.recv())
            .await
            .is_err(),
        "a refused event was delivered"
    );
}

#[tokio::test]
async fn upgrades_beyond_max_connections_are_503_graphql_shaped() {
    let rt = spawn("[limits]\nmax_connections = 2").await;
    let _a = Client::ready(rt.addr).await;
    let _b = Client::ready(rt.addr).await;
    let (status, headers, body) = refused_upgrade(connect(&rt).await);
    assert_eq!(status, 503);
    assert!(headers.contains_key("retry-after"));
    assert_eq!(body["errors"][0]["message"], "too many connections");
}

/// The close code itself (1001) is asserted in `ws_session.rs`: here the
/// silent client's own pong replies, written once it reads again, may meet
/// the closed socket before it reads the close frame.
#[tokio::test]
async fn a_silent_client_is_closed_for_heartbeat_timeout_and_a_live_one_is_kept() {
    let rt = spawn("[heartbeat]\ninterval = \"100ms\"\ntimeout = \"300ms\"").await;
    let mut silent = Client::ready(rt.addr).await;
    let mut live = Client::ready(rt.addr).await;
    // The live client reads (tungstenite answers pings while reading); the
    // silent one does not read, so it never answers.
    for _ in 0..10 {
        let _ = tokio::time::timeout(Duration::from_millis(100), live.ws.next()).await;
    }
    let (code, reason) = silent.closed().await;
    assert!(code == 1001 || code == 1006, "{code} {reason}");
    let metrics = support::metrics(rt.admin).await;
    assert!(
        metrics.contains("subcar_refusals_total{reason=\"heartbeat_timeout\"} 1"),
        "{metrics}"
    );
    live.send(json!({"type": "ping"})).await;
    assert_eq!(live.recv().await["type"], "pong");
}
