//! Apollo's multipart HTTP subscriptions against a running subcar: the
//! `Accept` forms clients send, framing byte for byte, heartbeats, errors
//! and the fatal part at shutdown. Apollo Client itself runs in the JS group.

mod support;

use reqwest::Method;
use serde_json::{Value, json};
use support::stream::{StreamReader, error_code, open, send};
use support::{PATIENCE, TestSubcar, TestUpstream, publish, wait_subscriptions};

const INCIDENTS: &str = "subscription { incidentUpdated(severity: \"high\") { id } }";

async fn subcar(extra: &str) -> (TestUpstream, TestSubcar) {
    support::start_with_upstream("", extra).await
}

async fn subscribe(subcar: &TestSubcar, accept: &str, query: &str) -> StreamReader {
    open(
        Method::POST,
        &subcar.graphql_url(),
        &[("accept", accept)],
        Some(&json!({"query": query})),
    )
    .await
}

#[tokio::test]
async fn every_accept_form_apollo_clients_send_opens_a_stream() {
    // Short heartbeats: each closed stream is noticed at the next one.
    let (_upstream, subcar) = subcar("[heartbeat]\ninterval = \"200ms\"").await;
    for (i, accept) in [
        "multipart/mixed;subscriptionSpec=1.0",
        "multipart/mixed;boundary=\"graphql\";subscriptionSpec=1.0,application/json",
        "multipart/mixed; boundary=\"graphql\"; subscriptionSpec=\"1.0\", application/json;q=0.9",
        "application/json;q=0.9, multipart/mixed;subscriptionSpec=\"1.0\"",
    ]
    .into_iter()
    .enumerate()
    {
        let mut s = subscribe(&subcar, accept, INCIDENTS).await;
        assert_eq!(s.response_status, 200, "{accept}");
        assert_eq!(
            s.headers["content-type"], "multipart/mixed;boundary=\"graphql\";subscriptionSpec=1.0",
            "{accept}"
        );
        // A heartbeat part at once.
        assert_eq!(s.part().await, Some(json!({})), "{accept}");
        wait_subscriptions(&subcar, 1).await;
        publish(
            subcar.webhook,
            json!({"topic": "incidentUpdated", "payload": {"id": i.to_string(), "severity": "high"}}),
        )
        .await;
        assert_eq!(
            s.payload_part().await,
            Some(json!({"payload": {"data": {"incidentUpdated": {"id": i.to_string()}}}})),
            "{accept}"
        );
        drop(s);
        wait_subscriptions(&subcar, 0).await;
    }
}

#[tokio::test]
async fn the_bytes_are_what_apollo_clients_split() {
    let (_upstream, subcar) = subcar("").await;
    let res = send(
        Method::POST,
        &subcar.graphql_url(),
        &[("accept", "multipart/mixed;subscriptionSpec=1.0")],
        Some(&json!({"query": "subscription { counter }"})),
    )
    .await;
    let mut res = res;
    let first = tokio::time::timeout(PATIENCE, res.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        &first[..],
        b"\r\n--graphql\r\ncontent-type: application/json\r\n\r\n{}"
    );
    wait_subscriptions(&subcar, 1).await;
    publish(subcar.webhook, json!({"topic": "counter", "payload": 3})).await;
    let part = tokio::time::timeout(PATIENCE, res.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&part),
        "\r\n--graphql\r\ncontent-type: application/json\r\n\r\n{\"payload\":{\"data\":{\"counter\":3}}}"
    );
}

#[tokio::test]
async fn heartbeats_go_at_most_five_seconds_apart_and_at_the_interval() {
    let (_upstream, subcar) = subcar("[heartbeat]\ninterval = \"100ms\"").await;
    let mut s = subscribe(&subcar, "multipart/mixed;subscriptionSpec=1.0", INCIDENTS).await;
    for _ in 0..4 {
        assert_eq!(s.part().await, Some(json!({})));
    }
}

#[tokio::test]
async fn validation_errors_are_a_payload_then_the_end() {
    let (_upstream, subcar) = subcar("").await;
    let mut s = subscribe(
        &subcar,
        "multipart/mixed;subscriptionSpec=1.0",
        "subscription { incidentUpdated { nope } }",
    )
    .await;
    assert_eq!(s.response_status, 200);
    let part = s.payload_part().await.unwrap();
    assert!(
        part["payload"]["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("nope"),
        "{part}"
    );
    assert_eq!(s.part().await, None, "the close delimiter follows");
}

#[tokio::test]
async fn shutdown_is_a_fatal_part_then_the_close_delimiter() {
    let (_upstream, subcar) = subcar("").await;
    let mut s = subscribe(&subcar, "multipart/mixed;subscriptionSpec=1.0", INCIDENTS).await;
    wait_subscriptions(&subcar, 1).await;
    subcar.shutdown_handle().trigger();
    let fatal = s.payload_part().await.unwrap();
    assert_eq!(fatal["payload"], Value::Null, "{fatal}");
    assert_eq!(
        fatal["errors"][0]["extensions"]["code"], "SHUTTING_DOWN",
        "{fatal}"
    );
    assert_eq!(s.part().await, None);
}

#[tokio::test]
async fn queries_with_the_multipart_accept_go_to_the_upstream_unchanged() {
    let (upstream, subcar) = subcar("").await;
    let accept = "multipart/mixed;subscriptionSpec=1.0,application/json";
    let query = json!({"query": "{ hello }"});
    let res = send(
        Method::POST,
        &subcar.graphql_url(),
        &[("accept", accept)],
        Some(&query),
    )
    .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert!(body["data"]["hello"].is_string(), "{body}");
    assert_eq!(upstream.recorded().len(), 1);
}

#[tokio::test]
async fn a_refused_credential_is_an_http_error() {
    let (_upstream, subcar) =
        subcar("[auth]\nmode = \"jwt\"\n[auth.jwt]\nsecret = \"0123456789abcdef0123456789abcdef\"")
            .await;
    let res = send(
        Method::POST,
        &subcar.graphql_url(),
        &[
            ("accept", "multipart/mixed;subscriptionSpec=1.0"),
            ("authorization", "Bearer nope"),
        ],
        Some(&json!({"query": INCIDENTS})),
    )
    .await;
    assert_eq!(error_code(res).await, (401, "UNAUTHENTICATED".into()));
    assert_eq!(subcar.registry.sizes().subscriptions, 0);
}
