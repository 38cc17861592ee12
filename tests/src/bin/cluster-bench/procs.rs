//! Cluster member processes: start with a fixed command line, `kill -9`,
//! restart on the same data dir and ports, and stop on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use cairn_tests::bench::procs::{cpu_ticks, signal, tail, terminate, ticks_per_s};

/// One member process (of either system). Its command line is the same on
/// every start, except `first_args`, which only the first start gets.
pub struct Member {
    pub name: String,
    program: PathBuf,
    args: Vec<String>,
    first_args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
    started: usize,
}

impl Member {
    pub fn new(
        name: &str,
        program: &Path,
        args: Vec<String>,
        first_args: Vec<String>,
        log: PathBuf,
    ) -> Member {
        Member {
            name: name.to_string(),
            program: program.to_path_buf(),
            args,
            first_args,
            log,
            child: None,
            started: 0,
        }
    }

    /// Spawn the process (output appended to the member's log).
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "{} is already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| self.log.display().to_string())?;
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args);
        if self.started == 0 {
            cmd.args(&self.first_args);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", self.program.display()))?;
        self.child = Some(child);
        self.started += 1;
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Fails if the process has exited on its own.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(c) = self.child.as_mut() {
            if let Some(status) = c.try_wait()? {
                self.child = None;
                anyhow::bail!(
                    "{} exited by itself ({status}); log {}:\n{}",
                    self.name,
                    self.log.display(),
                    tail(&self.log, 25)
                );
            }
        }
        Ok(())
    }

    /// `kill -9`. Returns the instant just before the signal was sent. The
    /// process is reaped later, by [`Member::reap`] (or on restart).
    pub fn kill9(&mut self) -> anyhow::Result<Instant> {
        let pid = self
            .pid()
            .with_context(|| format!("{} is not running", self.name))?;
        let t = Instant::now();
        anyhow::ensure!(signal(pid, libc::SIGKILL), "kill -9 {pid} failed");
        Ok(t)
    }

    /// Wait for a killed process to be gone.
    pub fn reap(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log_tail(&self, n: usize) -> String {
        format!(
            "{} ({}):\n{}",
            self.name,
            self.log.display(),
            tail(&self.log, n)
        )
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            terminate(c.id());
            let _ = c.wait();
        }
    }
}

/// `n` distinct free loopback ports (TCP for `tcp`, else UDP), all held
/// open until every one is chosen so none repeats.
pub fn free_ports(n: usize, tcp: bool) -> anyhow::Result<Vec<u16>> {
    let mut tcp_held = Vec::new();
    let mut udp_held = Vec::new();
    let mut out = Vec::new();
    for _ in 0..n {
        if tcp {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            out.push(l.local_addr()?.port());
            tcp_held.push(l);
        } else {
            let s = std::net::UdpSocket::bind("127.0.0.1:0")?;
            out.push(s.local_addr()?.port());
            udp_held.push(s);
        }
    }
    Ok(out)
}

/// utime + stime of `pid`, in seconds (0 if unreadable).
pub fn cpu_seconds(pid: u32) -> f64 {
    cpu_ticks(pid) as f64 / ticks_per_s()
}

/// Poll `f` every `every` until it returns `Ok(Some(_))`, at most `timeout`;
/// the error says `what` and the last error seen.
pub async fn eventually<T, F, Fut>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut f: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last = String::from("(condition not met)");
    loop {
        match f().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if Instant::now() > deadline {
            anyhow::bail!("{what}: not within {} s; last: {last}", timeout.as_secs());
        }
        tokio::time::sleep(every).await;
    }
}
