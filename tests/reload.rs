//! SIGHUP against a running `subcar` process: every changed key is applied
//! or named as waiting for a restart (in the log and in `/status` under
//! `pending_restart`), and a file that fails validation is refused whole
//! while the running configuration stays.

mod auth_support;
mod support;

use std::process::Stdio;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};
use subcar::ingest::signature::Verifier;
use support::http::{WEBHOOK_SECRET, post, unix_now};
use support::process::{ConfigFile, Process, Until};
use support::ws::{Next, acked};
use support::{Builder, Client, PATIENCE, TestSubcar, TestUpstream};
use tokio::io::{BufReader, Lines};
use tokio::process::ChildStderr;

const ROTATED_SECRET: &str = "another-test-secret-that-is-long-enough";
const ROTATED_WEBHOOK_SECRET: &str = "whsec_cm90YXRlZC13ZWJob29rLXNlY3JldA==";

/// A `subcar` process on a config file, and its log read line by line.
struct Running {
    process: Process,
    file: ConfigFile,
    log: Lines<BufReader<ChildStderr>>,
    _dir: tempfile::TempDir,
    _upstream: TestUpstream,
}

impl Running {
    async fn start(extra: &str) -> Self {
        let upstream = TestUpstream::start().await;
        let dir = tempfile::tempdir().unwrap();
        let file = ConfigFile::write(dir.path(), "subcar", config(&upstream, extra));
        let mut process = file.start(Stdio::piped(), Until::Listening).await;
        let log = process.stderr_lines();
        Self {
            process,
            file,
            log,
            _dir: dir,
            _upstream: upstream,
        }
    }

    fn builder(&self, extra: &str) -> Builder {
        config(&self._upstream, extra)
    }

    /// Rewrites the file with `extra` over the base configuration (the
    /// listeners kept) and reloads.
    async fn reload(&mut self, extra: &str) -> Vec<String> {
        self.file.rewrite(self.builder(extra));
        self.hangup().await
    }

    /// Sends SIGHUP; the log lines up to the one that says how the reload
    /// ended.
    async fn hangup(&mut self) -> Vec<String> {
        self.process.signal("-HUP");
        let mut lines = Vec::new();
        loop {
            let line = tokio::time::timeout(PATIENCE, self.log.next_line())
                .await
                .expect("the reload is logged")
                .unwrap()
                .expect("subcar still running");
            let end = line.contains("configuration reload");
            lines.push(line);
            if end {
                return lines;
            }
        }
    }

    /// Waits until `/status` counts `n` subscriptions.
    async fn wait_subscriptions(&self, n: usize) {
        tokio::time::timeout(PATIENCE, async {
            while self.status().await["subscriptions"]["total"] != n {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the subscriptions are counted");
    }

    async fn status(&self) -> Value {
        reqwest::get(format!("http://{}/status", self.file.addrs.admin))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

fn config(upstream: &TestUpstream, extra: &str) -> Builder {
    TestSubcar::builder(upstream.url()).extra(extra)
}

fn jwt(secret: &str) -> String {
    format!("[auth]\nmode = \"jwt\"\n[auth.jwt]\nsecret = \"{secret}\"\nleeway = \"0s\"\n")
}

fn token(secret: &str) -> String {
    let claims = json!({"sub": "u1", "exp": auth_support::now() + 600});
    let key = EncodingKey::from_secret(secret.as_bytes());
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
}

async fn connect(running: &Running, token: &str) -> (Client, Next) {
    let auth = json!({"Authorization": format!("Bearer {token}")});
    Client::init(running.file.addrs.public, &[], auth).await
}

fn logged(lines: &[String], text: &str) -> bool {
    lines.iter().any(|l| l.contains(text))
}

/// A new HS256 secret: new connections are checked with it (the old
/// token is refused `4403`, a token of the new secret admitted), the
/// connection admitted before keeps receiving, and nothing is pending.
#[tokio::test]
async fn a_rotated_jwt_secret_applies_to_new_connections() {
    let mut running = Running::start(&jwt(auth_support::SECRET)).await;
    let old = token(auth_support::SECRET);
    let (mut before, first) = connect(&running, &old).await;
    assert!(acked(&first), "{first:?}");
    before
        .subscribe("1", "subscription { incidentUpdated { id } }")
        .await;

    let lines = running.reload(&jwt(ROTATED_SECRET)).await;
    assert!(logged(&lines, "auth applied"), "{lines:#?}");
    assert!(!logged(&lines, "after a restart"), "{lines:#?}");
    assert!(!logged(&lines, "nothing changed"), "{lines:#?}");
    // The secret itself is never logged.
    assert!(!logged(&lines, ROTATED_SECRET), "{lines:#?}");
    assert_eq!(running.status().await["pending_restart"], json!([]));

    let (_, refused) = connect(&running, &old).await;
    assert!(matches!(refused, Next::Closed(4403, _)), "{refused:?}");
    let (_, admitted) = connect(&running, &token(ROTATED_SECRET)).await;
    assert!(acked(&admitted), "{admitted:?}");
    // The subscription made before the reload is still served.
    running.wait_subscriptions(1).await;
    post(
        running.file.addrs.webhook,
        json!({"topic": "incidentUpdated", "payload": {"id": "after"}}).to_string(),
        "application/json",
        &[],
    )
    .await;
    let m = before.recv().await;
    assert_eq!(
        m["payload"]["data"]["incidentUpdated"]["id"], "after",
        "{m}"
    );
}

async fn query(running: &Running) -> StatusCode {
    reqwest::Client::new()
        .post(format!("http://{}/graphql", running.file.addrs.public))
        .json(&json!({"query": "{ hello }"}))
        .send()
        .await
        .unwrap()
        .status()
}

/// `rate_limits.requests_per_ip` lowered to 1: the next request after one
/// is refused `429`, and `/status` shows the new limit.
#[tokio::test]
async fn a_tightened_rate_limit_applies_at_once() {
    let mut running = Running::start("[rate_limits]\nrequests_per_ip = 1000\n").await;
    for _ in 0..3 {
        assert_eq!(query(&running).await, StatusCode::OK);
    }
    let lines = running.reload("[rate_limits]\nrequests_per_ip = 1\n").await;
    assert!(logged(&lines, "rate limits applied"), "{lines:#?}");
    let status = running.status().await;
    assert_eq!(status["rate_limits"]["requests_per_ip"], 1, "{status}");
    assert_eq!(status["pending_restart"], json!([]), "{status}");
    assert_eq!(query(&running).await, StatusCode::OK);
    assert_eq!(query(&running).await, StatusCode::TOO_MANY_REQUESTS);
}

async fn post_signed(running: &Running, secret: &str, id: &str) -> StatusCode {
    let body = json!({"topic": "incidentUpdated", "payload": {"id": id}}).to_string();
    let ts = unix_now();
    let sig = Verifier::new(secret).unwrap().sign(id, ts, body.as_bytes());
    let ts = ts.to_string();
    let headers = [
        ("webhook-id", id),
        ("webhook-timestamp", ts.as_str()),
        ("webhook-signature", sig.as_str()),
    ];
    post(
        running.file.addrs.webhook,
        body,
        "application/json",
        &headers,
    )
    .await
    .0
}

/// A new `webhook.secret`: requests signed with the old one are refused
/// `401`, ones signed with the new one accepted.
#[tokio::test]
async fn a_rotated_webhook_secret_applies_at_once() {
    let section = |secret: &str| format!("[webhook]\nsecret = \"{secret}\"\n");
    let mut running = Running::start(&section(WEBHOOK_SECRET)).await;
    assert_eq!(
        post_signed(&running, WEBHOOK_SECRET, "m1").await,
        StatusCode::ACCEPTED
    );
    let lines = running.reload(&section(ROTATED_WEBHOOK_SECRET)).await;
    assert!(!logged(&lines, "nothing changed"), "{lines:#?}");
    assert!(!logged(&lines, "after a restart"), "{lines:#?}");
    assert_eq!(
        post_signed(&running, WEBHOOK_SECRET, "m2").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        post_signed(&running, ROTATED_WEBHOOK_SECRET, "m3").await,
        StatusCode::ACCEPTED
    );
}

/// A new `admin.listen` and `bus.history` cannot change while running:
/// each is named in a `warn` line and under `pending_restart`, the admin
/// listener stays where it is, and putting the file back clears the list.
#[tokio::test]
async fn a_listener_change_is_named_in_the_log_and_in_status() {
    let mut running = Running::start("").await;
    let admin = running.file.addrs.admin.to_string();
    let moved = support::free_port();
    let text = running
        .file
        .text()
        .replace(&admin, &format!("127.0.0.1:{moved}"));
    std::fs::write(&running.file.path, format!("{text}\n[bus]\nhistory = 7\n")).unwrap();
    let lines = running.hangup().await;
    for key in ["admin.listen", "bus.history"] {
        assert!(
            lines
                .iter()
                .any(|l| l.contains("WARN") && l.contains("after a restart") && l.contains(key)),
            "{key}: {lines:#?}"
        );
    }
    assert!(!logged(&lines, "nothing changed"), "{lines:#?}");
    assert_eq!(
        running.status().await["pending_restart"],
        json!(["admin.listen", "bus.history"])
    );
    running.file.rewrite(running.builder(""));
    let lines = running.hangup().await;
    assert!(!logged(&lines, "after a restart"), "{lines:#?}");
    assert_eq!(running.status().await["pending_restart"], json!([]));
}

/// Files that fail validation (a bad value, a secret that is not one,
/// TOML that does not parse, a subscription the schema lacks) are refused
/// whole, the error logged: the valid rate limit change beside them is not
/// applied either, and serving goes on.
#[tokio::test]
async fn a_bad_file_is_refused_whole_and_the_running_configuration_stays() {
    let mut running = Running::start("[rate_limits]\nrequests_per_ip = 1000\n").await;
    let tightened = "[rate_limits]\nrequests_per_ip = 1\n";
    let bad = [
        ("[heartbeat]\ninterval = \"often\"\n", "heartbeat.interval"),
        ("[webhook]\nsecret = \"whsec_!!\"\n", "secret"),
        (
            "[[subscriptions]]\nfield = \"noSuchField\"\n",
            "noSuchField",
        ),
    ];
    for (extra, named) in bad {
        let lines = running.reload(&format!("{tightened}{extra}")).await;
        let refused = lines.last().unwrap();
        assert!(refused.contains("refused"), "{lines:#?}");
        assert!(refused.contains(named), "{named}: {lines:#?}");
    }
    let valid = running.file.text();
    std::fs::write(&running.file.path, format!("{valid}\n[rate_limits\n")).unwrap();
    let lines = running.hangup().await;
    assert!(lines.last().unwrap().contains("refused"), "{lines:#?}");
    let status = running.status().await;
    assert_eq!(status["rate_limits"]["requests_per_ip"], 1000, "{status}");
    assert_eq!(status["pending_restart"], json!([]), "{status}");
    for _ in 0..3 {
        assert_eq!(query(&running).await, StatusCode::OK);
    }
}

/// `auth.mode` from `none` to `jwt`: anonymous clients that connect after
/// the reload are refused, one with a token admitted, and the anonymous
/// connection made before keeps its subscription.
#[tokio::test]
async fn switching_auth_on_applies_to_new_connections() {
    let mut running = Running::start("").await;
    let mut before = Client::ready(running.file.addrs.public).await;
    before
        .subscribe("1", "subscription { incidentUpdated { id } }")
        .await;
    running.wait_subscriptions(1).await;
    let lines = running.reload(&jwt(auth_support::SECRET)).await;
    assert!(logged(&lines, "auth applied"), "{lines:#?}");
    let (_, anonymous) = Client::init(running.file.addrs.public, &[], json!({})).await;
    assert!(matches!(anonymous, Next::Closed(4403, _)), "{anonymous:?}");
    let (_, admitted) = connect(&running, &token(auth_support::SECRET)).await;
    assert!(acked(&admitted), "{admitted:?}");
    running.wait_subscriptions(1).await;
}

/// `[heartbeat]` applies to connections that follow: a lowered
/// `init_timeout` closes a socket that never sends `connection_init`
/// with `4408`.
#[tokio::test]
async fn a_new_heartbeat_applies_to_new_connections() {
    let mut running = Running::start("[heartbeat]\ninit_timeout = \"60s\"\n").await;
    let lines = running
        .reload("[heartbeat]\ninit_timeout = \"200ms\"\n")
        .await;
    assert!(!logged(&lines, "after a restart"), "{lines:#?}");
    let mut silent = Client::connect(running.file.addrs.public).await;
    assert_eq!(silent.closed().await.0, 4408);
}
