//! Enrichment (`[subscriptions.resolve]`) end to end over real sockets:
//! key-only events posted to the webhook are completed from the real test
//! upstream's `ticket(id:)` query (tests/support/upstream.rs) with each
//! subscriber's own selection set and credentials. What is delivered, how
//! many upstream requests one event costs, who sees what, upstream failures,
//! ordering, resume, and start-up validation of the configuration.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::upstream::{self, Recorded};
use support::{Builder, TestSubcar, TestUpstream, manifest_dir};
use support::{Client, PATIENCE, publish};

/// The operation name of subcar's upstream fetches; counts them in the
/// upstream's recorded bodies (upstream authentication's `me` queries do
/// not carry it).
const RESOLVE: &str = "SubcarResolve";

/// `[[subscriptions]]` for `field` on `topic` with a
/// `[subscriptions.resolve]` of `resolve` lines.
fn subscription(field: &str, topic: &str, resolve: &str) -> String {
    format!(
        "[[subscriptions]]\nfield = \"{field}\"\ntopic = \"{topic}\"\n[subscriptions.resolve]\n{resolve}\n"
    )
}

/// `field` on `topic` completed by the upstream's `ticket(id: event.id)`,
/// with more `[subscriptions.resolve]` lines.
fn resolved(field: &str, topic: &str, resolve: &str) -> String {
    subscription(
        field,
        topic,
        &format!("query_field = \"ticket\"\nargs = {{ id = \"event.id\" }}\n{resolve}"),
    )
}

/// `ticketUpdated` on topic `ticket.updated`, resolved.
fn ticket_updated(resolve: &str) -> String {
    resolved("ticketUpdated", "ticket.updated", resolve)
}

/// Upstream authentication: `claims = {"me": {"id": …, "tenant": …}}`.
const UPSTREAM_AUTH: &str =
    "[auth]\nmode = \"upstream\"\n[auth.upstream]\nquery = \"{ me { id tenant } }\"\n";

/// subcar on the enrichment SDL, the upstream part learned by introspection.
fn builder(upstream_url: &str) -> Builder {
    TestSubcar::builder(upstream_url)
        .introspect()
        .schema_path(manifest_dir().join("tests/fixtures/enrich/schema.graphql"))
}

/// A live test upstream and subcar in front of it.
struct Env {
    upstream: TestUpstream,
    subcar: TestSubcar,
}

impl Env {
    /// `upstream` lines go to `[upstream]`, `extra` after the other sections.
    async fn start(upstream: &str, extra: &str) -> Self {
        let up = TestUpstream::start().await;
        let subcar = builder(&up.url())
            .upstream(upstream)
            .extra(extra)
            .spawn()
            .await;
        Self {
            upstream: up,
            subcar,
        }
    }

    /// [`Self::start`] with user `u1` of `ops` subscribed as `s` to ids and titles.
    async fn one_subscriber(upstream: &str, extra: &str) -> (Self, Client) {
        let env = Self::start(upstream, extra).await;
        let mut c = env.user("u1", "ops").await;
        subscribe(&mut c, "s", ID_TITLE, json!({})).await;
        env.wait_subscriptions(1).await;
        (env, c)
    }

    /// A connection whose `connection_init` carries `Bearer user:<id>:<tenant>`.
    async fn user(&self, id: &str, tenant: &str) -> Client {
        connect(
            &self.subcar,
            &[],
            json!({"Authorization": bearer(id, tenant)}),
        )
        .await
    }

    fn resolves(&self) -> usize {
        self.upstream.count_containing(RESOLVE)
    }

    async fn publish(&self, topic: &str, payload: Value) {
        publish(
            self.subcar.webhook,
            json!({"topic": topic, "payload": payload}),
        )
        .await;
    }

    async fn wait_subscriptions(&self, n: usize) {
        wait_subscriptions(&self.subcar, n).await;
    }
}

fn bearer(id: &str, tenant: &str) -> String {
    format!("Bearer user:{id}:{tenant}")
}

/// Connects with upgrade `headers` and a `connection_init` `payload`;
/// expects the ack.
async fn connect(subcar: &TestSubcar, headers: &[(&str, &str)], payload: Value) -> Client {
    let (c, first) = Client::init(subcar.addr, headers, payload).await;
    match first {
        support::Next::Json(v) if v["type"] == "connection_ack" => c,
        other => panic!("expected connection_ack, got {other:?}"),
    }
}

/// Waits until the registry holds `n` subscriptions.
async fn wait_subscriptions(subcar: &TestSubcar, n: usize) {
    tokio::time::timeout(PATIENCE, async {
        while subcar.registry.sizes().subscriptions != n {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("registry holds {:?}", subcar.registry.sizes()));
}

async fn subscribe(c: &mut Client, id: &str, query: &str, variables: Value) {
    c.send(
        json!({"id": id, "type": "subscribe", "payload": {"query": query, "variables": variables}}),
    )
    .await;
}

/// The next message, which must be a `next` for `id`; returns its payload.
async fn next_for(c: &mut Client, id: &str) -> Value {
    let m = c.recv().await;
    assert_eq!((&m["type"], &m["id"]), (&json!("next"), &json!(id)), "{m}");
    m["payload"].clone()
}

/// `n` messages, by subscription id (order kept within an id: messages of
/// different subscriptions of one socket may interleave).
async fn payloads_by_id(c: &mut Client, n: usize) -> BTreeMap<String, Vec<Value>> {
    let mut by_id: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for _ in 0..n {
        let m = c.recv().await;
        assert_eq!(m["type"], "next", "{m}");
        by_id
            .entry(m["id"].as_str().unwrap().to_owned())
            .or_default()
            .push(m["payload"].clone());
    }
    by_id
}

/// Proves nothing else is waiting on the socket: a ping is answered by the
/// pong first.
async fn nothing_more(c: &mut Client) {
    c.send(json!({"type": "ping"})).await;
    let m = c.recv().await;
    assert_eq!(m["type"], "pong", "unexpected message {m}");
}

/// The `errors` entry with `extensions.code == code`.
fn error_coded<'a>(payload: &'a Value, code: &str) -> &'a Value {
    payload["errors"]
        .as_array()
        .and_then(|errors| errors.iter().find(|e| e["extensions"]["code"] == code))
        .unwrap_or_else(|| panic!("no {code} error in {payload}"))
}

fn body_json(r: &Recorded) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

fn header<'a>(r: &'a Recorded, name: &str) -> Option<&'a str> {
    r.headers.get(name).map(|v| v.to_str().unwrap())
}

/// The tenant of a recorded request's `Bearer user:<id>:<tenant>`.
fn tenant_of(r: &Recorded) -> String {
    header(r, "authorization")
        .and_then(|a| a.rsplit(':').next())
        .unwrap_or("-")
        .to_owned()
}

/// Whether `word` appears in `text` as a whole identifier.
fn has_word(text: &str, word: &str) -> bool {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .any(|w| w == word)
}

// ---------------------------------------------------------------------------
// What is delivered

const WATCH: &str = r#"subscription Watch($withNotes: Boolean!, $skipTags: Boolean = false) {
  ticketUpdated {
    id
    headline: title
    severity
    tags @skip(if: $skipTags)
    owner { ...person }
    notes @include(if: $withNotes)
    lastActivity {
      __typename
      ... on Comment { text }
      ... on StatusChange { from to }
    }
  }
}
fragment person on User { id name }"#;

const CARD: &str = r#"subscription { t: ticketUpdated { ...card } }
fragment card on Ticket { title lastActivity { ...activity } }
fragment activity on Activity { ... on StatusChange { to } ... on Comment { __typename } }"#;

#[tokio::test]
async fn key_only_events_are_completed_for_each_selection_set() {
    let env = Env::start("", &ticket_updated("")).await;
    let mut c = env.user("u1", "ops").await;
    subscribe(&mut c, "full", WATCH, json!({"withNotes": true})).await;
    subscribe(
        &mut c,
        "lean",
        WATCH,
        json!({"withNotes": false, "skipTags": true}),
    )
    .await;
    subscribe(&mut c, "card", CARD, json!({})).await;
    env.wait_subscriptions(3).await;
    env.publish("ticket.updated", json!({"id": "ops-1"})).await;
    env.publish("ticket.updated", json!({"id": "ops-2"})).await;

    let got = payloads_by_id(&mut c, 6).await;
    let ada = json!({"id": "u1", "name": "Ada"});
    let comment = json!({"__typename": "Comment", "text": "on it"});
    let change = json!({"__typename": "StatusChange", "from": "open", "to": "resolved"});
    assert_eq!(
        got["full"],
        [
            json!({"data": {"ticketUpdated": {"id": "ops-1", "headline": "db down", "severity": "P1",
                "tags": ["db", "prod"], "owner": ada, "notes": "failover to the replica", "lastActivity": comment}}}),
            json!({"data": {"ticketUpdated": {"id": "ops-2", "headline": "disk full", "severity": "P2",
                "tags": [], "owner": null, "notes": "grow the volume", "lastActivity": change}}}),
        ]
    );
    assert_eq!(
        got["lean"],
        [
            json!({"data": {"ticketUpdated": {"id": "ops-1", "headline": "db down", "severity": "P1",
                "owner": ada, "lastActivity": comment}}}),
            json!({"data": {"ticketUpdated": {"id": "ops-2", "headline": "disk full", "severity": "P2",
                "owner": null, "lastActivity": change}}}),
        ]
    );
    assert_eq!(
        got["card"],
        [
            json!({"data": {"t": {"title": "db down", "lastActivity": {"__typename": "Comment"}}}}),
            json!({"data": {"t": {"title": "disk full", "lastActivity": {"to": "resolved"}}}}),
        ]
    );
    nothing_more(&mut c).await;

    // Three groups × two events, one credential: six fetches, each named
    // SubcarResolve and sent with the subscriber's credentials.
    let fetches = env.upstream.bodies_containing(RESOLVE);
    assert_eq!(fetches.len(), 6);
    for r in &fetches {
        let body = body_json(r);
        assert_eq!(body["operationName"], RESOLVE, "{body}");
        let query = body["query"].as_str().unwrap();
        assert!(query.contains("query SubcarResolve"), "{query}");
        assert_eq!(header(r, "authorization"), Some("Bearer user:u1:ops"));
    }
    for r in &fetches {
        let query = body_json(r)["query"].as_str().unwrap().to_owned();
        assert!(
            query.contains("__typename"),
            "subcar adds __typename: {query}"
        );
    }
    // The WATCH groups' fetches keep its aliases, fragments and variables.
    let watch: Vec<Value> = fetches
        .iter()
        .map(body_json)
        .filter(|b| b["query"].as_str().unwrap().contains("headline"))
        .collect();
    assert_eq!(watch.len(), 4, "{watch:?}");
    for body in &watch {
        assert!(body["query"].as_str().unwrap().contains("person"), "{body}");
    }
    let with_notes: Vec<&Value> = watch.iter().map(|b| &b["variables"]["withNotes"]).collect();
    assert_eq!(
        with_notes.iter().filter(|v| ***v == json!(true)).count(),
        2,
        "{watch:?}"
    );
}

#[tokio::test]
async fn resolve_args_may_read_the_subscribers_claims() {
    let env = Env::start(
        "",
        &format!(
            "{UPSTREAM_AUTH}{}",
            subscription(
                "ticketUpdated",
                "ticket.updated",
                "query_field = \"ticket\"\nargs = { id = \"claims.me.tenant + '-' + event.n\" }"
            )
        ),
    )
    .await;
    let mut ops = env.user("u1", "ops").await;
    let mut dev = env.user("u3", "dev").await;
    subscribe(&mut ops, "s", ID_TITLE, json!({})).await;
    subscribe(&mut dev, "s", ID_TITLE, json!({})).await;
    env.wait_subscriptions(2).await;
    env.publish("ticket.updated", json!({"n": "1"})).await;
    next_is_ticket(&mut ops, "s", "ops-1", "db down").await;
    next_is_ticket(&mut dev, "s", "dev-1", "flaky test").await;
}

#[tokio::test]
async fn the_upstream_gets_the_authorization_and_cookie_of_the_upgrade_request() {
    let env = Env::start("", &ticket_updated("")).await;
    let mut c = connect(
        &env.subcar,
        &[
            ("authorization", "Bearer user:u1:ops"),
            ("cookie", "session=s1; theme=dark"),
        ],
        json!({}),
    )
    .await;
    subscribe(
        &mut c,
        "1",
        "subscription { ticketUpdated { id notes } }",
        json!({}),
    )
    .await;
    env.wait_subscriptions(1).await;
    env.publish("ticket.updated", json!({"id": "ops-1"})).await;
    assert_eq!(
        next_for(&mut c, "1").await,
        json!({"data": {"ticketUpdated": {"id": "ops-1", "notes": "failover to the replica"}}})
    );
    let fetch = env.upstream.bodies_containing(RESOLVE).pop().unwrap();
    assert_eq!(header(&fetch, "authorization"), Some("Bearer user:u1:ops"));
    assert_eq!(header(&fetch, "cookie"), Some("session=s1; theme=dark"));
}

#[tokio::test]
async fn payload_fields_win_by_default_and_upstream_values_with_prefer_upstream() {
    let env = Env::start(
        "",
        &format!(
            "{}{}",
            ticket_updated(""),
            resolved("ticketClosed", "ticket.closed", "prefer = \"upstream\"")
        ),
    )
    .await;
    let mut c = env.user("u1", "ops").await;
    subscribe(
        &mut c,
        "updated",
        "subscription { ticketUpdated { id title severity tags } }",
        json!({}),
    )
    .await;
    subscribe(
        &mut c,
        "closed",
        "subscription { ticketClosed { id title severity tags } }",
        json!({}),
    )
    .await;
    env.wait_subscriptions(2).await;
    let event = json!({"id": "ops-1", "title": "from the event", "severity": "P3"});
    env.publish("ticket.updated", event.clone()).await;
    env.publish("ticket.closed", event).await;
    let got = payloads_by_id(&mut c, 2).await;
    assert_eq!(
        got["updated"],
        [
            json!({"data": {"ticketUpdated": {"id": "ops-1", "title": "from the event", "severity": "P3", "tags": ["db", "prod"]}}})
        ]
    );
    assert_eq!(
        got["closed"],
        [
            json!({"data": {"ticketClosed": {"id": "ops-1", "title": "db down", "severity": "P1", "tags": ["db", "prod"]}}})
        ]
    );
}

// ---------------------------------------------------------------------------
// How many fetches

const NOTES: &str = "subscription { ticketUpdated { id notes } }";
const TITLES: &str = "subscription { ticketUpdated { title tags } }";

/// Six subscribers: two selection sets × three users in two tenants
/// (u1, u2 of `ops`; u3 of `dev`), with the payload each must receive for
/// ticket `public-<n>`.
async fn six_subscribers(env: &Env) -> Vec<(Client, &'static str, &'static str)> {
    let mut subs = Vec::new();
    for (query, selection) in [(NOTES, "notes"), (TITLES, "titles")] {
        for (user, tenant) in [("u1", "ops"), ("u2", "ops"), ("u3", "dev")] {
            let mut c = env.user(user, tenant).await;
            subscribe(&mut c, "s", query, json!({})).await;
            subs.push((c, selection, tenant));
        }
    }
    env.wait_subscriptions(6).await;
    subs
}

/// What subscriber `(selection, tenant)` of [`six_subscribers`] receives
/// for ticket `id` (`public-…`): notes are for `ops` only.
fn expected_for(selection: &str, tenant: &str, id: &str) -> Value {
    let ticket = match selection {
        "notes" if tenant == "ops" => json!({"id": id, "notes": format!("notes of {id}")}),
        "notes" => json!({"id": id, "notes": null}),
        _ => json!({"title": format!("Ticket {id}"), "tags": ["public"]}),
    };
    json!({"data": {"ticketUpdated": ticket}})
}

async fn each_receives(subs: &mut [(Client, &'static str, &'static str)], id: &str) {
    for (c, selection, tenant) in subs.iter_mut() {
        assert_eq!(
            next_for(c, "s").await,
            expected_for(selection, tenant, id),
            "{selection} subscriber of {tenant}"
        );
    }
}

/// [`six_subscribers`] with `share_by` on the tenant, after each received
/// exactly what its rights allow for one event (ticket `public-1`).
async fn six_sharing_by_tenant_receive_one_event(
    upstream: &str,
) -> (Env, Vec<(Client, &'static str, &'static str)>) {
    let env = Env::start(
        upstream,
        &format!(
            "{UPSTREAM_AUTH}{}",
            ticket_updated("share_by = \"claims.me.tenant\"")
        ),
    )
    .await;
    let mut subs = six_subscribers(&env).await;
    env.publish("ticket.updated", json!({"id": "public-1"}))
        .await;
    each_receives(&mut subs, "public-1").await;
    (env, subs)
}

#[tokio::test]
async fn one_fetch_per_selection_set_and_share_by_value() {
    let (env, mut subs) = six_sharing_by_tenant_receive_one_event("").await;
    // 2 selection sets × 2 tenants.
    let fetches = env.upstream.bodies_containing(RESOLVE);
    assert_eq!(fetches.len(), 4);
    let mut tenants: Vec<String> = fetches.iter().map(tenant_of).collect();
    tenants.sort();
    assert_eq!(tenants, ["dev", "dev", "ops", "ops"]);
    for (c, _, _) in &mut subs {
        nothing_more(c).await;
    }
    assert_eq!(env.resolves(), 4);
}

#[tokio::test]
async fn without_share_by_subscribers_share_a_fetch_only_with_the_same_credentials() {
    let env = Env::start("", &ticket_updated("")).await;
    let u1 = bearer("u1", "ops");
    let u2 = bearer("u2", "ops");
    let mut clients = vec![
        // The same credentials from the upgrade request and from the init payload.
        connect(&env.subcar, &[("authorization", &u1)], json!({})).await,
        connect(&env.subcar, &[], json!({"Authorization": u1})).await,
        connect(&env.subcar, &[], json!({"Authorization": u2})).await,
        // The same Authorization with a cookie: other credentials.
        connect(
            &env.subcar,
            &[("authorization", &u2), ("cookie", "session=s2")],
            json!({}),
        )
        .await,
    ];
    for c in &mut clients {
        subscribe(c, "s", NOTES, json!({})).await;
    }
    env.wait_subscriptions(4).await;
    env.publish("ticket.updated", json!({"id": "ops-1"})).await;
    for c in &mut clients {
        assert_eq!(
            next_for(c, "s").await,
            json!({"data": {"ticketUpdated": {"id": "ops-1", "notes": "failover to the replica"}}})
        );
    }
    let mut credentials: Vec<(String, Option<String>)> = env
        .upstream
        .bodies_containing(RESOLVE)
        .iter()
        .map(|r| {
            (
                header(r, "authorization").unwrap_or("-").to_owned(),
                header(r, "cookie").map(str::to_owned),
            )
        })
        .collect();
    credentials.sort();
    assert_eq!(
        credentials,
        [
            (u1.clone(), None),
            (u2.clone(), None),
            (u2.clone(), Some("session=s2".to_owned())),
        ]
    );
}

/// Four selection sets of one subscriber: four groups with the same
/// credentials.
const FOUR: [&str; 4] = [
    "subscription { ticketUpdated { id } }",
    "subscription { ticketUpdated { title } }",
    "subscription { ticketUpdated { id notes } }",
    "subscription { t: ticketUpdated { tags } }",
];

#[tokio::test]
async fn with_batching_one_event_is_one_http_request_holding_every_fetch() {
    let env = Env::start("batching = true", &ticket_updated("")).await;
    let mut c = env.user("u1", "ops").await;
    for (i, query) in FOUR.iter().enumerate() {
        subscribe(&mut c, &i.to_string(), query, json!({})).await;
    }
    env.wait_subscriptions(4).await;
    env.publish("ticket.updated", json!({"id": "ops-1"})).await;
    let got = payloads_by_id(&mut c, 4).await;
    assert_eq!(
        got["0"],
        [json!({"data": {"ticketUpdated": {"id": "ops-1"}}})]
    );
    assert_eq!(
        got["1"],
        [json!({"data": {"ticketUpdated": {"title": "db down"}}})]
    );
    assert_eq!(
        got["2"],
        [json!({"data": {"ticketUpdated": {"id": "ops-1", "notes": "failover to the replica"}}})]
    );
    assert_eq!(got["3"], [json!({"data": {"t": {"tags": ["db", "prod"]}}})]);
    let requests = env.upstream.bodies_containing(RESOLVE);
    assert_eq!(requests.len(), 1, "one HTTP request for the event");
    let operations = body_json(&requests[0]);
    let operations = operations.as_array().expect("a JSON array of operations");
    assert_eq!(operations.len(), 4, "{operations:?}");
    for op in operations {
        assert_eq!(op["operationName"], RESOLVE, "{op}");
    }
    assert_eq!(
        header(&requests[0], "authorization"),
        Some("Bearer user:u1:ops")
    );

    env.publish("ticket.updated", json!({"id": "ops-2"})).await;
    assert_eq!(payloads_by_id(&mut c, 4).await.len(), 4);
    assert_eq!(env.resolves(), 2, "one more request for the second event");
}

#[tokio::test]
async fn with_batching_subscribers_of_different_rights_never_share_a_request() {
    // Each tenant sees its own notes: nothing was answered with another
    // tenant's credentials.
    let (env, _subs) = six_sharing_by_tenant_receive_one_event("batching = true").await;
    let requests = env.upstream.bodies_containing(RESOLVE);
    let operations: usize = requests
        .iter()
        .map(|r| body_json(r).as_array().expect("batched").len())
        .sum();
    assert_eq!(operations, 4, "2 selection sets × 2 tenants");
    // A request carries one set of credentials: one per tenant.
    let mut tenants: Vec<String> = requests.iter().map(tenant_of).collect();
    tenants.sort();
    tenants.dedup();
    assert_eq!(tenants, ["dev", "ops"]);
    // The groups of one tenant fetch with the same credentials: batched.
    assert_eq!(requests.len(), 2, "one request per tenant");
}

#[tokio::test]
async fn max_concurrency_caps_the_fetches_in_flight() {
    let env = Env::start("", &ticket_updated("max_concurrency = 2")).await;
    let mut clients = Vec::new();
    for i in 0..6 {
        // Six credentials: six fetches for one event.
        let mut c = env.user(&format!("u{i}"), "ops").await;
        subscribe(
            &mut c,
            "s",
            "subscription { ticketUpdated { id } }",
            json!({}),
        )
        .await;
        clients.push(c);
    }
    env.wait_subscriptions(6).await;
    env.publish("ticket.updated", json!({"id": "slow-150-public-1"}))
        .await;
    for c in &mut clients {
        assert_eq!(
            next_for(c, "s").await,
            json!({"data": {"ticketUpdated": {"id": "slow-150-public-1"}}})
        );
    }
    assert_eq!(env.resolves(), 6);
    let max = env.upstream.max_in_flight();
    assert!(max <= 2, "{max} fetches in flight at once");
}

// ---------------------------------------------------------------------------
// Who sees what

const ID_TITLE: &str = "subscription { ticketUpdated { id title } }";

fn id_title(id: &str, title: &str) -> Value {
    json!({"data": {"ticketUpdated": {"id": id, "title": title}}})
}

/// The next message of `c` is a `next` of subscription `sub` carrying the
/// ticket `id` with `title`.
async fn next_is_ticket(c: &mut Client, sub: &str, id: &str, title: &str) {
    assert_eq!(next_for(c, sub).await, id_title(id, title));
}

#[tokio::test]
async fn on_null_skip_hides_an_event_from_a_subscriber_without_rights() {
    let env = Env::start("", &ticket_updated("")).await;
    let mut ops = env.user("u1", "ops").await;
    let mut dev = env.user("u3", "dev").await;
    subscribe(&mut ops, "s", ID_TITLE, json!({})).await;
    subscribe(&mut dev, "s", ID_TITLE, json!({})).await;
    env.wait_subscriptions(2).await;
    env.publish("ticket.updated", json!({"id": "ops-1"})).await;
    env.publish("ticket.updated", json!({"id": "public-1"}))
        .await;
    next_is_ticket(&mut ops, "s", "ops-1", "db down").await;
    next_is_ticket(&mut ops, "s", "public-1", "Ticket public-1").await;
    // The first thing dev receives is the second event.
    next_is_ticket(&mut dev, "s", "public-1", "Ticket public-1").await;
    nothing_more(&mut dev).await;
}

#[tokio::test]
async fn on_null_skip_treats_forbidden_errors_and_http_401_403_like_null() {
    let env = Env::start("", &ticket_updated("")).await;
    let mut ops = env.user("u1", "ops").await;
    let mut dev = env.user("u3", "dev").await;
    subscribe(&mut ops, "s", ID_TITLE, json!({})).await;
    subscribe(&mut dev, "s", ID_TITLE, json!({})).await;
    env.wait_subscriptions(2).await;
    for id in ["forbidden", "http-401", "http-403", "public-1"] {
        env.publish("ticket.updated", json!({"id": id})).await;
    }
    for c in [&mut ops, &mut dev] {
        next_is_ticket(c, "s", "public-1", "Ticket public-1").await;
        nothing_more(c).await;
    }
    assert_eq!(env.resolves(), 8, "every event was fetched for both");
    // 3 events hidden from each of the two subscribers.
    for (name, expected) in [
        ("subcar_enrichment_requests_total", 8.0),
        ("subcar_enrichment_operations_total", 8.0),
        ("subcar_enrichment_skipped_total", 6.0),
        ("subcar_enrichment_failures_total", 0.0),
    ] {
        assert_eq!(
            metric_settled(&env.subcar, name, expected).await,
            expected,
            "{name}"
        );
    }
}

/// The value of an unlabelled metric once it reached `expected` (metrics
/// are sampled once a second), or after 5 s whatever it is then.
async fn metric_settled(subcar: &TestSubcar, name: &str, expected: f64) -> f64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = reqwest::get(subcar.admin_url("/metrics"))
            .await
            .expect("admin answers")
            .text()
            .await
            .expect("text");
        let value = text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
            .unwrap_or(f64::NAN);
        if value == expected || tokio::time::Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn on_null_deliver_sends_null_with_the_upstream_errors() {
    let env = Env::start("", &ticket_updated("on_null = \"deliver\"")).await;
    let mut ops = env.user("u1", "ops").await;
    let mut dev = env.user("u3", "dev").await;
    let mut anonymous = connect(&env.subcar, &[], json!({})).await;
    for c in [&mut ops, &mut dev, &mut anonymous] {
        subscribe(c, "s", ID_TITLE, json!({})).await;
    }
    env.wait_subscriptions(3).await;
    env.publish("ticket.updated", json!({"id": "ops-1"})).await;
    next_is_ticket(&mut ops, "s", "ops-1", "db down").await;
    assert_eq!(
        next_for(&mut dev, "s").await,
        json!({"data": {"ticketUpdated": null}}),
        "null, and no errors: the upstream answered null without any"
    );
    let anon = next_for(&mut anonymous, "s").await;
    assert_eq!(anon["data"], json!({"ticketUpdated": null}), "{anon}");
    error_coded(&anon, "UNAUTHENTICATED");

    env.publish("ticket.updated", json!({"id": "forbidden"}))
        .await;
    for c in [&mut ops, &mut dev] {
        let p = next_for(c, "s").await;
        assert_eq!(p["data"], json!({"ticketUpdated": null}), "{p}");
        assert_eq!(
            error_coded(&p, "FORBIDDEN")["message"],
            "you may not see this ticket"
        );
    }
    env.publish("ticket.updated", json!({"id": "http-403"}))
        .await;
    let p = next_for(&mut ops, "s").await;
    assert_eq!(p["data"], json!({"ticketUpdated": null}), "{p}");
}

// ---------------------------------------------------------------------------
// Upstream failures

#[tokio::test]
async fn upstream_field_errors_are_errors_of_the_next_and_the_subscription_goes_on() {
    let env = Env::start("", &ticket_updated("")).await;
    let mut c = env.user("u1", "ops").await;
    subscribe(
        &mut c,
        "s",
        "subscription { ticketUpdated { id title notes } }",
        json!({}),
    )
    .await;
    subscribe(
        &mut c,
        "aliased",
        "subscription { b: ticketUpdated { notes } }",
        json!({}),
    )
    .await;
    env.wait_subscriptions(2).await;
    env.publish("ticket.updated", json!({"id": "broken"})).await;
    env.publish("ticket.updated", json!({"id": "ops-1"})).await;
    let got = payloads_by_id(&mut c, 4).await;
    let broken = &got["s"][0];
    assert_eq!(
        broken["data"],
        json!({"ticketUpdated": {"id": "broken", "title": "Ticket public-broken", "notes": null}}),
        "{broken}"
    );
    let errors = broken["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{broken}");
    assert_eq!(errors[0]["message"], "notes are unavailable");
    assert_eq!(errors[0]["path"], json!(["ticketUpdated", "notes"]));
    // The path starts with the response key of the subscription.
    let aliased = &got["aliased"][0];
    assert_eq!(aliased["data"], json!({"b": {"notes": null}}), "{aliased}");
    assert_eq!(
        aliased["errors"][0]["path"],
        json!(["b", "notes"]),
        "{aliased}"
    );
    // The next event arrives, complete.
    assert_eq!(
        got["s"][1],
        json!({"data": {"ticketUpdated": {"id": "ops-1", "title": "db down", "notes": "failover to the replica"}}})
    );
    assert_eq!(
        got["aliased"][1],
        json!({"data": {"b": {"notes": "failover to the replica"}}})
    );
}

/// subcar on an upstream at `url` that cannot be introspected: the upstream
/// part of the schema comes from the test upstream's SDL.
async fn start_without_upstream(url: &str) -> (TestSubcar, tempfile::NamedTempFile) {
    let sdl = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(sdl.path(), upstream::sdl()).unwrap();
    let subcar = TestSubcar::builder(url)
        .schema_path(manifest_dir().join("tests/fixtures/enrich/schema.graphql"))
        .schema(&format!("upstream_sdl = \"{}\"", sdl.path().display()))
        .upstream("timeout = \"2s\"")
        .extra(&ticket_updated(""))
        .spawn()
        .await;
    (subcar, sdl)
}

/// A subscriber of `{ id title }` and one of `{ id severity }` (`Severity!`,
/// which key-only payloads lack) get UPSTREAM_UNAVAILABLE field errors for
/// two events: the payload projected as it is, with null propagation.
async fn unavailable_for_two_events(subcar: &TestSubcar) {
    let mut c = connect(subcar, &[], json!({"Authorization": bearer("u1", "ops")})).await;
    subscribe(&mut c, "s", ID_TITLE, json!({})).await;
    subscribe(
        &mut c,
        "strict",
        "subscription { ticketUpdated { id severity } }",
        json!({}),
    )
    .await;
    wait_subscriptions(subcar, 2).await;
    let post = |payload: Value| {
        publish(
            subcar.webhook,
            json!({"topic": "ticket.updated", "payload": payload}),
        )
    };
    post(json!({"id": "ops-1", "title": "from the event"})).await;
    post(json!({"id": "ops-2"})).await;
    let got = payloads_by_id(&mut c, 4).await;
    for (p, title) in got["s"].iter().zip([json!("from the event"), json!(null)]) {
        let unavailable = error_coded(p, "UPSTREAM_UNAVAILABLE");
        assert_eq!(unavailable["path"], json!(["ticketUpdated"]), "{p}");
        assert_eq!(p["data"]["ticketUpdated"]["title"], title, "{p}");
    }
    assert_eq!(got["s"][0]["data"]["ticketUpdated"]["id"], "ops-1");
    assert_eq!(got["s"][1]["data"]["ticketUpdated"]["id"], "ops-2");
    for p in &got["strict"] {
        error_coded(p, "UPSTREAM_UNAVAILABLE");
        assert_eq!(p["data"], json!({"ticketUpdated": null}), "{p}");
        let propagated = p["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["path"] == json!(["ticketUpdated", "severity"]));
        assert!(propagated, "a null-propagation error for severity: {p}");
    }
}

#[tokio::test]
async fn an_unreachable_upstream_is_an_upstream_unavailable_field_error() {
    let (subcar, _sdl) = start_without_upstream(&upstream::closed_port_url()).await;
    unavailable_for_two_events(&subcar).await;
}

#[tokio::test]
async fn an_upstream_answering_garbage_is_an_upstream_unavailable_field_error() {
    let (subcar, _sdl) = start_without_upstream(&upstream::garbage_upstream().await).await;
    unavailable_for_two_events(&subcar).await;
}

#[tokio::test]
async fn a_non_json_answer_is_upstream_unavailable_for_that_event_only() {
    let (env, mut c) = Env::one_subscriber("", &ticket_updated("")).await;
    env.publish("ticket.updated", json!({"id": "http-garbage"}))
        .await;
    env.publish("ticket.updated", json!({"id": "ops-1"})).await;
    let p = next_for(&mut c, "s").await;
    assert_eq!(
        error_coded(&p, "UPSTREAM_UNAVAILABLE")["path"],
        json!(["ticketUpdated"])
    );
    assert_eq!(
        p["data"],
        json!({"ticketUpdated": {"id": "http-garbage", "title": null}})
    );
    next_is_ticket(&mut c, "s", "ops-1", "db down").await;
}

/// An upstream that answers 5xx is down, even when its body is shaped like
/// a GraphQL error (a gateway in front of it, a restarting server): the
/// subscriber learns that the event could not be completed, it is not
/// silently left out as if it had no rights.
#[tokio::test]
async fn an_http_5xx_from_the_upstream_is_upstream_unavailable() {
    let (env, mut c) = Env::one_subscriber("", &ticket_updated("")).await;
    for id in ["http-500", "http-503"] {
        env.publish("ticket.updated", json!({"id": id})).await;
    }
    env.publish("ticket.updated", json!({"id": "ops-1"})).await;
    for id in ["http-500", "http-503"] {
        let p = next_for(&mut c, "s").await;
        assert_eq!(p["data"]["ticketUpdated"]["id"], id, "{p}");
        assert_eq!(
            error_coded(&p, "UPSTREAM_UNAVAILABLE")["path"],
            json!(["ticketUpdated"])
        );
    }
    next_is_ticket(&mut c, "s", "ops-1", "db down").await;
}

#[tokio::test]
async fn a_fetch_slower_than_the_upstream_timeout_is_upstream_unavailable() {
    let (env, mut c) = Env::one_subscriber("timeout = \"300ms\"", &ticket_updated("")).await;
    let start = Instant::now();
    env.publish("ticket.updated", json!({"id": "slow-5000-ops-1"}))
        .await;
    env.publish("ticket.updated", json!({"id": "ops-2"})).await;
    let p = next_for(&mut c, "s").await;
    assert!(
        start.elapsed() < Duration::from_millis(4000),
        "answered before the upstream did: {:?}",
        start.elapsed()
    );
    assert_eq!(
        error_coded(&p, "UPSTREAM_UNAVAILABLE")["path"],
        json!(["ticketUpdated"])
    );
    assert_eq!(p["data"]["ticketUpdated"]["id"], "slow-5000-ops-1", "{p}");
    next_is_ticket(&mut c, "s", "ops-2", "disk full").await;
}

#[tokio::test]
async fn a_slow_fetch_stalls_no_other_subscription() {
    let env = Env::start("", &ticket_updated("")).await;
    // One socket with an enriched and a plain subscription, another socket
    // with the plain one only.
    let mut both = env.user("u1", "ops").await;
    subscribe(&mut both, "t", ID_TITLE, json!({})).await;
    subscribe(&mut both, "n", "subscription { counter }", json!({})).await;
    let mut plain = env.user("u2", "ops").await;
    subscribe(&mut plain, "n", "subscription { counter }", json!({})).await;
    env.wait_subscriptions(3).await;
    let start = Instant::now();
    env.publish("ticket.updated", json!({"id": "slow-2000-ops-1"}))
        .await;
    env.publish("counter", json!(7)).await;
    let counter = json!({"data": {"counter": 7}});
    assert_eq!(next_for(&mut plain, "n").await, counter);
    assert_eq!(next_for(&mut both, "n").await, counter);
    let while_slow = start.elapsed();
    assert!(
        while_slow < Duration::from_millis(1500),
        "the plain events waited for the slow fetch: {while_slow:?}"
    );
    next_is_ticket(&mut both, "t", "slow-2000-ops-1", "db down").await;
    assert!(
        start.elapsed() >= Duration::from_millis(2000),
        "the fetch really was slow"
    );
}

// ---------------------------------------------------------------------------
// Order

#[tokio::test]
async fn a_slow_fetch_followed_by_a_fast_one_still_delivers_in_publish_order() {
    let (env, mut c) = Env::one_subscriber("", &ticket_updated("")).await;
    env.publish("ticket.updated", json!({"id": "slow-500-ops-1"}))
        .await;
    env.publish("ticket.updated", json!({"id": "ops-2"})).await;
    next_is_ticket(&mut c, "s", "slow-500-ops-1", "db down").await;
    next_is_ticket(&mut c, "s", "ops-2", "disk full").await;
}

#[tokio::test]
async fn fifty_events_alternating_slow_and_fast_fetches_arrive_in_order() {
    let env = Env::start("", &ticket_updated("")).await;
    // Two credentials: two independent fetches per event.
    let mut clients = vec![env.user("u1", "ops").await, env.user("u3", "dev").await];
    for c in &mut clients {
        subscribe(c, "s", "subscription { ticketUpdated { id } }", json!({})).await;
    }
    env.wait_subscriptions(2).await;
    let ids: Vec<String> = (0..50)
        .map(|i| match i % 2 {
            0 => format!("slow-{}-public-{i}", 20 + (i * 37) % 80),
            _ => format!("public-{i}"),
        })
        .collect();
    for id in &ids {
        env.publish("ticket.updated", json!({"id": id})).await;
    }
    for c in &mut clients {
        for id in &ids {
            assert_eq!(
                next_for(c, "s").await,
                json!({"data": {"ticketUpdated": {"id": id}}})
            );
        }
        nothing_more(c).await;
    }
}

// ---------------------------------------------------------------------------
// Teardown while a fetch is in flight

#[tokio::test]
async fn subscribers_leaving_during_a_fetch_get_nothing_and_leave_nothing_behind() {
    let env = Env::start("", &ticket_updated("")).await;
    let mut completing = env.user("u1", "ops").await;
    subscribe(&mut completing, "s", ID_TITLE, json!({})).await;
    let closing = {
        let mut c = env.user("u2", "ops").await;
        subscribe(&mut c, "s", ID_TITLE, json!({})).await;
        c
    };
    env.wait_subscriptions(2).await;
    env.publish("ticket.updated", json!({"id": "slow-300-ops-1"}))
        .await;
    env.upstream.wait_for_requests(3).await;
    // One completes its subscription, the other closes its socket, both
    // while their fetches are in flight.
    completing
        .send(json!({"id": "s", "type": "complete"}))
        .await;
    closing.close().await;
    env.wait_subscriptions(0).await;
    // Past the fetches: nothing came for the completed id.
    tokio::time::sleep(Duration::from_millis(600)).await;
    nothing_more(&mut completing).await;
    let sizes = env.subcar.registry.sizes();
    assert_eq!((sizes.topics, sizes.groups), (0, 0), "{sizes:?}");
    // A new subscription of the same group starts afresh.
    subscribe(&mut completing, "again", ID_TITLE, json!({})).await;
    env.wait_subscriptions(1).await;
    env.publish("ticket.updated", json!({"id": "ops-2"})).await;
    next_is_ticket(&mut completing, "again", "ops-2", "disk full").await;
}

// ---------------------------------------------------------------------------
// Resume

#[tokio::test]
async fn resume_on_an_enriched_field_is_refused_and_the_socket_stays_open() {
    let env = Env::start("", &ticket_updated("")).await;
    let mut c = env.user("u1", "ops").await;
    c.send(json!({"id": "r", "type": "subscribe",
        "payload": {"query": ID_TITLE, "extensions": {"resume": {}}}}))
        .await;
    let m = c.recv().await;
    assert_eq!(
        (&m["type"], &m["id"]),
        (&json!("error"), &json!("r")),
        "{m}"
    );
    assert_eq!(
        m["payload"][0]["extensions"]["code"], "RESUME_UNSUPPORTED",
        "{m}"
    );
    // Still open, and the same subscription without resume works.
    subscribe(&mut c, "s", ID_TITLE, json!({})).await;
    env.wait_subscriptions(1).await;
    env.publish("ticket.updated", json!({"id": "ops-1"})).await;
    next_is_ticket(&mut c, "s", "ops-1", "db down").await;
    nothing_more(&mut c).await;
}

// ---------------------------------------------------------------------------
// Start-up validation

/// The `[subscriptions.resolve]` body of each bad configuration, and the
/// words its error must name.
const BAD_RESOLVES: [(&str, &[&str]); 7] = [
    (
        "query_field = \"nope\"\nargs = { id = \"event.id\" }",
        &["query_field", "nope"],
    ),
    // `hello` is a `String`, the subscription field a `Ticket`.
    (
        "query_field = \"hello\"",
        &["query_field", "String", "Ticket"],
    ),
    (
        "query_field = \"ticket\"\nargs = { id = \"event.id\", colour = \"'red'\" }",
        &["args", "colour"],
    ),
    // `ticket(id: ID!)` with no expression for `id`.
    ("query_field = \"ticket\"", &["id"]),
    // A payload field of another type than the argument's.
    (
        "query_field = \"ticket\"\nargs = { id = \"event.severity\" }",
        &["args", "id", "Severity"],
    ),
    // CEL that does not compile.
    (
        "query_field = \"ticket\"\nargs = { id = \"event.(\" }",
        &["args", "id"],
    ),
    (
        "query_field = \"ticket\"\nargs = { id = \"event.id\" }\nshare_by = \"claims.(\"",
        &["share_by"],
    ),
];

fn bad_resolve(resolve: &str) -> String {
    subscription("ticketUpdated", "ticket.updated", resolve)
}

/// Why subcar refuses `resolve`: the start-up error or, should the check
/// happen at subscribe time, the `error` message of a subscribe.
async fn refusal(upstream: &TestUpstream, resolve: &str) -> String {
    let subcar = match builder(&upstream.url())
        .extra(&bad_resolve(resolve))
        .try_spawn()
        .await
    {
        Err(e) => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            return text;
        }
        Ok(subcar) => subcar,
    };
    let mut c = connect(&subcar, &[], json!({"Authorization": bearer("u1", "ops")})).await;
    subscribe(&mut c, "s", ID_TITLE, json!({})).await;
    let m = c.recv().await;
    assert_eq!(
        m["type"], "error",
        "subcar accepted resolve {resolve:?}: {m}"
    );
    m["payload"].to_string()
}

#[tokio::test]
async fn a_resolve_config_that_does_not_fit_the_schema_is_refused_naming_the_key() {
    let upstream = TestUpstream::start().await;
    for (resolve, words) in BAD_RESOLVES {
        let message = refusal(&upstream, resolve).await;
        assert!(
            message.contains("subscriptions") && message.contains("resolve"),
            "{resolve:?}: {message}"
        );
        for word in words {
            assert!(
                has_word(&message, word),
                "{resolve:?}: {word:?} in {message}"
            );
        }
    }
    // The good one starts.
    builder(&upstream.url())
        .extra(&ticket_updated(""))
        .spawn()
        .await;
}

#[tokio::test]
async fn subcar_check_exits_1_on_a_resolve_config_that_does_not_fit_the_schema() {
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("subcar.toml");
    let (resolve, words) = BAD_RESOLVES[0];
    std::fs::write(
        &path,
        builder(&upstream.url())
            .extra(&bad_resolve(resolve))
            .config_text(),
    )
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_subcar"))
        .env_remove("SUBCAR_CONFIG")
        .env_remove("RUST_LOG")
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .await
        .unwrap();
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{output}");
    assert!(output.contains("resolve"), "{output}");
    for word in words {
        assert!(has_word(&output, word), "{word:?} in {output}");
    }
}

#[tokio::test]
async fn fetches_carry_credentials_and_origin_and_nothing_forged() {
    let env = Env::start("", &ticket_updated("")).await;
    let own = format!("http://{}", env.subcar.addr);
    let mut c = connect(
        &env.subcar,
        &[
            ("origin", &own),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-internal-admin", "true"),
        ],
        json!({
            "Authorization": bearer("u1", "ops"),
            "headers": {"X-Forwarded-For": "7.7.7.7", "X-Internal-Admin": "true"},
        }),
    )
    .await;
    subscribe(&mut c, "s", ID_TITLE, json!({})).await;
    env.wait_subscriptions(1).await;
    env.publish("ticket.updated", json!({"id": "ops-1"})).await;
    next_is_ticket(&mut c, "s", "ops-1", "db down").await;
    let fetch = env.upstream.bodies_containing(RESOLVE).pop().unwrap();
    assert_eq!(header(&fetch, "authorization"), Some("Bearer user:u1:ops"));
    assert_eq!(header(&fetch, "origin"), Some(own.as_str()));
    assert_eq!(header(&fetch, "x-forwarded-for"), None);
    assert_eq!(header(&fetch, "x-internal-admin"), None);
}
