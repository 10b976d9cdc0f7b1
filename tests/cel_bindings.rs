//! What `filter` and `allow` rules read for values a client or an event left
//! out: an argument the client did not pass is `null`; a field the event or
//! the claims lack makes the rule fail, which counts as "no".

mod support;

use serde_json::json;
use support::{Client, publish, spawn, wait_subscriptions};

const SEVERITY_FILTER: &str = r#"
[[subscriptions]]
field = "incidentUpdated"
filter = "args.severity == null || event.severity == args.severity"
"#;

#[tokio::test]
async fn an_absent_argument_reads_as_null_in_a_filter() {
    let rt = spawn(SEVERITY_FILTER).await;
    let mut all = Client::ready(rt.addr).await;
    all.subscribe("all", "subscription { incidentUpdated { id } }")
        .await;
    let mut p1 = Client::ready(rt.addr).await;
    p1.subscribe(
        "p1",
        r#"subscription { incidentUpdated(severity: "P1") { id } }"#,
    )
    .await;
    wait_subscriptions(&rt, 2).await;

    publish(
        rt.webhook,
        json!([
            {"topic": "incidentUpdated", "payload": {"id": "a", "severity": "P2"}},
            {"topic": "incidentUpdated", "payload": {"id": "b", "severity": "P1"}},
        ]),
    )
    .await;

    // The subscriber without the argument gets every event …
    assert_eq!(
        all.recv().await["payload"]["data"]["incidentUpdated"]["id"],
        "a"
    );
    assert_eq!(
        all.recv().await["payload"]["data"]["incidentUpdated"]["id"],
        "b"
    );
    // … the one with it only its severity.
    assert_eq!(
        p1.recv().await["payload"]["data"]["incidentUpdated"]["id"],
        "b"
    );
}

#[tokio::test]
async fn an_explicit_null_argument_reads_as_null_too() {
    let rt = spawn(SEVERITY_FILTER).await;
    let mut c = rt
        .subscriber(
            "1",
            "subscription { incidentUpdated(severity: null) { id } }",
        )
        .await;
    publish(
        rt.webhook,
        json!({"topic": "incidentUpdated", "payload": {"id": "x", "severity": "P3"}}),
    )
    .await;
    assert_eq!(
        c.recv().await["payload"]["data"]["incidentUpdated"]["id"],
        "x"
    );
}

#[tokio::test]
async fn an_event_without_the_field_a_filter_reads_does_not_match() {
    let rt = spawn(
        r#"
[[subscriptions]]
field = "incidentUpdated"
filter = "event.team == 'a'"
"#,
    )
    .await;
    let mut c = rt
        .subscriber("1", "subscription { incidentUpdated { id } }")
        .await;
    publish(
        rt.webhook,
        json!([
            {"topic": "incidentUpdated", "payload": {"id": "no-team"}},
            {"topic": "incidentUpdated", "payload": {"id": "team-a", "team": "a"}},
        ]),
    )
    .await;
    // The first event failed the rule (no `team`); the second is the first delivered.
    assert_eq!(
        c.recv().await["payload"]["data"]["incidentUpdated"]["id"],
        "team-a"
    );
}

#[tokio::test]
async fn an_allow_rule_over_an_absent_claim_refuses() {
    let rt = spawn(
        r#"
[[subscriptions]]
field = "incidentUpdated"
allow = "'ops' in claims.roles"
"#,
    )
    .await;
    let mut c = Client::ready(rt.addr).await;
    c.subscribe("1", "subscription { incidentUpdated { id } }")
        .await;
    let msg = c.recv().await;
    assert_eq!(msg["type"], "error", "{msg}");
    assert_eq!(
        msg["payload"][0]["extensions"]["code"], "FORBIDDEN",
        "{msg}"
    );
}
