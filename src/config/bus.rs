//! `[bus]`: which event bus carries events between the webhook and the
//! sockets, and on a shared one (Redis, NATS) under which names.

use std::fmt;

use serde::Deserialize;

use super::redact::redact_url;
use super::values::Problems;

#[derive(Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    pub kind: BusKind,
    /// `redis://[user:pass@]host:port[/db]` (or `rediss://`) for Redis,
    /// `nats://host:port[,nats://…]` for NATS; required by both.
    #[serde(serialize_with = "super::values::fingerprinted")]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BusKind {
    Memory,
    Redis,
    Nats,
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
    pub(super) fn check(&self, p: &mut Problems) {
        p.size("bus.history", self.history, 0..=10_000_000);
        let schemes: &[&str] = match self.kind {
            BusKind::Memory => &[],
            BusKind::Redis => &["redis://", "rediss://"],
            BusKind::Nats => &["nats://", "tls://"],
        };
        match (&self.url, self.kind) {
            (Some(_), BusKind::Memory) => p.push(
                "bus.url: the memory bus has no url: expected bus.kind = \"redis\" or \"nats\" with it, or no url",
            ),
            (None, BusKind::Redis | BusKind::Nats) => p.push(format!(
                "bus.url: required with this bus.kind: expected something like \"{}127.0.0.1:{}\"",
                schemes[0],
                if self.kind == BusKind::Redis { 6379 } else { 4222 },
            )),
            (Some(url), _) => {
                for part in url.split(',') {
                    if !schemes.iter().any(|s| part.trim().starts_with(s)) {
                        p.push(format!(
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
            p.push(format!(
                "bus.prefix: {:?} is not allowed: expected letters, digits, '_' or '-' (it names a JetStream stream)",
                self.prefix
            ));
        }
        if self.history == 0 && self.kind != BusKind::Memory {
            p.push(
                "bus.history: 0 is not allowed with a shared bus: expected a positive number (a replica catching up after an outage reads from it)",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::BusKind;
    use crate::config::tests::{MINIMAL, parse, problems};

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
}
