//! `[webhook]`: the internal listener the upstream posts events to.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use super::values::{
    DAY, HOUR, MAX_BODY_BYTES, Problems, Secret, duration, read_secret, resolve, socket_addr,
};

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownTopics {
    /// `422 UNKNOWN_TOPIC`.
    Reject,
    /// Accepted and dropped.
    Accept,
}

impl WebhookConfig {
    pub(super) fn check(&self, p: &mut Problems) {
        p.path("webhook.path", &self.path);
        if self.secret.is_some() && self.secret_file.is_some() {
            p.push("webhook.secret_file: cannot be set together with webhook.secret: expected one of them");
        }
        p.size(
            "webhook.max_body_bytes",
            self.max_body_bytes,
            1..=MAX_BODY_BYTES,
        );
        // Days are normal here: a durable bus keeps ids for a long replay window.
        p.duration(
            "webhook.dedup_window",
            self.dedup_window,
            Duration::ZERO..=30 * DAY,
        );
        p.timeout("webhook.body_timeout", self.body_timeout, HOUR);
    }

    pub(super) fn resolve_paths(&mut self, base: &Path) -> Result<(), ConfigError> {
        if let Some(p) = &mut self.secret_file {
            resolve(base, p);
            self.secret = Some(read_secret("webhook.secret_file", p)?);
        }
        Ok(())
    }
}
