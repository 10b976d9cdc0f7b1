//! A fixed workload for instruction counts, run by `benches/callgrind.sh`
//! under `valgrind --tool=callgrind` (instruction counts repeat run to run
//! where wall time does not). Everything runs in this process on one thread
//! (a current-thread runtime): subcar itself ([`subcar::app::App`], memory
//! bus), a trivial GraphQL upstream, and the clients, which speak raw
//! WebSocket frames on loopback sockets and only count them, so that the
//! clients' own instructions stay small beside subcar's.
//!
//! Phases, each between callgrind client requests that zero the counters
//! before and dump them after (setup is not counted):
//! - `dispatch`: `INSTR_EVENTS` events (default 1,000) published one at a
//!   time into the bus, each delivered to `INSTR_SUBSCRIBERS` (default
//!   1,000) sockets before the next: dispatcher, registry, outboxes,
//!   sessions and the frame write path to the socket;
//! - `direct`: `INSTR_REQUESTS` (default 1,000) queries straight to the
//!   upstream on one keep-alive connection (the reference);
//! - `proxy`: the same queries through subcar.
//!
//! The script divides each dump by the counts printed here. Outside
//! valgrind the client requests are no-ops, so
//! `cargo bench --bench instructions` runs the workload natively.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::json;
use subcar::app::App;
use subcar::bus::Event;
use subcar::config::Config;
use subcar::shutdown::Shutdown;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// The allocator the `subcar` binary runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SCHEMA: &str = "type Query { hello: String }\ntype Subscription { counter: Int }\n";
const QUERY: &str = r#"{"query":"{ hello }"}"#;
const UPSTREAM_ANSWER: &str = r#"{"data":{"hello":"world"}}"#;

/// Callgrind's client requests (valgrind.h's `VALGRIND_DO_CLIENT_REQUEST`
/// on x86_64: the magic rotations, then `xchg rbx, rbx`, with the request
/// block's address in rax). A no-op outside valgrind.
mod callgrind {
    const BASE: usize = ((b'C' as usize) << 24) | ((b'T' as usize) << 16);
    const DUMP_STATS_AT: usize = BASE + 3;
    const ZERO_STATS: usize = BASE + 1;

    fn request(args: [usize; 6]) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the sequence leaves every register as it was (the four
        // rotations add up to 128 bits); valgrind reads the block at rax and
        // writes its answer to rdx.
        unsafe {
            std::arch::asm!(
                "rol rdi, 3", "rol rdi, 13", "rol rdi, 61", "rol rdi, 51",
                "xchg rbx, rbx",
                in("rax") args.as_ptr(),
                inout("rdx") 0usize => _,
                inout("rdi") 0usize => _,
                options(nostack),
            );
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = args;
    }

    /// Zeroes the counters: what follows is the phase.
    pub fn zero() {
        request([ZERO_STATS, 0, 0, 0, 0, 0]);
    }

    /// Dumps the counters since [`zero`] as a part named `phase`.
    pub fn dump(phase: &str) {
        let name = std::ffi::CString::new(phase).expect("a phase name has no NUL");
        request([DUMP_STATS_AT, name.as_ptr() as usize, 0, 0, 0, 0]);
    }
}

fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// An HTTP/1 server answering every request with [`UPSTREAM_ANSWER`].
async fn trivial_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let service = hyper::service::service_fn(
                |req: http::Request<hyper::body::Incoming>| async move {
                    let _ = req.into_body().collect().await;
                    let mut res = http::Response::new(Full::new(Bytes::from_static(
                        UPSTREAM_ANSWER.as_bytes(),
                    )));
                    res.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/json"),
                    );
                    Ok::<_, std::convert::Infallible>(res)
                },
            );
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    addr
}

/// A client text frame (masked with the all-zero key, which leaves the
/// payload as it is); payloads here are shorter than 126 bytes.
fn client_frame(payload: &str) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut f = vec![0x81, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    f.extend_from_slice(payload.as_bytes());
    f
}

/// Text frames whose payload starts with `prefix` among the complete server
/// frames at the front of `buf`, and the bytes they take.
fn scan(buf: &[u8], prefix: &[u8]) -> (usize, usize) {
    let (mut at, mut found) = (0, 0);
    while buf.len() >= at + 2 {
        let (len, head) = match buf[at + 1] & 0x7f {
            126 if buf.len() >= at + 4 => {
                (u16::from_be_bytes([buf[at + 2], buf[at + 3]]) as usize, 4)
            }
            126 | 127 => break,
            n => (n as usize, 2),
        };
        if buf.len() < at + head + len {
            break;
        }
        let payload = &buf[at + head..at + head + len];
        if buf[at] & 0x0f == 1 && payload.starts_with(prefix) {
            found += 1;
        }
        at += head + len;
    }
    (found, at)
}

/// Reads until a text frame starting with `prefix` has come.
async fn await_frame(stream: &mut TcpStream, buf: &mut Vec<u8>, prefix: &[u8]) {
    loop {
        let (found, used) = scan(buf, prefix);
        buf.drain(..used);
        if found > 0 {
            return;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "subcar closed the socket");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A socket with one live `subscription { counter }`.
async fn subscriber(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let head = format!(
        "GET /graphql HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "no upgrade");
        buf.extend_from_slice(&chunk[..n]);
    }
    assert!(
        buf.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    buf.drain(..end);
    stream
        .write_all(&client_frame(r#"{"type":"connection_init"}"#))
        .await
        .unwrap();
    await_frame(&mut stream, &mut buf, br#"{"type":"connection_ack""#).await;
    let subscribe =
        r#"{"id":"1","type":"subscribe","payload":{"query":"subscription { counter }"}}"#;
    stream.write_all(&client_frame(subscribe)).await.unwrap();
    // Messages are handled in order: the pong means the subscription is live.
    stream
        .write_all(&client_frame(r#"{"type":"ping"}"#))
        .await
        .unwrap();
    await_frame(&mut stream, &mut buf, br#"{"type":"pong""#).await;
    assert!(buf.is_empty());
    stream
}

/// Counts the `next` frames a subscriber receives into `received`, and
/// wakes `all_in` whenever the count reaches a multiple of `per_event`.
async fn count_deliveries(
    mut stream: TcpStream,
    received: Arc<AtomicUsize>,
    per_event: usize,
    all_in: Rc<Notify>,
) {
    let mut buf = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 8192];
    loop {
        let Ok(n) = stream.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        let (found, used) = scan(&buf, br#"{"id":"1","type":"next""#);
        buf.drain(..used);
        for _ in 0..found {
            if (received.fetch_add(1, Ordering::Relaxed) + 1).is_multiple_of(per_event) {
                all_in.notify_one();
            }
        }
    }
}

/// `n` queries to `addr` on one keep-alive connection, one at a time.
async fn queries(addr: SocketAddr, n: usize) {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    for _ in 0..n {
        let req = http::Request::post("/graphql")
            .header(http::header::HOST, "bench")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from_static(QUERY.as_bytes())))
            .unwrap();
        send.ready().await.unwrap();
        let res = send.send_request(req).await.unwrap();
        assert_eq!(res.status(), 200);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], UPSTREAM_ANSWER.as_bytes());
    }
}

/// subcar in this runtime, its queries going to `upstream`: its public
/// address, its bus and what stops it.
async fn start_subcar(
    dir: &std::path::Path,
    upstream: SocketAddr,
) -> (SocketAddr, Arc<dyn subcar::bus::Bus>, Shutdown) {
    let schema = dir.join("schema.graphql");
    std::fs::write(&schema, SCHEMA).unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [upstream]\nurl = \"http://{upstream}/graphql\"\n\
         [schema]\npath = {schema:?}\nintrospect_upstream = false\n\
         [webhook]\nlisten = \"127.0.0.1:0\"\n\
         [heartbeat]\ninterval = \"3600s\"\ntimeout = \"3600s\"\n\
         [limits]\nmax_connections = 100000\n[log]\nfilter = \"error\"\n"
    );
    let config = Config::parse(&text, std::iter::empty()).expect("the workload's config is valid");
    let app = App::build(config).expect("the workload's app builds");
    let bus = app.bus().clone();
    let bound = app.bind().await.expect("subcar binds");
    let addr = bound.public_addr();
    let shutdown = Shutdown::new();
    tokio::task::spawn_local(bound.run(shutdown.clone()));
    (addr, bus, shutdown)
}

fn main() {
    let (subscribers, events, requests) = (
        count("INSTR_SUBSCRIBERS", 1_000),
        count("INSTR_EVENTS", 1_000),
        count("INSTR_REQUESTS", 1_000),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let dir = tempfile::tempdir().unwrap();
        let upstream = trivial_upstream().await;
        let (addr, bus, shutdown) = start_subcar(dir.path(), upstream).await;

        let received = Arc::new(AtomicUsize::new(0));
        let all_in = Rc::new(Notify::new());
        for _ in 0..subscribers {
            let stream = subscriber(addr).await;
            tokio::task::spawn_local(count_deliveries(
                stream,
                received.clone(),
                subscribers,
                all_in.clone(),
            ));
        }
        // Warm-up: the first event's allocations (queues, buffers) are setup.
        publish(&*bus, 0).await;
        all_in.notified().await;

        callgrind::zero();
        for seq in 1..=events {
            publish(&*bus, seq).await;
            all_in.notified().await;
        }
        callgrind::dump("dispatch");
        assert_eq!(received.load(Ordering::Relaxed), subscribers * (events + 1));

        queries(upstream, 10).await;
        callgrind::zero();
        queries(upstream, requests).await;
        callgrind::dump("direct");

        queries(addr, 10).await;
        callgrind::zero();
        queries(addr, requests).await;
        callgrind::dump("proxy");

        println!("deliveries {}", subscribers * events);
        println!("requests {requests}");
        shutdown.trigger();
    });
}

/// One event with payload `seq` on topic `counter`.
async fn publish(bus: &dyn subcar::bus::Bus, seq: usize) {
    let event = Event {
        topic: "counter".into(),
        id: None,
        payload: json!(seq),
    };
    bus.publish(vec![event])
        .await
        .expect("the memory bus takes it");
}
