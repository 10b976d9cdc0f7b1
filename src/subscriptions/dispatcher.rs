//! The dispatcher: bus events to connection outboxes.
//!
//! One planner task reads the bus in batches and, per event and per group,
//! evaluates the filter once and projects the payload once. The resulting
//! `(group, bytes)` list goes, in order, to one worker task per registry
//! shard, which only wraps the shared bytes into each member's envelope and
//! offers it to the member's outbox. Events of a topic therefore reach each
//! connection in publish order, and the per-subscriber work runs on every
//! worker thread.
//!
//! Which groups an event goes to is read from the [`Routes`] at each event
//! (topic → fields), so a reload that moves a field to another topic moves
//! its live subscriptions with it. When the bus says events were lost
//! ([`BusItem::Lagged`]), every group that may have had one is ended
//! through the same workers, behind what they already queued, so each
//! member learns the cursor of the last event it got (`EVENTS_LOST`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::mpsc;

use crate::shutdown::Shutdown;
use crate::subscriptions::filter::PreparedEvent;

use super::Routes;
use super::enrich::{Enricher, FieldEnrichment, Planned};
use super::registry::{Group, Registry};
use crate::bus::{BusItem, BusSubscription, Cursor};

/// Events taken from the bus at once; bounds the latency added by batching
/// to one batch of work.
const MAX_BATCH: usize = 256;
/// Batches queued per worker before the planner waits (and the bus buffers).
const WORKER_QUEUE: usize = 64;

/// One group's share of one event, or its end.
enum Job {
    Event {
        group: Arc<Group>,
        payload: Bytes,
        /// For members that asked for cursors: the same payload with
        /// `"extensions":{"cursor":…}`, built once per group, only when the
        /// group has such members, so that the others pay nothing for resume.
        resume: Option<(Cursor, Bytes)>,
        cursor: Cursor,
    },
    /// Events the group should have had are gone: its members end.
    Lost(Arc<Group>),
}

impl Job {
    fn group(&self) -> &Arc<Group> {
        match self {
            Job::Event { group, .. } | Job::Lost(group) => group,
        }
    }
}

/// The jobs planned from one read of the bus, shared by every worker.
struct Batch {
    jobs: Vec<Job>,
    /// When the first of its events came off the bus.
    received: Instant,
    /// Workers that have not finished it; the last one records the latency.
    remaining: AtomicUsize,
}

/// Handle to the running dispatcher.
#[derive(Debug, Clone)]
pub struct Dispatcher;

impl Dispatcher {
    /// Starts the planner and one worker per registry shard; they stop at
    /// shutdown or when the bus closes. `outbound_queue` is the per-connection
    /// queue size: workers yield to the sessions after a quarter of it, so a
    /// burst of events never fills a queue its reader is draining, while
    /// frames still leave in large batches (one write each). `latency`
    /// records, per batch, the time from its first event leaving the bus
    /// to its last frame queued for a subscriber.
    pub fn spawn(
        registry: Arc<Registry>,
        routes: Arc<Routes>,
        bus: Box<dyn BusSubscription>,
        shutdown: &Shutdown,
        outbound_queue: usize,
        latency: Histogram,
        enricher: Arc<Enricher>,
    ) -> Self {
        let yield_every = (outbound_queue / 4).max(1);
        let mut workers = Vec::with_capacity(registry.shards());
        for shard in 0..registry.shards() {
            let (tx, rx) = mpsc::channel::<Arc<Batch>>(WORKER_QUEUE);
            workers.push(tx);
            let latency = latency.clone();
            shutdown.spawn(worker(shard, registry.clone(), rx, yield_every, latency));
        }
        let planner = Planner {
            registry,
            routes,
            enricher,
            tasks: shutdown.clone(),
        };
        shutdown.spawn(plan(planner, bus, workers));
        Self
    }
}

/// What the planner reads and feeds.
struct Planner {
    registry: Arc<Registry>,
    routes: Arc<Routes>,
    enricher: Arc<Enricher>,
    tasks: Shutdown,
}

async fn plan(
    planner: Planner,
    mut bus: Box<dyn BusSubscription>,
    workers: Vec<mpsc::Sender<Arc<Batch>>>,
) {
    let cancel = planner.tasks.token().clone();
    loop {
        let first = tokio::select! {
            _ = cancel.cancelled() => break,
            item = bus.recv() => match item {
                Some(item) => item,
                None => break,
            },
        };
        let received = Instant::now();
        let mut jobs = Vec::new();
        planner.plan_item(first, &mut jobs);
        for _ in 1..MAX_BATCH {
            match bus.try_recv() {
                Some(item) => planner.plan_item(item, &mut jobs),
                None => break,
            }
        }
        if jobs.is_empty() {
            continue;
        }
        let batch = Arc::new(Batch {
            jobs,
            received,
            remaining: AtomicUsize::new(workers.len()),
        });
        for w in &workers {
            // A worker only fails to receive when it is gone (shutdown).
            let _ = w.send(batch.clone()).await;
        }
    }
}

impl Planner {
    /// The groups `topic` feeds now; every group for `None`.
    fn groups(&self, topic: Option<&str>) -> Vec<Arc<Group>> {
        let Some(topic) = topic else {
            return self.registry.all_groups();
        };
        match self.routes.fields_of(topic) {
            Some(fields) if fields.len() == 1 => self.registry.groups(&fields[0]),
            Some(fields) => fields
                .iter()
                .flat_map(|f| self.registry.groups(f))
                .collect(),
            None => Vec::new(),
        }
    }

    fn plan_item(&self, item: BusItem, jobs: &mut Vec<Job>) {
        let (event, cursor) = match item {
            BusItem::Event(e, c) => (e, c),
            BusItem::Lagged { missed, topic } => return self.lost(missed, topic.as_deref(), jobs),
        };
        self.plan_event(&event, cursor, jobs);
    }

    /// Events were lost to this replica: counted and logged, and every
    /// subscription that may have had one ends (`EVENTS_LOST`).
    fn lost(&self, missed: u64, topic: Option<&str>, jobs: &mut Vec<Job>) {
        let registry = &self.registry;
        registry
            .stats
            .lagged
            .fetch_add(missed, std::sync::atomic::Ordering::Relaxed);
        let groups = self.groups(topic);
        tracing::warn!(
            missed,
            topic = topic.unwrap_or("(any)"),
            groups = groups.len(),
            "dispatcher fell behind the bus; events lost; the subscriptions that may have missed them end with EVENTS_LOST"
        );
        jobs.extend(groups.into_iter().map(Job::Lost));
    }

    fn plan_event(&self, event: &Arc<crate::bus::Event>, cursor: Cursor, jobs: &mut Vec<Job>) {
        let (registry, enricher, tasks) = (&self.registry, &self.enricher, &self.tasks);
        let prepared = PreparedEvent::new(&event.payload);
        let mut enriched: Vec<(Arc<FieldEnrichment>, Vec<Planned>)> = Vec::new();
        for group in self.groups(Some(&event.topic)) {
            if let (Some(field), Some(_)) = (&group.route.enrich, &group.fetching) {
                if !group.matches(&prepared) {
                    continue;
                }
                let args = field.args(&prepared, group.vars());
                let planned = Planned {
                    group: group.clone(),
                    args,
                };
                match enriched.iter_mut().find(|(f, _)| Arc::ptr_eq(f, field)) {
                    Some((_, list)) => list.push(planned),
                    None => enriched.push((field.clone(), vec![planned])),
                }
                continue;
            }
            let Some(payload) = group.payload(&prepared, &event.payload) else {
                continue;
            };
            let resume = group
                .has_resume_members()
                .then(|| (cursor, with_cursor(&payload, cursor)));
            jobs.push(Job::Event {
                group,
                payload,
                resume,
                cursor,
            });
        }
        for (field, planned) in enriched {
            enricher.submit(&field, event, planned, registry, tasks);
        }
    }
}

/// `{"data":…}` → `{"data":…,"extensions":{"cursor":"…"}}`: a projection is
/// always a JSON object, so its closing brace is replaced. Live and
/// replayed events both get their cursor here.
pub(crate) fn with_cursor(payload: &[u8], cursor: Cursor) -> Bytes {
    let body = payload.strip_suffix(b"}").unwrap_or(payload);
    let mut out = Vec::with_capacity(body.len() + 48);
    out.extend_from_slice(body);
    out.extend_from_slice(br#","extensions":{"cursor":""#);
    out.extend_from_slice(cursor.to_string().as_bytes());
    out.extend_from_slice(br#""}}"#);
    Bytes::from(out)
}

async fn worker(
    shard: usize,
    registry: Arc<Registry>,
    mut rx: mpsc::Receiver<Arc<Batch>>,
    yield_every: usize,
    latency: Histogram,
) {
    while let Some(batch) = rx.recv().await {
        let jobs = &batch.jobs;
        let mut run = Vec::new();
        let mut since_yield = 0;
        let mut i = 0;
        while i < jobs.len() {
            let group = jobs[i].group();
            if let Job::Lost(_) = &jobs[i] {
                group.end_lost(shard, &registry.stats);
                i += 1;
                continue;
            }
            // Consecutive events of one group go to each member at once.
            let end = jobs[i..]
                .iter()
                .take(yield_every)
                .position(|j| matches!(j, Job::Lost(_)) || !Arc::ptr_eq(j.group(), group))
                .map_or((i + yield_every).min(jobs.len()), |n| i + n);
            run.clear();
            let mut last = None;
            for j in &jobs[i..end] {
                if let Job::Event {
                    payload,
                    resume,
                    cursor,
                    ..
                } = j
                {
                    run.push((payload, resume.as_ref()));
                    last = Some(*cursor);
                }
            }
            group.deliver_run(shard, &run, last, &registry.stats);
            since_yield += end - i;
            i = end;
            // Let the sessions drain what was just queued: a burst of events
            // then spreads over time instead of piling up in one outbox.
            if since_yield >= yield_every {
                since_yield = 0;
                tokio::task::yield_now().await;
            }
        }
        if batch.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            latency.observe(batch.received.elapsed().as_secs_f64());
        }
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::{Bus, Event, MemoryBus};
    use crate::graphql::{Prepared, Schema};
    use crate::subscriptions::{Ended, Routes, outbox::outbox, registry::Subscriber};
    use serde_json::{Map, json};

    struct NoUpstream;

    impl crate::subscriptions::enrich::UpstreamFetch for NoUpstream {
        fn post(
            &self,
            _: Bytes,
            _: http::HeaderMap,
        ) -> futures_util::future::BoxFuture<
            'static,
            Result<(http::StatusCode, Bytes), crate::subscriptions::enrich::FetchError>,
        > {
            Box::pin(async {
                Err(crate::subscriptions::enrich::FetchError::new(
                    std::io::Error::other("no upstream in this test"),
                ))
            })
        }
    }

    fn doc() -> Arc<crate::subscriptions::Document> {
        Arc::new(crate::subscriptions::Document {
            query: String::new(),
            operation_name: None,
            variables: Map::new(),
        })
    }

    fn prepare(schema: &Schema, q: &str) -> Arc<crate::graphql::PreparedSubscription> {
        match schema.prepare(q, None, &Map::new()).unwrap() {
            Prepared::Subscription(p) => p,
            Prepared::Passthrough(_) => unreachable!(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fans_out_in_order_and_cleans_up() {
        let schema = Schema::build("type Subscription { a: Int b: Int }", None).unwrap();
        let routes = Routes::new(&[], ["a".to_string(), "b".to_string()]).unwrap();
        let registry = Registry::new(2);
        let bus = MemoryBus::new(0);
        let shutdown = Shutdown::new();
        let latency = Histogram::new([0.001, 1.0]);
        Dispatcher::spawn(
            registry.clone(),
            Arc::new(Routes::new(&[], ["a".to_string(), "b".to_string()]).unwrap()),
            bus.subscribe(),
            &shutdown,
            1000,
            latency.clone(),
            Arc::new(Enricher::new(
                Arc::new(NoUpstream),
                false,
                std::time::Duration::from_secs(1),
            )),
        );

        let pa = prepare(&schema, "subscription { a }");
        let pb = prepare(&schema, "subscription { b }");
        let mut conns = Vec::new();
        for i in 0..10 {
            let slot = registry.connect();
            let (out, inbox) = outbox(1000);
            let p = if i % 2 == 0 { &pa } else { &pb };
            let sub = Subscriber {
                prepared: p.clone(),
                route: routes.route(p.field()),
                claims: Arc::new(json!({})),
                serial: i,
                resume: false,
                outbox: out,
                credentials: Default::default(),
                document: doc(),
            };
            let h = registry.register(&slot, sub);
            conns.push((slot, h, inbox, p.field().to_owned()));
        }
        assert_eq!(registry.sizes().groups, 2);
        let events = (0..100)
            .map(|n| Event {
                topic: if n % 2 == 0 { "a" } else { "b" }.into(),
                id: None,
                payload: json!(n),
            })
            .collect();
        bus.publish(events).await.unwrap();
        for (i, (_, _, inbox, field)) in conns.iter_mut().enumerate() {
            let start = if field == "a" { 0 } else { 1 };
            for n in (start..100).step_by(2) {
                let d = inbox.rx.recv().await.unwrap();
                assert_eq!(d.serial, i as u64);
                let v: serde_json::Value = serde_json::from_slice(&d.payload).unwrap();
                assert_eq!(v, json!({"data": {field.clone(): n}}));
            }
        }
        drop(conns);
        let s = registry.sizes();
        assert_eq!(
            (s.topics, s.groups, s.subscriptions, s.connections),
            (0, 0, 0, 0)
        );
        shutdown.trigger();
    }

    /// The bus as a script: the test says what the dispatcher reads.
    struct Scripted(mpsc::UnboundedReceiver<BusItem>);

    impl BusSubscription for Scripted {
        fn recv(&mut self) -> futures_util::future::BoxFuture<'_, Option<BusItem>> {
            Box::pin(self.0.recv())
        }

        fn try_recv(&mut self) -> Option<BusItem> {
            self.0.try_recv().ok()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lost_events_end_each_member_behind_what_it_got_with_its_last_cursor() {
        let schema = Schema::build("type Subscription { a: Int }", None).unwrap();
        let routes = Arc::new(Routes::new(&[], ["a".to_string()]).unwrap());
        // One shard: its worker has delivered what `early` received before
        // `late` joins.
        let registry = Registry::new(1);
        let (tx, rx) = mpsc::unbounded_channel();
        let shutdown = Shutdown::new();
        Dispatcher::spawn(
            registry.clone(),
            routes.clone(),
            Box::new(Scripted(rx)),
            &shutdown,
            100,
            Histogram::new([1.0]),
            Arc::new(Enricher::new(
                Arc::new(NoUpstream),
                false,
                std::time::Duration::from_secs(1),
            )),
        );
        let p = prepare(&schema, "subscription { a }");
        let member = |serial| {
            let slot = registry.connect();
            let (out, inbox) = outbox(100);
            let h = registry.register(
                &slot,
                Subscriber {
                    prepared: p.clone(),
                    route: routes.route("a"),
                    claims: Arc::new(json!({})),
                    serial,
                    resume: false,
                    outbox: out,
                    credentials: Default::default(),
                    document: doc(),
                },
            );
            (slot, h, inbox)
        };
        let event = |n: u64| {
            let e = Event {
                topic: "a".into(),
                id: None,
                payload: json!(n),
            };
            BusItem::Event(Arc::new(e), Cursor::seq(n))
        };
        let mut early = member(1);
        for n in [1, 2] {
            tx.send(event(n)).unwrap();
        }
        for _ in 0..2 {
            assert!(early.2.rx.recv().await.unwrap().end.is_none());
        }
        let mut late = member(2);
        tx.send(BusItem::Lagged {
            missed: 3,
            topic: None,
        })
        .unwrap();
        tx.send(event(6)).unwrap();
        let end = early.2.rx.recv().await.unwrap();
        assert_eq!(
            end.end.map(|e| *e),
            Some(Ended::EventsLost(Some(Cursor::seq(2))))
        );
        let end = late.2.rx.recv().await.unwrap();
        assert_eq!(
            end.end.map(|e| *e),
            Some(Ended::EventsLost(None)),
            "it got nothing"
        );
        assert_eq!(registry.stats.events_lost.load(Ordering::Relaxed), 2);
        assert_eq!(registry.stats.lagged.load(Ordering::Relaxed), 3);
        shutdown.trigger();
    }

    #[tokio::test]
    async fn overflow_marks_slow_consumer_once() {
        let schema = Schema::build("type Subscription { a: Int }", None).unwrap();
        let routes = Routes::new(&[], ["a".to_string()]).unwrap();
        let registry = Registry::new(1);
        let p = prepare(&schema, "subscription { a }");
        let slot = registry.connect();
        let (out, inbox) = outbox(2);
        let _h = registry.register(
            &slot,
            Subscriber {
                prepared: p.clone(),
                route: routes.route("a"),
                claims: Arc::new(json!({})),
                serial: 1,
                resume: false,
                outbox: out,
                credentials: Default::default(),
                document: doc(),
            },
        );
        let group = registry.groups("a").pop().unwrap();
        for _ in 0..5 {
            let payload = Bytes::from_static(b"{}");
            group.deliver_run(0, &[(&payload, None)], None, &registry.stats);
        }
        assert!(inbox.slow.is_raised());
        assert_eq!(
            registry
                .stats
                .slow_consumers
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }
}
