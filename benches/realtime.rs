//! Realtime load generator: subcar (a release child process) against a bare
//! tokio-tungstenite broadcast of pre-serialised frames (a child process of
//! this binary), on loopback, with the clients in this process.
//!
//! `cargo bench --bench realtime` measures:
//! (a) one event to 10,000 subscribers: time until the last one has it, p50/p99;
//! (b) sustained deliveries/s to 1,000 subscribers, batched and unbatched;
//! (c) resident memory per idle connection (one subscription each) at 10,000;
//! (d) webhook → subscriber latency p50/p99 at 1,000 events/s to 100 subscribers.
//! (e) connection setup rate: connections/s from TCP connect to `connection_ack`.
//! (f) `REALTIME_BENCH_MANY=N` runs only this: N idle subscribers on one
//! subcar ([`many`]), resident memory, time to connect them all, and
//! events delivered to all of them.
//! `REALTIME_BENCH_SCALE=0.1` shrinks every count for a quick run.
//! `REALTIME_BENCH_SUBCAR=PATH` runs that subcar binary instead of this
//! tree's (`benches/abba.sh` compares two commits that way).
//! `REALTIME_BENCH_AUTH=1` compares subcar with `auth.mode = "jwt"` and every
//! rate limit on (set high enough not to refuse the load, so only their
//! cost shows) against subcar without them, instead of the bare broadcast,
//! each run twice in ABBA order and averaged.
//! Clients then send an HS256 token in `connection_init.payload`.
//!
//! Then, transports: (a)-(d) again for subcar alone, once per client
//! transport, each on a fresh subcar process (so that (c) starts from the
//! same heap) and in alternating order over `REALTIME_TRANSPORT_ROUNDS`
//! rounds (default 3), printed as medians with ratios to WebSocket.
//! `REALTIME_TRANSPORTS=ws,sse,multipart` picks them (the default; none
//! in auth mode, `none` for none); `REALTIME_BENCH_BASELINE=0` skips the
//! comparison with the bare broadcast. SSE is the distinct-connections
//! `GET`, multipart Apollo's `POST`, both HTTP/1.1 ([`streams`]).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

#[path = "realtime/many.rs"]
mod many;
#[path = "realtime/streams.rs"]
mod streams;
#[path = "realtime/transports.rs"]
mod transports;

const JWT_SECRET: &str = "realtime-bench-secret-0123456789";

/// Whether this run compares subcar with and without auth and rate limits.
fn auth_mode() -> bool {
    std::env::var("REALTIME_BENCH_AUTH").is_ok_and(|v| v == "1")
}

/// The `connection_init` every client sends: with a token in auth mode
/// (both subcars get it, so the messages are the same size).
fn init_message() -> &'static str {
    static INIT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    INIT.get_or_init(|| {
        if !auth_mode() {
            return r#"{"type":"connection_init"}"#.to_owned();
        }
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600;
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &serde_json::json!({"sub": "bench", "exp": exp}),
            &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
        )
        .unwrap();
        serde_json::json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}})
            .to_string()
    })
}

/// How a subscriber speaks to subcar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// graphql-transport-ws (the bare broadcast's subscribers speak
    /// WebSocket too, without GraphQL).
    Ws,
    Sse,
    Multipart,
}

impl Transport {
    const ALL: [Self; 3] = [Self::Ws, Self::Sse, Self::Multipart];

    fn name(self) -> &'static str {
        match self {
            Self::Ws => "ws",
            Self::Sse => "sse",
            Self::Multipart => "multipart",
        }
    }

    /// Its `transport` label on `subcar_connections`.
    fn label(self) -> &'static str {
        match self {
            Self::Ws => "graphql_transport_ws",
            Self::Sse => "sse",
            Self::Multipart => "multipart",
        }
    }

    fn framing(self) -> Option<streams::Framing> {
        match self {
            Self::Ws => None,
            Self::Sse => Some(streams::Framing::Sse),
            Self::Multipart => Some(streams::Framing::Multipart),
        }
    }
}

/// `REALTIME_TRANSPORTS`: the transports to compare, in order.
fn transports() -> Vec<Transport> {
    let list = match std::env::var("REALTIME_TRANSPORTS") {
        Ok(list) => list,
        Err(_) if auth_mode() => return Vec::new(),
        Err(_) => return Transport::ALL.to_vec(),
    };
    list.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty() && *t != "none")
        .map(|t| {
            *Transport::ALL
                .iter()
                .find(|x| x.name() == t)
                .unwrap_or_else(|| {
                    panic!("REALTIME_TRANSPORTS: unknown {t:?} (ws, sse, multipart)")
                })
        })
        .collect()
}

const SCHEMA: &str = "type Query { hello: String }\ntype Subscription { counter: Int }\n";

fn scale(n: usize) -> usize {
    let s: f64 = std::env::var("REALTIME_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    ((n as f64 * s) as usize).max(1)
}

fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

/// Per-phase receive bookkeeping shared by every client task.
struct Phase {
    origin: Instant,
    count: Box<[AtomicU32]>,
    last_ns: Box<[AtomicU64]>,
    sent_ns: Box<[AtomicU64]>,
    received: Box<[AtomicU64]>,
    /// Clients whose socket the server closed during the phase.
    closed: AtomicU32,
    /// One vector per client: recorded as messages arrive, uncontended.
    latencies: Box<[Mutex<Vec<u64>>]>,
    record_latency: bool,
}

impl Phase {
    fn new(events: usize, clients: usize, record_latency: bool) -> Arc<Self> {
        Arc::new(Self {
            origin: Instant::now(),
            count: (0..events).map(|_| AtomicU32::new(0)).collect(),
            last_ns: (0..events).map(|_| AtomicU64::new(0)).collect(),
            sent_ns: (0..events).map(|_| AtomicU64::new(0)).collect(),
            received: (0..clients).map(|_| AtomicU64::new(0)).collect(),
            closed: AtomicU32::new(0),
            latencies: (0..clients).map(|_| Mutex::new(Vec::new())).collect(),
            record_latency,
        })
    }
    fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }
    /// What the slowest client received.
    fn min_received(&self) -> u64 {
        self.received
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0)
    }
    /// Counts event `seq` received by `client` at `now`; `false` if it
    /// is past the phase's events.
    #[inline]
    fn record(&self, client: usize, seq: usize, now: u64) -> bool {
        if seq >= self.count.len() {
            return false;
        }
        self.received[client].fetch_add(1, Ordering::Relaxed);
        self.count[seq].fetch_add(1, Ordering::Relaxed);
        self.last_ns[seq].fetch_max(now, Ordering::Relaxed);
        if self.record_latency {
            let sent = self.sent_ns[seq].load(Ordering::Acquire);
            self.latencies[client].lock().push(now.saturating_sub(sent));
        }
        true
    }
    fn total(&self) -> u64 {
        self.received
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
}

/// The event number at the end of `…{"counter":N}}}`.
fn seq_of(frame: &[u8]) -> Option<usize> {
    let end = frame.len().checked_sub(3)?;
    let start = frame[..end].iter().rposition(|b| !b.is_ascii_digit())? + 1;
    std::str::from_utf8(&frame[start..end]).ok()?.parse().ok()
}

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn connect(addr: SocketAddr, graphql: bool) -> Ws {
    subscribed(handshake(addr, graphql).await, graphql).await
}

/// Starts the one subscription (subcar) or asks to be a subscriber (bare).
async fn subscribed(mut ws: Ws, graphql: bool) -> Ws {
    if graphql {
        ws.send(Message::text(
            r#"{"id":"1","type":"subscribe","payload":{"query":"subscription { counter }"}}"#,
        ))
        .await
        .unwrap();
        // Messages are handled in order: the pong means the subscription is live.
        ws.send(Message::text(r#"{"type":"ping"}"#)).await.unwrap();
        expect_type(&mut ws, "pong").await;
    } else {
        ws.send(Message::text("subscriber")).await.unwrap();
        expect_type(&mut ws, "ready").await;
    }
    ws
}

/// TCP connect, WebSocket handshake and, for subcar, `connection_init`
/// answered by `connection_ack`.
async fn handshake(addr: SocketAddr, graphql: bool) -> Ws {
    upgrade(
        TcpStream::connect(addr).await.expect("connect"),
        addr,
        graphql,
    )
    .await
}

/// [`handshake`] on a connected socket.
async fn upgrade(stream: TcpStream, addr: SocketAddr, graphql: bool) -> Ws {
    stream.set_nodelay(true).unwrap();
    let mut req = format!("ws://{addr}/graphql")
        .into_client_request()
        .unwrap();
    if graphql {
        req.headers_mut().insert(
            "sec-websocket-protocol",
            "graphql-transport-ws".parse().unwrap(),
        );
    }
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(req, stream, Some(client_config()))
            .await
            .expect("handshake");
    if graphql {
        ws.send(Message::text(init_message())).await.unwrap();
        expect_type(&mut ws, "connection_ack").await;
    }
    ws
}

async fn expect_type(ws: &mut Ws, ty: &str) {
    while let Some(m) = ws.next().await {
        if let Message::Text(t) = m.unwrap() {
            assert!(t.contains(ty), "expected {ty}, got {t}");
            return;
        }
    }
    panic!("closed while waiting for {ty}");
}

/// A subscriber whose subscription is live: a WebSocket, or an HTTP
/// stream with its decoder (which has read the response head).
enum Client {
    Ws(Ws),
    Stream(TcpStream, streams::Decoder),
}

/// Opens `n` subscribers (bounded concurrency) and returns their sockets.
async fn open(target: &Target, transport: Transport, n: usize) -> Vec<Client> {
    let (addr, graphql) = (target.addr(), target.graphql());
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let sem = sem.clone();
            tokio::spawn(async move {
                let _p = sem.acquire().await.unwrap();
                match transport.framing() {
                    None => Client::Ws(connect(addr, graphql).await),
                    Some(framing) => {
                        let (stream, decoder) = streams::connect(addr, framing).await;
                        Client::Stream(stream, decoder)
                    }
                }
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// Reads every subscriber socket from one plain thread with edge-triggered
/// epoll (mio), parsing WebSocket frames by hand. Ten thousand
/// tokio-tungstenite tasks would take the shared two cores from the server
/// under test; this reader costs about one `read` per wake-up (a second
/// reader thread measured slower: it competes with the server's workers).
struct Readers {
    stop: Arc<AtomicBool>,
    waker: mio::Waker,
    thread: std::thread::JoinHandle<()>,
}

const WAKE: mio::Token = mio::Token(usize::MAX);

fn read_all(clients: Vec<Client>, phase: &Arc<Phase>) -> Readers {
    let streams: Vec<(std::net::TcpStream, Option<streams::Decoder>)> = clients
        .into_iter()
        .map(|client| match client {
            Client::Ws(ws) => {
                // The handshake left nothing unread (its last message was
                // awaited), so the socket can leave tokio: keep a duplicate of
                // its descriptor and drop the tokio side.
                let fd = ws.get_ref().as_fd().try_clone_to_owned().unwrap();
                drop(ws);
                (std::net::TcpStream::from(fd), None)
            }
            // What was read past the opening block is in the decoder.
            Client::Stream(stream, decoder) => (stream.into_std().unwrap(), Some(decoder)),
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let poll = mio::Poll::new().unwrap();
    let waker = mio::Waker::new(poll.registry(), WAKE).unwrap();
    let (phase, flag) = (phase.clone(), stop.clone());
    let thread = std::thread::spawn(move || read_loop(poll, streams, &phase, &flag));
    Readers {
        stop,
        waker,
        thread,
    }
}

struct Conn {
    client: usize,
    stream: mio::net::TcpStream,
    /// The start of a frame that has not fully arrived.
    partial: Vec<u8>,
    /// An HTTP stream's reader; `None` for a WebSocket.
    http: Option<streams::Decoder>,
    done: bool,
}

fn read_loop(
    mut poll: mio::Poll,
    streams: Vec<(std::net::TcpStream, Option<streams::Decoder>)>,
    phase: &Phase,
    stop: &AtomicBool,
) {
    let mut conns: Vec<Conn> = streams
        .into_iter()
        .enumerate()
        .map(|(client, (stream, http))| {
            stream.set_nonblocking(true).unwrap();
            let mut stream = mio::net::TcpStream::from_std(stream);
            poll.registry()
                .register(&mut stream, mio::Token(client), mio::Interest::READABLE)
                .unwrap();
            Conn {
                client,
                stream,
                partial: Vec::new(),
                http,
                done: false,
            }
        })
        .collect();
    let mut events = mio::Events::with_capacity(1024);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            assert_eq!(e.kind(), std::io::ErrorKind::Interrupted, "{e}");
        }
        if stop.load(Ordering::Acquire) {
            return;
        }
        for event in events.iter() {
            let Some(conn) = conns.get_mut(event.token().0) else {
                continue;
            };
            while !conn.done {
                match conn.stream.read(&mut buf) {
                    Ok(0) => conn.close(phase),
                    Ok(n) => {
                        conn.receive(&buf[..n], phase);
                        // Edge-triggered: a short read emptied the socket,
                        // and data arriving later raises a new event.
                        if n < buf.len() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => conn.close(phase),
                }
            }
        }
    }
}

impl Conn {
    fn close(&mut self, phase: &Phase) {
        self.done = true;
        phase.closed.fetch_add(1, Ordering::Relaxed);
    }

    fn receive(&mut self, data: &[u8], phase: &Phase) {
        let now = phase.now_ns();
        if let Some(decoder) = &mut self.http {
            let (client, mut past) = (self.client, false);
            let open = decoder.feed(data, &mut |json| {
                if !past && let Some(seq) = streams::counter_of(json) {
                    past = !phase.record(client, seq, now);
                }
            });
            if past {
                self.done = true;
            } else if !open {
                self.close(phase);
            }
            return;
        }
        let mut pending = std::mem::take(&mut self.partial);
        let data = if pending.is_empty() {
            data
        } else {
            pending.extend_from_slice(data);
            &pending[..]
        };
        let mut rest = data;
        while let Some((opcode, payload, len)) = server_frame(rest) {
            rest = &rest[len..];
            match opcode {
                OP_TEXT => {
                    let Some(seq) = seq_of(payload) else { continue };
                    if !phase.record(self.client, seq, now) {
                        self.done = true;
                        return;
                    }
                }
                // The heartbeat: an empty pong, masked as client frames must be.
                OP_PING => {
                    let _ = self.stream.write_all(&[0x8A, 0x80, 0, 0, 0, 0]);
                }
                OP_CLOSE => return self.close(phase),
                _ => {}
            }
        }
        self.partial = rest.to_vec();
    }
}

const OP_TEXT: u8 = 0x1;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;

/// One complete unmasked server frame at the start of `data`: its opcode,
/// its payload and its length on the wire. Frames are never fragmented here.
fn server_frame(data: &[u8]) -> Option<(u8, &[u8], usize)> {
    let (&b0, &b1) = (data.first()?, data.get(1)?);
    let (len, header) = match b1 & 0x7f {
        126 => (
            u16::from_be_bytes(data.get(2..4)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(data.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let payload = data.get(header..header + len)?;
    Some((b0 & 0x0f, payload, header + len))
}

/// How a phase publishes events: subcar's webhook or the baseline's publisher socket.
enum Publisher {
    Webhook(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    Socket(Box<Ws>),
}

impl Publisher {
    async fn new(target: &Target) -> Self {
        match target {
            Target::Subcar { webhook, .. } => {
                let stream = TcpStream::connect(webhook).await.unwrap();
                stream.set_nodelay(true).unwrap();
                let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .unwrap();
                tokio::spawn(conn);
                Self::Webhook(send)
            }
            Target::Baseline { addr, .. } => {
                let stream = TcpStream::connect(addr).await.unwrap();
                stream.set_nodelay(true).unwrap();
                let req = format!("ws://{addr}/graphql")
                    .into_client_request()
                    .unwrap();
                let (mut ws, _) = tokio_tungstenite::client_async(req, stream).await.unwrap();
                ws.send(Message::text("publisher")).await.unwrap();
                Self::Socket(Box::new(ws))
            }
        }
    }

    /// Publishes events `seqs` in one request (subcar) or one flush (baseline).
    async fn publish(&mut self, seqs: std::ops::Range<usize>) {
        match self {
            Self::Webhook(send) => {
                let body = if seqs.len() == 1 {
                    format!(r#"{{"topic":"counter","payload":{}}}"#, seqs.start)
                } else {
                    let items: Vec<String> = seqs
                        .map(|s| format!(r#"{{"topic":"counter","payload":{s}}}"#))
                        .collect();
                    format!("[{}]", items.join(","))
                };
                let req = http::Request::post("/webhook")
                    .header("host", "bench")
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body)))
                    .unwrap();
                send.ready().await.unwrap();
                let res = send.send_request(req).await.unwrap();
                assert_eq!(res.status(), 202);
                let _ = res.into_body().collect().await;
            }
            Self::Socket(ws) => {
                for s in seqs {
                    let frame = format!(
                        r#"{{"id":"1","type":"next","payload":{{"data":{{"counter":{s}}}}}}}"#
                    );
                    ws.feed(Message::text(frame)).await.unwrap();
                }
                ws.flush().await.unwrap();
            }
        }
    }
}

enum Target {
    Subcar {
        addr: SocketAddr,
        webhook: SocketAddr,
        admin: SocketAddr,
        child: Child,
    },
    Baseline {
        addr: SocketAddr,
        child: Child,
    },
}

impl Target {
    /// subcar's admin listener (`/metrics`).
    fn admin(&self) -> Option<SocketAddr> {
        match self {
            Self::Subcar { admin, .. } => Some(*admin),
            Self::Baseline { .. } => None,
        }
    }
    fn addr(&self) -> SocketAddr {
        match self {
            Self::Subcar { addr, .. } | Self::Baseline { addr, .. } => *addr,
        }
    }
    fn graphql(&self) -> bool {
        matches!(self, Self::Subcar { .. })
    }
    fn pid(&self) -> u32 {
        match self {
            Self::Subcar { child, .. } | Self::Baseline { child, .. } => child.id(),
        }
    }
    fn name(&self) -> &'static str {
        if self.graphql() { "subcar" } else { "baseline" }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let child = match self {
            Self::Subcar { child, .. } | Self::Baseline { child, .. } => child,
        };
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn wait_listening(addr: SocketAddr) {
    for _ in 0..400 {
        if TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{addr} never listened");
}

async fn start_subcar(dir: &std::path::Path, auth: bool) -> Target {
    start_subcar_for(dir, auth, 20_000, "").await
}

/// [`start_subcar`] admitting up to `max_connections`, with `extra` TOML.
async fn start_subcar_for(
    dir: &std::path::Path,
    auth: bool,
    max_connections: usize,
    extra: &str,
) -> Target {
    let (addr, webhook, admin) = (free_addr(), free_addr(), free_addr());
    std::fs::write(dir.join("schema.graphql"), SCHEMA).unwrap();
    // Every limit on, each high enough for the load (all clients share
    // 127.0.0.1): the checks run on every upgrade, message and event.
    let auth = if auth {
        format!(
            "[auth]\nmode = \"jwt\"\n[auth.jwt]\nsecret = \"{JWT_SECRET}\"\n\
             [rate_limits]\nconnection_attempts_per_ip = 1000000\nrequests_per_ip = 1000000\n\
             messages_per_connection = 1000\nwebhook_events_per_second = 100000000\n"
        )
    } else {
        String::new()
    };
    let config = format!(
        "[server]\nlisten = \"{addr}\"\n[admin]\nlisten = \"{admin}\"\n[upstream]\nurl = \"http://127.0.0.1:9/graphql\"\n\
         [schema]\npath = \"schema.graphql\"\nintrospect_upstream = false\n[webhook]\nlisten = \"{webhook}\"\n\
         [limits]\nmax_connections = {max_connections}\n[log]\nfilter = \"error\"\n{auth}{extra}"
    );
    std::fs::write(dir.join("subcar.toml"), config).unwrap();
    // Another build of subcar (e.g. an older commit's, for a before/after
    // comparison in one sitting) can stand in for this tree's.
    let binary = std::env::var_os("REALTIME_BENCH_SUBCAR")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_subcar").into());
    let child = Command::new(binary)
        .args(["run", "--config"])
        .arg(dir.join("subcar.toml"))
        .stdout(Stdio::null())
        .spawn()
        .expect("subcar starts");
    wait_listening(addr).await;
    wait_listening(webhook).await;
    Target::Subcar {
        addr,
        webhook,
        admin,
        child,
    }
}

async fn start_baseline() -> Target {
    let addr = free_addr();
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--baseline-server", &addr.to_string()])
        .spawn()
        .expect("baseline starts");
    wait_listening(addr).await;
    Target::Baseline { addr, child }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Stops the readers and closes their sockets.
fn stop(readers: Readers) {
    readers.stop.store(true, Ordering::Release);
    readers.waker.wake().unwrap();
    readers.thread.join().unwrap();
}

#[derive(Debug, Default, Clone)]
struct Results {
    fanout_p50_ms: f64,
    fanout_p99_ms: f64,
    rss_per_conn_kib: f64,
    batched_per_s: f64,
    unbatched_per_s: f64,
    lat_p50_us: f64,
    lat_p99_us: f64,
    setup_per_s: f64,
}

impl Results {
    fn mean(&self, other: &Self) -> Self {
        let m = |a: f64, b: f64| (a + b) / 2.0;
        Self {
            fanout_p50_ms: m(self.fanout_p50_ms, other.fanout_p50_ms),
            fanout_p99_ms: m(self.fanout_p99_ms, other.fanout_p99_ms),
            rss_per_conn_kib: m(self.rss_per_conn_kib, other.rss_per_conn_kib),
            batched_per_s: m(self.batched_per_s, other.batched_per_s),
            unbatched_per_s: m(self.unbatched_per_s, other.unbatched_per_s),
            lat_p50_us: m(self.lat_p50_us, other.lat_p50_us),
            lat_p99_us: m(self.lat_p99_us, other.lat_p99_us),
            setup_per_s: m(self.setup_per_s, other.setup_per_s),
        }
    }
}

/// (e): connections/s from TCP connect to `connection_ack` (to `ready` for
/// the bare broadcast), 64 in flight.
async fn setup_rate(target: &Target, r: &mut Results) {
    let n = scale(5_000);
    let (addr, graphql) = (target.addr(), target.graphql());
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    let start = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let sem = sem.clone();
            tokio::spawn(async move {
                let _p = sem.acquire().await.unwrap();
                let mut ws = handshake(addr, graphql).await;
                if !graphql {
                    ws.send(Message::text("subscriber")).await.unwrap();
                    expect_type(&mut ws, "ready").await;
                }
                ws
            })
        })
        .collect();
    let mut sockets = Vec::with_capacity(n);
    for t in tasks {
        sockets.push(t.await.unwrap());
    }
    r.setup_per_s = n as f64 / start.elapsed().as_secs_f64();
    drop(sockets);
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// (a) and (c): 10,000 subscribers.
async fn fanout(target: &Target, transport: Transport, r: &mut Results) {
    let n = scale(10_000);
    let events = 50;
    // Warm up allocators and the dispatcher before the RSS baseline.
    let warm = open(target, transport, 10).await;
    drop(warm);
    tokio::time::sleep(Duration::from_millis(300)).await;
    if transport != Transport::Ws {
        transports::settle(target, transport).await;
    }
    let rss_before = rss_kib(target.pid());
    let sockets = open(target, transport, n).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = rss_kib(target.pid());
    r.rss_per_conn_kib = (rss_after.saturating_sub(rss_before)) as f64 / n as f64;
    let phase = Phase::new(events, n, false);
    let readers = read_all(sockets, &phase);
    let mut publisher = Publisher::new(target).await;
    let mut times = Vec::new();
    for e in 0..events {
        let t0 = phase.now_ns();
        publisher.publish(e..e + 1).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while phase.count[e].load(Ordering::Relaxed) < n as u32 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        assert_eq!(
            phase.count[e].load(Ordering::Relaxed),
            n as u32,
            "event {e} reached everyone"
        );
        times.push(phase.last_ns[e].load(Ordering::Relaxed).saturating_sub(t0));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    times.sort_unstable();
    r.fanout_p50_ms = pct(&times, 0.5) as f64 / 1e6;
    r.fanout_p99_ms = pct(&times, 0.99) as f64 / 1e6;
    stop(readers);
}

/// (b): 1,000 subscribers, events published as fast as accepted, with a
/// window so that no client can fall more than `WINDOW` events behind.
async fn throughput(target: &Target, transport: Transport, batch: usize) -> f64 {
    let n = scale(1_000);
    let total_events = scale(if batch > 1 { 20_000 } else { 5_000 });
    const WINDOW: usize = 600;
    // Concurrent publishing connections: the webhook answers each request
    // after the bus took it, so one connection measures round trips.
    const PUBLISHERS: usize = 4;
    let sockets = open(target, transport, n).await;
    let phase = Phase::new(total_events, n, false);
    let readers = read_all(sockets, &phase);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut publishers = Vec::new();
    for _ in 0..PUBLISHERS {
        let mut publisher = Publisher::new(target).await;
        let (next, phase) = (next.clone(), phase.clone());
        publishers.push(tokio::spawn(async move {
            loop {
                let from = next.fetch_add(batch, Ordering::Relaxed);
                if from >= total_events {
                    return publisher;
                }
                // Per client, not in aggregate: one lagging client must not
                // be pushed past its outbound queue (it would be closed).
                while from >= WINDOW && phase.min_received() < (from - WINDOW) as u64 {
                    assert_eq!(
                        phase.closed.load(Ordering::Relaxed),
                        0,
                        "a subscriber was disconnected"
                    );
                    tokio::time::sleep(Duration::from_micros(100)).await;
                }
                publisher
                    .publish(from..(from + batch).min(total_events))
                    .await;
            }
        }));
    }
    for p in publishers {
        drop(p.await.unwrap());
    }
    let expected = (total_events * n) as u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while phase.total() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let got = phase.total();
    stop(readers);
    got as f64 / elapsed
}

/// (d): 100 subscribers, 1,000 events/s, one event per request.
async fn latency(target: &Target, transport: Transport, r: &mut Results) {
    let n = scale(100);
    let events = scale(3_000);
    let sockets = open(target, transport, n).await;
    let phase = Phase::new(events, n, true);
    let readers = read_all(sockets, &phase);
    let mut publisher = Publisher::new(target).await;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for e in 0..events {
        tick.tick().await;
        phase.sent_ns[e].store(phase.now_ns(), Ordering::Release);
        publisher.publish(e..e + 1).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while phase.total() < (events * n) as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop(readers);
    let mut lat: Vec<u64> = phase
        .latencies
        .iter()
        .flat_map(|l| std::mem::take(&mut *l.lock()))
        .collect();
    lat.sort_unstable();
    r.lat_p50_us = pct(&lat, 0.5) as f64 / 1e3;
    r.lat_p99_us = pct(&lat, 0.99) as f64 / 1e3;
}

async fn run(target: Target) -> Results {
    let mut r = Results::default();
    eprintln!(
        "[{}] (a)+(c) fan-out to {} subscribers",
        target.name(),
        scale(10_000)
    );
    fanout(&target, Transport::Ws, &mut r).await;
    eprintln!(
        "[{}] (b) sustained throughput to {} subscribers",
        target.name(),
        scale(1_000)
    );
    r.batched_per_s = throughput(&target, Transport::Ws, 100).await;
    r.unbatched_per_s = throughput(&target, Transport::Ws, 1).await;
    eprintln!(
        "[{}] (d) latency at 1,000 events/s to {} subscribers",
        target.name(),
        scale(100)
    );
    latency(&target, Transport::Ws, &mut r).await;
    eprintln!(
        "[{}] (e) connection setup rate, {} connections",
        target.name(),
        scale(5_000)
    );
    setup_rate(&target, &mut r).await;
    r
}

/// subcar against the bare broadcast (or, in auth mode, against itself
/// without auth and limits): the first table.
async fn compare_baseline(dir: &std::path::Path) {
    let auth = auth_mode();
    let (sub, base, columns) = if auth {
        // ABBA order, each metric averaged per configuration: the load
        // generator's state drifts over a run (TIME_WAIT sockets pile
        // up), which a single plain-then-auth pass would charge to auth.
        let authed = tempfile::tempdir().unwrap();
        let p1 = run(start_subcar(dir, false).await).await;
        let a1 = run(start_subcar(authed.path(), true).await).await;
        let a2 = run(start_subcar(authed.path(), true).await).await;
        let p2 = run(start_subcar(dir, false).await).await;
        (
            a1.mean(&a2),
            p1.mean(&p2),
            ("subcar jwt+limits", "subcar plain"),
        )
    } else {
        let base = run(start_baseline().await).await;
        let sub = run(start_subcar(dir, false).await).await;
        (sub, base, ("subcar", "bare tungstenite"))
    };
    println!(
        "\nrealtime benchmark (loopback, load generator in-process; cores: {})",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<58} {:>17} {:>17} {:>8}",
        "metric", columns.0, columns.1, "ratio"
    );
    let row =
        |name: String, s: f64, b: f64| println!("{name:<58} {s:>17.2} {b:>17.2} {:>8.2}", s / b);
    let (a, b, d) = (scale(10_000), scale(1_000), scale(100));
    row(
        format!("(a) fan-out 1 event -> {a} subscribers, p50 ms"),
        sub.fanout_p50_ms,
        base.fanout_p50_ms,
    );
    row(
        format!("(a) fan-out 1 event -> {a} subscribers, p99 ms"),
        sub.fanout_p99_ms,
        base.fanout_p99_ms,
    );
    row(
        format!("(b) deliveries/s, {b} subscribers, batches of 100"),
        sub.batched_per_s,
        base.batched_per_s,
    );
    row(
        format!("(b) deliveries/s, {b} subscribers, one event per publish"),
        sub.unbatched_per_s,
        base.unbatched_per_s,
    );
    row(
        format!("(c) RSS per idle connection at {a}, KiB"),
        sub.rss_per_conn_kib,
        base.rss_per_conn_kib,
    );
    row(
        format!("(d) latency p50 us (1k events/s, {d} subscribers)"),
        sub.lat_p50_us,
        base.lat_p50_us,
    );
    row(
        format!("(d) latency p99 us (1k events/s, {d} subscribers)"),
        sub.lat_p99_us,
        base.lat_p99_us,
    );
    row(
        format!("(e) connections/s to ack, {} connections", scale(5_000)),
        sub.setup_per_s,
        base.setup_per_s,
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--baseline-server") {
        return baseline::serve(args[i + 1].parse().unwrap());
    }
    if args.iter().any(|a| a == "--self-test") {
        return streams::self_test();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        if let Some(n) = many::requested() {
            return many::run(dir.path(), n).await;
        }
        if std::env::var("REALTIME_BENCH_BASELINE").map_or(true, |v| v != "0") {
            compare_baseline(dir.path()).await;
        }
        let transports = transports();
        if !transports.is_empty() {
            streams::self_test();
            transports::compare(dir.path(), &transports).await;
        }
    });
}

/// The bare broadcast: pre-serialised frames from one publisher socket to
/// every subscriber socket, batched per flush, same buffer sizes as subcar.
mod baseline {
    use super::*;
    use tokio::sync::broadcast;

    pub fn serve(addr: SocketAddr) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = TcpListener::bind(addr).await.unwrap();
            let (tx, _) = broadcast::channel::<Utf8Bytes>(1 << 16);
            let config = subcar::transport::protocol::websocket_config(64 * 1024);
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                stream.set_nodelay(true).unwrap();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
                        return;
                    };
                    let role = match ws.next().await {
                        Some(Ok(Message::Text(t))) => t,
                        _ => return,
                    };
                    if role.as_str() == "publisher" {
                        while let Some(Ok(Message::Text(t))) = ws.next().await {
                            let _ = tx.send(t);
                        }
                        return;
                    }
                    let mut rx = tx.subscribe();
                    if ws.send(Message::text(r#"{"type":"ready"}"#)).await.is_err() {
                        return;
                    }
                    loop {
                        tokio::select! {
                            m = rx.recv() => {
                                let Ok(first) = m else { return };
                                if ws.feed(Message::Text(first)).await.is_err() { return; }
                                for _ in 0..512 {
                                    match rx.try_recv() {
                                        Ok(f) => if ws.feed(Message::Text(f)).await.is_err() { return },
                                        Err(_) => break,
                                    }
                                }
                                if ws.flush().await.is_err() { return; }
                            }
                            m = ws.next() => if !matches!(m, Some(Ok(_))) { return },
                        }
                    }
                });
            }
        });
    }
}
