//! The few system calls the process platform needs, wrapped safely.
//!
//! Invariant: no function here can signal more than one process or group: pids and
//! process-group ids of 0 and 1 (which address our own group, or init / every process
//! when negated) are refused.
#![allow(unsafe_code)]

use std::io;

pub use libc::{SIGKILL, SIGTERM};

fn checked(pid: u32) -> io::Result<libc::pid_t> {
    match libc::pid_t::try_from(pid) {
        Ok(pid) if pid > 1 => Ok(pid),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to signal pid {pid}"),
        )),
    }
}

fn kill(target: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: kill(2) has no memory-safety preconditions; `target` comes from `checked`
    // (possibly negated), so it names exactly one process or one process group.
    if unsafe { libc::kill(target, sig) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sends `sig` to the process `pid`.
pub fn signal_process(pid: u32, sig: i32) -> io::Result<()> {
    kill(checked(pid)?, sig)
}

/// Sends `sig` to every process of the process group `pgid`.
pub fn signal_group(pgid: u32, sig: i32) -> io::Result<()> {
    kill(-checked(pgid)?, sig)
}

/// Whether the process exists and is not a zombie.
pub fn process_exists(pid: u32) -> bool {
    let Ok(target) = checked(pid) else {
        return false;
    };
    let exists = match kill(target, 0) {
        Ok(()) => true,
        Err(e) => e.raw_os_error() == Some(libc::EPERM),
    };
    exists && !is_zombie(pid)
}

/// Whether any process of the group `pgid` exists.
pub fn group_exists(pgid: u32) -> bool {
    let Ok(target) = checked(pgid) else {
        return false;
    };
    match kill(-target, 0) {
        Ok(()) => true,
        Err(e) => e.raw_os_error() == Some(libc::EPERM),
    }
}

#[cfg(target_os = "linux")]
fn is_zombie(pid: u32) -> bool {
    // /proc/PID/stat: "PID (COMM) STATE …"; COMM may contain spaces and parentheses.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
        Err(_) => false,
    }
}

#[cfg(not(target_os = "linux"))]
fn is_zombie(_pid: u32) -> bool {
    false
}

/// Whether the command line of `pid` contains `needle` as one of its arguments;
/// `None` where that cannot be known.
pub fn cmdline_has_arg(pid: u32, needle: &std::ffi::OsStr) -> Option<bool> {
    proc_list_has(pid, "cmdline", needle)
}

/// Whether the initial environment of `pid` holds the entry `needle` (`NAME=value`);
/// `None` where that cannot be known.
pub fn environ_has(pid: u32, needle: &std::ffi::OsStr) -> Option<bool> {
    proc_list_has(pid, "environ", needle)
}

/// SIGKILLs every process (but this one) whose initial environment holds the
/// entry `needle` (`NAME=value`); returns how many were signalled. An app
/// under `cairn-entrypoint` runs in a process group of its own, so killing
/// the entrypoint's group does not reach it; the marker its supervisor sets
/// does, whatever group or session the app's processes moved to.
pub fn kill_marked(needle: &std::ffi::OsStr) -> usize {
    use std::os::unix::ffi::OsStrExt;
    kill_where_environ(|e| e == needle.as_bytes())
}

/// [`kill_marked`] for every entry that starts with `prefix` (the marker of
/// any instance of one deployment).
pub fn kill_marked_prefix(prefix: &std::ffi::OsStr) -> usize {
    use std::os::unix::ffi::OsStrExt;
    kill_where_environ(|e| e.starts_with(prefix.as_bytes()))
}

/// SIGKILLs every process (but this one) with an environment entry that
/// `hit` accepts; returns how many were signalled.
fn kill_where_environ(hit: impl Fn(&[u8]) -> bool) -> usize {
    other_pids()
        .into_iter()
        .filter(|pid| proc_list_any(*pid, "environ", &hit).is_some())
        .filter(|pid| signal_process(*pid, SIGKILL).is_ok())
        .count()
}

/// The processes (but this one) with an argument that starts with `prefix`,
/// each with that argument (e.g. the supervisors of one deployment, found by
/// the directory of their spec files).
pub fn pids_with_arg_prefix(prefix: &std::ffi::OsStr) -> Vec<(u32, std::ffi::OsString)> {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    other_pids()
        .into_iter()
        .filter(|pid| !is_zombie(*pid))
        .filter_map(|pid| {
            proc_list_any(pid, "cmdline", |a| a.starts_with(prefix.as_bytes()))
                .map(|arg| (pid, std::ffi::OsString::from_vec(arg)))
        })
        .collect()
}

/// Every pid in /proc but this process's (none where there is no /proc).
fn other_pids() -> Vec<u32> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| *pid != me)
        .collect()
}

/// The first item of `/proc/PID/FILE` (a NUL-separated list: `cmdline`,
/// `environ`) that `hit` accepts.
fn proc_list_any(pid: u32, file: &str, hit: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
    let list = std::fs::read(format!("/proc/{pid}/{file}")).ok()?;
    list.split(|b| *b == 0)
        .find(|item| hit(item))
        .map(<[u8]>::to_vec)
}

#[cfg(target_os = "linux")]
fn proc_list_has(pid: u32, file: &str, needle: &std::ffi::OsStr) -> Option<bool> {
    use std::os::unix::ffi::OsStrExt;
    let list = std::fs::read(format!("/proc/{pid}/{file}")).ok()?;
    Some(
        list.split(|b| *b == 0)
            .any(|item| item == needle.as_bytes()),
    )
}

#[cfg(not(target_os = "linux"))]
fn proc_list_has(_pid: u32, _file: &str, _needle: &std::ffi::OsStr) -> Option<bool> {
    None
}

/// Makes the spawned process the leader of a new session (and process group), so it
/// has no controlling terminal and outlives the terminal and the CLI.
pub fn detach(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and only calls setsid(2), which
    // is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Asks the kernel to send SIGTERM to the spawned process when its parent (the
/// supervisor) dies, so a supervisor killed with SIGKILL does not leave it running.
#[cfg(target_os = "linux")]
pub fn terminate_with_parent(cmd: &mut tokio::process::Command) {
    // SAFETY: getpid is called before fork; the closure runs between fork and exec and
    // only calls prctl(2), getppid(2) and kill(2), which are async-signal-safe.
    let parent = unsafe { libc::getpid() };
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) == -1 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                libc::kill(libc::getpid(), libc::SIGTERM);
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
pub fn terminate_with_parent(_cmd: &mut tokio::process::Command) {}
