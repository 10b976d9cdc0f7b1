//! The registry: every live subscription, grouped by topic and then by the
//! engine's [`GroupKey`] (plus the claims, when the field's filter reads
//! them), so that the dispatcher filters and projects once per group.
//!
//! It is the single owner of subscription lifetime: [`Registry::register`]
//! returns a [`SubscriptionHandle`] and dropping that handle is the one way
//! a subscription ends. Members are split into shards by connection so that
//! dispatch work spreads over worker threads while each connection still
//! sees one topic's events in order.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use serde_json::Value;

use super::Route;
use super::enrich::{Credentials, FetchCredentials, Lane};
use super::outbox::{Delivery, Offer, Outbox};
use crate::bus::Cursor;
use crate::graphql::{GroupKey, PreparedSubscription};
use crate::subscriptions::filter::{GroupVars, PreparedEvent};

/// Identical subscriptions: same engine key, same root response key (the
/// shared bytes carry it, and the engine's key leaves the root alias out),
/// and the same claims when the filter depends on them (canonical JSON).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct GroupId {
    key: GroupKey,
    response_key: Box<str>,
    claims: Option<String>,
    /// For an enriched field: subscribers that may share one fetch (their
    /// `share_by` value, or their credentials).
    share: Option<String>,
}

/// The groups of one topic.
type Groups = HashMap<GroupId, Arc<Group>>;

/// Counters for `/metrics` and `/status`.
#[derive(Debug, Default)]
pub struct RegistryStats {
    pub connections: AtomicUsize,
    pub subscriptions: AtomicUsize,
    pub deliveries: AtomicU64,
    pub slow_consumers: AtomicU64,
    pub dropped: AtomicU64,
    /// Events the dispatcher lost because it fell behind the bus.
    pub lagged: AtomicU64,
}

/// Live subscriptions, grouped for dispatch.
#[derive(Debug)]
pub struct Registry {
    shards: usize,
    /// Structural changes (a group appearing or disappearing) take the write
    /// lock; dispatch only clones a topic's group list under the read lock.
    topics: RwLock<HashMap<Arc<str>, Groups>>,
    next_member: AtomicU64,
    next_connection: AtomicU64,
    pub stats: RegistryStats,
}

/// Identical subscriptions of one topic.
#[derive(Debug)]
pub struct Group {
    id: GroupId,
    topic: Arc<str>,
    pub(crate) prepared: Arc<PreparedSubscription>,
    pub(crate) route: Route,
    /// `args` and `claims` for the filter, converted once. The claims are
    /// the group's own only when the filter reads them (they are part of
    /// the group's id then); otherwise no evaluation looks at them.
    vars: GroupVars,
    /// Only changed under the registry's write lock.
    len: AtomicUsize,
    /// Members that want a cursor with each event (resume).
    resume_members: AtomicUsize,
    /// One member table per shard; a std-style mutex because nothing async
    /// happens while it is held.
    members: Box<[Mutex<HashMap<u64, Member>>]>,
    /// For an enriched field: the credentials its fetches use and the order
    /// in which their results are delivered.
    pub(crate) fetching: Option<Box<GroupFetch>>,
}

/// The fetch state of an enriched group.
#[derive(Debug)]
pub(crate) struct GroupFetch {
    /// Shared with the field's other groups of the same share value.
    pub credentials: Arc<Credentials>,
    pub lane: Lane,
}

#[derive(Debug)]
struct Member {
    serial: u64,
    /// Wants the cursor of each event (`extensions.resume`).
    resume: bool,
    outbox: Outbox,
}

/// One subscription to register.
#[derive(Debug)]
pub struct Subscriber {
    pub prepared: Arc<PreparedSubscription>,
    pub route: Route,
    /// The connection's identity, for filters that read `claims`.
    pub claims: Arc<Value>,
    /// Tags this subscription's deliveries in the connection's outbox.
    pub serial: u64,
    /// Deliver each event with its cursor in `payload.extensions.cursor`.
    pub resume: bool,
    pub outbox: Outbox,
    /// What the connection authenticates with, for enrichment fetches.
    pub credentials: FetchCredentials,
}

/// Registration of one connection: which shard its subscriptions live in.
#[derive(Debug)]
pub struct ConnectionSlot {
    registry: Arc<Registry>,
    shard: usize,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.registry
            .stats
            .connections
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl ConnectionSlot {
    pub fn shard(&self) -> usize {
        self.shard
    }
}

/// A live subscription; dropping it unsubscribes.
#[derive(Debug)]
pub struct SubscriptionHandle {
    registry: Arc<Registry>,
    group: Arc<Group>,
    shard: usize,
    member: u64,
}

impl SubscriptionHandle {
    /// The group this subscription is a member of.
    pub fn group(&self) -> &Arc<Group> {
        &self.group
    }
}

impl Drop for SubscriptionHandle {
    fn drop(&mut self) {
        let removed = self.group.members[self.shard].lock().remove(&self.member);
        if removed.is_some_and(|m| m.resume) {
            self.group.resume_members.fetch_sub(1, Ordering::Relaxed);
        }
        let mut topics = self.registry.topics.write();
        if self.group.len.fetch_sub(1, Ordering::Relaxed) == 1
            && let Some(groups) = topics.get_mut(&self.group.topic)
        {
            groups.remove(&self.group.id);
            if groups.is_empty() {
                topics.remove(&self.group.topic);
            }
        }
        drop(topics);
        self.registry
            .stats
            .subscriptions
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Sizes, for tests and `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    pub topics: usize,
    pub groups: usize,
    pub subscriptions: usize,
    pub connections: usize,
}

impl Registry {
    /// `shards` is how many dispatch workers there are (at least one).
    pub fn new(shards: usize) -> Arc<Self> {
        Arc::new(Self {
            shards: shards.max(1),
            topics: RwLock::new(HashMap::new()),
            next_member: AtomicU64::new(0),
            next_connection: AtomicU64::new(0),
            stats: RegistryStats::default(),
        })
    }

    pub fn shards(&self) -> usize {
        self.shards
    }

    /// Counts a connection and assigns it a shard.
    pub fn connect(self: &Arc<Self>) -> ConnectionSlot {
        let n = self.next_connection.fetch_add(1, Ordering::Relaxed);
        self.stats.connections.fetch_add(1, Ordering::Relaxed);
        ConnectionSlot {
            registry: self.clone(),
            shard: (n % self.shards as u64) as usize,
        }
    }

    /// Adds a subscription of the connection holding `slot`.
    pub fn register(
        self: &Arc<Self>,
        slot: &ConnectionSlot,
        sub: Subscriber,
    ) -> SubscriptionHandle {
        let Subscriber {
            prepared,
            route,
            claims,
            serial,
            resume,
            outbox,
            credentials,
        } = sub;
        let enrich = route.enrich.clone().filter(|_| prepared.fetch().is_some());
        let by_claims =
            route.rules.uses_claims() || enrich.as_ref().is_some_and(|e| e.uses_claims());
        let id = GroupId {
            key: prepared.group_key().clone(),
            response_key: prepared.response_key().into(),
            claims: by_claims.then(|| claims.to_string()),
            share: enrich
                .as_ref()
                .map(|e| e.share_key(&claims, prepared.rule_args(), &credentials)),
        };
        let fetch_credentials = match (&enrich, &id.share) {
            (Some(e), Some(share)) => Some(e.credentials_slot(share, credentials)),
            _ => None,
        };
        let member = Member {
            serial,
            resume,
            outbox,
        };
        let key = self.next_member.fetch_add(1, Ordering::Relaxed);
        let mut topics = self.topics.write();
        let groups = topics.entry(route.topic.clone()).or_default();
        let group = groups
            .entry(id.clone())
            .or_insert_with(|| {
                Arc::new(Group {
                    id,
                    topic: route.topic.clone(),
                    vars: GroupVars::new(prepared.rule_args(), &claims),
                    prepared,
                    route,
                    len: AtomicUsize::new(0),
                    resume_members: AtomicUsize::new(0),
                    members: (0..self.shards).map(|_| Mutex::default()).collect(),
                    fetching: fetch_credentials.map(|credentials| {
                        Box::new(GroupFetch {
                            credentials,
                            lane: Lane::default(),
                        })
                    }),
                })
            })
            .clone();
        group.len.fetch_add(1, Ordering::Relaxed);
        if resume {
            // Before the member is visible: the dispatcher never finds a
            // resume member in a group it thinks has none.
            group.resume_members.fetch_add(1, Ordering::Relaxed);
        }
        group.members[slot.shard].lock().insert(key, member);
        drop(topics);
        self.stats.subscriptions.fetch_add(1, Ordering::Relaxed);
        SubscriptionHandle {
            registry: self.clone(),
            group,
            shard: slot.shard,
            member: key,
        }
    }

    /// The groups listening to `topic` right now.
    pub fn groups(&self, topic: &str) -> Vec<Arc<Group>> {
        self.topics
            .read()
            .get(topic)
            .map(|g| g.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn sizes(&self) -> Sizes {
        let topics = self.topics.read();
        Sizes {
            topics: topics.len(),
            groups: topics.values().map(HashMap::len).sum(),
            subscriptions: self.stats.subscriptions.load(Ordering::Relaxed),
            connections: self.stats.connections.load(Ordering::Relaxed),
        }
    }

    /// Subscriptions per Subscription field, for `/status`.
    pub fn subscriptions_per_field(&self) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for groups in self.topics.read().values() {
            for g in groups.values() {
                *out.entry(g.prepared.field().to_owned()).or_default() +=
                    g.len.load(Ordering::Relaxed);
            }
        }
        out
    }
}

impl Group {
    /// Whether `event` passes this group's filter (evaluated once per group).
    pub fn matches(&self, event: &PreparedEvent<'_>) -> bool {
        self.route
            .rules
            .matches_prepared(event, self.prepared.rule_args(), &self.vars)
    }

    /// What this group's members are sent for `event`, if anything: the
    /// filter, then the projection onto their selection, validated as
    /// UTF-8 once here so that transports send it as text unchecked. The
    /// one way from an event to a payload, live (the dispatcher) or
    /// replayed (resume).
    pub fn payload(&self, event: &PreparedEvent<'_>, raw: &Value) -> Option<Bytes> {
        if !self.matches(event) {
            return None;
        }
        let payload = self.prepared.project(raw);
        if std::str::from_utf8(&payload).is_err() {
            tracing::error!(topic = %self.topic, "projection is not UTF-8; event skipped");
            return None;
        }
        Some(payload)
    }

    /// Delivers one shared payload to every member (all shards): for
    /// enriched groups, whose payloads are completed off the planner.
    pub(crate) fn deliver_all(&self, payload: &Bytes, stats: &RegistryStats) {
        for shard in 0..self.members.len() {
            self.deliver(shard, payload, None, stats);
        }
    }

    /// The group's `args` and `claims` for CEL.
    pub(crate) fn vars(&self) -> &GroupVars {
        &self.vars
    }

    /// Whether some member wants cursors (read once per event by the planner).
    pub(crate) fn has_resume_members(&self) -> bool {
        self.resume_members.load(Ordering::Relaxed) > 0
    }

    /// Queues the shared `payload` for each member of one shard; members
    /// that want cursors get `resume`'s payload instead. Never waits.
    pub(crate) fn deliver(
        &self,
        shard: usize,
        payload: &Bytes,
        resume: Option<&(Cursor, Bytes)>,
        stats: &RegistryStats,
    ) {
        self.deliver_run(shard, &[(payload, resume)], stats);
    }

    /// [`Self::deliver`] for consecutive events of this group at once: each
    /// member's payloads are queued with one offer, so the per-subscriber
    /// cost is paid per run, not per event. A payload is shared, not
    /// copied: each member's transport wraps it in its own envelope.
    pub(crate) fn deliver_run(
        &self,
        shard: usize,
        run: &[(&Bytes, Option<&(Cursor, Bytes)>)],
        stats: &RegistryStats,
    ) {
        let members = self.members[shard].lock();
        let (mut delivered, mut dropped) = (0, 0);
        for m in members.values() {
            let payloads = run.iter().map(|e| {
                let (payload, cursor) = pick(m.resume, e);
                Delivery {
                    serial: m.serial,
                    payload: payload.clone(),
                    cursor,
                }
            });
            match m.outbox.offer_all(run.len(), payloads) {
                Offer::Queued => delivered += run.len() as u64,
                Offer::Overflowed => {
                    stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
                    dropped += run.len() as u64;
                }
                Offer::Dropped => dropped += run.len() as u64,
            }
        }
        drop(members);
        stats.deliveries.fetch_add(delivered, Ordering::Relaxed);
        if dropped > 0 {
            stats.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
    }
}

/// The payload a member gets for one event: with the cursor when it resumes.
fn pick<'a>(
    resumes: bool,
    (payload, resume): &(&'a Bytes, Option<&'a (Cursor, Bytes)>),
) -> (&'a Bytes, Option<Cursor>) {
    match (resumes, resume) {
        (true, Some((c, p))) => (p, Some(*c)),
        _ => (payload, None),
    }
}
