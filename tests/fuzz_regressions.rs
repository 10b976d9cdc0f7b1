//! Replays, through the very functions the fuzz targets run
//! (`fuzz/src/lib.rs`), every crash input a fuzzer found
//! (`tests/fixtures/fuzz/<target>/`) and the committed minimised corpora
//! (`fuzz/corpus/<target>/`): none may panic.

#[path = "../fuzz/src/lib.rs"]
mod harness;

use std::path::{Path, PathBuf};

fn inputs(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    files.sort();
    // A fuzzer running meanwhile replaces corpus files: skip the vanished.
    files
        .into_iter()
        .filter_map(|p| std::fs::read(&p).ok().map(|bytes| (p, bytes)))
        .collect()
}

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    for dir in [
        root.join("tests/fixtures/fuzz").join(target),
        root.join("fuzz/corpus").join(target),
    ] {
        for (path, bytes) in inputs(&dir) {
            let outcome = std::panic::catch_unwind(|| run(&bytes));
            assert!(outcome.is_ok(), "{target} panics on {}", path.display());
            n += 1;
        }
    }
    n
}

#[test]
fn ws_client_message_inputs_do_not_panic() {
    assert!(replay("ws_client_message", harness::ws_client_message) > 0);
}

#[test]
fn legacy_client_message_inputs_do_not_panic() {
    assert!(replay("legacy_client_message", harness::legacy_client_message) > 0);
}

#[test]
fn webhook_body_inputs_do_not_panic() {
    assert!(replay("webhook_body", harness::webhook_body) > 0);
}

#[test]
fn config_inputs_do_not_panic() {
    assert!(replay("config", harness::config) > 0);
}

#[test]
fn stream_request_inputs_do_not_panic() {
    assert!(replay("stream_request", harness::stream_request) > 0);
}

#[test]
fn document_inputs_do_not_panic() {
    assert!(replay("document", harness::document) > 0);
}
