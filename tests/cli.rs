//! The `subcar` binary as an operator runs it: exit codes, error messages,
//! signals.

mod support;

use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use support::process::{Addrs, ConfigFile, Process, Until, check, output, printed, subcar};
use support::upstream::closed_port_url;
use support::upstream::hello_behaving;
use support::{Builder, Client, TestSubcar, TestUpstream, manifest_dir};

/// An upstream that is never asked: the commands here do not reach it.
const NOWHERE: &str = "http://127.0.0.1:1/graphql";

/// `subcar.toml` in `dir`: the harness's configuration with `extra`.
fn write_config(dir: &tempfile::TempDir, upstream_url: &str, extra: &str) -> ConfigFile {
    ConfigFile::write(dir.path(), "subcar", config(upstream_url, extra))
}

fn config(upstream_url: &str, extra: &str) -> Builder {
    TestSubcar::builder(upstream_url).extra(extra)
}

#[test]
fn help_explains_the_commands() {
    let out = subcar().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for word in [
        "run",
        "check",
        "schema",
        "init",
        "--config",
        "SUBCAR_CONFIG",
    ] {
        assert!(help.contains(word), "--help mentions {word}:\n{help}");
    }
}

#[test]
fn missing_config_is_explained() {
    let out = subcar().arg("run").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config"));
}

#[test]
fn bad_config_names_key_value_and_expectation_before_listening() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(&dir, NOWHERE, "[heartbeat]\ninterval = \"often\"");
    let out = subcar().arg("--config").arg(&file.path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("heartbeat.interval"), "{stderr}");
    assert!(stderr.contains("often"), "{stderr}");
    assert!(stderr.contains("\"15s\""), "{stderr}");
}

#[test]
fn env_override_with_a_bad_value_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = write_config(&dir, NOWHERE, "")
        .check()
        .env("SUBCAR_LIMITS__MAX_CONNECTIONS", "plenty")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("limits.max_connections") && stderr.contains("plenty"),
        "{stderr}"
    );
}

#[tokio::test]
async fn check_reports_upstream_reachability_in_its_exit_code() {
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let out = output(write_config(&dir, &upstream.url(), "").check()).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("reachable"));

    let out = output(write_config(&dir, &closed_port_url(), "").check()).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("NOT reachable"));
}

#[tokio::test]
async fn check_warns_about_any_origin() {
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(&dir, &upstream.url(), "[auth]\ncookie = \"session\"");
    let mut any_origin = file.check();
    any_origin.env("SUBCAR_SERVER__CORS_ORIGINS", "[\"*\"]");
    let out = output(any_origin).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("warning: server.cors_origins") && stdout.contains("auth.cookie"),
        "{stdout}"
    );
    let out = output(file.check()).await;
    assert!(!String::from_utf8_lossy(&out.stdout).contains("warning"));
}

#[test]
fn schema_command_prints_the_merged_sdl() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(&dir, NOWHERE, "");
    let out = subcar()
        .args(["schema", "--config"])
        .arg(&file.path)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("incidentUpdated"));
}

#[test]
fn example_config_is_accepted_by_check() {
    let out = check(&manifest_dir().join("config.example.toml"))
        .env("SUBCAR_UPSTREAM__URL", closed_port_url())
        .output()
        .unwrap();
    // Valid configuration; the example's upstream is not running here.
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// SIGTERM: readiness false, no new connections, the request in flight
/// finishes, exit 0.
#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(&dir, &upstream.url(), "");
    let mut subcar = file.start(Stdio::null(), Until::Listening).await;
    let public = file.addrs.public;
    let client = reqwest::Client::new();

    let slow = tokio::spawn(
        hello_behaving(&client, &format!("http://{public}/graphql"), "sleep:800").send(),
    );
    upstream.wait_for_requests(1).await;
    subcar.signal("-TERM");

    let res = slow
        .await
        .unwrap()
        .expect("the request in flight is answered");
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap()["data"]["hello"],
        "Hello, world!"
    );
    assert_eq!(subcar.exit_code().await, Some(0));
    assert!(
        tokio::net::TcpStream::connect(public).await.is_err(),
        "listener closed"
    );
}

/// SIGHUP re-reads the file: a new log filter applies at once, a changed
/// section that needs a restart is named, and serving goes on.
#[tokio::test]
async fn sighup_reloads_log_filter_and_names_what_needs_a_restart() {
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(&dir, &upstream.url(), "[log]\nfilter = \"warn\"");
    let mut subcar = file.start(Stdio::piped(), Until::Listening).await;
    let client = reqwest::Client::new();

    let changed = config(
        &upstream.url(),
        "[log]\nfilter = \"info\"\n[limits]\noutbound_queue = 5",
    );
    let (mut applied, mut restart) = (false, false);
    subcar
        .reload(&file, changed, |line| {
            applied |= line.contains("log.filter applied");
            restart |= line.contains("after a restart") && line.contains("limits");
            applied && restart
        })
        .await;
    let res = client
        .post(format!("http://{}/graphql", file.addrs.public))
        .json(&json!({"query": "{ hello }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "still serving after the reload");
    subcar.child.kill().await.unwrap();
}

/// SIGTERM with a subscriber connected: new connections are refused at
/// once, the open socket keeps receiving events until `drain_timeout` is
/// over, then it is closed with `1001` and the process exits 0.
#[tokio::test]
async fn sigterm_keeps_sockets_until_the_drain_ends_then_closes_them_1001() {
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(&dir, &upstream.url(), "[server]\ndrain_timeout = \"1s\"");
    let Addrs {
        public, webhook, ..
    } = file.addrs;
    let mut subcar = file.start(Stdio::null(), Until::Listening).await;
    let mut ws = subscribed(public, INCIDENT_IDS).await;
    post_until_received(webhook, &mut ws, "before").await;

    subcar.signal("-TERM");
    // New connections are refused while the drain runs.
    let mut refused = false;
    for _ in 0..100 {
        if Client::connect_with(public, Some("graphql-transport-ws"), &[])
            .await
            .is_err()
        {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "upgrades are refused once draining");
    // The open socket still gets events posted during the drain.
    post_event(webhook, "during").await;
    let during = next_other_than(&mut ws, "before").await;
    assert_eq!(during["payload"]["data"]["incidentUpdated"]["id"], "during");
    assert_eq!(ws.closed().await.0, 1001, "closed with 1001 at the end");
    assert_eq!(subcar.exit_code().await, Some(0));
}

/// Posts `event` to the webhook; expects `202`.
async fn post_webhook(webhook: std::net::SocketAddr, event: serde_json::Value) {
    let res = reqwest::Client::new()
        .post(format!("http://{webhook}/webhook"))
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
}

/// Posts one `incidentUpdated` event with payload id `id`; expects `202`.
async fn post_event(webhook: std::net::SocketAddr, id: &str) {
    post_webhook(
        webhook,
        json!({"topic": "incidentUpdated", "payload": {"id": id}}),
    )
    .await;
}

const INCIDENT_IDS: &str = "subscription { incidentUpdated { id } }";

/// A graphql-transport-ws connection, acknowledged, with subscription "1"
/// to `query`.
async fn subscribed(public: std::net::SocketAddr, query: &str) -> Client {
    let mut ws = Client::ready(public).await;
    ws.subscribe("1", query).await;
    ws
}

/// The next text message within a short wait, if one comes (a poll, not
/// a claim about time).
async fn poll(ws: &mut Client) -> Option<serde_json::Value> {
    use futures_util::StreamExt;
    match tokio::time::timeout(Duration::from_millis(100), ws.ws.next()).await {
        Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t)))) => {
            Some(serde_json::from_str(&t).unwrap())
        }
        _ => None,
    }
}

/// Posts `incidentUpdated` events with id `id` until one arrives on `ws`
/// (the subscription is registered by then).
async fn post_until_received(webhook: std::net::SocketAddr, ws: &mut Client, id: &str) {
    for _ in 0..100 {
        post_event(webhook, id).await;
        if poll(ws).await.is_some() {
            return;
        }
    }
    panic!("the subscription receives no events");
}

/// The first message that is not an `incidentUpdated` with id `skipped`
/// (events of a warm-up may still be queued).
async fn next_other_than(ws: &mut Client, skipped: &str) -> serde_json::Value {
    loop {
        let v = ws.recv().await;
        if v["payload"]["data"]["incidentUpdated"]["id"] != skipped {
            return v;
        }
    }
}

/// SIGHUP with a changed `filter` and a lower subscription limit: the live
/// subscription follows the new expression, and the open socket the new
/// limit.
#[tokio::test]
async fn sighup_applies_a_new_filter_and_limits_to_live_connections() {
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let block = "[[subscriptions]]\nfield = \"incidentUpdated\"\n";
    let file = write_config(&dir, &upstream.url(), block);
    let webhook = file.addrs.webhook;
    let mut subcar = file.start(Stdio::piped(), Until::Listening).await;
    let mut ws = subscribed(file.addrs.public, INCIDENT_IDS).await;
    post_until_received(webhook, &mut ws, "warm-up").await;

    let filtered = config(
        &upstream.url(),
        &format!(
            "{block}filter = \"event.id != 'hidden'\"\n[limits]\nmax_subscriptions_per_connection = 1"
        ),
    );
    let (mut rules, mut limits) = (false, false);
    subcar
        .reload(&file, filtered, |line| {
            assert!(!line.contains("after a restart"), "{line}");
            if line.contains("filter/allow rules applied") {
                assert!(line.contains("not_applied=0"), "{line}");
                rules = true;
            }
            limits |= line.contains("limits applied");
            rules && limits
        })
        .await;
    for id in ["hidden", "shown"] {
        post_event(webhook, id).await;
    }
    // Warm-up events may still be queued; the first other id must be the
    // one the new filter lets through.
    let next = next_other_than(&mut ws, "warm-up").await;
    assert_eq!(next["payload"]["data"]["incidentUpdated"]["id"], "shown");
    // One subscription is open: a second one is now over the limit.
    ws.subscribe("2", INCIDENT_IDS).await;
    let refused = loop {
        let v = ws.recv().await;
        if v["type"] == "error" {
            break v;
        }
    };
    assert_eq!(refused["id"], "2");
    assert_eq!(refused["payload"][0]["extensions"]["code"], "RATE_LIMITED");
    subcar.child.kill().await.unwrap();
}

/// Runs `subcar init` with `args` in `dir`.
fn init(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    subcar()
        .arg("init")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn init_writes_a_commented_config_that_loads_builds_and_passes_check() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = closed_port_url();
    let out = init(dir.path(), &["--upstream", &upstream, "--out", "new/sub"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("subcar.toml") && stdout.contains("subcar check"),
        "{stdout}"
    );
    let config_path = dir.path().join("new/sub/subcar.toml");
    let text = std::fs::read_to_string(&config_path).unwrap();
    assert!(
        text.lines().filter(|l| l.starts_with('#')).count() >= 10,
        "commented:\n{text}"
    );
    let schema = std::fs::read_to_string(dir.path().join("new/sub/schema.graphql")).unwrap();
    assert!(schema.contains("type Subscription") && schema.contains("exampleUpdated"));

    let env = [(
        "SUBCAR_SCHEMA__INTROSPECT_UPSTREAM".to_owned(),
        "false".to_owned(),
    )];
    let config = subcar::config::Config::load(&config_path, env).expect("the written config loads");
    assert_eq!(config.upstream.url.to_string(), upstream);
    assert_eq!(config.subscriptions[0].field, "exampleUpdated");
    subcar::app::App::build(config).expect("the written config and schema build an app");

    // Valid; the upstream is not running: exit code 2, as documented.
    let check = check(&config_path).output().unwrap();
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert_eq!(
        check.status.code(),
        Some(2),
        "{stdout}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(stdout.contains("configuration: ok"), "{stdout}");
}

#[test]
fn init_keeps_existing_files_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let url = "http://127.0.0.1:8080/graphql";
    assert_eq!(
        init(dir.path(), &["--upstream", url]).status.code(),
        Some(0)
    );
    let config = dir.path().join("subcar.toml");
    std::fs::write(&config, "# mine\n").unwrap();
    std::fs::remove_file(dir.path().join("schema.graphql")).unwrap();

    let out = init(dir.path(), &["--upstream", url]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("subcar.toml already exists") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), "# mine\n");
    assert!(
        !dir.path().join("schema.graphql").exists(),
        "nothing is written when one file is refused"
    );

    let out = init(dir.path(), &["--upstream", url, "--force"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(std::fs::read_to_string(&config).unwrap().contains(url));
    assert!(dir.path().join("schema.graphql").exists());
}

#[test]
fn init_refuses_an_upstream_url_the_config_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let out = init(dir.path(), &["--upstream", "localhost:8080/graphql"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--upstream") && stderr.contains("expected"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing written"
    );

    let out = init(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(2), "clap: --upstream is required");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--upstream"));
}

/// The written files as they are, against a real upstream: `check` is
/// green (the example schema merges with the upstream's), and the example
/// event in the config's comment reaches a subscriber of the example field.
#[tokio::test]
async fn init_output_runs_against_a_real_upstream_and_delivers_the_example_event() {
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let out = init(dir.path(), &["--upstream", &upstream.url()]);
    assert_eq!(out.status.code(), Some(0));
    let config_path = dir.path().join("subcar.toml");

    let check = output(check(&config_path)).await;
    assert_eq!(check.status.code(), Some(0), "{}", printed(&check));

    // Free ports instead of the file's fixed ones.
    let addrs = Addrs::free();
    let mut cmd = subcar();
    cmd.envs(addrs.env());
    // `start` fails unless subcar runs on the written config.
    let _subcar = Process::start(cmd, &config_path, addrs, Stdio::null(), Until::Listening).await;

    let mut ws = subscribed(
        addrs.public,
        r#"subscription { exampleUpdated(id: "1") { id status } }"#,
    )
    .await;
    // The curl of the config's comment, for another id (filtered out) and
    // for the subscribed one, until the subscription is registered.
    let text = std::fs::read_to_string(&config_path).unwrap();
    assert!(
        text.contains(r#"{"topic": "example.updated", "payload": {"id": "1", "status": "done"}}"#)
    );
    let mut received = None;
    for _ in 0..100 {
        for id in ["2", "1"] {
            post_webhook(
                addrs.webhook,
                json!({"topic": "example.updated", "payload": {"id": id, "status": "done"}}),
            )
            .await;
        }
        received = poll(&mut ws).await;
        if received.is_some() {
            break;
        }
    }
    let received = received.expect("the example event reaches the subscriber");
    assert_eq!(received["type"], "next", "{received}");
    assert_eq!(
        received["payload"]["data"]["exampleUpdated"],
        json!({"id": "1", "status": "done"}),
        "the filter lets only id 1 through"
    );
}

/// A password in `upstream.url` is in none of what `check` prints, nor in
/// the start-up log of `run` (issue 14, finding 9).
#[tokio::test]
async fn url_passwords_are_never_printed() {
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let secret_url = upstream
        .url()
        .replacen("http://", "http://admin:hunter2@", 1);
    let file = write_config(&dir, &secret_url, "");
    let printed_up = printed(&output(file.check()).await);
    assert!(!printed_up.contains("hunter2"), "{printed_up}");
    assert!(
        printed_up.contains("http://admin:****@127.0.0.1:"),
        "{printed_up}"
    );

    // The same for an unreachable upstream, whose error names the URL.
    let down = closed_port_url().replacen("http://", "http://admin:hunter2@", 1);
    let out = ConfigFile::write(dir.path(), "down", config(&down, ""))
        .check()
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let printed_down = printed(&out);
    assert!(!printed_down.contains("hunter2"), "{printed_down}");

    // `run` logs the upstream at start-up: redacted.
    let mut subcar = file.start(Stdio::piped(), Until::Listening).await;
    let mut lines = subcar.stderr_lines();
    let line = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("a start-up log line");
            assert!(!line.contains("hunter2"), "{line}");
            if line.contains("subcar listening") {
                return line;
            }
        }
    })
    .await
    .expect("the start-up line is logged");
    assert!(line.contains("admin:****@127.0.0.1"), "{line}");
    // The same line names every listener with its address.
    for listener in [
        "public=127.0.0.1:",
        "webhook=127.0.0.1:",
        "admin=127.0.0.1:",
    ] {
        assert!(line.contains(listener), "{listener} in {line}");
    }
    subcar.child.kill().await.unwrap();
}

/// A duration that would overflow a deadline is refused by `check` with
/// the key and the accepted range, instead of a panic later.
#[test]
fn check_refuses_out_of_range_durations_and_sizes() {
    let dir = tempfile::tempdir().unwrap();
    for (extra, key, range) in [
        (
            "[heartbeat]\ninterval = \"1000000000y\"",
            "heartbeat.interval",
            "at most 365days",
        ),
        (
            "[heartbeat]\ntimeout = \"2days\"",
            "heartbeat.timeout",
            "from 1ms to 1day",
        ),
        (
            "[limits]\nmax_message_bytes = 4611686018427387904",
            "limits.max_message_bytes",
            "from 1 to 67108864",
        ),
    ] {
        let out = write_config(&dir, NOWHERE, extra).check().output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{extra}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(key) && stderr.contains(range), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// `log.audit = true`: one JSON line (target `subcar::audit`) per connection
/// admitted, subscription started and ended, and webhook request, even
/// under a `warn` filter; nothing of the token.
#[tokio::test]
async fn the_audit_log_names_connections_subscriptions_and_webhook_requests() {
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(
        &dir,
        &upstream.url(),
        "[log]\naudit = true\nformat = \"json\"\nfilter = \"warn\"",
    );
    let mut subcar = file.start(Stdio::piped(), Until::Listening).await;
    let mut lines = subcar.stderr_lines();
    let mut c = Client::ready(file.addrs.public).await;
    c.subscribe("a1", "subscription { incidentUpdated { id } }")
        .await;
    // Published until the subscription has it (registration is async).
    loop {
        support::publish(
            file.addrs.webhook,
            json!({"topic": "incidentUpdated", "payload": {"id": "1"}}),
        )
        .await;
        if let Ok(m) = tokio::time::timeout(Duration::from_millis(200), c.recv()).await {
            assert_eq!(m["type"], "next");
            break;
        }
    }
    c.close().await;
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if v["target"] != "subcar::audit" {
                continue;
            }
            let key = format!(
                "{}/{}",
                v["audit"].as_str().unwrap(),
                v["outcome"].as_str().unwrap_or("")
            );
            if key == "subscription/ended" {
                assert_eq!(v["field"], "incidentUpdated", "{v}");
                assert_eq!(v["transport"], "graphql-transport-ws", "{v}");
                seen.push(key);
                break;
            }
            if key == "connection/admitted" {
                assert_eq!(v["subject"], "127.0.0.1", "{v}");
            }
            if key == "webhook/" {
                assert_eq!(v["status"], 202, "{v}");
            }
            seen.push(key);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("audit lines so far: {seen:?}"));
    for expected in [
        "connection/admitted",
        "subscription/started",
        "webhook/",
        "subscription/ended",
    ] {
        assert!(seen.iter().any(|s| s == expected), "{expected} in {seen:?}");
    }
    subcar.child.kill().await.unwrap();
}
