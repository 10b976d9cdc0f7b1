//! The webhook (SPEC section 4) over real sockets: formats, every refusal
//! with its status and body, each with proof that nothing was delivered,
//! batch atomicity, deduplication and Standard Webhooks signatures.

mod support;

use http::StatusCode;
use serde_json::{Value, json};
use subcar::ingest::signature::Verifier;
use support::http::{WEBHOOK_SECRET, signed_webhook, unix_now};
use support::{Client, TestSubcar, counter_subscriber, post, post_with_id, publish};

/// Proof that nothing was delivered before: a marker event published now
/// is the very next message.
async fn assert_nothing_delivered(rt: &TestSubcar, c: &mut Client) {
    publish(rt.webhook, json!({"topic": "counter", "payload": -1})).await;
    assert_eq!(c.recv().await["payload"]["data"]["counter"], -1);
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn single_array_and_ndjson_are_accepted_in_order() {
    let (rt, mut c) = counter_subscriber("").await;
    let r = publish(rt.webhook, json!({"topic": "counter", "payload": 1})).await;
    assert_eq!(r, json!({"accepted": 1, "duplicates": 0}));
    let r = publish(
        rt.webhook,
        json!([{"topic": "counter", "payload": 2}, {"topic": "counter", "payload": 3}]),
    )
    .await;
    assert_eq!(r, json!({"accepted": 2, "duplicates": 0}));
    let nd = "{\"topic\":\"counter\",\"payload\":4}\n{\"topic\":\"counter\",\"payload\":5}\n";
    let (status, _, body) = post(rt.webhook, nd, "application/x-ndjson", &[]).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(body, json!({"accepted": 2, "duplicates": 0}));
    for n in 1..=5 {
        assert_eq!(c.recv().await["payload"]["data"]["counter"], n);
    }
}

#[tokio::test]
async fn each_refusal_has_its_status_and_body_and_delivers_nothing() {
    let (rt, mut c) =
        counter_subscriber("[webhook]\nlisten = \"127.0.0.1:0\"\nmax_body_bytes = 512").await;
    let cases: Vec<(&str, String, &str, StatusCode, &str)> = vec![
        (
            "bad json",
            "{".into(),
            "application/json",
            StatusCode::BAD_REQUEST,
            "INVALID_EVENT",
        ),
        (
            "no topic",
            r#"{"payload":1}"#.into(),
            "application/json",
            StatusCode::BAD_REQUEST,
            "INVALID_EVENT",
        ),
        (
            "no payload",
            r#"{"topic":"counter"}"#.into(),
            "application/json",
            StatusCode::BAD_REQUEST,
            "INVALID_EVENT",
        ),
        (
            "media type",
            r#"{"topic":"counter","payload":1}"#.into(),
            "text/plain",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            "too large",
            format!(r#"{{"topic":"counter","payload":"{}"}}"#, "x".repeat(600)),
            "application/json",
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
        ),
        (
            "unknown topic",
            r#"{"topic":"nobody.listens","payload":1}"#.into(),
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
            "UNKNOWN_TOPIC",
        ),
    ];
    for (name, body, ct, status, code) in cases {
        let (s, headers, json) = post(rt.webhook, body, ct, &[]).await;
        assert_eq!(s, status, "{name}: {json}");
        assert_eq!(error_code(&json), code, "{name}: {json}");
        assert!(json["error"]["message"].is_string(), "{name}");
        assert_eq!(headers["content-type"], "application/json");
        assert_nothing_delivered(&rt, &mut c).await;
    }
}

#[tokio::test]
async fn one_bad_event_rejects_the_whole_batch_with_its_index() {
    let (rt, mut c) = counter_subscriber("").await;
    let batch = json!([
        {"topic": "counter", "payload": 1},
        {"topic": "counter", "payload": 2},
        {"topic": "counter"},
    ]);
    let (s, _, body) = post(rt.webhook, batch.to_string(), "application/json", &[]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["index"], 2);
    assert_nothing_delivered(&rt, &mut c).await;

    let batch = json!([{"topic": "counter", "payload": 1}, {"topic": "elsewhere", "payload": 2}]);
    let (s, _, body) = post(rt.webhook, batch.to_string(), "application/json", &[]).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["index"], 1);
    assert_nothing_delivered(&rt, &mut c).await;

    let nd = "{\"topic\":\"counter\",\"payload\":1}\n{\"topic\":\n";
    let (s, _, body) = post(rt.webhook, nd, "application/x-ndjson", &[]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["index"], 1);
    assert_nothing_delivered(&rt, &mut c).await;
}

#[tokio::test]
async fn unknown_topics_can_be_accepted_and_dropped() {
    let (rt, mut c) =
        counter_subscriber("[webhook]\nlisten = \"127.0.0.1:0\"\nunknown_topics = \"accept\"")
            .await;
    let r = publish(
        rt.webhook,
        json!([{"topic": "nowhere", "payload": 0}, {"topic": "counter", "payload": 5}]),
    )
    .await;
    assert_eq!(r["accepted"], 2);
    assert_eq!(c.recv().await["payload"]["data"]["counter"], 5);
}

#[tokio::test]
async fn duplicate_ids_are_accepted_but_delivered_once() {
    let (rt, mut c) = counter_subscriber("").await;
    let e = json!({"topic": "counter", "id": "evt_1", "payload": 1});
    assert_eq!(
        publish(rt.webhook, e.clone()).await,
        json!({"accepted": 1, "duplicates": 0})
    );
    assert_eq!(
        publish(rt.webhook, e.clone()).await,
        json!({"accepted": 1, "duplicates": 1})
    );
    let batch = json!([e, {"topic": "counter", "id": "evt_2", "payload": 2}, {"topic": "counter", "id": "evt_2", "payload": 2}]);
    assert_eq!(
        publish(rt.webhook, batch).await,
        json!({"accepted": 3, "duplicates": 2})
    );
    // The webhook-id header names a single event without an id.
    let single = json!({"topic": "counter", "payload": 3}).to_string();
    for expected in [0, 1] {
        let (s, _, body) = post_with_id(rt.webhook, single.clone(), "hdr_1").await;
        assert_eq!(s, StatusCode::ACCEPTED);
        assert_eq!(body["duplicates"], expected);
    }
    for n in 1..=3 {
        assert_eq!(c.recv().await["payload"]["data"]["counter"], n);
    }
    assert_nothing_delivered(&rt, &mut c).await;
}

#[tokio::test]
async fn standard_webhooks_signatures_are_required_when_a_secret_is_set() {
    let (rt, mut c) = counter_subscriber(&signed_webhook()).await;
    let v = Verifier::new(WEBHOOK_SECRET).unwrap();
    let other = Verifier::new("whsec_c2VjcmV0MTIz").unwrap();
    let body = json!({"topic": "counter", "payload": 1}).to_string();
    let ts = unix_now();
    let good = v.sign("msg_1", ts, body.as_bytes());
    let bad = other.sign("msg_1", ts, body.as_bytes());
    let old = v.sign("msg_1", ts - 301, body.as_bytes());
    let ts_s = ts.to_string();
    let old_ts = (ts - 301).to_string();
    let refusals: Vec<Vec<(&str, &str)>> = vec![
        vec![],
        vec![
            ("webhook-id", "msg_1"),
            ("webhook-timestamp", &ts_s),
            ("webhook-signature", &bad),
        ],
        vec![
            ("webhook-id", "msg_2"),
            ("webhook-timestamp", &ts_s),
            ("webhook-signature", &good),
        ],
        vec![
            ("webhook-id", "msg_1"),
            ("webhook-timestamp", &old_ts),
            ("webhook-signature", &old),
        ],
    ];
    for headers in refusals {
        let (s, _, json) = post(rt.webhook, body.clone(), "application/json", &headers).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{headers:?}");
        assert_eq!(error_code(&json), "INVALID_SIGNATURE");
        assert_nothing_delivered_signed(&rt, &mut c, &v).await;
    }
    // Key rotation: any listed signature may match.
    let both = format!("{bad} {good}");
    let headers = [
        ("webhook-id", "msg_1"),
        ("webhook-timestamp", ts_s.as_str()),
        ("webhook-signature", both.as_str()),
    ];
    let (s, _, _) = post(rt.webhook, body, "application/json", &headers).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(c.recv().await["payload"]["data"]["counter"], 1);
}

async fn assert_nothing_delivered_signed(rt: &TestSubcar, c: &mut Client, v: &Verifier) {
    let body = json!({"topic": "counter", "payload": -1}).to_string();
    let ts = unix_now();
    let id = format!("marker_{}", rand_id());
    let sig = v.sign(&id, ts, body.as_bytes());
    let ts = ts.to_string();
    let headers = [
        ("webhook-id", id.as_str()),
        ("webhook-timestamp", ts.as_str()),
        ("webhook-signature", sig.as_str()),
    ];
    let (s, _, _) = post(rt.webhook, body, "application/json", &headers).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(c.recv().await["payload"]["data"]["counter"], -1);
}

fn rand_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}

/// Found by the `webhook_body` fuzzer: an empty JSON array was accepted
/// (`202`, zero events). It is refused like an empty NDJSON body; subcar
/// stays up and the subscriber still gets the next event.
#[tokio::test]
async fn a_body_without_events_is_refused_in_both_formats() {
    let (rt, mut c) = counter_subscriber("").await;
    for (body, ct) in [("[]", "application/json"), ("\n\n", "application/x-ndjson")] {
        let (s, _, json) = post(rt.webhook, body, ct, &[]).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{ct}");
        assert_eq!(json["error"]["code"], "INVALID_EVENT", "{json}");
        assert_eq!(json["error"]["message"], "body holds no event", "{json}");
    }
    let health = reqwest::get(format!("http://{}/healthz", rt.admin))
        .await
        .unwrap();
    assert!(health.status().is_success());
    assert_nothing_delivered(&rt, &mut c).await;
}
