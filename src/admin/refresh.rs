//! Keeping the upstream's part of the schema fresh: introspected until it
//! first answers (with backoff), then again every `schema.refresh_interval`
//! and on SIGHUP. A refresh is put in use only when it merges with the
//! subscription SDL and still serves every `[subscriptions.resolve]`;
//! otherwise the last good schema stays, and the failure shows in
//! `/readyz` and `/metrics`. Subscriptions prepared earlier keep the schema
//! they were prepared with; new ones see the refreshed one at once.

use std::sync::Arc;
use std::time::Duration;

use crate::graphql::fetch::ResolveSchemaError;
use crate::log::error_chain;
use crate::metrics::Metrics;
use crate::proxy::Upstream;
use crate::proxy::schema::{LiveSchema, SchemaLoadError, UpstreamPart};
use crate::shutdown::Shutdown;
use crate::subscriptions::Routes;

const RETRY_MIN: Duration = Duration::from_secs(1);
/// An upstream that starts after subcar (the usual order in a pod) is
/// noticed within this long: the retries go 1 s, 2 s, 4 s, then every 5 s.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Why an introspection was not put in use.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error(transparent)]
    Load(#[from] SchemaLoadError),
    #[error("the refreshed upstream schema no longer serves [subscriptions.resolve]")]
    Resolve(#[from] Box<ResolveSchemaError>),
}

/// The refresh task's parts; the composition root hands them over.
pub struct Refresher {
    pub schema: LiveSchema,
    pub upstream: Upstream,
    pub routes: Arc<Routes>,
    /// Its live subscriptions are re-checked against each new schema.
    pub registry: Arc<crate::subscriptions::Registry>,
    pub metrics: Arc<Metrics>,
    /// `schema.refresh_interval`; zero: on SIGHUP only.
    pub interval: Duration,
}

impl Refresher {
    /// Introspects once; on success the new schema is in use.
    pub async fn once(&self) -> Result<(), RefreshError> {
        let result = async {
            let schema = self.schema.fetch(&self.upstream).await?;
            self.routes.check_resolve(&schema)?;
            self.schema.install(schema);
            self.registry.recheck(&self.routes, &self.schema.current());
            Ok(())
        }
        .await;
        match &result {
            Ok(()) => self.metrics.schema_refreshed(),
            Err(e) => {
                self.metrics.schema_refresh_failures.inc();
                self.schema.record_failure(error_chain(e));
            }
        }
        result
    }

    /// Runs until shutdown; returns at once when the upstream's schema does
    /// not come from introspection.
    pub async fn run(self, shutdown: Shutdown) {
        if self.schema.upstream_part() == UpstreamPart::Pending && !self.learn(&shutdown).await {
            return;
        }
        if self.schema.upstream_part() != UpstreamPart::Introspection {
            return;
        }
        loop {
            let every = async {
                if self.interval.is_zero() {
                    std::future::pending().await
                } else {
                    tokio::time::sleep(self.interval).await
                }
            };
            tokio::select! {
                _ = shutdown.triggered() => return,
                _ = every => {}
                _ = self.schema.refresh_requested() => {}
            }
            match self.once().await {
                Ok(()) => tracing::debug!("upstream schema refreshed"),
                Err(e) => tracing::warn!(
                    error = %error_chain(&e),
                    "upstream schema refresh failed; the last good schema stays in use"
                ),
            }
        }
    }

    /// Retries [`Self::once`] with backoff until it succeeds (true) or
    /// shutdown (false). Subscriptions that need upstream types answer
    /// `SCHEMA_NOT_READY` meanwhile.
    async fn learn(&self, shutdown: &Shutdown) -> bool {
        let mut delay = RETRY_MIN;
        loop {
            tokio::select! {
                _ = shutdown.triggered() => return false,
                _ = tokio::time::sleep(delay) => {}
                _ = self.schema.refresh_requested() => {}
            }
            match self.once().await {
                Ok(()) => {
                    tracing::info!(
                        "upstream schema learned by introspection; merged schema in use"
                    );
                    return true;
                }
                Err(
                    e
                    @ (RefreshError::Load(SchemaLoadError::Invalid(_)) | RefreshError::Resolve(_)),
                ) => {
                    tracing::error!(error = %error_chain(&e), "upstream schema does not fit schema.path or [subscriptions.resolve]; subscriptions needing upstream types stay unavailable");
                }
                Err(e) => {
                    tracing::warn!(error = %error_chain(&e), retry_in = ?delay, "upstream schema not available yet");
                }
            }
            delay = (delay * 2).min(RETRY_MAX);
        }
    }
}
