//! Subscriptions: one operation's life for every transport ([`operation`],
//! the core transports call), which topic feeds which field ([`Routes`]),
//! who listens ([`registry::Registry`], the single owner of subscription
//! lifetime) and how events reach them ([`dispatcher`]). Knows nothing of
//! sockets or wire formats: a connection is an [`outbox::Outbox`] of shared
//! payloads, which its transport frames.

pub mod crosscheck;
pub mod directory;
pub mod dispatcher;
pub mod enrich;
pub mod filter;
pub mod latch;
pub mod operation;
pub mod outbox;
pub mod references;
pub mod registry;

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::SubscriptionConfig;
use filter::{FieldRules, FilterError, ReplaceError};

pub use dispatcher::Dispatcher;
pub use enrich::{Enricher, FetchCredentials, FieldEnrichment};
pub use outbox::{Delivery, Inbox, Outbox};
pub use registry::{Registry, SubscriptionHandle};

/// Where one Subscription field's events come from and who may see them.
#[derive(Debug, Clone)]
pub struct Route {
    pub topic: Arc<str>,
    pub rules: Arc<FieldRules>,
    /// `[subscriptions.resolve]`: events are completed from the upstream.
    pub enrich: Option<Arc<FieldEnrichment>>,
}

/// Field → route, for configured fields and for every other field of the
/// Subscription root (topic = field name, default rules).
#[derive(Debug)]
pub struct Routes {
    by_field: HashMap<String, Route>,
    default_rules: Arc<FieldRules>,
}

impl Routes {
    /// `schema_fields` are the Subscription root's fields (see [`subscription_fields`]).
    pub fn new(
        configs: &[SubscriptionConfig],
        schema_fields: impl IntoIterator<Item = String>,
    ) -> Result<Self, FilterError> {
        let mut by_field: HashMap<String, Route> = HashMap::new();
        for field in schema_fields {
            // Rules of its own per field, so a reload can give it a filter.
            let rules = FieldRules::compile(&unconfigured(&field))?;
            let route = Route {
                topic: Arc::from(field.as_str()),
                rules: Arc::new(rules),
                enrich: None,
            };
            by_field.insert(field, route);
        }
        for c in configs {
            by_field.insert(
                c.field.clone(),
                Route {
                    topic: Arc::from(c.topic()),
                    rules: Arc::new(FieldRules::compile(c)?),
                    enrich: c
                        .resolve
                        .as_ref()
                        .map(|r| FieldEnrichment::compile(&c.field, r).map(Arc::new))
                        .transpose()?,
                },
            );
        }
        Ok(Self {
            by_field,
            default_rules: Arc::new(FieldRules::default()),
        })
    }

    /// Applies the `filter` and `allow` expressions of `configs` to the
    /// running fields (live subscriptions included); returns what needs a
    /// restart instead. Fields left out of `configs` lose their rules.
    pub fn reload(&self, configs: &[SubscriptionConfig]) -> Vec<RouteReloadError> {
        let mut problems = Vec::new();
        let mut fields: Vec<&String> = self.by_field.keys().collect();
        fields.sort();
        for field in fields {
            let route = &self.by_field[field];
            let config = configs
                .iter()
                .find(|c| &c.field == field)
                .cloned()
                .unwrap_or_else(|| unconfigured(field));
            let running = route.enrich.as_ref().map(|e| &e.config);
            if running != config.resolve.as_ref() {
                problems.push(RouteReloadError::Resolve {
                    field: field.clone(),
                });
            }
            if *route.topic != *config.topic() {
                problems.push(RouteReloadError::Topic {
                    field: field.clone(),
                    running: route.topic.to_string(),
                    new: config.topic().to_owned(),
                });
                continue;
            }
            if let Err(e) = route.rules.replace(&config) {
                problems.push(e.into());
            }
        }
        for c in configs {
            if !self.by_field.contains_key(&c.field) {
                problems.push(RouteReloadError::UnknownField {
                    field: c.field.clone(),
                });
            }
        }
        problems
    }

    /// The route of `field`; a field the schema has but nothing configured
    /// is fed by the topic of its own name.
    pub fn route(&self, field: &str) -> Route {
        self.by_field.get(field).cloned().unwrap_or_else(|| Route {
            topic: Arc::from(field),
            rules: self.default_rules.clone(),
            enrich: None,
        })
    }

    /// The `[subscriptions.resolve]` of `field`, when it is enriched.
    pub fn resolve_config(&self, field: &str) -> Option<&crate::config::ResolveConfig> {
        self.by_field.get(field)?.enrich.as_ref().map(|e| &e.config)
    }

    /// Every enriched field with its `[subscriptions.resolve]`.
    pub fn enriched(&self) -> Vec<(&str, &crate::config::ResolveConfig)> {
        let mut out: Vec<_> = self
            .by_field
            .iter()
            .filter_map(|(f, r)| r.enrich.as_ref().map(|e| (f.as_str(), &e.config)))
            .collect();
        out.sort_by_key(|(f, _)| *f);
        out
    }

    /// Checks every `[subscriptions.resolve]` against `schema`, which must
    /// hold the upstream's part.
    pub fn check_resolve(
        &self,
        schema: &crate::graphql::Schema,
    ) -> Result<(), Box<crate::graphql::fetch::ResolveSchemaError>> {
        for (field, resolve) in self.enriched() {
            schema.resolve_target(field, resolve)?;
        }
        Ok(())
    }

    /// Every Subscription field, configured or not.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.by_field.keys().map(String::as_str)
    }

    /// Every topic that feeds some field (for the webhook's unknown-topic check).
    pub fn topics(&self) -> Vec<String> {
        let mut t: Vec<String> = self
            .by_field
            .values()
            .map(|r| r.topic.to_string())
            .collect();
        t.sort();
        t.dedup();
        t
    }
}

/// A field's configuration when no `[[subscriptions]]` block names it.
fn unconfigured(field: &str) -> SubscriptionConfig {
    SubscriptionConfig {
        field: field.to_owned(),
        topic: None,
        filter: None,
        allow: None,
        resolve: None,
    }
}

/// A `[[subscriptions]]` change a reload cannot apply while running.
#[derive(Debug, thiserror::Error)]
pub enum RouteReloadError {
    #[error(transparent)]
    Rules(#[from] ReplaceError),
    #[error(
        "subscriptions field {field:?}: topic {new:?} differs from the running {running:?}; this takes effect after a restart"
    )]
    Topic {
        field: String,
        running: String,
        new: String,
    },
    #[error(
        "subscriptions field {field:?} is not a field of the running schema; this takes effect after a restart"
    )]
    UnknownField { field: String },
    #[error(
        "subscriptions field {field:?}: resolve differs from the running one; this takes effect after a restart"
    )]
    Resolve { field: String },
}

/// The fields of `type Subscription` / `extend type Subscription` in `sdl`.
pub fn subscription_fields(sdl: &str) -> Vec<String> {
    use graphql_parser::schema::{Definition, TypeDefinition, TypeExtension};
    let Ok(doc) = graphql_parser::parse_schema::<String>(sdl) else {
        return Vec::new();
    };
    let mut fields = Vec::new();
    for def in &doc.definitions {
        match def {
            Definition::TypeDefinition(TypeDefinition::Object(o)) if o.name == "Subscription" => {
                fields.extend(o.fields.iter().map(|f| f.name.clone()));
            }
            Definition::TypeExtension(TypeExtension::Object(o)) if o.name == "Subscription" => {
                fields.extend(o.fields.iter().map(|f| f.name.clone()));
            }
            _ => {}
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_default_to_field_name() {
        let sdl = "type Query { a: Int } type Subscription { x: Int } extend type Subscription { y: Int }";
        let fields = subscription_fields(sdl);
        assert_eq!(fields, vec!["x", "y"]);
        let cfg = SubscriptionConfig {
            field: "y".into(),
            topic: Some("why".into()),
            filter: None,
            allow: None,
            resolve: None,
        };
        let routes = Routes::new(&[cfg], fields).unwrap();
        assert_eq!(&*routes.route("x").topic, "x");
        assert_eq!(&*routes.route("y").topic, "why");
        assert_eq!(routes.topics(), vec!["why", "x"]);
    }

    #[test]
    fn reload_swaps_rules_in_place_and_names_what_needs_a_restart() {
        let fields = vec!["x".to_string(), "y".to_string()];
        let routes = Routes::new(&[], fields).unwrap();
        let live = routes.route("x");
        let ev = serde_json::json!({"n": 1});
        let args = serde_json::Map::new();
        assert!(live.rules.matches(&ev, &args, &serde_json::json!({})));
        let filtered = SubscriptionConfig {
            filter: Some("event.n > 1".into()),
            ..unconfigured("x")
        };
        let moved = SubscriptionConfig {
            topic: Some("elsewhere".into()),
            ..unconfigured("y")
        };
        let problems = routes.reload(&[filtered, moved, unconfigured("z")]);
        // The route a live subscription holds follows the new filter.
        assert!(!live.rules.matches(&ev, &args, &serde_json::json!({})));
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(text[0].contains("\"y\"") && text[0].contains("elsewhere"));
        assert!(text[1].contains("\"z\""));
        // Dropping the block removes the filter again.
        assert!(routes.reload(&[]).is_empty());
        assert!(live.rules.matches(&ev, &args, &serde_json::json!({})));
    }
}
