//! Where the bus tests find Redis and NATS: the server on its standard port
//! when one answers there, or else one this test process starts itself
//! (`redis-server` / `nats-server -js` from `PATH`, on a free port, stopped
//! when the process exits). `SUBCAR_TEST_BUS=private` always starts them,
//! which is how CI proves that a machine without running servers passes.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::support::{PATIENCE, free_port};

/// The Redis URL for this test process.
pub fn redis() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| shared_or_own(Server::Redis))
}

/// The NATS (JetStream) URL for this test process.
pub fn nats() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| shared_or_own(Server::Nats))
}

#[derive(Clone, Copy)]
pub(super) enum Server {
    Redis,
    Nats,
}

impl Server {
    fn standard_port(self) -> u16 {
        match self {
            Self::Redis => 6379,
            Self::Nats => 4222,
        }
    }

    pub(super) fn url(self, port: u16) -> String {
        match self {
            Self::Redis => format!("redis://127.0.0.1:{port}"),
            Self::Nats => format!("nats://127.0.0.1:{port}"),
        }
    }

    pub(super) fn program(self) -> &'static str {
        match self {
            Self::Redis => "redis-server",
            Self::Nats => "nats-server",
        }
    }

    fn install_hint(self) -> &'static str {
        match self {
            Self::Redis => "Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis",
            Self::Nats => {
                "Debian/Ubuntu: apt-get install nats-server; macOS: brew install nats-server"
            }
        }
    }

    pub(super) fn args(self, port: u16, dir: &str) -> Vec<String> {
        let port = port.to_string();
        match self {
            Self::Redis => [
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                dir,
            ]
            .map(str::to_owned)
            .to_vec(),
            Self::Nats => ["-a", "127.0.0.1", "-p", &port, "-js", "-sd", dir]
                .map(str::to_owned)
                .to_vec(),
        }
    }
}

fn answers(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(300))
        .is_ok()
}

fn shared_or_own(server: Server) -> String {
    let forced = std::env::var("SUBCAR_TEST_BUS").is_ok_and(|v| v == "private");
    if !forced && answers(server.standard_port()) {
        return server.url(server.standard_port());
    }
    let program = server.program();
    if Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        panic!(
            "nothing answers on 127.0.0.1:{} and {program} is not on PATH: install it ({})",
            server.standard_port(),
            server.install_hint()
        );
    }
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("subcar-test-{program}-{port}"));
    std::fs::create_dir_all(&dir).unwrap();
    // The server lives as long as this test process: a shell holds it and
    // kills it when its stdin (a pipe from us) closes, which the kernel
    // does when the process exits however it exits.
    let script = format!(
        "{program} {} >/dev/null 2>&1 & pid=$!; cat >/dev/null; kill $pid; wait $pid; rm -rf '{}'",
        server
            .args(port, &dir.to_string_lossy())
            .iter()
            .map(|a| format!("'{a}'"))
            .collect::<Vec<_>>()
            .join(" "),
        dir.display()
    );
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sh starts");
    let stdin = child.stdin.take().expect("piped stdin");
    // Kept open (leaked) until exit; the child is reaped by init then.
    std::mem::forget(child);
    Box::leak(Box::new(stdin)).flush().ok();
    wait_listening(
        port,
        &format!("{program} started for the tests did not listen on 127.0.0.1:{port}"),
    );
    eprintln!("started {program} on 127.0.0.1:{port} for this test run");
    server.url(port)
}

/// Waits until something listens on loopback `port`.
pub(super) fn wait_listening(port: u16, failure: &str) {
    let deadline = Instant::now() + PATIENCE;
    while !answers(port) {
        assert!(Instant::now() < deadline, "{failure}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
