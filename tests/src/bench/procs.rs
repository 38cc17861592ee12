//! Process helpers for the benches: signal and stop processes by pid, read
//! their CPU time and the tail of their logs, and build client dials.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cairn_protocol::handshake::Role;
use cairn_protocol::pki::TransportLimits;
use cairn_protocol::rpc::Dial;

/// A client dial to `addr` that presents `token` and names itself `agent`.
pub fn client_dial(agent: &str, addr: &str, ca_fingerprint: &str, token: &str) -> Dial {
    Dial {
        addr: addr.to_string(),
        ca_fingerprint: ca_fingerprint.to_string(),
        identity: None,
        role: Role::Client,
        token: token.to_string(),
        agent: agent.into(),
        limits: TransportLimits::DEFAULT,
    }
}

/// Whether `pid` is alive (a zombie counts as gone).
pub fn pid_alive(pid: u32) -> bool {
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

/// Send `sig` to `pid`; true if it was delivered.
pub fn signal(pid: u32, sig: i32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: kill(2) on a pid the bench started (directly or through
    // `cairn`); no memory is touched.
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

/// The last `n` lines of the file at `path` (empty if unreadable).
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// utime + stime of `pid`, in clock ticks (0 if unreadable).
pub fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the ")" that ends the command name: state is field 3, so
    // utime (14) and stime (15) are at indices 11 and 12.
    let Some(rest) = stat.rsplit(')').next() else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

/// Clock ticks per second (`_SC_CLK_TCK`, 100 if unknown).
pub fn ticks_per_s() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    #[allow(unsafe_code)]
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Pids of live processes whose command line, working directory or
/// environment mentions `root` (a unique temp dir of the bench): the
/// supervisors and app processes that `cairn up` started for it.
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

/// SIGTERM every process that mentions `root` (see [`pids_under`]), then
/// SIGKILL what is left after 5 s. Returns how many there were.
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

/// Where `entrypoint/build-static.sh` puts the static entrypoint, under a
/// target dir.
pub const STATIC_ENTRYPOINT_REL: &str = "static/x86_64-unknown-linux-gnu/release/cairn-entrypoint";

/// The directory of the release binaries a bench starts: `given` (made
/// absolute: the programs it starts run elsewhere), else the bench's own.
pub fn bin_dir(given: Option<&PathBuf>) -> anyhow::Result<PathBuf> {
    match given {
        Some(d) => Ok(std::path::absolute(d)?),
        None => Ok(std::env::current_exe()?
            .parent()
            .ok_or_else(|| anyhow::anyhow!("this binary has no parent directory"))?
            .to_path_buf()),
    }
}

/// The static entrypoint: `given`, else the one next to `bin_dir`'s target
/// dir, else the workspace's (which may not exist: the caller checks).
pub fn static_entrypoint(bin_dir: &Path, given: Option<&PathBuf>) -> PathBuf {
    if let Some(p) = given {
        return std::path::absolute(p).unwrap_or_else(|_| p.clone());
    }
    let near = bin_dir.parent().map(|t| t.join(STATIC_ENTRYPOINT_REL));
    let ws = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target")
        .join(STATIC_ENTRYPOINT_REL);
    near.filter(|p| p.is_file()).unwrap_or(ws)
}

/// A bench's temp dir, in `parent` or the system's: `PREFIX-XXXX`. Keep the
/// prefix short: nodes put their control socket in it, and its path must
/// fit in `sun_path`.
pub fn temp_dir(prefix: &str, parent: Option<&PathBuf>) -> anyhow::Result<tempfile::TempDir> {
    let mut b = tempfile::Builder::new();
    b.prefix(prefix);
    Ok(match parent {
        Some(d) => b.tempdir_in(d)?,
        None => b.tempdir()?,
    })
}
