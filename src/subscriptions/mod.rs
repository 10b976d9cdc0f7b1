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

use parking_lot::RwLock;

use crate::config::SubscriptionConfig;
use filter::{FieldRules, FilterError, ReplaceError};

pub use dispatcher::Dispatcher;
pub use enrich::{Enricher, FetchCredentials, FieldEnrichment};
pub use outbox::{Delivery, Ended, Inbox, Outbox};
pub use registry::{Document, Rechecked, Registry, SubscriptionHandle};

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
    /// Which topic feeds which field, read at every dispatch: a reload
    /// swaps it whole and live subscriptions follow at once.
    topics: RwLock<Arc<TopicMap>>,
    /// The topics some field was fed by at start: the webhook accepts
    /// them and the Redis bus reads their streams, so a field may move to
    /// one of them while running.
    started: Vec<String>,
}

/// Topic → fields and field → topic.
#[derive(Debug, Default)]
struct TopicMap {
    of_field: HashMap<String, Arc<str>>,
    fields: HashMap<Arc<str>, Arc<[Arc<str>]>>,
}

impl TopicMap {
    fn new(of_field: HashMap<String, Arc<str>>) -> Self {
        let mut fields: HashMap<Arc<str>, Vec<Arc<str>>> = HashMap::new();
        for (field, topic) in &of_field {
            fields
                .entry(topic.clone())
                .or_default()
                .push(Arc::from(field.as_str()));
        }
        Self {
            fields: fields.into_iter().map(|(t, f)| (t, f.into())).collect(),
            of_field,
        }
    }
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
        let map = TopicMap::new(
            by_field
                .iter()
                .map(|(f, r)| (f.clone(), r.topic.clone()))
                .collect(),
        );
        let mut started: Vec<String> = map.fields.keys().map(|t| t.to_string()).collect();
        started.sort();
        Ok(Self {
            by_field,
            default_rules: Arc::new(FieldRules::default()),
            topics: RwLock::new(Arc::new(map)),
            started,
        })
    }

    /// The fields `topic` feeds now.
    pub fn fields_of(&self, topic: &str) -> Option<Arc<[Arc<str>]>> {
        self.topics.read().fields.get(topic).cloned()
    }

    /// Applies the `filter`, `allow` and `topic` of `configs` to the
    /// running fields (live subscriptions included: the registry re-checks
    /// them against a changed `allow`, see [`Registry::recheck`]); returns
    /// what needs a restart instead. Fields left out of `configs` lose
    /// their rules and go back to the topic of their own name.
    pub fn reload(&self, configs: &[SubscriptionConfig]) -> Vec<RouteReloadError> {
        let mut problems = Vec::new();
        let mut fields: Vec<&String> = self.by_field.keys().collect();
        fields.sort();
        let mut of_field = self.topics.read().of_field.clone();
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
            let running = &of_field[field.as_str()];
            if **running != *config.topic() {
                if !self.started.iter().any(|t| t == config.topic()) {
                    problems.push(RouteReloadError::Topic {
                        field: field.clone(),
                        running: running.to_string(),
                        new: config.topic().to_owned(),
                    });
                    continue;
                }
                tracing::info!(field = %field, from = %running, to = config.topic(), "subscriptions topic applied");
                of_field.insert(field.clone(), Arc::from(config.topic()));
            }
            if let Err(e) = route.rules.replace(&config) {
                problems.push(e.into());
            }
        }
        *self.topics.write() = Arc::new(TopicMap::new(of_field));
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
        match self.by_field.get(field) {
            Some(route) => Route {
                topic: self.topics.read().of_field[field].clone(),
                ..route.clone()
            },
            None => Route {
                topic: Arc::from(field),
                rules: self.default_rules.clone(),
                enrich: None,
            },
        }
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

    /// Every topic that fed some field at start (for the webhook's
    /// unknown-topic check and the streams the Redis bus reads).
    pub fn topics(&self) -> Vec<String> {
        self.started.clone()
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
        "subscriptions field {field:?}: topic {new:?} differs from the running {running:?} and fed no field at start (the webhook refuses it, the Redis bus does not read it); this takes effect after a restart"
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
        // A topic some field was fed by at start is applied at once.
        let joined = SubscriptionConfig {
            topic: Some("x".into()),
            ..unconfigured("y")
        };
        assert!(routes.reload(&[joined]).is_empty());
        assert_eq!(&*routes.route("y").topic, "x");
        let mut fed: Vec<String> = routes
            .fields_of("x")
            .unwrap()
            .iter()
            .map(|f| f.to_string())
            .collect();
        fed.sort();
        assert_eq!(fed, vec!["x", "y"]);
        assert!(routes.fields_of("y").is_none());
        // Dropping the block removes the filter again and the topic goes back.
        assert!(routes.reload(&[]).is_empty());
        assert!(live.rules.matches(&ev, &args, &serde_json::json!({})));
        assert_eq!(&*routes.route("y").topic, "y");
    }
}
