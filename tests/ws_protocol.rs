//! graphql-transport-ws over real sockets: every rule a server most often
//! gets wrong, and every close code subcar sends for a protocol violation.

mod support;

use futures_util::StreamExt;
use serde_json::json;
use support::{Client, Next, PATIENCE, publish, spawn, wait_subscriptions};
use tokio_tungstenite::tungstenite::{self, Message};

#[tokio::test]
async fn upgrade_requires_the_graphql_transport_ws_subprotocol() {
    let rt = spawn("").await;
    // (`graphql-ws` alone is the legacy protocol: tests/legacy_ws.rs.)
    for protocol in [None, Some("chat")] {
        match Client::connect_with(rt.addr, protocol, &[]).await {
            Err(tungstenite::Error::Http(res)) => assert_eq!(res.status(), 400, "{protocol:?}"),
            Err(e) => panic!("{protocol:?}: {e}"),
            Ok(_) => panic!("{protocol:?}: upgrade accepted"),
        }
    }
    let c = Client::connect_with(rt.addr, Some("foo, graphql-transport-ws"), &[]).await;
    assert!(c.is_ok());
}

#[tokio::test]
async fn nothing_is_sent_before_ack_and_init_times_out_with_4408() {
    let rt = spawn("[heartbeat]\ninterval = \"20ms\"\ninit_timeout = \"300ms\"").await;
    let mut c = Client::connect(rt.addr).await;
    // Not even a ping: the first frame is the close.
    let first = tokio::time::timeout(PATIENCE, c.ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match first {
        Message::Close(Some(f)) => assert_eq!(u16::from(f.code), 4408),
        other => panic!("expected the 4408 close first, got {other:?}"),
    }
}

#[tokio::test]
async fn subscribe_right_behind_init_is_valid() {
    let rt = spawn("").await;
    let mut c = Client::connect(rt.addr).await;
    c.send(json!({"type": "connection_init"})).await;
    c.subscribe("1", "subscription { counter }").await;
    assert_eq!(c.recv().await["type"], "connection_ack");
    wait_subscriptions(&rt, 1).await;
    publish(rt.webhook, json!({"topic": "counter", "payload": 7})).await;
    assert_eq!(
        c.recv().await,
        json!({"id": "1", "type": "next", "payload": {"data": {"counter": 7}}})
    );
}

#[tokio::test]
async fn subscribe_before_init_closes_4401() {
    let rt = spawn("").await;
    let mut c = Client::connect(rt.addr).await;
    c.subscribe("1", "subscription { counter }").await;
    assert_eq!(c.closed().await.0, 4401);
}

#[tokio::test]
async fn second_init_closes_4429() {
    let rt = spawn("").await;
    let mut c = Client::ready(rt.addr).await;
    c.send(json!({"type": "connection_init"})).await;
    assert_eq!(c.closed().await.0, 4429);
}

#[tokio::test]
async fn invalid_messages_close_4400() {
    let rt = spawn("").await;
    for bad in [
        r#"{"type":"bogus"}"#,
        "not json",
        r#"{"type":"subscribe","id":"1"}"#,
        r#"{"type":"next","id":"1","payload":{}}"#,
    ] {
        let mut c = Client::ready(rt.addr).await;
        c.send_raw(bad).await;
        let (code, reason) = c.closed().await;
        assert_eq!(code, 4400, "{bad}");
        assert!(reason.len() <= 123);
    }
}

#[tokio::test]
async fn duplicate_id_closes_4409_with_a_short_reason() {
    let rt = spawn("").await;
    let mut c = Client::ready(rt.addr).await;
    let id = "x".repeat(300);
    c.subscribe(&id, "subscription { counter }").await;
    c.subscribe(&id, "subscription { counter }").await;
    let (code, reason) = c.closed().await;
    assert_eq!(code, 4409);
    assert!(reason.len() <= 123, "{}", reason.len());
    assert!(reason.starts_with("Subscriber for xxx"));
}

#[tokio::test]
async fn duplicate_id_covers_queries_in_flight() {
    let rt = spawn("").await;
    let mut c = Client::ready(rt.addr).await;
    c.subscribe("q", "query { slow }").await;
    c.subscribe("q", "subscription { counter }").await;
    assert_eq!(c.closed().await.0, 4409);
}

#[tokio::test]
async fn client_complete_is_not_echoed_and_stops_deliveries() {
    let rt = spawn("").await;
    let mut c = Client::ready(rt.addr).await;
    c.subscribe("1", "subscription { counter }").await;
    wait_subscriptions(&rt, 1).await;
    c.send(json!({"id": "1", "type": "complete"})).await;
    wait_subscriptions(&rt, 0).await;
    c.subscribe("2", "subscription { counter }").await;
    wait_subscriptions(&rt, 1).await;
    publish(rt.webhook, json!({"topic": "counter", "payload": 1})).await;
    // Only the live subscription gets it, and no `complete` came for "1".
    assert_eq!(c.recv().await["id"], "2");
    c.send(json!({"type": "ping"})).await;
    assert_eq!(c.recv().await, json!({"type": "pong"}));
}

#[tokio::test]
async fn unknown_ids_are_ignored() {
    let rt = spawn("").await;
    let mut c = Client::ready(rt.addr).await;
    c.send(json!({"id": "nope", "type": "complete"})).await;
    c.send(json!({"type": "ping", "payload": {"x": 1}})).await;
    assert_eq!(c.recv().await, json!({"type": "pong", "payload": {"x": 1}}));
}

#[tokio::test]
async fn validation_error_is_an_error_message_without_complete() {
    let rt = spawn("").await;
    let mut c = Client::ready(rt.addr).await;
    c.subscribe("1", "subscription { counter").await;
    let err = c.recv().await;
    assert_eq!(err["type"], "error");
    assert_eq!(err["id"], "1");
    assert!(err["payload"].is_array());
    // The socket stays open and no `complete` follows the error.
    c.send(json!({"type": "ping"})).await;
    assert_eq!(c.recv().await["type"], "pong");
    // The id is free again.
    c.subscribe("1", "subscription { counter }").await;
    wait_subscriptions(&rt, 1).await;
}

#[tokio::test]
async fn field_errors_travel_in_next_and_the_subscription_goes_on() {
    let rt = spawn("").await;
    let mut c = Client::ready(rt.addr).await;
    c.subscribe("1", "subscription { incidentUpdated { id title } }")
        .await;
    wait_subscriptions(&rt, 1).await;
    // `id` is non-null and missing: null propagates to the nullable field.
    publish(
        rt.webhook,
        json!({"topic": "incidentUpdated", "payload": {"title": "no id"}}),
    )
    .await;
    let next = c.recv().await;
    assert_eq!(next["type"], "next");
    assert_eq!(next["payload"]["data"], json!({"incidentUpdated": null}));
    assert_eq!(
        next["payload"]["errors"][0]["path"],
        json!(["incidentUpdated", "id"])
    );
    publish(
        rt.webhook,
        json!({"topic": "incidentUpdated", "payload": {"id": "7", "title": "ok"}}),
    )
    .await;
    assert_eq!(
        c.recv().await,
        json!({"id": "1", "type": "next", "payload": {"data": {"incidentUpdated": {"id": "7", "title": "ok"}}}})
    );
}

#[tokio::test]
async fn client_pong_with_payload_is_accepted_silently() {
    let rt = spawn("").await;
    let mut c = Client::ready(rt.addr).await;
    c.send(json!({"type": "pong", "payload": {"t": 1}})).await;
    c.send(json!({"type": "ping", "payload": {"t": 2}})).await;
    // The pong got no answer and did not close the socket.
    assert_eq!(c.recv().await, json!({"type": "pong", "payload": {"t": 2}}));
}

#[tokio::test]
async fn oversized_frames_close_1009() {
    let rt = spawn("[limits]\nmax_message_bytes = 1024").await;
    let mut c = Client::ready(rt.addr).await;
    c.send_raw(&format!(
        r#"{{"type":"ping","payload":"{}"}}"#,
        "x".repeat(4096)
    ))
    .await;
    assert_eq!(c.closed().await.0, 1009);
}

#[tokio::test]
async fn queries_and_mutations_run_at_the_upstream_with_credentials() {
    let rt = spawn("").await;
    let mut c = Client::connect(rt.addr).await;
    c.send(json!({"type": "connection_init", "payload": {"Authorization": "Bearer t0k"}}))
        .await;
    assert_eq!(c.recv().await["type"], "connection_ack");
    c.subscribe(
        "q",
        r#"query { hello auth: header(name: "authorization") }"#,
    )
    .await;
    assert_eq!(
        c.recv().await,
        json!({"id": "q", "type": "next", "payload": {"data": {"hello": "Hello, world!", "auth": "Bearer t0k"}}})
    );
    assert_eq!(c.recv().await, json!({"id": "q", "type": "complete"}));
    // A field error is data plus errors: `next` then `complete`.
    c.subscribe("f", "query { fail }").await;
    let next = c.recv().await;
    assert_eq!((&next["type"], &next["id"]), (&json!("next"), &json!("f")));
    assert_eq!(
        next["payload"]["errors"][0]["message"],
        "this field always fails"
    );
    assert_eq!(c.recv().await, json!({"id": "f", "type": "complete"}));
    // A request error (the upstream answers only `errors`) fails the
    // operation; the upgrade's headers reach the upstream with it.
    let mut c = Client::connect_with(
        rt.addr,
        Some("graphql-transport-ws"),
        &[("x-test-behavior", "status:400")],
    )
    .await
    .unwrap();
    c.send(json!({"type": "connection_init"})).await;
    assert_eq!(c.recv().await["type"], "connection_ack");
    c.subscribe("m", "mutation { increment }").await;
    let err = c.recv().await;
    assert_eq!(err["type"], "error");
    assert_eq!(err["id"], "m");
    assert_eq!(err["payload"][0]["message"], "upstream says 400");
    c.send(json!({"type": "ping"})).await;
    assert_eq!(c.recv().await["type"], "pong", "no complete after an error");
}

#[tokio::test]
async fn upgrade_headers_are_forwarded_with_queries() {
    let rt = spawn("").await;
    let mut c = Client::connect_with(
        rt.addr,
        Some("graphql-transport-ws"),
        &[("authorization", "Bearer up")],
    )
    .await
    .unwrap();
    c.send(json!({"type": "connection_init"})).await;
    assert_eq!(c.recv().await["type"], "connection_ack");
    c.subscribe("q", r#"{ auth: header(name: "authorization") }"#)
        .await;
    assert_eq!(c.recv().await["payload"]["data"]["auth"], "Bearer up");
}

#[tokio::test]
async fn socket_close_frees_subscriptions() {
    let rt = spawn("").await;
    let mut c = Client::ready(rt.addr).await;
    c.subscribe("1", "subscription { counter }").await;
    c.subscribe("2", "subscription { item { n } }").await;
    wait_subscriptions(&rt, 2).await;
    c.close().await;
    wait_subscriptions(&rt, 0).await;
    let s = rt.registry.sizes();
    assert_eq!((s.topics, s.groups), (0, 0));
}

#[tokio::test]
async fn shutdown_closes_sockets_with_1001() {
    let rt = spawn("").await;
    let mut c = Client::ready(rt.addr).await;
    drop(rt);
    match c.next().await {
        Next::Closed(code, _) => assert_eq!(code, 1001),
        Next::Json(v) => panic!("{v}"),
    }
}
