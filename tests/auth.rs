//! Authentication and authorization over real sockets: JWT credentials from
//! every source, each refusal (4403 with its reason), expiry while
//! connected, JWKS keys (RS256, ES256, EdDSA) from a real HTTP server and a
//! file, upstream authentication against the real test upstream,
//! `auth.proxy = "require"`, `allow` and claims-scoped filters.

mod auth_support;
mod support;

use std::time::Duration;

use auth_support::{JwksServer, SigningKey, hs256, hs256_auth, jwks, jwt_auth, now};
use serde_json::{Value, json};
use support::ws::{acked, closed_with};
use support::{Client, PATIENCE, publish, spawn, spawn_with_upstream, wait_subscriptions};
use support::{TestSubcar, TestUpstream};

#[tokio::test]
async fn jwt_from_header_cookie_or_init_payload_is_accepted() {
    let rt = spawn(&jwt_auth("")).await;
    let token = hs256(json!({"sub": "u1"}), 600);
    let bearer = format!("Bearer {token}");
    let cookie = format!("theme=dark; session={token}");
    let sources: [(&[(&str, &str)], Value); 5] = [
        (&[("authorization", &bearer)], json!({})),
        (&[("cookie", &cookie)], json!({})),
        (&[], json!({"Authorization": bearer})),
        (&[], json!({"authorization": token})),
        (&[], json!({"headers": {"Authorization": bearer}})),
    ];
    for (i, (headers, payload)) in sources.into_iter().enumerate() {
        let (_c, first) = Client::init(rt.addr, headers, payload).await;
        assert!(acked(&first), "source {i}: {first:?}");
    }
}

#[tokio::test]
async fn every_jwt_refusal_closes_4403_with_its_reason() {
    let rt = spawn(&jwt_auth("issuer = \"idp\"\naudience = [\"subcar\"]")).await;
    let good = json!({"sub": "u1", "iss": "idp", "aud": "subcar"});
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let wrong_secret = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &with("exp", json!(now() + 600)),
        &jsonwebtoken::EncodingKey::from_secret(b"not the secret"),
    )
    .unwrap();
    let cases = [
        (None, "no credentials"),
        (Some("garbage".to_string()), "invalid token"),
        (Some(wrong_secret), "invalid signature"),
        (
            Some(hs256(with("exp", json!(now() - 10)), 0)),
            "token expired",
        ),
        (
            Some(hs256(with("iss", json!("other")), 600)),
            "wrong issuer",
        ),
        (
            Some(hs256(with("aud", json!("other")), 600)),
            "wrong audience",
        ),
        (
            Some(SigningKey::es256("k").sign(good.clone())),
            "algorithm not accepted",
        ),
    ];
    for (token, reason) in cases {
        let payload = match &token {
            Some(t) => json!({"Authorization": format!("Bearer {t}")}),
            None => json!({}),
        };
        let (_c, first) = Client::init(rt.addr, &[], payload).await;
        closed_with(first, 4403, reason);
    }
    let (_c, first) = Client::init(rt.addr, &[], json!({"Authorization": hs256(good, 600)})).await;
    assert!(acked(&first), "{first:?}");
}

#[tokio::test]
async fn a_token_expiring_while_connected_closes_4403_at_exp() {
    let rt = spawn(&jwt_auth("")).await;
    let exp = now() + 2;
    let token = hs256(json!({"sub": "u1", "exp": exp}), 0);
    let (mut c, first) = Client::init(rt.addr, &[], json!({"Authorization": token})).await;
    assert!(acked(&first));
    c.subscribe("1", "subscription { counter }").await;
    wait_subscriptions(&rt, 1).await;
    let (code, reason) = c.closed().await;
    assert_eq!(code, 4403);
    assert!(reason.contains("expired"), "{reason}");
    assert!(now() >= exp, "closed before exp");
    wait_subscriptions(&rt, 0).await;
}

#[tokio::test]
async fn allow_refuses_subscribe_with_forbidden_and_the_socket_stays_open() {
    let rt = spawn(&format!(
        "{}[[subscriptions]]\nfield = \"counter\"\nallow = \"'ops' in claims.roles\"\n",
        jwt_auth("")
    ))
    .await;
    let dev = hs256(json!({"sub": "dev", "roles": ["dev"]}), 600);
    let (mut c, first) = Client::init(rt.addr, &[], json!({"Authorization": dev})).await;
    assert!(acked(&first));
    c.subscribe("1", "subscription { counter }").await;
    let error = c.recv().await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["id"], "1");
    assert_eq!(error["payload"][0]["extensions"]["code"], "FORBIDDEN");
    // Still open: another field is allowed and delivers.
    c.subscribe("2", "subscription { item { n } }").await;
    wait_subscriptions(&rt, 1).await;
    publish(rt.webhook, json!({"topic": "item", "payload": {"n": 1}})).await;
    assert_eq!(c.recv().await["payload"]["data"]["item"]["n"], 1);

    let ops = hs256(json!({"sub": "op", "roles": ["ops"]}), 600);
    let (mut o, first) = Client::init(rt.addr, &[], json!({"Authorization": ops})).await;
    assert!(acked(&first));
    o.subscribe("1", "subscription { counter }").await;
    wait_subscriptions(&rt, 2).await;
    publish(rt.webhook, json!({"topic": "counter", "payload": 5})).await;
    assert_eq!(o.recv().await["payload"]["data"]["counter"], 5);
}

#[tokio::test]
async fn fifty_tenants_interleaved_never_see_each_others_events() {
    const TENANTS: usize = 50;
    const ROUNDS: usize = 10;
    let rt = spawn(&format!(
        "{}[[subscriptions]]\nfield = \"item\"\nfilter = \"event.tenant == claims.tenant\"\n",
        jwt_auth("")
    ))
    .await;
    // Two sockets per tenant.
    let mut clients = Vec::new();
    for i in 0..TENANTS * 2 {
        let tenant = format!("t{}", i % TENANTS);
        let token = hs256(json!({"sub": format!("u{i}"), "tenant": tenant}), 600);
        let (mut c, first) = Client::init(rt.addr, &[], json!({"Authorization": token})).await;
        assert!(acked(&first));
        c.subscribe("s", "subscription { item { kind n } }").await;
        clients.push((tenant, c));
    }
    wait_subscriptions(&rt, TENANTS * 2).await;
    // Rounds of events interleaved across tenants, then a last marker each.
    let mut events = Vec::new();
    for round in 0..=ROUNDS {
        for t in 0..TENANTS {
            let n = if round == ROUNDS { 999 } else { round };
            events.push(json!({"topic": "item", "payload": {"tenant": format!("t{t}"), "kind": format!("t{t}"), "n": n}}));
        }
    }
    publish(rt.webhook, Value::Array(events)).await;
    for (tenant, c) in &mut clients {
        let mut seen = Vec::new();
        loop {
            let m = c.recv().await;
            let item = &m["payload"]["data"]["item"];
            assert_eq!(item["kind"], tenant.as_str(), "{tenant} received {m}");
            if item["n"] == 999 {
                break;
            }
            seen.push(item["n"].as_u64().unwrap() as usize);
        }
        assert_eq!(seen, (0..ROUNDS).collect::<Vec<_>>(), "{tenant}");
    }
}

#[tokio::test]
async fn jwks_url_keys_verify_rs256_es256_and_eddsa_and_refresh_on_unknown_kid() {
    let rsa = SigningKey::rsa("rsa-1");
    let ec = SigningKey::es256("ec-1");
    let ed = SigningKey::ed25519("ed-1");
    let server = JwksServer::start(jwks(&[&rsa, &ec])).await;
    let rt = spawn(&format!(
        "[auth]\nmode = \"jwt\"\n[auth.jwt]\njwks_url = \"{}\"\nleeway = \"0s\"\n",
        server.url()
    ))
    .await;
    // The scheduled fetch at start-up; then let it store the keys, so the
    // on-demand refresh below is the first one.
    tokio::time::timeout(PATIENCE, async {
        while server.fetches() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("subcar fetched the JWKS at start-up");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let init = |token: String| {
        Client::init(
            rt.addr,
            &[],
            json!({"Authorization": format!("Bearer {token}")}),
        )
    };
    for key in [&rsa, &ec] {
        let (_c, first) = init(key.sign(json!({"sub": "u"}))).await;
        assert!(acked(&first), "{:?}: {first:?}", key.alg);
    }
    assert_eq!(server.fetches(), 1);

    // Key rotation: a token under the new kid makes subcar fetch again.
    server.serve(jwks(&[&rsa, &ec, &ed]));
    let (_c, first) = init(ed.sign(json!({"sub": "u"}))).await;
    assert!(acked(&first), "EdDSA after rotation: {first:?}");
    assert_eq!(server.fetches(), 2);

    // Unknown kids are refused, and do not make subcar fetch again and again.
    for i in 0..5 {
        let (_c, first) = init(ed.sign_as(&format!("forged-{i}"), json!({"sub": "u"}))).await;
        closed_with(first, 4403, "unknown signing key");
    }
    assert_eq!(server.fetches(), 2);
    // A known kid with another key's signature.
    let impostor = SigningKey::es256("ec-1");
    let (_c, first) = init(impostor.sign(json!({"sub": "u"}))).await;
    closed_with(first, 4403, "invalid signature");
    // An HS256 token naming an RSA key's kid (algorithm confusion).
    let (_c, first) = init(hs256(json!({"sub": "u"}), 600)).await;
    closed_with(first, 4403, "algorithm not accepted");
}

#[tokio::test]
async fn jwks_path_keys_are_read_from_a_file() {
    let ed = SigningKey::ed25519("ed-file");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), jwks(&[&ed])).unwrap();
    let rt = spawn(&format!(
        "[auth]\nmode = \"jwt\"\n[auth.jwt]\njwks_path = \"{}\"\nalgorithms = [\"EdDSA\"]\n",
        file.path().display()
    ))
    .await;
    let (_c, first) = Client::init(
        rt.addr,
        &[],
        json!({"Authorization": ed.sign(json!({"sub": "u"}))}),
    )
    .await;
    assert!(acked(&first), "{first:?}");
    let other = SigningKey::ed25519("other");
    let (_c, first) = Client::init(
        rt.addr,
        &[],
        json!({"Authorization": other.sign(json!({}))}),
    )
    .await;
    closed_with(first, 4403, "unknown signing key");
}

const UPSTREAM_AUTH: &str = r#"
[auth]
mode = "upstream"
[auth.upstream]
query = "{ me { id tenant } }"
cache_ttl = "1m"
[[subscriptions]]
field = "item"
filter = "event.tenant == claims.me.tenant"
"#;

#[tokio::test]
async fn upstream_auth_admits_on_data_refuses_on_errors_and_caches_claims() {
    let upstream = TestUpstream::start().await;
    let rt = spawn_with_upstream(&upstream.url(), UPSTREAM_AUTH).await;
    let me_queries = || {
        upstream
            .recorded()
            .iter()
            .filter(|r| String::from_utf8_lossy(&r.body).contains("me {"))
            .count()
    };
    let (mut c, first) = Client::init(
        rt.addr,
        &[],
        json!({"Authorization": "Bearer user:u1:acme"}),
    )
    .await;
    assert!(acked(&first), "{first:?}");
    assert_eq!(me_queries(), 1);
    // The upstream saw the client's credentials.
    assert_eq!(
        upstream.last().headers["authorization"],
        "Bearer user:u1:acme"
    );

    // Claims are the response's data: the filter scopes by them.
    c.subscribe("1", "subscription { item { kind } }").await;
    wait_subscriptions(&rt, 1).await;
    publish(
        rt.webhook,
        json!([
            {"topic": "item", "payload": {"tenant": "globex", "kind": "theirs"}},
            {"topic": "item", "payload": {"tenant": "acme", "kind": "ours"}},
        ]),
    )
    .await;
    assert_eq!(c.recv().await["payload"]["data"]["item"]["kind"], "ours");

    // Same credential again: answered from the cache.
    let (_c2, first) = Client::init(
        rt.addr,
        &[("authorization", "Bearer user:u1:acme")],
        json!({}),
    )
    .await;
    assert!(acked(&first), "{first:?}");
    assert_eq!(me_queries(), 1);

    // The upstream answers errors: refused, and not cached.
    for _ in 0..2 {
        let (_c, first) =
            Client::init(rt.addr, &[], json!({"Authorization": "Bearer nobody"})).await;
        closed_with(first, 4403, "refused by the upstream");
    }
    assert_eq!(me_queries(), 3);
}

#[tokio::test]
async fn upstream_auth_with_the_upstream_down_closes_1013_to_retry() {
    let rt = spawn_with_upstream(&support::upstream::closed_port_url(), UPSTREAM_AUTH).await;
    let (_c, first) = Client::init(
        rt.addr,
        &[],
        json!({"Authorization": "Bearer user:u1:acme"}),
    )
    .await;
    closed_with(first, 1013, "authentication unavailable");
}

#[tokio::test]
async fn proxy_require_answers_401_and_passes_credentials_through_untouched() {
    let upstream = TestUpstream::start().await;
    let subcar = TestSubcar::builder(upstream.url())
        .extra(&hs256_auth("proxy = \"require\""))
        .spawn()
        .await;
    let client = reqwest::Client::new();
    let query = json!({"query": "{ hello }"});
    let res = client
        .post(subcar.graphql_url())
        .json(&query)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
    assert!(
        upstream.recorded().is_empty(),
        "nothing reached the upstream"
    );

    let bearer = format!("Bearer {}", hs256(json!({"sub": "u1"}), 600));
    let res = client
        .post(subcar.graphql_url())
        .header("authorization", &bearer)
        .json(&query)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["data"]["hello"], "Hello, world!");
    assert_eq!(upstream.last().headers["authorization"], bearer.as_str());
}

#[tokio::test]
async fn proxy_passthrough_leaves_the_decision_to_the_upstream() {
    let upstream = TestUpstream::start().await;
    let subcar = TestSubcar::builder(upstream.url())
        .extra(&hs256_auth(""))
        .spawn()
        .await;
    let (status, body) =
        support::post_json(&subcar.graphql_url(), json!({"query": "{ hello }"})).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["hello"], "Hello, world!");
}
