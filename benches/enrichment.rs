//! Enrichment load: subcar in-process (the test harness) in front of the
//! real async-graphql test upstream (tests/support/upstream.rs), on loopback,
//! with the clients in this process.
//!
//! 1,000 subscribers (HS256 JWTs with a `role` claim) on one enriched topic
//! with `share_by = "claims.role"`; 200 key-only events
//! (`{"id": "public-<n>"}`) posted one by one to the webhook at 100 events/s.
//! Two populations, each with `upstream.batching = false` and `true`:
//! - "10 roles": one subscription, a token per user, 10 roles: 10 fetches
//!   per event, one per role. Batching does not merge them: a request
//!   carries one set of credentials, and these are 10;
//! - "10 selections": one role and one token for all, 10 selection sets:
//!   10 fetches per event, which batching sends as 1 request.
//!
//! `cargo bench --bench enrichment` prints per configuration: upstream
//! requests carrying `SubcarResolve` per event and the operations they hold,
//! deliveries/s from the first POST to the last receipt, and latency
//! webhook POST → subscriber receipt (the fetch included), p50/p99/max.
//!
//! `ENRICH_BENCH_SCALE=0.1` shrinks the subscriber and event counts.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use support::ws::{Ws, acked};
use support::{Client, TestSubcar, TestUpstream, manifest_dir};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "enrichment-bench-secret-0123456789";
const GROUPS: usize = 10;
const RATE_PER_SECOND: u64 = 100;
const RESOLVE: &str = "SubcarResolve";

/// Who subscribes to what.
#[derive(Clone, Copy)]
enum Population {
    /// Subscriber `i` has its own token, role `i % 10`, and the same query.
    TenRoles,
    /// Everyone has the same token and role; subscriber `i` has selection
    /// set `i % 10`.
    TenSelections,
}

impl Population {
    fn name(self) -> &'static str {
        match self {
            Self::TenRoles => "10 roles × 1 selection",
            Self::TenSelections => "1 role × 10 selections",
        }
    }

    fn token(self, i: usize) -> String {
        match self {
            Self::TenRoles => token(&format!("user{i}"), i % GROUPS),
            Self::TenSelections => token("service", 0),
        }
    }

    fn query(self, i: usize) -> String {
        let extra = match self {
            Self::TenRoles => String::new(),
            Self::TenSelections => format!(" k{}: title", i % GROUPS),
        };
        format!(
            "subscription {{ ticketUpdated {{ id title severity tags owner {{ name }}{extra} }} }}"
        )
    }
}

fn scale() -> f64 {
    std::env::var("ENRICH_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

/// An HS256 token. One `exp` for the whole run, so that the same claims
/// make the same token (the same credentials, which batching groups by).
fn token(sub: &str, role: usize) -> String {
    static EXP: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let exp = *EXP.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": sub, "role": format!("role{role}"), "exp": exp}),
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

/// Subscriber `i` of `population`: the raw socket, read without parsing.
async fn subscriber(subcar: &TestSubcar, population: Population, i: usize) -> Ws {
    let token = format!("Bearer {}", population.token(i));
    let (mut c, ack) = Client::init(subcar.addr, &[], json!({"Authorization": token})).await;
    assert!(acked(&ack), "{ack:?}");
    c.subscribe("1", &population.query(i)).await;
    c.ws
}

/// The event number of a delivered `next` (`"id":"public-<n>"`), and
/// whether it was completed from the upstream (it has the upstream's title).
/// A text search, not a JSON parse: the clients share the cores with subcar.
fn event_of(text: &str) -> Option<(usize, bool)> {
    let start = text.find(r#""id":"public-"#)? + r#""id":"public-"#.len();
    let digits = text[start..].find('"')?;
    let n = text[start..start + digits].parse().ok()?;
    let completed = text.contains(&format!(r#""title":"Ticket public-{n}""#));
    Some((n, completed))
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
    /// Deliveries without the upstream's values.
    incomplete: usize,
    expected: usize,
    deliveries_per_second: f64,
    latencies_us: Vec<u64>,
}

async fn run(
    upstream: &TestUpstream,
    population: Population,
    batching: bool,
    subscribers: usize,
    events: usize,
) -> Run {
    let subcar = subcar(upstream, batching).await;
    let clients: Vec<Ws> = futures_util::stream::iter(0..subscribers)
        .map(|i| subscriber(&subcar, population, i))
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
                let mut incomplete = 0;
                let mut last = origin;
                while latencies.len() < events {
                    let Ok(Some(Ok(m))) =
                        tokio::time::timeout(Duration::from_secs(5), ws.next()).await
                    else {
                        break;
                    };
                    let Message::Text(t) = m else { continue };
                    if let Some((n, completed)) = event_of(&t) {
                        incomplete += usize::from(!completed);
                        let now = origin.elapsed().as_micros() as u64;
                        latencies.push(now.saturating_sub(sent[n].load(Ordering::Relaxed)));
                        last = Instant::now();
                    }
                }
                (latencies, incomplete, last)
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
    let mut incomplete = 0;
    let mut last = origin;
    for r in readers {
        let (l, i, t) = r.await.unwrap();
        latencies_us.extend(l);
        incomplete += i;
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
        incomplete,
        expected: subscribers * events,
        deliveries_per_second: latencies_us.len() as f64
            / last.duration_since(origin).as_secs_f64(),
        latencies_us,
    }
}

fn main() {
    let subscribers = ((1000.0 * scale()) as usize).max(GROUPS);
    let events = ((200.0 * scale()) as usize).max(10);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let upstream = TestUpstream::start().await;
        println!(
            "enrichment: {subscribers} subscribers, share_by = \"claims.role\", {events} key-only events at {RATE_PER_SECOND}/s"
        );
        println!(
            "| subscribers | upstream.batching | SubcarResolve requests/event | operations/event | delivered (not completed) | deliveries/s | POST → receipt p50 / p99 / max (ms) |"
        );
        println!("|---|---|---|---|---|---|---|");
        let configurations = [
            (Population::TenRoles, false, GROUPS),
            (Population::TenRoles, true, GROUPS),
            (Population::TenSelections, false, GROUPS),
            (Population::TenSelections, true, 1),
        ];
        for (population, batching, expected_requests) in configurations {
            let r = run(&upstream, population, batching, subscribers, events).await;
            let l = &r.latencies_us;
            println!(
                "| {} | {batching} | {:.2}{} | {:.2} | {}/{} ({}) | {:.0} | {:.2} / {:.2} / {:.2} |",
                population.name(),
                r.requests_per_event,
                if r.requests_per_event == expected_requests as f64 {
                    String::new()
                } else {
                    format!(" (expected {expected_requests})")
                },
                r.operations_per_event,
                r.delivered,
                r.expected,
                r.incomplete,
                r.deliveries_per_second,
                percentile_ms(l, 0.50),
                percentile_ms(l, 0.99),
                percentile_ms(l, 1.0),
            );
        }
    });
}
