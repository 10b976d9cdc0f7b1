//! Re-checking live subscriptions after a reload or a schema refresh
//! ([`Registry::recheck`]): which ones the running schema and `allow`
//! rules no longer admit, each ended through its outbox with its reason.

use std::sync::Arc;

use super::{Group, Member, Registry};
use crate::graphql::{Prepared, Schema};
use crate::subscriptions::Routes;
use crate::subscriptions::outbox::Ended;

/// What [`Registry::recheck`] ended.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rechecked {
    /// Subscriptions ended with `SCHEMA_CHANGED`.
    pub schema_changed: u64,
    /// Subscriptions ended with `FORBIDDEN`.
    pub forbidden: u64,
}

impl Registry {
    /// After a reload or a schema refresh: ends, each with its reason, the
    /// live subscriptions the running rules and schema no longer admit. A
    /// group whose field is gone or whose document no longer validates
    /// against `schema` ends with [`Ended::SchemaChanged`] (checked only
    /// when `schema` is not the one of the last re-check); a member that
    /// the field's `allow` (already swapped in place by
    /// [`Routes::reload`]) now refuses, with its own claims and the
    /// group's arguments, ends with [`Ended::Forbidden`]. Everything else
    /// goes on untouched; a changed `filter` or topic needs nothing here,
    /// both are read at dispatch.
    pub fn recheck(&self, routes: &Routes, schema: &Arc<Schema>) -> Rechecked {
        let schema_changed = {
            let mut checked = self.checked.lock();
            let changed = checked.as_ref().is_none_or(|c| !Arc::ptr_eq(c, schema));
            *checked = Some(schema.clone());
            changed
        };
        let mut out = Rechecked::default();
        for group in self.all_groups() {
            if schema_changed && let Some(reason) = group.misfit(routes, schema) {
                out.schema_changed += group.end_all(|_| true, &Ended::SchemaChanged(reason));
                continue;
            }
            if group.route.rules.has_allow() {
                let (rules, args) = (&group.route.rules, group.prepared.rule_args());
                out.forbidden +=
                    group.end_all(|m| !rules.allows(&m.claims, args), &Ended::Forbidden);
            }
        }
        if out != Rechecked::default() {
            tracing::warn!(
                schema_changed = out.schema_changed,
                forbidden = out.forbidden,
                "live subscriptions re-checked; those that no longer fit end"
            );
        } else {
            tracing::info!("live subscriptions re-checked; all go on");
        }
        out
    }
}

impl Group {
    /// Why this group's document no longer fits `schema`, if it does not:
    /// its field is gone, or it fails validation (the first error).
    fn misfit(&self, routes: &Routes, schema: &Schema) -> Option<Arc<str>> {
        let field = self.prepared.field();
        if !schema.subscription_fields().contains(&field) {
            return Some(Arc::from(format!(
                "the Subscription field {field:?} is no longer in the schema"
            )));
        }
        let d = &*self.document;
        let prepared =
            schema.prepare_with(&d.query, d.operation_name.as_deref(), &d.variables, &|f| {
                routes.resolve_config(f)
            });
        match prepared {
            Ok(Prepared::Subscription(_)) => None,
            Ok(Prepared::Passthrough(_)) => {
                Some(Arc::from("the document is no longer a subscription"))
            }
            Err(errors) => Some(Arc::from(
                errors
                    .first()
                    .map_or("the document no longer validates", |e| e.message.as_str()),
            )),
        }
    }

    /// Queues `why` for every member `ends` picks, on every shard; how many.
    fn end_all(&self, ends: impl Fn(&Member) -> bool, why: &Ended) -> u64 {
        let mut n = 0;
        for shard in &self.members {
            for m in shard.lock().members.values().filter(|m| ends(m)) {
                m.outbox.offer_end(m.serial, why.clone());
                n += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SubscriptionConfig;
    use crate::subscriptions::outbox::{Inbox, outbox};
    use crate::subscriptions::registry::{Document, Subscriber, SubscriptionHandle};
    use serde_json::{Map, json};

    const SDL: &str = "type Subscription { a(x: Int): Int b: Int }";

    struct Sub {
        _handle: SubscriptionHandle,
        inbox: Inbox,
    }

    fn subscribe(registry: &Arc<Registry>, routes: &Routes, schema: &Schema, query: &str) -> Sub {
        let Ok(Prepared::Subscription(p)) = schema.prepare(query, None, &Map::new()) else {
            panic!("{query} prepares");
        };
        let (out, inbox) = outbox(8);
        let slot = registry.connect();
        let handle = registry.register(
            &slot,
            Subscriber {
                route: routes.route(p.field()),
                prepared: p,
                claims: Arc::new(json!({})),
                serial: 1,
                resume: false,
                outbox: out,
                credentials: Default::default(),
                document: Arc::new(Document {
                    query: query.to_owned(),
                    operation_name: None,
                    variables: Map::new(),
                }),
            },
        );
        Sub {
            _handle: handle,
            inbox,
        }
    }

    fn ended(sub: &mut Sub) -> Option<Ended> {
        sub.inbox.rx.try_recv().ok().and_then(|d| d.end.map(|e| *e))
    }

    #[test]
    fn a_tightened_allow_and_a_schema_without_the_field_end_only_those_they_refuse() {
        let schema = Arc::new(Schema::build(SDL, None).unwrap());
        let fields = ["a".to_string(), "b".to_string()];
        let routes = Routes::new(&[], fields).unwrap();
        let registry = Registry::new(2);
        let mut one = subscribe(&registry, &routes, &schema, "subscription { a(x: 1) }");
        let mut two = subscribe(&registry, &routes, &schema, "subscription { a(x: 2) }");
        let mut b = subscribe(&registry, &routes, &schema, "subscription { b }");
        assert_eq!(registry.recheck(&routes, &schema), Rechecked::default());

        let allow = SubscriptionConfig {
            field: "a".into(),
            topic: None,
            filter: None,
            allow: Some("args.x != 1".into()),
            resolve: None,
        };
        assert!(routes.reload(&[allow]).is_empty());
        let out = registry.recheck(&routes, &schema);
        assert_eq!((out.forbidden, out.schema_changed), (1, 0));
        assert_eq!(ended(&mut one), Some(Ended::Forbidden));
        assert_eq!(ended(&mut two), None);
        assert_eq!(ended(&mut b), None);

        let without_b =
            Arc::new(Schema::build("type Subscription { a(x: Int): Int }", None).unwrap());
        let out = registry.recheck(&routes, &without_b);
        assert_eq!(out.schema_changed, 1, "{out:?}");
        assert!(matches!(ended(&mut b), Some(Ended::SchemaChanged(r)) if r.contains("\"b\"")));
        assert_eq!(ended(&mut two), None);
        // The same schema again: documents are not re-validated.
        let again = registry.recheck(&routes, &without_b);
        assert_eq!(again.schema_changed, 0);
    }
}
