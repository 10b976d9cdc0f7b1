//! Browser origins on the WebSocket upgrade (SPEC "Browser origins"): a
//! page of another site cannot open a socket with its visitor's cookies.
//! Every refusal is followed by a check that subcar still serves and that
//! an already-connected subscriber still receives events.

mod support;

use serde_json::json;
use support::ws::refused_upgrade;
use support::{Client, Next, TestSubcar};
use support::{start_with_upstream, still_serving, watcher};
use tokio_tungstenite::tungstenite;

async fn connect(rt: &TestSubcar, headers: &[(&str, &str)]) -> Result<Client, tungstenite::Error> {
    Client::connect_with(rt.addr, Some("graphql-transport-ws"), headers).await
}

/// An upgrade with `headers` is admitted (`why` it should be) and acked.
async fn admitted(rt: &TestSubcar, headers: &[(&str, &str)], why: &str) -> Client {
    acked(connect(rt, headers).await.expect(why)).await
}

async fn acked(mut c: Client) -> Client {
    c.send(json!({"type": "connection_init"})).await;
    match c.next().await {
        Next::Json(v) => assert_eq!(v["type"], "connection_ack", "{v}"),
        Next::Closed(code, reason) => panic!("closed {code} {reason}"),
    }
    c
}

#[tokio::test]
async fn cross_origin_upgrade_with_a_cookie_is_refused_403() {
    let (upstream, rt) = start_with_upstream("", "[auth]\ncookie = \"session\"\n").await;
    let mut w = watcher(&rt).await;
    let before = upstream.recorded().len();
    let (status, _, body) = refused_upgrade(
        connect(
            &rt,
            &[
                ("origin", "https://evil.example"),
                ("cookie", "session=victim"),
            ],
        )
        .await,
    );
    assert_eq!(status, 403);
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "ORIGIN_NOT_ALLOWED"
    );
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("evil.example"),
        "{body}"
    );
    // `null` (sandboxed frames, file pages) is not an origin of this server.
    let (status, _, _) = refused_upgrade(connect(&rt, &[("origin", "null")]).await);
    assert_eq!(status, 403);
    assert_eq!(
        upstream.recorded().len(),
        before,
        "nothing reached the upstream"
    );
    let metrics = support::metrics(rt.admin).await;
    assert!(
        metrics.contains("subcar_refusals_total{reason=\"origin\"} 2"),
        "{metrics}"
    );
    still_serving(&rt, &mut w, 1).await;
}

#[tokio::test]
async fn same_origin_and_no_origin_are_admitted_with_an_empty_list() {
    let (_upstream, rt) = start_with_upstream("", "").await;
    let mut w = watcher(&rt).await;
    let own = format!("http://{}", rt.addr);
    admitted(&rt, &[("origin", &own)], "same origin").await;
    // Scheme differs: not the same origin.
    let (status, _, _) =
        refused_upgrade(connect(&rt, &[("origin", &format!("https://{}", rt.addr))]).await);
    assert_eq!(status, 403);
    admitted(&rt, &[], "no Origin: not a browser").await;
    still_serving(&rt, &mut w, 2).await;
}

#[tokio::test]
async fn a_listed_origin_is_admitted_and_others_are_not() {
    let (_upstream, rt) = start_with_upstream(
        "cors_origins = [\"https://app.example.com\", \"http://localhost:3000\"]",
        "",
    )
    .await;
    let mut w = watcher(&rt).await;
    admitted(&rt, &[("origin", "https://app.example.com")], "listed").await;
    admitted(
        &rt,
        &[("origin", "http://LOCALHOST:3000")],
        "listed, case-insensitive",
    )
    .await;
    for origin in [
        "https://app.example.com.evil.example",
        "http://app.example.com",
        // With a list, the server's own origin must be listed too.
        &format!("http://{}", rt.addr),
    ] {
        let (status, _, body) = refused_upgrade(connect(&rt, &[("origin", origin)]).await);
        assert_eq!(status, 403, "{origin}");
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "ORIGIN_NOT_ALLOWED",
            "{origin}"
        );
    }
    still_serving(&rt, &mut w, 3).await;
}

#[tokio::test]
async fn any_origin_is_admitted_with_a_star() {
    let (_upstream, rt) = start_with_upstream("cors_origins = [\"*\"]", "").await;
    let mut w = watcher(&rt).await;
    admitted(&rt, &[("origin", "https://anything.example")], "star").await;
    still_serving(&rt, &mut w, 4).await;
}

#[tokio::test]
async fn forwarded_host_and_proto_count_only_from_a_trusted_proxy() {
    // The test client connects from 127.0.0.1.
    let (_upstream, rt) = start_with_upstream("trusted_proxies = [\"127.0.0.0/8\"]", "").await;
    let mut w = watcher(&rt).await;
    let behind_proxy = [
        ("origin", "https://app.example.com"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "app.example.com"),
    ];
    admitted(&rt, &behind_proxy, "trusted proxy").await;
    still_serving(&rt, &mut w, 6).await;
    drop(rt);
    let (_upstream, rt) = start_with_upstream("", "").await;
    let mut w2 = watcher(&rt).await;
    let (status, _, _) = refused_upgrade(connect(&rt, &behind_proxy).await);
    assert_eq!(status, 403, "an untrusted peer cannot claim another host");
    still_serving(&rt, &mut w2, 5).await;
}
