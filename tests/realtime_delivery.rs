//! Webhook → bus → dispatcher → subscribers, end to end over real sockets:
//! ordering, exact fan-out to many groups, slow-consumer isolation and
//! registry cleanup.

mod support;

use std::sync::atomic::Ordering;

use futures_util::future::join_all;
use serde_json::{Value, json};
use support::{Client, PATIENCE, TestSubcar, publish, spawn, wait_subscriptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_events_arrive_in_publish_order_exactly_once() {
    let rt = spawn("").await;
    let mut c = Client::ready(rt.addr).await;
    c.subscribe("1", "subscription { counter }").await;
    wait_subscriptions(&rt, 1).await;
    let mut n = 0;
    while n < 1000 {
        // Mixed batch sizes, single events included.
        let size = [1, 7, 50, 100][n % 4].min(1000 - n);
        let batch: Vec<Value> = (n..n + size)
            .map(|i| json!({"topic": "counter", "payload": i}))
            .collect();
        publish(rt.webhook, Value::Array(batch)).await;
        n += size;
    }
    for i in 0..1000 {
        assert_eq!(c.recv().await["payload"]["data"]["counter"], i);
    }
    c.send(json!({"type": "ping"})).await;
    assert_eq!(
        c.recv().await["type"],
        "pong",
        "nothing after the last event"
    );
}

/// The groups of the fan-out test: (topic, query, response key).
const GROUPS: [(&str, &str, &str); 6] = [
    ("counter", "subscription { counter }", "counter"),
    ("counter", "subscription { a: counter }", "a"),
    ("item", "subscription { item { kind n } }", "item"),
    // Filtered by argument equality: only the odd items.
    (
        "item",
        r#"subscription { item(kind: "odd") { kind n } }"#,
        "item",
    ),
    ("item", "subscription { it: item { kind n } }", "it"),
    (
        "incidentUpdated",
        "subscription { incidentUpdated { id title severity } }",
        "incidentUpdated",
    ),
];

fn payload(topic: &str, i: usize) -> Value {
    match topic {
        "counter" => json!(i),
        "item" => json!({"kind": if i % 2 == 1 { "odd" } else { "even" }, "n": i}),
        _ => json!({"id": i.to_string(), "title": format!("incident {i}"), "severity": "P1"}),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_subscribers_in_six_groups_get_exactly_their_filtered_events() {
    let rt = spawn("").await;
    let mut clients = Vec::new();
    for i in 0..200 {
        let mut c = Client::ready(rt.addr).await;
        c.subscribe(&format!("s{i}"), GROUPS[i % GROUPS.len()].1)
            .await;
        clients.push(c);
    }
    wait_subscriptions(&rt, 200).await;
    assert_eq!(rt.registry.sizes().groups, GROUPS.len());
    let topics = ["counter", "item", "incidentUpdated"];
    let rounds = 30;
    for i in 0..rounds {
        let batch: Vec<Value> = topics
            .iter()
            .map(|t| json!({"topic": t, "payload": payload(t, i)}))
            .collect();
        publish(rt.webhook, Value::Array(batch)).await;
    }
    // An end marker per topic: anything of the topic came before it.
    let end: Vec<Value> = topics
        .iter()
        .map(|t| json!({"topic": t, "payload": payload(t, 9999)}))
        .collect();
    publish(rt.webhook, Value::Array(end)).await;

    let checks = clients.into_iter().enumerate().map(|(i, mut c)| async move {
        let (topic, query, key) = GROUPS[i % GROUPS.len()];
        let odd_only = query.contains("odd");
        for n in (0..rounds).filter(|n| !odd_only || n % 2 == 1).chain([9999]) {
            let msg = c.recv().await;
            let expected = json!({"id": format!("s{i}"), "type": "next", "payload": {"data": {key: payload(topic, n)}}});
            assert_eq!(msg, expected, "subscriber {i}");
        }
        c.send(json!({"type": "ping"})).await;
        assert_eq!(c.recv().await["type"], "pong", "subscriber {i} got more than its events");
    });
    join_all(checks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_closed_and_never_holds_up_the_others() {
    slow_consumer(false).await;
}

/// The same on the legacy `graphql-ws` subprotocol: `connection_error`,
/// then the same close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_legacy_consumer_is_closed_and_never_holds_up_the_others() {
    slow_consumer(true).await;
}

async fn slow_consumer(legacy: bool) {
    // The queue holds more than one webhook batch (20): a reader that keeps
    // up never overflows it.
    let rt = spawn("[limits]\noutbound_queue = 64").await;
    let query = "subscription { incidentUpdated { id title } }";
    let mut slow = if legacy {
        let mut c = Client::connect_with(rt.addr, Some("graphql-ws"), &[])
            .await
            .unwrap();
        c.send(json!({"type": "connection_init"})).await;
        assert_eq!(c.recv().await["type"], "connection_ack");
        c.send(json!({"id": "slow", "type": "start", "payload": {"query": query}}))
            .await;
        c
    } else {
        let mut c = Client::ready(rt.addr).await;
        c.subscribe("slow", query).await;
        c
    };
    let mut reader = Client::ready(rt.addr).await;
    reader.subscribe("fast", query).await;
    wait_subscriptions(&rt, 2).await;

    // Large events fill the slow client's socket buffers, then its queue.
    let big = "x".repeat(32 * 1024);
    let batches = 40;
    let per_batch = 20;
    // The reader keeps up with what is published (one batch at a time, as
    // a real client reading at the publish rate would); the other never reads.
    for b in 0..batches {
        let batch: Vec<Value> = (0..per_batch)
            .map(|i| {
                let id = (b * per_batch + i).to_string();
                json!({"topic": "incidentUpdated", "payload": {"id": id, "title": big}})
            })
            .collect();
        publish(rt.webhook, Value::Array(batch)).await;
        for i in 0..per_batch {
            let msg = reader.recv().await;
            let id = (b * per_batch + i).to_string();
            assert_eq!(msg["payload"]["data"]["incidentUpdated"]["id"], id);
        }
    }
    tokio::time::timeout(PATIENCE, async {
        while rt.registry.stats.slow_consumers.load(Ordering::Relaxed) == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the slow consumer was detected");
    // Its subscription is gone; the reader's lives on.
    wait_subscriptions(&rt, 1).await;
    assert_eq!(rt.registry.stats.slow_consumers.load(Ordering::Relaxed), 1);
    // The slow client, reading at last, finds its socket closed; when the
    // close frame got through, it carries the retryable 1013.
    let code = loop {
        match slow.next().await {
            support::Next::Json(_) => continue,
            support::Next::Closed(code, _) => break code,
        }
    };
    assert!(code == 1013 || code == 1006, "{code}");
}

async fn cycle(rt: &TestSubcar) {
    let mut c = Client::ready(rt.addr).await;
    c.subscribe("1", "subscription { counter }").await;
    // The session handles messages in order: the pong proves the
    // subscription was registered.
    c.send(json!({"type": "ping"})).await;
    assert_eq!(c.recv().await["type"], "pong");
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_is_empty_again_after_ten_thousand_cycles() {
    let rt = spawn("").await;
    let workers = (0..50).map(|_| async {
        for _ in 0..200 {
            cycle(&rt).await;
        }
    });
    join_all(workers).await;
    tokio::time::timeout(PATIENCE, async {
        loop {
            let s = rt.registry.sizes();
            if (s.topics, s.groups, s.subscriptions, s.connections) == (0, 0, 0, 0) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("registry not empty: {:?}", rt.registry.sizes()));
}
