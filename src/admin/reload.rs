//! SIGHUP: the configuration file is read again and every changed key is
//! either applied to the running process or named, in a `warn` line and in
//! `/status` under `pending_restart`, as taking effect after a restart.
//!
//! Keys are compared by value, as dotted names ([`changed_keys`]): every
//! config type serializes, secrets as fingerprints (so a rotated secret is
//! seen, and never printed). [`LIVE`] lists what is applied: `log.filter`,
//! `[auth]` (mode and keys; the proxy switch and forwarded headers are
//! wired into the listener's stack), `[rate_limits]` (new limiters: per-IP
//! state starts over), `webhook.secret` and `webhook.unknown_topics`,
//! `[heartbeat]`, and the limits a new connection reads
//! (`max_connections`, `max_subscriptions_per_connection`,
//! `max_message_bytes`). `[[subscriptions]]` go to the running routes
//! through [`apply_subscriptions`], the one hook a reload hands them over
//! by; what the routes cannot apply is pending. Everything else (the
//! listeners and paths, TLS, the upstream, the schema source, the bus, the
//! buffer sizes) is pending until a restart.
//!
//! A file that fails validation is refused whole, with its errors logged:
//! parsing and the per-key checks ([`Config::load`]), the cross-check of
//! `[[subscriptions]]` against the running schema ([`crosscheck`]), and
//! building what is applied (filters, authenticator, webhook secret), all
//! before anything changes. Every SIGHUP also re-introspects the upstream
//! ([`crate::admin::refresh`]). [`plan`] decides what a new file changes;
//! [`Reload`] applies it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::RwLock;
use serde_json::Value;
use tracing_subscriber::{EnvFilter, Registry};

use crate::auth::{Auth, LiveAuth};
use crate::config::{Config, LimitsConfig, RateLimitsConfig, SubscriptionConfig};
use crate::ingest::{Webhook, WebhookPolicy};
use crate::layers::ip_rate_limit::IpRateLimitLayer;
use crate::layers::message_rate_limit::MessageRateLimitLayer;
use crate::layers::per_second;
use crate::proxy::Upstream;
use crate::proxy::schema::LiveSchema;
use crate::shutdown::Shutdown;
use crate::subscriptions::filter::ReplaceError;
use crate::subscriptions::{RouteReloadError, Routes, crosscheck};
use crate::transport::{CountLimits, LiveSessionLimits, SessionLimits};

/// Swaps the log filter of the subscriber `main` installed.
pub type LogFilter = tracing_subscriber::reload::Handle<EnvFilter, Registry>;

/// Keys (and sections, as prefixes) a reload applies to the running
/// process; `[[subscriptions]]` are the routes' to apply.
pub const LIVE: [&str; 12] = [
    "log.filter",
    "auth.mode",
    "auth.cookie",
    "auth.jwt",
    "auth.upstream",
    "rate_limits",
    "webhook.secret",
    "webhook.secret_file",
    "webhook.unknown_topics",
    "heartbeat",
    "limits.max_connections",
    "limits.max_subscriptions_per_connection",
];

/// Applied too, but to connections accepted after the reload.
const LIVE_FOR_NEW_CONNECTIONS: [&str; 1] = ["limits.max_message_bytes"];

fn under(key: &str, prefix: &str) -> bool {
    key == prefix
        || key
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('.'))
}

fn is_live(key: &str) -> bool {
    LIVE.iter()
        .chain(&LIVE_FOR_NEW_CONNECTIONS)
        .any(|p| under(key, p))
}

fn is_subscriptions(key: &str) -> bool {
    under(key, "subscriptions")
}

/// Every key of `config` as a dotted name and its value: tables are walked,
/// anything else (a list, a duration) is one value; `[[subscriptions]]`
/// are named by field (`subscriptions.<field>.filter`).
fn keys(config: &Config) -> BTreeMap<String, Value> {
    fn walk(prefix: String, value: Value, out: &mut BTreeMap<String, Value>) {
        match value {
            // A `Duration` serializes as `{secs, nanos}`: one value.
            Value::Object(map) if !(map.len() == 2 && map.contains_key("nanos")) => {
                for (k, v) in map {
                    let key = if prefix.is_empty() {
                        k
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(key, v, out);
                }
            }
            other => {
                out.insert(prefix, other);
            }
        }
    }
    let mut out = BTreeMap::new();
    let Ok(Value::Object(mut root)) = serde_json::to_value(config) else {
        unreachable!("the configuration serializes to a table");
    };
    if let Some(Value::Array(blocks)) = root.remove("subscriptions") {
        for block in blocks {
            let field = block["field"].as_str().unwrap_or_default().to_owned();
            walk(format!("subscriptions.{field}"), block, &mut out);
        }
    }
    walk(String::new(), Value::Object(root), &mut out);
    out
}

/// The dotted names of the keys whose values differ between `a` and `b`
/// (set in one and not the other included), sorted.
pub fn changed_keys(a: &Config, b: &Config) -> Vec<String> {
    let (a, b) = (keys(a), keys(b));
    let mut changed: Vec<String> = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .chain(b.keys().filter(|k| !a.contains_key(*k)).cloned())
        .collect();
    changed.sort();
    changed
}

/// What a reload will do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadPlan {
    /// Keys that changed since the last reload and are applied now.
    pub live: Vec<String>,
    /// Keys of `[[subscriptions]]` that changed: the routes apply them.
    pub subscriptions: Vec<String>,
    /// Keys whose new value differs from the one the process started with
    /// and takes effect after a restart.
    pub restart: Vec<String>,
}

impl ReloadPlan {
    /// Whether a key at or under `prefix` is applied now.
    pub fn applies(&self, prefix: &str) -> bool {
        self.live.iter().any(|k| under(k, prefix))
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Compares the new file with what the process started with (`started`:
/// for the keys that need a restart) and with the last file applied
/// (`applied`: for the keys a reload applies).
pub fn plan(started: &Config, applied: &Config, new: &Config) -> ReloadPlan {
    let since_applied = changed_keys(applied, new);
    ReloadPlan {
        live: since_applied
            .iter()
            .filter(|k| is_live(k))
            .cloned()
            .collect(),
        subscriptions: since_applied
            .into_iter()
            .filter(|k| is_subscriptions(k))
            .collect(),
        restart: changed_keys(started, new)
            .into_iter()
            .filter(|k| !is_live(k) && !is_subscriptions(k))
            .collect(),
    }
}

/// What reloads applied and what waits for a restart, as `/status` shows it.
pub struct Applied {
    rate_limits: RwLock<RateLimitsConfig>,
    limits: RwLock<LimitsConfig>,
    pending_restart: RwLock<Vec<String>>,
}

impl Applied {
    pub fn new(config: &Config) -> Self {
        Self {
            rate_limits: RwLock::new(config.rate_limits.clone()),
            limits: RwLock::new(config.limits.clone()),
            pending_restart: RwLock::default(),
        }
    }

    pub fn rate_limits(&self) -> RateLimitsConfig {
        self.rate_limits.read().clone()
    }

    pub fn limits(&self) -> LimitsConfig {
        self.limits.read().clone()
    }

    /// Changed keys that take effect after a restart, sorted.
    pub fn pending_restart(&self) -> Vec<String> {
        self.pending_restart.read().clone()
    }
}

/// What a reload changes in place; the composition root hands them over.
pub struct Targets {
    pub routes: Arc<Routes>,
    pub count_limits: Arc<CountLimits>,
    /// The new `[[subscriptions]]` are checked against it, and it is
    /// re-introspected.
    pub schema: LiveSchema,
    /// For `auth.mode = "upstream"`.
    pub upstream: Upstream,
    pub auth: Arc<LiveAuth>,
    pub webhook: Arc<Webhook>,
    pub connection_attempts: IpRateLimitLayer,
    pub requests: IpRateLimitLayer,
    pub messages: MessageRateLimitLayer,
    pub session_limits: LiveSessionLimits,
    pub applied: Arc<Applied>,
    /// Its live subscriptions are re-checked against what was applied.
    pub registry: Arc<crate::subscriptions::Registry>,
}

/// Hands the new `[[subscriptions]]` to the running routes (live
/// subscriptions included) and the webhook's known topics; returns the keys
/// the routes could not apply, which wait for a restart.
pub fn apply_subscriptions(targets: &Targets, configs: &[SubscriptionConfig]) -> Vec<String> {
    let problems = targets.routes.reload(configs);
    for problem in &problems {
        tracing::warn!("{problem}");
    }
    tracing::info!(
        not_applied = problems.len(),
        "subscriptions filter/allow rules applied"
    );
    let mut pending: Vec<String> = problems.iter().map(pending_key).collect();
    pending.sort();
    pending.dedup();
    pending
}

/// The key a route change that waits for a restart is about.
fn pending_key(problem: &RouteReloadError) -> String {
    let (field, key) = match problem {
        RouteReloadError::Topic { field, .. } => (field, "topic"),
        RouteReloadError::Resolve { field } => (field, "resolve"),
        RouteReloadError::UnknownField { field } => (field, "field"),
        RouteReloadError::Rules(ReplaceError::ClaimsUsage { field, .. }) => (field, "filter"),
        RouteReloadError::Rules(ReplaceError::Invalid(_)) => return "subscriptions".into(),
    };
    format!("subscriptions.{field}.{key}")
}

/// What a file needs built before anything is applied; building it is
/// part of validation.
struct Prepared {
    auth: Option<Auth>,
    webhook: WebhookPolicy,
}

/// The running configuration and the file it came from; applies the file
/// again on every SIGHUP.
pub struct Reload {
    path: PathBuf,
    /// What the process was built with: the keys that need a restart are
    /// compared with it.
    started: Config,
    /// The last file applied.
    applied: Config,
    /// `[[subscriptions]]` keys the routes could not apply.
    subscriptions_pending: Vec<String>,
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
            started: running.clone(),
            applied: running,
            subscriptions_pending: Vec::new(),
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
            self.reload(&targets, &shutdown);
        }
    }

    /// Reads the file again, validates it whole, and applies what can
    /// change while running.
    fn reload(&mut self, targets: &Targets, shutdown: &Shutdown) {
        // Whatever the file holds: SIGHUP is also how an operator says
        // that the upstream's schema changed.
        targets.schema.request_refresh();
        let new = match Config::load(&self.path, std::env::vars()) {
            Ok(new) => new,
            Err(e) => {
                refused(&e);
                return;
            }
        };
        let plan = plan(&self.started, &self.applied, &new);
        let prepared = match self.prepare(&new, &plan, targets) {
            Ok(prepared) => prepared,
            Err(e) => {
                refused(&e);
                return;
            }
        };
        self.apply(&new, &plan, prepared, targets, shutdown);
        let mut pending = plan.restart.clone();
        pending.extend(self.subscriptions_pending.iter().cloned());
        pending.sort();
        pending.dedup();
        for key in &pending {
            tracing::warn!(
                key = %key,
                "configuration changed; this key takes effect after a restart"
            );
        }
        if plan.is_empty() {
            tracing::info!("configuration reloaded; nothing changed");
        } else {
            tracing::info!(
                applied = %plan.live.iter().chain(&plan.subscriptions).cloned().collect::<Vec<_>>().join(","),
                pending_restart = %pending.join(","),
                "configuration reloaded"
            );
        }
        *targets.applied.pending_restart.write() = pending;
        self.applied = new;
    }

    /// Everything the file needs built, before anything changes: a failure
    /// refuses the file whole.
    fn prepare(
        &self,
        new: &Config,
        plan: &ReloadPlan,
        targets: &Targets,
    ) -> Result<Prepared, ReloadError> {
        let schema = targets.schema.current();
        let warnings = crosscheck::check(&new.subscriptions, &schema)?;
        for w in &warnings {
            tracing::warn!("{w}");
        }
        // The filters and allow rules compile (the routes swap them one
        // field at a time: none may fail half-way).
        Routes::new(
            &new.subscriptions,
            crate::subscriptions::subscription_fields(&schema.sdl()),
        )?;
        // A JWKS file is read again on every SIGHUP: rotating its keys is
        // what an operator sends one for.
        let auth = (plan.applies("auth") || new.auth.jwt.jwks_path.is_some())
            .then(|| Auth::from_config(&new.auth, &targets.upstream))
            .transpose()?;
        let webhook = WebhookPolicy::new(
            &new.webhook,
            Vec::new(),
            new.rate_limits.webhook_events_per_second,
        )?;
        Ok(Prepared { auth, webhook })
    }

    fn apply(
        &mut self,
        new: &Config,
        plan: &ReloadPlan,
        prepared: Prepared,
        targets: &Targets,
        shutdown: &Shutdown,
    ) {
        if plan.applies("log.filter") {
            // The running process's audit switch stays as it started.
            let mut log = new.log.clone();
            log.audit = self.started.log.audit;
            let filter = log.directives();
            if std::env::var_os("RUST_LOG").is_some() {
                tracing::warn!("log.filter changed but RUST_LOG is set and wins; not applied");
            } else if let Err(e) = self.log_filter.reload(EnvFilter::new(&filter)) {
                tracing::error!(error = %e, "cannot apply the new log.filter");
            } else {
                tracing::info!(filter = %filter, "log.filter applied");
            }
        }
        if let Some(auth) = prepared.auth {
            targets.auth.replace(auth, shutdown);
            tracing::info!(mode = ?new.auth.mode, "auth applied to new connections");
        }
        if plan.applies("rate_limits") {
            let r = &new.rate_limits;
            targets
                .connection_attempts
                .set_quota(r.connection_attempts_per_ip.and_then(per_second));
            targets
                .requests
                .set_quota(r.requests_per_ip.and_then(per_second));
            targets
                .messages
                .set_quota(r.messages_per_connection.and_then(per_second));
            *targets.applied.rate_limits.write() = r.clone();
            tracing::info!("rate limits applied; per-address state starts over");
        }
        if !plan.subscriptions.is_empty() {
            self.subscriptions_pending = apply_subscriptions(targets, &new.subscriptions);
        }
        // The secret, unknown_topics, the events per second, and the topics
        // the routes now read.
        targets
            .webhook
            .apply(prepared.webhook.with_topics(targets.routes.topics()));
        if plan.applies("limits") || plan.applies("heartbeat") {
            let (l, running) = (&new.limits, &mut *targets.applied.limits.write());
            targets
                .count_limits
                .set(l.max_connections, l.max_subscriptions_per_connection);
            running.max_connections = l.max_connections;
            running.max_subscriptions_per_connection = l.max_subscriptions_per_connection;
            running.max_message_bytes = l.max_message_bytes;
            targets.session_limits.set(SessionLimits::from_config(new));
            tracing::info!(
                max_connections = l.max_connections,
                max_subscriptions_per_connection = l.max_subscriptions_per_connection,
                max_message_bytes = l.max_message_bytes,
                "limits applied"
            );
        }
        targets
            .registry
            .recheck(&targets.routes, &targets.schema.current());
    }
}

/// Logs why a file is refused, on one line.
fn refused(e: &dyn std::fmt::Display) {
    let error = e.to_string().replace('\n', "; ");
    tracing::error!(%error, "configuration reload refused; the running configuration stays");
}

/// Why a file that parsed is refused.
#[derive(Debug, thiserror::Error)]
enum ReloadError {
    #[error(transparent)]
    CrossCheck(#[from] crosscheck::CrossCheckError),
    #[error(transparent)]
    Filter(#[from] crate::subscriptions::filter::FilterError),
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthBuildError),
    #[error(transparent)]
    WebhookSecret(#[from] crate::ingest::signature::BadSecret),
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str =
        "[upstream]\nurl = \"http://127.0.0.1:8080/graphql\"\n[schema]\npath = \"s.graphql\"\n";

    fn parse(extra: &str) -> Config {
        Config::parse(&format!("{BASE}{extra}"), std::iter::empty()).unwrap()
    }

    fn plan_of(running: &str, new: &str) -> ReloadPlan {
        let running = parse(running);
        plan(&running, &running, &parse(new))
    }

    #[test]
    fn log_filter_is_applied_and_listeners_need_a_restart() {
        let plan = plan_of(
            "[log]\nfilter = \"info\"\n",
            "[log]\nfilter = \"debug\"\n[server]\nlisten = \"0.0.0.0:5000\"\n",
        );
        assert_eq!(plan.live, ["log.filter"]);
        assert_eq!(plan.restart, ["server.listen"]);
        assert!(plan.subscriptions.is_empty());
    }

    #[test]
    fn a_rotated_secret_is_seen_and_applied() {
        let plan = plan_of(
            "[auth]\nmode = \"jwt\"\n[auth.jwt]\nsecret = \"one\"\n",
            "[auth]\nmode = \"jwt\"\n[auth.jwt]\nsecret = \"two\"\n",
        );
        assert_eq!(plan.live, ["auth.jwt.secret"]);
        assert!(plan.applies("auth"));
        let plan = plan_of(
            "[webhook]\nsecret = \"whsec_b25l\"\n",
            "[webhook]\nsecret = \"whsec_dHdv\"\n",
        );
        assert_eq!(plan.live, ["webhook.secret"]);
        // Neither secret is anywhere in what is compared.
        let text = format!("{:?}", keys(&parse("[webhook]\nsecret = \"whsec_b25l\"\n")));
        assert!(!text.contains("b25l"), "{text}");
    }

    #[test]
    fn count_limits_and_the_frame_limit_are_applied_and_buffer_sizes_need_a_restart() {
        let plan = plan_of(
            "",
            "[limits]\nmax_connections = 5\nmax_subscriptions_per_connection = 1\nmax_message_bytes = 4096\n",
        );
        assert_eq!(
            plan.live,
            [
                "limits.max_connections",
                "limits.max_message_bytes",
                "limits.max_subscriptions_per_connection"
            ]
        );
        assert!(plan.restart.is_empty(), "{:?}", plan.restart);
        let plan = plan_of("", "[limits]\noutbound_queue = 7\n");
        assert!(plan.live.is_empty());
        assert_eq!(plan.restart, ["limits.outbound_queue"]);
    }

    #[test]
    fn durations_and_lists_are_one_key_each() {
        let plan = plan_of(
            "",
            "[heartbeat]\ninterval = \"3s\"\n[server]\ncors_origins = [\"https://a.example\"]\n",
        );
        assert_eq!(plan.live, ["heartbeat.interval"]);
        assert_eq!(plan.restart, ["server.cors_origins"]);
        let plan = plan_of(
            "",
            "[rate_limits]\nrequests_per_ip = 3\n[bus]\nhistory = 9\n",
        );
        assert_eq!(plan.live, ["rate_limits.requests_per_ip"]);
        assert_eq!(plan.restart, ["bus.history"]);
    }

    #[test]
    fn subscription_rules_go_to_the_routes() {
        let block = "[[subscriptions]]\nfield = \"a\"\n";
        let plan = plan_of(block, &format!("{block}filter = \"event.n > 1\"\n"));
        assert_eq!(plan.subscriptions, ["subscriptions.a.filter"]);
        assert!(plan.restart.is_empty() && plan.live.is_empty());
    }

    #[test]
    fn restart_keys_stay_pending_until_the_file_matches_the_process_again() {
        let started = parse("");
        let moved = parse("[admin]\nlisten = \"127.0.0.1:9999\"\n");
        let first = plan(&started, &started, &moved);
        assert_eq!(first.restart, ["admin.listen"]);
        // Reloaded again unchanged: still pending, nothing new to apply.
        let again = plan(&started, &moved, &moved);
        assert_eq!(again.restart, ["admin.listen"]);
        assert!(again.live.is_empty());
        assert!(plan(&started, &moved, &started).is_empty());
    }

    #[test]
    fn unchanged_file_does_nothing() {
        assert!(plan_of("", "").is_empty());
    }
}
