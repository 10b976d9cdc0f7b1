//! The last step of a webhook request: its events handed to the bus as one
//! batch, within the publish deadline, counted once the bus answered.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::bus::{Batch, BusError, DEADLINE_GRACE, Event, PUBLISH_TIMEOUT, RequestKey};
use crate::metrics::TopicLabel;

use super::{Webhook, WebhookError};

impl Webhook {
    /// Publishes `events` (none is fine: nothing to do) under the request's
    /// `webhook-id`; the number of duplicates on success.
    pub(super) async fn publish(
        &self,
        events: Vec<Event>,
        request_id: Option<&str>,
    ) -> Result<usize, WebhookError> {
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
                request: request_id.filter(|h| !h.is_empty()).map(RequestKey::of),
                ..Batch::new(events)
            };
            // The buses stop waiting at the same moment; this bounds a bus
            // that does not. It stays here rather than in a timeout layer:
            // the deadline is the publish's, not the body read's.
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
        Ok(duplicates)
    }
}
