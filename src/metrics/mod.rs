//! Prometheus metrics, one registry per [`crate::app::App`] (no globals, so
//! several apps in one test process do not share counters). Served on the
//! admin listener's `/metrics` in the format the scraper asks for
//! ([`Format`]).
//!
//! Label values are bounded: transports, configured fields and topics, HTTP
//! status codes and a fixed set of refusal reasons; never ids or addresses.
//! Every family is present from the start, its known label values at zero,
//! so that dashboards and alerts see a series before the first event.

mod exposition;
mod process;

pub use exposition::Format;

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabel {
    pub transport: Transport,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Transport {
    graphql_transport_ws,
    /// The legacy subscriptions-transport-ws subprotocol.
    graphql_ws,
    /// GraphQL over SSE, both modes.
    sse,
    /// Apollo multipart HTTP subscriptions.
    multipart,
}

impl Transport {
    /// The name `/status` and the docs use.
    pub fn name(self) -> &'static str {
        match self {
            Self::graphql_transport_ws => "graphql-transport-ws",
            Self::graphql_ws => "graphql-ws",
            Self::sse => "sse",
            Self::multipart => "multipart",
        }
    }

    pub const ALL: &[Transport] = &[
        Transport::graphql_transport_ws,
        Transport::graphql_ws,
        Transport::sse,
        Transport::multipart,
    ];
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FieldLabel {
    pub field: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabel {
    pub topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: Refusal,
}

/// Why subcar refused or closed a client.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Refusal {
    auth,
    rate_limit_connection,
    rate_limit_message,
    rate_limit_subscription,
    /// A query or mutation over a socket beyond `limits.max_inflight_per_connection`.
    rate_limit_inflight,
    rate_limit_request,
    rate_limit_webhook,
    capacity,
    slow_consumer,
    heartbeat_timeout,
    init_timeout,
    invalid_message,
    /// An upgrade while the process drains for shutdown.
    draining,
    /// A browser request from an origin that is not allowed.
    origin,
}

impl Refusal {
    /// Every reason, so each series exists (at zero) from the start.
    pub const ALL: &[Refusal] = &[
        Refusal::auth,
        Refusal::rate_limit_connection,
        Refusal::rate_limit_message,
        Refusal::rate_limit_subscription,
        Refusal::rate_limit_request,
        Refusal::rate_limit_webhook,
        Refusal::capacity,
        Refusal::slow_consumer,
        Refusal::heartbeat_timeout,
        Refusal::init_timeout,
        Refusal::invalid_message,
        Refusal::draining,
        Refusal::origin,
        Refusal::rate_limit_inflight,
    ];
}

/// The statuses the webhook answers (README, "The webhook").
const WEBHOOK_STATUSES: &[u16] = &[202, 400, 401, 408, 413, 415, 422, 429, 503];
/// The statuses of the proxy path that subcar itself produces, beside the
/// upstream's own `200`.
const PROXY_STATUSES: &[u16] = &[200, 400, 413, 429, 502, 504];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerLabel {
    /// `mutation:topic` of a `[[triggers]]` entry.
    pub trigger: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerFailureLabel {
    pub trigger: String,
    pub reason: TriggerFailure,
}

/// Why a trigger published nothing for a mutation it matched.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum TriggerFailure {
    /// The upstream's answer could not be read as JSON (or was too large).
    response,
    /// The `payload` expression failed.
    cel,
    /// The bus refused the event or did not answer in time.
    publish,
}

impl TriggerFailure {
    pub const ALL: &[TriggerFailure] = &[Self::response, Self::cel, Self::publish];
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabel {
    pub version: &'static str,
}

/// Every metric subcar exports.
pub struct Metrics {
    registry: Registry,
    process: Registry,
    pub connections: Family<TransportLabel, Gauge>,
    pub subscriptions: Family<FieldLabel, Gauge>,
    pub subscription_groups: Gauge,
    pub events_received: Family<TopicLabel, Counter>,
    pub messages_delivered: Counter,
    pub dispatch_latency: Histogram,
    pub webhook_requests: Family<StatusLabel, Counter>,
    pub proxy_requests: Family<StatusLabel, Counter>,
    pub proxy_latency: Histogram,
    pub refusals: Family<ReasonLabel, Counter>,
    pub bus_up: Gauge,
    /// 1 while the upstream answers subcar's probe, 0 when it does not.
    pub upstream_up: Gauge,
    pub bus_lagged_events: Counter<u64, AtomicU64>,
    /// Subscriptions ended with `EVENTS_LOST`.
    pub subscriptions_events_lost: Counter<u64, AtomicU64>,
    pub enrichment_requests: Counter<u64, AtomicU64>,
    pub enrichment_operations: Counter<u64, AtomicU64>,
    pub enrichment_failures: Counter<u64, AtomicU64>,
    pub enrichment_skipped: Counter<u64, AtomicU64>,
    /// Introspections of the upstream that failed (the schema in use stayed).
    pub schema_refresh_failures: Counter<u64, AtomicU64>,
    /// Unix time the schema in use was loaded or last refreshed.
    pub schema_last_refresh_success: Gauge,
    /// Events published by `[[triggers]]` (duplicates not counted).
    pub trigger_events: Family<TriggerLabel, Counter>,
    /// Trigger events the bus already had (a retried request).
    pub trigger_duplicates: Family<TriggerLabel, Counter>,
    pub trigger_failures: Family<TriggerFailureLabel, Counter>,
}

/// Latency buckets from 100 µs to ~13 s.
fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 18)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("subcar");
        let m = Self {
            connections: Family::default(),
            subscriptions: Family::default(),
            subscription_groups: Gauge::default(),
            events_received: Family::default(),
            messages_delivered: Counter::default(),
            dispatch_latency: Histogram::new(latency_buckets()),
            webhook_requests: Family::default(),
            proxy_requests: Family::default(),
            proxy_latency: Histogram::new(latency_buckets()),
            refusals: Family::default(),
            bus_up: Gauge::default(),
            upstream_up: Gauge::default(),
            bus_lagged_events: Counter::default(),
            subscriptions_events_lost: Counter::default(),
            enrichment_requests: Counter::default(),
            enrichment_operations: Counter::default(),
            enrichment_failures: Counter::default(),
            enrichment_skipped: Counter::default(),
            schema_refresh_failures: Counter::default(),
            schema_last_refresh_success: Gauge::default(),
            trigger_events: Family::default(),
            trigger_duplicates: Family::default(),
            trigger_failures: Family::default(),
            registry: Registry::default(),
            process: Registry::default(),
        };
        let build_info = Family::<VersionLabel, Gauge>::default();
        build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "subcar's version", build_info);
        registry.register(
            "connections",
            "Open client connections",
            m.connections.clone(),
        );
        registry.register(
            "subscriptions",
            "Active subscriptions",
            m.subscriptions.clone(),
        );
        registry.register(
            "subscription_groups",
            "Groups of identical subscriptions sharing filter and projection work",
            m.subscription_groups.clone(),
        );
        registry.register(
            "events_received",
            "Events accepted by the webhook",
            m.events_received.clone(),
        );
        registry.register(
            "messages_delivered",
            "Messages queued to subscribers",
            m.messages_delivered.clone(),
        );
        registry.register_with_unit(
            "dispatch_latency",
            "From an event leaving the bus (for the memory bus: its acceptance by the webhook) to its frame queued for the last subscriber",
            Unit::Seconds,
            m.dispatch_latency.clone(),
        );
        registry.register(
            "webhook_requests",
            "Webhook requests by response status",
            m.webhook_requests.clone(),
        );
        registry.register(
            "proxy_requests",
            "Proxied requests by response status",
            m.proxy_requests.clone(),
        );
        registry.register_with_unit(
            "proxy_latency",
            "Proxied requests: time to the upstream's response headers",
            Unit::Seconds,
            m.proxy_latency.clone(),
        );
        registry.register(
            "enrichment_requests",
            "HTTP requests sent to the upstream to complete events ([subscriptions.resolve])",
            m.enrichment_requests.clone(),
        );
        registry.register(
            "enrichment_operations",
            "Enrichment queries sent (several per request when batched)",
            m.enrichment_operations.clone(),
        );
        registry.register(
            "enrichment_failures",
            "Enrichment queries without a usable answer (upstream down, timeout, garbage), delivered with UPSTREAM_UNAVAILABLE",
            m.enrichment_failures.clone(),
        );
        registry.register(
            "enrichment_skipped",
            "Deliveries left out because the upstream answered null or forbidden (on_null = \"skip\")",
            m.enrichment_skipped.clone(),
        );
        registry.register(
            "refusals",
            "Clients refused or closed, by reason",
            m.refusals.clone(),
        );
        registry.register(
            "bus_up",
            "1 while the bus takes publishes, 0 during an outage",
            m.bus_up.clone(),
        );
        registry.register(
            "bus_lagged_events",
            "Events a dispatcher lost because it fell behind the bus",
            m.bus_lagged_events.clone(),
        );
        registry.register(
            "subscriptions_events_lost",
            "Subscriptions ended with EVENTS_LOST: events they should have received were gone from the bus history",
            m.subscriptions_events_lost.clone(),
        );
        registry.register(
            "upstream_up",
            "1 while the upstream answers subcar's reachability probe, 0 when it does not",
            m.upstream_up.clone(),
        );
        registry.register(
            "schema_refresh_failures",
            "Introspections of the upstream that failed; the last good schema stays in use",
            m.schema_refresh_failures.clone(),
        );
        registry.register_with_unit(
            "schema_last_refresh_success_timestamp",
            "Unix time the schema in use was loaded or last refreshed from the upstream",
            Unit::Seconds,
            m.schema_last_refresh_success.clone(),
        );
        registry.register(
            "trigger_events",
            "Events published for mutations by [[triggers]] (duplicates of a retried request not counted)",
            m.trigger_events.clone(),
        );
        registry.register(
            "trigger_duplicates",
            "Trigger events not published again: a retried request's, already on the bus within webhook.dedup_window",
            m.trigger_duplicates.clone(),
        );
        registry.register(
            "trigger_failures",
            "Mutations a trigger matched that published nothing, by reason (response, cel, publish); the mutation's answer is unaffected",
            m.trigger_failures.clone(),
        );
        // `process_*` is a convention without the subcar prefix.
        let mut process = Registry::default();
        process.register_collector(Box::new(process::ProcessCollector));
        for &transport in Transport::ALL {
            let _ = m.connections.get_or_create(&TransportLabel { transport });
        }
        for &reason in Refusal::ALL {
            let _ = m.refusals.get_or_create(&ReasonLabel { reason });
        }
        for &status in WEBHOOK_STATUSES {
            let _ = m.webhook_requests.get_or_create(&StatusLabel { status });
        }
        for &status in PROXY_STATUSES {
            let _ = m.proxy_requests.get_or_create(&StatusLabel { status });
        }
        Self {
            registry,
            process,
            ..m
        }
    }

    /// Creates the series of the configured fields and topics at zero.
    pub fn seed<'a>(
        &self,
        fields: impl IntoIterator<Item = &'a str>,
        topics: impl IntoIterator<Item = &'a str>,
    ) {
        for field in fields {
            let _ = self.subscriptions.get_or_create(&FieldLabel {
                field: field.to_owned(),
            });
        }
        for topic in topics {
            let _ = self.events_received.get_or_create(&TopicLabel {
                topic: topic.to_owned(),
            });
        }
    }

    /// Creates the series of a trigger at zero.
    pub fn seed_trigger(&self, trigger: &str) {
        let label = TriggerLabel {
            trigger: trigger.to_owned(),
        };
        let _ = self.trigger_events.get_or_create(&label);
        let _ = self.trigger_duplicates.get_or_create(&label);
        for &reason in TriggerFailure::ALL {
            let _ = self.trigger_failures.get_or_create(&TriggerFailureLabel {
                trigger: trigger.to_owned(),
                reason,
            });
        }
    }

    /// A trigger published an event, or found it already published
    /// (`duplicate`).
    pub fn trigger_event(&self, trigger: &str, duplicate: bool) {
        let family = match duplicate {
            true => &self.trigger_duplicates,
            false => &self.trigger_events,
        };
        family
            .get_or_create(&TriggerLabel {
                trigger: trigger.to_owned(),
            })
            .inc();
    }

    /// A trigger published nothing for a mutation it matched.
    pub fn trigger_failed(&self, trigger: &str, reason: TriggerFailure) {
        self.trigger_failures
            .get_or_create(&TriggerFailureLabel {
                trigger: trigger.to_owned(),
                reason,
            })
            .inc();
    }

    /// The schema in use was loaded or refreshed now.
    pub fn schema_refreshed(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.schema_last_refresh_success
            .set(i64::try_from(now).unwrap_or(i64::MAX));
    }

    pub fn observe_proxy(&self, status: u16, elapsed: Duration) {
        self.proxy_requests
            .get_or_create(&StatusLabel { status })
            .inc();
        self.proxy_latency.observe(elapsed.as_secs_f64());
    }

    /// Counts a refusal and logs it: every refusal passes here, with its
    /// reason and never the client's credentials.
    pub fn refused(&self, reason: Refusal) {
        tracing::info!(reason = ?reason, "client refused");
        let _ = self.refusals.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// The OpenMetrics exposition of every metric.
    pub fn render(&self) -> String {
        use prometheus_client::encoding::text;
        let mut out = String::new();
        text::encode_registry(&mut out, &self.registry)
            .and_then(|()| text::encode_registry(&mut out, &self.process))
            .and_then(|()| text::encode_eof(&mut out))
            .expect("writing to a String does not fail");
        out
    }

    /// Every metric in `format`.
    pub fn render_as(&self, format: Format) -> String {
        match format {
            Format::OpenMetrics => self.render(),
            Format::Text => exposition::to_text_format(&self.render()),
        }
    }
}

/// One unit of a gauge held for as long as the guard lives (an open
/// connection): decremented on drop, so a task that ends in any way, a
/// panic included, gives it back.
#[derive(Debug)]
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    /// Increments `gauge` now; the guard's drop decrements it.
    pub fn hold(gauge: Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_gauge_guard_is_given_back_when_its_task_panics() {
        let gauge = Gauge::default();
        let held = GaugeGuard::hold(gauge.clone());
        let task = tokio::spawn(async move {
            let _held = held;
            panic!("a session bug");
        });
        assert!(task.await.unwrap_err().is_panic());
        assert_eq!(gauge.get(), 0);
    }

    #[test]
    fn renders_with_conventional_names() {
        let m = Metrics::new();
        m.observe_proxy(200, Duration::from_millis(3));
        m.refused(Refusal::slow_consumer);
        let text = m.render();
        assert!(
            text.contains("subcar_proxy_requests_total{status=\"200\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("subcar_proxy_latency_seconds_bucket"),
            "{text}"
        );
        assert!(
            text.contains("subcar_refusals_total{reason=\"slow_consumer\"} 1"),
            "{text}"
        );
        assert!(text.contains("subcar_build_info{version="), "{text}");
    }

    #[test]
    fn every_refusal_reason_is_listed() {
        // Exhaustive on purpose: a new reason does not compile here until
        // it is considered, and then must be in `Refusal::ALL`.
        fn listed(r: Refusal) -> bool {
            match r {
                Refusal::auth
                | Refusal::capacity
                | Refusal::draining
                | Refusal::heartbeat_timeout
                | Refusal::init_timeout
                | Refusal::invalid_message
                | Refusal::origin
                | Refusal::rate_limit_connection
                | Refusal::rate_limit_inflight
                | Refusal::rate_limit_message
                | Refusal::rate_limit_request
                | Refusal::rate_limit_subscription
                | Refusal::rate_limit_webhook
                | Refusal::slow_consumer => Refusal::ALL.contains(&r),
            }
        }
        for r in Refusal::ALL {
            assert!(listed(*r));
        }
        assert_eq!(Refusal::ALL.len(), 14);
    }

    #[test]
    fn every_family_is_there_before_anything_happened() {
        let m = Metrics::new();
        m.seed(["incidentUpdated"], ["incident.updated"]);
        let text = m.render_as(Format::Text);
        for line in [
            "subcar_connections{transport=\"graphql_transport_ws\"} 0",
            "subcar_connections{transport=\"graphql_ws\"} 0",
            "subcar_refusals_total{reason=\"draining\"} 0",
            "subcar_webhook_requests_total{status=\"503\"} 0",
            "subcar_subscriptions{field=\"incidentUpdated\"} 0",
            "subcar_events_received_total{topic=\"incident.updated\"} 0",
            "subcar_upstream_up 0",
            "subcar_schema_refresh_failures_total 0",
            "subcar_schema_last_refresh_success_timestamp_seconds 0",
            "# TYPE process_cpu_seconds_total counter",
            "# TYPE process_resident_memory_bytes gauge",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        assert!(!text.contains("# EOF"));
    }
}
