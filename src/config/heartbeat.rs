//! `[heartbeat]`: pings on idle sockets and the `connection_init` deadline.

use std::time::Duration;

use serde::Deserialize;

use super::values::{DAY, MS, Problems, duration};

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
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

impl HeartbeatConfig {
    pub(super) fn check(&self, p: &mut Problems) {
        p.duration("heartbeat.interval", self.interval, MS..=DAY);
        p.duration("heartbeat.timeout", self.timeout, MS..=DAY);
        p.duration("heartbeat.init_timeout", self.init_timeout, MS..=DAY);
    }
}
