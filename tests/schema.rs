//! The merged schema as clients and operators see it.

mod support;

use std::time::Duration;

use support::{TestSubcar, TestUpstream, free_port};

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
