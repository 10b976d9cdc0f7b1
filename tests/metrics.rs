//! `/metrics` as Prometheus scrapes it: parsed by a real exposition-format
//! parser, with counters that move as traffic flows.

mod support;

use serde_json::json;
use support::{TestSubcar, TestUpstream, post_json};

async fn scrape(subcar: &TestSubcar) -> prometheus_parse::Scrape {
    let res = reqwest::get(subcar.admin_url("/metrics")).await.unwrap();
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
