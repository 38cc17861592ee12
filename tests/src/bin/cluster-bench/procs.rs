//! Cluster member processes: start with a fixed command line, `kill -9`,
//! restart on the same data dir and ports, and stop on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

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

fn pid_alive(pid: u32) -> bool {
    // A zombie still "exists" for kill(0); treat it as gone.
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        if let Some(rest) = stat.rsplit(')').next() {
            if rest.trim_start().starts_with('Z') {
                return false;
            }
        }
    }
    signal(pid, 0)
}

fn signal(pid: u32, sig: i32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: kill(2) on a pid this bench started; no memory is touched.
    #[allow(unsafe_code)]
    let r = unsafe { libc::kill(pid as libc::pid_t, sig) };
    r == 0
}

/// SIGTERM, wait up to 5 s, then SIGKILL.
pub fn terminate(pid: u32) {
    if !pid_alive(pid) {
        return;
    }
    signal(pid, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while pid_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if pid_alive(pid) {
        signal(pid, libc::SIGKILL);
    }
}

pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
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
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the ")" that ends the command name: state is field 3, so
    // utime (14) and stime (15) are at indices 11 and 12.
    let Some(rest) = stat.rsplit(')').next() else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    (get(11) + get(12)) as f64 / ticks_per_s()
}

fn ticks_per_s() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    #[allow(unsafe_code)]
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
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
