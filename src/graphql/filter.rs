//! `allow` and `filter` rules of one subscription field (CEL), plus the
//! default argument-equality rule of SPEC section 3.
//!
//! CONTRACT placeholder: the engine issue compiles CEL here at start-up.

use serde_json::{Map, Value};

use crate::config::SubscriptionConfig;

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("subscriptions field {field:?}: {key} expression is invalid: {message}")]
    Compile {
        field: String,
        key: &'static str,
        message: String,
    },
}

/// The compiled rules of one subscription field.
#[derive(Debug, Default)]
pub struct FieldRules {}

impl FieldRules {
    pub fn compile(config: &SubscriptionConfig) -> Result<Self, FilterError> {
        let _ = config;
        Ok(Self {})
    }

    /// Whether a client with `claims` may subscribe with `args`.
    pub fn allows(&self, claims: &Value, args: &Map<String, Value>) -> bool {
        let _ = (claims, args);
        true
    }

    /// Whether the filter reads `claims` (then subscribers with different
    /// claims cannot share one evaluation).
    pub fn uses_claims(&self) -> bool {
        false
    }

    /// Whether `event` reaches a subscription with `args` and `claims`.
    pub fn matches(&self, event: &Value, args: &Map<String, Value>, claims: &Value) -> bool {
        let _ = claims;
        args.iter().all(|(name, arg)| match (arg, event.get(name)) {
            (Value::Null, _) => true,
            (Value::Array(list), Some(v)) if !v.is_array() => list.contains(v),
            (arg, Some(v)) => arg == v,
            (_, None) => false,
        })
    }
}
