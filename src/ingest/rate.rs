//! `rate_limits.webhook_events_per_second`: events, not requests, counted
//! once a body is parsed, for all senders together.

use std::num::NonZeroU32;

use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, RateLimiter};

use super::WebhookError;

/// One bucket of `per_second` events with a burst of as many.
pub(super) struct EventRate {
    limiter: DefaultDirectRateLimiter,
    burst: u32,
}

impl EventRate {
    /// `None` for 0: no limit.
    pub(super) fn new(per_second: u32) -> Option<Self> {
        let quota = crate::layers::per_second(per_second)?;
        Some(Self {
            limiter: RateLimiter::direct(quota),
            burst: per_second,
        })
    }

    /// The events per second it allows.
    pub(super) fn per_second(&self) -> u32 {
        self.burst
    }

    /// Takes `events` from the bucket, all or none: `RateLimited` with the
    /// wait when they do not fit now, `BatchOverRate` when they never can.
    pub(super) fn check(&self, events: usize) -> Result<(), WebhookError> {
        let Some(n) = u32::try_from(events).ok().and_then(NonZeroU32::new) else {
            return Ok(());
        };
        match self.limiter.check_n(n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(WebhookError::RateLimited {
                retry_after: not_until.wait_time_from(self.limiter.clock().now()),
            }),
            Err(_) => Err(WebhookError::BatchOverRate {
                events,
                burst: self.burst,
            }),
        }
    }
}
