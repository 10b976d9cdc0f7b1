//! `[log]`: the log format and the default `RUST_LOG`-style filter.

use serde::Deserialize;

use super::values::Problems;

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// `RUST_LOG`-style directives; the `RUST_LOG` variable wins when set.
    pub filter: String,
    /// Audit lines (target `subcar::audit`) for connections, subscriptions
    /// and webhook requests.
    pub audit: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            filter: "info".into(),
            audit: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl LogConfig {
    /// The filter in force: `log.filter`, and the audit target at `info`
    /// when `log.audit` is on, whatever the rest says.
    pub fn directives(&self) -> String {
        if self.audit {
            format!("{},{}=info", self.filter, crate::log::AUDIT_TARGET)
        } else {
            self.filter.clone()
        }
    }

    pub(super) fn check(&self, p: &mut Problems) {
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.filter) {
            p.push(format!(
                "log.filter: {:?} is invalid ({e}): expected directives like \"info,subcar=debug\"",
                self.filter
            ));
        }
    }
}
