//! Cross-replica load through the shared buses: two subcar replicas
//! (in-process apps) on the real Redis / NATS on loopback; events are
//! posted to replica A's webhook and received by a subscriber of replica B.
//!
//! `cargo bench --bench bus` measures, for Redis and for NATS:
//! (a) webhook → subscriber latency p50/p99/max at 1,000 events/s
//!     (single-event POSTs, one keep-alive connection);
//! (b) sustained ingest with batches: events/s acknowledged by the bus
//!     (202s) with 4 concurrent webhook connections posting 500-event
//!     batches, and events/s seen by B's subscriber over the same run.
//! `BUS_BENCH_SECONDS` (default 5) sets the length of each phase;
//! `BUS_BENCH_BACKENDS=redis` (or `nats`) runs one backend only.

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use support::ws::Ws;
use support::{Client, TestSubcar};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const SCHEMA: &str = "type Query { hello: String }\ntype Subscription { counter: Int }\n";
const BATCH: usize = 500;
const PUBLISHERS: usize = 4;

/// A replica on `bus`, once its `/readyz` reports the bus connected.
async fn replica(bus: &str) -> TestSubcar {
    let replica = TestSubcar::builder("http://127.0.0.1:9/graphql")
        .sdl(SCHEMA)
        .webhook("max_body_bytes = 10485760")
        .extra(&format!("[limits]\noutbound_queue = 100000\n{bus}"))
        .spawn()
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ready: Value = reqwest::get(replica.admin_url("/readyz"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if ready["bus"]["connected"] == true {
            return replica;
        }
        assert!(Instant::now() < deadline, "bus never connected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// B's subscriber of `counter`: the raw socket, read without parsing.
async fn subscriber(addr: SocketAddr) -> Ws {
    let mut c = Client::ready(addr).await;
    c.subscribe("1", "subscription { counter }").await;
    c.ws
}

/// A keep-alive HTTP/1 connection to a webhook.
struct Poster {
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: String,
}

impl Poster {
    async fn new(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        Self {
            send,
            host: addr.to_string(),
        }
    }

    async fn post(&mut self, body: String) -> u16 {
        let req = http::Request::post("/webhook")
            .header("host", &self.host)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let res = self.send.send_request(req).await.unwrap();
        let status = res.status().as_u16();
        let _ = res.into_body().collect().await;
        status
    }
}

fn counter_of(text: &str) -> Option<u64> {
    let v: Value = serde_json::from_str(text).ok()?;
    v["payload"]["data"]["counter"].as_u64()
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// (a): one event a millisecond, latency from POST to B's socket.
async fn latency(a: &TestSubcar, b: &TestSubcar, seconds: u64) {
    let mut ws = subscriber(b.addr).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let events = (seconds * 1000) as usize;
    let origin = Instant::now();
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..events).map(|_| AtomicU64::new(0)).collect());
    let webhook = a.webhook;
    let stamps = sent.clone();
    let publisher = tokio::spawn(async move {
        let mut poster = Poster::new(webhook).await;
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut refused = 0;
        for i in 0..events {
            tick.tick().await;
            stamps[i].store(origin.elapsed().as_micros() as u64, Ordering::Relaxed);
            let body = json!({"topic": "counter", "payload": i}).to_string();
            if poster.post(body).await != 202 {
                refused += 1;
            }
        }
        refused
    });
    let mut lat = Vec::with_capacity(events);
    let deadline = Instant::now() + Duration::from_secs(seconds + 10);
    while lat.len() < events && Instant::now() < deadline {
        let Ok(Some(Ok(Message::Text(t)))) =
            tokio::time::timeout(Duration::from_secs(5), ws.next()).await
        else {
            break;
        };
        if let Some(i) = counter_of(&t) {
            let now = origin.elapsed().as_micros() as u64;
            lat.push(now.saturating_sub(sent[i as usize].load(Ordering::Relaxed)));
        }
    }
    let refused = publisher.await.unwrap();
    let elapsed = origin.elapsed().as_secs_f64();
    lat.sort_unstable();
    println!(
        "  latency at 1,000 events/s: {} events in {elapsed:.1}s, received {}, refused {refused}; p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        events,
        lat.len(),
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0),
    );
}

/// (b): batches from several connections as fast as the bus acknowledges.
async fn ingest(a: &TestSubcar, b: &TestSubcar, seconds: u64) {
    let mut ws = subscriber(b.addr).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let accepted = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(seconds);
    let origin = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..PUBLISHERS {
        let (webhook, accepted) = (a.webhook, accepted.clone());
        tasks.push(tokio::spawn(async move {
            let mut poster = Poster::new(webhook).await;
            let body = Value::Array(
                (0..BATCH)
                    .map(|i| json!({"topic": "counter", "payload": i}))
                    .collect(),
            )
            .to_string();
            while Instant::now() < stop {
                if poster.post(body.clone()).await == 202 {
                    accepted.fetch_add(BATCH as u64, Ordering::Relaxed);
                }
            }
        }));
    }
    let reader = tokio::spawn(async move {
        let mut seen = 0u64;
        let mut last = Instant::now();
        while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(3), ws.next()).await {
            if matches!(m, Message::Text(_)) {
                seen += 1;
                last = Instant::now();
            }
        }
        (seen, last)
    });
    for t in tasks {
        t.await.unwrap();
    }
    let ingest_secs = origin.elapsed().as_secs_f64();
    let total = accepted.load(Ordering::Relaxed);
    let (seen, last) = reader.await.unwrap();
    let deliver_secs = last.duration_since(origin).as_secs_f64();
    let stats = &b.registry.stats;
    println!(
        "  ingest with {BATCH}-event batches, {PUBLISHERS} connections: {total} events acknowledged in {ingest_secs:.1}s = {:.0} events/s; B's subscriber got {seen} ({:.0} events/s until its last); B's dispatcher lagged by {} events, slow consumers {}",
        total as f64 / ingest_secs,
        seen as f64 / deliver_secs,
        stats.lagged.load(Ordering::Relaxed),
        stats.slow_consumers.load(Ordering::Relaxed),
    );
}

async fn cleanup(kind: &str, prefix: &str) {
    match kind {
        "redis" => {
            let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
            let mut c = client.get_multiplexed_async_connection().await.unwrap();
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{{{prefix}}}:*"))
                .query_async(&mut c)
                .await
                .unwrap_or_default();
            for chunk in keys.chunks(500) {
                let _: redis::RedisResult<()> =
                    redis::cmd("DEL").arg(chunk).query_async(&mut c).await;
            }
        }
        _ => {
            if let Ok(c) = async_nats::connect("nats://127.0.0.1:4222").await {
                let _ = async_nats::jetstream::new(c).delete_stream(prefix).await;
            }
        }
    }
}

fn main() {
    let seconds: u64 = std::env::var("BUS_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let backends = std::env::var("BUS_BENCH_BACKENDS").unwrap_or_else(|_| "redis,nats".into());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for kind in backends.split(',') {
            let url = match kind {
                "redis" => "redis://127.0.0.1:6379",
                "nats" => "nats://127.0.0.1:4222",
                other => panic!("unknown backend {other}"),
            };
            let prefix = format!("bench{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
            let bus = format!(
                "[bus]\nkind = \"{kind}\"\nurl = \"{url}\"\nprefix = \"{prefix}\"\nhistory = 100000\n"
            );
            let a = replica(&bus).await;
            let b = replica(&bus).await;
            println!("{kind} (replica A's webhook → bus → replica B's subscriber):");
            latency(&a, &b, seconds).await;
            ingest(&a, &b, seconds).await;
            drop((a, b));
            cleanup(kind, &prefix).await;
        }
    });
}
