//! Enrichment load: subcar in-process (the test harness) in front of the
//! real async-graphql test upstream (tests/support/upstream.rs), on loopback,
//! with the clients in this process.
//!
//! 1,000 subscribers in 10 roles (HS256 JWTs with a `role` claim) hold the
//! same subscription on one enriched topic with `share_by = "claims.role"`;
//! 200 key-only events (`{"id": "public-<n>"}`) are posted one by one to the
//! webhook at 100 events/s. `cargo bench --bench enrichment` prints, with
//! `upstream.batching = false` and then `true`:
//! - upstream requests carrying `SubcarResolve` per event (10 unbatched:
//!   one per role; 1 batched, holding 10 operations);
//! - deliveries/s from the first POST to the last receipt;
//! - latency webhook POST → subscriber receipt (the fetch included), p50/p99/max.
//!
//! `ENRICH_BENCH_SCALE=0.1` shrinks the subscriber and event counts.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{TestSubcar, TestUpstream, manifest_dir};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SECRET: &str = "enrichment-bench-secret-0123456789";
const ROLES: usize = 10;
const RATE_PER_SECOND: u64 = 100;
const RESOLVE: &str = "SubcarResolve";
const QUERY: &str = "subscription { ticketUpdated { id title severity tags owner { name } } }";

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

fn scale() -> f64 {
    std::env::var("ENRICH_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

fn token(i: usize) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": format!("user{i}"), "role": format!("role{}", i % ROLES), "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

async fn subcar(upstream: &TestUpstream, batching: bool) -> TestSubcar {
    TestSubcar::builder(upstream.url())
        .introspect()
        .schema_path(manifest_dir().join("tests/fixtures/enrich/schema.graphql"))
        .upstream(&format!("batching = {batching}"))
        .extra(&format!(
            r#"
[auth]
mode = "jwt"
[auth.jwt]
secret = "{SECRET}"
[limits]
outbound_queue = 100000
[log]
filter = "warn"
[[subscriptions]]
field = "ticketUpdated"
topic = "ticket.updated"
[subscriptions.resolve]
query_field = "ticket"
args = {{ id = "event.id" }}
share_by = "claims.role"
"#
        ))
        .spawn()
        .await
}

/// A subscriber of [`QUERY`] with the token of user `i`.
async fn subscriber(subcar: &TestSubcar, i: usize) -> Ws {
    let mut req = format!("ws://{}/graphql", subcar.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let init = json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {}", token(i))}});
    ws.send(Message::text(init.to_string())).await.unwrap();
    let ack = ws.next().await.unwrap().unwrap();
    assert!(ack.to_text().unwrap().contains("connection_ack"), "{ack}");
    let subscribe = json!({"id": "1", "type": "subscribe", "payload": {"query": QUERY}});
    ws.send(Message::text(subscribe.to_string())).await.unwrap();
    ws
}

/// The event number of a delivered `next` (`public-<n>`).
fn event_of(text: &str) -> Option<usize> {
    let v: Value = serde_json::from_str(text).ok()?;
    v["payload"]["data"]["ticketUpdated"]["id"]
        .as_str()?
        .strip_prefix("public-")?
        .parse()
        .ok()
}

fn percentile_ms(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// What one configuration measured.
struct Run {
    requests_per_event: f64,
    operations_per_event: f64,
    delivered: usize,
    expected: usize,
    deliveries_per_second: f64,
    latencies_us: Vec<u64>,
}

async fn run(upstream: &TestUpstream, batching: bool, subscribers: usize, events: usize) -> Run {
    let subcar = subcar(upstream, batching).await;
    let clients: Vec<Ws> = futures_util::stream::iter(0..subscribers)
        .map(|i| subscriber(&subcar, i))
        .buffer_unordered(50)
        .collect()
        .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while subcar.registry.sizes().subscriptions != subscribers {
        assert!(Instant::now() < deadline, "subscriptions never registered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let requests_before = upstream.bodies_containing(RESOLVE).len();

    let origin = Instant::now();
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..events).map(|_| AtomicU64::new(0)).collect());
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut ws| {
            let sent = sent.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(events);
                let mut last = origin;
                while latencies.len() < events {
                    let Ok(Some(Ok(m))) =
                        tokio::time::timeout(Duration::from_secs(5), ws.next()).await
                    else {
                        break;
                    };
                    let Message::Text(t) = m else { continue };
                    if let Some(n) = event_of(&t) {
                        let now = origin.elapsed().as_micros() as u64;
                        latencies.push(now.saturating_sub(sent[n].load(Ordering::Relaxed)));
                        last = Instant::now();
                    }
                }
                (latencies, last)
            })
        })
        .collect();

    let client = reqwest::Client::new();
    let webhook = format!("http://{}/webhook", subcar.webhook);
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE_PER_SECOND));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for (n, stamp) in sent.iter().enumerate() {
        tick.tick().await;
        stamp.store(origin.elapsed().as_micros() as u64, Ordering::Relaxed);
        let res = client
            .post(&webhook)
            .json(&json!({"topic": "ticket.updated", "payload": {"id": format!("public-{n}")}}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 202, "webhook refused event {n}");
    }

    let mut latencies_us = Vec::with_capacity(subscribers * events);
    let mut last = origin;
    for r in readers {
        let (l, t) = r.await.unwrap();
        latencies_us.extend(l);
        last = last.max(t);
    }
    latencies_us.sort_unstable();
    let fetches = &upstream.bodies_containing(RESOLVE)[requests_before..];
    let operations: usize = fetches
        .iter()
        .map(|r| match serde_json::from_slice::<Value>(&r.body) {
            Ok(Value::Array(ops)) => ops.len(),
            _ => 1,
        })
        .sum();
    Run {
        requests_per_event: fetches.len() as f64 / events as f64,
        operations_per_event: operations as f64 / events as f64,
        delivered: latencies_us.len(),
        expected: subscribers * events,
        deliveries_per_second: latencies_us.len() as f64
            / last.duration_since(origin).as_secs_f64(),
        latencies_us,
    }
}

fn main() {
    let subscribers = ((1000.0 * scale()) as usize).max(ROLES);
    let events = ((200.0 * scale()) as usize).max(10);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let upstream = TestUpstream::start().await;
        println!(
            "enrichment: {subscribers} subscribers in {ROLES} roles (share_by = \"claims.role\"), {events} key-only events at {RATE_PER_SECOND}/s"
        );
        println!(
            "| upstream.batching | SubcarResolve requests/event | operations/event | delivered | deliveries/s | POST → receipt p50 / p99 / max (ms) |"
        );
        println!("|---|---|---|---|---|---|");
        for (batching, expected_requests) in [(false, ROLES as f64), (true, 1.0)] {
            let r = run(&upstream, batching, subscribers, events).await;
            let l = &r.latencies_us;
            println!(
                "| {batching} | {:.2}{} | {:.2} | {}/{} | {:.0} | {:.2} / {:.2} / {:.2} |",
                r.requests_per_event,
                if r.requests_per_event == expected_requests {
                    String::new()
                } else {
                    format!(" (expected {expected_requests})")
                },
                r.operations_per_event,
                r.delivered,
                r.expected,
                r.deliveries_per_second,
                percentile_ms(l, 0.50),
                percentile_ms(l, 0.99),
                percentile_ms(l, 1.0),
            );
        }
    });
}
