//! The webhook: events POSTed by the upstream (SPEC section 4), verified,
//! validated as a whole batch, deduplicated and published to the bus.
//!
//! [`Webhook::handle`] is a plain function of a request, callable without a
//! socket; the composition root serves it on the internal `webhook.listen`
//! listener.
//! Every refusal is a response with `{"error":{"code","message","index"?}}`,
//! and any 4xx/5xx means nothing of the request reached the bus.

pub mod parse;
pub mod signature;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use serde_json::json;

use crate::bus::{Batch, Bus, BusError, DEADLINE_GRACE, MAX_ID_BYTES, PUBLISH_TIMEOUT, RequestKey};
use crate::config::{UnknownTopics, WebhookConfig};
use crate::metrics::{Metrics, StatusLabel, TopicLabel};
use parse::{Format, InvalidEvent};
use signature::{BadSecret, SignatureError, Verifier};

/// Why a webhook request was refused; each maps to one status and code.
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
    BodyRead,
    #[error("the request body stalled for longer than webhook.body_timeout")]
    BodyTimeout,
}

impl WebhookError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::InvalidEvent(_) | Self::BodyRead => (StatusCode::BAD_REQUEST, "INVALID_EVENT"),
            Self::BodyTimeout => (StatusCode::REQUEST_TIMEOUT, "BODY_TIMEOUT"),
            Self::InvalidSignature(_) => (StatusCode::UNAUTHORIZED, "INVALID_SIGNATURE"),
            Self::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
            Self::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE")
            }
            Self::UnknownTopic { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "UNKNOWN_TOPIC"),
            Self::RateLimited { .. } | Self::BatchOverRate { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED")
            }
            Self::BusUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "BUS_UNAVAILABLE"),
            Self::NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED"),
        }
    }

    fn index(&self) -> Option<usize> {
        match self {
            Self::InvalidEvent(e) => e.index,
            Self::UnknownTopic { index, .. } => *index,
            _ => None,
        }
    }

    /// The refusal as the response SPEC section 4 describes.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let (status, code) = self.status_and_code();
        let mut error = json!({ "code": code, "message": self.to_string() });
        if let Some(i) = self.index() {
            error["index"] = json!(i);
        }
        let mut resp = json_response(status, &json!({ "error": error }));
        match self {
            Self::BusUnavailable(_) | Self::BatchOverRate { .. } => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Self::RateLimited { retry_after } => {
                resp.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(crate::layers::retry_after_secs(retry_after)),
                );
            }
            Self::MethodNotAllowed => {
                resp.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("POST"));
            }
            _ => {}
        }
        resp
    }
}

impl Webhook {
    fn check_rate(&self, events: usize) -> Result<(), WebhookError> {
        let (Some((limiter, burst)), Some(n)) = (
            &self.rate,
            u32::try_from(events)
                .ok()
                .and_then(std::num::NonZeroU32::new),
        ) else {
            return Ok(());
        };
        use governor::clock::Clock;
        match limiter.check_n(n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => {
                if let Some(m) = &self.metrics {
                    m.refused(crate::metrics::Refusal::rate_limit_webhook);
                }
                Err(WebhookError::RateLimited {
                    retry_after: not_until.wait_time_from(limiter.clock().now()),
                })
            }
            Err(_) => Err(WebhookError::BatchOverRate {
                events,
                burst: *burst,
            }),
        }
    }
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
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
    verifier: Option<Verifier>,
    /// Topics some subscription field maps to.
    topics: HashSet<String>,
    unknown_topics: UnknownTopics,
    max_body_bytes: usize,
    /// `rate_limits.webhook_events_per_second`, all senders together.
    /// Counted here rather than in a layer: only the parsed body says how
    /// many events a request carries.
    rate: Option<(governor::DefaultDirectRateLimiter, u32)>,
    pub stats: WebhookStats,
    metrics: Option<Arc<Metrics>>,
}

impl Webhook {
    /// `topics` are the topics that feed subscription fields.
    pub fn new(
        config: &WebhookConfig,
        topics: impl IntoIterator<Item = String>,
        bus: Arc<dyn Bus>,
    ) -> Result<Self, BadSecret> {
        Ok(Self {
            path: config.path.clone(),
            bus,
            verifier: config
                .secret
                .as_ref()
                .map(|s| Verifier::new(&s.0))
                .transpose()?,
            topics: topics.into_iter().collect(),
            unknown_topics: config.unknown_topics,
            max_body_bytes: config.max_body_bytes,
            rate: None,
            stats: WebhookStats::default(),
            metrics: None,
        })
    }

    /// Accepts at most `per_second` events per second (a burst of as many).
    pub fn with_rate_limit(mut self, per_second: Option<u32>) -> Self {
        self.rate = per_second
            .and_then(crate::layers::per_second)
            .map(|q| (governor::RateLimiter::direct(q), per_second.unwrap_or(1)));
        self
    }

    /// Counts requests by status and events by topic in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Answers one request; never fails (refusals are responses).
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let resp = match self.try_handle(req).await {
            Ok(resp) => resp,
            Err(e) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "webhook request refused");
                e.into_response()
            }
        };
        if let Some(m) = &self.metrics {
            let status = resp.status().as_u16();
            m.webhook_requests
                .get_or_create(&StatusLabel { status })
                .inc();
        }
        resp
    }

    async fn try_handle<B>(&self, req: Request<B>) -> Result<Response<Full<Bytes>>, WebhookError>
    where
        B: Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if req.uri().path() != self.path {
            return Err(WebhookError::NotFound);
        }
        if req.method() != Method::POST {
            return Err(WebhookError::MethodNotAllowed);
        }
        let format = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(Format::from_content_type)
            .ok_or(WebhookError::UnsupportedMediaType)?;
        let too_large = WebhookError::PayloadTooLarge {
            limit: self.max_body_bytes,
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body_bytes as u64) {
            return Err(too_large);
        }
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, self.max_body_bytes).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large),
            Err(e) if e.is::<tower_http::timeout::TimeoutError>() => {
                return Err(WebhookError::BodyTimeout);
            }
            Err(_) => return Err(WebhookError::BodyRead),
        };
        if let Some(v) = &self.verifier {
            v.verify(&parts.headers, &body, unix_now())?;
        }
        let header_id = match parts.headers.get("webhook-id") {
            None => None,
            Some(v) if v.len() > MAX_ID_BYTES => {
                return Err(InvalidEvent {
                    message: format!(
                        "the webhook-id header is {} bytes long; at most {MAX_ID_BYTES} are allowed",
                        v.len()
                    ),
                    index: None,
                }
                .into());
            }
            Some(v) => Some(v.to_str().map_err(|_| InvalidEvent {
                message: "the webhook-id header must be visible ASCII".into(),
                index: None,
            })?),
        };
        let mut events = parse::parse(&body, format, header_id)?;
        let batch = events.len() > 1
            || body.trim_ascii_start().first() == Some(&b'[')
            || format == Format::Ndjson;
        let total = events.len();
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
            self.stats
                .dropped_unknown_topic
                .fetch_add((before - events.len()) as u64, Ordering::Relaxed);
        }
        self.check_rate(events.len())?;
        let mut duplicates = 0;
        if !events.is_empty() {
            let topics: Vec<Arc<str>> = match &self.metrics {
                Some(_) => events.iter().map(|e| e.topic.clone()).collect(),
                None => Vec::new(),
            };
            // A refused publish marks no id as seen (the bus promises it), so
            // a retry after this 503 is delivered; and nothing of it is
            // written or delivered after its deadline, so the 503 is final.
            let batch = Batch {
                request: header_id.filter(|h| !h.is_empty()).map(RequestKey::of),
                ..Batch::new(events)
            };
            // The buses stop waiting at the same moment; this bounds a bus
            // that does not.
            let published = tokio::time::timeout(
                PUBLISH_TIMEOUT + DEADLINE_GRACE,
                self.bus.publish_batch(batch),
            )
            .await
            .unwrap_or_else(|_| {
                Err(BusError::Unavailable {
                    reason: "no answer before the publish deadline".into(),
                })
            })
            .map_err(WebhookError::BusUnavailable)?;
            duplicates = published.duplicates();
            self.stats.events_published.fetch_add(
                (published.duplicate.len() - duplicates) as u64,
                Ordering::Relaxed,
            );
            if let Some(m) = &self.metrics {
                for (topic, dup) in topics.into_iter().zip(&published.duplicate) {
                    if !dup {
                        let topic = topic.to_string();
                        m.events_received.get_or_create(&TopicLabel { topic }).inc();
                    }
                }
            }
        }
        self.stats
            .duplicates
            .fetch_add(duplicates as u64, Ordering::Relaxed);
        Ok(json_response(
            StatusCode::ACCEPTED,
            &json!({ "accepted": total, "duplicates": duplicates }),
        ))
    }
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
    use crate::bus::{BusState, BusSubscription, Cursor, MemoryBus, Published, Replay};
    use futures_util::future::BoxFuture;
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
