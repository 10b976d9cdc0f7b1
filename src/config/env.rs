//! `SUBCAR_<SECTION>__<KEY>` environment overrides, applied to the parsed
//! TOML table before it is typed, so an override is checked like the file.

use super::ConfigError;

/// The prefix of environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "SUBCAR_";

/// Applies `SUBCAR_<SECTION>__<KEY>=value` overrides to the parsed table.
/// Values are read as TOML when they parse as a TOML value (numbers, booleans,
/// arrays), otherwise as plain strings.
/// Returns each overridden key (`section.key`) with its variable's name.
pub(super) fn apply_env_overrides(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut problems = Vec::new();
    let mut overridden = Vec::new();
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if !rest.contains("__") {
            // SUBCAR_CONFIG and other process-level variables, not keys.
            continue;
        }
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        let value = parse_env_value(&raw);
        if let Err(key) = insert_at(table, &path, value) {
            problems.push(format!(
                "{name}: {key} is not a section: expected SUBCAR_<SECTION>__<KEY> (or SUBCAR_<SECTION>__<INDEX>__<KEY> for an entry of an array of tables that the file has)"
            ));
        } else {
            overridden.push((dotted(&path), name));
        }
    }
    if problems.is_empty() {
        Ok(overridden)
    } else {
        Err(ConfigError::Invalid(problems))
    }
}

/// Problems with a key set by an environment variable name the variable
/// first: that is where the value has to be fixed, not in the file.
pub(super) fn name_variables(e: ConfigError, overridden: &[(String, String)]) -> ConfigError {
    let ConfigError::Invalid(problems) = e else {
        return e;
    };
    let named = problems
        .into_iter()
        .map(|p| {
            let var = overridden.iter().find(|(key, _)| {
                p.strip_prefix(key.as_str())
                    .is_some_and(|rest| rest.starts_with([':', '.', '[']))
            });
            match var {
                Some((_, var)) => format!("{var}: {p}"),
                None => p,
            }
        })
        .collect();
    ConfigError::Invalid(named)
}

fn insert_at(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    match path {
        [] => Ok(()),
        [last] => {
            table.insert(last.clone(), value);
            Ok(())
        }
        [section, rest @ ..] => match table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        {
            toml::Value::Table(t) => insert_at(t, rest, value),
            // An array of tables (`[[triggers]]`): the next part is the
            // index of an entry the file has.
            toml::Value::Array(items) => {
                let (index, rest) = rest.split_first().ok_or_else(|| section.clone())?;
                match index.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                    Some(toml::Value::Table(t)) if !rest.is_empty() => insert_at(t, rest, value),
                    _ => Err(format!("{section}[{index}]")),
                }
            }
            _ => Err(section.clone()),
        },
    }
}

/// `triggers.0.topic` as problems name it: `triggers[0].topic`.
fn dotted(path: &[String]) -> String {
    let mut key = String::new();
    for part in path {
        if part.bytes().all(|b| b.is_ascii_digit()) && !key.is_empty() {
            key.push_str(&format!("[{part}]"));
        } else {
            if !key.is_empty() {
                key.push('.');
            }
            key.push_str(part);
        }
    }
    key
}

fn parse_env_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::Config;
    use crate::config::tests::MINIMAL;

    #[test]
    fn env_overrides_keys_with_typed_values() {
        let env = [
            (
                "SUBCAR_SERVER__LISTEN".to_string(),
                "127.0.0.1:5000".to_string(),
            ),
            (
                "SUBCAR_LIMITS__MAX_CONNECTIONS".to_string(),
                "7".to_string(),
            ),
            ("SUBCAR_UPSTREAM__TIMEOUT".to_string(), "2s".to_string()),
            ("SUBCAR_CONFIG".to_string(), "ignored.toml".to_string()),
            ("OTHER__THING".to_string(), "x".to_string()),
        ];
        let c = Config::parse(MINIMAL, env).unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:5000");
        assert_eq!(c.limits.max_connections, 7);
        assert_eq!(c.upstream.timeout, Duration::from_secs(2));
    }

    #[test]
    fn env_override_with_bad_value_names_key() {
        let env = [(
            "SUBCAR_LIMITS__MAX_CONNECTIONS".to_string(),
            "lots".to_string(),
        )];
        let msg = Config::parse(MINIMAL, env).unwrap_err().to_string();
        assert!(msg.contains("limits.max_connections"), "{msg}");
        assert!(msg.contains("lots"), "{msg}");
        assert!(
            msg.starts_with("SUBCAR_LIMITS__MAX_CONNECTIONS: limits.max_connections:"),
            "the variable is named first: {msg}"
        );
    }

    #[test]
    fn env_override_out_of_range_names_the_variable_and_file_problems_do_not() {
        let env = [(
            "SUBCAR_LIMITS__MAX_CONNECTIONS".to_string(),
            "0".to_string(),
        )];
        let text = format!("{MINIMAL}\n[heartbeat]\ninterval = \"0s\"");
        let msg = Config::parse(&text, env).unwrap_err().to_string();
        let lines: Vec<&str> = msg.lines().collect();
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("SUBCAR_LIMITS__MAX_CONNECTIONS: limits.max_connections: 0")),
            "{msg}"
        );
        assert!(
            lines.iter().any(|l| l.starts_with("heartbeat.interval:")),
            "a key from the file is named as before: {msg}"
        );
    }

    #[test]
    fn env_overrides_are_range_checked_too() {
        let err = Config::parse(
            MINIMAL,
            [(
                "SUBCAR_HEARTBEAT__INTERVAL".to_owned(),
                "1000000000y".to_owned(),
            )],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("heartbeat.interval"), "{err}");
    }
}
