//! `[[subscriptions]]`: one entry per field of the `Subscription` root type,
//! with its topic, filter, admission rule and enrichment.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::ResolveConfig;
use super::schema::SchemaConfig;
use super::values::Problems;

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionConfig {
    /// A field of the `Subscription` root type.
    pub field: String,
    /// The webhook topic feeding it; defaults to the field name.
    #[serde(default)]
    pub topic: Option<String>,
    /// CEL over `event`, `args`, `claims`: which events reach a subscription.
    #[serde(default)]
    pub filter: Option<String>,
    /// CEL over `claims`, `args`: who may subscribe.
    #[serde(default)]
    pub allow: Option<String>,
    /// Complete key-only events from the upstream (enrichment).
    #[serde(default)]
    pub resolve: Option<ResolveConfig>,
}

impl SubscriptionConfig {
    pub fn topic(&self) -> &str {
        self.topic.as_deref().unwrap_or(&self.field)
    }
}

/// Each field once; enrichment only where the upstream's `Query` type is known.
pub(super) fn check(subscriptions: &[SubscriptionConfig], schema: &SchemaConfig, p: &mut Problems) {
    let mut fields = BTreeMap::new();
    for (i, sub) in subscriptions.iter().enumerate() {
        if let Some(first) = fields.insert(sub.field.as_str(), i) {
            p.push(format!(
                "subscriptions[{i}].field: {:?} is already configured by subscriptions[{first}]: expected each field once",
                sub.field
            ));
        }
        if let Some(r) = &sub.resolve {
            if r.query_field.is_empty() {
                p.push(format!(
                    "subscriptions[{i}].resolve.query_field: empty: expected a field of the upstream's Query type"
                ));
            }
            if !schema.knows_upstream() {
                p.push(format!(
                    "subscriptions[{i}].resolve: needs the upstream's Query type: expected schema.introspect_upstream = true or schema.upstream_sdl"
                ));
            }
            p.size(
                &format!("subscriptions[{i}].resolve.max_concurrency"),
                r.max_concurrency,
                1..=10_000,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{MINIMAL, parse, problems};
    use crate::config::{OnNull, Prefer};

    #[test]
    fn resolve_has_defaults_and_named_errors() {
        let base = format!(
            "{MINIMAL}\n[[subscriptions]]\nfield = \"a\"\n[subscriptions.resolve]\nquery_field = \"q\"\n"
        );
        let c = parse(&format!("{base}args = {{ id = \"event.id\" }}")).unwrap();
        let r = c.subscriptions[0].resolve.as_ref().unwrap();
        assert_eq!(r.args["id"], "event.id");
        assert_eq!(
            (
                r.on_null,
                r.prefer,
                r.max_concurrency,
                r.share_by.as_deref()
            ),
            (OnNull::Skip, Prefer::Payload, 32, None)
        );
        let msg = problems(&format!("{base}on_null = \"maybe\""));
        assert!(msg.contains("on_null") && msg.contains("skip"), "{msg}");
        let msg = problems(&format!("{base}max_concurrency = 0"));
        assert!(
            msg.contains("subscriptions[0].resolve.max_concurrency"),
            "{msg}"
        );
        let offline = base.replace(
            "path = \"schema.graphql\"",
            "path = \"schema.graphql\"\nintrospect_upstream = false",
        );
        let msg = problems(&offline);
        assert!(
            msg.contains("subscriptions[0].resolve: needs the upstream"),
            "{msg}"
        );
    }
}
