//! `[upstream]`: the GraphQL server subcar proxies to and asks for enrichment.

use std::time::Duration;

use serde::Deserialize;

use super::redact::UpstreamUrl;
use super::values::{DAY, MS, Problems, duration};

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
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

impl UpstreamConfig {
    pub(super) fn check(&self, p: &mut Problems) {
        p.duration("upstream.timeout", self.timeout, MS..=DAY);
    }
}
