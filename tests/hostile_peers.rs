//! Hostile peers at the edge, over real sockets: connections that send
//! nothing, half a request head or a body that stalls (SPEC section 5 "Idle
//! and slow peers"), and clients that forge forwarding or internal headers
//! (SPEC "Forwarded headers"). After each, subcar must still answer and a
//! subscriber connected before must still receive an event.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use support::TestUpstream;
use support::{Client, PATIENCE, TestSubcar, wait_subscriptions};
use support::{start_with_upstream, still_serving, watcher};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TIMEOUTS: &str =
    "header_timeout = \"300ms\"\nidle_timeout = \"1s\"\nbody_timeout = \"300ms\"";

/// Reads until the peer closes; returns what it sent and how long it took.
async fn read_until_closed(stream: &mut TcpStream) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await {
            Err(_) => panic!("connection still open after {PATIENCE:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return (got, started.elapsed()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Whether the peer keeps the connection open (sends nothing, closes
/// nothing) for `d`.
async fn stays_open(stream: &mut TcpStream, d: Duration) -> bool {
    let mut buf = [0u8; 1];
    tokio::time::timeout(d, stream.read(&mut buf))
        .await
        .is_err()
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_header_timeout_on_every_listener() {
    let (_upstream, rt) = start_with_upstream(TIMEOUTS, "").await;
    let mut w = watcher(&rt).await;
    for (name, addr) in [
        ("public", rt.addr),
        ("webhook", rt.webhook),
        ("admin", rt.admin),
    ] {
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let (got, took) = read_until_closed(&mut silent).await;
        assert!(got.is_empty(), "{name}: {}", String::from_utf8_lossy(&got));
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(3),
            "{name}: closed after {took:?}"
        );
    }
    still_serving(&rt, &mut w, 1).await;
}

#[tokio::test]
async fn a_partial_or_trickled_request_head_is_closed_after_header_timeout() {
    let (_upstream, rt) = start_with_upstream(TIMEOUTS, "").await;
    let mut w = watcher(&rt).await;
    let mut partial = TcpStream::connect(rt.addr).await.unwrap();
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let (_, took) = read_until_closed(&mut partial).await;
    assert!(took < Duration::from_secs(3), "closed after {took:?}");

    // A byte every 50 ms is activity, but never a whole head: the deadline
    // counts from the accept, not from the last byte.
    let trickle = TcpStream::connect(rt.webhook).await.unwrap();
    let (mut read, mut write) = trickle.into_split();
    let writer = tokio::spawn(async move {
        let head = b"POST /webhook HTTP/1.1\r\nHost: x\r\nX-Padding: ";
        for byte in head.iter().chain([b'a'; 200].iter()) {
            if write.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(PATIENCE, read.read(&mut buf)).await;
    let took = started.elapsed();
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
    assert!(took < Duration::from_millis(1500), "closed after {took:?}");
    writer.abort();
    still_serving(&rt, &mut w, 2).await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let (_upstream, rt) = start_with_upstream(TIMEOUTS, "").await;
    let mut w = watcher(&rt).await;
    for addr in [rt.addr, rt.admin] {
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(PATIENCE, conn.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
        // Past the header timeout, idle is not a slow head: still open.
        assert!(stays_open(&mut conn, Duration::from_millis(600)).await);
        let (_, took) = read_until_closed(&mut conn).await;
        assert!(took < Duration::from_secs(2), "closed {took:?} later");
    }
    // The watcher's socket outlived both timeouts: upgraded connections are
    // the session's to time, not the listener's.
    still_serving(&rt, &mut w, 3).await;
}

/// Sends a request head and part of its body, then stalls; returns the
/// status line subcar answered with (or "" when it just closed).
async fn stalled_body(addr: SocketAddr, path: &str) -> (String, String, Duration) {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"topic\":"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let (got, took) = read_until_closed(&mut conn).await;
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text.lines().next().unwrap_or_default().to_owned();
    (status, text, took)
}

#[tokio::test]
async fn a_stalled_body_is_answered_408_after_body_timeout() {
    let (upstream, rt) = start_with_upstream(
        TIMEOUTS,
        "[webhook]\nlisten = \"127.0.0.1:0\"\nbody_timeout = \"300ms\"",
    )
    .await;
    let mut w = watcher(&rt).await;
    let (status, text, took) = stalled_body(rt.webhook, "/webhook").await;
    assert!(status.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("BODY_TIMEOUT"), "{text}");
    assert!(took < Duration::from_secs(3), "{took:?}");

    let before = upstream.recorded().len();
    let (status, text, _) = stalled_body(rt.addr, "/graphql").await;
    assert!(status.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("BODY_TIMEOUT"), "{text}");
    assert_eq!(
        upstream.recorded().len(),
        before,
        "nothing reached the upstream"
    );
    still_serving(&rt, &mut w, 4).await;
}

const FORGED: [(&str, &str); 5] = [
    ("x-forwarded-for", "6.6.6.6"),
    ("x-forwarded-host", "evil.example"),
    ("x-forwarded-proto", "https"),
    ("x-real-ip", "6.6.6.6"),
    ("forwarded", "for=6.6.6.6;host=evil.example"),
];

/// The upstream saw subcar's forwarding headers, none of the forged ones.
fn assert_forwarding_is_subcars(headers: &http::HeaderMap, rt: &TestSubcar) {
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1", "{headers:?}");
    assert_eq!(headers["x-real-ip"], "127.0.0.1", "{headers:?}");
    assert_eq!(headers["x-forwarded-proto"], "http", "{headers:?}");
    assert_eq!(
        headers["x-forwarded-host"],
        rt.addr.to_string().as_str(),
        "{headers:?}"
    );
    let forwarded = headers["forwarded"].to_str().unwrap();
    assert!(
        forwarded.starts_with("for=127.0.0.1;proto=http"),
        "{forwarded}"
    );
    assert!(
        !forwarded.contains("6.6.6.6") && !forwarded.contains("evil"),
        "{forwarded}"
    );
    assert!(!headers.contains_key("x-internal-admin"), "{headers:?}");
}

#[tokio::test]
async fn a_query_over_a_socket_carries_subcars_forwarding_headers_and_only_allowed_init_headers() {
    let (upstream, rt) = start_with_upstream("", "[auth]\nforward_headers = [\"X-Tenant\"]").await;
    let mut w = watcher(&rt).await;
    let own = format!("http://{}", rt.addr);
    let mut upgrade: Vec<(&str, &str)> = FORGED.to_vec();
    upgrade.push(("origin", &own));
    let (mut c, first) = Client::init(
        rt.addr,
        &upgrade,
        json!({
            "headers": {
                "X-Forwarded-For": "7.7.7.7",
                "Forwarded": "for=7.7.7.7",
                "X-Real-IP": "7.7.7.7",
                "x-internal-admin": "true",
                "Host": "evil.example",
                "X-Tenant": "t1",
                "Authorization": "Bearer abc",
            }
        }),
    )
    .await;
    assert!(support::ws::acked(&first), "{first:?}");
    c.send(json!({"id": "q", "type": "subscribe", "payload": {"query": "{ hello }"}}))
        .await;
    let next = c.recv().await;
    assert_eq!(next["payload"]["data"]["hello"], "Hello, world!", "{next}");
    let got = upstream.bodies_containing("hello").pop().unwrap().headers;
    assert_forwarding_is_subcars(&got, &rt);
    assert_eq!(got["x-tenant"], "t1");
    assert_eq!(got["authorization"], "Bearer abc");
    assert_eq!(
        got["origin"],
        own.as_str(),
        "the client's Origin, for CSRF checks"
    );
    still_serving(&rt, &mut w, 5).await;
}

#[tokio::test]
async fn the_proxy_path_replaces_forged_forwarding_headers() {
    let (upstream, rt) = start_with_upstream("", "").await;
    let mut w = watcher(&rt).await;
    let mut request = reqwest::Client::new()
        .post(format!("http://{}/graphql", rt.addr))
        .json(&json!({"query": "{ hello }"}));
    for (k, v) in FORGED {
        request = request.header(k, v);
    }
    let res = request.send().await.unwrap();
    assert_eq!(res.status(), 200);
    let got = upstream.bodies_containing("hello").pop().unwrap().headers;
    assert_forwarding_is_subcars(&got, &rt);
    still_serving(&rt, &mut w, 6).await;
}

#[tokio::test]
async fn the_upstream_auth_query_carries_subcars_forwarding_headers() {
    let (upstream, rt) = start_with_upstream(
        "",
        "[auth]\nmode = \"upstream\"\n[auth.upstream]\nquery = \"{ me { id tenant } }\"\n",
    )
    .await;
    let own = format!("http://{}", rt.addr);
    let mut upgrade: Vec<(&str, &str)> = FORGED.to_vec();
    upgrade.push(("origin", &own));
    let (mut w, first) = Client::init(
        rt.addr,
        &upgrade,
        json!({
            "Authorization": "Bearer user:u1:t1",
            "headers": {"X-Forwarded-For": "7.7.7.7", "x-internal-admin": "true"},
        }),
    )
    .await;
    assert!(support::ws::acked(&first), "{first:?}");
    let got = upstream.bodies_containing("me").pop().unwrap().headers;
    assert_forwarding_is_subcars(&got, &rt);
    assert_eq!(got["origin"], own.as_str());
    w.subscribe("w", "subscription { counter }").await;
    wait_subscriptions(&rt, 1).await;
    still_serving(&rt, &mut w, 7).await;
}

#[tokio::test]
async fn a_tls_handshake_is_bounded_by_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, tls) = support::self_signed_tls(dir.path());
    let upstream = TestUpstream::start().await;
    let subcar = support::TestSubcar::builder(upstream.url())
        .server("header_timeout = \"300ms\"")
        .extra(&tls)
        .spawn()
        .await;
    // Nothing at all, then the first bytes of a ClientHello that never ends.
    for sent in [&b""[..], &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01][..]] {
        let mut conn = TcpStream::connect(subcar.addr).await.unwrap();
        conn.write_all(sent).await.unwrap();
        let (_, took) = read_until_closed(&mut conn).await;
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(3),
            "closed after {took:?}"
        );
    }
    // Still serving over TLS (no socket client speaks wss here: the
    // subscriber check of this listener is the plain-TCP tests above).
    let root = reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(root)
        .build()
        .unwrap();
    let res = client
        .get(format!("https://localhost:{}/healthz", subcar.addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}
