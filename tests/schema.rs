//! The merged schema as clients and operators see it.

mod support;

use std::time::Duration;

use support::{TestSubcar, TestUpstream, free_port};

#[tokio::test]
async fn introspection_merges_upstream_types_into_the_served_sdl() {
    let upstream = TestUpstream::start().await;
    let subcar = TestSubcar::builder(upstream.url())
        .introspect()
        .spawn()
        .await;
    let sdl = reqwest::get(subcar.url("/graphql/schema.graphql"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        sdl.contains("incidentUpdated"),
        "subcar's Subscription root:\n{sdl}"
    );
    assert!(
        sdl.contains("increment"),
        "the upstream's Mutation root:\n{sdl}"
    );
    let ready: serde_json::Value = reqwest::get(subcar.url("/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["schema"]["upstream_part"], "introspection");
}

#[tokio::test]
async fn upstream_schema_is_learned_in_the_background_once_the_upstream_is_up() {
    let port = free_port();
    let subcar = TestSubcar::builder(format!("http://127.0.0.1:{port}/graphql"))
        .introspect()
        .spawn()
        .await;
    let ready: serde_json::Value = reqwest::get(subcar.url("/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["ready"], true, "starts without the upstream");
    assert_eq!(ready["schema"]["upstream_part"], "pending");

    let _upstream = TestUpstream::start_on(port).await;
    for _ in 0..100 {
        let sdl = reqwest::get(subcar.url("/graphql/schema.graphql"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if sdl.contains("increment") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the upstream schema was never merged in");
}
