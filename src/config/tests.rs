//! Tests of the whole tree: defaults, the example file, how problems are
//! reported, redaction of the printed tree. Each section's own tests are in
//! its file; they share [`MINIMAL`], [`parse`] and [`problems`].

use std::path::Path;
use std::time::Duration;

use super::*;

/// The smallest valid file: the two sections without defaults.
pub(super) const MINIMAL: &str = r#"
        [upstream]
        url = "http://127.0.0.1:8080/graphql"
        [schema]
        path = "schema.graphql"
    "#;

pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, std::iter::empty())
}

/// The report of a `text` that must be refused.
pub(super) fn problems(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

#[test]
fn minimal_config_gets_documented_defaults() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.server.listen.to_string(), "0.0.0.0:4000");
    assert_eq!(c.server.graphql_path, "/graphql");
    assert_eq!(c.webhook.listen.to_string(), "127.0.0.1:4001");
    assert_eq!(c.admin.listen.to_string(), "127.0.0.1:9464");
    assert_eq!(c.heartbeat.interval, Duration::from_secs(15));
    assert_eq!(c.heartbeat.init_timeout, Duration::from_secs(3));
    assert_eq!(c.webhook.dedup_window, Duration::from_secs(600));
    assert_eq!(c.bus.kind, BusKind::Memory);
}

#[test]
fn example_file_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
    let c = Config::load(&path, std::iter::empty()).unwrap();
    let defaults = parse(MINIMAL).unwrap();
    // The example documents defaults: it must not silently differ from them.
    assert_eq!(c.server.drain_timeout, defaults.server.drain_timeout);
    assert_eq!(c.limits.outbound_queue, defaults.limits.outbound_queue);
    assert_eq!(c.webhook.max_body_bytes, defaults.webhook.max_body_bytes);
    assert_eq!(c.auth.mode, defaults.auth.mode);
    assert_eq!(c.auth.proxy, defaults.auth.proxy);
    assert_eq!(c.auth.jwt.leeway, defaults.auth.jwt.leeway);
    assert_eq!(c.auth.upstream.cache_ttl, defaults.auth.upstream.cache_ttl);
    assert_eq!(c.heartbeat.timeout, defaults.heartbeat.timeout);
    assert_eq!(
        c.limits.max_subscriptions_per_connection,
        defaults.limits.max_subscriptions_per_connection
    );
    assert!(c.rate_limits.requests_per_ip.is_none());
    assert!(c.schema.path.is_absolute() || c.schema.path.exists());
}

#[test]
fn unknown_key_names_section_and_key() {
    let msg = problems(&format!("{MINIMAL}\n[server]\nlisten_addr = \"x\""));
    assert!(msg.contains("server"), "{msg}");
    assert!(msg.contains("listen_addr"), "{msg}");
}

#[test]
fn bad_duration_names_key_value_and_expectation() {
    let msg = problems(&format!(
        "{MINIMAL}\n[heartbeat]\ninterval = \"15 parsecs\""
    ));
    assert!(msg.contains("heartbeat.interval"), "{msg}");
    assert!(msg.contains("15 parsecs"), "{msg}");
    assert!(msg.contains("\"15s\""), "{msg}");
}

#[test]
fn bad_url_is_rejected() {
    let msg = problems("[upstream]\nurl = \"localhost\"\n[schema]\npath = \"s\"");
    assert!(msg.contains("upstream.url"), "{msg}");
    assert!(msg.contains("localhost"), "{msg}");
}

#[test]
fn missing_required_key_is_named() {
    let msg = problems("[schema]\npath = \"s\"");
    assert!(msg.contains("upstream"), "{msg}");
}

#[test]
fn semantic_problems_are_all_reported_at_once() {
    let msg = problems(&format!(
        "{MINIMAL}\n[limits]\noutbound_queue = 0\n[server]\ngraphql_path = \"graphql\""
    ));
    assert!(msg.contains("limits.outbound_queue"), "{msg}");
    assert!(msg.contains("server.graphql_path"), "{msg}");
}

#[test]
fn listener_timeouts_default_and_are_range_checked() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.server.header_timeout, Duration::from_secs(10));
    assert_eq!(c.server.idle_timeout, Duration::from_secs(60));
    assert_eq!(c.server.body_timeout, Duration::from_secs(10));
    assert_eq!(c.webhook.body_timeout, Duration::from_secs(10));
    let msg = problems(&format!(
        "{MINIMAL}\n[server]\nheader_timeout = \"0s\"\nidle_timeout = \"3d\"\nbody_timeout = \"2h\"\n[webhook]\nbody_timeout = \"0s\""
    ));
    for key in [
        "server.header_timeout",
        "server.idle_timeout",
        "server.body_timeout",
        "webhook.body_timeout",
    ] {
        assert!(msg.contains(key), "{key}: {msg}");
    }
}

#[test]
fn any_origin_is_warned_about() {
    assert!(parse(MINIMAL).unwrap().warnings().is_empty());
    let w = parse(&format!(
        "{MINIMAL}\n[server]\ncors_origins = [\"*\"]\n[auth]\ncookie = \"session\""
    ))
    .unwrap()
    .warnings();
    assert_eq!(w.len(), 1);
    assert!(
        w[0].contains("server.cors_origins") && w[0].contains("auth.cookie"),
        "{w:?}"
    );
}

#[test]
fn secrets_are_not_printed() {
    let c = parse(&format!(
        "{MINIMAL}\n[webhook]\nsecret = \"whsec_c2VjcmV0\""
    ))
    .unwrap();
    assert!(!format!("{c:?}").contains("c2VjcmV0"));
}

#[test]
fn secrets_in_url_keys_are_never_printed() {
    let text = MINIMAL.replace("http://127.0.0.1", "http://admin:hunter2@127.0.0.1")
        + "[auth]\nmode = \"jwt\"\n[auth.jwt]\njwks_url = \"https://k:hunter2@idp/jwks?token=hunter2\"\n\
           [bus]\nkind = \"nats\"\nurl = \"nats://hunter2@n1:4222\"\n";
    let c = parse(&text).unwrap();
    for printed in [
        format!("{c:?}"),
        format!("{c:#?}"),
        c.upstream.url.to_string(),
    ] {
        assert!(!printed.contains("hunter2"), "{printed}");
    }
    assert_eq!(
        c.upstream.url.to_string(),
        "http://admin:****@127.0.0.1:8080/graphql"
    );
    assert_eq!(
        c.upstream.url.expose(),
        "http://admin:hunter2@127.0.0.1:8080/graphql"
    );
    // Refusals of a URL do not repeat its password either.
    let msg = problems("[upstream]\nurl = \"ftp://u:hunter2@x/\"\n[schema]\npath = \"s\"");
    assert!(
        msg.contains("upstream.url") && !msg.contains("hunter2"),
        "{msg}"
    );
    let msg = problems(&format!(
        "{MINIMAL}\n[bus]\nkind = \"redis\"\nurl = \"nats://u:hunter2@x\""
    ));
    assert!(msg.contains("bus.url") && !msg.contains("hunter2"), "{msg}");
}

#[test]
fn durations_are_range_checked_with_the_key() {
    // Each class: positive keys (1ms..1d), keys where 0 means "none"
    // (0s..1d), and the 365-day backstop of the parser itself.
    for (section, key, value, expected) in [
        ("heartbeat", "interval", "2days", "from 1ms to 1day"),
        ("heartbeat", "timeout", "0s", "from 1ms to 1day"),
        ("heartbeat", "init_timeout", "100us", "from 1ms to 1day"),
        ("upstream", "timeout", "2days", "from 1ms to 1day"),
        ("server", "drain_timeout", "25h", "from 0s to 1day"),
        ("webhook", "dedup_window", "31days", "from 0s to 30days"),
        ("auth.jwt", "leeway", "30days", "from 0s to 1day"),
        ("auth.upstream", "cache_ttl", "0s", "from 1ms to 1day"),
    ] {
        let text = if section == "upstream" {
            MINIMAL.replace("[schema]", &format!("{key} = \"{value}\"\n[schema]"))
        } else {
            format!("{MINIMAL}\n[{section}]\n{key} = \"{value}\"")
        };
        let msg = problems(&text);
        assert!(msg.contains(&format!("{section}.{key}:")), "{msg}");
        assert!(msg.contains(expected), "{expected} in {msg}");
    }
    let msg = problems(&format!(
        "{MINIMAL}\n[heartbeat]\ninterval = \"1000000000y\""
    ));
    assert!(msg.contains("at most 365days"), "{msg}");
    for ok in ["1ms", "1day", "24h"] {
        let c = parse(&format!("{MINIMAL}\n[heartbeat]\ninterval = \"{ok}\"")).unwrap();
        assert!(c.heartbeat.interval >= MS && c.heartbeat.interval <= DAY);
    }
    let c = parse(&format!("{MINIMAL}\n[server]\ndrain_timeout = \"0s\"")).unwrap();
    assert!(c.server.drain_timeout.is_zero());
}

#[test]
fn sizes_are_range_checked_with_the_key() {
    for (section, key, value, expected) in [
        ("limits", "max_message_bytes", "0", "from 1 to 67108864"),
        (
            "limits",
            "max_message_bytes",
            "9223372036854775807",
            "from 1 to 67108864",
        ),
        ("limits", "outbound_queue", "1000001", "from 1 to 1000000"),
        ("limits", "max_connections", "0", "from 1 to 10000000"),
        (
            "limits",
            "max_subscriptions_per_connection",
            "100001",
            "from 1 to 100000",
        ),
        (
            "server",
            "max_request_bytes",
            "1073741825",
            "from 1 to 1073741824",
        ),
        ("webhook", "max_body_bytes", "0", "from 1 to 1073741824"),
        ("bus", "history", "10000001", "from 0 to 10000000"),
    ] {
        let msg = problems(&format!("{MINIMAL}\n[{section}]\n{key} = {value}"));
        assert!(
            msg.contains(&format!("{section}.{key}: {value} is out of range")),
            "{msg}"
        );
        assert!(msg.contains(expected), "{expected} in {msg}");
    }
    let msg = problems(&format!(
        "{MINIMAL}\n[[subscriptions]]\nfield = \"a\"\n[subscriptions.resolve]\nquery_field = \"q\"\nmax_concurrency = 10001"
    ));
    assert!(
        msg.contains("subscriptions[0].resolve.max_concurrency: 10001 is out of range"),
        "{msg}"
    );
    let msg = problems(&format!("{MINIMAL}\n[limits]\nmax_connections = -1"));
    assert!(msg.contains("limits.max_connections"), "{msg}");
    let c = parse(&format!(
        "{MINIMAL}\n[limits]\nmax_message_bytes = 67108864"
    ))
    .unwrap();
    assert_eq!(c.limits.max_message_bytes, MAX_MESSAGE_BYTES);
}
