//! Report plumbing shared by the benches: where tables go, the machine and
//! command line they ran with, and the fsync baseline.

use std::future::Future;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::stats::Latency;

/// Where the tables go: stdout, or stderr when stdout carries JSON.
pub fn say(json: bool, text: &str) {
    if json {
        eprintln!("{text}");
    } else {
        println!("{text}");
        let _ = std::io::stdout().flush();
    }
}

/// What the machine is: core count, CPU model and kernel release.
pub struct Host {
    pub nproc: usize,
    pub cpu: String,
    pub kernel: String,
}

pub fn host() -> Host {
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    Host { nproc, cpu, kernel }
}

/// The command line as typed (arguments quoted when they need it).
pub fn command_line() -> String {
    std::env::args()
        .map(|a| {
            if a.is_empty()
                || a.chars()
                    .any(|c| c.is_whitespace() || "\"'$`\\".contains(c))
            {
                format!("'{}'", a.replace('\'', "'\\''"))
            } else {
                a
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// How long a small write + fdatasync takes on the file system that holds
/// `dir` (the benched data: redb commits with immediate durability).
pub async fn fsync_baseline(dir: &Path, n: usize) -> anyhow::Result<Latency> {
    let path = dir.join("fsync-probe");
    let mut samples = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<u64>> {
        use std::io::{Seek, SeekFrom};
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)?;
        let buf = vec![b'x'; 4096];
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let t = Instant::now();
            f.seek(SeekFrom::Start(((i % 64) * 4096) as u64))?;
            f.write_all(&buf)?;
            f.sync_data()?;
            out.push(t.elapsed().as_micros() as u64);
        }
        drop(f);
        let _ = std::fs::remove_file(&path);
        Ok(out)
    })
    .await??;
    Ok(Latency::of(&mut samples))
}

/// The body of a bench's `main`: report a bad command line (exit 2), run
/// `run` on a multi-thread runtime until it ends or Ctrl-C, and report its
/// error (exit 1). Messages are prefixed with `name`. With `shutdown`, the
/// runtime is shut down (waiting that long for its tasks) before the result
/// is reported; without, it is dropped after.
pub fn bench_main<A, F, Fut>(
    name: &str,
    args: anyhow::Result<A>,
    shutdown: Option<Duration>,
    run: F,
) -> ExitCode
where
    F: FnOnce(A) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let args = match args {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let r = rt.block_on(async {
        tokio::select! {
            r = run(args) => r,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("{name}: interrupted; cleaning up");
                Err(anyhow::anyhow!("interrupted"))
            }
        }
    });
    if let Some(timeout) = shutdown {
        // Tasks still holding connections go with the runtime.
        rt.shutdown_timeout(timeout);
    }
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The machine and toolchain a bench ran on, for its header.
pub struct Machine {
    pub nproc: usize,
    pub cpu: String,
    pub rustc: String,
    pub kernel: String,
}

impl Machine {
    pub fn summary(&self) -> String {
        format!(
            "nproc={}, cpu={}, kernel={}, {}",
            self.nproc, self.cpu, self.kernel, self.rustc
        )
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "nproc": self.nproc, "cpu": self.cpu, "rustc": self.rustc, "kernel": self.kernel,
        })
    }
}

/// [`host`] and `rustc --version`.
pub fn machine() -> Machine {
    let Host { nproc, cpu, kernel } = host();
    let rustc = std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "rustc unknown".into());
    Machine {
        nproc,
        cpu,
        rustc,
        kernel,
    }
}
