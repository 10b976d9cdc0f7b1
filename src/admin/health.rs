//! What `/healthz` and `/readyz` report: whether the process drains, and
//! whether the upstream answered the last probe.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use serde::Serialize;

use crate::bus::{Bus, BusState};
use crate::log::error_chain;
use crate::proxy::Upstream;
use crate::proxy::schema::{LiveSchema, RefreshOutcome, UpstreamPart};
use crate::shutdown::Shutdown;

/// How often the upstream is probed for `/readyz`.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// Shared readiness state.
pub struct Health {
    draining: AtomicBool,
    upstream: Mutex<UpstreamStatus>,
    schema: LiveSchema,
    bus: Arc<dyn Bus>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct UpstreamStatus {
    /// `None` until the first probe finished.
    pub reachable: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", with = "humantime_opt")]
    pub checked_at: Option<SystemTime>,
}

/// The `/readyz` body.
#[derive(Debug, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub draining: bool,
    pub upstream: UpstreamStatus,
    pub schema: SchemaStatus,
    pub bus: BusStatus,
}

#[derive(Debug, Serialize)]
pub struct SchemaStatus {
    /// Where the upstream's types come from; `pending` while introspection
    /// has not succeeded yet.
    pub upstream_part: UpstreamPart,
    /// `ok` or `failed`: the last introspection of the upstream (absent
    /// before the first). A failed one keeps the last good schema in use,
    /// which is why it does not make subcar unready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_refresh: Option<RefreshOutcome>,
    /// Why the last introspection failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the schema in use was learned from the upstream.
    #[serde(skip_serializing_if = "Option::is_none", with = "humantime_opt")]
    pub refreshed_at: Option<SystemTime>,
}

impl SchemaStatus {
    pub fn of(schema: &LiveSchema) -> Self {
        let refresh = schema.refresh_status();
        Self {
            upstream_part: schema.upstream_part(),
            last_refresh: refresh.last,
            error: refresh
                .error
                .filter(|_| refresh.last == Some(RefreshOutcome::Failed)),
            refreshed_at: refresh.succeeded_at,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct BusStatus {
    pub kind: &'static str,
    pub connected: bool,
}

impl Health {
    pub fn new(schema: LiveSchema, bus: Arc<dyn Bus>) -> Self {
        Self {
            draining: AtomicBool::new(false),
            upstream: Mutex::new(UpstreamStatus::default()),
            schema,
            bus,
        }
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub fn record_probe(&self, result: Result<(), String>) {
        let mut status = self.upstream.lock();
        status.reachable = Some(result.is_ok());
        status.error = result.err();
        status.checked_at = Some(SystemTime::now());
    }

    /// Ready while not draining and the bus is connected. An unreachable
    /// upstream is reported but does not make subcar unready: subscriptions
    /// and the webhook still work, and the upstream's own probe decides
    /// whether the pod gets its traffic. A bus outage does: this replica's
    /// webhook answers 503 and its subscribers get nothing new meanwhile.
    pub fn readiness(&self) -> Readiness {
        let draining = self.is_draining();
        let connected = self.bus.state() == BusState::Connected;
        Readiness {
            ready: !draining && connected,
            draining,
            upstream: self.upstream.lock().clone(),
            schema: SchemaStatus::of(&self.schema),
            bus: BusStatus {
                kind: self.bus.kind(),
                connected,
            },
        }
    }
}

/// Probes the upstream now and every [`PROBE_INTERVAL`] until shutdown.
pub async fn probe_upstream(health: Arc<Health>, upstream: Upstream, shutdown: Shutdown) {
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = shutdown.triggered() => return,
            _ = tick.tick() => {}
        }
        let result = upstream.probe().await.map_err(|e| error_chain(&e));
        if let Err(e) = &result {
            tracing::debug!(error = %e, "upstream probe failed");
        }
        health.record_probe(result);
    }
}

mod humantime_opt {
    use std::time::SystemTime;

    pub fn serialize<S: serde::Serializer>(
        t: &Option<SystemTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.collect_str(&humantime::format_rfc3339_seconds(*t)),
            None => s.serialize_none(),
        }
    }
}
