//! GraphQL over SSE against a running subcar: both of graphql-sse's
//! modes, resume with `Last-Event-ID`, heartbeats, errors in the stream's
//! terms, and hostile requests. The reference clients (graphql-sse,
//! EventSource, a browser) run in the JS group.

mod support;

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use support::stream::{Sse, StreamReader, error_code, open, send};
use support::{
    PATIENCE, TestSubcar, TestUpstream, publish, still_serving, wait_subscriptions, watcher,
};

const INCIDENTS: &str = "subscription { incidentUpdated(severity: \"high\") { id severity } }";

async fn subcar(extra: &str) -> (TestUpstream, TestSubcar) {
    support::start_with_upstream("", extra).await
}

fn get_url(subcar: &TestSubcar, query: &str) -> String {
    let q: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("query", query)
        .finish();
    format!("{}?{q}", subcar.graphql_url())
}

/// A distinct-connections stream opened as `EventSource` opens one.
async fn event_source(
    subcar: &TestSubcar,
    query: &str,
    last_event_id: Option<&str>,
) -> StreamReader {
    let mut headers = vec![("accept", "text/event-stream")];
    headers.extend(last_event_id.map(|id| ("last-event-id", id)));
    open(Method::GET, &get_url(subcar, query), &headers, None).await
}

async fn incident(subcar: &TestSubcar, id: &str, severity: &str) {
    publish(
        subcar.webhook,
        json!({"topic": "incidentUpdated", "payload": {"id": id, "severity": severity}}),
    )
    .await;
}

#[tokio::test]
async fn get_stream_delivers_filtered_events_with_cursors() {
    let (_upstream, subcar) = subcar("").await;
    let mut s = event_source(&subcar, INCIDENTS, None).await;
    assert_eq!(s.response_status, 200);
    assert_eq!(
        s.headers["content-type"],
        "text/event-stream; charset=utf-8"
    );
    assert_eq!(s.headers["cache-control"], "no-cache");
    assert_eq!(s.headers["x-accel-buffering"], "no");
    // A comment at once, before any event.
    assert_eq!(s.sse().await, Some(Sse::Comment));
    wait_subscriptions(&subcar, 1).await;
    let status: Value = reqwest::get(subcar.admin_url("/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["connections"]["sse"], 1, "{status}");
    assert_eq!(status["connections"]["graphql-transport-ws"], 0, "{status}");
    incident(&subcar, "1", "low").await;
    incident(&subcar, "2", "high").await;
    let e = s.event().await.unwrap();
    assert_eq!(e.name(), "next");
    let id = e.id().expect("every next carries its cursor").to_owned();
    // The same cursor a socket carries in extensions.
    assert_eq!(
        e.json(),
        json!({"data": {"incidentUpdated": {"id": "2", "severity": "high"}}, "extensions": {"cursor": id}})
    );
}

#[tokio::test]
async fn post_with_several_media_ranges_is_a_stream() {
    let (_upstream, subcar) = subcar("").await;
    let res = send(Method::POST, &subcar.graphql_url(), &[("accept", "text/event-stream, application/json")], Some(&json!({"query": "subscription($s: String) { incidentUpdated(severity: $s) { id } }", "variables": {"s": "high"}}))).await;
    let mut s = StreamReader::new(res).await;
    assert_eq!(s.response_status, 200);
    wait_subscriptions(&subcar, 1).await;
    incident(&subcar, "7", "high").await;
    assert_eq!(
        s.event().await.unwrap().json()["data"],
        json!({"incidentUpdated": {"id": "7"}})
    );
}

#[tokio::test]
async fn validation_errors_are_a_next_then_complete() {
    let (_upstream, subcar) = subcar("").await;
    let mut s = event_source(&subcar, "subscription { incidentUpdated { nope } }", None).await;
    assert_eq!(s.response_status, 200);
    let next = s.event().await.unwrap();
    assert_eq!(next.name(), "next");
    let errors = next.json()["errors"].clone();
    assert!(
        errors[0]["message"].as_str().unwrap().contains("nope"),
        "{errors}"
    );
    assert_eq!(errors[0]["locations"][0]["line"], 1, "{errors}");
    assert_eq!(s.event().await.unwrap().name(), "complete");
    assert!(s.event().await.is_none(), "the stream ends after complete");
}

#[tokio::test]
async fn unparseable_documents_and_bad_requests_are_http_errors() {
    let (_upstream, subcar) = subcar("").await;
    let mut w = watcher(&subcar).await;
    let res = send(
        Method::GET,
        &get_url(&subcar, "subscription {"),
        &[("accept", "text/event-stream")],
        None,
    )
    .await;
    assert_eq!(error_code(res).await, (400, "GRAPHQL_PARSE_FAILED".into()));
    for body in ["{not json", r#"{"query": 5}"#, "[]"] {
        let res = reqwest::Client::new()
            .post(subcar.graphql_url())
            .header("accept", "text/event-stream")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(res).await, (400, "BAD_REQUEST".into()), "{body}");
    }
    let res = send(
        Method::GET,
        &format!("{}?variables=%7B%7D", subcar.graphql_url()),
        &[("accept", "text/event-stream")],
        None,
    )
    .await;
    assert_eq!(res.status(), 400);
    still_serving(&subcar, &mut w, 1).await;
}

#[tokio::test]
async fn queries_are_one_next_and_complete() {
    let (upstream, subcar) = subcar("").await;
    let res = send(
        Method::POST,
        &subcar.graphql_url(),
        &[
            ("accept", "text/event-stream"),
            ("authorization", "Bearer abc"),
        ],
        Some(&json!({"query": "{ hello }"})),
    )
    .await;
    let mut s = StreamReader::new(res).await;
    assert_eq!(s.response_status, 200);
    assert!(
        s.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let next = s.event().await.unwrap();
    assert_eq!(next.name(), "next");
    assert!(next.json()["data"]["hello"].is_string(), "{next:?}");
    assert_eq!(s.event().await.unwrap().name(), "complete");
    assert!(s.event().await.is_none());
    // Executed at the upstream with the client's credentials.
    let seen = upstream.recorded();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].headers["authorization"], "Bearer abc");
}

#[tokio::test]
async fn last_event_id_resumes_without_loss_or_repeats() {
    let (_upstream, subcar) = subcar("").await;
    let mut s = event_source(&subcar, INCIDENTS, None).await;
    wait_subscriptions(&subcar, 1).await;
    for i in 0..4 {
        incident(&subcar, &format!("a{i}"), "high").await;
    }
    let mut last = String::new();
    for i in 0..4 {
        let e = s.event().await.unwrap();
        assert_eq!(e.json()["data"]["incidentUpdated"]["id"], format!("a{i}"));
        last = e.id().unwrap().to_owned();
    }
    drop(s);
    wait_subscriptions(&subcar, 0).await;
    // Missed while away, some filtered out.
    for i in 0..6 {
        let severity = if i % 2 == 0 { "high" } else { "low" };
        incident(&subcar, &format!("b{i}"), severity).await;
    }
    let mut s = event_source(&subcar, INCIDENTS, Some(&last)).await;
    assert_eq!(s.response_status, 200);
    for i in [0, 2, 4] {
        let e = s.event().await.unwrap();
        assert_eq!(
            e.json()["data"]["incidentUpdated"]["id"],
            format!("b{i}"),
            "{e:?}"
        );
    }
    wait_subscriptions(&subcar, 1).await;
    incident(&subcar, "live", "high").await;
    let e = s.event().await.unwrap();
    assert_eq!(e.json()["data"]["incidentUpdated"]["id"], "live", "{e:?}");
}

/// `?since=` in the URL: the retained events published from that time on
/// that pass the filter, then live ones; a bad time is `INVALID_CURSOR` in
/// the stream, and one before a trimmed history `CURSOR_EXPIRED` with the
/// oldest time still available.
#[tokio::test]
async fn since_in_the_url_replays_from_that_time() {
    let (_upstream, subcar) = subcar("[bus]\nhistory = 3\n").await;
    let at = |t: std::time::SystemTime| humantime::format_rfc3339_millis(t).to_string();
    let since_url = |since: &str| {
        let q: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("since", since)
            .finish();
        format!("{}&{q}", get_url(&subcar, INCIDENTS))
    };
    let sse = [("accept", "text/event-stream")];
    let before = at(std::time::SystemTime::now() - Duration::from_secs(1));
    incident(&subcar, "old", "high").await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    let from = at(std::time::SystemTime::now());
    tokio::time::sleep(Duration::from_millis(30)).await;
    incident(&subcar, "a", "high").await;
    incident(&subcar, "b", "low").await;
    let mut s = open(Method::GET, &since_url(&from), &sse, None).await;
    assert_eq!(s.response_status, 200);
    let e = s.event().await.unwrap();
    assert_eq!(e.json()["data"]["incidentUpdated"]["id"], "a", "{e:?}");
    assert!(e.id().is_some(), "{e:?}");
    wait_subscriptions(&subcar, 1).await;
    incident(&subcar, "live", "high").await;
    let e = s.event().await.unwrap();
    assert_eq!(e.json()["data"]["incidentUpdated"]["id"], "live", "{e:?}");
    drop(s);
    wait_subscriptions(&subcar, 0).await;
    // "old" leaves the history of 3.
    incident(&subcar, "c", "high").await;
    let mut s = open(Method::GET, &since_url(&before), &sse, None).await;
    let e = s.event().await.unwrap();
    let error = &e.json()["errors"][0];
    assert_eq!(error["extensions"]["code"], "CURSOR_EXPIRED", "{e:?}");
    let oldest = error["extensions"]["oldest"].as_str().unwrap();
    assert!(oldest > from.as_str(), "{oldest} {from}");
    assert!(error["message"].as_str().unwrap().contains(oldest), "{e:?}");
    let mut s = open(Method::GET, &since_url("last tuesday"), &sse, None).await;
    let e = s.event().await.unwrap();
    assert_eq!(
        e.json()["errors"][0]["extensions"]["code"],
        "INVALID_CURSOR",
        "{e:?}"
    );
}

#[tokio::test]
async fn a_bad_last_event_id_is_invalid_cursor_in_the_stream() {
    let (_upstream, subcar) = subcar("").await;
    let mut s = event_source(&subcar, INCIDENTS, Some("not-a-cursor")).await;
    assert_eq!(s.response_status, 200);
    let next = s.event().await.unwrap();
    assert_eq!(
        next.json()["errors"][0]["extensions"]["code"],
        "INVALID_CURSOR",
        "{next:?}"
    );
    assert_eq!(s.event().await.unwrap().name(), "complete");
}

#[tokio::test]
async fn heartbeats_keep_coming_and_a_closed_stream_is_noticed() {
    let (_upstream, subcar) = subcar("[heartbeat]\ninterval = \"100ms\"").await;
    let mut s = event_source(&subcar, INCIDENTS, None).await;
    wait_subscriptions(&subcar, 1).await;
    for _ in 0..3 {
        assert_eq!(s.sse().await, Some(Sse::Comment));
    }
    drop(s);
    // The next heartbeat's write finds the client gone.
    wait_subscriptions(&subcar, 0).await;
    let metrics = support::metrics(subcar.admin).await;
    assert!(
        metrics.contains("subcar_connections{transport=\"sse\"} 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_subscription_that_accepts_no_stream_is_406() {
    let (_upstream, subcar) = subcar("").await;
    let res = send(
        Method::POST,
        &subcar.graphql_url(),
        &[("accept", "application/json")],
        Some(&json!({"query": INCIDENTS})),
    )
    .await;
    assert_eq!(
        error_code(res).await,
        (406, "SUBSCRIPTION_BAD_HEADER".into())
    );
}

#[tokio::test]
async fn a_foreign_origin_is_refused() {
    let (_upstream, subcar) = subcar("").await;
    let res = send(
        Method::GET,
        &get_url(&subcar, INCIDENTS),
        &[
            ("accept", "text/event-stream"),
            ("origin", "https://evil.example"),
        ],
        None,
    )
    .await;
    assert_eq!(error_code(res).await, (403, "ORIGIN_NOT_ALLOWED".into()));
    assert_eq!(subcar.registry.sizes().subscriptions, 0);
}

#[tokio::test]
async fn streams_count_against_max_connections() {
    let (_upstream, subcar) = subcar("[limits]\nmax_connections = 1").await;
    let _first = event_source(&subcar, INCIDENTS, None).await;
    wait_subscriptions(&subcar, 1).await;
    let second = event_source(&subcar, INCIDENTS, None).await;
    assert_eq!(second.response_status, 503);
    assert!(second.headers.contains_key("retry-after"));
}

#[tokio::test]
async fn drain_ends_the_stream_without_complete() {
    let (_upstream, subcar) = subcar("").await;
    let mut s = event_source(&subcar, INCIDENTS, None).await;
    wait_subscriptions(&subcar, 1).await;
    subcar.shutdown_handle().trigger();
    // Ends when the drain time is up; no `complete`, so the client retries.
    while let Some(e) = tokio::time::timeout(PATIENCE, s.sse()).await.unwrap() {
        assert_eq!(e, Sse::Comment, "only heartbeats before the end");
    }
}

mod single_connection {
    use super::*;

    const TOKEN: &str = "x-graphql-event-stream-token";

    async fn reserve(subcar: &TestSubcar) -> String {
        let res = send(Method::PUT, &subcar.graphql_url(), &[], None).await;
        assert_eq!(res.status(), 201);
        assert_eq!(res.headers()["content-type"], "text/plain; charset=utf-8");
        res.text().await.unwrap()
    }

    async fn open(subcar: &TestSubcar, token: &str) -> StreamReader {
        let res = send(
            Method::GET,
            &subcar.graphql_url(),
            &[("accept", "text/event-stream"), (TOKEN, token)],
            None,
        )
        .await;
        StreamReader::new(res).await
    }

    async fn operation(subcar: &TestSubcar, token: &str, body: Value) -> (u16, String) {
        let res = send(
            Method::POST,
            &subcar.graphql_url(),
            &[(TOKEN, token)],
            Some(&body),
        )
        .await;
        (res.status().as_u16(), res.text().await.unwrap())
    }

    #[tokio::test]
    async fn operations_share_one_stream() {
        let (_upstream, subcar) = subcar("").await;
        let token = reserve(&subcar).await;
        let mut s = open(&subcar, &token).await;
        assert_eq!(s.response_status, 200);
        assert_eq!(s.sse().await, Some(Sse::Comment));
        let sub = json!({"query": INCIDENTS, "extensions": {"operationId": "s1"}});
        assert_eq!(operation(&subcar, &token, sub.clone()).await.0, 202);
        // The same id again while it runs.
        assert_eq!(operation(&subcar, &token, sub).await.0, 409);
        let q = json!({"query": "{ hello }", "extensions": {"operationId": "q1"}});
        assert_eq!(operation(&subcar, &token, q).await.0, 202);
        let next = s.event().await.unwrap();
        assert_eq!(next.name(), "next");
        assert_eq!(next.json()["id"], "q1");
        assert!(
            next.json()["payload"]["data"]["hello"].is_string(),
            "{next:?}"
        );
        let complete = s.event().await.unwrap();
        assert_eq!(
            (complete.name(), complete.json()),
            ("complete", json!({"id": "q1"}))
        );
        wait_subscriptions(&subcar, 1).await;
        incident(&subcar, "9", "high").await;
        let next = s.event().await.unwrap();
        assert_eq!(
            next.json(),
            json!({"id": "s1", "payload": {"data": {"incidentUpdated": {"id": "9", "severity": "high"}}}})
        );
        let res = send(
            Method::DELETE,
            &format!("{}?operationId=s1", subcar.graphql_url()),
            &[(TOKEN, token.as_str())],
            None,
        )
        .await;
        assert_eq!(res.status(), 200);
        wait_subscriptions(&subcar, 0).await;
        // The stream stays open for more operations.
        let q = json!({"query": "{ hello }", "extensions": {"operationId": "q2"}});
        assert_eq!(operation(&subcar, &token, q).await.0, 202);
        assert_eq!(s.event().await.unwrap().json()["id"], "q2");
    }

    #[tokio::test]
    async fn status_codes_are_the_reference_handlers() {
        let (_upstream, subcar) = subcar("").await;
        let token = reserve(&subcar).await;
        let _s = open(&subcar, &token).await;
        // Only one stream per reservation.
        assert_eq!(open(&subcar, &token).await.response_status, 409);
        assert_eq!(open(&subcar, "unknown").await.response_status, 404);
        let (status, body) = operation(&subcar, &token, json!({"query": "{ hello }"})).await;
        assert_eq!(status, 400);
        assert!(body.contains("Operation ID is missing"), "{body}");
        let (status, body) = operation(
            &subcar,
            &token,
            json!({"query": "subscription { nope }", "extensions": {"operationId": "x"}}),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        let url = subcar.graphql_url();
        let res = send(Method::DELETE, &url, &[(TOKEN, token.as_str())], None).await;
        assert_eq!(res.status(), 400);
        let res = send(Method::PUT, &url, &[("accept", "application/json")], None).await;
        assert_eq!(res.status(), 406);
        let res = send(Method::PATCH, &url, &[(TOKEN, token.as_str())], None).await;
        assert_eq!(res.status(), 405);
        assert_eq!(res.headers()["allow"], "GET, POST, PUT, DELETE");
    }

    #[tokio::test]
    async fn the_token_may_come_in_the_query_string() {
        let (_upstream, subcar) = subcar("").await;
        let token = reserve(&subcar).await;
        let res = send(
            Method::GET,
            &format!("{}?token={token}", subcar.graphql_url()),
            &[("accept", "text/event-stream")],
            None,
        )
        .await;
        let mut s = StreamReader::new(res).await;
        assert_eq!(s.response_status, 200);
        assert_eq!(s.sse().await, Some(Sse::Comment));
        // The reservation ends with its stream.
        drop(s);
        tokio::time::timeout(PATIENCE, async {
            loop {
                let (status, _) = operation(
                    &subcar,
                    &token,
                    json!({"query": "{ hello }", "extensions": {"operationId": "late"}}),
                )
                .await;
                if status == 404 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("the reservation ends once its stream is gone");
    }
}

/// A stream whose client stops reading is a slow consumer: its stream
/// ends without `complete` (the client reconnects with its Last-Event-ID),
/// it is counted, and nobody else waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_stops_reading_is_a_slow_consumer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_upstream, subcar) = subcar("[limits]\noutbound_queue = 8").await;
    let mut w = watcher(&subcar).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut tcp = socket.connect(subcar.addr).await.unwrap();
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("query", "subscription { incidentUpdated { id title } }")
        .finish();
    tcp.write_all(
        format!("GET /graphql?{query} HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    wait_subscriptions(&subcar, 2).await;
    // The client reads nothing; large events fill its socket, then its queue.
    let published = support::flood_until_slow_consumer(&subcar).await;
    wait_subscriptions(&subcar, 1).await;
    // What it reads afterwards ends (the chunked body's last chunk; the
    // connection itself stays for another request), and not with `complete`.
    let mut received = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        let mut chunk = vec![0; 64 * 1024];
        while !received.ends_with(b"\r\n0\r\n\r\n") {
            let n = tcp.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the connection closed before the body ended");
            received.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("the stream ends");
    let text = String::from_utf8_lossy(&received);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "{}",
        &text[..text.len().min(200)]
    );
    assert!(!text.contains("event: complete"));
    assert!(text.matches("event: next").count() < published);
    still_serving(&subcar, &mut w, 5).await;
}

/// A JWT that expires while a stream is open ends it with a `next` coded
/// `FORBIDDEN`, then `complete`: the client must not retry with it.
#[tokio::test]
async fn an_expiring_token_ends_the_stream_with_forbidden() {
    use jsonwebtoken::{EncodingKey, Header, encode};
    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    let (_upstream, subcar) = subcar(&format!(
        "[auth]\nmode = \"jwt\"\n[auth.jwt]\nsecret = \"{SECRET}\"\nleeway = \"0s\""
    ))
    .await;
    let exp = support::http::unix_now() + 2;
    let token = encode(
        &Header::default(),
        &json!({"sub": "u", "exp": exp}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let bearer = format!("Bearer {token}");
    let res = send(
        Method::GET,
        &get_url(&subcar, INCIDENTS),
        &[("accept", "text/event-stream"), ("authorization", &bearer)],
        None,
    )
    .await;
    let mut s = StreamReader::new(res).await;
    assert_eq!(s.response_status, 200);
    let next = tokio::time::timeout(Duration::from_secs(8), s.event())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        next.json()["errors"][0]["extensions"]["code"],
        "FORBIDDEN",
        "{next:?}"
    );
    assert_eq!(s.event().await.unwrap().name(), "complete");
    assert!(s.event().await.is_none());
}
