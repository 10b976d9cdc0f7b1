//! The one harness that starts subcar for the tests (and the benches that
//! need a running one): [`TestSubcar::builder`] in-process on port 0,
//! [`process`] for the `subcar` binary as an operator runs it, a real
//! GraphQL upstream ([`upstream`]), a graphql-transport-ws client ([`ws`]),
//! SSE and multipart readers ([`stream`]) and a webhook sender ([`http`]).
//!
//! Every test's configuration is one TOML table: the harness's base (all
//! listeners on loopback port 0) with each test's TOML merged over it, so a
//! test names only what it changes.
#![allow(dead_code, unused_imports)]

pub mod http;
pub mod process;
pub mod stream;
pub mod upstream;
pub mod ws;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use subcar::app::{App, AppError};
use subcar::config::Config;
use subcar::shutdown::Shutdown;
use subcar::subscriptions::Registry;
use tokio::task::JoinHandle;

pub use http::{metrics, post, post_with_id, publish};
pub use upstream::TestUpstream;
pub use ws::{Client, Next};

/// How long a test waits for something that should happen; never asserted on.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// The subscription schema of the realtime tests ([`TestSubcar::realtime`]).
pub const SCHEMA: &str = r#"
type Query { hello: String }
type Incident { id: ID! title: String severity: String }
type Item { kind: String n: Int }
type Subscription {
  incidentUpdated(severity: String): Incident
  counter: Int
  item(kind: String): Item
}
"#;

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A running subcar; stops when dropped.
pub struct TestSubcar {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub webhook: SocketAddr,
    pub registry: Arc<Registry>,
    shutdown: Shutdown,
    task: Option<JoinHandle<()>>,
    _sdl: Option<Arc<tempfile::NamedTempFile>>,
}

/// What a [`TestSubcar`] (or a `subcar` process) is started with.
#[derive(Clone)]
pub struct Builder {
    table: toml::Table,
    /// The file `schema.path` names when the SDL is given as text.
    sdl: Option<Arc<tempfile::NamedTempFile>>,
}

impl TestSubcar {
    /// Subcar on `examples/schema.graphql`, queries going to `upstream_url`,
    /// the upstream schema not introspected.
    pub fn builder(upstream_url: impl Into<String>) -> Builder {
        let schema = manifest_dir().join("examples/schema.graphql");
        let base = format!(
            r#"
[server]
listen = "127.0.0.1:0"
drain_timeout = "5s"
[admin]
listen = "127.0.0.1:0"
[upstream]
url = {url}
[schema]
path = {schema}
introspect_upstream = false
[webhook]
listen = "127.0.0.1:0"
"#,
            url = toml::Value::from(upstream_url.into()),
            schema = toml::Value::from(schema.display().to_string()),
        );
        Builder {
            table: base.parse().expect("the base config is TOML"),
            sdl: None,
        }
    }

    /// Subcar on `examples/schema.graphql` that learns the rest of its
    /// schema from `upstream_url` by introspection, started.
    pub async fn introspecting(upstream_url: impl Into<String>) -> TestSubcar {
        Self::builder(upstream_url).introspect().spawn().await
    }

    /// The realtime tests' subcar: [`SCHEMA`], a short drain and upstream
    /// timeout.
    pub fn realtime(upstream_url: impl Into<String>) -> Builder {
        Self::builder(upstream_url)
            .sdl(SCHEMA)
            .server("drain_timeout = \"2s\"")
            .upstream("timeout = \"5s\"")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn graphql_url(&self) -> String {
        self.url("/graphql")
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// A GET of `path` on the public listener.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        reqwest::get(self.url(path)).await.unwrap()
    }

    /// The body of a GET of `path` on the public listener.
    pub async fn get_text(&self, path: &str) -> String {
        self.get(path).await.text().await.unwrap()
    }

    /// The JSON body of a GET of `path` on the public listener.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        self.get(path).await.json().await.unwrap()
    }

    /// The JSON body of a GET of `path` on the admin listener (`/status`).
    pub async fn admin_json(&self, path: &str) -> serde_json::Value {
        reqwest::get(self.admin_url(path))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Triggers the drain and waits for subcar to finish it.
    pub async fn stop(mut self) {
        self.shutdown.trigger();
        if let Some(task) = self.task.take() {
            task.await.expect("subcar task does not panic");
        }
    }

    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }
}

impl Drop for TestSubcar {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// Merges `over` into `base`: tables key by key, arrays of tables appended,
/// any other value replaced.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(into)), toml::Value::Table(from)) => merge(into, from),
            (Some(toml::Value::Array(into)), toml::Value::Array(from)) => into.extend(from),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

impl Builder {
    /// TOML merged over the configuration so far (any sections).
    pub fn extra(mut self, toml: &str) -> Self {
        let over = toml
            .parse()
            .unwrap_or_else(|e| panic!("test TOML is valid: {e}\n{toml}"));
        merge(&mut self.table, over);
        self
    }

    fn section(self, name: &str, lines: &str) -> Self {
        self.extra(&format!("[{name}]\n{lines}"))
    }

    /// Lines for the `[server]` section.
    pub fn server(self, lines: &str) -> Self {
        self.section("server", lines)
    }

    /// Lines for the `[upstream]` section.
    pub fn upstream(self, lines: &str) -> Self {
        self.section("upstream", lines)
    }

    /// Lines for the `[schema]` section (e.g. `upstream_sdl`).
    pub fn schema(self, lines: &str) -> Self {
        self.section("schema", lines)
    }

    /// Lines for the `[webhook]` section.
    pub fn webhook(self, lines: &str) -> Self {
        self.section("webhook", lines)
    }

    /// Learn the upstream schema by introspection (off by default in tests).
    pub fn introspect(self) -> Self {
        self.schema("introspect_upstream = true")
    }

    /// Another subscription SDL file for `schema.path`.
    pub fn schema_path(self, path: impl Into<PathBuf>) -> Self {
        let path = path.into().display().to_string();
        self.schema(&format!("path = {}", toml::Value::from(path)))
    }

    /// The subscription SDL as text (written to a file kept while subcar runs).
    pub fn sdl(self, sdl: &str) -> Self {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), sdl).unwrap();
        let builder = self.schema_path(file.path());
        Builder {
            sdl: Some(Arc::new(file)),
            ..builder
        }
    }

    /// The listeners on these addresses instead of port 0 (for a process).
    pub fn listen(self, addrs: &process::Addrs) -> Self {
        self.extra(&addrs.toml())
    }

    pub fn config_text(&self) -> String {
        toml::to_string(&self.table).expect("the config serialises")
    }

    pub async fn spawn(self) -> TestSubcar {
        self.try_spawn().await.expect("subcar starts")
    }

    /// Like [`Builder::spawn`], returning what stopped the start-up (the
    /// configuration must parse).
    pub async fn try_spawn(self) -> Result<TestSubcar, AppError> {
        let config =
            Config::parse(&self.config_text(), std::iter::empty()).expect("test config is valid");
        let app = App::build(config)?;
        app.learn_upstream_schema().await?;
        let bound = app.bind().await?;
        let shutdown = Shutdown::new();
        Ok(TestSubcar {
            addr: bound.public_addr(),
            admin: bound.admin_addr(),
            webhook: bound.webhook_addr(),
            registry: bound.registry(),
            task: Some(tokio::spawn(bound.run(shutdown.clone()))),
            shutdown,
            _sdl: self.sdl,
        })
    }
}

/// The realtime subcar ([`TestSubcar::realtime`]) with `extra` TOML, its
/// upstream one that is gone once it has started.
pub async fn spawn(extra: &str) -> TestSubcar {
    let upstream = TestUpstream::start().await;
    spawn_with_upstream(&upstream.url(), extra).await
}

/// Like [`spawn`], with queries (and upstream authentication) going to
/// `upstream_url`.
pub async fn spawn_with_upstream(upstream_url: &str, extra: &str) -> TestSubcar {
    spawn_with_server(upstream_url, "", extra).await
}

/// Like [`spawn_with_upstream`], with `server` lines added to `[server]`.
pub async fn spawn_with_server(upstream_url: &str, server: &str, extra: &str) -> TestSubcar {
    TestSubcar::realtime(upstream_url)
        .server(server)
        .extra(extra)
        .spawn()
        .await
}

/// Waits until the registry holds `n` subscriptions (registration follows
/// the `subscribe` message asynchronously).
pub async fn wait_subscriptions(subcar: &TestSubcar, n: usize) {
    tokio::time::timeout(PATIENCE, async {
        while subcar.registry.sizes().subscriptions != n {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "registry reached {n} subscriptions, has {:?}",
            subcar.registry.sizes()
        )
    });
}

/// Publishes large `incidentUpdated` events, ten per request, until the
/// registry counts a slow consumer; returns how many were published.
pub async fn flood_until_slow_consumer(subcar: &TestSubcar) -> usize {
    use std::sync::atomic::Ordering;
    let big = "x".repeat(32 * 1024);
    let mut published = 0;
    while subcar.registry.stats.slow_consumers.load(Ordering::Relaxed) == 0 {
        assert!(published < 6000, "never detected as a slow consumer");
        let batch: Vec<serde_json::Value> = (0..10)
            .map(|i| serde_json::json!({"topic": "incidentUpdated", "payload": {"id": (published + i).to_string(), "title": big}}))
            .collect();
        publish(subcar.webhook, serde_json::Value::Array(batch)).await;
        published += 10;
    }
    published
}

/// A free loopback port (bound then released; for child processes).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// POSTs a GraphQL JSON body and returns status and JSON.
pub async fn post_json(
    url: &str,
    body: serde_json::Value,
) -> (reqwest::StatusCode, serde_json::Value) {
    let res = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("request sent");
    let status = res.status();
    (status, res.json().await.expect("JSON response"))
}

/// A realtime subcar with `extra` ([`spawn`]) and a subscriber of
/// `counter` (id `c`), registered.
pub async fn counter_subscriber(extra: &str) -> (TestSubcar, Client) {
    let subcar = spawn(extra).await;
    let c = subcar.subscriber("c", "subscription { counter }").await;
    (subcar, c)
}

impl TestSubcar {
    /// A client, acknowledged, with subscription `id` to `query`, once the
    /// registry holds it (one more subscription than before).
    pub async fn subscriber(&self, id: &str, query: &str) -> Client {
        let before = self.registry.sizes().subscriptions;
        let mut c = Client::ready(self.addr).await;
        c.subscribe(id, query).await;
        wait_subscriptions(self, before + 1).await;
        c
    }
}

/// A test upstream and the realtime subcar with `server` lines and `extra`
/// ([`spawn_with_server`]) querying it.
pub async fn start_with_upstream(server: &str, extra: &str) -> (TestUpstream, TestSubcar) {
    let upstream = TestUpstream::start().await;
    let subcar = spawn_with_server(&upstream.url(), server, extra).await;
    (upstream, subcar)
}

/// A subscriber of `counter` (id `w`) connected before a hostile input.
pub async fn watcher(subcar: &TestSubcar) -> Client {
    subcar.subscriber("w", "subscription { counter }").await
}

/// subcar is alive (both listeners answer `/healthz`) and `watcher` still
/// receives an event posted now.
pub async fn still_serving(subcar: &TestSubcar, watcher: &mut Client, n: i64) {
    for url in [subcar.url("/healthz"), subcar.admin_url("/healthz")] {
        let health = reqwest::get(&url).await.unwrap();
        assert_eq!(health.status(), 200, "{url}");
    }
    publish(
        subcar.webhook,
        serde_json::json!({"topic": "counter", "payload": n}),
    )
    .await;
    let msg = watcher.recv().await;
    assert_eq!(msg["type"], "next", "{msg}");
    assert_eq!(msg["payload"]["data"]["counter"], n);
}

/// A self-signed certificate for `localhost`, written to `dir`, and the
/// `[server.tls]` section that serves it.
pub fn self_signed_tls(dir: &std::path::Path) -> (rcgen::CertifiedKey, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert_path, key_path) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let toml = format!(
        "[server.tls]\ncert = {}\nkey = {}",
        toml::Value::from(cert_path.display().to_string()),
        toml::Value::from(key_path.display().to_string())
    );
    (cert, toml)
}
