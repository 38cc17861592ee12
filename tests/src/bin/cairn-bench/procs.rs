//! Process helpers: start a `cairn-node`, run `cairn` commands with a
//! deadline, and kill what we started (by pid) when a guard drops.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use cairn_protocol::rpc::{self, Dial, Session};
use cairn_tests::bench::procs::client_dial;
pub use cairn_tests::bench::procs::kill_under;
pub use cairn_tests::bench::procs::{tail, terminate};

pub use cairn_tests::bench::node::{BenchNode as NodeProc, Ready};

pub fn dial(addr: &str, ca_fingerprint: &str, token: &str) -> Dial {
    client_dial("cairn-bench", addr, ca_fingerprint, token)
}

pub async fn connect(d: &Dial) -> anyhow::Result<Session> {
    rpc::connect(d)
        .await
        .with_context(|| format!("connecting to {}", d.addr))
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
