//! `[limits]` and `[limits.document]`: what one connection, message and
//! GraphQL document may cost.

use serde::Deserialize;

use super::values::{MAX_MESSAGE_BYTES, Problems};
use super::{DocumentLimits, MAX_DOCUMENT_DEPTH};

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

impl LimitsConfig {
    pub(super) fn check(&self, p: &mut Problems) {
        p.size(
            "limits.max_connections",
            self.max_connections,
            1..=10_000_000,
        );
        p.size(
            "limits.max_subscriptions_per_connection",
            self.max_subscriptions_per_connection,
            1..=100_000,
        );
        p.size(
            "limits.max_message_bytes",
            self.max_message_bytes,
            1..=MAX_MESSAGE_BYTES,
        );
        p.size("limits.outbound_queue", self.outbound_queue, 1..=1_000_000);
        p.size(
            "limits.max_inflight_per_connection",
            self.max_inflight_per_connection,
            1..=10_000,
        );
        check_document(&self.document, p);
    }
}

fn check_document(d: &DocumentLimits, p: &mut Problems) {
    let mut up_to = |key: &str, value: usize, max: usize| {
        if value == 0 || value > max {
            p.push(format!(
                "{key}: {value} is out of range: expected 1 to {max}"
            ));
        }
    };
    up_to("limits.document.max_tokens", d.max_tokens, 1_000_000);
    up_to("limits.document.max_depth", d.max_depth, MAX_DOCUMENT_DEPTH);
    up_to("limits.document.max_aliases", d.max_aliases, 100_000);
    up_to("limits.document.max_fragments", d.max_fragments, 1_000);
    up_to(
        "limits.document.max_introspection_bytes",
        d.max_introspection_bytes,
        1 << 30,
    );
    up_to(
        "limits.document.max_merge_comparisons",
        d.max_merge_comparisons,
        100_000_000,
    );
}

#[cfg(test)]
mod tests {
    use crate::config::DocumentLimits;
    use crate::config::tests::{MINIMAL, parse, problems};

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
}
