//! `/metrics` as Prometheus scrapes it: parsed by a real exposition-format
//! parser, with counters that move as traffic flows.

mod support;

use std::net::SocketAddr;

use serde_json::json;
use support::{PATIENCE, publish, spawn};
use support::{TestSubcar, TestUpstream, post_json};

async fn scrape(subcar: &TestSubcar) -> prometheus_parse::Scrape {
    scrape_admin(subcar.admin).await
}

async fn scrape_admin(admin: SocketAddr) -> prometheus_parse::Scrape {
    let res = reqwest::Client::new()
        .get(format!("http://{admin}/metrics"))
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
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
    // The subscription accepts no stream: 406 SUBSCRIPTION_BAD_HEADER.
    assert_eq!(
        value(
            &after,
            "subcar_proxy_requests_total",
            Some(("status", "406"))
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
    let mut c = rt.subscriber("1", "subscription { counter }").await;
    publish(rt.webhook, json!({"topic": "counter", "payload": 1})).await;
    c.recv().await;
    let (status, _, _) = support::post(rt.webhook, "{", "application/json", &[]).await;
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

/// A scraper that does not ask for OpenMetrics (curl, most agents) gets the
/// Prometheus text format, with every family present before any traffic.
#[tokio::test]
async fn plain_scrapers_get_the_text_format_with_every_family_at_zero() {
    let upstream = TestUpstream::start().await;
    let subcar = TestSubcar::builder(upstream.url()).spawn().await;
    let res = reqwest::get(subcar.admin_url("/metrics")).await.unwrap();
    assert_eq!(
        res.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = res.text().await.unwrap();
    assert!(!text.contains("# EOF"), "{text}");
    assert!(
        text.contains("# TYPE subcar_refusals_total counter"),
        "{text}"
    );
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let has = |name: &str, label: Option<(&str, &str)>| {
        scrape
            .samples
            .iter()
            .any(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
    };
    for (name, label) in [
        (
            "subcar_connections",
            Some(("transport", "graphql_transport_ws")),
        ),
        ("subcar_subscriptions", Some(("field", "incidentUpdated"))),
        (
            "subcar_events_received_total",
            Some(("topic", "incidentUpdated")),
        ),
        ("subcar_refusals_total", Some(("reason", "slow_consumer"))),
        ("subcar_webhook_requests_total", Some(("status", "503"))),
        ("subcar_upstream_up", None),
        ("process_resident_memory_bytes", None),
        ("process_cpu_seconds_total", None),
        ("process_open_fds", None),
    ] {
        assert!(has(name, label), "{name} {label:?} missing:\n{text}");
    }
}

/// `promtool check metrics` (which reads the text format only) over what a
/// plain scraper gets after some traffic. CI installs promtool and sets
/// `SUBCAR_REQUIRE_PROMTOOL=1`; elsewhere the check runs when promtool is on
/// the PATH.
#[tokio::test]
async fn promtool_finds_nothing_to_complain_about() {
    use std::io::Write;
    let have = std::process::Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok();
    if !have {
        assert!(
            std::env::var_os("SUBCAR_REQUIRE_PROMTOOL").is_none(),
            "promtool is not installed (Debian: apt-get install prometheus)"
        );
        eprintln!("promtool not installed: skipped");
        return;
    }
    let rt = spawn("").await;
    let mut c = rt.subscriber("1", "subscription { counter }").await;
    publish(rt.webhook, json!({"topic": "counter", "payload": 1})).await;
    c.recv().await;
    {
        let accept = "*/*";
        let text = reqwest::Client::new()
            .get(format!("http://{}/metrics", rt.admin))
            .header("accept", accept)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let mut child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool ({accept}): {}{}\n{text}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
