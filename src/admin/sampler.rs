//! Copies the registry's and the bus's state into the Prometheus metrics
//! once a second, so that the dispatch hot path only bumps plain atomics.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::MissedTickBehavior;

use crate::bus::{Bus, BusState};
use crate::metrics::{FieldLabel, Metrics, Refusal};
use crate::shutdown::Shutdown;
use crate::subscriptions::Registry;
use crate::subscriptions::enrich::EnrichStats;

const PERIOD: Duration = Duration::from_secs(1);

/// Runs until shutdown.
pub async fn run(
    registry: Arc<Registry>,
    bus: Arc<dyn Bus>,
    enrich: Arc<EnrichStats>,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) {
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut fields: HashSet<String> = HashSet::new();
    let (mut delivered, mut slow, mut lagged, mut lost) = (0, 0, 0, 0);
    let mut enriched = [0u64; 4];
    loop {
        tokio::select! {
            _ = shutdown.triggered() => return,
            _ = tick.tick() => {}
        }
        let per_field = registry.subscriptions_per_field();
        fields.extend(per_field.keys().cloned());
        for f in &fields {
            let n = per_field.get(f).copied().unwrap_or(0);
            metrics
                .subscriptions
                .get_or_create(&FieldLabel { field: f.clone() })
                .set(n as i64);
        }
        metrics
            .subscription_groups
            .set(registry.sizes().groups as i64);
        let stats = &registry.stats;
        let now = stats.deliveries.load(Ordering::Relaxed);
        metrics.messages_delivered.inc_by(now - delivered);
        delivered = now;
        let now = stats.slow_consumers.load(Ordering::Relaxed);
        for _ in slow..now {
            metrics.refused(Refusal::slow_consumer);
        }
        slow = now;
        let now = stats.lagged.load(Ordering::Relaxed);
        metrics.bus_lagged_events.inc_by(now - lagged);
        lagged = now;
        let now = stats.events_lost.load(Ordering::Relaxed);
        metrics.subscriptions_events_lost.inc_by(now - lost);
        lost = now;
        metrics
            .bus_up
            .set(i64::from(bus.state() == BusState::Connected));
        let counters = [
            (&enrich.requests, &metrics.enrichment_requests),
            (&enrich.operations, &metrics.enrichment_operations),
            (&enrich.failed, &metrics.enrichment_failures),
            (&enrich.skipped, &metrics.enrichment_skipped),
        ];
        for (last, (source, counter)) in enriched.iter_mut().zip(counters) {
            let now = source.load(Ordering::Relaxed);
            counter.inc_by(now - *last);
            *last = now;
        }
    }
}
