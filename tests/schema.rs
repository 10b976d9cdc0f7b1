//! The merged schema as clients and operators see it.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{Client, TestSubcar, TestUpstream, free_port, publish};

#[tokio::test]
async fn introspection_merges_upstream_types_into_the_served_sdl() {
    let upstream = TestUpstream::start().await;
    let subcar = TestSubcar::introspecting(upstream.url()).await;
    let sdl = subcar.get_text("/graphql/schema.graphql").await;
    assert!(
        sdl.contains("incidentUpdated"),
        "subcar's Subscription root:\n{sdl}"
    );
    assert!(
        sdl.contains("increment"),
        "the upstream's Mutation root:\n{sdl}"
    );
    let ready = subcar.get_json("/readyz").await;
    assert_eq!(ready["schema"]["upstream_part"], "introspection");
}

#[tokio::test]
async fn upstream_schema_is_learned_in_the_background_once_the_upstream_is_up() {
    let port = free_port();
    let subcar = TestSubcar::introspecting(format!("http://127.0.0.1:{port}/graphql")).await;
    let ready = subcar.get_json("/readyz").await;
    assert_eq!(ready["ready"], true, "starts without the upstream");
    assert_eq!(ready["schema"]["upstream_part"], "pending");

    let _upstream = TestUpstream::start_on(port).await;
    for _ in 0..100 {
        let sdl = subcar.get_text("/graphql/schema.graphql").await;
        if sdl.contains("increment") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the upstream schema was never merged in");
}

/// GraphiQL and codegen introspect through the proxy: they must see
/// subcar's Subscription root beside the upstream's types.
#[tokio::test]
async fn introspection_through_the_proxy_includes_the_subscription_root() {
    let upstream = TestUpstream::start().await;
    let subcar = TestSubcar::introspecting(upstream.url()).await;
    // subcar's own start-up introspection of the upstream.
    let before = upstream.recorded().len();
    let (status, body) = support::post_json(
        &subcar.graphql_url(),
        serde_json::json!({"query": subcar::graphql::INTROSPECTION_QUERY, "operationName": "IntrospectionQuery"}),
    )
    .await;
    assert_eq!(status, 200);
    let schema = &body["data"]["__schema"];
    assert_eq!(schema["subscriptionType"]["name"], "Subscription", "{body}");
    let names: Vec<&str> = schema["types"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    for expected in [
        "Subscription",
        "Incident",
        "Severity",
        "QueryRoot",
        "MutationRoot",
    ] {
        assert!(names.contains(&expected), "{expected} in {names:?}");
    }
    assert_eq!(
        upstream.recorded().len(),
        before,
        "answered by subcar, not forwarded"
    );

    // A query mixing introspection and ordinary fields goes to the upstream.
    let (_, body) = support::post_json(
        &subcar.graphql_url(),
        serde_json::json!({"query": "{ hello __schema { queryType { name } } }"}),
    )
    .await;
    assert_eq!(body["data"]["hello"], "Hello, world!");
}

/// subcar on the enrichment SDL (`ticketUpdated: Ticket`, the upstream's
/// type), learning it by introspection and refreshing it every second.
async fn refreshing(upstream: &TestUpstream) -> TestSubcar {
    TestSubcar::builder(upstream.url())
        .introspect()
        .schema_path(support::manifest_dir().join("tests/fixtures/enrich/schema.graphql"))
        .schema("refresh_interval = \"1s\"")
        .spawn()
        .await
}

/// Polls `/readyz` until `done` holds for its `schema` object; returns it.
async fn schema_status(
    subcar: &TestSubcar,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    for _ in 0..100 {
        let res = subcar.get("/readyz").await;
        assert_eq!(res.status(), 200, "the last good schema serves");
        last = res.json::<serde_json::Value>().await.unwrap()["schema"].take();
        if done(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("/readyz never reported the expected schema state: {last}");
}

/// The value of the sample `name` (no labels) in a text-format scrape.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing in\n{text}"))
}

/// The API redeploys with a new field: new subscriptions may select it
/// within a refresh interval, and one subscribed before goes on.
#[tokio::test]
async fn a_refresh_makes_a_new_upstream_field_subscribable_at_once() {
    let upstream = TestUpstream::start().await;
    let subcar = refreshing(&upstream).await;
    let mut before = subcar
        .subscriber("old", "subscription { ticketUpdated { id } }")
        .await;
    let mut client = Client::ready(subcar.addr).await;
    client
        .subscribe("new", "subscription { ticketUpdated { id priority } }")
        .await;
    let refused = client.recv().await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert!(refused.to_string().contains("priority"), "{refused}");

    upstream.evolve();
    let mut learned = false;
    for _ in 0..100 {
        let sdl = subcar.get_text("/graphql/schema.graphql").await;
        if sdl.contains("priority") {
            learned = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(learned, "the refresh never brought Ticket.priority");
    let status = schema_status(&subcar, |s| s["last_refresh"] == "ok").await;
    assert_eq!(status["upstream_part"], "introspection");
    client
        .subscribe("new", "subscription { ticketUpdated { id priority } }")
        .await;
    support::wait_subscriptions(&subcar, 2).await;
    publish(
        subcar.webhook,
        json!({"topic": "ticketUpdated", "payload": {"id": "7", "priority": 3}}),
    )
    .await;
    let next = client.recv().await;
    assert_eq!(
        next["payload"]["data"]["ticketUpdated"],
        json!({"id": "7", "priority": 3}),
        "{next}"
    );
    let next = before.recv().await;
    assert_eq!(
        next["payload"]["data"]["ticketUpdated"],
        json!({"id": "7"}),
        "{next}"
    );
}

/// An upstream whose introspection fails keeps the last good schema in
/// use; `/readyz` (still 200) and `/metrics` say so until it answers again.
#[tokio::test]
async fn a_failed_refresh_keeps_the_last_good_schema_and_is_reported() {
    let upstream = TestUpstream::start().await;
    let subcar = refreshing(&upstream).await;
    let status = schema_status(&subcar, |s| s["last_refresh"] == "ok").await;
    assert!(status.get("error").is_none(), "{status}");
    let metrics = support::metrics(subcar.admin).await;
    let learned_at = sample(
        &metrics,
        "subcar_schema_last_refresh_success_timestamp_seconds",
    );
    assert!(learned_at > 0.0, "{metrics}");
    assert_eq!(
        sample(&metrics, "subcar_schema_refresh_failures_total"),
        0.0
    );

    upstream.refuse_introspection(true);
    let status = schema_status(&subcar, |s| s["last_refresh"] == "failed").await;
    assert!(
        status["error"].as_str().unwrap().contains("503"),
        "{status}"
    );
    assert_eq!(status["upstream_part"], "introspection");
    let metrics = support::metrics(subcar.admin).await;
    assert!(sample(&metrics, "subcar_schema_refresh_failures_total") >= 1.0);
    assert_eq!(
        sample(
            &metrics,
            "subcar_schema_last_refresh_success_timestamp_seconds"
        ),
        learned_at
    );
    // The upstream's types are still there: subscriptions that need them work.
    assert!(
        subcar
            .get_text("/graphql/schema.graphql")
            .await
            .contains("type Ticket")
    );
    let _ticket = subcar
        .subscriber("t", "subscription { ticketUpdated { id title } }")
        .await;

    upstream.refuse_introspection(false);
    let status = schema_status(&subcar, |s| s["last_refresh"] == "ok").await;
    assert!(status.get("error").is_none(), "{status}");
}
