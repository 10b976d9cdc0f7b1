//! SIGHUP: the configuration file is read again; what can change without
//! dropping connections is applied (`log.filter`, the `filter` and `allow`
//! expressions of `[[subscriptions]]`, `limits.max_connections` and
//! `limits.max_subscriptions_per_connection`), and every other change is
//! named in the log as needing a restart.

use crate::config::Config;

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
        plan.log_filter = Some(new.log.filter.clone());
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
    let sections: [(&'static str, bool); 9] = [
        ("server", differs(&running.server, &new.server)),
        ("admin", differs(&running.admin, &new.admin)),
        ("upstream", differs(&running.upstream, &new.upstream)),
        ("schema", differs(&running.schema, &new.schema)),
        ("webhook", differs(&running.webhook, &new.webhook)),
        ("heartbeat", differs(&running.heartbeat, &new.heartbeat)),
        ("limits", differs(&running.limits, &new_limits)),
        ("bus", differs(&running.bus, &new.bus)),
        ("log.format", running.log.format != new.log.format),
    ];
    plan.needs_restart = sections
        .into_iter()
        .filter(|(_, changed)| *changed)
        .map(|(name, _)| name)
        .collect();
    plan
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
