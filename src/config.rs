//! The configuration tree: one TOML file, typed with serde, overridable by
//! `SUBCAR_<SECTION>__<KEY>` environment variables.
//!
//! [`Config::parse`] is a pure function of the file text and an environment
//! snapshot, so tests never touch the process environment. Problems are
//! reported with the dotted key, the offending value and what was expected.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The prefix of environment variables that override configuration keys.
pub use crate::graphql::document::{DocumentLimits, MAX_DOCUMENT_DEPTH};
pub use crate::graphql::fetch::{OnNull, Prefer, ResolveConfig};

pub const ENV_PREFIX: &str = "SUBCAR_";

/// The whole configuration, defaults filled in.
#[derive(Debug, Clone, Deserialize)]
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

#[derive(Debug, Clone, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The upstream GraphQL endpoint (`http://` or `https://`).
    pub url: UpstreamUrl,
    /// Time allowed for the upstream to answer with response headers.
    #[serde(default = "default_upstream_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Whether the upstream accepts JSON-array batches (used by enrichment).
    #[serde(default)]
    pub batching: bool,
}

fn default_upstream_timeout() -> Duration {
    Duration::from_secs(30)
}

/// An absolute `http`/`https` URL, checked at parse time. `Display` and
/// `Debug` redact its secrets ([`Redacted`]); [`Self::expose`] is the URL
/// to connect to.
#[derive(Clone)]
pub struct UpstreamUrl(pub http::Uri);

impl UpstreamUrl {
    /// The whole URL, password included: for connecting, never for printing.
    pub fn expose(&self) -> String {
        self.0.to_string()
    }
}

impl<'de> Deserialize<'de> for UpstreamUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        let shown = redact_url(&raw);
        let uri: http::Uri = raw.parse().map_err(|_| {
            serde::de::Error::custom(format!(
                "invalid URL {shown:?}: expected an absolute URL like \"http://127.0.0.1:8080/graphql\""
            ))
        })?;
        match (uri.scheme_str(), uri.authority()) {
            (Some("http" | "https"), Some(_)) => Ok(Self(uri)),
            _ => Err(serde::de::Error::custom(format!(
                "invalid URL {shown:?}: expected an absolute http:// or https:// URL"
            ))),
        }
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Redacted(&self.0.to_string()).fmt(f)
    }
}

impl fmt::Debug for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UpstreamUrl({:?})", redact_url(&self.0.to_string()))
    }
}

/// A URL (or a comma-separated list of them, as `bus.url` for NATS) shown
/// without its secrets: the password of the userinfo (`user:****@`), a
/// userinfo without a colon (a token, as NATS and Redis take it: `****@`)
/// and the values of query parameters whose names look like secrets.
pub struct Redacted<'a>(pub &'a str);

/// Query parameter names (substrings, ASCII case-insensitive) whose values
/// are hidden.
const SECRET_PARAMS: [&str; 8] = [
    "pass",
    "secret",
    "token",
    "key",
    "auth",
    "sig",
    "credential",
    "session",
];

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, part) in self.0.split(',').enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            redact_one(part, f)?;
        }
        Ok(())
    }
}

/// [`Redacted`] as a `String`.
pub fn redact_url(url: &str) -> String {
    Redacted(url).to_string()
}

fn redact_one(url: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let start = url.find("://").map_or(0, |i| i + 3);
    f.write_str(&url[..start])?;
    let mut rest = &url[start..];
    // The last '@' before the query ends the userinfo, even when a
    // password holds an unescaped '/' (over-redacting a path with '@' in
    // it is the safe mistake).
    let query_at = rest.find(['?', '#']).unwrap_or(rest.len());
    if let Some(at) = rest[..query_at].rfind('@') {
        match rest[..at].split_once(':') {
            Some((user, _)) if !user.contains('/') => write!(f, "{user}:****@")?,
            _ => f.write_str("****@")?,
        }
        rest = &rest[at + 1..];
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    f.write_str(authority)?;
    let (before_fragment, fragment) = match tail.find('#') {
        Some(i) => tail.split_at(i),
        None => (tail, ""),
    };
    let Some((path, query)) = before_fragment.split_once('?') else {
        return f.write_str(tail);
    };
    write!(f, "{path}?")?;
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            f.write_str("&")?;
        }
        match pair.split_once('=') {
            Some((name, _)) if is_secret_param(name) => write!(f, "{name}=****")?,
            _ => f.write_str(pair)?,
        }
    }
    f.write_str(fragment)
}

fn is_secret_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_PARAMS.iter().any(|s| name.contains(s))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaConfig {
    /// SDL file holding `type Subscription` (or `extend type Subscription`).
    pub path: PathBuf,
    /// Learn the upstream schema by introspection at start-up.
    #[serde(default = "yes")]
    pub introspect_upstream: bool,
    /// The upstream schema as an SDL file, instead of introspection.
    #[serde(default)]
    pub upstream_sdl: Option<PathBuf>,
    /// Answer introspection (`__schema`, `__type`) and serve
    /// `{graphql_path}/schema.graphql`; `false` refuses both, for APIs that
    /// do not publish their schema.
    #[serde(default = "yes")]
    pub introspection: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionConfig {
    /// A field of the `Subscription` root type.
    pub field: String,
    /// The webhook topic feeding it; defaults to the field name.
    #[serde(default)]
    pub topic: Option<String>,
    /// CEL over `event`, `args`, `claims`: which events reach a subscription.
    #[serde(default)]
    pub filter: Option<String>,
    /// CEL over `claims`, `args`: who may subscribe.
    #[serde(default)]
    pub allow: Option<String>,
    /// Complete key-only events from the upstream (enrichment).
    #[serde(default)]
    pub resolve: Option<ResolveConfig>,
}

impl SubscriptionConfig {
    pub fn topic(&self) -> &str {
        self.topic.as_deref().unwrap_or(&self.field)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// Internal listener for events; loopback because the upstream shares the pod.
    #[serde(deserialize_with = "socket_addr")]
    pub listen: SocketAddr,
    pub path: String,
    /// Standard Webhooks secret (`whsec_…`); unset means unsigned requests are accepted.
    pub secret: Option<Secret>,
    pub secret_file: Option<PathBuf>,
    #[serde(deserialize_with = "duration")]
    pub dedup_window: Duration,
    pub unknown_topics: UnknownTopics,
    pub max_body_bytes: usize,
    /// A webhook request body that sends nothing for this long fails with `408`.
    #[serde(deserialize_with = "duration")]
    pub body_timeout: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 4001).into(),
            path: "/webhook".into(),
            secret: None,
            secret_file: None,
            dedup_window: Duration::from_secs(600),
            unknown_topics: UnknownTopics::Reject,
            max_body_bytes: 1024 * 1024,
            body_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownTopics {
    /// `422 UNKNOWN_TOPIC`.
    Reject,
    /// Accepted and dropped.
    Accept,
}

/// `[auth]`: who may open a subscription socket (and, with
/// `proxy = "require"`, send queries and mutations).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// A cookie that carries the token when no `Authorization` header does.
    pub cookie: Option<String>,
    pub proxy: ProxyAuth,
    /// Headers besides `Authorization` (and `Cookie` with `cookie` set) taken
    /// from `connection_init.payload.headers` and sent to the upstream with
    /// the connection's calls. Forwarding and hop-by-hop headers are refused.
    pub forward_headers: Vec<String>,
    pub jwt: JwtConfig,
    pub upstream: UpstreamAuthConfig,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: AuthMode::None,
            cookie: None,
            proxy: ProxyAuth::Passthrough,
            forward_headers: Vec::new(),
            jwt: JwtConfig::default(),
            upstream: UpstreamAuthConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Everyone is admitted with empty claims.
    None,
    /// A JWT verified with `[auth.jwt]`; its claims become `claims`.
    Jwt,
    /// `auth.upstream.query` answered without errors; its `data` becomes `claims`.
    Upstream,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyAuth {
    /// Queries and mutations go to the upstream with credentials untouched.
    Passthrough,
    /// The same check as for sockets first; `401` when it fails.
    Require,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// HS256 shared secret.
    pub secret: Option<Secret>,
    pub secret_file: Option<PathBuf>,
    /// A JWK Set over HTTP(S) (RS256, ES256, EdDSA keys by `kid`).
    pub jwks_url: Option<UpstreamUrl>,
    /// A JWK Set in a file, read at start-up.
    pub jwks_path: Option<PathBuf>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Accepted `aud` values; a token must name one of them when set.
    #[serde(deserialize_with = "one_or_many")]
    pub audience: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(deserialize_with = "duration")]
    pub leeway: Duration,
    /// Accepted `alg` values; empty: HS256 with a secret, RS256/ES256/EdDSA with JWKS.
    pub algorithms: Vec<JwtAlgorithm>,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            secret: None,
            secret_file: None,
            jwks_url: None,
            jwks_path: None,
            issuer: None,
            audience: Vec::new(),
            leeway: Duration::from_secs(30),
            algorithms: Vec::new(),
        }
    }
}

/// A JWS algorithm subcar verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum JwtAlgorithm {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl JwtAlgorithm {
    pub fn is_hmac(self) -> bool {
        matches!(self, Self::HS256 | Self::HS384 | Self::HS512)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamAuthConfig {
    /// Sent to the upstream with the client's credentials, e.g. `"{ me { id roles } }"`.
    pub query: Option<String>,
    /// How long an admitted credential's claims are reused.
    #[serde(deserialize_with = "duration")]
    pub cache_ttl: Duration,
}

impl Default for UpstreamAuthConfig {
    fn default() -> Self {
        Self {
            query: None,
            cache_ttl: Duration::from_secs(60),
        }
    }
}

/// `[rate_limits]`: events per second with a burst of the same size; each
/// unset limit is off.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitsConfig {
    /// WebSocket upgrade attempts per client IP.
    pub connection_attempts_per_ip: Option<u32>,
    /// Queries and mutations on the proxy path per client IP.
    pub requests_per_ip: Option<u32>,
    /// Client messages per socket.
    pub messages_per_connection: Option<u32>,
    /// Events accepted by the webhook, all senders together.
    pub webhook_events_per_second: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeartbeatConfig {
    #[serde(deserialize_with = "duration")]
    pub interval: Duration,
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub init_timeout: Duration,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(15),
            timeout: Duration::from_secs(10),
            init_timeout: Duration::from_secs(3),
        }
    }
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_connections: usize,
    pub max_subscriptions_per_connection: usize,
    pub max_message_bytes: usize,
    /// Messages queued for one connection before it counts as a slow consumer.
    pub outbound_queue: usize,
    /// What one GraphQL document may cost (`[limits.document]`).
    pub document: DocumentLimits,
    /// Queries and mutations of one socket running at the upstream at once;
    /// one more gets an `error` with `RATE_LIMITED`.
    pub max_inflight_per_connection: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_subscriptions_per_connection: 100,
            max_message_bytes: 64 * 1024,
            outbound_queue: 1024,
            max_inflight_per_connection: 16,
            document: DocumentLimits::default(),
        }
    }
}

impl DocumentLimits {
    fn problems(&self, problems: &mut Vec<String>) {
        let d = self;
        for (key, value, max) in [
            ("limits.document.max_tokens", d.max_tokens, 1_000_000),
            ("limits.document.max_depth", d.max_depth, MAX_DOCUMENT_DEPTH),
            ("limits.document.max_aliases", d.max_aliases, 100_000),
            ("limits.document.max_fragments", d.max_fragments, 1_000),
            (
                "limits.document.max_introspection_bytes",
                d.max_introspection_bytes,
                1 << 30,
            ),
            (
                "limits.document.max_merge_comparisons",
                d.max_merge_comparisons,
                100_000_000,
            ),
        ] {
            if value == 0 || value > max {
                problems.push(format!(
                    "{key}: {value} is out of range: expected 1 to {max}"
                ));
            }
        }
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    pub kind: BusKind,
    /// `redis://[user:pass@]host:port[/db]` (or `rediss://`) for Redis,
    /// `nats://host:port[,nats://…]` for NATS; required by both.
    pub url: Option<String>,
    /// Namespace on the shared backend: Redis keys `{prefix}:…`, the
    /// JetStream stream `prefix` with subjects `prefix.…`. Replicas that
    /// share events use the same prefix.
    pub prefix: String,
    /// Events kept per topic for resume (and, on Redis and NATS, for a
    /// replica that reconnects after an outage).
    pub history: usize,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            kind: BusKind::Memory,
            url: None,
            prefix: "subcar".into(),
            history: 1000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BusKind {
    Memory,
    Redis,
    Nats,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// `RUST_LOG`-style directives; the `RUST_LOG` variable wins when set.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            filter: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// `bus.url` may hold a password: printed without it.
impl fmt::Debug for BusConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = self.url.as_deref().map(redact_url);
        f.debug_struct("BusConfig")
            .field("kind", &self.kind)
            .field("url", &url)
            .field("prefix", &self.prefix)
            .field("history", &self.history)
            .finish()
    }
}

impl BusConfig {
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let schemes: &[&str] = match self.kind {
            BusKind::Memory => &[],
            BusKind::Redis => &["redis://", "rediss://"],
            BusKind::Nats => &["nats://", "tls://"],
        };
        match (&self.url, self.kind) {
            (Some(_), BusKind::Memory) => problems.push(
                "bus.url: the memory bus has no url: expected bus.kind = \"redis\" or \"nats\" with it, or no url".into(),
            ),
            (None, BusKind::Redis | BusKind::Nats) => problems.push(format!(
                "bus.url: required with this bus.kind: expected something like \"{}127.0.0.1:{}\"",
                schemes[0],
                if self.kind == BusKind::Redis { 6379 } else { 4222 },
            )),
            (Some(url), _) => {
                for part in url.split(',') {
                    if !schemes.iter().any(|s| part.trim().starts_with(s)) {
                        problems.push(format!(
                            "bus.url: {:?} is not a server of this bus.kind: expected a URL starting with {}",
                            redact_url(part),
                            schemes.join(" or ")
                        ));
                    }
                }
            }
            (None, BusKind::Memory) => {}
        }
        if self.prefix.is_empty()
            || !self
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            problems.push(format!(
                "bus.prefix: {:?} is not allowed: expected letters, digits, '_' or '-' (it names a JetStream stream)",
                self.prefix
            ));
        }
        if self.history == 0 && self.kind != BusKind::Memory {
            problems.push(
                "bus.history: 0 is not allowed with a shared bus: expected a positive number (a replica catching up after an outage reads from it)".into(),
            );
        }
        problems
    }
}

/// A secret value; never printed.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(****)")
    }
}

/// An IP network in CIDR form (`10.0.0.0/8`), or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: std::net::IpAddr,
    prefix: u8,
}

impl IpNet {
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr::{V4, V6};
        let ip = match ip {
            V6(v6) => v6.to_ipv4_mapped().map(V4).unwrap_or(V6(v6)),
            v4 => v4,
        };
        match (self.addr, ip) {
            (V4(net), V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (V6(net), V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for IpNet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let expected =
            || format!("invalid network {s:?}: expected an IP address or CIDR like \"10.0.0.0/8\"");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: std::net::IpAddr = addr.parse().map_err(|_| expected())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(expected)?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let raw = String::deserialize(d)?;
    raw.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "invalid listen address {raw:?}: expected IP:PORT like \"0.0.0.0:4000\" or \"[::]:4000\""
        ))
    })
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    match OneOrMany::deserialize(d)
        .map_err(|_| serde::de::Error::custom("expected a string or an array of strings"))?
    {
        OneOrMany::One(s) => Ok(vec![s]),
        OneOrMany::Many(v) => Ok(v),
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let raw = String::deserialize(d)?;
    let value = humantime::parse_duration(&raw).map_err(|_| {
        serde::de::Error::custom(format!(
            "invalid duration {raw:?}: expected a number with a unit, like \"500ms\", \"15s\" or \"10m\""
        ))
    })?;
    // A backstop for every duration key, listed in `validate` or not: no
    // `Instant + d` or deadline computed from it can overflow.
    if value > MAX_DURATION {
        return Err(serde::de::Error::custom(format!(
            "duration {raw:?} is out of range: expected at most 365days"
        )));
    }
    Ok(value)
}

/// One millisecond: the shortest duration a positive duration key accepts.
pub const MS: Duration = Duration::from_millis(1);
/// One day: the longest duration most duration keys accept.
pub const DAY: Duration = Duration::from_secs(24 * 60 * 60);
/// The longest duration any key parses to (365 days).
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// Largest `limits.max_message_bytes` (64 MiB): a WebSocket frame is held whole.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Largest `server.max_request_bytes` and `webhook.max_body_bytes` (1 GiB).
pub const MAX_BODY_BYTES: usize = 1024 * 1024 * 1024;

fn check_duration(
    problems: &mut Vec<String>,
    key: &str,
    value: Duration,
    range: std::ops::RangeInclusive<Duration>,
) {
    if !range.contains(&value) {
        let show = |d: Duration| humantime::format_duration(d).to_string();
        let min = if range.start().is_zero() {
            "0s".to_owned()
        } else {
            show(*range.start())
        };
        problems.push(format!(
            "{key}: {:?} is out of range: expected a duration from {min} to {}",
            if value.is_zero() {
                "0s".to_owned()
            } else {
                show(value)
            },
            show(*range.end()),
        ));
    }
}

fn check_size(
    problems: &mut Vec<String>,
    key: &str,
    value: usize,
    range: std::ops::RangeInclusive<usize>,
) {
    if !range.contains(&value) {
        problems.push(format!(
            "{key}: {value} is out of range: expected a number from {} to {}",
            range.start(),
            range.end()
        ));
    }
}

const HOUR: Duration = Duration::from_secs(3600);

/// Headers `auth.forward_headers` may not name: subcar sets them itself
/// (forwarding, `Origin`) or they describe one hop, not the request.
const NOT_FORWARDABLE: [&str; 17] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-real-ip",
    "host",
    "origin",
    "content-length",
    "content-type",
    "connection",
    "keep-alive",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

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
        let overridden = apply_env_overrides(&mut table, env)?;
        let config: Config = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| {
                let key = e.path().to_string();
                let inner = e.into_inner().message().to_string();
                if key == "." {
                    return ConfigError::Invalid(vec![inner]);
                }
                ConfigError::Invalid(vec![format!("{key}: {inner}")])
            })
            .map_err(|e| name_variables(e, &overridden))?;
        config
            .validate()
            .map_err(|e| name_variables(e, &overridden))?;
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

    fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if self.version != 1 {
            problems.push(format!(
                "version: {} is not supported: expected 1",
                self.version
            ));
        }
        for (key, path) in [
            ("server.graphql_path", &self.server.graphql_path),
            ("webhook.path", &self.webhook.path),
        ] {
            if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
                problems.push(format!(
                    "{key}: {path:?} is not a path: expected something like \"/graphql\""
                ));
            }
        }
        let assets = &self.server.graphiql.assets_url;
        let is_url = assets
            .parse::<http::Uri>()
            .is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
        if !is_url || assets.contains(['"', '\'', '<', '>', '`']) {
            problems.push(format!(
                "server.graphiql.assets_url: {assets:?} is not a URL: expected an http(s) base URL such as \"https://unpkg.com\""
            ));
        }
        if self.webhook.secret.is_some() && self.webhook.secret_file.is_some() {
            problems.push("webhook.secret_file: cannot be set together with webhook.secret: expected one of them".into());
        }
        for (key, value, range) in [
            (
                "limits.max_connections",
                self.limits.max_connections,
                1..=10_000_000,
            ),
            (
                "limits.max_subscriptions_per_connection",
                self.limits.max_subscriptions_per_connection,
                1..=100_000,
            ),
            (
                "limits.max_message_bytes",
                self.limits.max_message_bytes,
                1..=MAX_MESSAGE_BYTES,
            ),
            (
                "limits.outbound_queue",
                self.limits.outbound_queue,
                1..=1_000_000,
            ),
            (
                "server.max_request_bytes",
                self.server.max_request_bytes,
                1..=MAX_BODY_BYTES,
            ),
            (
                "webhook.max_body_bytes",
                self.webhook.max_body_bytes,
                1..=MAX_BODY_BYTES,
            ),
            ("bus.history", self.bus.history, 0..=10_000_000),
            (
                "limits.max_inflight_per_connection",
                self.limits.max_inflight_per_connection,
                1..=10_000,
            ),
        ] {
            check_size(&mut problems, key, value, range);
        }
        for (key, value, range) in [
            (
                "server.drain_timeout",
                self.server.drain_timeout,
                Duration::ZERO..=DAY,
            ),
            ("upstream.timeout", self.upstream.timeout, MS..=DAY),
            // Days are normal here: a durable bus keeps ids for a long replay window.
            (
                "webhook.dedup_window",
                self.webhook.dedup_window,
                Duration::ZERO..=30 * DAY,
            ),
            (
                "auth.jwt.leeway",
                self.auth.jwt.leeway,
                Duration::ZERO..=DAY,
            ),
            (
                "auth.upstream.cache_ttl",
                self.auth.upstream.cache_ttl,
                MS..=DAY,
            ),
            ("heartbeat.interval", self.heartbeat.interval, MS..=DAY),
            ("heartbeat.timeout", self.heartbeat.timeout, MS..=DAY),
            (
                "heartbeat.init_timeout",
                self.heartbeat.init_timeout,
                MS..=DAY,
            ),
        ] {
            check_duration(&mut problems, key, value, range);
        }
        self.limits.document.problems(&mut problems);
        for (key, value, max) in [
            ("server.header_timeout", self.server.header_timeout, HOUR),
            ("server.idle_timeout", self.server.idle_timeout, DAY),
            ("server.body_timeout", self.server.body_timeout, HOUR),
            ("webhook.body_timeout", self.webhook.body_timeout, HOUR),
        ] {
            if value.is_zero() || value > max {
                problems.push(format!(
                    "{key}: {} is out of range: expected a duration above 0s and at most {}",
                    humantime::format_duration(value),
                    humantime::format_duration(max)
                ));
            }
        }
        self.validate_auth(&mut problems);
        for (key, value) in [
            (
                "rate_limits.connection_attempts_per_ip",
                self.rate_limits.connection_attempts_per_ip,
            ),
            (
                "rate_limits.requests_per_ip",
                self.rate_limits.requests_per_ip,
            ),
            (
                "rate_limits.messages_per_connection",
                self.rate_limits.messages_per_connection,
            ),
            (
                "rate_limits.webhook_events_per_second",
                self.rate_limits.webhook_events_per_second,
            ),
        ] {
            if value == Some(0) {
                problems.push(format!(
                    "{key}: 0 is not allowed: expected a positive number of events per second, or leave it unset to turn the limit off"
                ));
            }
        }
        let mut fields = BTreeMap::new();
        for (i, sub) in self.subscriptions.iter().enumerate() {
            if let Some(first) = fields.insert(sub.field.as_str(), i) {
                problems.push(format!(
                    "subscriptions[{i}].field: {:?} is already configured by subscriptions[{first}]: expected each field once",
                    sub.field
                ));
            }
            if let Some(r) = &sub.resolve {
                if r.query_field.is_empty() {
                    problems.push(format!(
                        "subscriptions[{i}].resolve.query_field: empty: expected a field of the upstream's Query type"
                    ));
                }
                if !self.schema.introspect_upstream && self.schema.upstream_sdl.is_none() {
                    problems.push(format!(
                        "subscriptions[{i}].resolve: needs the upstream's Query type: expected schema.introspect_upstream = true or schema.upstream_sdl"
                    ));
                }
                check_size(
                    &mut problems,
                    &format!("subscriptions[{i}].resolve.max_concurrency"),
                    r.max_concurrency,
                    1..=10_000,
                );
            }
        }
        problems.extend(self.bus.problems());
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.filter) {
            problems.push(format!(
                "log.filter: {:?} is invalid ({e}): expected directives like \"info,subcar=debug\"",
                self.log.filter
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    fn validate_auth(&self, problems: &mut Vec<String>) {
        let auth = &self.auth;
        if auth.cookie.as_deref() == Some("") {
            problems.push(
                "auth.cookie: \"\" is not a cookie name: expected a name like \"session\"".into(),
            );
        }
        for (i, name) in auth.forward_headers.iter().enumerate() {
            let lower = name.to_ascii_lowercase();
            if http::HeaderName::from_bytes(lower.as_bytes()).is_err() {
                problems.push(format!(
                    "auth.forward_headers[{i}]: {name:?} is not a header name: expected something like \"x-tenant\""
                ));
            } else if NOT_FORWARDABLE.contains(&lower.as_str()) || lower.starts_with("sec-") {
                problems.push(format!(
                    "auth.forward_headers[{i}]: {name:?} cannot be taken from a client: expected an application header (forwarding, hop-by-hop, Host, Origin and Sec- headers are subcar's to set)"
                ));
            }
        }
        let jwt = &auth.jwt;
        let sources = [
            ("auth.jwt.secret", jwt.secret.is_some()),
            ("auth.jwt.secret_file", jwt.secret_file.is_some()),
            ("auth.jwt.jwks_url", jwt.jwks_url.is_some()),
            ("auth.jwt.jwks_path", jwt.jwks_path.is_some()),
        ];
        let set: Vec<&str> = sources
            .iter()
            .filter(|(_, s)| *s)
            .map(|(k, _)| *k)
            .collect();
        match auth.mode {
            AuthMode::Jwt if set.is_empty() => problems.push(
                "auth.jwt: auth.mode = \"jwt\" needs keys: expected one of auth.jwt.secret, secret_file, jwks_url or jwks_path".into(),
            ),
            AuthMode::Jwt if set.len() > 1 => problems.push(format!(
                "{}: cannot be set together with {}: expected one source of keys",
                set[1], set[0]
            )),
            AuthMode::Jwt => {
                let hmac = jwt.secret.is_some() || jwt.secret_file.is_some();
                for (i, alg) in jwt.algorithms.iter().enumerate() {
                    if alg.is_hmac() != hmac {
                        let expected = if hmac {
                            "HS256, HS384 or HS512 with a shared secret"
                        } else {
                            "RS*, PS*, ES256, ES384 or EdDSA with JWKS keys"
                        };
                        problems.push(format!(
                            "auth.jwt.algorithms[{i}]: {alg:?} does not fit {}: expected {expected}",
                            set[0]
                        ));
                    }
                }
                if matches!(&jwt.secret, Some(s) if s.0.is_empty()) {
                    problems.push("auth.jwt.secret: an empty secret is not allowed: expected a long random string".into());
                }
            }
            AuthMode::Upstream => {
                if !set.is_empty() {
                    problems.push(format!(
                        "{}: only used with auth.mode = \"jwt\": expected auth.mode = \"jwt\" or no [auth.jwt] keys",
                        set.first().copied().unwrap_or("auth.jwt")
                    ));
                }
                match auth.upstream.query.as_deref().map(str::trim) {
                    None | Some("") => problems.push(
                        "auth.upstream.query: required with auth.mode = \"upstream\": expected a GraphQL query like \"{ me { id roles } }\"".into(),
                    ),
                    Some(_) => {}
                }
            }
            AuthMode::None => {
                if auth.proxy == ProxyAuth::Require {
                    problems.push("auth.proxy: \"require\" needs an authentication: expected auth.mode = \"jwt\" or \"upstream\", or auth.proxy = \"passthrough\"".into());
                }
            }
        }
    }

    fn resolve_paths(&mut self, base: &Path) -> Result<(), ConfigError> {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut self.schema.path);
        if let Some(p) = &mut self.schema.upstream_sdl {
            resolve(p);
        }
        if let Some(tls) = &mut self.server.tls {
            resolve(&mut tls.cert);
            resolve(&mut tls.key);
        }
        if let Some(p) = &mut self.webhook.secret_file {
            resolve(p);
            let secret = std::fs::read_to_string(&*p).map_err(|e| {
                ConfigError::Invalid(vec![format!(
                    "webhook.secret_file: cannot read {}: {e}",
                    p.display()
                )])
            })?;
            self.webhook.secret = Some(Secret(secret.trim().to_owned()));
        }
        if let Some(p) = &mut self.auth.jwt.jwks_path {
            resolve(p);
        }
        if let Some(p) = &mut self.auth.jwt.secret_file {
            resolve(p);
            let secret = std::fs::read_to_string(&*p).map_err(|e| {
                ConfigError::Invalid(vec![format!(
                    "auth.jwt.secret_file: cannot read {}: {e}",
                    p.display()
                )])
            })?;
            self.auth.jwt.secret = Some(Secret(secret.trim().to_owned()));
        }
        Ok(())
    }
}

/// Applies `SUBCAR_<SECTION>__<KEY>=value` overrides to the parsed table.
/// Values are read as TOML when they parse as a TOML value (numbers, booleans,
/// arrays), otherwise as plain strings.
/// Returns each overridden key (`section.key`) with its variable's name.
fn apply_env_overrides(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut problems = Vec::new();
    let mut overridden = Vec::new();
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if !rest.contains("__") {
            // SUBCAR_CONFIG and other process-level variables, not keys.
            continue;
        }
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        let value = parse_env_value(&raw);
        if let Err(key) = insert_at(table, &path, value) {
            problems.push(format!(
                "{name}: {key} is not a section: expected SUBCAR_<SECTION>__<KEY>"
            ));
        } else {
            overridden.push((path.join("."), name));
        }
    }
    if problems.is_empty() {
        Ok(overridden)
    } else {
        Err(ConfigError::Invalid(problems))
    }
}

/// Problems with a key set by an environment variable name the variable
/// first: that is where the value has to be fixed, not in the file.
fn name_variables(e: ConfigError, overridden: &[(String, String)]) -> ConfigError {
    let ConfigError::Invalid(problems) = e else {
        return e;
    };
    let named = problems
        .into_iter()
        .map(|p| {
            let var = overridden.iter().find(|(key, _)| {
                p.strip_prefix(key.as_str())
                    .is_some_and(|rest| rest.starts_with([':', '.', '[']))
            });
            match var {
                Some((_, var)) => format!("{var}: {p}"),
                None => p,
            }
        })
        .collect();
    ConfigError::Invalid(named)
}

fn insert_at(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    match path {
        [] => Ok(()),
        [last] => {
            table.insert(last.clone(), value);
            Ok(())
        }
        [section, rest @ ..] => match table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        {
            toml::Value::Table(t) => insert_at(t, rest, value),
            _ => Err(section.clone()),
        },
    }
}

fn parse_env_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [upstream]
        url = "http://127.0.0.1:8080/graphql"
        [schema]
        path = "schema.graphql"
    "#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, std::iter::empty())
    }

    fn problems(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.server.listen.to_string(), "0.0.0.0:4000");
        assert_eq!(c.server.graphql_path, "/graphql");
        assert_eq!(c.webhook.listen.to_string(), "127.0.0.1:4001");
        assert_eq!(c.admin.listen.to_string(), "127.0.0.1:9464");
        assert_eq!(c.heartbeat.interval, Duration::from_secs(15));
        assert_eq!(c.heartbeat.init_timeout, Duration::from_secs(3));
        assert_eq!(c.webhook.dedup_window, Duration::from_secs(600));
        assert_eq!(c.bus.kind, BusKind::Memory);
    }

    #[test]
    fn document_limits_have_defaults_and_are_range_checked() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.limits.document, DocumentLimits::default());
        assert_eq!(c.limits.document.max_depth, 32);
        assert!(c.schema.introspection);
        let text = format!(
            "{MINIMAL}introspection = false\n[limits.document]\nmax_depth = 41\nmax_tokens = 0\n"
        );
        let p = problems(&text);
        assert!(
            p.contains("limits.document.max_depth: 41 is out of range: expected 1 to 40"),
            "{p}"
        );
        assert!(
            p.contains("limits.document.max_tokens: 0 is out of range"),
            "{p}"
        );
        let text = format!("{MINIMAL}[limits.document]\nmax_depht = 3\n");
        assert!(problems(&text).contains("max_depht"));
        let ok = format!("{MINIMAL}introspection = false\n[limits.document]\nmax_aliases = 7\n");
        let c = parse(&ok).unwrap();
        assert!(!c.schema.introspection);
        assert_eq!(c.limits.document.max_aliases, 7);
    }

    #[test]
    fn example_file_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
        let c = Config::load(&path, std::iter::empty()).unwrap();
        let defaults = parse(MINIMAL).unwrap();
        // The example documents defaults: it must not silently differ from them.
        assert_eq!(c.server.drain_timeout, defaults.server.drain_timeout);
        assert_eq!(c.limits.outbound_queue, defaults.limits.outbound_queue);
        assert_eq!(c.webhook.max_body_bytes, defaults.webhook.max_body_bytes);
        assert_eq!(c.auth.mode, defaults.auth.mode);
        assert_eq!(c.auth.proxy, defaults.auth.proxy);
        assert_eq!(c.auth.jwt.leeway, defaults.auth.jwt.leeway);
        assert_eq!(c.auth.upstream.cache_ttl, defaults.auth.upstream.cache_ttl);
        assert_eq!(c.heartbeat.timeout, defaults.heartbeat.timeout);
        assert_eq!(
            c.limits.max_subscriptions_per_connection,
            defaults.limits.max_subscriptions_per_connection
        );
        assert!(c.rate_limits.requests_per_ip.is_none());
        assert!(c.schema.path.is_absolute() || c.schema.path.exists());
    }

    #[test]
    fn resolve_has_defaults_and_named_errors() {
        let base = format!(
            "{MINIMAL}\n[[subscriptions]]\nfield = \"a\"\n[subscriptions.resolve]\nquery_field = \"q\"\n"
        );
        let c = parse(&format!("{base}args = {{ id = \"event.id\" }}")).unwrap();
        let r = c.subscriptions[0].resolve.as_ref().unwrap();
        assert_eq!(r.args["id"], "event.id");
        assert_eq!(
            (
                r.on_null,
                r.prefer,
                r.max_concurrency,
                r.share_by.as_deref()
            ),
            (OnNull::Skip, Prefer::Payload, 32, None)
        );
        let msg = problems(&format!("{base}on_null = \"maybe\""));
        assert!(msg.contains("on_null") && msg.contains("skip"), "{msg}");
        let msg = problems(&format!("{base}max_concurrency = 0"));
        assert!(
            msg.contains("subscriptions[0].resolve.max_concurrency"),
            "{msg}"
        );
        let offline = base.replace(
            "path = \"schema.graphql\"",
            "path = \"schema.graphql\"\nintrospect_upstream = false",
        );
        let msg = problems(&offline);
        assert!(
            msg.contains("subscriptions[0].resolve: needs the upstream"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_key_names_section_and_key() {
        let msg = problems(&format!("{MINIMAL}\n[server]\nlisten_addr = \"x\""));
        assert!(msg.contains("server"), "{msg}");
        assert!(msg.contains("listen_addr"), "{msg}");
    }

    #[test]
    fn bad_duration_names_key_value_and_expectation() {
        let msg = problems(&format!(
            "{MINIMAL}\n[heartbeat]\ninterval = \"15 parsecs\""
        ));
        assert!(msg.contains("heartbeat.interval"), "{msg}");
        assert!(msg.contains("15 parsecs"), "{msg}");
        assert!(msg.contains("\"15s\""), "{msg}");
    }

    #[test]
    fn bad_url_is_rejected() {
        let msg = problems("[upstream]\nurl = \"localhost\"\n[schema]\npath = \"s\"");
        assert!(msg.contains("upstream.url"), "{msg}");
        assert!(msg.contains("localhost"), "{msg}");
    }

    #[test]
    fn missing_required_key_is_named() {
        let msg = problems("[schema]\npath = \"s\"");
        assert!(msg.contains("upstream"), "{msg}");
    }

    #[test]
    fn semantic_problems_are_all_reported_at_once() {
        let msg = problems(&format!(
            "{MINIMAL}\n[limits]\noutbound_queue = 0\n[server]\ngraphql_path = \"graphql\""
        ));
        assert!(msg.contains("limits.outbound_queue"), "{msg}");
        assert!(msg.contains("server.graphql_path"), "{msg}");
    }

    #[test]
    fn env_overrides_keys_with_typed_values() {
        let env = [
            (
                "SUBCAR_SERVER__LISTEN".to_string(),
                "127.0.0.1:5000".to_string(),
            ),
            (
                "SUBCAR_LIMITS__MAX_CONNECTIONS".to_string(),
                "7".to_string(),
            ),
            ("SUBCAR_UPSTREAM__TIMEOUT".to_string(), "2s".to_string()),
            ("SUBCAR_CONFIG".to_string(), "ignored.toml".to_string()),
            ("OTHER__THING".to_string(), "x".to_string()),
        ];
        let c = Config::parse(MINIMAL, env).unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:5000");
        assert_eq!(c.limits.max_connections, 7);
        assert_eq!(c.upstream.timeout, Duration::from_secs(2));
    }

    #[test]
    fn env_override_with_bad_value_names_key() {
        let env = [(
            "SUBCAR_LIMITS__MAX_CONNECTIONS".to_string(),
            "lots".to_string(),
        )];
        let msg = Config::parse(MINIMAL, env).unwrap_err().to_string();
        assert!(msg.contains("limits.max_connections"), "{msg}");
        assert!(msg.contains("lots"), "{msg}");
        assert!(
            msg.starts_with("SUBCAR_LIMITS__MAX_CONNECTIONS: limits.max_connections:"),
            "the variable is named first: {msg}"
        );
    }

    #[test]
    fn env_override_out_of_range_names_the_variable_and_file_problems_do_not() {
        let env = [(
            "SUBCAR_LIMITS__MAX_CONNECTIONS".to_string(),
            "0".to_string(),
        )];
        let text = format!("{MINIMAL}\n[heartbeat]\ninterval = \"0s\"");
        let msg = Config::parse(&text, env).unwrap_err().to_string();
        let lines: Vec<&str> = msg.lines().collect();
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("SUBCAR_LIMITS__MAX_CONNECTIONS: limits.max_connections: 0")),
            "{msg}"
        );
        assert!(
            lines.iter().any(|l| l.starts_with("heartbeat.interval:")),
            "a key from the file is named as before: {msg}"
        );
    }

    #[test]
    fn listener_timeouts_default_and_are_range_checked() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.server.header_timeout, Duration::from_secs(10));
        assert_eq!(c.server.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.server.body_timeout, Duration::from_secs(10));
        assert_eq!(c.webhook.body_timeout, Duration::from_secs(10));
        let msg = problems(&format!(
            "{MINIMAL}\n[server]\nheader_timeout = \"0s\"\nidle_timeout = \"3d\"\nbody_timeout = \"2h\"\n[webhook]\nbody_timeout = \"0s\""
        ));
        for key in [
            "server.header_timeout",
            "server.idle_timeout",
            "server.body_timeout",
            "webhook.body_timeout",
        ] {
            assert!(msg.contains(key), "{key}: {msg}");
        }
    }

    #[test]
    fn forward_headers_refuse_forwarding_and_hop_names() {
        let ok = parse(&format!(
            "{MINIMAL}\n[auth]\nforward_headers = [\"X-Tenant\"]"
        ))
        .unwrap();
        assert_eq!(ok.auth.forward_headers, vec!["X-Tenant".to_string()]);
        let msg = parse(&format!(
            "{MINIMAL}\n[auth]\nforward_headers = [\"X-Forwarded-For\", \"bad name\", \"Sec-WebSocket-Key\"]"
        ))
        .unwrap_err()
        .to_string();
        for key in [
            "forward_headers[0]",
            "forward_headers[1]",
            "forward_headers[2]",
        ] {
            assert!(msg.contains(key), "{key}: {msg}");
        }
    }

    #[test]
    fn any_origin_is_warned_about() {
        assert!(parse(MINIMAL).unwrap().warnings().is_empty());
        let w = parse(&format!(
            "{MINIMAL}\n[server]\ncors_origins = [\"*\"]\n[auth]\ncookie = \"session\""
        ))
        .unwrap()
        .warnings();
        assert_eq!(w.len(), 1);
        assert!(
            w[0].contains("server.cors_origins") && w[0].contains("auth.cookie"),
            "{w:?}"
        );
    }

    #[test]
    fn secrets_are_not_printed() {
        let c = parse(&format!(
            "{MINIMAL}\n[webhook]\nsecret = \"whsec_c2VjcmV0\""
        ))
        .unwrap();
        assert!(!format!("{c:?}").contains("c2VjcmV0"));
    }

    #[test]
    fn auth_and_rate_limits_parse() {
        let c = parse(&format!(
            r#"{MINIMAL}
[auth]
mode = "jwt"
cookie = "session"
proxy = "require"
[auth.jwt]
jwks_url = "https://idp.example.com/jwks.json"
issuer = "idp"
audience = "subcar"
leeway = "5s"
algorithms = ["RS256", "EdDSA"]
[rate_limits]
connection_attempts_per_ip = 5
messages_per_connection = 20
"#
        ))
        .unwrap();
        assert_eq!(c.auth.mode, AuthMode::Jwt);
        assert_eq!(c.auth.jwt.audience, vec!["subcar".to_string()]);
        assert_eq!(c.auth.jwt.leeway, Duration::from_secs(5));
        assert_eq!(
            c.auth.jwt.algorithms,
            [JwtAlgorithm::RS256, JwtAlgorithm::EdDSA]
        );
        assert_eq!(c.rate_limits.connection_attempts_per_ip, Some(5));
        assert_eq!(c.rate_limits.requests_per_ip, None);
    }

    #[test]
    fn auth_problems_name_their_keys() {
        let msg = problems(&format!("{MINIMAL}\n[auth]\nmode = \"jwt\""));
        assert!(msg.contains("auth.jwt"), "{msg}");
        let msg = problems(&format!("{MINIMAL}\n[auth]\nmode = \"ldap\""));
        assert!(msg.contains("auth.mode") && msg.contains("ldap"), "{msg}");
        let msg = problems(&format!(
            "{MINIMAL}\n[auth]\nmode = \"jwt\"\n[auth.jwt]\nsecret = \"s\"\njwks_path = \"k.json\"\nalgorithms = [\"RS256\"]"
        ));
        assert!(
            msg.contains("auth.jwt.jwks_path: cannot be set together with auth.jwt.secret"),
            "{msg}"
        );
        let msg = problems(&format!(
            "{MINIMAL}\n[auth]\nmode = \"jwt\"\n[auth.jwt]\nsecret = \"s\"\nalgorithms = [\"RS256\"]"
        ));
        assert!(msg.contains("auth.jwt.algorithms[0]"), "{msg}");
        let msg = problems(&format!(
            "{MINIMAL}\n[auth]\nmode = \"jwt\"\n[auth.jwt]\nsecret = \"s\"\nalgorithms = [\"none\"]"
        ));
        assert!(msg.contains("auth.jwt.algorithms"), "{msg}");
        let msg = problems(&format!("{MINIMAL}\n[auth]\nmode = \"upstream\""));
        assert!(msg.contains("auth.upstream.query"), "{msg}");
        let msg = problems(&format!("{MINIMAL}\n[auth]\nproxy = \"require\""));
        assert!(msg.contains("auth.proxy"), "{msg}");
        let msg = problems(&format!("{MINIMAL}\n[auth.jwt]\nleeway = \"soon\""));
        assert!(
            msg.contains("auth.jwt.leeway") && msg.contains("soon"),
            "{msg}"
        );
        let msg = problems(&format!(
            "{MINIMAL}\n[rate_limits]\nrequests_per_ip = 0\nwebhook_events_per_second = 0"
        ));
        assert!(msg.contains("rate_limits.requests_per_ip"), "{msg}");
        assert!(
            msg.contains("rate_limits.webhook_events_per_second"),
            "{msg}"
        );
        let msg = problems(&format!(
            "{MINIMAL}\n[rate_limits]\nrequests_per_second = 5"
        ));
        assert!(msg.contains("requests_per_second"), "{msg}");
        let msg = problems(&format!("{MINIMAL}\n[auth.jwt]\njwks_url = \"idp\""));
        assert!(msg.contains("auth.jwt.jwks_url"), "{msg}");
    }

    #[test]
    fn cidr_matching() {
        let net: IpNet = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains("10.1.2.3".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        let one: IpNet = "::1".parse().unwrap();
        assert!(one.contains("::1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
    }

    #[test]
    fn bus_keys_are_checked_with_their_names() {
        let c = parse(&format!(
            "{MINIMAL}\n[bus]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\nprefix = \"app-1\"\nhistory = 50"
        ))
        .unwrap();
        assert_eq!(c.bus.kind, BusKind::Redis);
        assert_eq!(c.bus.prefix, "app-1");
        assert_eq!(c.bus.history, 50);
        let msg = problems(&format!("{MINIMAL}\n[bus]\nkind = \"nats\""));
        assert!(msg.contains("bus.url: required"), "{msg}");
        assert!(msg.contains("nats://127.0.0.1:4222"), "{msg}");
        let msg = problems(&format!(
            "{MINIMAL}\n[bus]\nkind = \"nats\"\nurl = \"redis://x\"\nprefix = \"a.b\"\nhistory = 0"
        ));
        for part in [
            "bus.url: \"redis://x\"",
            "bus.prefix: \"a.b\"",
            "bus.history: 0",
        ] {
            assert!(msg.contains(part), "{part} in {msg}");
        }
        let msg = problems(&format!("{MINIMAL}\n[bus]\nkind = \"kafka\""));
        assert!(msg.contains("bus.kind"), "{msg}");
        let c = parse(&format!(
            "{MINIMAL}\n[bus]\nkind = \"redis\"\nurl = \"redis://user:hunter2@db:6379/0\""
        ))
        .unwrap();
        let printed = format!("{c:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("redis://user:****@db:6379/0"), "{printed}");
    }

    #[test]
    fn urls_are_redacted() {
        for (raw, shown) in [
            (
                "http://user:hunter2@up:8080/graphql",
                "http://user:****@up:8080/graphql",
            ),
            ("https://tok3n@up/graphql", "https://****@up/graphql"),
            ("redis://:hunter2@db:6379/0", "redis://:****@db:6379/0"),
            (
                "nats://a:hunter2@n1:4222, nats://n2:4222,tls://t0k@n3",
                "nats://a:****@n1:4222, nats://n2:4222,tls://****@n3",
            ),
            ("http://up/graphql", "http://up/graphql"),
            (
                "https://idp/jwks?api_key=hunter2&kid=1&X-Amz-Signature=s#f",
                "https://idp/jwks?api_key=****&kid=1&X-Amz-Signature=****#f",
            ),
            // An unescaped '/' in a password still hides it.
            ("http://u:hun/ter2@up/x", "http://u:****@up/x"),
            ("up:8080", "up:8080"),
            ("", ""),
        ] {
            assert_eq!(redact_url(raw), shown, "{raw}");
        }
    }

    #[test]
    fn secrets_in_url_keys_are_never_printed() {
        let text = MINIMAL.replace("http://127.0.0.1", "http://admin:hunter2@127.0.0.1")
            + "[auth]\nmode = \"jwt\"\n[auth.jwt]\njwks_url = \"https://k:hunter2@idp/jwks?token=hunter2\"\n\
               [bus]\nkind = \"nats\"\nurl = \"nats://hunter2@n1:4222\"\n";
        let c = parse(&text).unwrap();
        for printed in [
            format!("{c:?}"),
            format!("{c:#?}"),
            c.upstream.url.to_string(),
        ] {
            assert!(!printed.contains("hunter2"), "{printed}");
        }
        assert_eq!(
            c.upstream.url.to_string(),
            "http://admin:****@127.0.0.1:8080/graphql"
        );
        assert_eq!(
            c.upstream.url.expose(),
            "http://admin:hunter2@127.0.0.1:8080/graphql"
        );
        // Refusals of a URL do not repeat its password either.
        let msg = problems("[upstream]\nurl = \"ftp://u:hunter2@x/\"\n[schema]\npath = \"s\"");
        assert!(
            msg.contains("upstream.url") && !msg.contains("hunter2"),
            "{msg}"
        );
        let msg = problems(&format!(
            "{MINIMAL}\n[bus]\nkind = \"redis\"\nurl = \"nats://u:hunter2@x\""
        ));
        assert!(msg.contains("bus.url") && !msg.contains("hunter2"), "{msg}");
    }

    #[test]
    fn durations_are_range_checked_with_the_key() {
        // Each class: positive keys (1ms..1d), keys where 0 means "none"
        // (0s..1d), and the 365-day backstop of the parser itself.
        for (section, key, value, expected) in [
            ("heartbeat", "interval", "2days", "from 1ms to 1day"),
            ("heartbeat", "timeout", "0s", "from 1ms to 1day"),
            ("heartbeat", "init_timeout", "100us", "from 1ms to 1day"),
            ("upstream", "timeout", "2days", "from 1ms to 1day"),
            ("server", "drain_timeout", "25h", "from 0s to 1day"),
            ("webhook", "dedup_window", "31days", "from 0s to 30days"),
            ("auth.jwt", "leeway", "30days", "from 0s to 1day"),
            ("auth.upstream", "cache_ttl", "0s", "from 1ms to 1day"),
        ] {
            let text = if section == "upstream" {
                MINIMAL.replace("[schema]", &format!("{key} = \"{value}\"\n[schema]"))
            } else {
                format!("{MINIMAL}\n[{section}]\n{key} = \"{value}\"")
            };
            let msg = problems(&text);
            assert!(msg.contains(&format!("{section}.{key}:")), "{msg}");
            assert!(msg.contains(expected), "{expected} in {msg}");
        }
        let msg = problems(&format!(
            "{MINIMAL}\n[heartbeat]\ninterval = \"1000000000y\""
        ));
        assert!(msg.contains("at most 365days"), "{msg}");
        for ok in ["1ms", "1day", "24h"] {
            let c = parse(&format!("{MINIMAL}\n[heartbeat]\ninterval = \"{ok}\"")).unwrap();
            assert!(c.heartbeat.interval >= MS && c.heartbeat.interval <= DAY);
        }
        let c = parse(&format!("{MINIMAL}\n[server]\ndrain_timeout = \"0s\"")).unwrap();
        assert!(c.server.drain_timeout.is_zero());
    }

    #[test]
    fn sizes_are_range_checked_with_the_key() {
        for (section, key, value, expected) in [
            ("limits", "max_message_bytes", "0", "from 1 to 67108864"),
            (
                "limits",
                "max_message_bytes",
                "9223372036854775807",
                "from 1 to 67108864",
            ),
            ("limits", "outbound_queue", "1000001", "from 1 to 1000000"),
            ("limits", "max_connections", "0", "from 1 to 10000000"),
            (
                "limits",
                "max_subscriptions_per_connection",
                "100001",
                "from 1 to 100000",
            ),
            (
                "server",
                "max_request_bytes",
                "1073741825",
                "from 1 to 1073741824",
            ),
            ("webhook", "max_body_bytes", "0", "from 1 to 1073741824"),
            ("bus", "history", "10000001", "from 0 to 10000000"),
        ] {
            let msg = problems(&format!("{MINIMAL}\n[{section}]\n{key} = {value}"));
            assert!(
                msg.contains(&format!("{section}.{key}: {value} is out of range")),
                "{msg}"
            );
            assert!(msg.contains(expected), "{expected} in {msg}");
        }
        let msg = problems(&format!(
            "{MINIMAL}\n[[subscriptions]]\nfield = \"a\"\n[subscriptions.resolve]\nquery_field = \"q\"\nmax_concurrency = 10001"
        ));
        assert!(
            msg.contains("subscriptions[0].resolve.max_concurrency: 10001 is out of range"),
            "{msg}"
        );
        let msg = problems(&format!("{MINIMAL}\n[limits]\nmax_connections = -1"));
        assert!(msg.contains("limits.max_connections"), "{msg}");
        let c = parse(&format!(
            "{MINIMAL}\n[limits]\nmax_message_bytes = 67108864"
        ))
        .unwrap();
        assert_eq!(c.limits.max_message_bytes, MAX_MESSAGE_BYTES);
    }

    #[test]
    fn env_overrides_are_range_checked_too() {
        let err = Config::parse(
            MINIMAL,
            [(
                "SUBCAR_HEARTBEAT__INTERVAL".to_owned(),
                "1000000000y".to_owned(),
            )],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("heartbeat.interval"), "{err}");
    }
}
