//! The `subcar` binary as an operator runs it: exit codes, error messages,
//! signals.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use support::{TestUpstream, free_port, manifest_dir};

fn subcar() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_subcar"));
    cmd.env_remove("SUBCAR_CONFIG").env_remove("RUST_LOG");
    cmd
}

fn write_config(dir: &tempfile::TempDir, upstream_url: &str, extra: &str) -> std::path::PathBuf {
    let path = dir.path().join("subcar.toml");
    let schema = manifest_dir().join("examples/schema.graphql");
    std::fs::write(
        &path,
        format!(
            r#"
[server]
listen = "127.0.0.1:{public}"
drain_timeout = "5s"
[admin]
listen = "127.0.0.1:{admin}"
[webhook]
listen = "127.0.0.1:{webhook}"
[upstream]
url = "{upstream_url}"
[schema]
path = "{schema}"
introspect_upstream = false
{extra}
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

/// Starts the binary on `path` and waits until it answers; returns the child
/// and its public address.
async fn spawn_running(path: &std::path::Path, stderr: Stdio) -> (tokio::process::Child, String) {
    let text = std::fs::read_to_string(path).unwrap();
    let public = text
        .lines()
        .find(|l| l.starts_with("listen"))
        .unwrap()
        .split('"')
        .nth(1)
        .unwrap()
        .to_owned();
    let child = tokio::process::Command::from(subcar())
        .arg("--config")
        .arg(path)
        .stdout(Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if client
            .get(format!("http://{public}/healthz"))
            .send()
            .await
            .is_ok()
        {
            return (child, public);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("subcar did not start");
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
    let path = write_config(
        &dir,
        "http://127.0.0.1:1/graphql",
        "[heartbeat]\ninterval = \"often\"",
    );
    let out = subcar().arg("--config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("heartbeat.interval"), "{stderr}");
    assert!(stderr.contains("often"), "{stderr}");
    assert!(stderr.contains("\"15s\""), "{stderr}");
}

#[test]
fn env_override_with_a_bad_value_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, "http://127.0.0.1:1/graphql", "");
    let out = subcar()
        .args(["check", "--config"])
        .arg(&path)
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
    let up = write_config(&dir, &upstream.url(), "");
    let out = tokio::process::Command::from(subcar())
        .args(["check", "--config"])
        .arg(&up)
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("reachable"));

    let down = write_config(&dir, &support::upstream::closed_port_url(), "");
    let out = tokio::process::Command::from(subcar())
        .args(["check", "--config"])
        .arg(&down)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("NOT reachable"));
}

#[tokio::test]
async fn check_warns_about_any_origin() {
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, &upstream.url(), "[auth]\ncookie = \"session\"");
    let out = tokio::process::Command::from(subcar())
        .args(["check", "--config"])
        .arg(&path)
        .env("SUBCAR_SERVER__CORS_ORIGINS", "[\"*\"]")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("warning: server.cors_origins") && stdout.contains("auth.cookie"),
        "{stdout}"
    );
    let out = tokio::process::Command::from(subcar())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .await
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("warning"));
}

#[test]
fn schema_command_prints_the_merged_sdl() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, "http://127.0.0.1:1/graphql", "");
    let out = subcar()
        .args(["schema", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("incidentUpdated"));
}

#[test]
fn example_config_is_accepted_by_check() {
    let out = subcar()
        .args(["check", "--config"])
        .arg(manifest_dir().join("config.example.toml"))
        .env("SUBCAR_UPSTREAM__URL", support::upstream::closed_port_url())
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
    let path = write_config(&dir, &upstream.url(), "");
    let (mut child, public) = spawn_running(&path, Stdio::null()).await;
    let url = format!("http://{public}/graphql");
    let client = reqwest::Client::new();

    let slow = tokio::spawn(
        client
            .post(&url)
            .header("x-test-behavior", "sleep:800")
            .json(&json!({"query": "{ hello }"}))
            .send(),
    );
    upstream.wait_for_requests(1).await;
    send_signal(&child, "-TERM");

    let res = slow
        .await
        .unwrap()
        .expect("the request in flight is answered");
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap()["data"]["hello"],
        "Hello, world!"
    );
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        tokio::net::TcpStream::connect(&public).await.is_err(),
        "listener closed"
    );
}

/// SIGHUP re-reads the file: a new log filter applies at once, a changed
/// section that needs a restart is named, and serving goes on.
#[tokio::test]
async fn sighup_reloads_log_filter_and_names_what_needs_a_restart() {
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, &upstream.url(), "[log]\nfilter = \"warn\"");
    let text = std::fs::read_to_string(&path).unwrap();
    let (mut child, public) = spawn_running(&path, Stdio::piped()).await;
    let client = reqwest::Client::new();

    let changed =
        text.replace("filter = \"warn\"", "filter = \"info\"") + "\n[limits]\noutbound_queue = 5\n";
    let (mut applied, mut restart) = (false, false);
    reload(&mut child, &path, &changed, |line| {
        applied |= line.contains("log.filter applied");
        restart |= line.contains("after a restart") && line.contains("limits");
        applied && restart
    })
    .await;
    let res = client
        .post(format!("http://{public}/graphql"))
        .json(&json!({"query": "{ hello }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "still serving after the reload");
    child.kill().await.unwrap();
}

/// SIGTERM with a subscriber connected: new connections are refused at
/// once, the open socket keeps receiving events until `drain_timeout` is
/// over, then it is closed with `1001` and the process exits 0.
#[tokio::test]
async fn sigterm_keeps_sockets_until_the_drain_ends_then_closes_them_1001() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, &upstream.url(), "");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("drain_timeout = \"5s\"", "drain_timeout = \"1s\"");
    std::fs::write(&path, &text).unwrap();
    let webhook = webhook_addr(&text);
    let (mut child, public) = spawn_running(&path, Stdio::null()).await;
    let mut ws = ws_subscribed(&public).await;
    post_until_received(&webhook, &mut ws, "before").await;

    send_signal(&child, "-TERM");
    // New connections are refused while the drain runs.
    let mut refused = false;
    for _ in 0..100 {
        let mut request = format!("ws://{public}/graphql")
            .into_client_request()
            .unwrap();
        request.headers_mut().insert(
            "sec-websocket-protocol",
            "graphql-transport-ws".parse().unwrap(),
        );
        if tokio_tungstenite::connect_async(request).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "upgrades are refused once draining");
    // The open socket still gets events posted during the drain.
    post_event(&webhook, "during").await;
    let during = loop {
        let v = ws_recv(&mut ws).await.expect("still open during the drain");
        if v["payload"]["data"]["incidentUpdated"]["id"] != "before" {
            break v;
        }
    };
    assert_eq!(during["payload"]["data"]["incidentUpdated"]["id"], "during");
    assert_eq!(
        ws_recv(&mut ws).await,
        Err(Some(1001)),
        "closed with 1001 at the end"
    );
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// Writes `text` to the running child's config file, sends SIGHUP, and
/// feeds the child's stderr lines to `done` until it says so.
async fn reload(
    child: &mut tokio::process::Child,
    path: &std::path::Path,
    text: &str,
    mut done: impl FnMut(&str) -> bool,
) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    std::fs::write(path, text).unwrap();
    send_signal(child, "-HUP");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr is piped")).lines();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("reload is logged")
            .unwrap()
            .expect("subcar still running");
        if done(&line) {
            return;
        }
    }
}

fn send_signal(child: &tokio::process::Child, signal: &str) {
    let pid = child.id().unwrap().to_string();
    let status = Command::new("kill").args([signal, &pid]).status().unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}

/// Posts one `incidentUpdated` event with payload id `id`; expects `202`.
async fn post_event(webhook: &str, id: &str) {
    let res = reqwest::Client::new()
        .post(format!("http://{webhook}/webhook"))
        .json(&json!({"topic": "incidentUpdated", "payload": {"id": id}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
}

/// The `[webhook] listen` address of a config written by [`write_config`].
fn webhook_addr(text: &str) -> String {
    text.lines()
        .skip_while(|l| *l != "[webhook]")
        .nth(1)
        .unwrap()
        .split('"')
        .nth(1)
        .unwrap()
        .to_owned()
}

/// A graphql-transport-ws connection, acknowledged, with subscription "1"
/// to `incidentUpdated { id }`.
async fn ws_subscribed(public: &str) -> Ws {
    ws_subscribed_to(public, "subscription { incidentUpdated { id } }").await
}

/// A graphql-transport-ws connection, acknowledged, with subscription "1"
/// to `query`.
async fn ws_subscribed_to(public: &str, query: &str) -> Ws {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{public}/graphql")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    ws_send(&mut ws, json!({"type": "connection_init"})).await;
    assert_eq!(ws_recv(&mut ws).await.unwrap()["type"], "connection_ack");
    ws_send(
        &mut ws,
        json!({"id": "1", "type": "subscribe", "payload": {"query": query}}),
    )
    .await;
    ws
}

/// Posts `incidentUpdated` events with id `id` until one arrives on `ws`
/// (the subscription is registered by then).
async fn post_until_received(webhook: &str, ws: &mut Ws, id: &str) {
    use futures_util::StreamExt;
    for _ in 0..100 {
        post_event(webhook, id).await;
        if let Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(_)))) =
            tokio::time::timeout(Duration::from_millis(100), ws.next()).await
        {
            return;
        }
    }
    panic!("the subscription receives no events");
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next text message as JSON, or the close code.
async fn ws_recv(ws: &mut Ws) -> Result<serde_json::Value, Option<u16>> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame arrives")
            .expect("the socket is open")
            .unwrap()
        {
            Message::Text(t) => return Ok(serde_json::from_str(&t).unwrap()),
            Message::Close(frame) => return Err(frame.map(|f| u16::from(f.code))),
            _ => continue,
        }
    }
}

async fn ws_send<S>(ws: &mut S, v: serde_json::Value)
where
    S: futures_util::Sink<tokio_tungstenite::tungstenite::Message> + Unpin,
    S::Error: std::fmt::Debug,
{
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::text(v.to_string()))
        .await
        .unwrap();
}

/// SIGHUP with a changed `filter` and a lower subscription limit: the live
/// subscription follows the new expression, and the open socket the new
/// limit.
#[tokio::test]
async fn sighup_applies_a_new_filter_and_limits_to_live_connections() {
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let block = "[[subscriptions]]\nfield = \"incidentUpdated\"\n";
    let path = write_config(&dir, &upstream.url(), block);
    let text = std::fs::read_to_string(&path).unwrap();
    let webhook = webhook_addr(&text);
    let (mut child, public) = spawn_running(&path, Stdio::piped()).await;
    let mut ws = ws_subscribed(&public).await;
    post_until_received(&webhook, &mut ws, "warm-up").await;

    let filtered = text.replace(
        block,
        &format!("{block}filter = \"event.id != 'hidden'\"\n"),
    ) + "\n[limits]\nmax_subscriptions_per_connection = 1\n";
    let (mut rules, mut limits) = (false, false);
    reload(&mut child, &path, &filtered, |line| {
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
        post_event(&webhook, id).await;
    }
    // Warm-up events may still be queued; the first other id must be the
    // one the new filter lets through.
    let next = loop {
        let v = ws_recv(&mut ws).await.expect("the socket stays open");
        if v["payload"]["data"]["incidentUpdated"]["id"] != "warm-up" {
            break v;
        }
    };
    assert_eq!(next["payload"]["data"]["incidentUpdated"]["id"], "shown");
    // One subscription is open: a second one is now over the limit.
    ws_send(
        &mut ws,
        json!({"id": "2", "type": "subscribe", "payload": {"query": "subscription { incidentUpdated { id } }"}}),
    )
    .await;
    let refused = loop {
        let v = ws_recv(&mut ws).await.expect("the socket stays open");
        if v["type"] == "error" {
            break v;
        }
    };
    assert_eq!(refused["id"], "2");
    assert_eq!(refused["payload"][0]["extensions"]["code"], "RATE_LIMITED");
    child.kill().await.unwrap();
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
    let upstream = support::upstream::closed_port_url();
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
    let check = subcar()
        .args(["check", "--config"])
        .arg(&config_path)
        .output()
        .unwrap();
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

    let check = tokio::process::Command::from(subcar())
        .args(["check", "--config"])
        .arg(&config_path)
        .output()
        .await
        .unwrap();
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    // Free ports instead of the file's fixed ones.
    let public = format!("127.0.0.1:{}", free_port());
    let webhook = format!("127.0.0.1:{}", free_port());
    let _child = tokio::process::Command::from(subcar())
        .arg("--config")
        .arg(&config_path)
        .env("SUBCAR_SERVER__LISTEN", &public)
        .env("SUBCAR_ADMIN__LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("SUBCAR_WEBHOOK__LISTEN", &webhook)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let mut up = false;
    for _ in 0..200 {
        if client
            .get(format!("http://{public}/healthz"))
            .send()
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(up, "subcar runs on the written config");

    let mut ws = ws_subscribed_to(
        &public,
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
            let res = client
                .post(format!("http://{webhook}/webhook"))
                .json(&json!({"topic": "example.updated", "payload": {"id": id, "status": "done"}}))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 202);
        }
        use futures_util::StreamExt;
        if let Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t)))) =
            tokio::time::timeout(Duration::from_millis(100), ws.next()).await
        {
            received = Some(serde_json::from_str::<serde_json::Value>(&t).unwrap());
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
    let path = write_config(&dir, &secret_url, "");
    let out = tokio::process::Command::from(subcar())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .await
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!printed.contains("hunter2"), "{printed}");
    assert!(
        printed.contains("http://admin:****@127.0.0.1:"),
        "{printed}"
    );

    // The same for an unreachable upstream, whose error names the URL.
    let down = support::upstream::closed_port_url().replacen("http://", "http://admin:hunter2@", 1);
    let path_down = write_config(&dir, &down, "");
    let out = subcar()
        .args(["check", "--config"])
        .arg(&path_down)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!printed.contains("hunter2"), "{printed}");

    // `run` logs the upstream at start-up: redacted.
    use tokio::io::{AsyncBufReadExt, BufReader};
    let (mut child, _public) = spawn_running(&path, Stdio::piped()).await;
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
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
    child.kill().await.unwrap();
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
        let path = write_config(&dir, "http://127.0.0.1:1/graphql", extra);
        let out = subcar()
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{extra}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(key) && stderr.contains(range), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
