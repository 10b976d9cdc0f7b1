//! SIGHUP: the configuration file is read again; what can change without
//! dropping connections is applied (`log.filter`, the `filter` and `allow`
//! expressions of `[[subscriptions]]`, `limits.max_connections` and
//! `limits.max_subscriptions_per_connection`), and every other change is
//! named in the log as needing a restart. The new `[[subscriptions]]` are
//! first checked against the running schema ([`crosscheck`]): a mismatch
//! refuses the file whole. Every SIGHUP also re-introspects the upstream
//! ([`crate::admin::refresh`]). [`plan`] decides what a new file changes;
//! [`Reload`] applies it to the running process.

use std::path::PathBuf;
use std::sync::Arc;

use tracing_subscriber::{EnvFilter, Registry};

use crate::config::Config;
use crate::proxy::schema::LiveSchema;
use crate::shutdown::Shutdown;
use crate::subscriptions::Routes;
use crate::subscriptions::crosscheck;
use crate::transport::CountLimits;

/// Swaps the log filter of the subscriber `main` installed.
pub type LogFilter = tracing_subscriber::reload::Handle<EnvFilter, Registry>;

/// What a reload will do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadPlan {
    /// The new `log.filter`, when it changed.
    pub log_filter: Option<String>,
    /// Whether `[[subscriptions]]` changed: their expressions are applied
    /// in place, and what cannot be is reported then.
    pub subscriptions: bool,
    /// New `limits.max_connections` and
    /// `limits.max_subscriptions_per_connection`, when either changed.
    pub count_limits: Option<(usize, usize)>,
    /// Sections that changed but only take effect after a restart.
    pub needs_restart: Vec<&'static str>,
}

/// Compares the running configuration with the file's new contents.
pub fn plan(running: &Config, new: &Config) -> ReloadPlan {
    // Sections compared by their Debug form: secrets print as `****`, so a
    // changed secret alone is not detected (and is not applied either).
    fn differs(a: &impl std::fmt::Debug, b: &impl std::fmt::Debug) -> bool {
        format!("{a:?}") != format!("{b:?}")
    }
    let mut plan = ReloadPlan::default();
    if running.log.filter != new.log.filter {
        // The running process's audit switch stays as it started.
        let mut log = new.log.clone();
        log.audit = running.log.audit;
        plan.log_filter = Some(log.directives());
    }
    plan.subscriptions = differs(&running.subscriptions, &new.subscriptions);
    let counts =
        |l: &crate::config::LimitsConfig| (l.max_connections, l.max_subscriptions_per_connection);
    if counts(&running.limits) != counts(&new.limits) {
        plan.count_limits = Some(counts(&new.limits));
    }
    // The other limits size each connection's buffers and queue when it is
    // accepted: they need a restart.
    let mut new_limits = new.limits.clone();
    (
        new_limits.max_connections,
        new_limits.max_subscriptions_per_connection,
    ) = counts(&running.limits);
    let sections: [(&'static str, bool); 11] = [
        ("server", differs(&running.server, &new.server)),
        ("admin", differs(&running.admin, &new.admin)),
        ("upstream", differs(&running.upstream, &new.upstream)),
        ("schema", differs(&running.schema, &new.schema)),
        ("webhook", differs(&running.webhook, &new.webhook)),
        ("heartbeat", differs(&running.heartbeat, &new.heartbeat)),
        ("limits", differs(&running.limits, &new_limits)),
        ("bus", differs(&running.bus, &new.bus)),
        ("triggers", differs(&running.triggers, &new.triggers)),
        ("log.format", running.log.format != new.log.format),
        ("log.audit", running.log.audit != new.log.audit),
    ];
    plan.needs_restart = sections
        .into_iter()
        .filter(|(_, changed)| *changed)
        .map(|(name, _)| name)
        .collect();
    plan
}

/// What a reload changes in place; the composition root hands them over.
pub struct Targets {
    pub routes: Arc<Routes>,
    pub count_limits: Arc<CountLimits>,
    /// The new `[[subscriptions]]` are checked against it, and it is
    /// re-introspected.
    pub schema: LiveSchema,
}

/// The running configuration and the file it came from; applies the file
/// again on every SIGHUP.
pub struct Reload {
    path: PathBuf,
    running: Config,
    log_filter: LogFilter,
    /// Listening from construction on, before the listeners are bound: a
    /// SIGHUP that arrives before anyone listens terminates the process.
    hangups: Option<tokio::signal::unix::Signal>,
}

impl Reload {
    /// Must be called inside the runtime: it starts listening for SIGHUP.
    pub fn new(path: PathBuf, running: Config, log_filter: LogFilter) -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        let hangups = signal(SignalKind::hangup())
            .inspect_err(|e| {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; configuration reload is off");
            })
            .ok();
        Self {
            path,
            running,
            log_filter,
            hangups,
        }
    }

    /// Reloads on every SIGHUP until `shutdown`.
    pub async fn on_sighup(mut self, targets: Targets, shutdown: Shutdown) {
        let Some(mut hangups) = self.hangups.take() else {
            return;
        };
        loop {
            tokio::select! {
                _ = shutdown.triggered() => return,
                hangup = hangups.recv() => if hangup.is_none() { return },
            }
            self.reload(&targets);
        }
    }

    /// Reads the file again and applies what can change while running; the
    /// running configuration follows what was applied.
    fn reload(&mut self, targets: &Targets) {
        // Whatever the file holds: SIGHUP is also how an operator says
        // that the upstream's schema changed.
        targets.schema.request_refresh();
        let new = match Config::load(&self.path, std::env::vars()) {
            Ok(new) => new,
            Err(e) => {
                tracing::error!(error = %e, "configuration reload failed; the running configuration stays");
                return;
            }
        };
        match crosscheck::check(&new.subscriptions, &targets.schema.current()) {
            Ok(warnings) => warnings.iter().for_each(|w| tracing::warn!("{w}")),
            Err(e) => {
                tracing::error!(error = %e, "configuration reload refused; the running configuration stays");
                return;
            }
        }
        let plan = plan(&self.running, &new);
        let running = &mut self.running;
        if let Some(filter) = &plan.log_filter {
            if std::env::var_os("RUST_LOG").is_some() {
                tracing::warn!("log.filter changed but RUST_LOG is set and wins; not applied");
            } else if let Err(e) = self.log_filter.reload(EnvFilter::new(filter)) {
                tracing::error!(error = %e, "cannot apply the new log.filter");
            } else {
                running.log.filter = filter.clone();
                tracing::info!(filter = %filter, "log.filter applied");
            }
        }
        if plan.subscriptions {
            let problems = targets.routes.reload(&new.subscriptions);
            for problem in &problems {
                tracing::warn!("{problem}");
            }
            if problems.is_empty() {
                running.subscriptions = new.subscriptions.clone();
            }
            tracing::info!(
                not_applied = problems.len(),
                "subscriptions filter/allow rules applied"
            );
        }
        if let Some((max_connections, max_subscriptions)) = plan.count_limits {
            targets.count_limits.set(max_connections, max_subscriptions);
            running.limits.max_connections = max_connections;
            running.limits.max_subscriptions_per_connection = max_subscriptions;
            tracing::info!(
                max_connections,
                max_subscriptions_per_connection = max_subscriptions,
                "limits applied"
            );
        }
        for section in &plan.needs_restart {
            tracing::warn!(
                section,
                "configuration changed; this section takes effect after a restart"
            );
        }
        if plan == ReloadPlan::default() {
            tracing::info!("configuration reloaded; nothing changed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str =
        "[upstream]\nurl = \"http://127.0.0.1:8080/graphql\"\n[schema]\npath = \"s.graphql\"\n";

    fn parse(extra: &str) -> Config {
        Config::parse(&format!("{BASE}{extra}"), std::iter::empty()).unwrap()
    }

    #[test]
    fn log_filter_is_applied_and_other_changes_need_a_restart() {
        let running = parse("[log]\nfilter = \"info\"\n");
        let new = parse("[log]\nfilter = \"debug\"\n[server]\nlisten = \"0.0.0.0:5000\"\n");
        let plan = plan(&running, &new);
        assert_eq!(plan.log_filter.as_deref(), Some("debug"));
        assert_eq!(plan.needs_restart, vec!["server"]);
        assert!(!plan.subscriptions);
    }

    #[test]
    fn count_limits_are_applied_and_buffer_sizes_need_a_restart() {
        let running = parse("");
        let new = parse("[limits]\nmax_connections = 5\nmax_subscriptions_per_connection = 1\n");
        let counts = plan(&running, &new);
        assert_eq!(counts.count_limits, Some((5, 1)));
        assert!(
            counts.needs_restart.is_empty(),
            "{:?}",
            counts.needs_restart
        );
        let new = parse("[limits]\noutbound_queue = 7\n");
        let sizes = plan(&running, &new);
        assert_eq!(sizes.count_limits, None);
        assert_eq!(sizes.needs_restart, vec!["limits"]);
    }

    #[test]
    fn subscription_rules_are_applied_not_restarted() {
        let block = "[[subscriptions]]\nfield = \"a\"\n";
        let running = parse(block);
        let new = parse(&format!("{block}filter = \"event.n > 1\"\n"));
        let plan = plan(&running, &new);
        assert!(plan.subscriptions);
        assert!(plan.needs_restart.is_empty());
    }

    #[test]
    fn unchanged_file_does_nothing() {
        let running = parse("");
        assert_eq!(plan(&running, &parse("")), ReloadPlan::default());
    }
}
