//! The drain: how a running subcar stops, one method per phase, called in
//! order by [`crate::app::Bound::run`].
//!
//! The process's tasks live in three [`Shutdown`] groups that stop one after
//! the other:
//!
//! 1. **public**: the public listener, its requests and upgrades, and the
//!    upkeep behind them (background introspection, JWKS refresh, the
//!    upstream probe). Triggered from outside (SIGTERM, a test).
//! 2. **realtime**: sessions, the dispatcher, the webhook listener, the bus
//!    and the metrics sampler. It outlives the public drain so subscribers
//!    keep receiving events while requests finish.
//! 3. **admin**: the admin listener and the SIGHUP reload, last, so probes
//!    and scrapers can watch the drain to its end.

use std::time::Duration;

use tokio::time::Instant;

use super::health::Health;
use crate::shutdown::Shutdown;
use crate::subscriptions::Registry;
use crate::transport::upgrade::CLOSE_SPREAD;

/// After its close is due, a socket has this long to take the close frame
/// (a session gives it that long, plus a margin for the task to finish).
const CLOSE_GRACE: Duration =
    crate::transport::session::CLOSE_DEADLINE.saturating_add(Duration::from_millis(500));

/// Admin requests answer at once; this only bounds a scrape caught mid-way.
const ADMIN_GRACE: Duration = Duration::from_secs(1);

/// How often the drain looks whether the last subscriber has left.
const SOCKETS_POLL: Duration = Duration::from_millis(50);

/// The three task groups and the order they stop in.
pub struct Drain {
    public: Shutdown,
    realtime: Shutdown,
    admin: Shutdown,
    /// `server.drain_timeout`: how long requests and subscribers get.
    grace: Duration,
}

/// What the drain got done in time; [`Drain::exit`] logs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Every request and upgrade of the public listener finished.
    pub requests: bool,
    /// Every session, the dispatcher, the webhook and the bus stopped.
    pub sockets: bool,
}

impl Drain {
    /// `public` is the group whose trigger starts the drain.
    pub fn new(public: Shutdown, grace: Duration) -> Self {
        Self {
            public,
            realtime: Shutdown::new(),
            admin: Shutdown::new(),
            grace,
        }
    }

    /// The public listener's group: stops first.
    pub fn public(&self) -> &Shutdown {
        &self.public
    }

    /// Sessions, dispatcher, webhook, bus and sampler: stop second.
    pub fn realtime(&self) -> &Shutdown {
        &self.realtime
    }

    /// The admin listener's group: stops last.
    pub fn admin(&self) -> &Shutdown {
        &self.admin
    }

    /// Resolves once the drain is asked for. Cancel-safe.
    pub async fn requested(&self) {
        self.public.triggered().await
    }

    /// Phase 1: readiness turns false at once, so orchestrators route new
    /// traffic elsewhere. The public accept loops have stopped by now (they
    /// watch the same token) and new upgrades are refused. Returns when the
    /// grace ends.
    pub fn stop_accepting(&self, health: &Health) -> Instant {
        health.set_draining();
        Instant::now() + self.grace
    }

    /// Phase 2: requests in flight get until `ends` to finish, and
    /// subscribers may leave on their own until then. Returns whether every
    /// request finished.
    pub async fn wait_with_grace(&self, ends: Instant, registry: &Registry) -> bool {
        let requests_done = self.public.drained(self.grace).await;
        let connections = || {
            registry
                .stats
                .connections
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        while connections() > 0 && Instant::now() < ends {
            tokio::time::sleep(SOCKETS_POLL).await;
        }
        if connections() > 0 {
            tracing::info!(
                sockets = connections(),
                "drain time is up: closing open sockets with 1001"
            );
        }
        requests_done
    }

    /// Phase 3: sessions are told to close (`1001`, spread over
    /// [`CLOSE_SPREAD`]), and the dispatcher, the webhook listener and the
    /// bus stop with them. Returns whether all of them stopped in time.
    pub async fn close_sessions(&self) -> bool {
        self.realtime.trigger();
        self.realtime.drained(CLOSE_SPREAD + CLOSE_GRACE).await
    }

    /// Phase 3b: HTTP streams (SSE, multipart) are requests of the public
    /// listener that end only when their sessions are told to close: their
    /// connections get a moment to deliver the last bytes (a multipart
    /// fatal part). Returns whether every request has finished now.
    pub async fn finish_streams(&self) -> bool {
        self.public.drained(CLOSE_GRACE).await
    }

    /// Phase 4: says how the drain went, then stops the admin listener and
    /// the reload task and waits for them.
    pub async fn exit(self, drained: Drained) {
        if drained.requests && drained.sockets {
            tracing::info!("drained; exiting");
        } else {
            tracing::warn!(
                grace = ?self.grace,
                requests_done = drained.requests,
                sockets_done = drained.sockets,
                "drain timeout passed with work still in flight; exiting"
            );
        }
        self.admin.trigger();
        self.admin.drained(ADMIN_GRACE).await;
    }
}
