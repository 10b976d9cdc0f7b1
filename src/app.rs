//! The composition root: builds the upstream client, the schema and every
//! tower stack once, binds the listeners, and runs the drain
//! ([`crate::admin::drain`]) when asked to stop.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, Request, Response};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::{DefaultOnFailure, TraceLayer};

use crate::admin::drain::{Drain, Drained};
use crate::admin::health::{self, Health};
use crate::admin::refresh::{RefreshError, Refresher};
use crate::admin::reload::{self, Reload};
use crate::admin::status::StatusSource;
use crate::admin::{AdminRouter, sampler};
use crate::auth::credentials::InitHeaders;
use crate::auth::{Auth, AuthBuildError, LiveAuth};
use crate::bus::{self, Bus, BusBuildError};
use crate::config::{Config, ProxyAuth, UnknownTopics};
use crate::http::body::{self, Body};
use crate::ingest::signature::BadSecret;
use crate::ingest::{Webhook, WebhookError};
use crate::layers::body_limit::BodyLimitLayer;
use crate::layers::ip_rate_limit::IpRateLimitLayer;
use crate::layers::message_rate_limit::MessageRateLimitLayer;
use crate::layers::origin::OriginCheckLayer;
use crate::layers::per_second;
use crate::layers::require_auth::RequireAuthLayer;
use crate::log::{Audit, error_chain};
use crate::metrics::{Metrics, Refusal};
use crate::proxy::schema::{self, LiveSchema, SchemaLoadError, UpstreamPart};
use crate::proxy::{Proxy, ProxyError, Upstream, UpstreamBuildError};
use crate::server::graphiql::Graphiql;
use crate::server::router::{ClientService, GraphqlService, PublicRouter};
use crate::server::{self, tls};
use crate::shutdown::Shutdown;
use crate::subscriptions::crosscheck::{self, CrossCheckError};
use crate::subscriptions::directory::Directory;
use crate::subscriptions::filter::FilterError;
use crate::subscriptions::operation::{Core, OperationLimits};
use crate::subscriptions::{Dispatcher, Enricher, Registry, Routes};
use crate::transport::{
    CountLimits, InboundStack, LiveSessionLimits, SessionLimits, Shared, StreamEndpoint, WsEndpoint,
};
use crate::triggers::{TriggerRules, Triggers};

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Schema(#[from] SchemaLoadError),
    #[error(transparent)]
    Resolve(#[from] Box<crate::graphql::fetch::ResolveSchemaError>),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Upstream(#[from] UpstreamBuildError),
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error(transparent)]
    CrossCheck(#[from] CrossCheckError),
    #[error(transparent)]
    WebhookSecret(#[from] BadSecret),
    #[error(transparent)]
    Bus(#[from] BusBuildError),
    #[error(transparent)]
    Auth(#[from] AuthBuildError),
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Everything built from the configuration, not yet listening.
pub struct App {
    config: Arc<Config>,
    health: Arc<Health>,
    upstream: Upstream,
    schema: LiveSchema,
    tls: Option<TlsAcceptor>,
    metrics: Arc<Metrics>,
    // The realtime path (issue 4): bus → dispatcher → registry ← sessions.
    bus: Arc<dyn Bus>,
    registry: Arc<Registry>,
    routes: Arc<Routes>,
    webhook: Arc<Webhook>,
    /// Connection and subscription counts allowed; a reload changes them.
    count_limits: Arc<CountLimits>,
    /// The authenticator in force; a reload replaces it.
    auth: Arc<LiveAuth>,
    /// The rate limits a reload replaces: connection attempts per IP (one
    /// bucket per IP for sockets and streams alike), requests per IP on the
    /// proxy path, messages per connection.
    attempts: IpRateLimitLayer,
    requests: IpRateLimitLayer,
    messages: MessageRateLimitLayer,
    /// Heartbeat timers and the frame limit; a reload replaces them.
    session_limits: LiveSessionLimits,
    /// What reloads applied and what waits for a restart, for `/status`.
    applied: Arc<reload::Applied>,
    /// Completes events of `[subscriptions.resolve]` fields from the upstream.
    enricher: Arc<Enricher>,
    /// What the configuration/schema cross-check warns about.
    warnings: Vec<String>,
    /// Every connected client, for `/status/connections`.
    directory: Arc<Directory>,
    audit: Audit,
    /// `[[triggers]]`, compiled; they fire once running ([`Triggers`]).
    trigger_rules: Arc<TriggerRules>,
}

impl App {
    /// Builds every part; fails on anything that would fail at the first
    /// request (unreadable schema, bad TLS files).
    pub fn build(config: Config) -> Result<Self, AppError> {
        let schema = schema::load(&config.schema, &config.limits.document)?;
        let tls = config.server.tls.as_ref().map(tls::acceptor).transpose()?;
        let upstream = Upstream::new(&config.upstream)?;
        let auth = Auth::from_config(&config.auth, &upstream)?;
        let warnings = crosscheck::check(&config.subscriptions, &schema.current())?
            .iter()
            .map(ToString::to_string)
            .collect();
        let fields = crate::subscriptions::subscription_fields(&schema.current().sdl());
        let routes = Arc::new(Routes::new(&config.subscriptions, fields)?);
        crosscheck::check_triggers(
            &config.triggers,
            &schema.current(),
            trigger_topics(&config, &routes).as_deref(),
        )?;
        let trigger_rules = Arc::new(TriggerRules::compile(&config.triggers)?);
        // Shared by the webhook (publish, dedup), the dispatcher (live
        // events) and the sessions (resume); connects once running.
        let bus = bus::build(&config.bus, config.webhook.dedup_window, &routes.topics())?;
        // One shard per worker thread: dispatch fan-out runs on all of them.
        let shards = std::thread::available_parallelism().map_or(1, |n| n.get());
        let registry = Registry::new(shards);
        let metrics = Arc::new(Metrics::new());
        metrics.seed(routes.fields(), routes.topics().iter().map(String::as_str));
        if schema.upstream_part() != UpstreamPart::Pending {
            metrics.schema_refreshed();
        }
        let audit = Audit::new(config.log.audit);
        let webhook = Arc::new(
            Webhook::new(&config.webhook, routes.topics(), bus.clone())?
                .with_rate_limit(config.rate_limits.webhook_events_per_second)
                .with_metrics(metrics.clone())
                .with_audit(audit),
        );
        let enricher = Arc::new(Enricher::new(
            Arc::new(upstream.clone()),
            config.upstream.batching,
            config.upstream.timeout,
        ));
        let rate_limits = &config.rate_limits;
        let attempts = IpRateLimitLayer::new(
            rate_limits.connection_attempts_per_ip.and_then(per_second),
            &config.server.trusted_proxies,
            metrics.clone(),
            Refusal::rate_limit_connection,
        );
        let requests = IpRateLimitLayer::new(
            rate_limits.requests_per_ip.and_then(per_second),
            &config.server.trusted_proxies,
            metrics.clone(),
            Refusal::rate_limit_request,
        );
        let messages =
            MessageRateLimitLayer::new(rate_limits.messages_per_connection.and_then(per_second));
        let app = Self {
            attempts,
            requests,
            messages,
            session_limits: SessionLimits::from_config(&config).into(),
            applied: Arc::new(reload::Applied::new(&config)),
            enricher,
            directory: Arc::new(Directory::default()),
            audit,
            count_limits: Arc::new(CountLimits::from_config(&config.limits)),
            config: Arc::new(config),
            health: Arc::new(Health::new(schema.clone(), bus.clone())),
            upstream,
            schema,
            tls,
            metrics,
            bus,
            registry,
            routes,
            webhook,
            auth: Arc::new(LiveAuth::new(auth)),
            warnings,
            trigger_rules,
        };
        app.check_resolve()?;
        Ok(app)
    }

    /// Checks every `[subscriptions.resolve]` against the merged schema,
    /// once the upstream's part of it is known.
    fn check_resolve(&self) -> Result<(), AppError> {
        let schema = self.schema.current();
        if !schema.upstream_loaded() {
            return Ok(());
        }
        self.routes.check_resolve(&schema)?;
        // Each `[[triggers]].mutation` on the upstream's Mutation type.
        crosscheck::check_triggers(
            &self.config.triggers,
            &schema,
            trigger_topics(&self.config, &self.routes).as_deref(),
        )?;
        Ok(())
    }

    /// What the configuration/schema cross-check warns about (`subcar
    /// check` prints them, start-up logs them).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// At start-up, one introspection of the upstream when the schema needs
    /// it. A conflict between the schemas, or an upstream schema that does
    /// not serve `[subscriptions.resolve]`, fails start-up; an upstream that
    /// is not up yet is retried in the background once running.
    pub async fn learn_upstream_schema(&self) -> Result<(), AppError> {
        if self.schema.upstream_part() != UpstreamPart::Pending {
            return Ok(());
        }
        match self.refresher().once().await {
            Ok(()) => self.check_resolve(),
            Err(RefreshError::Load(e @ SchemaLoadError::Invalid(_))) => Err(e.into()),
            Err(RefreshError::Resolve(e)) => Err(e.into()),
            Err(e) => {
                tracing::warn!(
                    error = %error_chain(&e),
                    "upstream schema not available yet; starting with the subscription schema alone and retrying in the background"
                );
                Ok(())
            }
        }
    }

    /// The task that keeps the upstream's part of the schema fresh.
    fn refresher(&self) -> Refresher {
        Refresher {
            schema: self.schema.clone(),
            upstream: self.upstream.clone(),
            routes: self.routes.clone(),
            registry: self.registry.clone(),
            metrics: self.metrics.clone(),
            interval: self.config.schema.refresh_interval,
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    pub fn schema(&self) -> &LiveSchema {
        &self.schema
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    pub fn webhook(&self) -> &Arc<Webhook> {
        &self.webhook
    }

    pub fn bus(&self) -> &Arc<dyn Bus> {
        &self.bus
    }

    /// Binds every listener; addresses with port 0 get an ephemeral port.
    pub async fn bind(self) -> Result<Bound, AppError> {
        let public = bind("server.listen", self.config.server.listen).await?;
        let admin = bind("admin.listen", self.config.admin.listen).await?;
        let webhook = bind("webhook.listen", self.config.webhook.listen).await?;
        Ok(Bound {
            app: self,
            public,
            admin,
            webhook,
            reload: None,
        })
    }

    /// The public listener's stack, outermost first.
    fn public_service(
        &self,
        shutdown: &Shutdown,
        sessions: &Shutdown,
    ) -> BoxCloneSyncService<Request<hyper::body::Incoming>, Response<Body>, Infallible> {
        let server = &self.config.server;
        // One for the proxy and the operation core; their judging tasks run
        // in the realtime group, which outlives the requests. They check
        // credentials with the authenticator in force (reloads swap it).
        let triggers = Arc::new(Triggers::new(
            self.trigger_rules.clone(),
            self.bus.clone(),
            self.metrics.clone(),
            self.auth.clone(),
            sessions.clone(),
        ));
        let shared = self.shared(&triggers);
        let attempts = &self.attempts;
        let mut router = PublicRouter::new(
            &server.graphql_path,
            self.graphql_service(&triggers),
            self.health.clone(),
            self.schema.clone(),
            self.metrics.clone(),
        )
        .with_websocket(self.admission(
            attempts,
            WsEndpoint::new(shared.clone(), shutdown.clone(), sessions.clone()),
        ))
        // SSE and multipart: each stream request is a connection attempt;
        // queries and mutations among them go on to the proxy stack.
        .with_streams(self.admission(
            attempts,
            StreamEndpoint::new(
                shared,
                self.graphql_service(&triggers),
                shutdown.clone(),
                sessions.clone(),
            ),
        ));
        if self.config.graphiql_enabled() {
            router = router.with_graphiql(Graphiql::new(&server.graphiql.assets_url));
        }
        let service = ServiceBuilder::new()
            // Bodies are boxed once at this stage boundary.
            .map_response(|res: Response<_>| res.map(body::boxed))
            // First, so every log line and the upstream see the same id.
            .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), MakeRequestUuid))
            // Spans carry the request id set above. Upstream 5xx answers are
            // the upstream's to log; subcar's own failures log in the rescue.
            .layer(
                TraceLayer::new_for_http()
                    .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
            )
            // Echo the id to the client for support requests.
            .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
            // Preflights are answered here, before they cost an upstream call.
            .layer(cors_layer(&server.cors_origins))
            // Refuses oversized bodies by Content-Length before any work
            // (GraphQL-shaped 413), and caps streamed ones.
            .layer(BodyLimitLayer::new(server.max_request_bytes, |too_large| {
                crate::error::rescue_proxy(&ProxyError::RequestTooLarge {
                    limit: too_large.limit,
                })
            }))
            // A body that stalls for server.body_timeout fails its read (408
            // where a response is still possible) instead of holding the
            // request, and the proxy's upstream call, forever.
            .layer(RequestBodyTimeoutLayer::new(server.body_timeout))
            .map_request(|req: Request<_>| req.map(body::boxed))
            .service(router);
        BoxCloneSyncService::new(service)
    }

    /// What every client of every transport shares: the operation core
    /// (schema, registry, authenticator, the upstream client for queries
    /// over a socket or stream), the per-message policies and the timers.
    fn shared(&self, triggers: &Arc<Triggers>) -> Arc<Shared> {
        let inbound = ServiceBuilder::new()
            // Applied per connection by the session (each socket gets its
            // own bucket); refused messages never reach the protocol code.
            .layer(self.messages.clone())
            .into_inner();
        // The operation core every transport calls.
        let core = Core {
            schema: self.schema.clone(),
            bus: self.bus.clone(),
            routes: self.routes.clone(),
            registry: self.registry.clone(),
            executor: Arc::new(self.upstream.clone()),
            authenticator: self.auth.clone(),
            metrics: self.metrics.clone(),
            limits: OperationLimits::from_config(&self.config, self.count_limits.clone()),
            directory: self.directory.clone(),
            audit: self.audit,
            triggers: triggers.clone(),
        };
        Arc::new(Shared {
            core: Arc::new(core),
            inbound: InboundStack::new(inbound),
            init_headers: InitHeaders::from_config(&self.config.auth),
            trusted_proxies: self.config.server.trusted_proxies.clone(),
            limits: self.session_limits.clone(),
        })
    }

    /// What every new client passes before its transport sees it, sockets
    /// and streams alike; `attempts` is shared, so that an IP has one bucket
    /// for all of them.
    fn admission<S>(&self, attempts: &IpRateLimitLayer, endpoint: S) -> ClientService
    where
        S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        let service = ServiceBuilder::new()
            // Connection attempts per client IP, first: a reconnect loop is
            // refused with a map lookup, before the handshake is checked,
            // the capacity counted or a session built. Authentication comes
            // later (at connection_init on a socket, as graphql-transport-ws
            // wants it; with the request on a stream).
            .layer(attempts.clone())
            // Browser origins, before anything is answered: a page of another
            // site must not get a socket or a stream that carries its
            // visitor's cookies (cross-site WebSocket hijacking). After the
            // rate limit, so refused attempts still count against their IP.
            .layer(OriginCheckLayer::new(
                &self.config.server.cors_origins,
                &self.config.server.trusted_proxies,
                self.metrics.clone(),
            ))
            .service(endpoint);
        BoxCloneSyncService::new(service)
    }

    /// The admin listener's routes: probes, `/metrics` and `/status`.
    fn admin_router(&self) -> AdminRouter {
        let status = StatusSource {
            started: std::time::Instant::now(),
            registry: self.registry.clone(),
            bus: self.bus.clone(),
            health: self.health.clone(),
            schema: self.schema.clone(),
            count_limits: self.count_limits.clone(),
            applied: self.applied.clone(),
            upstream_url: self.config.upstream.url.to_string(),
            metrics: self.metrics.clone(),
            directory: self.directory.clone(),
        };
        AdminRouter::new(self.health.clone(), self.metrics.clone(), Arc::new(status))
    }

    /// The webhook listener's stack, outermost first. Events per second are
    /// counted by the handler, after parsing (see [`crate::layers`]).
    fn webhook_service(
        &self,
    ) -> BoxCloneSyncService<Request<hyper::body::Incoming>, Response<Body>, Infallible> {
        let config = &self.config.webhook;
        let webhook = self.webhook.clone();
        let handler = tower::service_fn(move |request: Request<Body>| {
            let webhook = webhook.clone();
            async move { Ok::<_, Infallible>(webhook.handle(request).await) }
        });
        let service = ServiceBuilder::new()
            // Bodies are boxed once at this stage boundary.
            .map_response(|res: Response<_>| res.map(body::boxed))
            // First, so the log lines of one delivery share an id.
            .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), MakeRequestUuid))
            // Spans carry the request id. A 503 during a bus outage is an
            // answer the sender retries, logged by the bus, not a failure
            // of this request to log at error level.
            .layer(
                TraceLayer::new_for_http()
                    .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
            )
            // Echoed so the upstream can quote it when it reports a refusal.
            .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
            // Before the signature is checked: an oversized body is refused
            // by its Content-Length without being read, and a streamed one
            // stops being read at webhook.max_body_bytes.
            .layer(BodyLimitLayer::new(config.max_body_bytes, |too_large| {
                crate::error::rescue_webhook(&WebhookError::from(too_large))
            }))
            // A body that stalls for webhook.body_timeout fails its read,
            // answered 408, instead of holding the request forever.
            .layer(RequestBodyTimeoutLayer::new(config.body_timeout))
            .map_request(|req: Request<_>| req.map(body::boxed))
            .service(handler);
        BoxCloneSyncService::new(service)
    }

    /// Queries and mutations: the proxy with the upstream timeout. The router
    /// rescues its errors into GraphQL-shaped responses.
    fn graphql_service(&self, triggers: &Arc<Triggers>) -> GraphqlService {
        let proxy = Proxy::new(
            self.upstream.clone(),
            self.schema.clone(),
            self.config.server.trusted_proxies.clone(),
            triggers.clone(),
        );
        let require = (self.config.auth.proxy == ProxyAuth::Require)
            .then(|| self.auth.clone() as Arc<dyn crate::auth::Authenticator>);
        let service = ServiceBuilder::new()
            // Requests per client IP, outermost: a flood is refused before
            // it costs a token check or an upstream call.
            .layer(self.requests.clone())
            // auth.proxy = "require": the sockets' check, before anything
            // reaches the upstream; outside the timeout, which is the
            // upstream's (upstream-mode auth has its own).
            .layer(RequireAuthLayer::new(
                require,
                self.metrics.clone(),
                &self.config.server.trusted_proxies,
            ))
            // Covers the wait for the upstream's response headers only: a
            // streaming response may then take as long as it needs.
            .timeout(self.config.upstream.timeout)
            .service(proxy);
        BoxCloneSyncService::new(service)
    }
}

/// The topics a trigger may publish on: those some subscription field is
/// fed by, or any (`None`) with `webhook.unknown_topics = "accept"`, as for
/// the webhook.
fn trigger_topics(config: &Config, routes: &Routes) -> Option<Vec<String>> {
    (config.webhook.unknown_topics == UnknownTopics::Reject).then(|| routes.topics())
}

fn cors_layer(origins: &[String]) -> tower::util::Either<CorsLayer, tower::layer::util::Identity> {
    use tower::util::Either;
    if origins.is_empty() {
        return Either::Right(tower::layer::util::Identity::new());
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| o.parse().ok()))
    };
    Either::Left(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([http::Method::GET, http::Method::POST, http::Method::OPTIONS])
            .allow_headers(tower_http::cors::Any)
            .max_age(Duration::from_secs(600)),
    )
}

async fn bind(key: &'static str, addr: SocketAddr) -> Result<TcpListener, AppError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Bind { key, addr, source })
}

/// An app whose listeners are bound.
pub struct Bound {
    app: App,
    public: TcpListener,
    admin: TcpListener,
    webhook: TcpListener,
    /// Re-reads the configuration file on SIGHUP, when there is one.
    reload: Option<Reload>,
}

impl Bound {
    pub fn public_addr(&self) -> SocketAddr {
        self.public
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn webhook_addr(&self) -> SocketAddr {
        self.webhook
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn registry(&self) -> Arc<Registry> {
        self.app.registry.clone()
    }

    /// Field routes; a configuration reload swaps their rules in place.
    pub fn routes(&self) -> Arc<Routes> {
        self.app.routes.clone()
    }

    /// The count limits; a configuration reload sets them.
    pub fn count_limits(&self) -> Arc<CountLimits> {
        self.app.count_limits.clone()
    }

    pub fn health(&self) -> Arc<Health> {
        self.app.health.clone()
    }

    /// Applies the configuration file again on every SIGHUP while running.
    pub fn reload_on_sighup(mut self, reload: Reload) -> Self {
        self.reload = Some(reload);
        self
    }

    /// Serves until `shutdown` is triggered, then drains ([`Drain`]):
    /// readiness turns false at once, listeners stop accepting and new
    /// upgrades are refused, requests in flight get `server.drain_timeout`
    /// to finish, and open sockets are closed with `1001` when it is over.
    /// Until then subscribers keep receiving events: the webhook and the
    /// dispatcher run to the end.
    pub async fn run(self, shutdown: Shutdown) {
        let app = self.app;
        tracing::info!(
            public = %self.public.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            webhook = %self.webhook.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            admin = %self.admin.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            upstream = %app.config.upstream.url,
            "subcar listening"
        );
        // Every task below is spawned on one of the drain's groups, which
        // stop in order: public, then realtime, then admin.
        let drain = Drain::new(shutdown, app.config.server.drain_timeout);
        let shutdown = drain.public().clone();
        let realtime = drain.realtime().clone();
        // Introspection until the upstream answers, then every
        // schema.refresh_interval and on SIGHUP.
        shutdown.spawn(app.refresher().run(shutdown.clone()));
        // JWKS from a URL: fetched now and kept fresh, one task per process.
        app.auth.keep_fresh(&shutdown);
        shutdown.spawn(health::probe_upstream(
            app.health.clone(),
            app.upstream.clone(),
            shutdown.clone(),
        ));
        // The realtime path: bus → dispatcher → connection outboxes. The
        // bus connects (and reconnects) in tasks of its own, which run as
        // long as the dispatcher and the webhook do (through the drain).
        app.bus.start(&realtime);
        Dispatcher::spawn(
            app.registry.clone(),
            app.routes.clone(),
            app.bus.subscribe(),
            &realtime,
            app.config.limits.outbound_queue,
            app.metrics.dispatch_latency.clone(),
            app.enricher.clone(),
        );
        // Registry and bus state into /metrics, off the hot path.
        realtime.spawn(sampler::run(
            app.registry.clone(),
            app.bus.clone(),
            app.enricher.stats(),
            app.metrics.clone(),
            realtime.clone(),
        ));
        // Header and idle timeouts hold on every listener alike.
        let timeouts = server::ConnTimeouts {
            header: app.config.server.header_timeout,
            idle: app.config.server.idle_timeout,
        };
        shutdown.spawn(server::serve(
            self.public,
            app.tls.clone(),
            app.public_service(&shutdown, &realtime),
            timeouts,
            shutdown.clone(),
        ));
        // Events from the upstream on the internal listener; requests in
        // flight finish on drain like any other.
        realtime.spawn(server::serve(
            self.webhook,
            None,
            app.webhook_service(),
            timeouts,
            realtime.clone(),
        ));
        // The admin listener outlives the drain so probes can watch it; the
        // reload task stops with it.
        let admin = drain.admin();
        admin.spawn(server::serve(
            self.admin,
            None,
            app.admin_router(),
            timeouts,
            admin.clone(),
        ));
        if let Some(reload) = self.reload {
            let targets = reload::Targets {
                routes: app.routes.clone(),
                count_limits: app.count_limits.clone(),
                schema: app.schema.clone(),
                upstream: app.upstream.clone(),
                auth: app.auth.clone(),
                webhook: app.webhook.clone(),
                connection_attempts: app.attempts.clone(),
                requests: app.requests.clone(),
                messages: app.messages.clone(),
                session_limits: app.session_limits.clone(),
                applied: app.applied.clone(),
                registry: app.registry.clone(),
            };
            admin.spawn(reload.on_sighup(targets, admin.clone()));
        }
        drain.requested().await;
        let ends = drain.stop_accepting(&app.health);
        let requests = drain.wait_with_grace(ends, &app.registry).await;
        let sockets = drain.close_sessions().await;
        let requests = requests || drain.finish_streams().await;
        drain.exit(Drained { requests, sockets }).await;
    }
}
