//! `/status` on the admin listener: what this replica is doing right now, as
//! JSON for operators (the same facts as `/metrics`, readable by a person).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::health::{Health, SchemaStatus, UpstreamStatus};
use crate::bus::{Bus, BusState};
use crate::config::{LimitsConfig, RateLimitsConfig};
use crate::proxy::schema::LiveSchema;
use crate::subscriptions::Registry;

/// Everything `/status` reads; built once in the composition root.
pub struct StatusSource {
    pub started: Instant,
    pub registry: Arc<Registry>,
    pub bus: Arc<dyn Bus>,
    pub health: Arc<Health>,
    pub schema: LiveSchema,
    /// The count limits in force (a reload may have changed them).
    pub count_limits: Arc<crate::transport::CountLimits>,
    /// The configuration reloads applied, and what waits for a restart.
    pub applied: Arc<crate::admin::reload::Applied>,
    pub upstream_url: String,
    /// The connections gauges, by transport.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Every connected client.
    pub directory: Arc<crate::subscriptions::directory::Directory>,
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub version: &'static str,
    pub uptime_seconds: u64,
    pub draining: bool,
    /// Open connections by transport.
    pub connections: BTreeMap<&'static str, usize>,
    pub subscriptions: Subscriptions,
    pub bus: BusReport,
    pub upstream: UpstreamReport,
    pub schema: SchemaStatus,
    pub limits: LimitsConfig,
    /// Events per second; `null` is off.
    pub rate_limits: RateLimitsConfig,
    /// Keys changed in the file that take effect after a restart (empty
    /// when the running process is the file).
    pub pending_restart: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Subscriptions {
    pub total: usize,
    pub per_field: BTreeMap<String, usize>,
    /// Groups of identical subscriptions sharing filter and projection work.
    pub groups: usize,
    /// Subscription fields with live subscriptions (each fed by one topic;
    /// the registry groups by field, so that a topic change moves them).
    pub topics: usize,
}

#[derive(Debug, Serialize)]
pub struct BusReport {
    pub kind: &'static str,
    pub connected: bool,
}

#[derive(Debug, Serialize)]
pub struct UpstreamReport {
    pub url: String,
    #[serde(flatten)]
    pub status: UpstreamStatus,
}

/// Clients per page of `/status/connections` by default, and at most.
const PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

impl StatusSource {
    /// `GET /status/connections?limit=&after=`: a page of the connected
    /// clients, oldest first.
    pub fn connections(&self, query: Option<&str>) -> crate::subscriptions::directory::Page {
        let (mut limit, mut after) = (PAGE, None);
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match &*k {
                "limit" => limit = v.parse().unwrap_or(PAGE).clamp(1, MAX_PAGE),
                "after" => after = v.parse().ok(),
                _ => {}
            }
        }
        self.directory.page(after, limit)
    }

    pub fn snapshot(&self) -> Status {
        let sizes = self.registry.sizes();
        Status {
            version: env!("CARGO_PKG_VERSION"),
            uptime_seconds: self.started.elapsed().as_secs(),
            draining: self.health.is_draining(),
            connections: crate::metrics::Transport::ALL
                .iter()
                .map(|&transport| {
                    let label = crate::metrics::TransportLabel { transport };
                    let open = self.metrics.connections.get_or_create(&label).get();
                    (transport.name(), usize::try_from(open).unwrap_or(0))
                })
                .collect(),
            subscriptions: Subscriptions {
                total: sizes.subscriptions,
                per_field: self
                    .registry
                    .subscriptions_per_field()
                    .into_iter()
                    .collect(),
                groups: sizes.groups,
                topics: sizes.topics,
            },
            bus: BusReport {
                kind: self.bus.kind(),
                connected: self.bus.state() == BusState::Connected,
            },
            upstream: UpstreamReport {
                url: self.upstream_url.clone(),
                status: self.health.readiness().upstream,
            },
            schema: SchemaStatus::of(&self.schema),
            limits: LimitsConfig {
                max_connections: self.count_limits.max_connections(),
                max_subscriptions_per_connection: self.count_limits.max_subscriptions(),
                ..self.applied.limits()
            },
            rate_limits: self.applied.rate_limits(),
            pending_restart: self.applied.pending_restart(),
        }
    }
}
