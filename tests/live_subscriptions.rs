//! Live subscriptions across a reload (SIGHUP to a `subcar` process) and a
//! schema refresh, through real sockets and streams and the real test
//! upstream: those the new schema or `allow` no longer admit end with a
//! coded error in their transport's terms, the others go on without a gap,
//! a changed `filter` or `topic` applies to them at once.

mod support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use support::process::{ConfigFile, Process, Until};
use support::stream::{Sse, StreamReader, open};
use support::{Builder, Client, PATIENCE, TestSubcar, TestUpstream, manifest_dir, publish};

const WITH_PRIORITY: &str = "subscription { ticketUpdated { id priority } }";
const IDS: &str = "subscription { ticketUpdated { id } }";

/// subcar on the enrichment SDL (`ticketUpdated: Ticket`, the upstream's
/// type, learned by introspection), refreshing its schema only on SIGHUP.
fn on_ticket_schema(upstream: &TestUpstream) -> Builder {
    TestSubcar::builder(upstream.url())
        .introspect()
        .schema_path(manifest_dir().join("tests/fixtures/enrich/schema.graphql"))
        .schema("refresh_interval = \"0s\"")
}

async fn started(dir: &tempfile::TempDir, config: Builder) -> (ConfigFile, Process) {
    let file = ConfigFile::write(dir.path(), "subcar", config);
    let process = file.start(Stdio::piped(), Until::Listening).await;
    (file, process)
}

/// Waits until the process's `/status` counts `n` subscriptions.
async fn wait_subscriptions(admin: SocketAddr, n: u64) {
    let url = format!("http://{admin}/status");
    tokio::time::timeout(PATIENCE, async {
        loop {
            let status: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
            if status["subscriptions"]["total"] == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{url} never counted {n} subscriptions"));
}

async fn subscribed(addr: SocketAddr, id: &str, query: &str) -> Client {
    let mut c = Client::ready(addr).await;
    c.subscribe(id, query).await;
    c
}

/// A subscription of `query` on an HTTP stream that `accept` asks for.
async fn stream(addr: SocketAddr, accept: &str, query: &str) -> StreamReader {
    let url = format!("http://{addr}/graphql");
    let s = open(
        Method::POST,
        &url,
        &[("accept", accept)],
        Some(&json!({ "query": query })),
    )
    .await;
    assert_eq!(s.response_status, 200);
    s
}

/// A distinct-connections SSE stream of `query`, its first comment read.
async fn sse(addr: SocketAddr, query: &str) -> StreamReader {
    let mut s = stream(addr, "text/event-stream", query).await;
    assert_eq!(s.sse().await, Some(Sse::Comment));
    s
}

/// A legacy `graphql-ws` client with operation `id` started.
async fn legacy(addr: SocketAddr, id: &str, query: &str) -> Client {
    let mut c = Client::connect_with(addr, Some("graphql-ws"), &[])
        .await
        .expect("upgrade accepted");
    c.send(json!({"type": "connection_init", "payload": {}}))
        .await;
    assert_eq!(c.recv().await, json!({"type": "connection_ack"}));
    c.send(json!({"id": id, "type": "start", "payload": {"query": query}}))
        .await;
    c
}

/// The next legacy message that is not a `ka`.
async fn legacy_recv(c: &mut Client) -> Value {
    loop {
        let m = c.recv().await;
        if m["type"] != "ka" {
            return m;
        }
    }
}

/// A multipart subscription of `query`, its first heartbeat read.
async fn multipart(addr: SocketAddr, query: &str) -> StreamReader {
    let mut s = stream(addr, "multipart/mixed;subscriptionSpec=\"1.0\"", query).await;
    assert_eq!(s.part().await, Some(json!({})));
    s
}

async fn ticket(webhook: SocketAddr, payload: Value) {
    publish(
        webhook,
        json!({"topic": "ticketUpdated", "payload": payload}),
    )
    .await;
}

fn code(error: &Value) -> &str {
    error["extensions"]["code"].as_str().unwrap_or_default()
}

/// The API rolls back a field (`Ticket.priority`) and the operator sends
/// SIGHUP: every subscription selecting it ends with `SCHEMA_CHANGED` in
/// its transport's terms (socket `error`, legacy `error`, SSE `next` with
/// errors and `complete`, multipart fatal part); one that does not select it gets
/// every event, before and after, with no gap.
#[tokio::test]
async fn a_schema_change_on_sighup_ends_the_subscriptions_it_breaks_and_keeps_the_others() {
    let upstream = TestUpstream::start().await;
    upstream.evolve();
    let dir = tempfile::tempdir().unwrap();
    let config = on_ticket_schema(&upstream);
    let (file, mut subcar) = started(&dir, config.clone()).await;
    let (public, webhook) = (file.addrs.public, file.addrs.webhook);
    let mut gone = subscribed(public, "gone", WITH_PRIORITY).await;
    let mut kept = subscribed(public, "kept", IDS).await;
    let mut stream = sse(public, WITH_PRIORITY).await;
    let mut parts = multipart(public, WITH_PRIORITY).await;
    let mut old = legacy(public, "l", WITH_PRIORITY).await;
    wait_subscriptions(file.addrs.admin, 5).await;
    ticket(webhook, json!({"id": "1", "priority": 5})).await;
    let next = gone.recv().await;
    assert_eq!(
        next["payload"]["data"]["ticketUpdated"],
        json!({"id": "1", "priority": 5}),
        "{next}"
    );
    assert_eq!(
        kept.recv().await["payload"]["data"]["ticketUpdated"]["id"],
        "1"
    );
    assert_eq!(stream.event().await.unwrap().name(), "next");
    let part = parts.payload_part().await.unwrap();
    assert_eq!(
        part["payload"]["data"]["ticketUpdated"]["priority"], 5,
        "{part}"
    );
    let data = legacy_recv(&mut old).await;
    assert_eq!(data["type"], "data", "{data}");

    upstream.revert();
    subcar
        .reload(&file, config, |line| line.contains("schema_changed=4"))
        .await;

    let error = gone.recv().await;
    assert_eq!(
        (&error["type"], &error["id"]),
        (&json!("error"), &json!("gone")),
        "{error}"
    );
    assert_eq!(code(&error["payload"][0]), "SCHEMA_CHANGED", "{error}");
    assert!(error.to_string().contains("priority"), "says why: {error}");

    let next = stream.event().await.unwrap();
    assert_eq!(next.name(), "next");
    assert_eq!(
        code(&next.json()["errors"][0]),
        "SCHEMA_CHANGED",
        "{next:?}"
    );
    assert_eq!(stream.event().await.unwrap().name(), "complete");

    let fatal = parts.payload_part().await.unwrap();
    assert_eq!(fatal["payload"], Value::Null, "{fatal}");
    assert_eq!(code(&fatal["errors"][0]), "SCHEMA_CHANGED", "{fatal}");
    assert_eq!(parts.part().await, None, "the close delimiter follows");

    let error = legacy_recv(&mut old).await;
    assert_eq!(
        (&error["type"], &error["id"]),
        (&json!("error"), &json!("l")),
        "{error}"
    );
    assert_eq!(code(&error["payload"]), "SCHEMA_CHANGED", "{error}");

    // The one that still fits goes on: the next event after "1" is "2".
    wait_subscriptions(file.addrs.admin, 1).await;
    ticket(webhook, json!({"id": "2", "priority": 6})).await;
    let next = kept.recv().await;
    assert_eq!(
        next,
        json!({"id": "kept", "type": "next", "payload": {"data": {"ticketUpdated": {"id": "2"}}}})
    );
    // And the removed field is refused to a new subscription.
    gone.subscribe("again", WITH_PRIORITY).await;
    let refused = gone.recv().await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(
        code(&refused["payload"][0]),
        "GRAPHQL_VALIDATION_FAILED",
        "{refused}"
    );
}

/// SIGHUP with a tightened `allow`, a new `filter` and a field moved to
/// another topic: the subscription `allow` now refuses ends with
/// `FORBIDDEN`, the filtered one sees only what the new filter lets
/// through, the moved one is fed by its new topic; nobody reconnects.
#[tokio::test]
async fn sighup_applies_allow_filter_and_topic_to_live_subscriptions() {
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = on_ticket_schema(&upstream);
    let (file, mut subcar) = started(&dir, config.clone()).await;
    let (public, webhook) = (file.addrs.public, file.addrs.webhook);
    let mut secret = subscribed(
        public,
        "s",
        "subscription { ticketUpdated(id: \"secret\") { id } }",
    )
    .await;
    let mut filtered = subscribed(public, "f", IDS).await;
    let mut moved = subscribed(public, "m", "subscription { counter }").await;
    wait_subscriptions(file.addrs.admin, 3).await;
    ticket(webhook, json!({"id": "secret"})).await;
    assert_eq!(
        secret.recv().await["payload"]["data"]["ticketUpdated"]["id"],
        "secret"
    );
    assert_eq!(
        filtered.recv().await["payload"]["data"]["ticketUpdated"]["id"],
        "secret"
    );
    publish(webhook, json!({"topic": "counter", "payload": 1})).await;
    assert_eq!(moved.recv().await["payload"]["data"]["counter"], 1);

    let changed = config.extra(
        r#"
[[subscriptions]]
field = "ticketUpdated"
filter = "event.id != 'hidden'"
allow = "args.id == null || args.id != 'secret'"
[[subscriptions]]
field = "counter"
topic = "ticketClosed"
"#,
    );
    let (mut applied, mut rechecked) = (false, false);
    subcar
        .reload(&file, changed, |line| {
            assert!(!line.contains("after a restart"), "{line}");
            if line.contains("filter/allow rules applied") {
                assert!(line.contains("not_applied=0"), "{line}");
                applied = true;
            }
            rechecked |= line.contains("forbidden=1");
            applied && rechecked
        })
        .await;

    let error = secret.recv().await;
    assert_eq!(
        (&error["type"], &error["id"]),
        (&json!("error"), &json!("s")),
        "{error}"
    );
    assert_eq!(code(&error["payload"][0]), "FORBIDDEN", "{error}");

    for id in ["hidden", "shown"] {
        ticket(webhook, json!({ "id": id })).await;
    }
    assert_eq!(
        filtered.recv().await["payload"]["data"]["ticketUpdated"]["id"],
        "shown"
    );

    // The old topic feeds nobody now; the new one feeds the moved field.
    publish(webhook, json!({"topic": "counter", "payload": 2})).await;
    publish(webhook, json!({"topic": "ticketClosed", "payload": 3})).await;
    assert_eq!(moved.recv().await["payload"]["data"]["counter"], 3);
    wait_subscriptions(file.addrs.admin, 2).await;
}

/// The API redeploys with a new field: a refresh makes it subscribable at
/// once over SSE (refused before, as a `next` with errors), with no
/// reconnect of anything else.
#[tokio::test]
async fn a_field_added_by_a_schema_refresh_is_subscribable_at_once_over_sse() {
    let upstream = TestUpstream::start().await;
    let subcar = TestSubcar::builder(upstream.url())
        .introspect()
        .schema_path(manifest_dir().join("tests/fixtures/enrich/schema.graphql"))
        .schema("refresh_interval = \"1s\"")
        .spawn()
        .await;
    let mut before = sse(subcar.addr, WITH_PRIORITY).await;
    let refused = before.event().await.unwrap();
    assert_eq!(refused.name(), "next");
    assert!(
        refused.json().to_string().contains("priority"),
        "{refused:?}"
    );
    assert_eq!(before.event().await.unwrap().name(), "complete");
    let mut old = sse(subcar.addr, IDS).await;
    support::wait_subscriptions(&subcar, 1).await;

    upstream.evolve();
    let learned = tokio::time::timeout(PATIENCE, async {
        while !subcar
            .get_text("/graphql/schema.graphql")
            .await
            .contains("priority")
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(learned.is_ok(), "the refresh never brought Ticket.priority");
    let mut new = sse(subcar.addr, WITH_PRIORITY).await;
    support::wait_subscriptions(&subcar, 2).await;
    ticket(subcar.webhook, json!({"id": "7", "priority": 3})).await;
    let next = new.event().await.unwrap();
    assert_eq!(
        next.json()["data"]["ticketUpdated"],
        json!({"id": "7", "priority": 3}),
        "{next:?}"
    );
    let next = old.event().await.unwrap();
    assert_eq!(
        next.json()["data"]["ticketUpdated"],
        json!({"id": "7"}),
        "{next:?}"
    );
}
