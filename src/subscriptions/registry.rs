//! The registry: every live subscription, grouped by Subscription field and
//! then by the engine's [`GroupKey`] (plus the claims, when the field's
//! filter reads them), so that the dispatcher filters and projects once per
//! group. Groups are found by field, not by topic: which topic feeds a
//! field is the [`super::Routes`]' to say, so a reload that changes it
//! moves every live subscription of the field at once.
//!
//! It is the single owner of subscription lifetime: [`Registry::register`]
//! returns a [`SubscriptionHandle`] and dropping that handle is the one way
//! a subscription ends. When the server ends one (its document no longer
//! fits the schema, `allow` now refuses it, events it should have had are
//! gone) the registry queues an end marker ([`Ended`]) behind what was
//! queued for it; its session then drops the handle and tells the client.
//! Members are split into shards by connection so that dispatch work
//! spreads over worker threads while each connection still sees one
//! topic's events in order.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use serde_json::Value;

mod recheck;

use super::Route;
use super::enrich::{Credentials, FetchCredentials, Lane};
use super::outbox::{Delivery, Ended, Offer, Outbox};
use crate::bus::Cursor;
use crate::graphql::{GroupKey, PreparedSubscription, Schema};

use crate::subscriptions::filter::{GroupVars, PreparedEvent};
pub use recheck::Rechecked;

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

/// The groups of one field.
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
    /// Subscriptions ended because events they should have had are gone.
    pub events_lost: AtomicU64,
}

/// Live subscriptions, grouped for dispatch.
#[derive(Debug)]
pub struct Registry {
    shards: usize,
    /// Structural changes (a group appearing or disappearing) take the write
    /// lock; dispatch only clones a field's group list under the read lock.
    fields: RwLock<HashMap<Arc<str>, Groups>>,
    next_member: AtomicU64,
    next_connection: AtomicU64,
    /// The schema the groups were last re-checked against: a re-check with
    /// the same one skips re-validating every document.
    checked: Mutex<Option<Arc<Schema>>>,
    pub stats: RegistryStats,
}

/// The document a subscription was started with, kept per group so that a
/// changed schema can be checked against it.
#[derive(Debug)]
pub struct Document {
    pub query: String,
    pub operation_name: Option<String>,
    pub variables: serde_json::Map<String, Value>,
}

/// Identical subscriptions of one field.
#[derive(Debug)]
pub struct Group {
    id: GroupId,
    field: Arc<str>,
    pub(crate) prepared: Arc<PreparedSubscription>,
    /// The document of the member that created the group (the others'
    /// documents plan to the same projection).
    document: Arc<Document>,
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
    members: Box<[Mutex<Shard>]>,
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

/// A group's members on one shard, and what was last delivered to them.
#[derive(Debug, Default)]
struct Shard {
    members: HashMap<u64, Member>,
    /// Runs of events delivered to this shard's members so far.
    runs: u64,
    /// The cursor of the newest event delivered (`None` for enriched
    /// groups, whose completed payloads arrive without one).
    last: Option<Cursor>,
}

#[derive(Debug)]
struct Member {
    serial: u64,
    /// Wants the cursor of each event (`extensions.resume`).
    resume: bool,
    outbox: Outbox,
    /// Its connection's identity, for `allow` when a reload changes it.
    claims: Arc<Value>,
    /// [`Shard::runs`] when it joined: it received [`Shard::last`] only
    /// when runs were delivered since.
    since: u64,
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
    /// What it was prepared from.
    pub document: Arc<Document>,
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
        let removed = self.group.members[self.shard]
            .lock()
            .members
            .remove(&self.member);
        if removed.is_some_and(|m| m.resume) {
            self.group.resume_members.fetch_sub(1, Ordering::Relaxed);
        }
        let mut fields = self.registry.fields.write();
        if self.group.len.fetch_sub(1, Ordering::Relaxed) == 1
            && let Some(groups) = fields.get_mut(&self.group.field)
        {
            groups.remove(&self.group.id);
            if groups.is_empty() {
                fields.remove(&self.group.field);
            }
        }
        drop(fields);
        self.registry
            .stats
            .subscriptions
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Sizes, for tests and `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// Fields with live subscriptions.
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
            fields: RwLock::new(HashMap::new()),
            next_member: AtomicU64::new(0),
            next_connection: AtomicU64::new(0),
            checked: Mutex::new(None),
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
            document,
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
        let mut member = Member {
            serial,
            resume,
            outbox,
            claims: claims.clone(),
            since: 0,
        };
        let key = self.next_member.fetch_add(1, Ordering::Relaxed);
        let field: Arc<str> = Arc::from(prepared.field());
        let mut fields = self.fields.write();
        let groups = fields.entry(field.clone()).or_default();
        let group = groups
            .entry(id.clone())
            .or_insert_with(|| {
                Arc::new(Group {
                    id,
                    field,
                    vars: GroupVars::new(prepared.rule_args(), &claims),
                    prepared,
                    document,
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
        {
            let mut shard = group.members[slot.shard].lock();
            member.since = shard.runs;
            shard.members.insert(key, member);
        }
        drop(fields);
        self.stats.subscriptions.fetch_add(1, Ordering::Relaxed);
        SubscriptionHandle {
            registry: self.clone(),
            group,
            shard: slot.shard,
            member: key,
        }
    }

    /// The groups of `field` right now.
    pub fn groups(&self, field: &str) -> Vec<Arc<Group>> {
        self.fields
            .read()
            .get(field)
            .map(|g| g.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every group of every field.
    pub fn all_groups(&self) -> Vec<Arc<Group>> {
        self.fields
            .read()
            .values()
            .flat_map(|g| g.values().cloned())
            .collect()
    }

    pub fn sizes(&self) -> Sizes {
        let fields = self.fields.read();
        Sizes {
            topics: fields.len(),
            groups: fields.values().map(HashMap::len).sum(),
            subscriptions: self.stats.subscriptions.load(Ordering::Relaxed),
            connections: self.stats.connections.load(Ordering::Relaxed),
        }
    }

    /// Subscriptions per Subscription field, for `/status`.
    pub fn subscriptions_per_field(&self) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for groups in self.fields.read().values() {
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
            tracing::error!(field = %self.field, "projection is not UTF-8; event skipped");
            return None;
        }
        Some(payload)
    }

    /// Delivers one shared payload to every member (all shards): for
    /// enriched groups, whose payloads are completed off the planner.
    pub(crate) fn deliver_all(&self, payload: &Bytes, stats: &RegistryStats) {
        for shard in 0..self.members.len() {
            self.deliver_run(shard, &[(payload, None)], None, stats);
        }
    }

    /// Events this group's members should have had are gone: each member of
    /// `shard` is ended with [`Ended::EventsLost`] and the cursor of the
    /// last event delivered to it (none when it joined after that one).
    /// Called by the shard's worker, in order with its deliveries.
    pub(crate) fn end_lost(&self, shard: usize, stats: &RegistryStats) {
        let shard = self.members[shard].lock();
        for m in shard.members.values() {
            let last = shard.last.filter(|_| m.since < shard.runs);
            m.outbox.offer_end(m.serial, Ended::EventsLost(last));
        }
        stats
            .events_lost
            .fetch_add(shard.members.len() as u64, Ordering::Relaxed);
    }

    /// The group's `args` and `claims` for CEL.
    pub(crate) fn vars(&self) -> &GroupVars {
        &self.vars
    }

    /// Whether some member wants cursors (read once per event by the planner).
    pub(crate) fn has_resume_members(&self) -> bool {
        self.resume_members.load(Ordering::Relaxed) > 0
    }

    /// Queues the shared payloads of consecutive events of this group for
    /// each member of one shard; members that want cursors get each
    /// event's payload with its cursor instead. Never waits. Each
    /// member's payloads are queued with one offer, so the per-subscriber
    /// cost is paid per run, not per event. A payload is shared, not
    /// copied: each member's transport wraps it in its own envelope.
    /// `last` is the cursor of the run's last event, remembered per shard
    /// (not per member) for [`Self::end_lost`].
    pub(crate) fn deliver_run(
        &self,
        shard: usize,
        run: &[(&Bytes, Option<&(Cursor, Bytes)>)],
        last: Option<Cursor>,
        stats: &RegistryStats,
    ) {
        let mut shard = self.members[shard].lock();
        shard.runs += 1;
        if last.is_some() {
            shard.last = last;
        }
        let (mut delivered, mut dropped) = (0, 0);
        for m in shard.members.values() {
            let payloads = run.iter().map(|e| {
                let (payload, cursor) = pick(m.resume, e);
                Delivery {
                    serial: m.serial,
                    payload: payload.clone(),
                    cursor,
                    end: None,
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
        drop(shard);
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
