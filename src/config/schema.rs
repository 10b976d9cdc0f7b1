//! `[schema]`: where the subscription SDL and the upstream's schema come from.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::values::{DAY, Problems, duration, resolve, show};

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
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
    /// How often the upstream is introspected again (when its schema comes
    /// from introspection); zero turns it off.
    #[serde(default = "five_minutes", deserialize_with = "duration")]
    pub refresh_interval: Duration,
}

fn yes() -> bool {
    true
}

fn five_minutes() -> Duration {
    Duration::from_secs(300)
}

/// The shortest `schema.refresh_interval` above zero: an introspection
/// answer can be large, and schemas change with deployments, not by the
/// second.
const MIN_REFRESH: Duration = Duration::from_secs(1);

impl SchemaConfig {
    /// Whether the upstream's `Query` type is known (enrichment needs it).
    pub(super) fn knows_upstream(&self) -> bool {
        self.introspect_upstream || self.upstream_sdl.is_some()
    }

    pub(super) fn check(&self, p: &mut Problems) {
        let every = self.refresh_interval;
        if !every.is_zero() && !(MIN_REFRESH..=DAY).contains(&every) {
            p.push(format!(
                "schema.refresh_interval: {:?} is out of range: expected \"0s\" (off) or a duration from {} to {}",
                show(every),
                show(MIN_REFRESH),
                show(DAY)
            ));
        }
    }

    pub(super) fn resolve_paths(&mut self, base: &Path) {
        resolve(base, &mut self.path);
        if let Some(p) = &mut self.upstream_sdl {
            resolve(base, p);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::tests::{MINIMAL, parse, problems};

    #[test]
    fn refresh_interval_defaults_to_five_minutes_and_zero_turns_it_off() {
        assert_eq!(
            parse(MINIMAL).unwrap().schema.refresh_interval,
            Duration::from_secs(300)
        );
        let with = |v: &str| format!("{MINIMAL}refresh_interval = \"{v}\"\n");
        assert!(
            parse(&with("0s"))
                .unwrap()
                .schema
                .refresh_interval
                .is_zero()
        );
        let msg = problems(&with("10ms"));
        assert!(
            msg.contains("schema.refresh_interval: \"10ms\" is out of range: expected \"0s\" (off) or a duration from 1s to 1day"),
            "{msg}"
        );
        let msg = problems(&with("soon"));
        assert!(
            msg.contains("schema.refresh_interval") && msg.contains("soon"),
            "{msg}"
        );
    }
}
