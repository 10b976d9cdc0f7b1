//! The `subcar` binary as an operator scales it out: three processes
//! sharing the real Redis, and `subcar check` reporting the bus.

mod bus_support;
mod support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use bus_support::{Bus, Kind, redis};
use serde_json::{Value, json};
use support::{TestUpstream, free_port, manifest_dir};
use support::{Client, PATIENCE, publish};

struct Replica {
    _child: tokio::process::Child,
    public: SocketAddr,
    webhook: SocketAddr,
}

fn config(dir: &tempfile::TempDir, name: &str, upstream: &str, bus: &str) -> std::path::PathBuf {
    let path = dir.path().join(format!("{name}.toml"));
    let schema = manifest_dir().join("examples/schema.graphql");
    std::fs::write(
        &path,
        format!(
            r#"
[server]
listen = "127.0.0.1:{public}"
[admin]
listen = "127.0.0.1:{admin}"
[webhook]
listen = "127.0.0.1:{webhook}"
[upstream]
url = "{upstream}"
[schema]
path = "{schema}"
introspect_upstream = false
[[subscriptions]]
field = "incidentUpdated"
filter = "args.severities == null || event.severity in args.severities"
{bus}
"#,
            public = free_port(),
            admin = free_port(),
            webhook = free_port(),
            schema = schema.display(),
        ),
    )
    .unwrap();
    path
}

fn addr(text: &str, section: &str) -> SocketAddr {
    let after = text.split(&format!("[{section}]")).nth(1).unwrap();
    after.split('"').nth(1).unwrap().parse().unwrap()
}

/// Starts the binary and waits until `/readyz` says ready (bus connected).
async fn start(path: &std::path::Path) -> Replica {
    let text = std::fs::read_to_string(path).unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_subcar"))
        .env_remove("SUBCAR_CONFIG")
        .env_remove("RUST_LOG")
        .arg("--config")
        .arg(path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let admin = addr(&text, "admin");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Ok(r) = reqwest::get(format!("http://{admin}/readyz")).await
            && r.status() == 200
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "replica never ready"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Replica {
        _child: child,
        public: addr(&text, "server"),
        webhook: addr(&text, "webhook"),
    }
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
        let mut c = Client::ready(r.public).await;
        c.subscribe("1", query).await;
        clients.push(c);
    }
    // Registration follows `subscribe` asynchronously: an event published
    // until every client has seen one proves all three are listening.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    'warm: loop {
        assert!(tokio::time::Instant::now() < deadline);
        publish(
            replicas[0].webhook,
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
        publish(replicas[i % 3].webhook, event).await;
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
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_subcar"))
            .env_remove("SUBCAR_CONFIG")
            .args(["check", "--config"])
            .arg(config(&dir, name, &upstream.url(), &section))
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(code), "{stdout}");
        assert!(stdout.contains("bus (redis):"), "{stdout}");
    }
}
