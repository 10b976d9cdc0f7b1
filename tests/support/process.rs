//! The `subcar` binary as an operator runs it: a configuration file from the
//! same [`Builder`] the in-process tests use, on free loopback ports, and a
//! child process killed when dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::ChildStderr;

use super::{Builder, PATIENCE, free_port};

/// `subcar` without the environment it would read a config from.
pub fn subcar() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_subcar"));
    cmd.env_remove("SUBCAR_CONFIG").env_remove("RUST_LOG");
    cmd
}

/// `subcar check --config path`.
pub fn check(path: &Path) -> Command {
    let mut cmd = subcar();
    cmd.args(["check", "--config"]).arg(path);
    cmd
}

/// Runs `cmd` without blocking the runtime (an in-process upstream must
/// keep answering).
pub async fn output(cmd: Command) -> Output {
    tokio::process::Command::from(cmd).output().await.unwrap()
}

/// Stdout then stderr of `out`, as text.
pub fn printed(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The three listeners of a process, on ports free when chosen.
#[derive(Debug, Clone, Copy)]
pub struct Addrs {
    pub public: SocketAddr,
    pub admin: SocketAddr,
    pub webhook: SocketAddr,
}

impl Addrs {
    pub fn free() -> Self {
        let free = || SocketAddr::from(([127, 0, 0, 1], free_port()));
        Self {
            public: free(),
            admin: free(),
            webhook: free(),
        }
    }

    /// The `listen` keys for a config file.
    pub fn toml(&self) -> String {
        format!(
            "[server]\nlisten = \"{}\"\n[admin]\nlisten = \"{}\"\n[webhook]\nlisten = \"{}\"\n",
            self.public, self.admin, self.webhook
        )
    }

    /// The same as environment overrides.
    pub fn env(&self) -> [(&'static str, String); 3] {
        [
            ("SUBCAR_SERVER__LISTEN", self.public.to_string()),
            ("SUBCAR_ADMIN__LISTEN", self.admin.to_string()),
            ("SUBCAR_WEBHOOK__LISTEN", self.webhook.to_string()),
        ]
    }
}

/// A config file written from a [`Builder`], its listeners on free ports.
pub struct ConfigFile {
    pub path: PathBuf,
    pub addrs: Addrs,
}

impl ConfigFile {
    /// `dir/name.toml` with `builder`'s configuration.
    pub fn write(dir: &Path, name: &str, builder: Builder) -> Self {
        let file = Self {
            path: dir.join(format!("{name}.toml")),
            addrs: Addrs::free(),
        };
        file.rewrite(builder);
        file
    }

    /// Replaces the file's configuration, the listeners kept.
    pub fn rewrite(&self, builder: Builder) {
        std::fs::write(&self.path, builder.listen(&self.addrs).config_text()).unwrap();
    }

    pub fn text(&self) -> String {
        std::fs::read_to_string(&self.path).unwrap()
    }

    /// `subcar check` on this file.
    pub fn check(&self) -> Command {
        check(&self.path)
    }

    /// `subcar` running on this file; see [`Process::start`].
    pub async fn start(&self, stderr: Stdio, until: Until) -> Process {
        Process::start(subcar(), &self.path, self.addrs, stderr, until).await
    }
}

/// What [`Process::start`] waits for.
#[derive(Debug, Clone, Copy)]
pub enum Until {
    /// The public listener answers `/healthz`.
    Listening,
    /// The admin listener's `/readyz` says `200` (the bus is connected).
    Ready,
}

/// A running `subcar`; killed when dropped.
pub struct Process {
    pub child: tokio::process::Child,
    pub addrs: Addrs,
}

impl Process {
    /// Starts `subcar --config path` (its listeners on `addrs`) and waits
    /// until it answers as `until` says.
    pub async fn start(
        mut cmd: Command,
        path: &Path,
        addrs: Addrs,
        stderr: Stdio,
        until: Until,
    ) -> Self {
        let child = tokio::process::Command::from({
            cmd.arg("--config").arg(path);
            cmd
        })
        .stdout(Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
        let client = reqwest::Client::new();
        let probe = match until {
            Until::Listening => format!("http://{}/healthz", addrs.public),
            Until::Ready => format!("http://{}/readyz", addrs.admin),
        };
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            match client.get(&probe).send().await {
                Ok(_) if matches!(until, Until::Listening) => break,
                Ok(r) if r.status() == 200 => break,
                _ => {}
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "subcar did not answer {probe}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Self { child, addrs }
    }

    /// Sends `signal` (`-TERM`, `-HUP`) to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().unwrap().to_string();
        let status = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// Waits for the process to exit; its exit code.
    pub async fn exit_code(&mut self) -> Option<i32> {
        tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("subcar exits")
            .unwrap()
            .code()
    }

    /// Rewrites `file` with `changed`, sends SIGHUP and reads stderr (once
    /// per process) until `done` says a line is the one awaited.
    pub async fn reload(
        &mut self,
        file: &ConfigFile,
        changed: Builder,
        mut done: impl FnMut(&str) -> bool,
    ) {
        file.rewrite(changed);
        self.signal("-HUP");
        let mut lines = self.stderr_lines();
        loop {
            let line = tokio::time::timeout(PATIENCE, lines.next_line())
                .await
                .expect("reload is logged")
                .unwrap()
                .expect("subcar still running");
            if done(&line) {
                return;
            }
        }
    }

    /// The process's stderr (started with `Stdio::piped()`) line by line.
    pub fn stderr_lines(&mut self) -> Lines<BufReader<ChildStderr>> {
        BufReader::new(self.child.stderr.take().expect("stderr is piped")).lines()
    }
}
