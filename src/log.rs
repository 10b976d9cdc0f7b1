//! Logging helpers: an error written with its causes on one line, a limit
//! for log lines that would otherwise repeat once per event (one bad
//! expression or one down upstream must not flood the logs), and the audit
//! log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// `error: cause: cause` in one line.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// At most one line per period; the lines held back are counted.
#[derive(Debug)]
pub struct LogLimit {
    period: Duration,
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl Default for LogLimit {
    /// Once a minute.
    fn default() -> Self {
        Self::new(Duration::from_secs(60))
    }
}

impl LogLimit {
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(lines held back since the last one)` when a line may be
    /// written now; `None` (and one more held back) otherwise.
    pub fn admit(&self) -> Option<u64> {
        let now = Instant::now();
        let mut last = self.last.lock();
        if last.is_some_and(|t| now.duration_since(t) < self.period) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

/// The tracing target of audit lines: a filter directive of its own
/// (`log.audit = true` adds `subcar::audit=info` to `log.filter`).
pub const AUDIT_TARGET: &str = "subcar::audit";

/// `log.audit`: one structured line per connection admitted or refused,
/// per subscription started and ended, and per webhook request. Copied
/// into whatever writes them; off, it costs one branch.
#[derive(Debug, Clone, Copy, Default)]
pub struct Audit {
    on: bool,
}

impl Audit {
    pub fn new(on: bool) -> Self {
        Self { on }
    }

    /// Whether lines are written: callers skip building their fields when not.
    pub fn is_on(&self) -> bool {
        self.on
    }

    /// A client admitted (`reason` empty) or refused.
    pub fn connection(&self, admitted: bool, transport: &str, subject: &str, reason: &str) {
        if self.on {
            let outcome = if admitted { "admitted" } else { "refused" };
            tracing::info!(target: AUDIT_TARGET, audit = "connection", outcome, transport, subject, reason);
        }
    }

    /// A subscription started (`reason` empty) or ended, and why.
    pub fn subscription(
        &self,
        started: bool,
        transport: &str,
        subject: &str,
        field: &str,
        reason: &str,
    ) {
        if self.on {
            let outcome = if started { "started" } else { "ended" };
            tracing::info!(target: AUDIT_TARGET, audit = "subscription", outcome, transport, subject, field, reason);
        }
    }

    /// A webhook request answered `status` with `events` accepted.
    pub fn webhook(&self, subject: &str, status: u16, events: usize) {
        if self.on {
            tracing::info!(target: AUDIT_TARGET, audit = "webhook", subject, status, events);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_with_the_count_held_back() {
        let limit = LogLimit::new(Duration::from_millis(50));
        assert_eq!(limit.admit(), Some(0));
        assert_eq!(limit.admit(), None);
        assert_eq!(limit.admit(), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(limit.admit(), Some(2));
    }
}
