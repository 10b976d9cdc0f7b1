//! The configuration tree: one TOML file, typed with serde, overridable by
//! `SUBCAR_<SECTION>__<KEY>` environment variables (`env.rs`).
//!
//! [`Config::parse`] is a pure function of the file text and an environment
//! snapshot, so tests never touch the process environment. Problems are
//! reported all at once, each with the dotted key, the offending value and
//! what was expected.
//!
//! Each section lives in its own file with its struct, its defaults, its
//! checks and (for file keys) its path resolution, so adding a key touches
//! that file alone (and `config.example.toml`, the reference, which a test
//! loads). Shared value types and the wording of range problems are in
//! `values.rs`; URL redaction in `redact.rs`. This file holds the tree, the
//! checks that span sections, and loading.

mod auth;
mod bus;
mod env;
mod heartbeat;
mod limits;
mod log;
mod rate_limits;
mod redact;
mod schema;
mod server;
mod subscriptions;
#[cfg(test)]
mod tests;
mod triggers;
mod upstream;
mod values;
mod webhook;

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::graphql::document::{DocumentLimits, MAX_DOCUMENT_DEPTH};
pub use crate::graphql::fetch::{OnNull, Prefer, ResolveConfig};
pub use auth::{AuthConfig, AuthMode, JwtAlgorithm, JwtConfig, ProxyAuth, UpstreamAuthConfig};
pub use bus::{BusConfig, BusKind};
pub use env::ENV_PREFIX;
pub use heartbeat::HeartbeatConfig;
pub use limits::LimitsConfig;
pub use log::{LogConfig, LogFormat};
pub use rate_limits::RateLimitsConfig;
pub use redact::{Redacted, UpstreamUrl, redact_url};
pub use schema::SchemaConfig;
pub use server::{AdminConfig, GraphiqlConfig, ServerConfig, TlsConfig};
pub use subscriptions::SubscriptionConfig;
pub use triggers::TriggerConfig;
pub use upstream::UpstreamConfig;
pub use values::{DAY, IpNet, MAX_BODY_BYTES, MAX_DURATION, MAX_MESSAGE_BYTES, MS, Secret};
pub use webhook::{UnknownTopics, WebhookConfig};

use values::Problems;

/// The whole configuration, defaults filled in.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Format version of the file; only `1` exists.
    #[serde(default = "default_version")]
    pub version: u32,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    pub upstream: UpstreamConfig,
    pub schema: SchemaConfig,
    #[serde(default)]
    pub subscriptions: Vec<SubscriptionConfig>,
    /// Events published for mutations subcar proxies.
    #[serde(default)]
    pub triggers: Vec<TriggerConfig>,
    #[serde(default)]
    pub webhook: WebhookConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub heartbeat: HeartbeatConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub rate_limits: RateLimitsConfig,
    #[serde(default)]
    pub bus: BusConfig,
    #[serde(default)]
    pub log: LogConfig,
}

fn default_version() -> u32 {
    1
}

/// Everything wrong with a configuration, one line per problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config is not valid TOML: {0}")]
    Syntax(String),
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

impl Config {
    /// Reads `path`, applies `env` overrides, and validates. Relative paths in
    /// the file are resolved against the file's directory.
    pub fn load(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::parse(&text, env)?;
        config.resolve_paths(path.parent().unwrap_or(Path::new(".")))?;
        Ok(config)
    }

    /// Parses and validates configuration text; pure.
    pub fn parse(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Syntax(e.to_string()))?;
        let overridden = env::apply_env_overrides(&mut table, env)?;
        let config: Config = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| {
                let key = e.path().to_string();
                let inner = e.into_inner().message().to_string();
                if key == "." {
                    return ConfigError::Invalid(vec![inner]);
                }
                ConfigError::Invalid(vec![format!("{key}: {inner}")])
            })
            .map_err(|e| env::name_variables(e, &overridden))?;
        config
            .validate()
            .map_err(|e| env::name_variables(e, &overridden))?;
        Ok(config)
    }

    /// Whether `GET {graphql_path}` serves GraphiQL to browsers.
    pub fn graphiql_enabled(&self) -> bool {
        self.server
            .graphiql
            .enabled
            .unwrap_or(self.schema.introspection)
    }

    /// Settings that are valid but probably unsafe; `subcar check` and
    /// start-up print each.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.server.cors_origins.iter().any(|o| o == "*") {
            let credential = match &self.auth.cookie {
                Some(name) => format!("auth.cookie = {name:?} admits sockets by cookie, and "),
                None => String::new(),
            };
            warnings.push(format!(
                "server.cors_origins: [\"*\"] lets a page of any origin open a socket as the browser's user: {credential}the browser's cookies go to the upstream with every query over that socket; list the origins instead"
            ));
        }
        warnings
    }

    /// Every section's checks, then the ones that span sections.
    fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Problems::default();
        if self.version != 1 {
            p.push(format!(
                "version: {} is not supported: expected 1",
                self.version
            ));
        }
        self.server.check(&mut p);
        self.upstream.check(&mut p);
        self.schema.check(&mut p);
        subscriptions::check(&self.subscriptions, &self.schema, &mut p);
        triggers::check(&self.triggers, &mut p);
        self.webhook.check(&mut p);
        self.auth.check(&mut p);
        self.heartbeat.check(&mut p);
        self.limits.check(&mut p);
        self.rate_limits.check(&mut p);
        self.bus.check(&mut p);
        self.log.check(&mut p);
        if p.0.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(p.0))
        }
    }

    fn resolve_paths(&mut self, base: &Path) -> Result<(), ConfigError> {
        self.schema.resolve_paths(base);
        self.server.resolve_paths(base);
        self.webhook.resolve_paths(base)?;
        self.auth.resolve_paths(base)
    }
}
