//! Raw HTTP/1.1 requests on a fresh connection, the body and headers exactly
//! as given: the webhook sender (`post`, and `publish`, which expects the
//! events accepted) and the admin listener's `/metrics`.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

/// Sends `req` to `addr`; returns status, headers and the whole body.
async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> (StatusCode, HeaderMap, Bytes) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let res = send.send_request(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, headers, body)
}

/// POSTs to the webhook; returns status, headers and JSON body.
pub async fn post(
    webhook: SocketAddr,
    body: impl Into<Bytes>,
    content_type: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Value) {
    let mut req = Request::post("/webhook")
        .header("host", webhook.to_string())
        .header("content-type", content_type);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let (status, headers, body) = send(webhook, req.body(Full::new(body.into())).unwrap()).await;
    (
        status,
        headers,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

/// POSTs JSON events and expects `202`.
pub async fn publish(webhook: SocketAddr, body: Value) -> Value {
    let (status, _, json) = post(webhook, body.to_string(), "application/json", &[]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{json}");
    json
}

/// POSTs JSON `body` as one request named `webhook_id` (the
/// `webhook-id` header); returns status, headers and JSON body.
pub async fn post_with_id(
    webhook: SocketAddr,
    body: impl Into<Bytes>,
    webhook_id: &str,
) -> (StatusCode, HeaderMap, Value) {
    post(
        webhook,
        body,
        "application/json",
        &[("webhook-id", webhook_id)],
    )
    .await
}

/// The admin listener's `/metrics` text.
pub async fn metrics(admin: SocketAddr) -> String {
    let req = Request::get("/metrics")
        .header("host", admin.to_string())
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (_, _, body) = send(admin, req).await;
    String::from_utf8(body.to_vec()).unwrap()
}

/// A Standard Webhooks secret (`whsec_` and base64) for the signature tests.
pub const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The `[webhook]` section that requires signatures by [`WEBHOOK_SECRET`].
pub fn signed_webhook() -> String {
    format!("[webhook]\nsecret = \"{WEBHOOK_SECRET}\"")
}

/// Seconds since the Unix epoch (webhook timestamps, token expiries).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
