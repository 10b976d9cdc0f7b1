//! What `[subscriptions.resolve]` asks of the engine: which upstream field
//! completes an event, with which arguments, and how the answer is merged.
//! Deserialized by the config; checked against the schema in
//! [`super::target`].

use std::collections::BTreeMap;

use serde::Deserialize;

/// `[subscriptions.resolve]`: how an event is completed by querying the
/// upstream with each subscriber's selection set and credentials.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveConfig {
    /// A field of the upstream's Query type returning the subscription
    /// field's type.
    pub query_field: String,
    /// CEL over `event`, `claims`, `args`, one per argument of `query_field`.
    #[serde(default)]
    pub args: BTreeMap<String, String>,
    /// CEL over `claims`, `args`: subscribers with equal values share one
    /// fetch. Unset: subscribers share only with identical credentials.
    #[serde(default)]
    pub share_by: Option<String>,
    #[serde(default)]
    pub on_null: OnNull,
    #[serde(default)]
    pub prefer: Prefer,
    /// Fetches of this field in flight towards the upstream at once.
    #[serde(default = "default_resolve_concurrency")]
    pub max_concurrency: usize,
}

fn default_resolve_concurrency() -> usize {
    32
}

/// What a subscriber gets when the upstream answers `null` (or forbidden)
/// for the entity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnNull {
    /// Nothing: the event's existence is not revealed.
    #[default]
    Skip,
    /// A `next` with the field `null`.
    Deliver,
}

/// Which side wins when both the payload and the upstream have a field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Prefer {
    #[default]
    Payload,
    Upstream,
}
