//! Hostile sockets (issue 14, findings 7, 8c, 9b): JWT time claims that are
//! fractional, out of range or not numbers; sessions that end abnormally;
//! a consumer that stops reading; oversized and invalid frames; queries and
//! mutations flooding one socket. Every test then checks that the process
//! still answers `/healthz` and that a subscriber on another connection
//! still receives an event posted to the webhook.

mod auth_support;
mod support;

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use auth_support::{SECRET, hs256, jwt_auth, now};
use futures_util::SinkExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use support::TestUpstream;
use support::ws::{acked, closed_with};
use support::{Client, Next, PATIENCE, TestSubcar, publish, spawn, spawn_with_upstream};
use tokio::net::TcpSocket;
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// A distinct payload per liveness check.
static TICK: AtomicI64 = AtomicI64::new(1);

/// A subscriber on its own connection, there before the hostile input.
async fn watcher(mut c: Client) -> Client {
    c.subscribe("watch", "subscription { counter }").await;
    // Handled in order: the pong proves the subscription is registered.
    c.send(json!({"type": "ping"})).await;
    assert_eq!(c.recv().await["type"], "pong");
    c
}

/// [`watcher`] on a connection of its own, acknowledged.
async fn ready_watcher(rt: &TestSubcar) -> Client {
    watcher(Client::ready(rt.addr).await).await
}

/// The hostile connection is gone, the watcher's is the only one left, and
/// the process is alive ([`assert_alive`]).
async fn survived(rt: &TestSubcar, watcher: &mut Client) {
    connections_back_to(rt, 1).await;
    assert_alive(rt, watcher).await;
}

/// The process answers `/healthz` and `watcher` receives a new event.
async fn assert_alive(rt: &TestSubcar, watcher: &mut Client) {
    let health = reqwest::get(format!("http://{}/healthz", rt.admin))
        .await
        .expect("admin answers");
    assert_eq!(health.status(), 200);
    let n = TICK.fetch_add(1, Ordering::Relaxed);
    publish(rt.webhook, json!({"topic": "counter", "payload": n})).await;
    loop {
        let m = watcher.recv().await;
        if m["type"] == "next" && m["payload"]["data"]["counter"] == n {
            return;
        }
    }
}

/// Open connections as `/status` and `/metrics` count them.
async fn connections(rt: &TestSubcar) -> (i64, f64) {
    let status: Value = reqwest::get(format!("http://{}/status", rt.admin))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = support::metrics(rt.admin).await;
    let gauge = text
        .lines()
        .find(|l| l.starts_with("subcar_connections{") && l.contains("graphql_transport_ws"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    (
        status["connections"]["graphql-transport-ws"]
            .as_i64()
            .unwrap(),
        gauge,
    )
}

/// Waits until both counts are `n`.
async fn connections_back_to(rt: &TestSubcar, n: i64) {
    let start = Instant::now();
    loop {
        let now = connections(rt).await;
        if now == (n, n as f64) {
            return;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "connections (status, gauge) stayed {now:?}, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An HS256 token with these exact claims (no `exp` added).
fn token(claims: Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn unix_now_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

async fn jwt_watcher(rt: &TestSubcar) -> Client {
    let good = hs256(json!({"sub": "watcher"}), 600);
    let (c, first) = Client::init(rt.addr, &[], json!({"Authorization": good})).await;
    assert!(acked(&first));
    watcher(c).await
}

#[tokio::test]
async fn a_fractional_exp_counts_as_its_floor_and_closes_4403_on_time() {
    let rt = spawn(&jwt_auth("")).await;
    let mut w = jwt_watcher(&rt).await;
    let exp = unix_now_f64() + 1.5;
    let (mut c, first) = Client::init(
        rt.addr,
        &[],
        json!({"Authorization": token(json!({"sub": "u1", "exp": exp}))}),
    )
    .await;
    assert!(acked(&first), "{first:?}");
    let start = Instant::now();
    c.subscribe("1", "subscription { counter }").await;
    closed_with(c.next().await, 4403, "token expired");
    // The floor of exp, never later than exp: a generous bound, not a
    // measure of speed.
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "closed after {:?}",
        start.elapsed()
    );
    assert!(unix_now_f64() >= exp.floor(), "closed before exp's floor");
    survived(&rt, &mut w).await;
}

#[tokio::test]
async fn out_of_range_or_non_numeric_time_claims_are_refused_4403_and_nothing_leaks() {
    let rt = spawn(&jwt_auth("")).await;
    let mut w = jwt_watcher(&rt).await;
    let later = now() + 600;
    let cases = [
        ("exp", json!({"exp": 1u64 << 63})),
        ("exp", json!({"exp": u64::MAX})),
        ("exp", json!({"exp": 1e300})),
        ("exp", json!({"exp": -5})),
        ("exp", json!({"exp": "soon"})),
        ("nbf", json!({"exp": later, "nbf": 1u64 << 63})),
        ("nbf", json!({"exp": later, "nbf": -1.5})),
        ("iat", json!({"exp": later, "iat": 1e300})),
        ("iat", json!({"exp": later, "iat": "yesterday"})),
    ];
    for (claim, claims) in cases {
        let (_c, first) = Client::init(rt.addr, &[], json!({"Authorization": token(claims)})).await;
        closed_with(first, 4403, &format!("invalid claim {claim}"));
    }
    // The latest date accepted arms a timer thousands of years away.
    let (mut far, first) = Client::init(
        rt.addr,
        &[],
        json!({"Authorization": token(json!({"exp": 253_402_300_799u64, "nbf": 1.5, "iat": 0}))}),
    )
    .await;
    assert!(acked(&first), "{first:?}");
    far.subscribe("far", "subscription { counter }").await;
    connections_back_to(&rt, 2).await;
    assert_alive(&rt, &mut w).await;
    let m = far.recv().await;
    assert_eq!(m["id"], "far", "{m}");
    drop(far);
    connections_back_to(&rt, 1).await;
}

#[tokio::test]
async fn sessions_that_end_abnormally_give_back_their_connection_count() {
    let upstream = TestUpstream::start().await;
    let rt = spawn_with_upstream(&upstream.url(), "").await;
    let mut w = ready_watcher(&rt).await;
    for _ in 0..5 {
        // Reset mid-session, with a subscription and a query in flight.
        let mut c = Client::ready(rt.addr).await;
        c.subscribe("s", "subscription { counter }").await;
        c.subscribe("q", "query { slow(ms: 3000) }").await;
        c.send(json!({"type": "ping"})).await;
        assert_eq!(c.recv().await["type"], "pong");
        let MaybeTlsStream::Plain(tcp) = c.ws.get_ref() else {
            unreachable!("plain test sockets")
        };
        tcp.set_zero_linger().unwrap();
        drop(c);
        // Gone right after the upgrade, before any message.
        let c = Client::connect(rt.addr).await;
        drop(c);
    }
    connections_back_to(&rt, 1).await;
    assert_eq!(rt.registry.sizes().subscriptions, 1, "only the watcher's");
    assert_alive(&rt, &mut w).await;
}

/// A graphql-transport-ws client whose socket takes little at a time.
async fn small_window_client(rt: &TestSubcar) -> Client {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(rt.addr).await.unwrap();
    let mut req = format!("ws://{}/graphql", rt.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let (ws, _) = tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(tcp))
        .await
        .unwrap();
    let mut c = Client { ws };
    c.send(json!({"type": "connection_init"})).await;
    assert_eq!(c.recv().await["type"], "connection_ack");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_receives_its_1013_close_when_it_reads_again() {
    let rt = spawn("[limits]\noutbound_queue = 8").await;
    let mut w = ready_watcher(&rt).await;
    let mut slow = small_window_client(&rt).await;
    slow.subscribe("slow", "subscription { incidentUpdated { id title } }")
        .await;
    slow.send(json!({"type": "ping"})).await;
    assert_eq!(slow.recv().await["type"], "pong");
    // The client stops reading; large events fill its socket, then its queue.
    let published = support::flood_until_slow_consumer(&rt).await;
    // Reading again some time later, yet within the close deadline
    // (CLOSE_DEADLINE, 3 s): everything queued before the close, then the
    // close itself with its retryable code.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut frames = 0;
    let (code, reason) = loop {
        match slow.next().await {
            Next::Json(m) => {
                assert_eq!(m["type"], "next", "{m}");
                frames += 1;
            }
            Next::Closed(code, reason) => break (code, reason),
        }
    };
    assert_eq!(code, 1013, "{reason} after {frames} frames");
    assert!(reason.starts_with("slow consumer"), "{reason}");
    assert!(frames < published, "{frames} of {published} delivered");
    survived(&rt, &mut w).await;
}

#[tokio::test]
async fn an_oversized_frame_closes_1009_and_the_close_arrives() {
    let rt = spawn("[limits]\nmax_message_bytes = 65536").await;
    let mut w = ready_watcher(&rt).await;
    let mut c = Client::ready(rt.addr).await;
    // Far more than the limit: the client is still sending when subcar
    // refuses the frame, and must be able to finish and read the close.
    let payload = format!(
        r#"{{"type":"ping","payload":"{}"}}"#,
        "x".repeat(8 * 1024 * 1024)
    );
    c.ws.send(Message::text(payload))
        .await
        .expect("the whole frame could be sent");
    closed_with(c.next().await, 1009, "message too big");
    survived(&rt, &mut w).await;
}

#[tokio::test]
async fn an_invalid_message_closes_4400_even_with_more_input_behind_it() {
    let rt = spawn("").await;
    let mut w = ready_watcher(&rt).await;
    let mut c = Client::ready(rt.addr).await;
    c.send_raw(r#"{"type":"bogus"}"#).await;
    // More input behind the invalid message: unread when subcar closes, it
    // would reset the connection and lose the close frame.
    let ping = json!({"type": "ping", "payload": "y".repeat(60 * 1024)}).to_string();
    for _ in 0..64 {
        c.ws.send(Message::text(ping.clone()))
            .await
            .expect("subcar reads what follows the refused message");
    }
    // Nothing answers after an invalid message: the close comes first.
    let close = c.next().await;
    closed_with(close, 4400, "Invalid message");
    survived(&rt, &mut w).await;
}

#[tokio::test]
async fn the_17th_concurrent_query_on_a_socket_is_rate_limited_while_16_complete() {
    let upstream = TestUpstream::start().await;
    let rt = spawn_with_upstream(&upstream.url(), "").await;
    let mut w = ready_watcher(&rt).await;
    let mut c = Client::ready(rt.addr).await;
    for i in 0..17 {
        c.subscribe(&format!("q{i}"), "query { slow(ms: 1500) }")
            .await;
    }
    let mut completed = Vec::new();
    let mut limited = Vec::new();
    while completed.len() + limited.len() < 17 {
        let m = c.recv().await;
        let id = m["id"].as_str().unwrap().to_owned();
        match m["type"].as_str().unwrap() {
            "next" => assert_eq!(m["payload"]["data"]["slow"], true, "{m}"),
            "complete" => completed.push(id),
            "error" => {
                assert_eq!(m["payload"][0]["extensions"]["code"], "RATE_LIMITED", "{m}");
                limited.push(id);
            }
            other => panic!("unexpected {other}: {m}"),
        }
    }
    assert_eq!(limited, ["q16"]);
    assert_eq!(completed.len(), 16);
    assert!(
        upstream.max_in_flight() <= 16,
        "{}",
        upstream.max_in_flight()
    );
    // The socket stayed open and the slots are free again.
    c.subscribe("again", "query { slow(ms: 1) }").await;
    assert_eq!(c.recv().await["type"], "next");
    assert_eq!(c.recv().await["type"], "complete");
    assert_alive(&rt, &mut w).await;
}

#[tokio::test]
async fn max_inflight_per_connection_is_configurable() {
    let upstream = TestUpstream::start().await;
    let rt =
        spawn_with_upstream(&upstream.url(), "[limits]\nmax_inflight_per_connection = 2").await;
    let mut w = ready_watcher(&rt).await;
    let mut c = Client::ready(rt.addr).await;
    for i in 0..3 {
        c.subscribe(&format!("q{i}"), "query { slow(ms: 1000) }")
            .await;
    }
    let m = c.recv().await;
    assert_eq!(m["id"], "q2", "{m}");
    assert_eq!(m["payload"][0]["extensions"]["code"], "RATE_LIMITED");
    assert!(
        m["payload"][0]["message"]
            .as_str()
            .unwrap()
            .contains("at most 2")
    );
    assert_alive(&rt, &mut w).await;
}

#[tokio::test]
async fn queries_over_a_socket_count_against_messages_per_connection() {
    let upstream = TestUpstream::start().await;
    // A burst of 3 messages, then one per minute.
    let rt = spawn_with_upstream(
        &upstream.url(),
        "[rate_limits]\nmessages_per_connection = 3",
    )
    .await;
    let mut w = ready_watcher(&rt).await;
    let before = upstream.recorded().len();
    let mut c = Client::ready(rt.addr).await;
    for i in 0..5 {
        c.subscribe(&format!("q{i}"), "query { hello }").await;
    }
    let mut limited = 0;
    let mut completed = 0;
    while limited + completed < 5 {
        let m = c.recv().await;
        match m["type"].as_str().unwrap() {
            "next" => {}
            "complete" => completed += 1,
            "error" => {
                assert_eq!(m["payload"][0]["extensions"]["code"], "RATE_LIMITED", "{m}");
                limited += 1;
            }
            other => panic!("unexpected {other}: {m}"),
        }
    }
    assert_eq!((completed, limited), (3, 2));
    assert_eq!(
        upstream.recorded().len() - before,
        3,
        "refused ones never reach the API"
    );
    assert_alive(&rt, &mut w).await;
}
