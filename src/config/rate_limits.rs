//! `[rate_limits]`: token buckets per client IP, per socket and for the webhook.

use serde::Deserialize;

use super::values::Problems;

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

impl RateLimitsConfig {
    pub(super) fn check(&self, p: &mut Problems) {
        let mut positive = |key: &str, value: Option<u32>| {
            if value == Some(0) {
                p.push(format!(
                    "{key}: 0 is not allowed: expected a positive number of events per second, or leave it unset to turn the limit off"
                ));
            }
        };
        positive(
            "rate_limits.connection_attempts_per_ip",
            self.connection_attempts_per_ip,
        );
        positive("rate_limits.requests_per_ip", self.requests_per_ip);
        positive(
            "rate_limits.messages_per_connection",
            self.messages_per_connection,
        );
        positive(
            "rate_limits.webhook_events_per_second",
            self.webhook_events_per_second,
        );
    }
}
