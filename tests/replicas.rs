//! The `subcar` binary as an operator scales it out: three processes
//! sharing the real Redis, and `subcar check` reporting the bus.

mod bus_support;
mod support;

use std::process::Stdio;
use std::time::Duration;

use bus_support::{Bus, Kind, redis};
use serde_json::{Value, json};
use support::process::{ConfigFile, Process, Until, output};
use support::{Client, PATIENCE, TestSubcar, TestUpstream, free_port, publish};

/// `dir/name.toml`: a replica on the bus section `bus`.
fn config(dir: &tempfile::TempDir, name: &str, upstream: &str, bus: &str) -> ConfigFile {
    let builder = TestSubcar::builder(upstream).extra(&format!(
        r#"
[[subscriptions]]
field = "incidentUpdated"
filter = "args.severities == null || event.severity in args.severities"
{bus}
"#
    ));
    ConfigFile::write(dir.path(), name, builder)
}

/// Starts the binary and waits until `/readyz` says ready (bus connected).
async fn start(file: &ConfigFile) -> Process {
    file.start(Stdio::null(), Until::Ready).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_on_one_redis_deliver_every_event_everywhere_once_in_order() {
    let upstream = TestUpstream::start().await;
    let bus = Bus::new(Kind::Redis, redis());
    let dir = tempfile::tempdir().unwrap();
    let mut replicas = Vec::new();
    for name in ["a", "b", "c"] {
        replicas.push(start(&config(&dir, name, &upstream.url(), &bus.toml())).await);
    }
    let query = "subscription { incidentUpdated(severities: [P1]) { id } }";
    let mut clients = Vec::new();
    for r in &replicas {
        let mut c = Client::ready(r.addrs.public).await;
        c.subscribe("1", query).await;
        clients.push(c);
    }
    // Registration follows `subscribe` asynchronously: an event published
    // until every client has seen one proves all three are listening.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    'warm: loop {
        assert!(tokio::time::Instant::now() < deadline);
        publish(
            replicas[0].addrs.webhook,
            json!({"topic": "incidentUpdated", "payload": {"id": "warm", "severity": "P1"}}),
        )
        .await;
        for c in &mut clients {
            let m = tokio::time::timeout(Duration::from_millis(200), c.recv()).await;
            if m.is_err() {
                continue 'warm;
            }
        }
        break;
    }
    for c in &mut clients {
        // Late copies of the warm-up event.
        while !bus_support::drain(c).await.is_empty() {}
    }
    for i in 0..300usize {
        let severity = if i.is_multiple_of(3) { "P1" } else { "P2" };
        let event = json!({"topic": "incidentUpdated", "id": format!("e{i}"),
            "payload": {"id": i.to_string(), "severity": severity}});
        publish(replicas[i % 3].addrs.webhook, event).await;
    }
    for c in &mut clients {
        for i in (0..300).step_by(3) {
            let m = c.recv().await;
            assert_eq!(
                m["payload"]["data"]["incidentUpdated"]["id"],
                i.to_string(),
                "{m}"
            );
        }
        assert_eq!(bus_support::drain(c).await, Vec::<Value>::new());
    }
}

#[tokio::test]
async fn check_reports_bus_reachability_in_its_exit_code() {
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::new(Kind::Redis, redis());
    let closed = format!("redis://127.0.0.1:{}", free_port());
    for (name, section, code) in [
        ("up", bus.toml(), 0),
        ("down", Bus::new(Kind::Redis, &closed).toml(), 3),
    ] {
        let out = output(config(&dir, name, &upstream.url(), &section).check()).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(code), "{stdout}");
        assert!(stdout.contains("bus (redis):"), "{stdout}");
    }
}
