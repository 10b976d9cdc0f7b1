//! URLs in the configuration: [`UpstreamUrl`], checked at parse time, and
//! [`Redacted`], how any URL key is shown without its secrets.

use std::fmt;

use serde::{Deserialize, Deserializer};

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

/// As a fingerprint: it may hold a password (see [`super::Secret`]).
impl serde::Serialize for UpstreamUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::values::fingerprint(&self.expose()))
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
