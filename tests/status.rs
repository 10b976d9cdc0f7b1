//! `/status` on the admin listener, as an operator reads it.

mod support;

use support::{Client, spawn, wait_subscriptions};

#[tokio::test]
async fn status_reports_connections_subscriptions_and_limits() {
    let rt =
        spawn("[limits]\nmax_connections = 77\n[rate_limits]\nmessages_per_connection = 30").await;
    let mut a = Client::ready(rt.addr).await;
    let mut b = Client::ready(rt.addr).await;
    a.subscribe("1", "subscription { counter }").await;
    b.subscribe("1", "subscription { counter }").await;
    b.subscribe("2", "subscription { incidentUpdated { id } }")
        .await;
    wait_subscriptions(&rt, 3).await;

    let status: serde_json::Value = reqwest::get(format!("http://{}/status", rt.admin))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["draining"], false);
    assert_eq!(status["connections"]["graphql-transport-ws"], 2);
    assert_eq!(status["subscriptions"]["total"], 3);
    assert_eq!(status["subscriptions"]["per_field"]["counter"], 2);
    assert_eq!(status["subscriptions"]["per_field"]["incidentUpdated"], 1);
    assert_eq!(
        status["subscriptions"]["groups"], 2,
        "identical subscriptions share a group"
    );
    assert_eq!(status["bus"]["kind"], "memory");
    assert_eq!(status["bus"]["connected"], true);
    assert_eq!(status["limits"]["max_connections"], 77);
    assert_eq!(status["rate_limits"]["messages_per_connection"], 30);
    assert!(status["rate_limits"]["requests_per_ip"].is_null(), "off");
    assert!(
        status["upstream"]["url"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:")
    );
    assert_eq!(status["schema"]["upstream_part"], "none");
}

/// `/status` shows the upstream URL without its password.
#[tokio::test]
async fn status_redacts_the_upstream_password() {
    let upstream = support::TestUpstream::start().await;
    let url = upstream
        .url()
        .replacen("http://", "http://admin:hunter2@", 1);
    let rt = support::spawn_with_upstream(&url, "").await;
    let text = reqwest::get(format!("http://{}/status", rt.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!text.contains("hunter2"), "{text}");
    let status: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(
        status["upstream"]["url"]
            .as_str()
            .unwrap()
            .starts_with("http://admin:****@127.0.0.1:"),
        "{status}"
    );
}
