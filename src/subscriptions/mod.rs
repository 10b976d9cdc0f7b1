//! Subscriptions: which topic feeds which field ([`Routes`]), who listens
//! ([`registry::Registry`], the single owner of subscription lifetime) and
//! how events reach them ([`dispatcher`]). Knows nothing of sockets or HTTP:
//! a connection is just an [`outbox::Outbox`] of pre-serialised frames.

pub mod dispatcher;
pub mod outbox;
pub mod registry;
pub mod sampler;

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::SubscriptionConfig;
use crate::graphql::filter::{FieldRules, FilterError};

pub use dispatcher::Dispatcher;
pub use outbox::{Delivery, Inbox, Outbox};
pub use registry::{Registry, SubscriptionHandle};

/// Where one Subscription field's events come from and who may see them.
#[derive(Debug, Clone)]
pub struct Route {
    pub topic: Arc<str>,
    pub rules: Arc<FieldRules>,
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
        let default_rules = Arc::new(FieldRules::default());
        let mut by_field: HashMap<String, Route> = schema_fields
            .into_iter()
            .map(|f| {
                let route = Route {
                    topic: Arc::from(f.as_str()),
                    rules: default_rules.clone(),
                };
                (f, route)
            })
            .collect();
        for c in configs {
            by_field.insert(
                c.field.clone(),
                Route {
                    topic: Arc::from(c.topic()),
                    rules: Arc::new(FieldRules::compile(c)?),
                },
            );
        }
        Ok(Self {
            by_field,
            default_rules,
        })
    }

    /// The route of `field`; a field the schema has but nothing configured
    /// is fed by the topic of its own name.
    pub fn route(&self, field: &str) -> Route {
        self.by_field.get(field).cloned().unwrap_or_else(|| Route {
            topic: Arc::from(field),
            rules: self.default_rules.clone(),
        })
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
        };
        let routes = Routes::new(&[cfg], fields).unwrap();
        assert_eq!(&*routes.route("x").topic, "x");
        assert_eq!(&*routes.route("y").topic, "why");
        assert_eq!(routes.topics(), vec!["why", "x"]);
    }
}
