//! Process helpers: start a `cairn-node`, run `cairn` commands with a
//! deadline, and kill what we started (by pid) when a guard drops.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use cairn_protocol::rpc::{self, Dial, Session};
use cairn_tests::bench::procs::{client_dial, pid_alive, signal};
pub use cairn_tests::bench::procs::{tail, terminate};

/// How long a node may take to write its ready file.
const NODE_START_TIMEOUT: Duration = Duration::from_secs(30);

/// The ready file a node writes once it listens.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Ready {
    pub addr: String,
    pub ca_fingerprint: String,
    pub pid: u32,
}

/// A `cairn-node` process this bench started. Dropping it stops the node
/// (SIGTERM, then SIGKILL after a grace period).
pub struct NodeProc {
    child: Child,
    pub ready: Ready,
    /// The user token obtained from the one-time bootstrap token.
    pub token: String,
    /// Time from spawn to the ready file appearing.
    pub start_time: Duration,
}

impl NodeProc {
    /// Start `cairn-node` with its data in `dir`, wait until it is ready and
    /// exchange its bootstrap token for a user token.
    pub async fn start(node_bin: &Path, dir: &Path) -> anyhow::Result<NodeProc> {
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
        let ready_file = dir.join("ready.json");
        let boot_file = dir.join("bootstrap.token");
        let log = std::fs::File::create(dir.join("node.log"))?;
        let t0 = Instant::now();
        let child = Command::new(node_bin)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--listen", "127.0.0.1:0", "--ready-file"])
            .arg(&ready_file)
            .arg("--bootstrap-file")
            .arg(&boot_file)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", node_bin.display()))?;
        // From here on the guard owns the child, so an error below kills it.
        let mut node = NodeProc {
            child,
            ready: Ready {
                addr: String::new(),
                ca_fingerprint: String::new(),
                pid: 0,
            },
            token: String::new(),
            start_time: Duration::ZERO,
        };
        let deadline = t0 + NODE_START_TIMEOUT;
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready_file) {
                if let Ok(r) = serde_json::from_str::<Ready>(&text) {
                    node.ready = r;
                    break;
                }
            }
            if let Some(status) = node.child.try_wait()? {
                bail!(
                    "cairn-node exited during start-up ({status}); log:\n{}",
                    tail(&dir.join("node.log"), 20)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "cairn-node not ready within {} s; log:\n{}",
                    NODE_START_TIMEOUT.as_secs(),
                    tail(&dir.join("node.log"), 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        node.start_time = t0.elapsed();
        let boot = std::fs::read_to_string(&boot_file)
            .with_context(|| format!("reading {}", boot_file.display()))?;
        node.token = cairn_cli::local::exchange_bootstrap(
            &node.ready.addr,
            &node.ready.ca_fingerprint,
            boot.trim(),
        )
        .await
        .context("exchanging the bootstrap token")?;
        Ok(node)
    }

    pub fn dial(&self) -> Dial {
        dial(&self.ready.addr, &self.ready.ca_fingerprint, &self.token)
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        terminate(self.child.id());
        let _ = self.child.wait();
    }
}

pub fn dial(addr: &str, ca_fingerprint: &str, token: &str) -> Dial {
    client_dial("cairn-bench", addr, ca_fingerprint, token)
}

pub async fn connect(d: &Dial) -> anyhow::Result<Session> {
    rpc::connect(d)
        .await
        .with_context(|| format!("connecting to {}", d.addr))
}

/// Pids of live processes whose command line, working directory or
/// environment mentions `root` (a unique temp dir of this bench): the
/// supervisors and app processes that `cairn up` started for us.
pub fn pids_under(root: &Path) -> Vec<u32> {
    let needle = root.as_os_str().as_encoded_bytes().to_vec();
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let p = e.path();
        let mentions = |bytes: Vec<u8>| bytes.windows(needle.len()).any(|w| w == needle.as_slice());
        let hit = std::fs::read(p.join("cmdline"))
            .map(mentions)
            .unwrap_or(false)
            || std::fs::read_link(p.join("cwd"))
                .map(|c| c.starts_with(root))
                .unwrap_or(false)
            || std::fs::read(p.join("environ"))
                .map(mentions)
                .unwrap_or(false);
        if hit && pid_alive(pid) {
            out.push(pid);
        }
    }
    out
}

/// Kill every process that mentions `root` (see [`pids_under`]).
pub fn kill_under(root: &Path) -> usize {
    let pids = pids_under(root);
    for &pid in &pids {
        signal(pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|&p| pid_alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for &pid in &pids {
        if pid_alive(pid) {
            signal(pid, libc::SIGKILL);
        }
    }
    pids.len()
}

/// The result of a command run to completion (or killed at its deadline).
pub struct Ran {
    pub status: ExitStatus,
    pub elapsed: Duration,
    pub log: PathBuf,
}

impl Ran {
    pub fn check(&self, what: &str) -> anyhow::Result<()> {
        if !self.status.success() {
            bail!(
                "{what} failed ({}); output ({}):\n{}",
                self.status,
                self.log.display(),
                tail(&self.log, 30)
            );
        }
        Ok(())
    }
}

/// Run `cmd` with stdout+stderr to `log`, killing it after `timeout`.
/// `elapsed` spans spawn to exit.
pub fn run_logged(mut cmd: Command, log: &Path, timeout: Duration) -> anyhow::Result<Ran> {
    let f = std::fs::File::create(log)?;
    cmd.stdin(Stdio::null())
        .stdout(f.try_clone()?)
        .stderr(f)
        .env("NO_COLOR", "1");
    let t0 = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Ran {
                status,
                elapsed: t0.elapsed(),
                log: log.to_path_buf(),
            });
        }
        if t0.elapsed() > timeout {
            terminate(child.id());
            let _ = child.wait();
            bail!(
                "{cmd:?} did not finish within {} s; output:\n{}",
                timeout.as_secs(),
                tail(log, 30)
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
