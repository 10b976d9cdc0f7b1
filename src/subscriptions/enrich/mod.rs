//! Enrichment: events that carry only a key, completed from the upstream
//! with each subscriber's own rights (`[subscriptions.resolve]`).
//!
//! Subscribers of an enriched field are grouped as usual and further by
//! their `share_by` value (default: their credentials), so one group is one
//! upstream fetch per event. The planner evaluates the query field's
//! arguments per group and hands the event's groups to [`Enricher::submit`],
//! which takes each group's place in its [`Lane`] at once and then fetches
//! off the planner:
//!
//! - identical requests of one event (same body, same credentials) are sent
//!   once;
//! - with `upstream.batching`, requests with the same credentials are sent
//!   as one JSON-array request (a request carries one set of credentials,
//!   so subscribers of different rights are never batched together);
//! - at most `resolve.max_concurrency` requests per field are in flight,
//!   each within `upstream.timeout`;
//! - a group delivers event n+1 only after event n, though their fetches
//!   overlap; a slow fetch holds back only its own group.

mod enricher;
mod lane;

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use http::{HeaderMap, HeaderValue, header};
use serde_json::{Map, Value};
use tokio::sync::Semaphore;

pub(crate) use enricher::Planned;
pub use enricher::{EnrichStats, Enricher, FetchError, UpstreamFetch};
pub(crate) use lane::Lane;

use crate::config::ResolveConfig;
use crate::graphql::fetch::Policy;
use crate::log::LogLimit;
use crate::subscriptions::filter::{Expression, FilterError, GroupVars, PreparedEvent};

/// The headers that carry a connection's identity to the upstream, and its
/// `Origin` (SPEC "Forwarded headers": calls on a client's behalf carry it,
/// for the upstream's CSRF checks). Nothing else a client sent is taken.
#[derive(Debug, Default, Clone, PartialEq, Eq, Hash)]
pub struct FetchCredentials {
    pub authorization: Option<HeaderValue>,
    pub cookie: Option<HeaderValue>,
    /// Not part of [`Self::key`]: it does not change what may be read.
    pub origin: Option<HeaderValue>,
}

impl FetchCredentials {
    pub fn from_headers(headers: &HeaderMap) -> Self {
        Self {
            authorization: headers.get(header::AUTHORIZATION).cloned(),
            cookie: headers.get(header::COOKIE).cloned(),
            origin: headers.get(header::ORIGIN).cloned(),
        }
    }

    fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in [
            (header::AUTHORIZATION, &self.authorization),
            (header::COOKIE, &self.cookie),
            (header::ORIGIN, &self.origin),
        ] {
            if let Some(v) = value {
                h.insert(name, v.clone());
            }
        }
        h
    }

    /// A text standing for these credentials in a group's identity.
    fn key(&self) -> String {
        let text = |v: &Option<HeaderValue>| {
            v.as_ref()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default()
        };
        format!(
            "credentials:{}\n{}",
            text(&self.authorization),
            text(&self.cookie)
        )
    }
}

/// The compiled `[subscriptions.resolve]` of one field.
#[derive(Debug)]
pub struct FieldEnrichment {
    pub config: ResolveConfig,
    field: String,
    args: Vec<(String, Expression)>,
    share_by: Option<Expression>,
    limit: Arc<Semaphore>,
    /// One credentials slot per live share value, held by its groups: all
    /// groups of one share value fetch with the same (latest) credentials,
    /// so that their requests can be batched together.
    slots: parking_lot::Mutex<HashMap<String, Weak<Credentials>>>,
    /// Fetch failures are logged at most once a minute per field: a down
    /// upstream would otherwise log once per group and event.
    log_limit: LogLimit,
}

/// The credentials the groups of one share value fetch with.
pub(crate) type Credentials = parking_lot::Mutex<FetchCredentials>;

impl FieldEnrichment {
    pub fn compile(field: &str, config: &ResolveConfig) -> Result<Self, FilterError> {
        let args = config
            .args
            .iter()
            .map(|(name, source)| {
                Expression::compile(field, &format!("resolve.args.{name}"), source)
                    .map(|e| (name.clone(), e))
            })
            .collect::<Result<_, _>>()?;
        let share_by = config
            .share_by
            .as_deref()
            .map(|s| Expression::compile(field, "resolve.share_by", s))
            .transpose()?;
        Ok(Self {
            config: config.clone(),
            field: field.to_owned(),
            args,
            share_by,
            limit: Arc::new(Semaphore::new(config.max_concurrency)),
            slots: Default::default(),
            log_limit: LogLimit::default(),
        })
    }

    /// Logs why a fetch got no usable answer (rate-limited).
    pub(crate) fn log_failure(&self, why: &str) {
        let Some(suppressed) = self.log_limit.admit() else {
            return;
        };
        tracing::warn!(
            field = %self.field,
            suppressed,
            "enrichment fetch failed ({why}); delivered with UPSTREAM_UNAVAILABLE"
        );
    }

    /// The credentials slot of share value `share`, now holding
    /// `credentials` (the latest subscriber's, the least likely to have
    /// expired: any subscriber of one share value may stand for all).
    pub(crate) fn credentials_slot(
        &self,
        share: &str,
        credentials: FetchCredentials,
    ) -> Arc<Credentials> {
        let mut slots = self.slots.lock();
        if let Some(slot) = slots.get(share).and_then(Weak::upgrade) {
            *slot.lock() = credentials;
            return slot;
        }
        // Forget share values no group holds any more, before the table
        // doubles: it stays bounded by the live ones.
        if slots.len() >= 64 && slots.len().is_power_of_two() {
            slots.retain(|_, w| w.strong_count() > 0);
        }
        let slot = Arc::new(parking_lot::Mutex::new(credentials));
        slots.insert(share.to_owned(), Arc::downgrade(&slot));
        slot
    }

    pub fn policy(&self) -> Policy {
        Policy {
            on_null: self.config.on_null,
            prefer: self.config.prefer,
        }
    }

    /// Whether the arguments read `claims`: then subscribers with different
    /// claims cannot share a group.
    pub fn uses_claims(&self) -> bool {
        self.args.iter().any(|(_, e)| e.uses_claims())
    }

    /// Which subscribers may share this subscriber's fetches: its
    /// `share_by` value, or its credentials (also when `share_by` fails,
    /// the safe side: sharing with nobody of other credentials).
    pub fn share_key(
        &self,
        claims: &Value,
        args: &Map<String, Value>,
        credentials: &FetchCredentials,
    ) -> String {
        let Some(expr) = &self.share_by else {
            return credentials.key();
        };
        match expr.eval(claims, args) {
            Ok(v) => format!("share_by:{v}"),
            Err(e) => {
                tracing::warn!(
                    field = %self.field,
                    expression = %expr.source(),
                    "resolve.share_by failed ({e}); this subscriber shares fetches only with the same credentials"
                );
                credentials.key()
            }
        }
    }

    /// The query field's arguments for one event and group.
    pub(crate) fn args(
        &self,
        event: &PreparedEvent<'_>,
        vars: &GroupVars,
    ) -> Result<Map<String, Value>, String> {
        self.args
            .iter()
            .map(|(name, expr)| {
                expr.eval_event(event, vars)
                    .map(|v| (name.clone(), v))
                    .map_err(|e| format!("resolve.args.{name} = {:?} failed: {e}", expr.source()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_credentials_slot_per_live_share_value() {
        let config = ResolveConfig {
            query_field: "q".into(),
            args: Default::default(),
            share_by: Some("claims.role".into()),
            on_null: Default::default(),
            prefer: Default::default(),
            max_concurrency: 1,
        };
        let field = FieldEnrichment::compile("f", &config).unwrap();
        let token = |t: &'static str| FetchCredentials {
            authorization: Some(HeaderValue::from_static(t)),
            cookie: None,
            origin: None,
        };
        let first = field.credentials_slot("ops", token("Bearer a"));
        let second = field.credentials_slot("ops", token("Bearer b"));
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(*first.lock(), token("Bearer b"), "the latest credentials");
        let other = field.credentials_slot("dev", token("Bearer c"));
        assert!(!Arc::ptr_eq(&first, &other));
        drop((first, second, other));
        // Share values nobody holds are forgotten as the table grows.
        for i in 0..200 {
            drop(field.credentials_slot(&format!("v{i}"), token("Bearer x")));
        }
        let left = field.slots.lock().len();
        assert!(left < 64, "{left} entries kept for 200 dead share values");
    }

    #[test]
    fn share_keys_follow_share_by_or_credentials() {
        let config = |share_by: Option<&str>| ResolveConfig {
            query_field: "q".into(),
            args: Default::default(),
            share_by: share_by.map(str::to_owned),
            on_null: Default::default(),
            prefer: Default::default(),
            max_concurrency: 1,
        };
        let alice = FetchCredentials {
            authorization: Some(HeaderValue::from_static("Bearer a")),
            cookie: None,
            origin: None,
        };
        let bob = FetchCredentials {
            authorization: Some(HeaderValue::from_static("Bearer b")),
            cookie: None,
            origin: None,
        };
        let args = Map::new();
        let by_role = FieldEnrichment::compile("f", &config(Some("claims.role"))).unwrap();
        let ops = serde_json::json!({"role": "ops"});
        assert_eq!(
            by_role.share_key(&ops, &args, &alice),
            by_role.share_key(&ops, &args, &bob)
        );
        assert_ne!(
            by_role.share_key(&ops, &args, &alice),
            by_role.share_key(&serde_json::json!({"role": "dev"}), &args, &alice)
        );
        // A share_by that fails shares by credentials only.
        let none = serde_json::json!({});
        assert_ne!(
            by_role.share_key(&none, &args, &alice),
            by_role.share_key(&none, &args, &bob)
        );
        let by_credentials = FieldEnrichment::compile("f", &config(None)).unwrap();
        assert_ne!(
            by_credentials.share_key(&ops, &args, &alice),
            by_credentials.share_key(&ops, &args, &bob)
        );
        assert_eq!(
            by_credentials.share_key(&ops, &args, &alice),
            by_credentials.share_key(&none, &args, &alice.clone())
        );
    }
}
