//! The query/mutation path seen from outside: a real upstream, real HTTP.

mod support;

use std::time::Duration;

use serde_json::json;
use support::upstream::hello_behaving;
use support::upstream::{MULTIPART, SSE, closed_port_url, garbage_upstream};
use support::{TestSubcar, TestUpstream, post_json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn setup() -> (TestUpstream, TestSubcar) {
    let upstream = TestUpstream::start().await;
    let subcar = TestSubcar::builder(upstream.url()).spawn().await;
    (upstream, subcar)
}

#[tokio::test]
async fn query_passes_through() {
    let (upstream, subcar) = setup().await;
    let (status, body) = post_json(&subcar.graphql_url(), json!({"query": "{ hello }"})).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"data": {"hello": "Hello, world!"}}));
    let seen = upstream.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.uri.path(), "/graphql");
}

#[tokio::test]
async fn mutation_with_variables_and_operation_name() {
    let (_upstream, subcar) = setup().await;
    let doc = "query Q { hello } mutation Inc($by: Int!) { increment(by: $by) }";
    let (status, body) = post_json(
        &subcar.graphql_url(),
        json!({"query": doc, "operationName": "Inc", "variables": {"by": 5}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"data": {"increment": 5}}));
    let (_, body) = post_json(
        &subcar.graphql_url(),
        json!({"query": doc, "operationName": "Inc", "variables": {"by": 2}}),
    )
    .await;
    assert_eq!(body, json!({"data": {"increment": 7}}));
}

#[tokio::test]
async fn get_keeps_query_string() {
    let (upstream, subcar) = setup().await;
    let res = reqwest::Client::new()
        .get(subcar.graphql_url())
        .query(&[
            ("query", "query($n: String) { hello(name: $n) }"),
            ("variables", r#"{"n":"GET"}"#),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap(),
        json!({"data": {"hello": "Hello, GET!"}})
    );
    let seen = upstream.last();
    assert_eq!(seen.method, "GET");
    assert!(
        seen.uri.query().unwrap().contains("variables="),
        "{:?}",
        seen.uri
    );
}

#[tokio::test]
async fn batches_pass_through() {
    let (upstream, subcar) = setup().await;
    let batch = json!([{"query": "{ hello }"}, {"query": "{ hello(name: \"b\") }"}]);
    let (status, body) = post_json(&subcar.graphql_url(), batch.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!([{"data": {"hello": "Hello, world!"}}, {"data": {"hello": "Hello, b!"}}])
    );
    let forwarded: serde_json::Value = serde_json::from_slice(&upstream.last().body).unwrap();
    assert_eq!(forwarded, batch);
}

#[tokio::test]
async fn end_to_end_headers_pass_and_client_sees_upstream_headers() {
    let (upstream, subcar) = setup().await;
    let res = reqwest::Client::new()
        .post(subcar.graphql_url())
        .header("authorization", "Bearer secret-token")
        .header("cookie", "session=abc; theme=dark")
        .header("x-tenant", "acme")
        .json(&json!({"query": "{ auth: header(name: \"authorization\") cookie: header(name: \"cookie\") }"}))
        .send()
        .await
        .unwrap();
    assert!(res.headers().contains_key("x-request-id"));
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["data"]["auth"], "Bearer secret-token");
    assert_eq!(body["data"]["cookie"], "session=abc; theme=dark");
    let seen = upstream.last();
    assert_eq!(seen.headers["x-tenant"], "acme");
    assert!(
        seen.headers.contains_key("x-request-id"),
        "request id reaches the upstream"
    );
}

/// Raw HTTP/1.1 so that the client library cannot tidy the headers up.
#[tokio::test]
async fn hop_by_hop_headers_are_dropped_and_forwarded_headers_set() {
    let (upstream, subcar) = setup().await;
    let body = r#"{"query":"{ hello }"}"#;
    let request = format!(
        "POST /graphql?trace=1 HTTP/1.1\r\nHost: api.example.com\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: keep-alive, x-private-hop\r\nKeep-Alive: timeout=5\r\n\
         X-Private-Hop: 1\r\nTE: trailers\r\nProxy-Authorization: Basic Zm9v\r\n\
         X-Forwarded-For: 6.6.6.6\r\nX-End-To-End: kept\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(subcar.addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = vec![0u8; 4096];
    let n = stream.read(&mut response).await.unwrap();
    assert!(String::from_utf8_lossy(&response[..n]).starts_with("HTTP/1.1 200"));

    let seen = upstream.last();
    for hop in ["keep-alive", "x-private-hop", "te", "proxy-authorization"] {
        assert!(
            !seen.headers.contains_key(hop),
            "{hop} must not reach the upstream"
        );
    }
    assert_eq!(seen.headers["x-end-to-end"], "kept");
    assert_eq!(seen.uri.query(), Some("trace=1"));
    // The client is not a trusted proxy: its X-Forwarded-For is replaced.
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["x-forwarded-host"], "api.example.com");
    assert_eq!(seen.headers["host"], upstream.addr.to_string());
}

#[tokio::test]
async fn trusted_proxy_chain_is_extended() {
    let upstream = TestUpstream::start().await;
    let subcar = TestSubcar::builder(upstream.url())
        .server(r#"trusted_proxies = ["127.0.0.0/8"]"#)
        .spawn()
        .await;
    reqwest::Client::new()
        .post(subcar.graphql_url())
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "https")
        .json(&json!({"query": "{ hello }"}))
        .send()
        .await
        .unwrap();
    let seen = upstream.last();
    assert_eq!(seen.headers["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
}

#[tokio::test]
async fn upstream_error_statuses_pass_through_unchanged() {
    let (_upstream, subcar) = setup().await;
    for code in [400u16, 401, 404, 500, 503] {
        let res = hello_behaving(
            &reqwest::Client::new(),
            &subcar.graphql_url(),
            &format!("status:{code}"),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(res.status().as_u16(), code);
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(
            body["errors"][0]["message"],
            format!("upstream says {code}")
        );
    }
}

#[tokio::test]
async fn field_errors_from_upstream_pass_through() {
    let (_upstream, subcar) = setup().await;
    let (status, body) = post_json(&subcar.graphql_url(), json!({"query": "{ fail }"})).await;
    assert_eq!(status, 200);
    assert_eq!(body["errors"][0]["message"], "this field always fails");
}

async fn assert_upstream_unavailable(subcar: &TestSubcar, behavior: Option<&str>, expected: u16) {
    let mut req = reqwest::Client::new()
        .post(subcar.graphql_url())
        .json(&json!({"query": "{ hello }"}));
    if let Some(b) = behavior {
        req = req.header("x-test-behavior", b);
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status().as_u16(), expected);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "UPSTREAM_UNAVAILABLE",
        "{body}"
    );
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("upstream")
    );
}

#[tokio::test]
async fn upstream_down_is_502() {
    let subcar = TestSubcar::builder(closed_port_url()).spawn().await;
    assert_upstream_unavailable(&subcar, None, 502).await;
}

#[tokio::test]
async fn upstream_garbage_is_502() {
    let subcar = TestSubcar::builder(garbage_upstream().await).spawn().await;
    assert_upstream_unavailable(&subcar, None, 502).await;
}

#[tokio::test]
async fn upstream_timeout_is_504() {
    let upstream = TestUpstream::start().await;
    let subcar = TestSubcar::builder(upstream.url())
        .upstream(r#"timeout = "200ms""#)
        .spawn()
        .await;
    assert_upstream_unavailable(&subcar, Some("sleep:3000"), 504).await;
}

#[tokio::test]
async fn subscription_over_plain_http_is_a_clear_error() {
    let (upstream, subcar) = setup().await;
    let (status, body) = post_json(
        &subcar.graphql_url(),
        json!({"query": "query Q { hello } subscription S { incidentUpdated { id } }", "operationName": "S"}),
    )
    .await;
    assert_eq!(status, 406);
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "SUBSCRIPTION_BAD_HEADER"
    );
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("graphql-transport-ws")
    );
    assert!(
        upstream.recorded().is_empty(),
        "nothing reached the upstream"
    );

    // The same document selecting the query goes through.
    let (status, body) = post_json(
        &subcar.graphql_url(),
        json!({"query": "query Q { hello } subscription S { incidentUpdated { id } }", "operationName": "Q"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn request_body_over_the_limit_is_413() {
    let upstream = TestUpstream::start().await;
    let subcar = TestSubcar::builder(upstream.url())
        .server("max_request_bytes = 1024")
        .spawn()
        .await;
    let big = "x".repeat(4096);
    let res = reqwest::Client::new()
        .post(subcar.graphql_url())
        .json(&json!({"query": format!("{{ hello(name: \"{big}\") }}")}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    assert!(upstream.recorded().is_empty());
}

/// Incremental delivery passes part by part: the first part reaches the
/// client while the upstream still holds back the second.
#[tokio::test]
async fn multipart_and_event_stream_responses_are_not_buffered() {
    let (upstream, subcar) = setup().await;
    for (behavior, parts, content_type) in [
        ("multipart", MULTIPART, "multipart/mixed"),
        ("sse", SSE, "text/event-stream"),
    ] {
        let mut res = reqwest::Client::new()
            .post(subcar.graphql_url())
            .header("x-test-behavior", behavior)
            .header("accept", content_type)
            .json(&json!({"query": "{ hello }"}))
            .send()
            .await
            .unwrap();
        assert!(
            res.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(content_type)
        );
        let mut received = Vec::new();
        while received.len() < parts[0].len() {
            let chunk = tokio::time::timeout(Duration::from_secs(10), res.chunk())
                .await
                .expect("first part arrives before the upstream finishes")
                .unwrap()
                .expect("body not ended");
            received.extend_from_slice(&chunk);
        }
        assert_eq!(String::from_utf8_lossy(&received), parts[0]);
        upstream.release();
        let rest = res.bytes().await.unwrap();
        assert_eq!(String::from_utf8_lossy(&rest), parts[1]);
    }
}

#[tokio::test]
async fn large_response_streams_through_whole() {
    let (_upstream, subcar) = setup().await;
    let res = hello_behaving(&reqwest::Client::new(), &subcar.graphql_url(), "big")
        .send()
        .await
        .unwrap();
    let body = res.bytes().await.unwrap();
    assert_eq!(
        body.len(),
        support::upstream::BIG_BODY_BYTES + r#"{"data":{"blob":""}}"#.len()
    );
    assert!(body.ends_with(br#"xx"}}"#));
}

#[tokio::test]
async fn http2_cleartext_prior_knowledge_is_served() {
    let (_upstream, subcar) = setup().await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let res = client
        .post(subcar.graphql_url())
        .json(&json!({"query": "{ hello }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.version(), reqwest::Version::HTTP_2);
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap()["data"]["hello"],
        "Hello, world!"
    );
}

#[tokio::test]
async fn cors_preflight_for_configured_origin() {
    let upstream = TestUpstream::start().await;
    let subcar = TestSubcar::builder(upstream.url())
        .server(r#"cors_origins = ["https://app.example.com"]"#)
        .spawn()
        .await;
    let client = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, subcar.graphql_url())
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let allowed = preflight("https://app.example.com").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let denied = preflight("https://evil.example.com").await.unwrap();
    assert!(!denied.headers().contains_key("access-control-allow-origin"));
    assert!(
        upstream.recorded().is_empty(),
        "preflights are answered by subcar"
    );
}

#[tokio::test]
async fn readiness_reports_upstream_reachability() {
    let subcar = TestSubcar::builder(closed_port_url()).spawn().await;
    let body = wait_for_probe(&subcar).await;
    assert_eq!(
        body["ready"], true,
        "subcar serves even while the upstream is down"
    );
    assert_eq!(body["upstream"]["reachable"], false);

    let upstream = TestUpstream::start().await;
    let subcar = TestSubcar::builder(upstream.url()).spawn().await;
    let body = wait_for_probe(&subcar).await;
    assert_eq!(body["upstream"]["reachable"], true);
    let health = reqwest::get(subcar.admin_url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
}

async fn wait_for_probe(subcar: &TestSubcar) -> serde_json::Value {
    for _ in 0..200 {
        let res = reqwest::get(subcar.url("/readyz")).await.unwrap();
        assert_eq!(res.status(), 200);
        let body: serde_json::Value = res.json().await.unwrap();
        if !body["upstream"]["reachable"].is_null() {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the upstream probe never finished");
}

#[tokio::test]
async fn draining_turns_readiness_false_and_lets_requests_finish() {
    let (upstream, subcar) = setup().await;
    let client = reqwest::Client::new();
    let slow = tokio::spawn(hello_behaving(&client, &subcar.graphql_url(), "sleep:500").send());
    upstream.wait_for_requests(1).await;
    let shutdown = subcar.shutdown_handle();
    shutdown.trigger();
    // Probes on the admin listener see the drain at once.
    let mut readiness = None;
    for _ in 0..100 {
        let res = reqwest::get(subcar.admin_url("/readyz")).await.unwrap();
        if res.status() == 503 {
            readiness = Some(res.json::<serde_json::Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let readiness = readiness.expect("readiness turns false while draining");
    assert_eq!(readiness["draining"], true);
    let res = slow.await.unwrap().unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap()["data"]["hello"],
        "Hello, world!"
    );
    // New connections are refused once the listener has stopped.
    let addr = subcar.addr;
    subcar.stop().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn merged_schema_is_served_as_sdl() {
    let (_upstream, subcar) = setup().await;
    let res = reqwest::get(subcar.url("/graphql/schema.graphql"))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let sdl = res.text().await.unwrap();
    assert!(sdl.contains("incidentUpdated"), "{sdl}");
}

/// Introspection sent as a GET (what several IDEs and codegen tools send) is
/// answered from the merged schema exactly as the same query POSTed is, with
/// subcar's Subscription root the upstream knows nothing of; encoded
/// underscores included.
#[tokio::test]
async fn introspection_over_get_is_answered_like_post() {
    let upstream = TestUpstream::start().await;
    let subcar = TestSubcar::introspecting(upstream.url()).await;
    let query = "{ __schema { subscriptionType { name fields { name } } queryType { name } } }";
    let (status, posted) = post_json(&subcar.graphql_url(), json!({"query": query})).await;
    assert_eq!(status, 200);
    assert_eq!(
        posted["data"]["__schema"]["subscriptionType"]["name"], "Subscription",
        "{posted}"
    );
    let client = reqwest::Client::new();
    for url in [
        reqwest::Url::parse_with_params(&subcar.graphql_url(), [("query", query)]).unwrap(),
        reqwest::Url::parse(&format!(
            "{}?query=%7B%20%5F%5Fschema%20%7B%20subscriptionType%20%7B%20name%20fields%20%7B%20name%20%7D%20%7D%20queryType%20%7B%20name%20%7D%20%7D%20%7D",
            subcar.graphql_url()
        ))
        .unwrap(),
    ] {
        let res = client
            .get(url.clone())
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{url}");
        let got: serde_json::Value = res.json().await.unwrap();
        assert_eq!(got, posted, "{url}");
    }
    // An ordinary GET query still goes to the upstream.
    let res = client
        .get(
            reqwest::Url::parse_with_params(&subcar.graphql_url(), [("query", "{ hello }")])
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let got: serde_json::Value = res.json().await.unwrap();
    assert!(got["data"]["hello"].is_string(), "{got}");
}
