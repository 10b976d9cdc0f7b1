//! The live merged schema: the subscription SDL merged with the upstream's
//! schema, from `schema.upstream_sdl` or learned by introspection. When the
//! upstream is not up at start-up, subcar starts with the local types and
//! keeps introspecting in the background; the merged schema is swapped in
//! atomically once it arrives.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use parking_lot::RwLock;

use crate::config::{DocumentLimits, SchemaConfig};
use crate::graphql::{INTROSPECTION_QUERY, Schema, SchemaError};
use crate::proxy::{ProxyError, Upstream};
use crate::shutdown::Shutdown;

const RETRY_MIN: Duration = Duration::from_secs(1);
/// An upstream that starts after subcar (the usual order in a pod) is
/// noticed within this long: the retries go 1 s, 2 s, 4 s, then every 5 s.
const RETRY_MAX: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum SchemaLoadError {
    #[error("{key}: cannot read {path}: {source}")]
    Read {
        key: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Invalid(#[from] SchemaError),
    #[error("introspecting the upstream failed")]
    Upstream(#[from] ProxyError),
    #[error("the upstream's introspection answer is not usable: {0}")]
    BadIntrospection(String),
}

/// Where the upstream part of the merged schema comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamPart {
    /// `schema.upstream_sdl`.
    Sdl,
    /// Introspection of the upstream, done.
    Introspection,
    /// Introspection of the upstream, not answered yet.
    Pending,
    /// Neither configured: the subscription SDL stands alone.
    None,
}

/// A shared handle on the current schema. Readers take an `Arc` snapshot and
/// never hold the lock across work.
#[derive(Clone)]
pub struct LiveSchema {
    current: Arc<RwLock<(Arc<Schema>, UpstreamPart)>>,
    subscription_sdl: Arc<str>,
    /// Applied to every schema built, also the one introspection brings.
    limits: DocumentLimits,
    introspection: bool,
}

impl LiveSchema {
    pub fn current(&self) -> Arc<Schema> {
        self.current.read().0.clone()
    }

    pub fn upstream_part(&self) -> UpstreamPart {
        self.current.read().1
    }

    fn replace(&self, schema: Schema, part: UpstreamPart) {
        *self.current.write() = (Arc::new(schema), part);
    }

    /// Introspects the upstream once and merges the answer in. A conflict
    /// between the two schemas is an error; so is an unreachable upstream.
    pub async fn introspect(&self, upstream: &Upstream) -> Result<(), SchemaLoadError> {
        let body = serde_json::json!({ "query": INTROSPECTION_QUERY }).to_string();
        let (status, bytes) = upstream
            .post_graphql(Bytes::from(body), &HeaderMap::new())
            .await?;
        let json: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            SchemaLoadError::BadIntrospection(format!("HTTP {status}, body is not JSON: {e}"))
        })?;
        if json.get("data").is_none_or(|d| d.is_null()) {
            let errors = json
                .get("errors")
                .map(|e| e.to_string())
                .unwrap_or_default();
            return Err(SchemaLoadError::BadIntrospection(format!(
                "HTTP {status}, no data (is introspection disabled upstream? then set schema.upstream_sdl) {errors}"
            )));
        }
        let schema = Schema::build_with_introspection(&self.subscription_sdl, &json)?
            .with_document_policy(self.limits.clone(), self.introspection);
        self.replace(schema, UpstreamPart::Introspection);
        Ok(())
    }

    /// Retries [`Self::introspect`] with backoff until it succeeds or
    /// shutdown. Subscriptions that need upstream types answer
    /// `SCHEMA_NOT_READY` meanwhile.
    pub async fn introspect_in_background(self, upstream: Upstream, shutdown: Shutdown) {
        let mut delay = RETRY_MIN;
        loop {
            tokio::select! {
                _ = shutdown.triggered() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            match self.introspect(&upstream).await {
                Ok(()) => {
                    tracing::info!(
                        "upstream schema learned by introspection; merged schema in use"
                    );
                    return;
                }
                Err(e @ SchemaLoadError::Invalid(_)) => {
                    tracing::error!(error = %e, "upstream schema conflicts with schema.path; subscriptions needing upstream types stay unavailable");
                }
                Err(e) => {
                    tracing::warn!(error = %crate::log::error_chain(&e), retry_in = ?delay, "upstream schema not available yet");
                }
            }
            delay = (delay * 2).min(RETRY_MAX);
        }
    }
}

/// Reads the configured files and builds the schema known without the
/// network: the subscription SDL, merged with `schema.upstream_sdl` if set.
/// Documents prepared against it are capped by `limits`.
pub fn load(config: &SchemaConfig, limits: &DocumentLimits) -> Result<LiveSchema, SchemaLoadError> {
    let read = |key: &'static str, path: &PathBuf| {
        std::fs::read_to_string(path).map_err(|source| SchemaLoadError::Read {
            key,
            path: path.clone(),
            source,
        })
    };
    let subscription_sdl = read("schema.path", &config.path)?;
    let upstream_sdl = config
        .upstream_sdl
        .as_ref()
        .map(|p| read("schema.upstream_sdl", p))
        .transpose()?;
    let schema = Schema::build(&subscription_sdl, upstream_sdl.as_deref())?
        .with_document_policy(limits.clone(), config.introspection);
    let part = match (&upstream_sdl, config.introspect_upstream) {
        (Some(_), _) => UpstreamPart::Sdl,
        (None, true) => UpstreamPart::Pending,
        (None, false) => UpstreamPart::None,
    };
    Ok(LiveSchema {
        current: Arc::new(RwLock::new((Arc::new(schema), part))),
        subscription_sdl: subscription_sdl.into(),
        limits: limits.clone(),
        introspection: config.introspection,
    })
}
