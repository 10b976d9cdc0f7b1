//! Events from mutations (`[[triggers]]`) end to end: mutations sent to
//! subcar over HTTP and over a socket reach the real test upstream's
//! `updateIncident` (tests/support/upstream.rs), and their answers become
//! events for real WebSocket subscribers, completed per subscriber with
//! `[subscriptions.resolve]`, deduplicated across two replicas on Redis;
//! what does not fire (an error on the field, a failing payload) changes
//! nothing of the answer and is counted; `subcar check` names bad entries.

mod auth_support;
mod bus_support;
mod support;

use std::time::Duration;

use bus_support::{Bus, Kind, redis, wait_bus};
use serde_json::{Value, json};
use support::process::{ConfigFile, output, printed};
use support::{
    Builder, Client, PATIENCE, TestSubcar, TestUpstream, manifest_dir, metrics, post_json, publish,
};

/// `incidentUpdated` (examples/schema.graphql) fed by topic `incident.updated`.
const SUBSCRIPTION: &str =
    "[[subscriptions]]\nfield = \"incidentUpdated\"\ntopic = \"incident.updated\"\n";

/// The subscriber's document.
const SUBSCRIBE: &str = "subscription { incidentUpdated { id severity title } }";

/// The mutation the tests send, with an alias.
const MUTATION: &str = "mutation Change($id: ID!, $s: Severity!) { changed: updateIncident(id: $id, severity: $s) { id severity } }";

/// A whole incident from the mutation's answer, and who changed it.
const PAYLOAD: &str = "{'id': result.id, 'severity': result.severity, 'title': 'changed by ' + (has(claims.sub) ? claims.sub : 'nobody')}";

/// A `[[triggers]]` entry on `updateIncident` publishing `payload` on `topic`.
fn trigger(topic: &str, payload: &str) -> String {
    format!(
        "[[triggers]]\nmutation = \"updateIncident\"\ntopic = \"{topic}\"\npayload = {}\n",
        toml::Value::from(payload)
    )
}

/// subcar on examples/schema.graphql in front of `upstream` (introspected),
/// with [`SUBSCRIPTION`] and `extra`.
fn builder(upstream: &TestUpstream, extra: &str) -> Builder {
    TestSubcar::builder(upstream.url())
        .introspect()
        .extra(&format!("{SUBSCRIPTION}{extra}"))
}

fn change(id: &str, severity: &str) -> Value {
    json!({"query": MUTATION, "variables": {"id": id, "s": severity}})
}

/// The `incidentUpdated` value of the subscriber's next message.
async fn next_incident(c: &mut Client) -> Value {
    let m = c.recv().await;
    assert_eq!(m["type"], "next", "{m}");
    m["payload"]["data"]["incidentUpdated"].clone()
}

/// Publishes a marker event to the webhook and expects it to be the
/// subscriber's next message: nothing else was published before it.
async fn nothing_else_before_a_marker(subcar: &TestSubcar, c: &mut Client) {
    let marker = json!({"id": "marker", "severity": "P3", "title": null});
    publish(
        subcar.webhook,
        json!({"topic": "incident.updated", "payload": marker}),
    )
    .await;
    assert_eq!(next_incident(c).await, marker);
}

/// The value of the series `name{labels}` in `/metrics` text.
fn series(metrics: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{name}{{{labels}}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// Asserts that `/metrics` text has `name{labels}` at `value`.
fn expect_series(text: &str, name: &str, labels: &str, value: f64) {
    assert_eq!(
        series(text, name, labels),
        Some(value),
        "{name}{{{labels}}} in\n{text}"
    );
}

const LABEL: &str = "trigger=\"updateIncident:incident.updated\"";

#[tokio::test]
async fn a_mutation_over_http_is_published_to_socket_subscribers() {
    let upstream = TestUpstream::start().await;
    let subcar = builder(&upstream, &trigger("incident.updated", PAYLOAD))
        .spawn()
        .await;
    let mut c = subcar.subscriber("s", SUBSCRIBE).await;

    let (status, answer) = post_json(&subcar.graphql_url(), change("42", "P1")).await;
    assert_eq!(status, 200);
    assert_eq!(
        answer,
        json!({"data": {"changed": {"id": "42", "severity": "P1"}}})
    );
    assert_eq!(
        next_incident(&mut c).await,
        json!({"id": "42", "severity": "P1", "title": "changed by nobody"})
    );

    // A batch: each operation on its own; the one answered with an error
    // and the query publish nothing.
    let batch = json!([
        change("1", "P2"),
        {"query": "{ hello }"},
        change("missing", "P1"),
        change("2", "P3"),
    ]);
    let (status, answer) = post_json(&subcar.graphql_url(), batch).await;
    assert_eq!(status, 200);
    assert_eq!(answer.as_array().map(Vec::len), Some(4), "{answer}");
    assert!(answer[2]["data"]["changed"].is_null(), "{answer}");
    for (id, severity) in [("1", "P2"), ("2", "P3")] {
        let incident = next_incident(&mut c).await;
        assert_eq!(
            (incident["id"].as_str(), incident["severity"].as_str()),
            (Some(id), Some(severity))
        );
    }
    nothing_else_before_a_marker(&subcar, &mut c).await;
    let text = metrics(subcar.admin).await;
    expect_series(&text, "subcar_trigger_events_total", LABEL, 3.0);
}

#[tokio::test]
async fn a_mutation_over_a_socket_is_published_with_the_callers_claims() {
    let upstream = TestUpstream::start().await;
    let subcar = builder(
        &upstream,
        &format!(
            "{}{}",
            trigger("incident.updated", PAYLOAD),
            auth_support::hs256_auth("")
        ),
    )
    .spawn()
    .await;
    let token = |sub: &str| format!("Bearer {}", auth_support::hs256(json!({"sub": sub}), 600));
    let (mut watcher, ack) =
        Client::init(subcar.addr, &[], json!({"Authorization": token("w")})).await;
    assert!(support::ws::acked(&ack), "{ack:?}");
    watcher.subscribe("s", SUBSCRIBE).await;
    support::wait_subscriptions(&subcar, 1).await;

    let (mut sender, ack) =
        Client::init(subcar.addr, &[], json!({"Authorization": token("u7")})).await;
    assert!(support::ws::acked(&ack), "{ack:?}");
    sender
        .send(json!({"id": "m", "type": "subscribe", "payload": change("7", "P2")}))
        .await;
    let next = sender.recv().await;
    assert_eq!(
        (next["type"].as_str(), &next["payload"]),
        (
            Some("next"),
            &json!({"data": {"changed": {"id": "7", "severity": "P2"}}})
        ),
        "{next}"
    );
    assert_eq!(sender.recv().await["type"], "complete");
    assert_eq!(
        next_incident(&mut watcher).await,
        json!({"id": "7", "severity": "P2", "title": "changed by u7"})
    );

    // Over HTTP nothing authenticates the request (auth.proxy =
    // "passthrough"): the trigger finds the caller's claims itself.
    let res = reqwest::Client::new()
        .post(subcar.graphql_url())
        .header("authorization", token("u8"))
        .json(&change("8", "P3"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        next_incident(&mut watcher).await,
        json!({"id": "8", "severity": "P3", "title": "changed by u8"})
    );
}

#[tokio::test]
async fn a_mutation_sent_as_an_sse_request_is_published_too() {
    let upstream = TestUpstream::start().await;
    let subcar = builder(&upstream, &trigger("incident.updated", PAYLOAD))
        .spawn()
        .await;
    let mut c = subcar.subscriber("s", SUBSCRIBE).await;
    let mut stream = support::stream::open(
        reqwest::Method::POST,
        &subcar.graphql_url(),
        &[("accept", "text/event-stream")],
        Some(&change("3", "P3")),
    )
    .await;
    let next = stream.event().await.expect("the answer as an SSE event");
    assert_eq!(next.name(), "next");
    assert_eq!(
        next.json(),
        json!({"data": {"changed": {"id": "3", "severity": "P3"}}})
    );
    assert_eq!(
        next_incident(&mut c).await,
        json!({"id": "3", "severity": "P3", "title": "changed by nobody"})
    );
}

#[tokio::test]
async fn a_key_only_payload_is_completed_per_subscriber_by_enrichment() {
    let upstream = TestUpstream::start().await;
    let subcar = TestSubcar::builder(upstream.url())
        .introspect()
        .schema_path(manifest_dir().join("tests/fixtures/enrich/schema.graphql"))
        .extra(&format!(
            "[[subscriptions]]\nfield = \"ticketUpdated\"\ntopic = \"ticket.updated\"\n[subscriptions.resolve]\nquery_field = \"ticket\"\nargs = {{ id = \"event.id\" }}\n{}",
            trigger("ticket.updated", "{'id': args.id}")
        ))
        .spawn()
        .await;
    let mut clients = Vec::new();
    for tenant in ["ops", "dev"] {
        let auth = json!({"Authorization": format!("Bearer user:u-{tenant}:{tenant}")});
        let (mut c, ack) = Client::init(subcar.addr, &[], auth).await;
        assert!(support::ws::acked(&ack), "{ack:?}");
        c.subscribe("s", "subscription { ticketUpdated { id title notes } }")
            .await;
        clients.push(c);
    }
    support::wait_subscriptions(&subcar, 2).await;

    let (status, _) = post_json(&subcar.graphql_url(), change("public-7", "P1")).await;
    assert_eq!(status, 200);
    // Notes are for tenant ops only: each subscriber's own rights.
    for (c, notes) in clients
        .iter_mut()
        .zip([json!("notes of public-7"), Value::Null])
    {
        let m = c.recv().await;
        assert_eq!(
            m["payload"]["data"]["ticketUpdated"],
            json!({"id": "public-7", "title": "Ticket public-7", "notes": notes}),
            "{m}"
        );
    }
}

#[tokio::test]
async fn a_failing_payload_changes_nothing_of_the_answer_and_is_counted() {
    let upstream = TestUpstream::start().await;
    let failing = trigger(
        "incident.updated",
        "{'id': result.id, 'n': result.severity + 1}",
    );
    // A second trigger on the same mutation still fires.
    let working = trigger("incident.updated", PAYLOAD);
    let subcar = builder(&upstream, &format!("{failing}{working}"))
        .spawn()
        .await;
    let mut c = subcar.subscriber("s", SUBSCRIBE).await;

    let direct = reqwest::Client::new()
        .post(upstream.url())
        .json(&change("5", "P1"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let res = reqwest::Client::new()
        .post(subcar.graphql_url())
        .json(&change("5", "P1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.bytes().await.unwrap(),
        direct,
        "the upstream's bytes, as they are"
    );
    assert_eq!(next_incident(&mut c).await["id"], "5");
    // Both payloads are evaluated before the request's one publish.
    let text = metrics(subcar.admin).await;
    let failures = "subcar_trigger_failures_total";
    expect_series(&text, failures, &format!("{LABEL},reason=\"cel\""), 1.0);
    expect_series(&text, failures, &format!("{LABEL},reason=\"publish\""), 0.0);
    expect_series(&text, "subcar_trigger_events_total", LABEL, 1.0);
}

#[tokio::test]
async fn a_field_answered_with_an_error_publishes_nothing() {
    let upstream = TestUpstream::start().await;
    let subcar = builder(&upstream, &trigger("incident.updated", PAYLOAD))
        .spawn()
        .await;
    let mut c = subcar.subscriber("s", SUBSCRIBE).await;
    // `missing` is null with an error; `flaky` has a value but an error
    // inside it (its notes); `fine` succeeds.
    let query = "mutation { missing: updateIncident(id: \"missing\", severity: P1) { id } flaky: updateIncident(id: \"flaky\", severity: P1) { id notes } fine: updateIncident(id: \"fine\", severity: P2) { id severity } }";
    let (status, answer) = post_json(&subcar.graphql_url(), json!({"query": query})).await;
    assert_eq!(status, 200);
    assert!(answer["data"]["missing"].is_null(), "{answer}");
    assert_eq!(answer["data"]["flaky"]["id"], "flaky", "{answer}");
    assert_eq!(
        answer["errors"].as_array().map(Vec::len),
        Some(2),
        "{answer}"
    );
    assert_eq!(next_incident(&mut c).await["id"], "fine");
    nothing_else_before_a_marker(&subcar, &mut c).await;
}

/// A replica on `bus`, ready.
async fn replica(upstream: &TestUpstream, bus: &Bus) -> TestSubcar {
    let subcar = builder(
        upstream,
        &format!("{}{}", trigger("incident.updated", PAYLOAD), bus.toml()),
    )
    .spawn()
    .await;
    wait_bus(&subcar, true).await;
    subcar
}

/// Waits until `/metrics` of `subcar` shows `name{labels}` at `value`.
async fn wait_series(subcar: &TestSubcar, name: &str, labels: &str, value: f64) {
    tokio::time::timeout(PATIENCE, async {
        while series(&metrics(subcar.admin).await, name, labels) != Some(value) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{name}{{{labels}}} never reached {value}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutation_retried_on_another_replica_is_delivered_once() {
    let upstream = TestUpstream::start().await;
    let bus = Bus::new(Kind::Redis, redis());
    let (a, b) = (
        replica(&upstream, &bus).await,
        replica(&upstream, &bus).await,
    );
    let mut on_a = a.subscriber("s", SUBSCRIBE).await;
    let mut on_b = b.subscriber("s", SUBSCRIBE).await;

    // The client retries on the other replica (its first answer was lost).
    for (r, counted) in [
        (&a, "subcar_trigger_events_total"),
        (&b, "subcar_trigger_duplicates_total"),
    ] {
        let (status, answer) = post_json(&r.graphql_url(), change("99", "P1")).await;
        assert_eq!(status, 200);
        assert_eq!(answer["data"]["changed"]["id"], "99");
        wait_series(r, counted, LABEL, 1.0).await;
    }
    let text = metrics(b.admin).await;
    expect_series(&text, "subcar_trigger_events_total", LABEL, 0.0);
    // Another change of the same incident is another event.
    let (status, _) = post_json(&b.graphql_url(), change("99", "P2")).await;
    assert_eq!(status, 200);
    for c in [&mut on_a, &mut on_b] {
        assert_eq!(next_incident(c).await["severity"], "P1");
        assert_eq!(next_incident(c).await["severity"], "P2");
    }
    nothing_else_before_a_marker(&a, &mut on_a).await;
}

#[tokio::test]
async fn check_names_an_unknown_mutation_and_a_payload_variable() {
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let sdl = dir.path().join("upstream.graphql");
    std::fs::write(&sdl, support::upstream::sdl()).unwrap();
    let config = TestSubcar::builder(upstream.url())
        .schema(&format!("upstream_sdl = {}", toml::Value::from(sdl.display().to_string())))
        .extra(&format!(
            "{SUBSCRIPTION}[[triggers]]\nmutation = \"updateIncidnt\"\ntopic = \"incident.updated\"\npayload = \"args\"\n{}{}",
            trigger("incident.updated", "{'id': event.id}"),
            trigger("incident.changed", "args"),
        ));
    let file = ConfigFile::write(dir.path(), "subcar", config);
    let out = output(file.check()).await;
    let printed = printed(&out);
    assert_eq!(out.status.code(), Some(1), "{printed}");
    for line in [
        "triggers[0].mutation: \"updateIncidnt\" is not a field of the MutationRoot type (fields: updateIncident, increment)",
        "triggers[1].payload: \"event\" is not a variable of this rule: expected args, result, claims",
        "triggers[2].topic: \"incident.changed\" feeds no subscription field (topics: incident.updated)",
    ] {
        assert!(printed.contains(line), "{line} in\n{printed}");
    }
    assert!(!printed.contains("configuration: ok"), "{printed}");
}
