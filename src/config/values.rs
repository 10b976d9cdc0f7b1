//! The value types keys share: durations, listen addresses, networks,
//! secrets, and [`Problems`], the collector every section's checks report to
//! with the same wording for the same kind of range.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::ConfigError;

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
pub(super) const HOUR: Duration = Duration::from_secs(3600);

/// A secret value; never printed.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(****)")
    }
}

/// Serialized as its [`fingerprint`], so that comparing two configurations
/// (a reload, [`crate::admin::reload`]) sees a changed secret without the
/// secret being anywhere but here.
impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&fingerprint(&self.0))
    }
}

/// A value that must not be shown, as a digest: equal for equal values,
/// telling nothing about them.
pub fn fingerprint(value: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(value.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// `serialize_with` for an optional string that holds secrets (a URL with
/// a password): its [`fingerprint`].
pub(super) fn fingerprinted<S: serde::Serializer>(
    value: &Option<String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => s.serialize_some(&fingerprint(v)),
        None => s.serialize_none(),
    }
}

/// Reads a `*secret_file` key's file: its content, trimmed, is the secret.
pub(super) fn read_secret(key: &str, path: &Path) -> Result<Secret, ConfigError> {
    let secret = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::Invalid(vec![format!("{key}: cannot read {}: {e}", path.display())])
    })?;
    Ok(Secret(secret.trim().to_owned()))
}

/// Makes a relative path in the file relative to the file's directory.
pub(super) fn resolve(base: &Path, path: &mut PathBuf) {
    if path.is_relative() {
        *path = base.join(&*path);
    }
}

/// An IP network in CIDR form (`10.0.0.0/8`), or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet(ipnet::IpNet);

impl IpNet {
    /// Whether `ip` is in the network; an IPv4-mapped IPv6 address
    /// (`::ffff:10.1.2.3`, as a dual-stack socket reports IPv4 peers) counts
    /// as the IPv4 address it maps.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        self.0.contains(&ip)
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
        let addr: IpAddr = addr.parse().map_err(|_| expected())?;
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().map_err(|_| expected())?,
            None => ipnet::IpNet::from(addr).prefix_len(),
        };
        ipnet::IpNet::new(addr, prefix)
            .map(Self)
            .map_err(|_| expected())
    }
}

impl serde::Serialize for IpNet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

pub(super) fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let raw = String::deserialize(d)?;
    raw.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "invalid listen address {raw:?}: expected IP:PORT like \"0.0.0.0:4000\" or \"[::]:4000\""
        ))
    })
}

pub(super) fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
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

pub(super) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let raw = String::deserialize(d)?;
    let value = humantime::parse_duration(&raw).map_err(|_| {
        serde::de::Error::custom(format!(
            "invalid duration {raw:?}: expected a number with a unit, like \"500ms\", \"15s\" or \"10m\""
        ))
    })?;
    // A backstop for every duration key, range-checked by its section or
    // not: no `Instant + d` or deadline computed from it can overflow.
    if value > MAX_DURATION {
        return Err(serde::de::Error::custom(format!(
            "duration {raw:?} is out of range: expected at most 365days"
        )));
    }
    Ok(value)
}

pub(super) fn show(d: Duration) -> String {
    if d.is_zero() {
        "0s".to_owned()
    } else {
        humantime::format_duration(d).to_string()
    }
}

/// Everything wrong with a configuration so far, one line per problem, each
/// starting with its dotted key. Sections add to it; nothing stops at the
/// first problem.
#[derive(Debug, Default)]
pub(super) struct Problems(pub(super) Vec<String>);

impl Problems {
    pub(super) fn push(&mut self, problem: impl Into<String>) {
        self.0.push(problem.into());
    }

    /// A count or a size in bytes within `range`.
    pub(super) fn size(&mut self, key: &str, value: usize, range: RangeInclusive<usize>) {
        if !range.contains(&value) {
            self.push(format!(
                "{key}: {value} is out of range: expected a number from {} to {}",
                range.start(),
                range.end()
            ));
        }
    }

    /// A duration within `range`.
    pub(super) fn duration(&mut self, key: &str, value: Duration, range: RangeInclusive<Duration>) {
        if !range.contains(&value) {
            self.push(format!(
                "{key}: {:?} is out of range: expected a duration from {} to {}",
                show(value),
                show(*range.start()),
                show(*range.end()),
            ));
        }
    }

    /// A listener timeout: above zero and at most `max`.
    pub(super) fn timeout(&mut self, key: &str, value: Duration, max: Duration) {
        if value.is_zero() || value > max {
            self.push(format!(
                "{key}: {} is out of range: expected a duration above 0s and at most {}",
                humantime::format_duration(value),
                humantime::format_duration(max)
            ));
        }
    }

    /// A URL path a listener routes on.
    pub(super) fn path(&mut self, key: &str, path: &str) {
        if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
            self.push(format!(
                "{key}: {path:?} is not a path: expected something like \"/graphql\""
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
