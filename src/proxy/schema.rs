//! The live merged schema: the subscription SDL merged with the upstream's
//! schema, from `schema.upstream_sdl` or learned by introspection. When the
//! upstream is not up at start-up, subcar starts with the local types and
//! keeps introspecting in the background; the merged schema is swapped in
//! atomically once it arrives, and again at each refresh
//! ([`crate::admin::refresh`]). A failed refresh keeps the schema in use and
//! is recorded here for `/readyz`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::HeaderMap;
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;

use crate::config::{DocumentLimits, SchemaConfig};
use crate::graphql::{INTROSPECTION_QUERY, Schema, SchemaError};
use crate::proxy::{ProxyError, Upstream};

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

/// How the last introspection of the upstream went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RefreshOutcome {
    Ok,
    /// The schema in use is the last good one.
    Failed,
}

/// The last introspection's outcome; all `None` before the first.
#[derive(Debug, Clone, Default)]
pub struct RefreshStatus {
    pub last: Option<RefreshOutcome>,
    /// Why the last one failed.
    pub error: Option<String>,
    /// When the schema in use was learned.
    pub succeeded_at: Option<SystemTime>,
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
    refresh: Arc<Refresh>,
}

#[derive(Default)]
struct Refresh {
    status: Mutex<RefreshStatus>,
    /// SIGHUP asks the refresh task for an introspection now.
    wanted: Notify,
}

impl LiveSchema {
    pub fn current(&self) -> Arc<Schema> {
        self.current.read().0.clone()
    }

    pub fn upstream_part(&self) -> UpstreamPart {
        self.current.read().1
    }

    /// Introspects the upstream and merges the answer with the subscription
    /// SDL, without putting the result in use ([`Self::install`] does). A
    /// conflict between the two schemas is an error; so is an unreachable
    /// upstream.
    pub async fn fetch(&self, upstream: &Upstream) -> Result<Schema, SchemaLoadError> {
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
        Ok(
            Schema::build_with_introspection(&self.subscription_sdl, &json)?
                .with_document_policy(self.limits.clone(), self.introspection),
        )
    }

    /// Puts a schema [`Self::fetch`] built in use: operations prepared from
    /// now on see it; those already prepared keep theirs.
    pub fn install(&self, schema: Schema) {
        *self.current.write() = (Arc::new(schema), UpstreamPart::Introspection);
        *self.refresh.status.lock() = RefreshStatus {
            last: Some(RefreshOutcome::Ok),
            error: None,
            succeeded_at: Some(SystemTime::now()),
        };
    }

    /// Records a failed introspection; the schema in use stays.
    pub fn record_failure(&self, error: String) {
        let mut status = self.refresh.status.lock();
        status.last = Some(RefreshOutcome::Failed);
        status.error = Some(error);
    }

    pub fn refresh_status(&self) -> RefreshStatus {
        self.refresh.status.lock().clone()
    }

    /// Asks the refresh task to introspect now (SIGHUP).
    pub fn request_refresh(&self) {
        self.refresh.wanted.notify_one();
    }

    /// Resolves when [`Self::request_refresh`] was called (once per call,
    /// also for a call made before waiting).
    pub async fn refresh_requested(&self) {
        self.refresh.wanted.notified().await;
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
        refresh: Arc::default(),
    })
}
