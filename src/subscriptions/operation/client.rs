//! [`Operations`]: the operations of one client (a socket, a stream), and
//! everything they hold: the connection's registry slot and outbox, its
//! credentials and claims, its subscriptions (registry handles), its
//! queries and mutations at the upstream and its replays in flight.

use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use http::HeaderMap;
use serde_json::{Map, Value, json};
use tokio::time::Sleep;

use super::resume::{Admit, Resuming};
use super::{Core, Ending, ExecuteError, OperationError, Request, Resume};
use crate::bus::{BusError, Cursor, Replay};
use crate::graphql::{GraphQLError, OperationKind, Prepared};
use crate::metrics::Refusal;
use crate::subscriptions::directory::{ClientInfo, Listed};
use crate::subscriptions::outbox::{Delivery, Inbox, Outbox, outbox};
use crate::subscriptions::registry::{ConnectionSlot, Document, Subscriber};
use crate::subscriptions::{FetchCredentials, SubscriptionHandle};
use crate::triggers::{Answer, Caller, Sent};

/// Live payloads a resuming subscription holds while its replay is
/// fetched, as a multiple of `limits.outbound_queue`; past it the client is
/// a slow consumer.
const RESUME_BUFFER_FACTOR: usize = 4;

type Single = BoxFuture<'static, (String, u64, Result<Bytes, ExecuteError>)>;
type ReplayDone = BoxFuture<'static, (String, u64, Result<Replay, BusError>)>;

/// An operation by the client's id.
enum Entry<T> {
    /// Its state is in [`Operations::live`].
    Subscription { serial: u64 },
    /// A query or mutation in flight at the upstream.
    Single { serial: u64, tag: T },
}

/// A running subscription.
struct Live<T> {
    serial: u64,
    id: String,
    tag: T,
    /// `Some` when it asked for cursors; `None` for most.
    resume: Option<Resuming>,
    /// Dropping it unsubscribes.
    handle: SubscriptionHandle,
}

/// What one client's operations hold; `T` is the transport's own value per
/// operation (its pre-built envelope), handed back with each [`Output`].
/// Dropping it ends every operation and the connection's count.
pub struct Operations<T> {
    core: Arc<Core>,
    slot: ConnectionSlot,
    outbox: Outbox,
    inbox: Inbox,
    /// Credentials forwarded with queries, mutations and enrichment fetches.
    headers: HeaderMap,
    claims: Arc<Value>,
    /// When the credential expires: the client ends then. A timer entry of
    /// the client's task, not a task of its own.
    expiry: Option<Pin<Box<Sleep>>>,
    by_id: HashMap<String, Entry<T>>,
    /// The running subscriptions. A vector: clients hold few subscriptions
    /// and a scan beats hashing on every delivery.
    live: Vec<Live<T>>,
    next_serial: u64,
    singles: FuturesUnordered<Single>,
    replays: FuturesUnordered<ReplayDone>,
    /// Its entry in `/status/connections`, once the transport described it.
    listed: Option<Listed>,
}

/// What woke a client's operations: pass it to [`Operations::take`].
pub struct Wake(Woken);

enum Woken {
    Slow,
    Expired,
    Delivery(Delivery),
    Single((String, u64, Result<Bytes, ExecuteError>)),
    Replay((String, u64, Result<Replay, BusError>)),
}

/// What a transport writes, in its own framing.
#[derive(Debug)]
pub enum Output<'a, T> {
    /// An execution result for the operation tagged `tag`: shared bytes,
    /// UTF-8 JSON; `cursor` for subscriptions that resume.
    Next {
        tag: &'a T,
        payload: &'a Bytes,
        cursor: Option<Cursor>,
    },
    /// A query or mutation answered: the operation is over.
    Complete { id: &'a str, tag: &'a T },
    /// The operation ended with an error (it is gone).
    Error {
        id: &'a str,
        tag: &'a T,
        error: &'a OperationError,
    },
}

/// An operation prepared for the current schema, ready to start.
pub struct PreparedOperation {
    request: Request,
    prepared: Prepared,
    /// A mutation that may trigger, judged once answered.
    triggers: bool,
}

impl PreparedOperation {
    pub fn is_subscription(&self) -> bool {
        matches!(self.prepared, Prepared::Subscription(_))
    }
}

/// Parses, validates, coerces and plans `request` against the current
/// schema (large documents off the async workers). Needs no client: a
/// request can be checked before the client that runs it is reached.
pub async fn prepare(
    core: Arc<Core>,
    request: Request,
) -> Result<PreparedOperation, OperationError> {
    let schema = core.schema.current();
    let (query, name) = (request.query.clone(), request.operation_name.clone());
    let variables = request.variables.clone().unwrap_or_default();
    let prepared = crate::graphql::offload::run(query.len(), move || {
        let prepared = schema.prepare_with(&query, name.as_deref(), &variables, &|field| {
            core.routes.resolve_config(field)
        })?;
        let triggers = matches!(prepared, Prepared::Passthrough(OperationKind::Mutation))
            && core.triggers.may_trigger(query.as_bytes());
        Ok((prepared, triggers))
    })
    .await;
    match prepared {
        Ok(Ok((prepared, triggers))) => Ok(PreparedOperation {
            request,
            prepared,
            triggers,
        }),
        Ok(Err(errors)) => Err(OperationError::Invalid(errors)),
        Err(_) => {
            tracing::error!("the engine panicked preparing an operation");
            Err(OperationError::Internal)
        }
    }
}

impl<T> Operations<T> {
    /// A new client; `headers` are those its upstream calls carry (built
    /// by [`crate::proxy::on_behalf_of`]). Counts a connection.
    pub fn new(core: Arc<Core>, headers: HeaderMap) -> Self {
        let (outbox, inbox) = outbox(core.limits.outbound_queue);
        Self {
            slot: core.registry.connect(),
            outbox,
            inbox,
            headers,
            claims: Arc::new(Value::Object(Map::new())),
            expiry: None,
            by_id: HashMap::new(),
            live: Vec::new(),
            next_serial: 0,
            singles: FuturesUnordered::new(),
            replays: FuturesUnordered::new(),
            listed: None,
            core,
        }
    }

    /// Who the client is: it is then listed in `/status/connections` and
    /// named in audit lines.
    pub fn describe(&mut self, client: ClientInfo) {
        self.listed = Some(self.core.directory.add(client, self.outbox.clone()));
    }

    /// An audit line about this client's subscription `field`.
    fn audit_subscription(&self, started: bool, field: &str, reason: &str) {
        if let Some(l) = self.listed.as_ref().filter(|_| self.core.audit.is_on()) {
            let transport = l.client().transport.name();
            self.core
                .audit
                .subscription(started, transport, &l.subject(), field, reason);
        }
    }

    /// A subscription ended: out of the listing, into the audit log.
    fn ended(&self, id: &str, reason: &str) {
        if let Some(field) = self.listed.as_ref().and_then(|l| l.unsubscribed(id)) {
            self.audit_subscription(false, &field, reason);
        }
    }

    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// The upstream-call headers, for a protocol that may add credentials
    /// before [`Self::authenticate`] (a socket's `connection_init`).
    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        &mut self.headers
    }

    /// Checks the credentials in the headers; the claims are then what
    /// `allow` and `filter` see, and the client ends when they expire.
    pub async fn authenticate(&mut self) -> Result<(), Ending> {
        let identity = match self.core.authenticator.authenticate(&self.headers).await {
            Ok(identity) => identity,
            Err(e) => {
                self.audit_connection(false, &e.to_string());
                return Err(Ending::Auth(e));
            }
        };
        if let Some(l) = &self.listed {
            let sub = identity.claims.get("sub").and_then(Value::as_str);
            l.set_subject(sub.map(str::to_owned));
        }
        self.audit_connection(true, "");
        if let Some(at) = identity.expires {
            let left = at
                .duration_since(std::time::SystemTime::now())
                .map_err(|_| Ending::TokenExpired)?;
            self.expiry = Some(Box::pin(tokio::time::sleep(left)));
        }
        self.claims = Arc::new(identity.claims);
        Ok(())
    }

    fn audit_connection(&self, admitted: bool, reason: &str) {
        if let Some(l) = self.listed.as_ref().filter(|_| self.core.audit.is_on()) {
            let transport = l.client().transport.name();
            self.core
                .audit
                .connection(admitted, transport, &l.subject(), reason);
        }
    }

    /// Whether an operation with this id is running.
    pub fn contains(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// Parses, validates, coerces and plans `request` ([`prepare`]).
    pub fn prepare(
        &self,
        request: Request,
    ) -> impl Future<Output = Result<PreparedOperation, OperationError>> + Send + 'static {
        prepare(self.core.clone(), request)
    }

    /// Starts a prepared operation as `id`: a subscription is authorized,
    /// counted, registered and (with `resume`) replayed from its cursor; a
    /// query or mutation is sent to the upstream with the client's
    /// credentials. Its outputs come through [`Self::take`]. An operation
    /// already running as `id` is stopped first.
    pub fn start(
        &mut self,
        id: &str,
        op: PreparedOperation,
        resume: Resume,
        tag: T,
    ) -> Result<(), OperationError> {
        self.stop(id);
        self.next_serial += 1;
        let serial = self.next_serial;
        match op.prepared {
            Prepared::Subscription(p) => {
                let field = p.field().to_owned();
                let route = self.core.routes.route(&field);
                if resume.is_on() && p.fetch().is_some() {
                    return Err(OperationError::ResumeUnsupported);
                }
                if !route.rules.allows(&self.claims, p.rule_args()) {
                    return Err(OperationError::Forbidden);
                }
                if self.live.len() >= self.core.limits.counts.max_subscriptions() {
                    self.core.metrics.refused(Refusal::rate_limit_subscription);
                    return Err(OperationError::TooManySubscriptions);
                }
                let topic = route.topic.clone();
                let r = op.request;
                let document = Arc::new(Document {
                    query: r.query,
                    operation_name: r.operation_name,
                    variables: r.variables.unwrap_or_default(),
                });
                // Registered before the replay is fetched: an event published
                // meanwhile is in the replay, or live, or both (then the
                // cursor drops the second copy), never in neither.
                let handle = self.core.registry.register(
                    &self.slot,
                    Subscriber {
                        prepared: p,
                        route,
                        claims: self.claims.clone(),
                        serial,
                        resume: resume.is_on(),
                        outbox: self.outbox.clone(),
                        credentials: FetchCredentials::from_headers(&self.headers),
                        document,
                    },
                );
                let fetch = match resume {
                    Resume::After(after) => Some(self.core.bus.replay(topic, after)),
                    Resume::Since(since) => Some(self.core.bus.replay_since(topic, since)),
                    Resume::Off | Resume::Now => None,
                };
                if let Some(fetch) = fetch {
                    let op_id = id.to_owned();
                    self.replays
                        .push(Box::pin(async move { (op_id, serial, fetch.await) }));
                }
                if let Some(l) = &self.listed {
                    l.subscribed(id, &field);
                }
                self.audit_subscription(true, &field, "");
                self.live.push(Live {
                    serial,
                    id: id.to_owned(),
                    tag,
                    resume: resume.is_on().then(|| Resuming::new(resume)),
                    handle,
                });
                self.by_id
                    .insert(id.to_owned(), Entry::Subscription { serial });
            }
            Prepared::Passthrough(_) => {
                let max = self.core.limits.max_inflight;
                if self.singles.len() >= max {
                    self.core.metrics.refused(Refusal::rate_limit_inflight);
                    return Err(OperationError::TooManyInFlight { max });
                }
                let r = op.request;
                let sent = op.triggers.then(|| Sent::Operation {
                    query: r.query.clone(),
                    operation_name: r.operation_name.clone(),
                    variables: r.variables.clone().unwrap_or_default(),
                });
                let body = json!({
                    "query": r.query,
                    "operationName": r.operation_name,
                    "variables": r.variables,
                    "extensions": r.extensions,
                });
                let run = self
                    .core
                    .executor
                    .execute(Bytes::from(body.to_string()), self.headers.clone());
                let op_id = id.to_owned();
                let triggers = sent.map(|sent| {
                    let schema = self.core.schema.current();
                    (
                        self.core.triggers.clone(),
                        schema,
                        sent,
                        self.claims.clone(),
                    )
                });
                self.singles.push(Box::pin(async move {
                    let result = run.await;
                    // Judged on a copy: the answer goes to the client as is.
                    if let (Some((triggers, schema, sent, claims)), Ok(body)) = (triggers, &result)
                    {
                        let answer = Answer::Complete(body.clone());
                        triggers.judge(schema, sent, answer, Caller::Claims(claims), None);
                    }
                    (op_id, serial, result)
                }));
                self.by_id
                    .insert(id.to_owned(), Entry::Single { serial, tag });
            }
        }
        Ok(())
    }

    /// Stops operation `id` (the client's `complete`): nothing more is
    /// written for it, payloads already queued included. Unknown ids are
    /// ignored.
    pub fn stop(&mut self, id: &str) {
        if let Some(Entry::Subscription { serial }) = self.by_id.remove(id) {
            self.live.retain(|l| l.serial != serial);
            self.ended(id, "stopped by the client");
        }
    }

    /// Ends every operation at once (the client is closing).
    pub fn stop_all(&mut self) {
        self.unlist_all();
        self.by_id.clear();
        self.live.clear();
        self.singles = FuturesUnordered::new();
        self.replays = FuturesUnordered::new();
    }

    /// Every subscription out of the listing, into the audit log.
    fn unlist_all(&self) {
        if let Some(l) = &self.listed {
            for field in l.take_all() {
                self.audit_subscription(false, &field, "the client closed");
            }
        }
    }

    /// Counts a client whose writes stalled as a slow consumer.
    pub fn writes_stalled(&self) -> Ending {
        self.core
            .registry
            .stats
            .slow_consumers
            .fetch_add(1, Ordering::Relaxed);
        Ending::WritesStalled
    }

    /// Resolves when the client's queue has overflowed (for a transport
    /// stuck in a write). Cancel-safe.
    pub fn overflowed(&self) -> impl Future<Output = ()> + Send + '_ {
        // Borrows only the latch: the client itself is not `Sync`.
        self.inbox.slow.raised()
    }

    /// Waits until there is something to write or the client must end.
    /// Cancel-safe: nothing is taken until it returns.
    pub async fn wake(&mut self) -> Wake {
        poll_fn(|cx| self.poll_wake(cx)).await
    }

    fn poll_wake(&mut self, cx: &mut Context<'_>) -> Poll<Wake> {
        if self.inbox.slow.poll_raised(cx).is_ready() {
            return Poll::Ready(Wake(Woken::Slow));
        }
        if let Some(at) = &mut self.expiry
            && at.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Wake(Woken::Expired));
        }
        // The rare ones before the deliveries, which may never pause.
        if !self.singles.is_empty()
            && let Poll::Ready(Some(r)) = self.singles.poll_next_unpin(cx)
        {
            return Poll::Ready(Wake(Woken::Single(r)));
        }
        if !self.replays.is_empty()
            && let Poll::Ready(Some(r)) = self.replays.poll_next_unpin(cx)
        {
            return Poll::Ready(Wake(Woken::Replay(r)));
        }
        match self.inbox.rx.poll_recv(cx) {
            Poll::Ready(Some(d)) => Poll::Ready(Wake(Woken::Delivery(d))),
            _ => Poll::Pending,
        }
    }

    /// Turns what woke the client into outputs, in order; after a delivery,
    /// also those queued behind it, `max` outputs at most. `Err` ends the
    /// client.
    pub fn take(
        &mut self,
        wake: Wake,
        max: usize,
        mut emit: impl FnMut(Output<'_, T>),
    ) -> Result<(), Ending> {
        match wake.0 {
            Woken::Slow => Err(Ending::SlowConsumer),
            Woken::Expired => Err(Ending::TokenExpired),
            Woken::Delivery(first) => self.deliveries(first, max, emit),
            Woken::Single((id, serial, result)) => {
                // Stopped by the client meanwhile, or the id was reused: drop it.
                let tag = match self.by_id.get(&id) {
                    Some(Entry::Single { serial: s, .. }) if *s == serial => {
                        match self.by_id.remove(&id) {
                            Some(Entry::Single { tag, .. }) => tag,
                            _ => unreachable!("just matched"),
                        }
                    }
                    _ => return Ok(()),
                };
                match answer(result) {
                    Ok(body) => {
                        emit(Output::Next {
                            tag: &tag,
                            payload: &body,
                            cursor: None,
                        });
                        emit(Output::Complete { id: &id, tag: &tag });
                    }
                    Err(error) => emit(Output::Error {
                        id: &id,
                        tag: &tag,
                        error: &error,
                    }),
                }
                Ok(())
            }
            Woken::Replay((id, serial, result)) => {
                self.replayed(&id, serial, result, emit);
                Ok(())
            }
        }
    }

    fn deliveries(
        &mut self,
        first: Delivery,
        max: usize,
        mut emit: impl FnMut(Output<'_, T>),
    ) -> Result<(), Ending> {
        let limit = self.core.limits.outbound_queue * RESUME_BUFFER_FACTOR;
        let mut next = Some(first);
        let mut emitted = 0;
        while let Some(mut d) = next.take() {
            if let Some(why) = d.end.take() {
                self.end(d.serial, *why, &mut emit);
                emitted += 1;
            // Not found: stopped by the client after it was queued.
            } else if let Some(live) = self.live.iter_mut().find(|l| l.serial == d.serial) {
                let d = match &mut live.resume {
                    None => Some(d),
                    Some(r) => match r.admit(d, limit) {
                        Admit::Send(d) => Some(d),
                        Admit::Hold => None,
                        Admit::Overflow => {
                            self.core
                                .registry
                                .stats
                                .slow_consumers
                                .fetch_add(1, Ordering::Relaxed);
                            return Err(Ending::SlowConsumer);
                        }
                    },
                };
                if let Some(d) = d {
                    emit(Output::Next {
                        tag: &live.tag,
                        payload: &d.payload,
                        cursor: d.cursor,
                    });
                    emitted += 1;
                }
            }
            if emitted < max {
                next = self.inbox.rx.try_recv().ok();
            }
        }
        Ok(())
    }

    /// The server ended subscription `serial` (see [`crate::subscriptions::Ended`]):
    /// it is unsubscribed and told why. Gone already: nothing to say.
    fn end(
        &mut self,
        serial: u64,
        why: crate::subscriptions::Ended,
        emit: &mut impl FnMut(Output<'_, T>),
    ) {
        let Some(i) = self.live.iter().position(|l| l.serial == serial) else {
            return;
        };
        let live = self.live.remove(i);
        self.by_id.remove(&live.id);
        let last = live.resume.as_ref().and_then(Resuming::last);
        let error = OperationError::ended(why, last);
        self.ended(&live.id, error.code().unwrap_or("error"));
        drop(live.handle);
        emit(Output::Error {
            id: &live.id,
            tag: &live.tag,
            error: &error,
        });
    }

    /// The missed events of a resuming subscription arrived: those that
    /// pass its filter, then the live ones held meanwhile that are newer;
    /// or the error that ends it.
    fn replayed(
        &mut self,
        id: &str,
        serial: u64,
        result: Result<Replay, BusError>,
        mut emit: impl FnMut(Output<'_, T>),
    ) {
        let Some(i) = self.live.iter().position(|l| l.serial == serial) else {
            // Stopped by the client meanwhile.
            return;
        };
        let live = &mut self.live[i];
        let resuming = live
            .resume
            .as_mut()
            .expect("a replay is fetched only while resuming");
        let error = match result {
            Ok(replay) => match resuming.replayed(live.handle.group(), replay) {
                Ok(events) => {
                    for (payload, cursor) in &events {
                        emit(Output::Next {
                            tag: &live.tag,
                            payload,
                            cursor: Some(*cursor),
                        });
                    }
                    return;
                }
                Err(e) => e,
            },
            Err(e) => OperationError::BusUnavailable(e),
        };
        let live = self.live.remove(i);
        self.by_id.remove(id);
        self.ended(id, error.code().unwrap_or("error"));
        emit(Output::Error {
            id: &live.id,
            tag: &live.tag,
            error: &error,
        });
    }
}

/// A query's or mutation's upstream response as the operation's outcome.
fn answer(result: Result<Bytes, ExecuteError>) -> Result<Bytes, OperationError> {
    let body = result.map_err(OperationError::UpstreamUnavailable)?;
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(o)) if o.contains_key("data") => Ok(body),
        Ok(Value::Object(mut o)) if matches!(o.get("errors"), Some(Value::Array(_))) => {
            let errors = match o.remove("errors") {
                Some(Value::Array(list)) => list.into_iter().map(upstream_error).collect(),
                _ => Vec::new(),
            };
            Err(OperationError::Upstream(errors))
        }
        _ => Err(OperationError::UpstreamInvalid),
    }
}

/// An upstream error entry, kept as close to what it sent as the type allows.
fn upstream_error(v: Value) -> GraphQLError {
    let message = v
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("upstream error")
        .to_owned();
    let mut e = GraphQLError::new(message);
    if let Some(Value::Object(ext)) = v.get("extensions") {
        e.extensions = Some(ext.clone());
    }
    if let Some(Value::Array(path)) = v.get("path") {
        e.path = path.clone();
    }
    e
}

/// A client that goes without `stop_all` (its task ended) still says its
/// subscriptions ended.
impl<T> Drop for Operations<T> {
    fn drop(&mut self) {
        self.unlist_all();
    }
}
