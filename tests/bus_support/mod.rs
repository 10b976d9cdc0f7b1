//! Scale-out scenarios, written once and run against every shared bus
//! (`tests/bus_redis.rs`, `tests/bus_nats.rs`) and, where they make sense
//! on one replica, the memory bus (`tests/resume.rs`).
//!
//! Every scenario gets its own key prefix / stream name and removes it when
//! done (also when it panics). Outages use a private server on a free port
//! or a TCP proxy in front of the shared one, never the shared server itself.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::support::{
    self, Client, PATIENCE, TestSubcar, post, post_with_id, publish, wait_subscriptions,
};

mod servers;
// Not every test file that includes this module talks to Redis or NATS.
use servers::Server;
#[allow(unused_imports)]
pub use servers::{nats, redis};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Memory,
    Redis,
    Nats,
}

/// One test's namespace on a bus; removed on drop.
pub struct Bus {
    pub kind: Kind,
    pub url: String,
    pub prefix: String,
    pub history: usize,
    /// Where cleanup goes: the server itself, even when replicas reach it
    /// through a proxy.
    server: String,
}

impl Bus {
    pub fn new(kind: Kind, url: &str) -> Self {
        Self {
            kind,
            url: url.to_owned(),
            server: url.to_owned(),
            prefix: format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            history: 10_000,
        }
    }

    /// Replicas reach the server at `url` (a proxy).
    pub fn via(mut self, url: &str) -> Self {
        self.url = url.to_owned();
        self
    }

    pub fn history(mut self, n: usize) -> Self {
        self.history = n;
        self
    }

    /// The `[bus]` section for a replica.
    pub fn toml(&self) -> String {
        let kind = match self.kind {
            Kind::Memory => return format!("[bus]\nhistory = {}\n", self.history),
            Kind::Redis => "redis",
            Kind::Nats => "nats",
        };
        format!(
            "[bus]\nkind = \"{kind}\"\nurl = \"{}\"\nprefix = \"{}\"\nhistory = {}\n",
            self.url, self.prefix, self.history
        )
    }

    /// A replica on this bus, once it reports the bus connected.
    /// The dedup window is days long: the backends hold it, not subcar.
    pub async fn replica(&self) -> TestSubcar {
        let extra = format!(
            "{}[webhook]\nlisten = \"127.0.0.1:0\"\ndedup_window = \"2d\"\n",
            self.toml()
        );
        let rt = support::spawn(&extra).await;
        wait_bus(&rt, true).await;
        rt
    }

    /// A replica of this bus that reaches its server at `url` (a proxy).
    pub async fn replica_via(&self, url: &str) -> TestSubcar {
        let other = Self {
            kind: self.kind,
            url: url.to_owned(),
            prefix: self.prefix.clone(),
            history: self.history,
            server: self.server.clone(),
        };
        let rt = other.replica().await;
        // The namespace is `self`'s to remove, when it goes.
        std::mem::forget(other);
        rt
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let (kind, url, prefix) = (self.kind, self.server.clone(), self.prefix.clone());
        // Its own thread and runtime: drop may run inside a runtime, or
        // during a panic.
        let cleanup = std::thread::spawn(move || match kind {
            Kind::Memory => {}
            Kind::Redis => {
                let Ok(mut c) = redis::Client::open(url.as_str()).and_then(|c| c.get_connection())
                else {
                    return;
                };
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(format!("{{{prefix}}}:*"))
                    .query(&mut c)
                    .unwrap_or_default();
                for chunk in keys.chunks(500) {
                    let _: redis::RedisResult<()> = redis::cmd("DEL").arg(chunk).query(&mut c);
                }
            }
            Kind::Nats => {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok(c) = async_nats::connect(url.as_str()).await {
                        let _ = async_nats::jetstream::new(c).delete_stream(&prefix).await;
                    }
                });
            }
        });
        let _ = cleanup.join();
    }
}

/// `/readyz` of `rt`.
pub async fn readyz(rt: &TestSubcar) -> (u16, Value) {
    let res = reqwest::get(format!("http://{}/readyz", rt.admin))
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

/// Waits until `/readyz` reports the bus connected (or not).
pub async fn wait_bus(rt: &TestSubcar, connected: bool) {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let (status, body) = readyz(rt).await;
            if body["bus"]["connected"] == connected {
                assert_eq!(status == 200, connected, "{body}");
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("bus never became connected={connected}"));
}

/// Subscribes with `extensions.resume`.
pub async fn subscribe_resume(c: &mut Client, id: &str, query: &str, after: Option<&str>) {
    let resume = match after {
        Some(a) => json!({"after": a}),
        None => json!({}),
    };
    c.send(json!({"id": id, "type": "subscribe",
        "payload": {"query": query, "extensions": {"resume": resume}}}))
        .await;
}

/// Subscribes with `extensions.resume.since`.
pub async fn subscribe_since(c: &mut Client, id: &str, query: &str, since: &str) {
    c.send(json!({"id": id, "type": "subscribe",
        "payload": {"query": query, "extensions": {"resume": {"since": since}}}}))
        .await;
}

/// Asserts that `m` is the `error` that ended operation `id`, coded `code`.
pub fn ended_with(m: &Value, id: &str, code: &str) {
    assert_eq!((&m["type"], &m["id"]), (&json!("error"), &json!(id)), "{m}");
    assert_eq!(m["payload"][0]["extensions"]["code"], code, "{m}");
}

/// A time as clients send it.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Sends a ping and returns every message before the pong: what arrived
/// that was not read yet.
pub async fn drain(c: &mut Client) -> Vec<Value> {
    c.send(json!({"type": "ping"})).await;
    let mut rest = Vec::new();
    loop {
        let m = c.recv().await;
        if m["type"] == "pong" {
            return rest;
        }
        rest.push(m);
    }
}

/// POSTs `body` until it is accepted, as an upstream retrying on `503` does.
pub async fn publish_retrying(webhook: SocketAddr, body: &Value) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (status, headers, json) =
            post(webhook, body.to_string(), "application/json", &[]).await;
        match status.as_u16() {
            202 => return json,
            503 => {
                assert_eq!(json["error"]["code"], "BUS_UNAVAILABLE");
                assert!(headers.contains_key("retry-after"));
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "bus never came back"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            s => panic!("webhook answered {s}: {json}"),
        }
    }
}

/// `counter` events carrying `range`, 200 per request.
async fn publish_counters(webhook: SocketAddr, range: std::ops::Range<usize>) {
    let mut n = range.start;
    while n < range.end {
        let size = 200.min(range.end - n);
        let batch: Vec<Value> = (n..n + size)
            .map(|i| json!({"topic": "counter", "payload": i}))
            .collect();
        publish(webhook, Value::Array(batch)).await;
        n += size;
    }
}

fn payload(topic: &str, i: usize) -> Value {
    match topic {
        "counter" => json!(i),
        "item" => json!({"kind": if i % 2 == 1 { "odd" } else { "even" }, "n": i}),
        _ => {
            json!({"id": i.to_string(), "title": format!("incident {i}"), "severity": if i.is_multiple_of(3) { "P1" } else { "P3" }})
        }
    }
}

const TOPICS: [&str; 3] = ["counter", "item", "incidentUpdated"];

/// What each subscription of the fan-out scenario should see of event `i`
/// of `topic`, as the value at `data.<field>`; `None` when filtered out.
struct Sub {
    query: &'static str,
    topic: &'static str,
    field: &'static str,
    sees: fn(usize) -> Option<Value>,
}

const SUBS: [Sub; 4] = [
    Sub {
        query: "subscription { counter }",
        topic: "counter",
        field: "counter",
        sees: |i| Some(json!(i)),
    },
    Sub {
        query: r#"subscription { item(kind: "odd") { n } }"#,
        topic: "item",
        field: "item",
        sees: |i| (i % 2 == 1).then(|| json!({"n": i})),
    },
    Sub {
        query: "subscription { item { kind n } }",
        topic: "item",
        field: "item",
        sees: |i| Some(json!({"kind": if i % 2 == 1 { "odd" } else { "even" }, "n": i})),
    },
    Sub {
        query: r#"subscription { incidentUpdated(severity: "P1") { id } }"#,
        topic: "incidentUpdated",
        field: "incidentUpdated",
        sees: |i| (i.is_multiple_of(3)).then(|| json!({"id": i.to_string()})),
    },
];

/// Three replicas; every subscription kind on each; 2,000 events over three
/// topics posted in batches to the replicas in turn, some ids posted again
/// to another replica. Every subscriber gets exactly its filtered events of
/// every replica, once each, in per-topic order.
pub async fn fan_out_across_three_replicas(kind: Kind, url: &str) {
    let bus = Bus::new(kind, url);
    let replicas = [
        bus.replica().await,
        bus.replica().await,
        bus.replica().await,
    ];
    let mut clients = Vec::new();
    for rt in &replicas {
        for (s, sub) in SUBS.iter().enumerate() {
            let mut c = Client::ready(rt.addr).await;
            c.subscribe("s", sub.query).await;
            clients.push((s, c));
        }
        wait_subscriptions(rt, SUBS.len()).await;
    }
    let total = 2000;
    let mut sent = [0usize; 3];
    let mut n = 0;
    let mut batch_no = 0;
    while n < total {
        let size = [1, 13, 40, 100][batch_no % 4].min(total - n);
        let batch: Vec<Value> = (n..n + size)
            .map(|k| {
                let t = k % 3;
                let i = sent[t];
                sent[t] += 1;
                json!({"topic": TOPICS[t], "id": format!("{}-{i}", TOPICS[t]), "payload": payload(TOPICS[t], i)})
            })
            .collect();
        let target = &replicas[batch_no % 3];
        let ack = publish(target.webhook, Value::Array(batch.clone())).await;
        assert_eq!(ack, json!({"accepted": size, "duplicates": 0}));
        if batch_no.is_multiple_of(7) {
            // The upstream retries on another replica: accepted, not redelivered.
            let other = &replicas[(batch_no + 1) % 3];
            let ack = publish(other.webhook, Value::Array(batch)).await;
            assert_eq!(ack, json!({"accepted": size, "duplicates": size}));
        }
        n += size;
        batch_no += 1;
    }
    for (s, c) in &mut clients {
        let sub = &SUBS[*s];
        let t = TOPICS.iter().position(|t| *t == sub.topic).unwrap();
        for i in 0..sent[t] {
            let Some(want) = (sub.sees)(i) else { continue };
            let got = c.recv().await;
            assert_eq!(
                got["payload"]["data"][sub.field], want,
                "{} event {i}: {got}",
                sub.query
            );
        }
        assert_eq!(
            drain(c).await,
            Vec::<Value>::new(),
            "nothing more for {}",
            sub.query
        );
    }
}

/// A request refused as a whole marks none of its ids as seen, on any replica.
pub async fn refused_batch_marks_no_id(kind: Kind, url: &str) {
    let bus = Bus::new(kind, url);
    let (a, b) = (bus.replica().await, bus.replica().await);
    let mut c = b.subscriber("1", "subscription { counter }").await;
    let bad = json!([
        {"topic": "counter", "id": "x1", "payload": 1},
        {"topic": "nope", "id": "x2", "payload": 2},
    ]);
    let (status, _, _) = post(a.webhook, bad.to_string(), "application/json", &[]).await;
    assert_eq!(status, 422);
    let ack = publish(
        b.webhook,
        json!([
            {"topic": "counter", "id": "x1", "payload": 1},
            {"topic": "counter", "id": "x1", "payload": 1},
        ]),
    )
    .await;
    assert_eq!(ack, json!({"accepted": 2, "duplicates": 1}));
    assert_eq!(c.recv().await["payload"]["data"]["counter"], 1);
    assert_eq!(drain(&mut c).await, Vec::<Value>::new());
}

/// A request's `webhook-id` is deduplicated across replicas: the same
/// batch without event ids replayed to another replica, and another body
/// sent with the same `webhook-id`, are all duplicates; the subscriber gets
/// the batch once.
pub async fn webhook_id_replay_across_replicas(kind: Kind, url: &str) {
    let bus = Bus::new(kind, url);
    let (a, b) = (bus.replica().await, bus.replica().await);
    let mut c = b.subscriber("1", "subscription { counter }").await;
    let batch = json!([
        {"topic": "counter", "payload": 1},
        {"topic": "counter", "payload": 2},
    ])
    .to_string();
    let h = [("webhook-id", "msg_replayed")];
    let (status, _, json) = post(a.webhook, batch.clone(), "application/json", &h).await;
    assert_eq!(status, 202, "{json}");
    assert_eq!(json, json!({"accepted": 2, "duplicates": 0}));
    for rt in [&b, &a] {
        let (status, _, json) = post(rt.webhook, batch.clone(), "application/json", &h).await;
        assert_eq!(status, 202, "{json}");
        assert_eq!(json, json!({"accepted": 2, "duplicates": 2}));
    }
    let other = json!([
        {"topic": "counter", "id": "o1", "payload": 10},
        {"topic": "counter", "id": "o2", "payload": 11},
        {"topic": "counter", "payload": 12},
    ]);
    let (status, _, json) = post(b.webhook, other.to_string(), "application/json", &h).await;
    assert_eq!(status, 202, "{json}");
    assert_eq!(json, json!({"accepted": 3, "duplicates": 3}));
    publish(a.webhook, json!({"topic": "counter", "payload": 3})).await;
    for want in [1, 2, 3] {
        assert_eq!(c.recv().await["payload"]["data"]["counter"], want);
    }
    assert_eq!(drain(&mut c).await, Vec::<Value>::new());
}

/// A connection cutter for a replica's bus: Redis `CLIENT KILL` of every
/// connection of this test's replicas, or, for NATS, a proxy dropping its
/// connections.
pub enum Cutter {
    Redis { url: String, prefix: String },
    Proxy(Proxy),
}

impl Cutter {
    pub async fn cut(&self) {
        match self {
            Cutter::Redis { url, prefix } => {
                let client = redis::Client::open(url.as_str()).unwrap();
                let mut c = client.get_multiplexed_async_connection().await.unwrap();
                let list: String = redis::cmd("CLIENT")
                    .arg("LIST")
                    .query_async(&mut c)
                    .await
                    .unwrap();
                let mine = format!("name=subcar-{prefix}-");
                let mut killed = 0;
                for line in list.lines().filter(|l| l.contains(&mine)) {
                    let id = line.split(' ').find_map(|f| f.strip_prefix("id=")).unwrap();
                    let _: i64 = redis::cmd("CLIENT")
                        .arg("KILL")
                        .arg("ID")
                        .arg(id)
                        .query_async(&mut c)
                        .await
                        .unwrap();
                    killed += 1;
                }
                assert!(
                    killed > 0,
                    "no connection of prefix {prefix} in CLIENT LIST"
                );
            }
            Cutter::Proxy(p) => p.cut(),
        }
    }
}

/// A TCP proxy to `upstream` that can drop every connection it carries,
/// and refuse new ones for a while (an outage of one replica's bus).
pub struct Proxy {
    pub addr: SocketAddr,
    generation: Arc<parking_lot::Mutex<CancellationToken>>,
    stop: CancellationToken,
    held: Arc<std::sync::atomic::AtomicBool>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let generation = Arc::new(parking_lot::Mutex::new(CancellationToken::new()));
        let stop = CancellationToken::new();
        let held = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (g, s, h) = (generation.clone(), stop.clone(), held.clone());
        tokio::spawn(async move {
            loop {
                let (mut inbound, _) = tokio::select! {
                    _ = s.cancelled() => return,
                    r = listener.accept() => match r { Ok(x) => x, Err(_) => return },
                };
                if h.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let cut = g.lock().clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = cut.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        Self {
            addr,
            generation,
            stop,
            held,
        }
    }

    /// Drops every connection and refuses new ones until [`Self::release`].
    pub fn hold(&self) {
        self.held.store(true, std::sync::atomic::Ordering::SeqCst);
        self.cut();
    }

    pub fn release(&self) {
        self.held.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Drops every connection open now; new ones are carried again.
    pub fn cut(&self) {
        let mut g = self.generation.lock();
        g.cancel();
        *g = CancellationToken::new();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.generation.lock().cancel();
    }
}

/// Events published through replica A one by one (retried on `503`, ids
/// making retries safe) while replica B's bus connections are killed twice
/// mid-stream: B's subscriber gets every event once, in order.
pub async fn killed_connection_loses_nothing(bus: &Bus, cutter: &Cutter) {
    let (a, b) = (bus.replica().await, bus.replica().await);
    let mut c = b.subscriber("1", "subscription { counter }").await;
    let total = 300;
    let publisher = {
        let webhook = a.webhook;
        tokio::spawn(async move {
            for i in 0..total {
                let body = json!({"topic": "counter", "id": format!("k{i}"), "payload": i});
                publish_retrying(webhook, &body).await;
            }
        })
    };
    for i in 0..total {
        if i == 50 || i == 180 {
            cutter.cut().await;
        }
        assert_eq!(c.recv().await["payload"]["data"]["counter"], i);
    }
    publisher.await.unwrap();
    assert_eq!(drain(&mut c).await, Vec::<Value>::new());
}

/// A bus server of our own on a free port, to stop and start again.
pub struct PrivateServer {
    server: Server,
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateServer {
    pub fn start(kind: Kind) -> Self {
        let server = match kind {
            Kind::Redis => Server::Redis,
            Kind::Nats => Server::Nats,
            Kind::Memory => panic!("the memory bus has no server"),
        };
        let mut s = Self {
            server,
            port: support::free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        s.resume();
        s
    }

    pub fn url(&self) -> String {
        self.server.url(self.port)
    }

    /// Starts the server (again, on the same port and data directory).
    pub fn resume(&mut self) {
        let child = Command::new(self.server.program())
            .args(
                self.server
                    .args(self.port, &self.dir.path().to_string_lossy()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        servers::wait_listening(self.port, "private server did not start");
    }

    /// Hangs the server (SIGSTOP of its own pid): connections stay open,
    /// nothing is answered.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server run again (SIGCONT).
    pub fn unpause(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("server running").id();
        let status = Command::new("kill")
            .arg(sig)
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill {sig} {pid}");
    }

    /// Kills the server.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Two replicas on `server`, a subscriber of `counter` on B, and proof that
/// an event posted to A reaches it. The bus goes with them: dropping it
/// removes the test's keys.
async fn delivering_through(
    kind: Kind,
    server: &PrivateServer,
) -> (Bus, TestSubcar, TestSubcar, Client) {
    let bus = Bus::new(kind, &server.url());
    let (a, b) = (bus.replica().await, bus.replica().await);
    let mut c = b.subscriber("1", "subscription { counter }").await;
    publish(
        a.webhook,
        json!({"topic": "counter", "id": "before", "payload": 1}),
    )
    .await;
    assert_eq!(c.recv().await["payload"]["data"]["counter"], 1);
    (bus, a, b, c)
}

/// The bus goes away: `/readyz` says so, the webhook answers `503` with
/// `Retry-After` and nothing of the refused batch is ever delivered; the
/// subscriber stays connected and gets events again once the bus is back.
pub async fn bus_down_then_back(kind: Kind) {
    let mut server = PrivateServer::start(kind);
    let (_bus, a, b, mut c) = delivering_through(kind, &server).await;
    wait_metric(&a, "subcar_bus_up 1").await;

    server.stop();
    wait_bus(&a, false).await;
    wait_bus(&b, false).await;
    let refused = json!([
        {"topic": "counter", "id": "r1", "payload": 100},
        {"topic": "counter", "id": "r2", "payload": 101},
    ]);
    let (status, headers, json) =
        post(a.webhook, refused.to_string(), "application/json", &[]).await;
    assert_eq!(status, 503, "{json}");
    assert_eq!(json["error"]["code"], "BUS_UNAVAILABLE");
    assert_eq!(headers["retry-after"], "1");
    wait_metric(&a, "subcar_bus_up 0").await;

    server.resume();
    wait_bus(&a, true).await;
    wait_bus(&b, true).await;
    publish(
        a.webhook,
        json!({"topic": "counter", "id": "after", "payload": 2}),
    )
    .await;
    // The same subscriber, still connected; the refused batch never shows.
    assert_eq!(c.recv().await["payload"]["data"]["counter"], 2);
    wait_metric(&a, "subcar_bus_up 1").await;
    assert_eq!(drain(&mut c).await, Vec::<Value>::new());
}

/// The bus hangs (SIGSTOP of a private server): the webhook answers `503`
/// within the publish deadline, `/readyz` is `503` on every replica; after
/// SIGCONT none of the refused events is ever delivered (a marker posted
/// afterwards is what the subscriber gets), their ids were not marked seen
/// (the retries are delivered), `/readyz` is `200` again and the subscriber
/// connected before the hang receives events.
pub async fn bus_hang_is_503_and_never_delivered(kind: Kind) {
    let server = PrivateServer::start(kind);
    let (_bus, a, b, mut c) = delivering_through(kind, &server).await;

    server.pause();
    let single = json!({"topic": "counter", "id": "h1", "payload": 100}).to_string();
    let batch = json!([
        {"topic": "counter", "payload": 101},
        {"topic": "counter", "id": "h3", "payload": 102},
    ])
    .to_string();
    let bare = json!({"topic": "counter", "payload": 103}).to_string();
    let started = std::time::Instant::now();
    let (r1, r2, r3) = tokio::join!(
        post(a.webhook, single, "application/json", &[]),
        post_with_id(a.webhook, batch, "hb"),
        post(a.webhook, bare, "application/json", &[]),
    );
    let took = started.elapsed();
    for (status, headers, json) in [r1, r2, r3] {
        assert_eq!(status, 503, "{json}");
        assert_eq!(json["error"]["code"], "BUS_UNAVAILABLE");
        assert_eq!(headers["retry-after"], "1");
    }
    // The publish deadline (2 s) plus its grace (1 s), and some slack.
    assert!(took < Duration::from_secs(5), "503 took {took:?}");
    wait_bus(&a, false).await;
    wait_bus(&b, false).await;

    server.unpause();
    wait_bus(&a, true).await;
    wait_bus(&b, true).await;
    // Whatever the server had buffered has run by now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Nothing was marked seen: the retries (other payloads, to tell them
    // from a late write) are accepted as new and delivered.
    let ack = publish_retrying(
        a.webhook,
        &json!({"topic": "counter", "id": "h1", "payload": 200}),
    )
    .await;
    assert_eq!(ack, json!({"accepted": 1, "duplicates": 0}));
    let retry = json!([
        {"topic": "counter", "payload": 201},
        {"topic": "counter", "id": "h3", "payload": 202},
    ]);
    let (status, _, json) = post_with_id(a.webhook, retry.to_string(), "hb").await;
    assert_eq!(status, 202, "{json}");
    assert_eq!(json, json!({"accepted": 2, "duplicates": 0}));
    publish(a.webhook, json!({"topic": "counter", "payload": 2})).await;
    for want in [200, 201, 202, 2] {
        assert_eq!(c.recv().await["payload"]["data"]["counter"], want);
    }
    assert_eq!(drain(&mut c).await, Vec::<Value>::new());
    // And the request id is recorded now that its publish is certain.
    let (status, _, json) = post_with_id(b.webhook, retry.to_string(), "hb").await;
    assert_eq!(status, 202, "{json}");
    assert_eq!(json, json!({"accepted": 2, "duplicates": 2}));
    publish(b.webhook, json!({"topic": "counter", "payload": 3})).await;
    assert_eq!(c.recv().await["payload"]["data"]["counter"], 3);
}

/// Waits until `/metrics` has `line` (the sampler copies the bus state
/// into the metrics once a second).
async fn wait_metric(rt: &TestSubcar, line: &str) {
    tokio::time::timeout(PATIENCE, async {
        while !support::metrics(rt.admin).await.lines().any(|l| l == line) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("/metrics never had {line:?}"));
}

fn cursor_of(m: &Value) -> String {
    m["payload"]["extensions"]["cursor"]
        .as_str()
        .unwrap_or_else(|| panic!("no cursor in {m}"))
        .to_owned()
}

/// A resuming client leaves replica A, events go on meanwhile (through B),
/// and it comes back to B with its last cursor while events keep coming:
/// the missed matching ones first, then live ones, each once, in order.
/// With the memory bus, A and B are the same replica.
pub async fn resume_on_another_replica(bus: &Bus) {
    let a = bus.replica().await;
    let b_own = match bus.kind {
        Kind::Memory => None,
        _ => Some(bus.replica().await),
    };
    let b = b_own.as_ref().unwrap_or(&a);
    let query = r#"subscription { item(kind: "odd") { n } }"#;
    let item =
        |i: usize| json!({"topic": "item", "id": format!("i{i}"), "payload": payload("item", i)});
    let mut c = Client::ready(a.addr).await;
    subscribe_resume(&mut c, "r", query, None).await;
    wait_subscriptions(&a, 1).await;
    publish(a.webhook, Value::Array((0..10).map(item).collect())).await;
    let mut last = String::new();
    for i in (1..10).step_by(2) {
        let m = c.recv().await;
        assert_eq!(m["payload"]["data"]["item"]["n"], i, "{m}");
        last = cursor_of(&m);
    }
    c.close().await;
    wait_subscriptions(&a, 0).await;
    // The same subscription without resume, in the same group as the
    // resuming one will be: plain frames, no cursor.
    let mut plain = Client::ready(b.addr).await;
    plain.subscribe("p", query).await;
    wait_subscriptions(b, 1).await;
    // Missed while away, some through each replica.
    publish(b.webhook, Value::Array((10..20).map(item).collect())).await;
    publish(a.webhook, Value::Array((20..30).map(item).collect())).await;
    // Live while it comes back.
    let live = {
        let webhook = b.webhook;
        tokio::spawn(async move {
            for i in 30..90 {
                publish(webhook, item(i)).await;
            }
        })
    };
    let mut c = Client::ready(b.addr).await;
    subscribe_resume(&mut c, "r", query, Some(&last)).await;
    let mut cursors = Vec::new();
    for i in (11..90).step_by(2) {
        let m = c.recv().await;
        assert_eq!(m["type"], "next", "{m}");
        assert_eq!(m["payload"]["data"]["item"]["n"], i, "{m}");
        cursors.push(cursor_of(&m));
    }
    live.await.unwrap();
    assert_eq!(drain(&mut c).await, Vec::<Value>::new());
    for i in (11..90).step_by(2) {
        let m = plain.recv().await;
        assert_eq!(
            m,
            json!({"id": "p", "type": "next", "payload": {"data": {"item": {"n": i}}}})
        );
    }
    assert_eq!(drain(&mut plain).await, Vec::<Value>::new());
    let mut unique = cursors.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), cursors.len(), "cursors are distinct");
}

/// A cursor whose event left the history: an `error` with
/// `extensions.code = "CURSOR_EXPIRED"`, and nothing else for that id; a
/// bad cursor is an `INVALID_CURSOR` error.
pub async fn expired_cursor_is_refused(bus: &Bus, events: usize) {
    let rt = bus.replica().await;
    let mut c = Client::ready(rt.addr).await;
    subscribe_resume(&mut c, "r", "subscription { counter }", None).await;
    wait_subscriptions(&rt, 1).await;
    publish(rt.webhook, json!({"topic": "counter", "payload": 0})).await;
    let first = cursor_of(&c.recv().await);
    c.close().await;
    wait_subscriptions(&rt, 0).await;
    // Only a probe listens while the history moves past the cursor.
    push_history_on(&rt, 1, events).await;
    let mut d = Client::ready(rt.addr).await;
    subscribe_resume(&mut d, "late", "subscription { counter }", Some(&first)).await;
    ended_with(&d.recv().await, "late", "CURSOR_EXPIRED");
    subscribe_resume(&mut d, "bad", "subscription { counter }", Some("yesterday")).await;
    ended_with(&d.recv().await, "bad", "INVALID_CURSOR");
    // Neither left a subscription behind; a fresh one works.
    wait_subscriptions(&rt, 0).await;
    subscribe_resume(&mut d, "new", "subscription { counter }", None).await;
    wait_subscriptions(&rt, 1).await;
    publish(rt.webhook, json!({"topic": "counter", "payload": -1})).await;
    let m = d.recv().await;
    assert_eq!(
        (m["id"].clone(), m["payload"]["data"]["counter"].clone()),
        (json!("new"), json!(-1))
    );
    assert_eq!(drain(&mut d).await, Vec::<Value>::new());
}

/// Pushes counter events `from..events` through a replica, with only a
/// probe listening, so that a history of 5 moves past what came before.
/// Once the probe has a marker published last, the dispatcher has taken
/// everything published so far from the bus, so a fresh subscription can
/// only get newer events (under load, the tail of the batch could
/// otherwise reach it).
async fn push_history_on(rt: &TestSubcar, from: usize, events: usize) {
    let mut probe = rt.subscriber("probe", "subscription { counter }").await;
    publish_counters(rt.webhook, from..events).await;
    // With a history this short the replica's reader may itself lose part
    // of a batch (the backend trimmed it first): the probe then ends with
    // EVENTS_LOST, and a new probe waits for a new marker.
    for marker in events.. {
        publish(rt.webhook, json!({"topic": "counter", "payload": marker})).await;
        let m = loop {
            let m = probe.recv().await;
            if m["type"] == "error" || m["payload"]["data"]["counter"] == json!(marker) {
                break m;
            }
        };
        if m["type"] == "next" {
            break;
        }
        assert_eq!(m["payload"][0]["extensions"]["code"], "EVENTS_LOST", "{m}");
        probe.close().await;
        wait_subscriptions(rt, 0).await;
        probe = rt.subscriber("probe", "subscription { counter }").await;
    }
    probe.close().await;
    wait_subscriptions(rt, 0).await;
}

/// Replay from a time (`extensions.resume.since`) on a history of 5: the
/// events published at or after it, then live ones, each once, with
/// cursors; a time in the future waits for live ones; once the history was
/// trimmed past a time, `CURSOR_EXPIRED` with `extensions.oldest`; a bad
/// time is `INVALID_CURSOR`.
pub async fn replay_since(bus: &Bus, events: usize) {
    let rt = bus.replica().await;
    let query = "subscription { counter }";
    let counter = |m: &Value| m["payload"]["data"]["counter"].clone();
    let t0 = rfc3339(std::time::SystemTime::now() - Duration::from_secs(1));
    publish(
        rt.webhook,
        json!([{"topic": "counter", "payload": 0}, {"topic": "counter", "payload": 1}]),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t1 = rfc3339(std::time::SystemTime::now());
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Once a live probe has 3, the dispatcher is past every event published
    // so far: none of them can reach the subscriptions below live.
    let mut probe = rt.subscriber("probe", query).await;
    publish(
        rt.webhook,
        json!([{"topic": "counter", "payload": 2}, {"topic": "counter", "payload": 3}]),
    )
    .await;
    while counter(&probe.recv().await) != json!(3) {}
    probe.close().await;
    wait_subscriptions(&rt, 0).await;
    let mut all = Client::ready(rt.addr).await;
    subscribe_since(&mut all, "all", query, &t0).await;
    let mut late = Client::ready(rt.addr).await;
    subscribe_since(&mut late, "late", query, &t1).await;
    let mut future = Client::ready(rt.addr).await;
    let tomorrow = rfc3339(std::time::SystemTime::now() + Duration::from_secs(86_400));
    subscribe_since(&mut future, "future", query, &tomorrow).await;
    let mut cursors = Vec::new();
    for i in 0..4 {
        let m = all.recv().await;
        assert_eq!(
            (m["id"].clone(), counter(&m)),
            (json!("all"), json!(i)),
            "{m}"
        );
        cursors.push(cursor_of(&m));
    }
    for (i, cursor) in cursors.iter().enumerate().skip(2) {
        let m = late.recv().await;
        assert_eq!(counter(&m), i, "{m}");
        assert_eq!(&cursor_of(&m), cursor, "the same event, the same cursor");
    }
    wait_subscriptions(&rt, 3).await;
    publish(rt.webhook, json!({"topic": "counter", "payload": 4})).await;
    for c in [&mut all, &mut late, &mut future] {
        let m = c.recv().await;
        assert_eq!(counter(&m), 4, "{m}");
        assert!(!cursors.contains(&cursor_of(&m)), "{m}");
        assert_eq!(drain(c).await, Vec::<Value>::new());
    }
    for c in [all, late, future] {
        c.close().await;
    }
    wait_subscriptions(&rt, 0).await;
    push_history_on(&rt, 5, events).await;
    let mut d = Client::ready(rt.addr).await;
    subscribe_since(&mut d, "expired", query, &t1).await;
    let m = d.recv().await;
    ended_with(&m, "expired", "CURSOR_EXPIRED");
    let error = &m["payload"][0];
    let oldest = error["extensions"]["oldest"]
        .as_str()
        .unwrap_or_else(|| panic!("{m}"));
    let oldest_at = humantime::parse_rfc3339(oldest).unwrap();
    assert!(oldest_at > humantime::parse_rfc3339(&t1).unwrap(), "{m}");
    assert!(error["message"].as_str().unwrap().contains(oldest), "{m}");
    subscribe_since(&mut d, "bad", query, "yesterday").await;
    ended_with(&d.recv().await, "bad", "INVALID_CURSOR");
    wait_subscriptions(&rt, 0).await;
}

/// Replica B loses its bus (a proxy that refuses it) while more events
/// than the history holds are published through A: when B is back, each
/// of its subscriptions ends with `EVENTS_LOST` carrying the cursor of the
/// last event it got (a resuming socket, a plain one, an SSE stream), and a
/// new subscription receives events again.
pub async fn outage_past_the_history_ends_with_events_lost(kind: Kind, url: &str, events: usize) {
    let host = url.split("://").nth(1).unwrap().trim_end_matches('/');
    let proxy = Proxy::start(host.parse().unwrap()).await;
    let scheme = url.split("://").next().unwrap();
    let bus = Bus::new(kind, url).history(5);
    let a = bus.replica().await;
    let b = bus.replica_via(&format!("{scheme}://{}", proxy.addr)).await;
    let mut resuming = Client::ready(b.addr).await;
    subscribe_resume(&mut resuming, "r", "subscription { counter }", None).await;
    wait_subscriptions(&b, 1).await;
    let mut plain = b.subscriber("p", "subscription { counter }").await;
    let mut sse = support::stream::open(
        reqwest::Method::POST,
        &b.graphql_url(),
        &[("accept", "text/event-stream")],
        Some(&json!({"query": "subscription { counter }"})),
    )
    .await;
    wait_subscriptions(&b, 3).await;
    publish(a.webhook, json!({"topic": "counter", "payload": 0})).await;
    let last = cursor_of(&resuming.recv().await);
    assert_eq!(plain.recv().await["payload"]["data"]["counter"], 0);
    let first = sse.event().await.unwrap();
    assert_eq!(first.id(), Some(last.as_str()), "{first:?}");

    proxy.hold();
    wait_bus(&b, false).await;
    publish_counters(a.webhook, 1..events).await;
    proxy.release();
    wait_bus(&b, true).await;

    for (c, id) in [(&mut resuming, "r"), (&mut plain, "p")] {
        let m = c.recv().await;
        assert_eq!((&m["type"], &m["id"]), (&json!("error"), &json!(id)), "{m}");
        let error = &m["payload"][0];
        assert_eq!(error["extensions"]["code"], "EVENTS_LOST", "{m}");
        assert_eq!(error["extensions"]["cursor"], json!(last), "{m}");
    }
    let m = sse.event().await.unwrap();
    assert_eq!(m.name(), "next");
    let error = &m.json()["errors"][0];
    assert_eq!(error["extensions"]["code"], "EVENTS_LOST", "{m:?}");
    assert_eq!(error["extensions"]["cursor"], json!(last), "{m:?}");
    assert_eq!(sse.event().await.unwrap().name(), "complete");
    wait_metric(&b, "subcar_subscriptions_events_lost_total 3").await;

    wait_subscriptions(&b, 0).await;
    let mut fresh = b.subscriber("new", "subscription { counter }").await;
    publish(a.webhook, json!({"topic": "counter", "payload": -1})).await;
    assert_eq!(fresh.recv().await["payload"]["data"]["counter"], -1);
}

/// The scenarios every shared bus runs, as the including file's tests:
/// `$kind` at `$url()`, and `$expiring` events that push the first out of a
/// history of 5 (the backends trim differently). The connection-drop test
/// stays in each file: how a connection is cut depends on the backend.
#[allow(unused_macros)]
macro_rules! shared_bus_tests {
    ($kind:expr, $url:path, expiring = $expiring:expr) => {
        bus_support::shared_bus_tests!(@tests
            events_reach_every_replica_once_in_order =>
                bus_support::fan_out_across_three_replicas($kind, $url()),
            a_refused_request_marks_no_id_on_any_replica =>
                bus_support::refused_batch_marks_no_id($kind, $url()),
            bus_outage_is_503_and_delivery_resumes => bus_support::bus_down_then_back($kind),
            a_webhook_id_is_deduplicated_across_replicas =>
                bus_support::webhook_id_replay_across_replicas($kind, $url()),
            bus_hang_is_503_and_the_refused_events_are_never_delivered =>
                bus_support::bus_hang_is_503_and_never_delivered($kind),
            resume_on_another_replica_gets_every_missed_event_once =>
                bus_support::resume_on_another_replica(&bus_support::Bus::new($kind, $url())),
            expired_cursor_is_refused => bus_support::expired_cursor_is_refused(
                &bus_support::Bus::new($kind, $url()).history(5),
                $expiring,
            ),
            replay_since_a_time => bus_support::replay_since(
                &bus_support::Bus::new($kind, $url()).history(5),
                $expiring,
            ),
            a_bus_outage_past_the_history_ends_subscriptions_with_events_lost =>
                bus_support::outage_past_the_history_ends_with_events_lost($kind, $url(), $expiring),
        );
    };
    (@tests $($name:ident => $scenario:expr),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $scenario.await;
            }
        )*
    };
}
#[allow(unused_imports)]
pub(crate) use shared_bus_tests;
