//! `/metrics` as Prometheus scrapes it: parsed by a real exposition-format
//! parser, with counters that move as traffic flows.

mod ws_support;

use std::net::SocketAddr;

use serde_json::json;
use ws_support::support::{TestSubcar, TestUpstream, post_json};
use ws_support::{Client, PATIENCE, publish, spawn, wait_subscriptions};

async fn scrape(subcar: &TestSubcar) -> prometheus_parse::Scrape {
    scrape_admin(subcar.admin).await
}

async fn scrape_admin(admin: SocketAddr) -> prometheus_parse::Scrape {
    let res = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("openmetrics-text")
    );
    let text = res.text().await.unwrap();
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    prometheus_parse::Scrape::parse(lines).expect("valid exposition format")
}

fn value(scrape: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(ref buckets) => {
                buckets.iter().map(|b| b.count).fold(0.0, f64::max)
            }
            _ => 0.0,
        })
        .sum()
}

#[tokio::test]
async fn proxy_counters_move_as_requests_flow() {
    let upstream = TestUpstream::start().await;
    let subcar = TestSubcar::builder(upstream.url()).spawn().await;
    let before = scrape(&subcar).await;
    assert_eq!(value(&before, "subcar_build_info", None), 1.0);
    let ok_before = value(
        &before,
        "subcar_proxy_requests_total",
        Some(("status", "200")),
    );

    for _ in 0..3 {
        post_json(&subcar.graphql_url(), json!({"query": "{ hello }"})).await;
    }
    post_json(
        &subcar.graphql_url(),
        json!({"query": "subscription { incidentUpdated { id } }"}),
    )
    .await;

    let after = scrape(&subcar).await;
    assert_eq!(
        value(
            &after,
            "subcar_proxy_requests_total",
            Some(("status", "200"))
        ) - ok_before,
        3.0
    );
    assert_eq!(
        value(
            &after,
            "subcar_proxy_requests_total",
            Some(("status", "400"))
        ),
        1.0
    );
    assert!(value(&after, "subcar_proxy_latency_seconds_count", None) >= 4.0);
}

/// A sample's name, an optional label, and the value it should reach.
type Expected = (&'static str, Option<(&'static str, &'static str)>, f64);

/// The realtime half: connections, subscriptions, events in, messages out,
/// webhook statuses and the dispatch latency histogram all move.
#[tokio::test]
async fn realtime_counters_move_as_events_flow() {
    let rt = spawn("").await;
    let mut c = Client::ready(rt.addr).await;
    c.subscribe("1", "subscription { counter }").await;
    wait_subscriptions(&rt, 1).await;
    publish(rt.webhook, json!({"topic": "counter", "payload": 1})).await;
    c.recv().await;
    let (status, _, _) = ws_support::post(rt.webhook, "{", "application/json", &[]).await;
    assert_eq!(status, 400);
    let expected: [Expected; 7] = [
        (
            "subcar_connections",
            Some(("transport", "graphql_transport_ws")),
            1.0,
        ),
        ("subcar_subscriptions", Some(("field", "counter")), 1.0),
        (
            "subcar_events_received_total",
            Some(("topic", "counter")),
            1.0,
        ),
        ("subcar_messages_delivered_total", None, 1.0),
        (
            "subcar_webhook_requests_total",
            Some(("status", "202")),
            1.0,
        ),
        (
            "subcar_webhook_requests_total",
            Some(("status", "400")),
            1.0,
        ),
        ("subcar_dispatch_latency_seconds_count", None, 1.0),
    ];
    // The registry is sampled once a second.
    let mut last = Vec::new();
    let settled = tokio::time::timeout(PATIENCE, async {
        loop {
            let scrape = scrape_admin(rt.admin).await;
            last = expected
                .iter()
                .map(|(name, label, _)| value(&scrape, name, *label))
                .collect();
            if expected.iter().zip(&last).all(|(e, got)| e.2 == *got) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        settled.is_ok(),
        "metrics never showed {expected:?}: {last:?}"
    );
}
