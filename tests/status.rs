//! `/status` on the admin listener, as an operator reads it.

mod auth_support;
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

/// `/status/connections`: every client of every transport with its subject
/// (the `sub` claim, never the token), fields and queue, page by page.
#[tokio::test]
async fn connections_are_listed_with_subjects_and_fields_never_tokens() {
    use serde_json::{Value, json};
    use support::stream::{Sse, open};
    let rt = spawn(&auth_support::jwt_auth("")).await;
    let token = auth_support::hs256(json!({"sub": "alice"}), 600);
    let bearer = format!("Bearer {token}");
    let (mut ws, ack) = Client::init(rt.addr, &[], json!({"Authorization": bearer})).await;
    assert!(support::ws::acked(&ack));
    ws.subscribe("w1", "subscription { counter }").await;
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("query", "subscription { incidentUpdated { id } }")
        .finish();
    let mut sse = open(
        reqwest::Method::GET,
        &format!("{}?{query}", rt.graphql_url()),
        &[("accept", "text/event-stream"), ("authorization", &bearer)],
        None,
    )
    .await;
    assert_eq!(sse.sse().await, Some(Sse::Comment));
    wait_subscriptions(&rt, 2).await;
    let page = |q: &str| {
        let url = format!("http://{}/status/connections{q}", rt.admin);
        async move {
            let res = reqwest::get(url).await.unwrap();
            assert_eq!(res.status(), 200);
            res.text().await.unwrap()
        }
    };
    let all = page("").await;
    assert!(!all.contains(&token), "no token in {all}");
    let all: Value = serde_json::from_str(&all).unwrap();
    assert_eq!(all["total"], 2, "{all}");
    let conns = all["connections"].as_array().unwrap();
    assert_eq!(conns[0]["transport"], "graphql-transport-ws");
    assert_eq!(conns[0]["subject"], "alice");
    assert_eq!(conns[0]["ip"], "127.0.0.1");
    assert_eq!(
        conns[0]["subscriptions"],
        json!([{"id": "w1", "field": "counter"}])
    );
    assert_eq!(conns[0]["queue_depth"], 0);
    assert_eq!(conns[1]["transport"], "sse");
    assert_eq!(conns[1]["subscriptions"][0]["field"], "incidentUpdated");
    // One per page: the first names where the second starts.
    let first: Value = serde_json::from_str(&page("?limit=1").await).unwrap();
    assert_eq!(first["connections"].as_array().unwrap().len(), 1);
    let next = first["next"].as_u64().expect("a next page");
    let second: Value =
        serde_json::from_str(&page(&format!("?limit=1&after={next}")).await).unwrap();
    assert_eq!(second["connections"][0]["transport"], "sse");
    assert!(second["next"].is_null());
    drop(sse);
    ws.close().await;
    wait_subscriptions(&rt, 0).await;
    let empty: Value = serde_json::from_str(&page("").await).unwrap();
    assert_eq!(empty["total"], 0, "{empty}");
}
