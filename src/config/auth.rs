//! `[auth]`, `[auth.jwt]` and `[auth.upstream]`: who may open a socket (and,
//! with `proxy = "require"`, send queries), and which client headers reach
//! the upstream.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use super::redact::UpstreamUrl;
use super::values::{DAY, MS, Problems, Secret, duration, one_or_many, read_secret, resolve};

/// `[auth]`: who may open a subscription socket (and, with
/// `proxy = "require"`, send queries and mutations).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Everyone is admitted with empty claims.
    None,
    /// A JWT verified with `[auth.jwt]`; its claims become `claims`.
    Jwt,
    /// `auth.upstream.query` answered without errors; its `data` becomes `claims`.
    Upstream,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyAuth {
    /// Queries and mutations go to the upstream with credentials untouched.
    Passthrough,
    /// The same check as for sockets first; `401` when it fails.
    Require,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
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

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
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

impl AuthConfig {
    pub(super) fn check(&self, p: &mut Problems) {
        if self.cookie.as_deref() == Some("") {
            p.push("auth.cookie: \"\" is not a cookie name: expected a name like \"session\"");
        }
        for (i, name) in self.forward_headers.iter().enumerate() {
            let lower = name.to_ascii_lowercase();
            if http::HeaderName::from_bytes(lower.as_bytes()).is_err() {
                p.push(format!(
                    "auth.forward_headers[{i}]: {name:?} is not a header name: expected something like \"x-tenant\""
                ));
            } else if NOT_FORWARDABLE.contains(&lower.as_str()) || lower.starts_with("sec-") {
                p.push(format!(
                    "auth.forward_headers[{i}]: {name:?} cannot be taken from a client: expected an application header (forwarding, hop-by-hop, Host, Origin and Sec- headers are subcar's to set)"
                ));
            }
        }
        p.duration("auth.jwt.leeway", self.jwt.leeway, Duration::ZERO..=DAY);
        p.duration("auth.upstream.cache_ttl", self.upstream.cache_ttl, MS..=DAY);
        self.check_mode(p);
    }

    /// The keys `mode` needs are there, and the ones it ignores are not.
    fn check_mode(&self, p: &mut Problems) {
        let jwt = &self.jwt;
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
        match self.mode {
            AuthMode::Jwt if set.is_empty() => p.push(
                "auth.jwt: auth.mode = \"jwt\" needs keys: expected one of auth.jwt.secret, secret_file, jwks_url or jwks_path",
            ),
            AuthMode::Jwt if set.len() > 1 => p.push(format!(
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
                        p.push(format!(
                            "auth.jwt.algorithms[{i}]: {alg:?} does not fit {}: expected {expected}",
                            set[0]
                        ));
                    }
                }
                if matches!(&jwt.secret, Some(s) if s.0.is_empty()) {
                    p.push("auth.jwt.secret: an empty secret is not allowed: expected a long random string");
                }
            }
            AuthMode::Upstream => {
                if !set.is_empty() {
                    p.push(format!(
                        "{}: only used with auth.mode = \"jwt\": expected auth.mode = \"jwt\" or no [auth.jwt] keys",
                        set.first().copied().unwrap_or("auth.jwt")
                    ));
                }
                match self.upstream.query.as_deref().map(str::trim) {
                    None | Some("") => p.push(
                        "auth.upstream.query: required with auth.mode = \"upstream\": expected a GraphQL query like \"{ me { id roles } }\"",
                    ),
                    Some(_) => {}
                }
            }
            AuthMode::None => {
                if self.proxy == ProxyAuth::Require {
                    p.push("auth.proxy: \"require\" needs an authentication: expected auth.mode = \"jwt\" or \"upstream\", or auth.proxy = \"passthrough\"");
                }
            }
        }
    }

    pub(super) fn resolve_paths(&mut self, base: &Path) -> Result<(), ConfigError> {
        let jwt = &mut self.jwt;
        if let Some(p) = &mut jwt.jwks_path {
            resolve(base, p);
        }
        if let Some(p) = &mut jwt.secret_file {
            resolve(base, p);
            jwt.secret = Some(read_secret("auth.jwt.secret_file", p)?);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::tests::{MINIMAL, parse, problems};
    use crate::config::{AuthMode, JwtAlgorithm};

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
}
