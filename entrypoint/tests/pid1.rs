//! The entrypoint as PID 1 of a new PID namespace (`unshare --pid --fork
//! --mount-proc`, needs root): it reaps adopted orphans without stealing the
//! child's status, and signals from outside reach the child.

mod common;

use std::process::{Command, Output, Stdio};

use common::*;
use nix::sys::signal::Signal;

/// Runs a script in the namespace that starts orphans, lets them end, and
/// lists every process in the namespace (`pid (comm) state ...`), then exits 3.
const ORPHANS_SCRIPT: &str = "\
(sleep 0.1 &); (sleep 0.1 &); (sh -c 'sleep 0.1' &)
sleep 1
for f in /proc/[0-9]*/stat; do read l < $f && echo \"$l\"; done
exit 3";

fn unshare() -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc"]);
    for var in ALL_VARS {
        cmd.env_remove(var);
    }
    cmd
}

/// Fails (never skips) when PID namespaces cannot be made here.
fn require_unshare() {
    let probe = unshare().arg("true").stdin(Stdio::null()).output();
    match probe {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "this test needs `unshare --pid --fork --mount-proc` (root, util-linux); it failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("this test needs the `unshare` command (util-linux): {e}"),
    }
}

/// (pid, comm, state) of each process listed by [`ORPHANS_SCRIPT`].
fn processes(out: &Output) -> Vec<(u32, String, char)> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let (pid, rest) = line.split_once(" (")?;
            let (comm, rest) = rest.rsplit_once(") ")?;
            Some((pid.parse().ok()?, comm.to_string(), rest.chars().next()?))
        })
        .collect()
}

#[test]
fn zombies_are_reaped_when_pid1() {
    require_unshare();
    let out = output_bounded(unshare().args([bin(), "sh", "-c", ORPHANS_SCRIPT]));
    let procs = processes(&out);
    assert!(
        procs
            .iter()
            .any(|(pid, comm, _)| *pid == 1 && comm.starts_with("cairn-entrypoi")),
        "the entrypoint is not PID 1: {procs:?}"
    );
    let zombies: Vec<_> = procs.iter().filter(|(_, _, state)| *state == 'Z').collect();
    assert!(
        zombies.is_empty(),
        "zombies left: {zombies:?} (all: {procs:?})"
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "the child's own status was not stolen by the orphan sweep: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The control: under a PID 1 that waits only for its own child, the same
/// script does leave zombies, so the test above can see them.
#[test]
fn the_orphan_script_leaves_zombies_under_a_pid1_that_does_not_reap() {
    require_unshare();
    if Command::new("python3").arg("-c").arg("").status().is_err() {
        panic!("this control needs python3 as a non-reaping PID 1");
    }
    let pid1 = format!(
        "import subprocess, sys; sys.exit(subprocess.Popen(['sh', '-c', {ORPHANS_SCRIPT:?}]).wait())"
    );
    let out = output_bounded(unshare().args(["python3", "-c", &pid1]));
    let procs = processes(&out);
    assert!(
        procs.iter().any(|(_, _, state)| *state == 'Z'),
        "expected zombies: {procs:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sigterm_reaches_the_child_when_pid1() {
    require_unshare();
    let dir = temp_dir("pid1-term");
    let marker = dir.join("got-term");
    let script = format!(
        "trap 'echo got-term > {}; exit 0' TERM; echo ready; while :; do sleep 0.05; done",
        marker.display()
    );
    let mut ns = unshare()
        .args([bin(), "sh", "-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn unshare");
    let lines = Lines::new(ns.stdout.take().expect("stdout"));
    lines.expect("ready");
    // unshare --fork: the entrypoint is unshare's only child.
    let children = format!("/proc/{0}/task/{0}/children", ns.id());
    let entrypoint: u32 = read(std::path::Path::new(&children))
        .split_whitespace()
        .next()
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no child listed in {children}"));
    let comm = read(std::path::Path::new(&format!("/proc/{entrypoint}/comm")));
    assert!(comm.starts_with("cairn-entrypoi"), "{comm}");
    // PID 1 gets only the signals it handles: the entrypoint handles TERM.
    send_signal(entrypoint, Signal::SIGTERM);
    let status = wait_bounded(&mut ns, "unshare after SIGTERM");
    assert_eq!(status.code(), Some(0));
    assert_eq!(read(&marker), "got-term\n");
}
