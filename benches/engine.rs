//! The GraphQL engine's hot operations, with criterion:
//! - projection of a ~2 KB payload onto a 20-field selection (once per event
//!   and group on the realtime path);
//! - `prepare` of a typical subscription: parse, validate, coerce, compile
//!   and compute its group key (once per `subscribe`);
//! - a CEL filter evaluation (once per event and group).
//!
//! Run: `cargo bench --bench engine`.

#[path = "../tests/support/fixtures.rs"]
mod fixtures;

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use fixtures::schema;
use serde_json::{Map, Value, json};
use subcar::config::SubscriptionConfig;
use subcar::graphql::{Prepared, PreparedSubscription, Schema};
use subcar::subscriptions::filter::{FieldRules, GroupVars, PreparedEvent};

/// The allocator the `subcar` binary runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// 20 selected fields (12 leaves of `Incident`, and 8 below `owner`,
/// `assignees`, `team` and `related`), behind a named fragment, an alias and
/// an `@include`.
const SUBSCRIPTION: &str = r#"
subscription Watch($sev: [Severity!], $withTeam: Boolean = true) {
  changed: incidentUpdated(severities: $sev) {
    ...Core
    owner { id name }
    assignees { id name email }
    team @include(if: $withTeam) { id name }
    related { id }
  }
}
fragment Core on Incident {
  __typename id at title description severity status priority score
  acknowledged tags labels
}
"#;

fn payload() -> Value {
    let user = |n: usize| {
        json!({"id": format!("u{n}"), "name": format!("User number {n}"),
               "email": format!("user{n}@example.com"), "roles": ["OPS"]})
    };
    json!({
        "__typename": "Incident",
        "id": "42",
        "at": "2026-12-01T18:00:00Z",
        "title": "Database latency above the 99th percentile objective",
        "description": "p99 latency of the primary database cluster has been above 250 ms for 10 minutes; \
                        replicas are healthy, the primary shows lock contention on the orders table. ".repeat(4),
        "severity": "P1",
        "status": "OPEN",
        "priority": 3,
        "score": 0.87,
        "acknowledged": false,
        "tags": ["db", "latency", "orders", "primary"],
        "labels": ["team:storage", null, "region:eu-west-1"],
        "owner": user(1),
        "assignees": (2..6).map(user).collect::<Vec<_>>(),
        "team": {"id": "t1", "name": "Storage", "members": []},
        "related": [{"id": "40", "title": "x"}, {"id": "41", "title": "y"}],
        "meta": {"runbook": "https://runbooks.example.com/db-latency", "graph": "p99"},
        "history": [[1, 2, 3], [4, 5, 6]],
        "notSelected": "payload fields outside the selection are skipped"
    })
}

fn variables() -> Map<String, Value> {
    json!({"sev": ["P1", "P2"]}).as_object().unwrap().clone()
}

fn prepared(schema: &Schema) -> std::sync::Arc<PreparedSubscription> {
    match schema.prepare(SUBSCRIPTION, None, &variables()).unwrap() {
        Prepared::Subscription(s) => s,
        Prepared::Passthrough(k) => panic!("not a subscription: {k:?}"),
    }
}

fn engine(c: &mut Criterion) {
    let schema = schema();
    let sub = prepared(&schema);
    let payload = payload();
    let payload_bytes = serde_json::to_vec(&payload).unwrap();
    let projected = sub.project(&payload);
    eprintln!(
        "payload {} bytes, projected {} bytes",
        payload_bytes.len(),
        projected.len()
    );

    c.bench_function("project 2 KB payload onto 20 fields", |b| {
        b.iter(|| sub.project(black_box(&payload)))
    });
    c.bench_function("prepare (parse, validate, coerce, group key)", |b| {
        let vars = variables();
        b.iter(|| {
            schema
                .prepare(black_box(SUBSCRIPTION), None, &vars)
                .unwrap()
        })
    });

    let config: SubscriptionConfig = toml::from_str(
        r#"
        field = "incidentUpdated"
        filter = "args.severities == null || event.severity in args.severities"
        "#,
    )
    .unwrap();
    let rules = FieldRules::compile(&config).unwrap();
    let claims = json!({});
    let vars = GroupVars::new(sub.args(), &claims);
    let event = PreparedEvent::new(&payload);
    assert!(rules.matches_prepared(&event, sub.args(), &vars));
    c.bench_function("CEL filter (per group; 2 KB event bound once)", |b| {
        b.iter(|| rules.matches_prepared(black_box(&event), sub.args(), &vars))
    });
    c.bench_function("CEL event binding (per event with a filter)", |b| {
        b.iter(|| {
            let event = PreparedEvent::new(black_box(&payload));
            rules.matches_prepared(&event, sub.args(), &vars)
        })
    });
}

criterion_group!(benches, engine);
criterion_main!(benches);
