//! Runs the JS test group (`tests/js/`, node's test runner) against the
//! subcar binary: the reference `graphql-ws` client and `standardwebhooks`
//! signing, so `cargo test` covers them too. Needs node and npm.

use std::path::Path;
use std::process::Command;

#[test]
fn reference_npm_clients() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    let installed = dir.join("node_modules/.package-lock.json");
    let lock = dir.join("package-lock.json");
    let stale = match (installed.metadata(), lock.metadata()) {
        (Ok(i), Ok(l)) => i.modified().unwrap() < l.modified().unwrap(),
        _ => true,
    };
    if stale {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .status()
            .expect("npm is installed (node 20+ and npm run the JS client tests)");
        assert!(status.success(), "npm ci failed in tests/js");
    }
    let output = Command::new("node")
        .args(["--test", "--test-reporter=spec"])
        .current_dir(&dir)
        .env("SUBCAR_BIN", env!("CARGO_BIN_EXE_subcar"))
        .output()
        .expect("node is installed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "the JS client tests failed:\n{stdout}"
    );
    let passed: u32 = stdout
        .lines()
        .find_map(|l| l.trim_start_matches(['ℹ', '#', ' ']).strip_prefix("pass "))
        .and_then(|n| n.trim().parse().ok())
        .expect("node reports how many tests passed");
    assert!(passed > 0, "the JS group ran no test");
}
