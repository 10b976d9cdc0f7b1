//! Hostile GraphQL documents (issue 14, findings 1-3) over real sockets
//! and HTTP against the real test upstream: fragment cycles that used to
//! overflow the stack, field-merge blowups, introspection amplification,
//! every `[limits.document]` cap with its code, and
//! `schema.introspection = false` on every path. After each hostile input
//! the process must still answer `/healthz` and an already-connected
//! subscriber must still receive a webhook event.

mod support;

use std::future::Future;
use std::time::Duration;

use serde_json::{Value, json};
use support::{Client, TestSubcar, TestUpstream, publish};

/// A schema with a self-referential type (`Incident.parent`).
const SCHEMA: &str = r#"
type Query { hello: String }
type Incident { id: ID! title: String parent: Incident }
type Subscription {
  incidentUpdated: Incident
  counter: Int
}
"#;

/// Generous: a regression fails instead of hanging; never a timing claim.
const GENEROUS: Duration = Duration::from_secs(20);

struct Rt {
    subcar: TestSubcar,
    _upstream: TestUpstream,
    /// Subscribed to `counter` before any hostile input.
    watcher: Client,
}

impl std::ops::Deref for Rt {
    type Target = TestSubcar;
    fn deref(&self) -> &TestSubcar {
        &self.subcar
    }
}

async fn spawn(extra: &str) -> Rt {
    spawn_with(extra, "").await
}

async fn spawn_with(extra: &str, schema_keys: &str) -> Rt {
    let upstream = TestUpstream::start().await;
    let subcar = TestSubcar::builder(upstream.url())
        .sdl(SCHEMA)
        .server("drain_timeout = \"2s\"")
        .upstream("timeout = \"5s\"")
        .schema(schema_keys)
        .extra(extra)
        .spawn()
        .await;
    let mut watcher = Client::ready(subcar.addr).await;
    watcher.subscribe("watch", "subscription { counter }").await;
    let rt = Rt {
        subcar,
        _upstream: upstream,
        watcher,
    };
    rt.registered(1).await;
    rt
}

impl Rt {
    /// Waits until the registry holds `n` subscriptions (the watcher's
    /// among them).
    async fn registered(&self, n: usize) {
        generous(async {
            while self.registry.sizes().subscriptions != n {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await;
    }

    /// The process answers `/healthz` and the subscriber made before the
    /// hostile input still receives an event.
    async fn assert_alive(&mut self, n: i64) {
        let health =
            tokio::time::timeout(Duration::from_secs(5), reqwest::get(self.url("/healthz")))
                .await
                .expect("/healthz answered quickly")
                .expect("/healthz reachable");
        assert_eq!(health.status(), 200);
        publish(self.webhook, json!({"topic": "counter", "payload": n})).await;
        let next = self.watcher.recv().await;
        assert_eq!(
            next,
            json!({"id": "watch", "type": "next", "payload": {"data": {"counter": n}}})
        );
    }

    async fn post(&self, body: Value) -> (u16, Value) {
        let res = reqwest::Client::new()
            .post(self.url("/graphql"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path_and_query: &str) -> (u16, Value) {
        let res = reqwest::get(self.url(path_and_query)).await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Subscribes on a fresh socket and returns the first answer.
    async fn subscribe_once(&self, query: &str) -> Value {
        let mut c = Client::ready(self.addr).await;
        c.subscribe("1", query).await;
        c.recv().await
    }
}

async fn generous<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(GENEROUS, f)
        .await
        .expect("answered within the generous timeout")
}

fn code(error: &Value) -> &str {
    error["extensions"]["code"].as_str().unwrap_or_default()
}

fn assert_limit(errors: &Value, limit: &str) {
    assert_eq!(code(&errors[0]), "DOCUMENT_TOO_COMPLEX", "{errors}");
    assert_eq!(errors[0]["extensions"]["limit"], limit, "{errors}");
}

/// `fragment F0 { parent { ...F1 } parent { ...F1 } } … F{n} { id }`.
fn doubling_chain(n: usize) -> String {
    let mut doc = String::from("subscription { incidentUpdated { ...F0 } }");
    for i in 0..n {
        doc.push_str(&format!(
            " fragment F{i} on Incident {{ parent {{ ...F{j} }} parent {{ ...F{j} }} }}",
            j = i + 1
        ));
    }
    doc.push_str(&format!(" fragment F{n} on Incident {{ id }}"));
    doc
}

#[tokio::test]
async fn cyclic_fragments_in_introspection_over_http_are_refused_not_a_crash() {
    let mut rt = spawn("").await;
    let q = r#"{ __type(name: "__Type") { ...A } } fragment A on __Type { ofType { ...A } ofType { ...A } }"#;
    let (_, body) = generous(rt.post(json!({ "query": q }))).await;
    let errors = body["errors"].as_array().expect("errors");
    assert!(
        errors
            .iter()
            .any(|e| e["message"] == "Cannot spread fragment \"A\" within itself."),
        "{body}"
    );
    rt.assert_alive(1).await;
}

#[tokio::test]
async fn cyclic_fragments_in_a_subscription_over_the_socket_are_refused_not_a_crash() {
    let mut rt = spawn("").await;
    let q = "subscription { incidentUpdated { ...A } } fragment A on Incident { parent { ...A } parent { ...A } }";
    let answer = generous(rt.subscribe_once(q)).await;
    assert_eq!(answer["type"], "error", "{answer}");
    assert_eq!(
        answer["payload"][0]["message"],
        "Cannot spread fragment \"A\" within itself."
    );
    // A query over the socket is the upstream's to validate; parsing it
    // here must not recurse either.
    let q = "{ hello ...B } fragment B on Query { ...B ...B }";
    let answer = generous(rt.subscribe_once(q)).await;
    assert!(answer["payload"]["errors"].is_array(), "{answer}");
    rt.assert_alive(2).await;
}

#[tokio::test]
async fn a_doubling_fragment_chain_of_26_is_validated_fast_and_works() {
    let mut rt = spawn("").await;
    let mut c = Client::ready(rt.addr).await;
    c.subscribe("1", &doubling_chain(26)).await;
    rt.registered(2).await;
    publish(
        rt.webhook,
        json!({"topic": "incidentUpdated", "payload": {"id": "1", "parent": null}}),
    )
    .await;
    let next = c.recv().await;
    assert_eq!(
        next["payload"]["data"],
        json!({"incidentUpdated": {"parent": null}}),
        "{next}"
    );
    rt.assert_alive(3).await;
}

#[tokio::test]
async fn twenty_thousand_repeated_fields_are_refused_by_default_and_fast_when_allowed() {
    let fields = "id ".repeat(20_000);
    let q = format!("subscription {{ incidentUpdated {{ {fields} }} }}");
    let mut rt = spawn("").await;
    let answer = generous(rt.subscribe_once(&q)).await;
    assert_limit(&answer["payload"], "max_tokens");
    rt.assert_alive(4).await;

    let mut rt =
        spawn("[limits]\nmax_message_bytes = 1048576\n[limits.document]\nmax_tokens = 100000")
            .await;
    let mut c = Client::ready(rt.addr).await;
    c.subscribe("1", &q).await;
    rt.registered(2).await;
    publish(
        rt.webhook,
        json!({"topic": "incidentUpdated", "payload": {"id": "9"}}),
    )
    .await;
    assert_eq!(
        c.recv().await["payload"]["data"],
        json!({"incidentUpdated": {"id": "9"}})
    );
    rt.assert_alive(5).await;
}

#[tokio::test]
async fn many_same_key_fields_with_distinct_selections_hit_the_merge_cap() {
    let mut rt = spawn("[limits.document]\nmax_aliases = 10000").await;
    let many: String = (0..1800)
        .map(|i| format!("parent {{ t{i}: title }} "))
        .collect();
    let q = format!("subscription {{ incidentUpdated {{ {many} }} }}");
    let answer = generous(rt.subscribe_once(&q)).await;
    assert_eq!(answer["type"], "error", "{answer}");
    let errors = answer["payload"].as_array().unwrap();
    let capped = errors.last().unwrap();
    assert_eq!(code(capped), "DOCUMENT_TOO_COMPLEX", "{answer}");
    assert_eq!(capped["extensions"]["limit"], "max_merge_comparisons");
    rt.assert_alive(10).await;
}

#[tokio::test]
async fn introspection_responses_are_capped() {
    let mut rt = spawn("[limits.document]\nmax_introspection_bytes = 2000").await;
    let (status, body) =
        generous(rt.post(json!({ "query": subcar::graphql::INTROSPECTION_QUERY }))).await;
    assert_eq!(status, 200);
    assert_limit(&body["errors"], "max_introspection_bytes");
    assert!(body.get("data").is_none(), "{body}");
    rt.assert_alive(6).await;

    // Under the default cap, the whole answer.
    let rt2 = spawn("").await;
    let (_, body) =
        generous(rt2.post(json!({ "query": subcar::graphql::INTROSPECTION_QUERY }))).await;
    assert_eq!(
        body["data"]["__schema"]["queryType"]["name"], "Query",
        "{body}"
    );
}

#[tokio::test]
async fn each_document_limit_is_refused_with_its_code_on_the_socket() {
    let mut rt = spawn(
        "[limits.document]\nmax_tokens = 400\nmax_depth = 4\nmax_aliases = 3\nmax_fragments = 2",
    )
    .await;
    let cases = [
        (
            format!("subscription {{ incidentUpdated {{ {} }} }}", "id ".repeat(500)),
            "max_tokens",
        ),
        (
            "subscription { incidentUpdated { parent { parent { parent { parent { id } } } } } }"
                .to_owned(),
            "max_depth",
        ),
        (
            "subscription { incidentUpdated { ...P } } fragment P on Incident { parent { parent { parent { parent { id } } } } }"
                .to_owned(),
            "max_depth",
        ),
        (
            "subscription { incidentUpdated { a: id b: id c: id d: id } }".to_owned(),
            "max_aliases",
        ),
        (
            "subscription { incidentUpdated { ...A ...B ...C } } fragment A on Incident { id } fragment B on Incident { id } fragment C on Incident { id }".to_owned(),
            "max_fragments",
        ),
        // Within limits.max_message_bytes (64 KiB).
        ("{a".repeat(20_000), "max_depth"),
        (
            format!("subscription {{ incidentUpdated(x: {}) {{ id }} }}", "[".repeat(40_000)),
            "max_depth",
        ),
        // A query over the socket is capped the same way.
        ("{ a: hello b: hello c: hello d: hello }".to_owned(), "max_aliases"),
    ];
    for (q, limit) in &cases {
        let answer = generous(rt.subscribe_once(q)).await;
        assert_eq!(answer["type"], "error", "{limit}: {answer}");
        assert_limit(&answer["payload"], limit);
    }
    rt.assert_alive(7).await;
}

#[tokio::test]
async fn the_proxy_decision_is_bounded_too() {
    let mut rt = spawn("[limits.document]\nmax_tokens = 400").await;
    // The word "subscription" makes the proxy parse the document.
    let q = format!("query subscriptionCount {{ {} }}", "hello ".repeat(1000));
    let (status, body) = generous(rt.post(json!({ "query": q }))).await;
    assert_eq!(status, 400, "{body}");
    assert_limit(&body["errors"], "max_tokens");
    let deep = format!("subscription {}", "{a".repeat(100_000));
    let (status, body) = generous(rt.post(json!({ "query": deep }))).await;
    assert_eq!(status, 400, "{body}");
    assert_limit(&body["errors"], "max_depth");
    let (status, body) = generous(rt.get(&format!(
        "/graphql?query=subscription%20{}",
        "%7Ba".repeat(10_000)
    )))
    .await;
    assert_eq!(status, 400, "{body}");
    assert_limit(&body["errors"], "max_depth");
    // An ordinary query still reaches the upstream.
    let (status, body) = rt.post(json!({ "query": "{ hello }" })).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("errors").is_none(), "{body}");
    rt.assert_alive(8).await;
}

#[tokio::test]
async fn introspection_disabled_is_refused_on_every_path() {
    let mut rt = spawn_with("", "introspection = false").await;
    let refused = |status: u16, body: &Value| {
        assert_eq!(status, 400, "{body}");
        assert_eq!(code(&body["errors"][0]), "INTROSPECTION_DISABLED", "{body}");
    };
    // POST, alone and beside an ordinary field, and in a batch.
    let (s, b) = rt
        .post(json!({ "query": subcar::graphql::INTROSPECTION_QUERY }))
        .await;
    refused(s, &b);
    let (s, b) = rt
        .post(json!({ "query": "{ hello ...F } fragment F on Query { __type(name: \"Query\") { name } }" }))
        .await;
    refused(s, &b);
    let (s, b) = rt
        .post(json!([{ "query": "{ hello }" }, { "query": "{ __schema { queryType { name } } }" }]))
        .await;
    refused(s, &b);
    // GET.
    let (s, b) = rt
        .get("/graphql?query=%7B%20__schema%20%7B%20queryType%20%7B%20name%20%7D%20%7D%20%7D")
        .await;
    refused(s, &b);
    // Escaped names are decoded before looking.
    let (s, b) = rt
        .get("/graphql?query=%7B%20%5F%5Fschema%20%7B%20queryType%20%7B%20name%20%7D%20%7D%20%7D")
        .await;
    refused(s, &b);
    let res = reqwest::Client::new()
        .post(rt.url("/graphql"))
        .header("content-type", "application/json")
        .body(r#"{"query":"{ \u005f\u005fschema { queryType { name } } }"}"#)
        .send()
        .await
        .unwrap();
    let s = res.status().as_u16();
    refused(s, &res.json().await.unwrap());
    // application/graphql.
    let res = reqwest::Client::new()
        .post(rt.url("/graphql"))
        .header("content-type", "application/graphql")
        .body("{ __schema { queryType { name } } }")
        .send()
        .await
        .unwrap();
    let s = res.status().as_u16();
    refused(s, &res.json().await.unwrap());
    // The socket: a query, and a subscription document.
    let answer = rt
        .subscribe_once("{ __schema { queryType { name } } }")
        .await;
    assert_eq!(
        code(&answer["payload"][0]),
        "INTROSPECTION_DISABLED",
        "{answer}"
    );
    let answer = rt
        .subscribe_once(
            "subscription { incidentUpdated { id ... on Query { __type(name: \"X\") { name } } } }",
        )
        .await;
    assert_eq!(
        code(&answer["payload"][0]),
        "INTROSPECTION_DISABLED",
        "{answer}"
    );
    // The SDL is not published.
    let res = reqwest::get(rt.url("/graphql/schema.graphql"))
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    // __typename is not introspection.
    let (s, b) = rt.post(json!({ "query": "{ __typename hello }" })).await;
    assert_eq!(s, 200, "{b}");
    assert!(b.get("errors").is_none(), "{b}");
    rt.assert_alive(9).await;

    // Enabled (the default): answered, and the SDL is served.
    let rt2 = spawn("").await;
    let (s, b) = rt2
        .post(json!({ "query": "{ __schema { queryType { name } } }" }))
        .await;
    assert_eq!(s, 200);
    assert_eq!(b["data"]["__schema"]["queryType"]["name"], "Query");
    let res = reqwest::get(rt2.url("/graphql/schema.graphql"))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}
