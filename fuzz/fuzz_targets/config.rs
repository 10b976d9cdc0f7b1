//! Fuzzes configuration loading: TOML text plus `SUBCAR_<SECTION>__<KEY>`
//! environment overrides through the pure `Config::parse`.
//!
//! Input: `<TOML> \0 <NAME=value lines>`; names without the `SUBCAR_`
//! prefix get it, so most lines are overrides.
#![no_main]

use libfuzzer_sys::fuzz_target;
use subcar::config::Config;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(2, |b| *b == 0);
    let Ok(text) = std::str::from_utf8(parts.next().unwrap_or_default()) else {
        return;
    };
    let env: Vec<(String, String)> = parts
        .next()
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .unwrap_or_default()
        .lines()
        .take(16)
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let k = if k.starts_with("SUBCAR_") { k.to_owned() } else { format!("SUBCAR_{k}") };
            (k, v.to_owned())
        })
        .collect();
    if let Ok(config) = Config::parse(text, env) {
        // What `check` and `/status` print must not panic either.
        let _ = format!("{config:?}");
    }
});
