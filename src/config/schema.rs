//! `[schema]`: where the subscription SDL and the upstream's schema come from.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::values::resolve;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaConfig {
    /// SDL file holding `type Subscription` (or `extend type Subscription`).
    pub path: PathBuf,
    /// Learn the upstream schema by introspection at start-up.
    #[serde(default = "yes")]
    pub introspect_upstream: bool,
    /// The upstream schema as an SDL file, instead of introspection.
    #[serde(default)]
    pub upstream_sdl: Option<PathBuf>,
    /// Answer introspection (`__schema`, `__type`) and serve
    /// `{graphql_path}/schema.graphql`; `false` refuses both, for APIs that
    /// do not publish their schema.
    #[serde(default = "yes")]
    pub introspection: bool,
}

fn yes() -> bool {
    true
}

impl SchemaConfig {
    /// Whether the upstream's `Query` type is known (enrichment needs it).
    pub(super) fn knows_upstream(&self) -> bool {
        self.introspect_upstream || self.upstream_sdl.is_some()
    }

    pub(super) fn resolve_paths(&mut self, base: &Path) {
        resolve(base, &mut self.path);
        if let Some(p) = &mut self.upstream_sdl {
            resolve(base, p);
        }
    }
}
