//! Enrichment: events that carry only a key, completed from the upstream
//! with each subscriber's own rights (`[subscriptions.resolve]`).
//!
//! Subscribers of an enriched field are grouped as usual and further by
//! their `share_by` value (default: their credentials), so one group is one
//! upstream fetch per event. The planner evaluates the query field's
//! arguments per group and hands the event's groups to [`Enricher::submit`],
//! which takes each group's place in its [`Lane`] at once and then fetches
//! off the planner:
//!
//! - identical requests of one event (same body, same credentials) are sent
//!   once;
//! - with `upstream.batching`, requests with the same credentials are sent
//!   as one JSON-array request (a request carries one set of credentials,
//!   so subscribers of different rights are never batched together);
//! - at most `resolve.max_concurrency` requests per field are in flight,
//!   each within `upstream.timeout`;
//! - a group delivers event n+1 only after event n, though their fetches
//!   overlap; a slow fetch holds back only its own group.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt, Shared, join_all};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use parking_lot::Mutex;
use serde_json::{Map, Value};
use tokio::sync::{Semaphore, oneshot};

use super::registry::Group;
use crate::bus::Event;
use crate::config::ResolveConfig;
use crate::graphql::fetch::{FetchResponse, Policy};
use crate::graphql::filter::{Expression, FilterError, GroupVars, PreparedEvent};
use crate::shutdown::Shutdown;

/// Operations per batched request at most.
const MAX_BATCH: usize = 32;

/// The headers that carry a connection's identity to the upstream.
#[derive(Debug, Default, Clone, PartialEq, Eq, Hash)]
pub struct FetchCredentials {
    pub authorization: Option<HeaderValue>,
    pub cookie: Option<HeaderValue>,
}

impl FetchCredentials {
    pub fn from_headers(headers: &HeaderMap) -> Self {
        Self {
            authorization: headers.get(header::AUTHORIZATION).cloned(),
            cookie: headers.get(header::COOKIE).cloned(),
        }
    }

    fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = &self.authorization {
            h.insert(header::AUTHORIZATION, v.clone());
        }
        if let Some(v) = &self.cookie {
            h.insert(header::COOKIE, v.clone());
        }
        h
    }

    /// A text standing for these credentials in a group's identity.
    fn key(&self) -> String {
        let text = |v: &Option<HeaderValue>| {
            v.as_ref()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default()
        };
        format!(
            "credentials:{}\n{}",
            text(&self.authorization),
            text(&self.cookie)
        )
    }
}

/// The compiled `[subscriptions.resolve]` of one field.
#[derive(Debug)]
pub struct FieldEnrichment {
    pub config: ResolveConfig,
    field: String,
    args: Vec<(String, Expression)>,
    share_by: Option<Expression>,
    limit: Arc<Semaphore>,
}

impl FieldEnrichment {
    pub fn compile(field: &str, config: &ResolveConfig) -> Result<Self, FilterError> {
        let args = config
            .args
            .iter()
            .map(|(name, source)| {
                Expression::compile(field, &format!("resolve.args.{name}"), source)
                    .map(|e| (name.clone(), e))
            })
            .collect::<Result<_, _>>()?;
        let share_by = config
            .share_by
            .as_deref()
            .map(|s| Expression::compile(field, "resolve.share_by", s))
            .transpose()?;
        Ok(Self {
            config: config.clone(),
            field: field.to_owned(),
            args,
            share_by,
            limit: Arc::new(Semaphore::new(config.max_concurrency)),
        })
    }

    pub fn policy(&self) -> Policy {
        Policy {
            on_null: self.config.on_null,
            prefer: self.config.prefer,
        }
    }

    /// Whether the arguments read `claims`: then subscribers with different
    /// claims cannot share a group.
    pub fn uses_claims(&self) -> bool {
        self.args.iter().any(|(_, e)| e.uses_claims())
    }

    /// Which subscribers may share this subscriber's fetches: its
    /// `share_by` value, or its credentials (also when `share_by` fails,
    /// the safe side: sharing with nobody of other credentials).
    pub fn share_key(
        &self,
        claims: &Value,
        args: &Map<String, Value>,
        credentials: &FetchCredentials,
    ) -> String {
        let Some(expr) = &self.share_by else {
            return credentials.key();
        };
        match expr.eval(claims, args) {
            Ok(v) => format!("share_by:{v}"),
            Err(e) => {
                tracing::warn!(
                    field = %self.field,
                    expression = %expr.source(),
                    "resolve.share_by failed ({e}); this subscriber shares fetches only with the same credentials"
                );
                credentials.key()
            }
        }
    }

    /// The query field's arguments for one event and group.
    pub(crate) fn args(
        &self,
        event: &PreparedEvent<'_>,
        vars: &GroupVars,
    ) -> Result<Map<String, Value>, String> {
        self.args
            .iter()
            .map(|(name, expr)| {
                expr.eval_event(event, vars)
                    .map(|v| (name.clone(), v))
                    .map_err(|e| format!("resolve.args.{name} = {:?} failed: {e}", expr.source()))
            })
            .collect()
    }
}

/// Delivery order of one group's enriched events: each event takes a
/// ticket when planned and delivers after the previous ticket is done.
#[derive(Debug, Default)]
pub(crate) struct Lane {
    state: Mutex<LaneState>,
}

#[derive(Debug, Default)]
struct LaneState {
    last: u64,
    /// Fires when the newest ticket is done; `None` when no ticket is out.
    tail: Option<oneshot::Receiver<()>>,
}

pub(crate) struct Ticket {
    seq: u64,
    previous: Option<oneshot::Receiver<()>>,
    done: oneshot::Sender<()>,
}

impl Lane {
    fn ticket(&self) -> Ticket {
        let (done, rx) = oneshot::channel();
        let mut s = self.state.lock();
        s.last += 1;
        Ticket {
            seq: s.last,
            previous: s.tail.replace(rx),
            done,
        }
    }

    fn finish(&self, ticket: Ticket) {
        let _ = ticket.done.send(());
        let mut s = self.state.lock();
        if s.last == ticket.seq {
            // Nobody queued behind this ticket: its receiver is the tail.
            s.tail = None;
        }
    }
}

impl Ticket {
    async fn turn(&mut self) {
        if let Some(previous) = self.previous.take() {
            // An error means the previous delivery was abandoned: go on.
            let _ = previous.await;
        }
    }
}

/// Sends enrichment requests to the upstream.
pub trait UpstreamFetch: Send + Sync + 'static {
    /// POSTs a GraphQL body (one operation or a JSON array of them).
    fn post(
        &self,
        body: Bytes,
        headers: HeaderMap,
    ) -> BoxFuture<'static, Result<(StatusCode, Bytes), String>>;
}

impl UpstreamFetch for crate::proxy::Upstream {
    fn post(
        &self,
        body: Bytes,
        headers: HeaderMap,
    ) -> BoxFuture<'static, Result<(StatusCode, Bytes), String>> {
        let upstream = self.clone();
        Box::pin(async move {
            upstream
                .post_graphql(body, &headers)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct EnrichStats {
    /// HTTP requests sent to the upstream.
    pub requests: AtomicU64,
    /// Operations they carried.
    pub operations: AtomicU64,
    /// Operations without a usable answer (upstream down, timeout, garbage).
    pub failed: AtomicU64,
    /// Deliveries left out because the upstream answered null or forbidden.
    pub skipped: AtomicU64,
}

/// Completes enriched events; shared by the dispatcher's planner.
pub struct Enricher {
    upstream: Arc<dyn UpstreamFetch>,
    batching: bool,
    /// How long a fetch may wait for a `max_concurrency` slot.
    wait: Duration,
    stats: Arc<EnrichStats>,
}

impl std::fmt::Debug for Enricher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enricher")
            .field("batching", &self.batching)
            .finish_non_exhaustive()
    }
}

/// One group's share of one enriched event.
pub(crate) struct Planned {
    pub group: Arc<Group>,
    /// The query field's arguments, or why they could not be computed.
    pub args: Result<Map<String, Value>, String>,
}

struct Item {
    group: Arc<Group>,
    ticket: Ticket,
    /// Which request (and which operation in it) answers this group.
    source: Result<(usize, usize), String>,
}

/// One upstream answer for one operation.
#[derive(Debug, Clone)]
enum Answer {
    Response(Value),
    Forbidden,
    Failed(String),
}

type Call = Shared<BoxFuture<'static, Arc<Vec<Answer>>>>;

impl Enricher {
    /// `wait` bounds the time a fetch waits for a `max_concurrency` slot
    /// (`upstream.timeout`): with a stalled upstream, events fail fast
    /// instead of piling up.
    pub fn new(upstream: Arc<dyn UpstreamFetch>, batching: bool, wait: Duration) -> Self {
        Self {
            upstream,
            batching,
            wait,
            stats: Arc::default(),
        }
    }

    pub fn stats(&self) -> Arc<EnrichStats> {
        self.stats.clone()
    }

    /// Takes each group's turn for `event` now (the planner's order is the
    /// delivery order) and completes and delivers it in the background.
    pub(crate) fn submit(
        &self,
        field: &Arc<FieldEnrichment>,
        event: &Arc<Event>,
        planned: Vec<Planned>,
        registry: &Arc<super::Registry>,
        tasks: &Shutdown,
    ) {
        let mut requests: Vec<(Bytes, FetchCredentials)> = Vec::new();
        let mut seen: HashMap<(Bytes, FetchCredentials), usize> = HashMap::new();
        let mut items = Vec::with_capacity(planned.len());
        for Planned { group, args } in planned {
            let Some(fetching) = &group.fetching else {
                continue;
            };
            let ticket = fetching.lane.ticket();
            let source = args.and_then(|args| {
                let query = group
                    .prepared
                    .fetch()
                    .ok_or_else(|| "the subscription has no upstream query".to_owned())?;
                let key = (query.body(&args), fetching.credentials.lock().clone());
                let next = requests.len();
                let i = *seen.entry(key.clone()).or_insert(next);
                if i == next {
                    requests.push(key);
                }
                Ok(i)
            });
            items.push((group, ticket, source));
        }
        let (calls, place) = self.calls(field, requests);
        let items = items
            .into_iter()
            .map(|(group, ticket, source)| Item {
                group,
                ticket,
                source: source.map(|i| place[i]),
            })
            .collect();
        let work = deliver(
            field.clone(),
            event.clone(),
            items,
            calls,
            registry.clone(),
            self.stats.clone(),
        );
        // Tracked, and dropped at shutdown: once the realtime path stops
        // there is nobody left to deliver to.
        let cancel = tasks.token().clone();
        tasks.spawn(async move {
            tokio::select! {
                () = work => {}
                () = cancel.cancelled() => {}
            }
        });
    }

    /// The HTTP requests for `requests` (one each, or batched by
    /// credentials), started lazily and shared by the groups they answer;
    /// `place[i]` is (request, operation) of `requests[i]`.
    fn calls(
        &self,
        field: &Arc<FieldEnrichment>,
        requests: Vec<(Bytes, FetchCredentials)>,
    ) -> (Vec<Call>, Vec<(usize, usize)>) {
        let mut place = vec![(0, 0); requests.len()];
        let mut batches: Vec<(FetchCredentials, Vec<(usize, Bytes)>)> = Vec::new();
        for (i, (body, credentials)) in requests.into_iter().enumerate() {
            let open = self
                .batching
                .then(|| {
                    batches
                        .iter()
                        .position(|(c, ops)| *c == credentials && ops.len() < MAX_BATCH)
                })
                .flatten();
            match open {
                Some(b) => batches[b].1.push((i, body)),
                None => batches.push((credentials, vec![(i, body)])),
            }
        }
        let calls = batches
            .into_iter()
            .enumerate()
            .map(|(c, (credentials, ops))| {
                for (n, (i, _)) in ops.iter().enumerate() {
                    place[*i] = (c, n);
                }
                let bodies: Vec<Bytes> = ops.into_iter().map(|(_, b)| b).collect();
                let batched = self.batching;
                let upstream = self.upstream.clone();
                let limit = field.limit.clone();
                let stats = self.stats.clone();
                let wait = self.wait;
                async move {
                    let n = bodies.len();
                    let Ok(Ok(_permit)) = tokio::time::timeout(wait, limit.acquire_owned()).await
                    else {
                        stats.failed.fetch_add(n as u64, Ordering::Relaxed);
                        let why = format!(
                            "resolve.max_concurrency fetches were in flight for {wait:?}; this one was not sent"
                        );
                        return Arc::new(vec![Answer::Failed(why); n]);
                    };
                    Arc::new(
                        fetch(&*upstream, batched, bodies, credentials.headers(), &stats).await,
                    )
                }
                .boxed()
                .shared()
            })
            .collect();
        (calls, place)
    }
}

/// One HTTP request for `bodies` (a JSON array when `batched`); one answer
/// per body.
async fn fetch(
    upstream: &dyn UpstreamFetch,
    batched: bool,
    bodies: Vec<Bytes>,
    headers: HeaderMap,
    stats: &EnrichStats,
) -> Vec<Answer> {
    let n = bodies.len();
    let body = if batched {
        let mut out = Vec::with_capacity(bodies.iter().map(|b| b.len() + 1).sum::<usize>() + 1);
        out.push(b'[');
        for (i, b) in bodies.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b);
        }
        out.push(b']');
        Bytes::from(out)
    } else {
        bodies.into_iter().next().unwrap_or_default()
    };
    stats.requests.fetch_add(1, Ordering::Relaxed);
    stats.operations.fetch_add(n as u64, Ordering::Relaxed);
    let answers = match upstream.post(body, headers).await {
        Err(e) => vec![Answer::Failed(e); n],
        Ok((StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, _)) => vec![Answer::Forbidden; n],
        // Whatever its body says, a server error tells nothing about the
        // entity: the subscriber is told rather than skipped.
        Ok((status, _)) if status.is_server_error() => {
            vec![Answer::Failed(format!("the upstream answered status {status}")); n]
        }
        Ok((status, body)) => match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Array(list)) if batched && list.len() == n => {
                list.into_iter().map(Answer::Response).collect()
            }
            Ok(v) if !batched && v.is_object() => vec![Answer::Response(v)],
            Ok(_) if batched => vec![
                Answer::Failed(format!(
                    "the upstream did not answer a batch of {n} with as many responses (status {status})"
                ));
                n
            ],
            _ => vec![
                Answer::Failed(format!(
                    "the upstream answered status {status} without a GraphQL response"
                ));
                n
            ],
        },
    };
    let failed = answers
        .iter()
        .filter(|a| matches!(a, Answer::Failed(_)))
        .count();
    if failed > 0 {
        stats.failed.fetch_add(failed as u64, Ordering::Relaxed);
    }
    answers
}

/// Waits for each group's answer and turn, then delivers its completion.
async fn deliver(
    field: Arc<FieldEnrichment>,
    event: Arc<Event>,
    items: Vec<Item>,
    calls: Vec<Call>,
    registry: Arc<super::Registry>,
    stats: Arc<EnrichStats>,
) {
    let policy = field.policy();
    let each = items.into_iter().map(|mut item| {
        let call = item.source.as_ref().ok().map(|(c, _)| calls[*c].clone());
        let event = &event;
        let registry = &registry;
        let stats = &stats;
        async move {
            let answers = match call {
                Some(call) => Some(call.await),
                None => None,
            };
            let unplaced;
            let answer = match (&item.source, &answers) {
                (Ok((_, op)), Some(a)) => &a[*op],
                (Err(why), _) => {
                    unplaced = Answer::Failed(why.clone());
                    &unplaced
                }
                (Ok(_), None) => unreachable!("a call exists for every placed request"),
            };
            let response = match answer {
                Answer::Response(v) => FetchResponse::Response(v),
                Answer::Forbidden => FetchResponse::Forbidden,
                Answer::Failed(why) => FetchResponse::Failed(why),
            };
            let payload = item
                .group
                .prepared
                .complete(response, &event.payload, policy);
            item.ticket.turn().await;
            match payload {
                Some(p) if std::str::from_utf8(&p).is_ok() => {
                    item.group.deliver_all(&p, &registry.stats);
                }
                Some(_) => {
                    tracing::error!(topic = %event.topic, "completion is not UTF-8; skipped")
                }
                None => {
                    stats.skipped.fetch_add(1, Ordering::Relaxed);
                }
            }
            if let Some(f) = &item.group.fetching {
                f.lane.finish(item.ticket);
            }
        }
    });
    join_all(each).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_lane_delivers_in_ticket_order_and_empties() {
        let lane = Arc::new(Lane::default());
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        // Later tickets finish their "fetch" first.
        for n in 0..5u64 {
            let mut ticket = lane.ticket();
            let (lane, order) = (lane.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50 - n * 10)).await;
                ticket.turn().await;
                order.lock().push(n);
                lane.finish(ticket);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock(), vec![0, 1, 2, 3, 4]);
        assert!(
            lane.state.lock().tail.is_none(),
            "nothing waits: no state kept"
        );
    }

    #[tokio::test]
    async fn an_abandoned_ticket_does_not_block_the_next() {
        let lane = Lane::default();
        let first = lane.ticket();
        let mut second = lane.ticket();
        drop(first);
        tokio::time::timeout(Duration::from_secs(1), second.turn())
            .await
            .expect("the second ticket's turn comes");
        lane.finish(second);
        assert!(lane.state.lock().tail.is_none());
    }

    #[test]
    fn share_keys_follow_share_by_or_credentials() {
        let config = |share_by: Option<&str>| ResolveConfig {
            query_field: "q".into(),
            args: Default::default(),
            share_by: share_by.map(str::to_owned),
            on_null: Default::default(),
            prefer: Default::default(),
            max_concurrency: 1,
        };
        let alice = FetchCredentials {
            authorization: Some(HeaderValue::from_static("Bearer a")),
            cookie: None,
        };
        let bob = FetchCredentials {
            authorization: Some(HeaderValue::from_static("Bearer b")),
            cookie: None,
        };
        let args = Map::new();
        let by_role = FieldEnrichment::compile("f", &config(Some("claims.role"))).unwrap();
        let ops = serde_json::json!({"role": "ops"});
        assert_eq!(
            by_role.share_key(&ops, &args, &alice),
            by_role.share_key(&ops, &args, &bob)
        );
        assert_ne!(
            by_role.share_key(&ops, &args, &alice),
            by_role.share_key(&serde_json::json!({"role": "dev"}), &args, &alice)
        );
        // A share_by that fails shares by credentials only.
        let none = serde_json::json!({});
        assert_ne!(
            by_role.share_key(&none, &args, &alice),
            by_role.share_key(&none, &args, &bob)
        );
        let by_credentials = FieldEnrichment::compile("f", &config(None)).unwrap();
        assert_ne!(
            by_credentials.share_key(&ops, &args, &alice),
            by_credentials.share_key(&ops, &args, &bob)
        );
        assert_eq!(
            by_credentials.share_key(&ops, &args, &alice),
            by_credentials.share_key(&none, &args, &alice.clone())
        );
    }
}
