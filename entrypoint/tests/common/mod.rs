//! Helpers for tests that run the real `cairn-entrypoint` binary.
#![allow(dead_code)] // each test file uses a different part

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Generous bound for anything a test waits on; never a fixed sleep.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub const ALL_VARS: [&str; 5] = [
    "CAIRN_ADDRS",
    "CAIRN_CA_FINGERPRINT",
    "CAIRN_DEPLOYMENT_ID",
    "CAIRN_ENTRYPOINT_TOKEN",
    "CAIRN_DISABLE",
];

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_cairn-entrypoint")
}

/// `cairn-entrypoint ARGS…` with no `CAIRN_*` variable inherited.
pub fn entrypoint<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(args);
    for var in ALL_VARS {
        cmd.env_remove(var);
    }
    cmd
}

/// A complete, valid set of connection settings.
pub fn with_cluster_env(cmd: &mut Command) -> &mut Command {
    cmd.env("CAIRN_ADDRS", "127.0.0.1:9")
        .env(
            "CAIRN_CA_FINGERPRINT",
            "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        )
        .env("CAIRN_DEPLOYMENT_ID", "web/v1")
        .env("CAIRN_ENTRYPOINT_TOKEN", "cairn_ep_test")
}

/// A fresh empty directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "cairn-entrypoint-test-{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// Waits for `child` up to [`DEADLINE`]; kills it and panics after that.
pub fn wait_bounded(child: &mut Child, what: &str) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `cond` until it holds, up to [`DEADLINE`].
pub fn assert_eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Reads lines of `stream` on a thread; [`Lines::expect`] waits for one.
pub struct Lines {
    rx: mpsc::Receiver<String>,
}

impl Lines {
    pub fn new(stream: impl Read + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self { rx }
    }

    /// The next line, within [`DEADLINE`].
    pub fn next(&self) -> String {
        self.rx
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|e| panic!("no line within {DEADLINE:?}: {e}"))
    }

    /// Skips lines until one equals `want`.
    pub fn expect(&self, want: &str) {
        loop {
            if self.next() == want {
                return;
            }
        }
    }
}

pub fn code(status: ExitStatus) -> i32 {
    status
        .code()
        .unwrap_or_else(|| panic!("the entrypoint itself was killed: {status:?}"))
}

pub fn send_signal(pid: u32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).expect("kill");
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Like `Command::output`, but bounded by [`DEADLINE`] (kills and panics).
pub fn output_bounded(cmd: &mut Command) -> std::process::Output {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let collect = |mut stream: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stream.read_to_end(&mut buf);
            buf
        })
    };
    let stdout = collect(Box::new(child.stdout.take().expect("piped")));
    let stderr = collect(Box::new(child.stderr.take().expect("piped")));
    let status = wait_bounded(&mut child, &format!("{cmd:?}"));
    std::process::Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}
