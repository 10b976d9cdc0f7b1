//! The webhook: events POSTed by the upstream (SPEC section 4), verified,
//! validated as a whole batch, deduplicated and published to the bus.
//!
//! [`Webhook::handle`] reads in the order of the steps: the request's
//! route, its body, then verify → parse → topics → rate → publish. It is a
//! plain function of a request, callable without a socket; the composition
//! root serves it on the internal `webhook.listen` listener behind a tower
//! stack (request id, trace, body limit, body timeout).
//! Every refusal is a [`WebhookError`], answered by
//! [`crate::error::rescue_webhook`] with `{"error":{"code","message","index"?}}`;
//! any 4xx/5xx means nothing of the request reached the bus.

pub mod parse;
mod publish;
mod rate;
pub mod signature;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use serde_json::json;

use crate::bus::{Bus, BusError, Event, MAX_ID_BYTES};
use crate::config::{UnknownTopics, WebhookConfig};
use crate::http::body::{self, Body, BoxError, ReadError, TooLarge};
use crate::metrics::{Metrics, StatusLabel};
use parse::{Format, InvalidEvent};
use rate::EventRate;
use signature::{BadSecret, SignatureError, Verifier};

/// Why a webhook request was refused; [`crate::error::rescue_webhook`]
/// gives each its status and code.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(transparent)]
    InvalidEvent(#[from] InvalidEvent),
    #[error("invalid signature: {0}")]
    InvalidSignature(#[from] SignatureError),
    #[error("body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("Content-Type must be application/json or application/x-ndjson")]
    UnsupportedMediaType,
    #[error("no subscription field is fed by topic {topic:?}")]
    UnknownTopic { topic: String, index: Option<usize> },
    #[error("more than webhook_events_per_second events: retry after {} s", crate::layers::retry_after_secs(*.retry_after))]
    RateLimited { retry_after: std::time::Duration },
    #[error(
        "a request of {events} events is more than rate_limits.webhook_events_per_second allows at once ({burst}): split it"
    )]
    BatchOverRate { events: usize, burst: u32 },
    #[error("the event bus is unavailable")]
    BusUnavailable(#[source] BusError),
    #[error("not found")]
    NotFound,
    #[error("only POST is allowed")]
    MethodNotAllowed,
    #[error("cannot read the request body")]
    BodyRead(#[source] BoxError),
    #[error("the request body stalled for longer than webhook.body_timeout")]
    BodyTimeout,
}

impl WebhookError {
    /// The event of a batch the refusal is about.
    pub fn index(&self) -> Option<usize> {
        match self {
            Self::InvalidEvent(e) => e.index,
            Self::UnknownTopic { index, .. } => *index,
            _ => None,
        }
    }
}

impl From<TooLarge> for WebhookError {
    fn from(t: TooLarge) -> Self {
        Self::PayloadTooLarge { limit: t.limit }
    }
}

impl From<ReadError> for WebhookError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::TooLarge(t) => t.into(),
            ReadError::Stalled => Self::BodyTimeout,
            ReadError::Failed(e) => Self::BodyRead(e),
        }
    }
}

/// Counters for `/metrics` and `/status`.
#[derive(Debug, Default)]
pub struct WebhookStats {
    pub events_published: AtomicU64,
    pub duplicates: AtomicU64,
    pub dropped_unknown_topic: AtomicU64,
    pub refused: AtomicU64,
}

/// The webhook endpoint, built once by the composition root.
pub struct Webhook {
    path: String,
    /// Deduplicates ids too: the window is the bus's (`webhook.dedup_window`),
    /// so it holds across replicas that share a bus.
    bus: Arc<dyn Bus>,
    /// What a reload changes; each request reads it once.
    policy: ArcSwap<WebhookPolicy>,
    pub stats: WebhookStats,
    metrics: Option<Arc<Metrics>>,
    audit: crate::log::Audit,
}

/// The parts of the webhook a configuration reload replaces: the secret,
/// the known topics, `webhook.unknown_topics` and the events per second.
pub struct WebhookPolicy {
    verifier: Option<Verifier>,
    /// Topics some subscription field maps to.
    topics: HashSet<String>,
    unknown_topics: UnknownTopics,
    /// `rate_limits.webhook_events_per_second`, all senders together.
    /// Counted here rather than in a layer: only the parsed body says how
    /// many events a request carries.
    rate: Option<Arc<EventRate>>,
}

impl WebhookPolicy {
    /// Fails on a secret that is not one (not base64, empty).
    pub fn new(
        config: &WebhookConfig,
        topics: impl IntoIterator<Item = String>,
        per_second: Option<u32>,
    ) -> Result<Self, BadSecret> {
        Ok(Self {
            verifier: config
                .secret
                .as_ref()
                .map(|s| Verifier::new(&s.0))
                .transpose()?,
            topics: topics.into_iter().collect(),
            unknown_topics: config.unknown_topics,
            rate: per_second.and_then(EventRate::new).map(Arc::new),
        })
    }

    /// The same policy for `topics`.
    pub fn with_topics(mut self, topics: impl IntoIterator<Item = String>) -> Self {
        self.topics = topics.into_iter().collect();
        self
    }
}

impl Webhook {
    /// `topics` are the topics that feed subscription fields.
    /// `webhook.max_body_bytes` and `webhook.body_timeout` are the
    /// listener's layers (see `App::webhook_service`), not the handler's.
    pub fn new(
        config: &WebhookConfig,
        topics: impl IntoIterator<Item = String>,
        bus: Arc<dyn Bus>,
    ) -> Result<Self, BadSecret> {
        Ok(Self {
            path: config.path.clone(),
            bus,
            policy: ArcSwap::from_pointee(WebhookPolicy::new(config, topics, None)?),
            stats: WebhookStats::default(),
            metrics: None,
            audit: crate::log::Audit::default(),
        })
    }

    /// Accepts at most `per_second` events per second (a burst of as many).
    pub fn with_rate_limit(self, per_second: Option<u32>) -> Self {
        let policy = self.policy.load();
        self.policy.store(Arc::new(WebhookPolicy {
            verifier: policy.verifier.clone(),
            topics: policy.topics.clone(),
            unknown_topics: policy.unknown_topics,
            rate: per_second.and_then(EventRate::new).map(Arc::new),
        }));
        drop(policy);
        self
    }

    /// Applies a reloaded policy to the requests that follow; an unchanged
    /// rate keeps its bucket.
    pub fn apply(&self, mut policy: WebhookPolicy) {
        let running = self.policy.load();
        if let (Some(old), Some(new)) = (&running.rate, &policy.rate)
            && old.per_second() == new.per_second()
        {
            policy.rate = Some(old.clone());
        }
        drop(running);
        self.policy.store(Arc::new(policy));
    }

    /// Counts requests by status and events by topic in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Writes an audit line per request.
    pub fn with_audit(mut self, audit: crate::log::Audit) -> Self {
        self.audit = audit;
        self
    }

    /// Answers one request; never fails (refusals are responses).
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: http_body::Body,
        B::Error: Into<BoxError>,
    {
        let sender = req
            .extensions()
            .get::<crate::proxy::ClientConnection>()
            .filter(|_| self.audit.is_on())
            .map(|c| c.remote.ip().to_string())
            .unwrap_or_default();
        let mut accepted_events = 0;
        let resp = match self.try_handle(req).await {
            Ok(accepted) => {
                accepted_events = accepted["accepted"].as_u64().unwrap_or(0) as usize;
                crate::error::json_response(StatusCode::ACCEPTED, &accepted)
            }
            Err(e) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "webhook request refused");
                crate::error::rescue_webhook(&e)
            }
        };
        if let Some(m) = &self.metrics {
            let status = resp.status().as_u16();
            m.webhook_requests
                .get_or_create(&StatusLabel { status })
                .inc();
        }
        self.audit
            .webhook(&sender, resp.status().as_u16(), accepted_events);
        resp
    }

    /// The steps of one request, in order; the first refusal ends it.
    async fn try_handle<B>(&self, req: Request<B>) -> Result<serde_json::Value, WebhookError>
    where
        B: http_body::Body,
        B::Error: Into<BoxError>,
    {
        let format = self.route(&req)?;
        let (parts, body) = req.into_parts();
        let body = body::read_whole(body).await?;
        let policy = self.policy.load_full();
        policy.verify(&parts.headers, &body)?;
        let request_id = request_id(&parts.headers)?;
        let mut events = parse::parse(&body, format, request_id)?;
        let accepted = events.len();
        let batch = accepted > 1
            || body.trim_ascii_start().first() == Some(&b'[')
            || format == Format::Ndjson;
        policy.keep_known_topics(&mut events, batch, &self.stats)?;
        self.check_rate(&policy, events.len())?;
        let duplicates = self.publish(events, request_id).await?;
        Ok(json!({ "accepted": accepted, "duplicates": duplicates }))
    }

    /// Path, method and `Content-Type`: which body format to parse.
    fn route<B>(&self, req: &Request<B>) -> Result<Format, WebhookError> {
        if req.uri().path() != self.path {
            return Err(WebhookError::NotFound);
        }
        if req.method() != Method::POST {
            return Err(WebhookError::MethodNotAllowed);
        }
        req.headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(Format::from_content_type)
            .ok_or(WebhookError::UnsupportedMediaType)
    }

    /// `rate_limits.webhook_events_per_second` for `events` more events.
    fn check_rate(&self, policy: &WebhookPolicy, events: usize) -> Result<(), WebhookError> {
        let Some(rate) = &policy.rate else {
            return Ok(());
        };
        let checked = rate.check(events);
        if let (Err(WebhookError::RateLimited { .. }), Some(m)) = (&checked, &self.metrics) {
            m.refused(crate::metrics::Refusal::rate_limit_webhook);
        }
        checked
    }
}

impl WebhookPolicy {
    /// The Standard Webhooks signature, when `webhook.secret` is set.
    fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), WebhookError> {
        match &self.verifier {
            Some(v) => Ok(v.verify(headers, body, unix_now())?),
            None => Ok(()),
        }
    }

    /// Drops or refuses (`webhook.unknown_topics`) events no subscription
    /// field is fed by; `batch` says whether a refusal names an index.
    fn keep_known_topics(
        &self,
        events: &mut Vec<Event>,
        batch: bool,
        stats: &WebhookStats,
    ) -> Result<(), WebhookError> {
        let known = |t: &str| self.topics.contains(t);
        if self.unknown_topics == UnknownTopics::Reject {
            if let Some(i) = events.iter().position(|e| !known(&e.topic)) {
                return Err(WebhookError::UnknownTopic {
                    topic: events[i].topic.to_string(),
                    index: batch.then_some(i),
                });
            }
        } else {
            let before = events.len();
            events.retain(|e| known(&e.topic));
            stats
                .dropped_unknown_topic
                .fetch_add((before - events.len()) as u64, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// The `webhook-id` header: it names the whole request (SPEC section 4).
fn request_id(headers: &HeaderMap) -> Result<Option<&str>, InvalidEvent> {
    let Some(v) = headers.get("webhook-id") else {
        return Ok(None);
    };
    if v.len() > MAX_ID_BYTES {
        return Err(InvalidEvent {
            message: format!(
                "the webhook-id header is {} bytes long; at most {MAX_ID_BYTES} are allowed",
                v.len()
            ),
            index: None,
        });
    }
    v.to_str().map(Some).map_err(|_| InvalidEvent {
        message: "the webhook-id header must be visible ASCII".into(),
        index: None,
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::{Batch, BusState, BusSubscription, Cursor, MemoryBus, Published, Replay};
    use bytes::Bytes;
    use futures_util::future::BoxFuture;
    use http_body_util::{BodyExt, Full};
    use std::sync::atomic::AtomicBool;

    /// A bus that is down until told otherwise.
    struct FlakyBus {
        down: AtomicBool,
        inner: MemoryBus,
    }

    impl Bus for FlakyBus {
        fn publish_batch(&self, batch: Batch) -> BoxFuture<'_, Result<Published, BusError>> {
            if self.down.load(Ordering::Relaxed) {
                return Box::pin(std::future::ready(Err(BusError::Unavailable {
                    reason: "test".into(),
                })));
            }
            self.inner.publish_batch(batch)
        }
        fn subscribe(&self) -> Box<dyn BusSubscription> {
            self.inner.subscribe()
        }
        fn replay(
            &self,
            topic: Arc<str>,
            after: Cursor,
        ) -> BoxFuture<'static, Result<Replay, BusError>> {
            self.inner.replay(topic, after)
        }
        fn replay_since(
            &self,
            topic: Arc<str>,
            since: SystemTime,
        ) -> BoxFuture<'static, Result<Replay, BusError>> {
            self.inner.replay_since(topic, since)
        }
        fn state(&self) -> BusState {
            BusState::Connected
        }
        fn kind(&self) -> &'static str {
            "test"
        }
    }

    fn request(body: &str) -> Request<Full<Bytes>> {
        Request::post("/webhook")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap()
    }

    #[tokio::test]
    async fn bus_outage_is_503_with_retry_after_and_ids_stay_deliverable() {
        let bus = Arc::new(FlakyBus {
            down: AtomicBool::new(true),
            inner: MemoryBus::new(0).with_dedup(std::time::Duration::from_secs(60)),
        });
        let mut sub = bus.subscribe();
        let webhook =
            Webhook::new(&WebhookConfig::default(), ["t".to_string()], bus.clone()).unwrap();
        let body = r#"{"topic":"t","id":"e1","payload":1}"#;
        let res = webhook.handle(request(body)).await;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers()[header::RETRY_AFTER], "1");
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["error"]["code"], "BUS_UNAVAILABLE");
        assert!(sub.try_recv().is_none());
        bus.down.store(false, Ordering::Relaxed);
        // The retry is not mistaken for a duplicate.
        let res = webhook.handle(request(body)).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        assert!(sub.try_recv().is_some());
    }

    #[tokio::test]
    async fn wrong_path_and_method() {
        let bus = Arc::new(MemoryBus::new(0));
        let webhook = Webhook::new(&WebhookConfig::default(), ["t".to_string()], bus).unwrap();
        let mut req = request("{}");
        *req.uri_mut() = "/other".parse().unwrap();
        assert_eq!(webhook.handle(req).await.status(), StatusCode::NOT_FOUND);
        let mut req = request("{}");
        *req.method_mut() = Method::GET;
        assert_eq!(
            webhook.handle(req).await.status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
