//! `subcar init`: writes a commented starting configuration (`subcar.toml`)
//! and a subscription schema (`schema.graphql`) with one example field, for
//! a given upstream URL. Nothing is overwritten unless asked.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config::UpstreamUrl;

/// The configuration template; `{{upstream_url}}` becomes a TOML string.
const CONFIG_TEMPLATE: &str = include_str!("subcar.toml");
/// The subscription schema, with its example field.
pub const SCHEMA: &str = include_str!("schema.graphql");

/// The names of the files `init` writes, in its output directory.
pub const CONFIG_FILE: &str = "subcar.toml";
pub const SCHEMA_FILE: &str = "schema.graphql";

/// Why `subcar init` wrote nothing (or, for [`InitError::Write`], stopped).
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("--upstream: {0}")]
    Upstream(String),
    #[error("{}; pass --force to overwrite", existing(.0))]
    Exists(Vec<PathBuf>),
    #[error("cannot create the directory {}", .path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn existing(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    let verb = if names.len() == 1 { "exists" } else { "exist" };
    format!("{} already {verb}", names.join(" and "))
}

/// Checks `raw` as `upstream.url` would be checked when the file is loaded.
pub fn parse_upstream(raw: &str) -> Result<UpstreamUrl, InitError> {
    toml::Value::String(raw.to_owned())
        .try_into::<UpstreamUrl>()
        .map_err(|e| InitError::Upstream(e.message().to_owned()))
}

/// The starting configuration for `upstream`.
pub fn render_config(upstream: &UpstreamUrl) -> String {
    let quoted = toml::Value::String(upstream.to_string()).to_string();
    CONFIG_TEMPLATE.replace("{{upstream_url}}", &quoted)
}

/// Writes `subcar.toml` and `schema.graphql` into `out` (created if
/// missing). Without `force`, refuses before writing anything when either
/// file exists. Returns the paths written.
pub fn write(upstream: &str, out: &Path, force: bool) -> Result<Vec<PathBuf>, InitError> {
    let upstream = parse_upstream(upstream)?;
    let files = [
        (out.join(CONFIG_FILE), render_config(&upstream)),
        (out.join(SCHEMA_FILE), SCHEMA.to_owned()),
    ];
    if !force {
        let existing: Vec<PathBuf> = files
            .iter()
            .map(|(path, _)| path.clone())
            .filter(|path| path.exists())
            .collect();
        if !existing.is_empty() {
            return Err(InitError::Exists(existing));
        }
    }
    std::fs::create_dir_all(out).map_err(|source| InitError::CreateDir {
        path: out.to_owned(),
        source,
    })?;
    for (path, text) in &files {
        // create_new: a file that appeared since the check is not clobbered.
        let mut options = std::fs::OpenOptions::new();
        options.write(true);
        if force {
            options.create(true).truncate(true);
        } else {
            options.create_new(true);
        }
        options
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|source| InitError::Write {
                path: path.clone(),
                source,
            })?;
    }
    Ok(files.into_iter().map(|(path, _)| path).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_is_written_as_a_toml_string() {
        let url = parse_upstream("http://api.internal:8080/graphql?x=1").unwrap();
        let text = render_config(&url);
        let value: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(
            value["upstream"]["url"].as_str(),
            Some("http://api.internal:8080/graphql?x=1")
        );
        assert!(!text.contains("{{"));
    }

    #[test]
    fn a_url_the_config_would_refuse_is_refused() {
        for bad in ["api:8080", "ftp://host/graphql", "", "http://a b/"] {
            let err = parse_upstream(bad).unwrap_err();
            assert!(
                matches!(&err, InitError::Upstream(m) if m.contains("expected")),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn both_existing_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        write("http://127.0.0.1:8080/graphql", dir.path(), false).unwrap();
        let err = write("http://127.0.0.1:8080/graphql", dir.path(), false).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("subcar.toml and ") && text.contains("schema.graphql already exist;"),
            "{text}"
        );
    }

    #[test]
    fn existing_files_are_kept_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SCHEMA_FILE), "mine").unwrap();
        let err = write("http://127.0.0.1:8080/graphql", dir.path(), false).unwrap_err();
        assert!(
            matches!(&err, InitError::Exists(p) if p.len() == 1),
            "{err}"
        );
        assert!(err.to_string().contains("--force"));
        assert!(!dir.path().join(CONFIG_FILE).exists(), "nothing written");
        assert_eq!(
            std::fs::read_to_string(dir.path().join(SCHEMA_FILE)).unwrap(),
            "mine"
        );

        let written = write("http://127.0.0.1:8080/graphql", dir.path(), true).unwrap();
        assert_eq!(written.len(), 2);
        assert_eq!(
            std::fs::read_to_string(dir.path().join(SCHEMA_FILE)).unwrap(),
            SCHEMA
        );
    }
}
