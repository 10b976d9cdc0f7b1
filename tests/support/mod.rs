//! Test harness: a real GraphQL upstream (async-graphql) and subcar started
//! in-process on ephemeral ports.
#![allow(dead_code)]

pub mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use subcar::app::{App, AppError};
use subcar::config::Config;
use subcar::shutdown::Shutdown;
use subcar::subscriptions::Registry;
use tokio::task::JoinHandle;

pub use upstream::TestUpstream;

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
}

pub struct Builder {
    introspect: bool,
    /// The subscription SDL (`schema.path`); `examples/schema.graphql` by default.
    schema_path: PathBuf,
    /// Lines for the `[schema]` section.
    schema: String,
    upstream_url: String,
    server: String,
    upstream: String,
    extra: String,
}

impl TestSubcar {
    pub fn builder(upstream_url: impl Into<String>) -> Builder {
        Builder {
            introspect: false,
            schema_path: manifest_dir().join("examples/schema.graphql"),
            schema: String::new(),
            upstream_url: upstream_url.into(),
            server: String::new(),
            upstream: String::new(),
            extra: String::new(),
        }
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

impl Builder {
    /// Learn the upstream schema by introspection (off by default in tests).
    pub fn introspect(mut self) -> Self {
        self.introspect = true;
        self
    }

    /// Another subscription SDL file for `schema.path`.
    pub fn schema_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.schema_path = path.into();
        self
    }

    /// Extra lines for the `[schema]` section (e.g. `upstream_sdl`).
    pub fn schema(mut self, lines: &str) -> Self {
        self.schema.push_str(lines);
        self.schema.push('\n');
        self
    }

    /// Extra lines for the `[server]` section.
    pub fn server(mut self, lines: &str) -> Self {
        self.server.push_str(lines);
        self.server.push('\n');
        self
    }

    /// Extra lines for the `[upstream]` section.
    pub fn upstream(mut self, lines: &str) -> Self {
        self.upstream.push_str(lines);
        self.upstream.push('\n');
        self
    }

    /// Further sections, appended verbatim.
    pub fn extra(mut self, toml: &str) -> Self {
        self.extra.push_str(toml);
        self.extra.push('\n');
        self
    }

    pub fn config_text(&self) -> String {
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
drain_timeout = "5s"
{server}
[admin]
listen = "127.0.0.1:0"
[upstream]
url = "{url}"
{upstream}
[schema]
path = "{schema}"
introspect_upstream = {introspect}
{schema_lines}
[webhook]
listen = "127.0.0.1:0"
{extra}
"#,
            server = self.server,
            url = self.upstream_url,
            upstream = self.upstream,
            schema = self.schema_path.display(),
            schema_lines = self.schema,
            extra = self.extra,
            introspect = self.introspect,
        )
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
        })
    }
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
