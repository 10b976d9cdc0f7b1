//! Webhook hardening (issue 14 findings 6, 9a, 9c) on the memory bus, over
//! real sockets: a request's `webhook-id` is deduplicated as a whole (a
//! captured signed batch cannot be replayed), and event ids and the
//! `webhook-id` header have a bounded size. The bus-hang half (a 503 is
//! final) runs against private Redis and NATS servers in
//! `tests/bus_redis.rs` and `tests/bus_nats.rs`.

mod support;

use http::StatusCode;
use serde_json::{Value, json};
use subcar::ingest::signature::Verifier;
use support::http::{WEBHOOK_SECRET, signed_webhook, unix_now};
use support::{Client, TestSubcar, counter_subscriber, post, publish};

/// `subcar::bus::MAX_ID_BYTES`, written out: the documented limit.
const MAX_ID: usize = 256;

/// The process answers `/healthz`, and the subscriber connected before
/// the hostile input gets a marker posted now as its very next message
/// (so nothing else was delivered meanwhile).
async fn alive_and_delivering(rt: &TestSubcar, c: &mut Client, marker: i64) {
    let res = reqwest::get(format!("http://{}/healthz", rt.admin))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    publish(rt.webhook, json!({"topic": "counter", "payload": marker})).await;
    assert_eq!(c.recv().await["payload"]["data"]["counter"], marker);
}

/// Posts `body` signed as `id` now.
async fn post_signed(rt: &TestSubcar, v: &Verifier, id: &str, body: &str) -> (StatusCode, Value) {
    let ts = unix_now();
    let sig = v.sign(id, ts, body.as_bytes());
    let ts = ts.to_string();
    let headers = [
        ("webhook-id", id),
        ("webhook-timestamp", ts.as_str()),
        ("webhook-signature", sig.as_str()),
    ];
    let (s, _, json) = post(rt.webhook, body.to_owned(), "application/json", &headers).await;
    (s, json)
}

#[tokio::test]
async fn a_replayed_signed_batch_without_event_ids_is_all_duplicates_and_delivered_once() {
    let (rt, mut c) = counter_subscriber(&signed_webhook()).await;
    let v = Verifier::new(WEBHOOK_SECRET).unwrap();
    let body = json!([
        {"topic": "counter", "payload": 1},
        {"topic": "counter", "payload": 2},
        {"topic": "counter", "payload": 3},
    ])
    .to_string();
    let (s, json) = post_signed(&rt, &v, "msg_batch", &body).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(json, json!({"accepted": 3, "duplicates": 0}));
    // The captured request, sent again within the signature's window.
    for _ in 0..2 {
        let (s, json) = post_signed(&rt, &v, "msg_batch", &body).await;
        assert_eq!(s, StatusCode::ACCEPTED);
        assert_eq!(json, json!({"accepted": 3, "duplicates": 3}));
    }
    for n in 1..=3 {
        assert_eq!(c.recv().await["payload"]["data"]["counter"], n);
    }
    // The marker comes next: the replays delivered nothing.
    let marker = json!({"topic": "counter", "payload": -1}).to_string();
    let (s, _) = post_signed(&rt, &v, "msg_marker", &marker).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(c.recv().await["payload"]["data"]["counter"], -1);
    let res = reqwest::get(format!("http://{}/healthz", rt.admin))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn a_webhook_id_seen_before_makes_any_request_all_duplicates() {
    let (rt, mut c) = counter_subscriber("").await;
    let h = [("webhook-id", "req-7")];
    let (s, _, json) = post(
        rt.webhook,
        json!({"topic": "counter", "payload": 1}).to_string(),
        "application/json",
        &h,
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(json, json!({"accepted": 1, "duplicates": 0}));
    // Another body, with ids of its own and more events: still the same request.
    let other = json!([
        {"topic": "counter", "id": "x1", "payload": 10},
        {"topic": "counter", "id": "x2", "payload": 11},
    ]);
    let (s, _, json) = post(rt.webhook, other.to_string(), "application/json", &h).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(json, json!({"accepted": 2, "duplicates": 2}));
    let nd = "{\"topic\":\"counter\",\"payload\":12}\n";
    let (s, _, json) = post(rt.webhook, nd, "application/x-ndjson", &h).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(json, json!({"accepted": 1, "duplicates": 1}));
    assert_eq!(c.recv().await["payload"]["data"]["counter"], 1);
    alive_and_delivering(&rt, &mut c, -1).await;
    // The ids of the refused-as-duplicate body were not marked: they are new.
    let (s, _, json) = post(rt.webhook, other.to_string(), "application/json", &[]).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(json, json!({"accepted": 2, "duplicates": 0}));
    assert_eq!(c.recv().await["payload"]["data"]["counter"], 10);
    assert_eq!(c.recv().await["payload"]["data"]["counter"], 11);
}

#[tokio::test]
async fn a_request_refused_whole_does_not_mark_its_webhook_id() {
    let (rt, mut c) = counter_subscriber("").await;
    let h = [("webhook-id", "req-9")];
    let bad = json!([{"topic": "counter", "payload": 1}, {"payload": 2}]);
    let (s, _, json) = post(rt.webhook, bad.to_string(), "application/json", &h).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(json["error"]["index"], 1);
    let good = json!([{"topic": "counter", "payload": 1}, {"topic": "counter", "payload": 2}]);
    let (s, _, json) = post(rt.webhook, good.to_string(), "application/json", &h).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(json, json!({"accepted": 2, "duplicates": 0}));
    assert_eq!(c.recv().await["payload"]["data"]["counter"], 1);
    assert_eq!(c.recv().await["payload"]["data"]["counter"], 2);
    alive_and_delivering(&rt, &mut c, -1).await;
}

#[tokio::test]
async fn oversize_ids_are_400_invalid_event_with_their_index() {
    let (rt, mut c) = counter_subscriber("").await;
    let at_limit = "a".repeat(MAX_ID);
    let over = "b".repeat(MAX_ID + 1);
    let batch = json!([
        {"topic": "counter", "id": at_limit, "payload": 1},
        {"topic": "counter", "id": over, "payload": 2},
    ]);
    let (s, _, json) = post(rt.webhook, batch.to_string(), "application/json", &[]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{json}");
    assert_eq!(json["error"]["code"], "INVALID_EVENT");
    assert_eq!(json["error"]["index"], 1);
    assert!(
        json["error"]["message"].as_str().unwrap().contains("256"),
        "{json}"
    );
    let single = json!({"topic": "counter", "payload": 3}).to_string();
    let (s, _, json) = post(
        rt.webhook,
        single.clone(),
        "application/json",
        &[("webhook-id", over.as_str())],
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{json}");
    assert_eq!(json["error"]["code"], "INVALID_EVENT");
    assert!(json["error"].get("index").is_none(), "{json}");
    alive_and_delivering(&rt, &mut c, -1).await;
    // Exactly at the limit is accepted, as id and as header.
    let ok = json!({"topic": "counter", "id": at_limit, "payload": 4});
    assert_eq!(
        publish(rt.webhook, ok).await,
        json!({"accepted": 1, "duplicates": 0})
    );
    let header_at_limit = "c".repeat(MAX_ID);
    let (s, _, json) = post(
        rt.webhook,
        single,
        "application/json",
        &[("webhook-id", header_at_limit.as_str())],
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(json, json!({"accepted": 1, "duplicates": 0}));
    assert_eq!(c.recv().await["payload"]["data"]["counter"], 4);
    assert_eq!(c.recv().await["payload"]["data"]["counter"], 3);
}

/// Finding 9c: 150 events with 1 MB ids were all kept in the dedup window.
/// Now each is refused before anything is stored, so none can be retained.
#[tokio::test]
async fn many_large_ids_are_refused_so_none_is_retained() {
    let (rt, mut c) = counter_subscriber("").await;
    for i in 0..150 {
        let id = format!("{i}-{}", "x".repeat(1_000_000));
        let body = json!({"topic": "counter", "id": id, "payload": i}).to_string();
        let (s, _, json) = post(rt.webhook, body, "application/json", &[]).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{json}");
        assert_eq!(json["error"]["code"], "INVALID_EVENT");
    }
    alive_and_delivering(&rt, &mut c, -1).await;
}
