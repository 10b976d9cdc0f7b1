//! `[server]` (the public listener, with `[server.graphiql]` and
//! `[server.tls]`) and `[admin]` (the metrics and probes listener).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::values::{DAY, HOUR, IpNet, MAX_BODY_BYTES, Problems, duration, resolve, socket_addr};

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Public listener: GraphQL proxy, WebSocket subscriptions, probes.
    #[serde(deserialize_with = "socket_addr")]
    pub listen: SocketAddr,
    pub graphql_path: String,
    /// The in-browser IDE on `GET {graphql_path}` for clients asking for HTML.
    pub graphiql: GraphiqlConfig,
    /// How long in-flight requests may take to finish after SIGTERM.
    #[serde(deserialize_with = "duration")]
    pub drain_timeout: Duration,
    /// Peers whose `X-Forwarded-*` headers are trusted and extended rather than replaced.
    pub trusted_proxies: Vec<IpNet>,
    /// Origins allowed by CORS; `["*"]` allows any, empty disables CORS headers.
    pub cors_origins: Vec<String>,
    /// Largest request body accepted on the public listener, in bytes.
    pub max_request_bytes: usize,
    pub tls: Option<TlsConfig>,
    /// A connection must have sent a complete request head (and finished its
    /// TLS handshake) this long after accept, or after its first byte of a
    /// later request; on every listener.
    #[serde(deserialize_with = "duration")]
    pub header_timeout: Duration,
    /// A keep-alive connection with no request in flight that sends
    /// nothing for this long is closed; on every listener.
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
    /// A request body on the public listener that sends nothing for this
    /// long fails with `408`.
    #[serde(deserialize_with = "duration")]
    pub body_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: ([0, 0, 0, 0], 4000).into(),
            graphql_path: "/graphql".into(),
            graphiql: GraphiqlConfig::default(),
            drain_timeout: Duration::from_secs(15),
            trusted_proxies: Vec::new(),
            cors_origins: Vec::new(),
            max_request_bytes: 10 * 1024 * 1024,
            tls: None,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(10),
        }
    }
}

/// `[server.graphiql]`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GraphiqlConfig {
    /// Unset: on unless `schema.introspection = false` (the IDE needs the schema).
    pub enabled: Option<bool>,
    /// Base URL the page loads its scripts and styles from, laid out as
    /// unpkg.com is (`{assets_url}/graphiql@3.8.3/graphiql.min.js`, …), so a
    /// mirror or an npm `node_modules` served by path can stand in.
    pub assets_url: String,
}

impl Default for GraphiqlConfig {
    fn default() -> Self {
        Self {
            enabled: None,
            assets_url: "https://unpkg.com".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    #[serde(deserialize_with = "socket_addr")]
    pub listen: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 9464).into(),
        }
    }
}

impl ServerConfig {
    pub(super) fn check(&self, p: &mut Problems) {
        p.path("server.graphql_path", &self.graphql_path);
        let assets = &self.graphiql.assets_url;
        let is_url = assets
            .parse::<http::Uri>()
            .is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
        if !is_url || assets.contains(['"', '\'', '<', '>', '`']) {
            p.push(format!(
                "server.graphiql.assets_url: {assets:?} is not a URL: expected an http(s) base URL such as \"https://unpkg.com\""
            ));
        }
        p.size(
            "server.max_request_bytes",
            self.max_request_bytes,
            1..=MAX_BODY_BYTES,
        );
        p.duration(
            "server.drain_timeout",
            self.drain_timeout,
            Duration::ZERO..=DAY,
        );
        p.timeout("server.header_timeout", self.header_timeout, HOUR);
        p.timeout("server.idle_timeout", self.idle_timeout, DAY);
        p.timeout("server.body_timeout", self.body_timeout, HOUR);
    }

    pub(super) fn resolve_paths(&mut self, base: &Path) {
        if let Some(tls) = &mut self.tls {
            resolve(base, &mut tls.cert);
            resolve(base, &mut tls.key);
        }
    }
}
