//! Fetching from the upstream for enriched events, off the planner, and
//! delivering each group's completion in its turn.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt, Shared, join_all};
use http::{HeaderMap, StatusCode};
use serde_json::{Map, Value};

use super::lane::Ticket;
use super::{FetchCredentials, FieldEnrichment};
use crate::bus::Event;
use crate::graphql::fetch::FetchResponse;
use crate::shutdown::Shutdown;
use crate::subscriptions::Registry;
use crate::subscriptions::registry::Group;

/// Operations per batched request at most.
const MAX_BATCH: usize = 32;

/// Sends enrichment requests to the upstream.
pub trait UpstreamFetch: Send + Sync + 'static {
    /// POSTs a GraphQL body (one operation or a JSON array of them).
    fn post(
        &self,
        body: Bytes,
        headers: HeaderMap,
    ) -> BoxFuture<'static, Result<(StatusCode, Bytes), FetchError>>;
}

/// Why an enrichment request got no HTTP answer (unreachable, timeout,
/// a broken response); its text reaches the subscriber's error.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct FetchError(pub Box<dyn std::error::Error + Send + Sync>);

impl FetchError {
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Box::new(e))
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
        registry: &Arc<Registry>,
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
        Err(e) => vec![Answer::Failed(e.to_string()); n],
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
    registry: Arc<Registry>,
    stats: Arc<EnrichStats>,
) {
    let policy = field.policy();
    let each = items.into_iter().map(|mut item| {
        let call = item.source.as_ref().ok().map(|(c, _)| calls[*c].clone());
        let event = &event;
        let registry = &registry;
        let stats = &stats;
        let field = &field;
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
                Answer::Failed(why) => {
                    field.log_failure(why);
                    FetchResponse::Failed(why)
                }
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
