//! The live merged schema: loaded from the configured files at start-up and
//! swapped atomically when it changes.

use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::config::SchemaConfig;
use crate::graphql::{Schema, SchemaError};

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
}

/// A shared handle on the current schema. Readers take an `Arc` snapshot and
/// never hold the lock across work.
#[derive(Clone)]
pub struct LiveSchema(Arc<RwLock<Arc<Schema>>>);

impl LiveSchema {
    pub fn new(schema: Schema) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(schema))))
    }

    pub fn current(&self) -> Arc<Schema> {
        self.0.read().clone()
    }

    pub fn replace(&self, schema: Schema) {
        *self.0.write() = Arc::new(schema);
    }
}

/// Reads the subscription SDL and, when configured, the upstream SDL file.
pub fn load(config: &SchemaConfig) -> Result<Schema, SchemaLoadError> {
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
    Ok(Schema::build(&subscription_sdl, upstream_sdl.as_deref())?)
}
