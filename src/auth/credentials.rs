//! Where credentials come from: the `Authorization` header (`Bearer <token>`
//! or a bare token) or the configured cookie. Credentials of
//! `connection_init.payload` are merged into the headers by the session
//! (through [`InitHeaders`], an allow-list) before this runs, so one reader
//! serves sockets and the proxy path alike.

use http::{HeaderMap, HeaderName, HeaderValue, header};
use serde_json::{Map, Value};

use crate::config::AuthConfig;

/// At most this many entries of `connection_init.payload.headers` are looked
/// at; the payload is bounded by `limits.max_message_bytes` anyway.
const MAX_INIT_HEADERS: usize = 64;

/// Which headers `connection_init.payload` may set for the connection's
/// upstream calls: `Authorization`, `Cookie` when `auth.cookie` is set, and
/// `auth.forward_headers`. Anything else a client puts there is ignored, so
/// it can never invent `X-Forwarded-For` or an internal header.
#[derive(Debug, Clone)]
pub struct InitHeaders {
    allowed: Vec<HeaderName>,
}

impl InitHeaders {
    pub fn from_config(auth: &AuthConfig) -> Self {
        let mut allowed = vec![header::AUTHORIZATION];
        if auth.cookie.is_some() {
            allowed.push(header::COOKIE);
        }
        // Names were checked by the config; a bad one is skipped, never trusted.
        allowed.extend(
            auth.forward_headers
                .iter()
                .filter_map(|n| HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes()).ok())
                .filter(|n| !crate::proxy::FORWARDING.contains(n)),
        );
        Self { allowed }
    }

    /// Only `Authorization`: what a session gets when nothing is configured.
    pub fn authorization_only() -> Self {
        Self {
            allowed: vec![header::AUTHORIZATION],
        }
    }

    /// Merges the allowed credentials of `payload` into `headers`:
    /// `Authorization` / `authorization` at the top level, and the allowed
    /// entries of `payload.headers` (names case-insensitive).
    pub fn merge(&self, headers: &mut HeaderMap, payload: &Map<String, Value>) {
        let mut set = |name: &str, value: &Value| {
            let Ok(name) = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) else {
                return;
            };
            if !self.allowed.contains(&name) {
                return;
            }
            if let Some(Ok(v)) = value.as_str().map(HeaderValue::from_str) {
                headers.insert(name, v);
            }
        };
        if let Some(Value::Object(h)) = payload.get("headers") {
            for (k, v) in h.iter().take(MAX_INIT_HEADERS) {
                set(k, v);
            }
        }
        for key in ["Authorization", "authorization"] {
            if let Some(v) = payload.get(key) {
                set("authorization", v);
            }
        }
    }
}

/// The credentials a request carries.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The token from `Authorization` or the cookie.
    pub token: Option<String>,
    /// The headers that carry credentials, as received: what upstream
    /// authentication forwards.
    pub authorization: Option<HeaderValue>,
    pub cookie: Option<HeaderValue>,
}

impl Credentials {
    pub fn from_headers(headers: &HeaderMap, cookie_name: Option<&str>) -> Self {
        let authorization = headers.get(header::AUTHORIZATION).cloned();
        let cookie = headers.get(header::COOKIE).cloned();
        let token = authorization
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .and_then(bearer)
            .or_else(|| cookie_name.and_then(|name| cookie_value(headers, name)));
        Self {
            token,
            authorization,
            cookie,
        }
    }
}

/// `Bearer <token>` (scheme case-insensitive) or a bare token.
fn bearer(value: &str) -> Option<String> {
    let value = value.trim();
    let token = match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        Some(_) => return None,
        None => value,
    };
    (!token.is_empty()).then(|| token.to_owned())
}

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn init_headers_pass_only_the_allow_list() {
        let payload: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "headers": {
                "X-Forwarded-For": "6.6.6.6",
                "x-internal-admin": "true",
                "Cookie": "session=s",
                "X-Tenant": "t1",
                "authorization": "Bearer h",
            },
        }))
        .unwrap();
        let mut config = AuthConfig::default();
        let mut h = HeaderMap::new();
        InitHeaders::from_config(&config).merge(&mut h, &payload);
        assert_eq!(h.len(), 1);
        assert_eq!(h["authorization"], "Bearer h");

        config.cookie = Some("session".into());
        config.forward_headers = vec!["X-Tenant".into(), "x-forwarded-for".into()];
        let mut h = HeaderMap::new();
        InitHeaders::from_config(&config).merge(&mut h, &payload);
        assert_eq!(h["cookie"], "session=s");
        assert_eq!(h["x-tenant"], "t1");
        assert!(!h.contains_key("x-forwarded-for"));
        assert!(!h.contains_key("x-internal-admin"));
    }

    #[test]
    fn bearer_bare_and_cookie_tokens() {
        let t = |h: &[(&str, &str)], c| Credentials::from_headers(&headers(h), c).token;
        assert_eq!(
            t(&[("authorization", "Bearer abc")], None).as_deref(),
            Some("abc")
        );
        assert_eq!(
            t(&[("authorization", "bearer  abc ")], None).as_deref(),
            Some("abc")
        );
        assert_eq!(t(&[("authorization", "abc")], None).as_deref(), Some("abc"));
        assert_eq!(t(&[("authorization", "Basic abc")], None), None);
        let cookies = [("cookie", "a=1; session=tok; b=2")];
        assert_eq!(t(&cookies, Some("session")).as_deref(), Some("tok"));
        assert_eq!(t(&cookies, None), None);
        assert_eq!(t(&cookies, Some("other")), None);
        // The header wins over the cookie.
        let both = [("authorization", "Bearer h"), ("cookie", "session=c")];
        assert_eq!(t(&both, Some("session")).as_deref(), Some("h"));
    }
}
