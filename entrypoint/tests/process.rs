//! The real binary around real child processes: exit statuses, signals,
//! output pass-through, `CAIRN_DISABLE`, usage, environment.

mod common;

use std::io::Write;
use std::process::Stdio;
use std::time::Instant;

use common::*;
use nix::sys::signal::Signal;

#[test]
fn exit_code_propagates() {
    let status = output_bounded(&mut entrypoint(&["sh", "-c", "exit 7"])).status;
    assert_eq!(code(status), 7);
    let status = output_bounded(&mut entrypoint(&["true"])).status;
    assert_eq!(code(status), 0);
}

#[test]
fn killed_child_gives_128_plus_signal() {
    let status = output_bounded(&mut entrypoint(&["sh", "-c", "kill -9 $$"])).status;
    assert_eq!(code(status), 128 + 9);
    let status = output_bounded(&mut entrypoint(&["sh", "-c", "kill -TERM $$"])).status;
    assert_eq!(code(status), 128 + 15);
}

#[test]
fn sigterm_to_the_entrypoint_reaches_the_child() {
    let dir = temp_dir("sigterm");
    let marker = dir.join("got-term");
    let script = format!(
        "trap 'echo got-term > {}; exit 0' TERM; echo ready; while :; do sleep 0.05; done",
        marker.display()
    );
    let mut child = entrypoint(&["sh", "-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let lines = Lines::new(child.stdout.take().expect("stdout"));
    lines.expect("ready"); // the trap is set
    send_signal(child.id(), Signal::SIGTERM);
    let status = wait_bounded(&mut child, "entrypoint after SIGTERM");
    assert_eq!(code(status), 0, "the child's trap exits 0");
    assert_eq!(read(&marker), "got-term\n");
}

#[test]
fn sigint_without_a_trap_ends_the_child_with_130() {
    let mut child = entrypoint(&["sh", "-c", "echo ready; while :; do sleep 0.05; done"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let lines = Lines::new(child.stdout.take().expect("stdout"));
    lines.expect("ready");
    send_signal(child.id(), Signal::SIGINT);
    let status = wait_bounded(&mut child, "entrypoint after SIGINT");
    assert_eq!(code(status), 128 + 2);
}

/// TERM goes to the child's whole process group; USR1 to the child alone.
#[test]
fn stop_signals_reach_the_group_app_signals_only_the_child() {
    let dir = temp_dir("group");
    let (c, g) = (dir.join("child"), dir.join("grandchild"));
    let script = format!(
        r#"trap 'echo usr1 >> {c}' USR1
trap 'wait; echo term >> {c}; exit 0' TERM
( trap 'echo usr1 >> {g}' USR1; trap 'echo term >> {g}; exit 0' TERM
  echo gc-ready; while :; do sleep 0.05; done ) &
echo ready
while :; do sleep 0.05; done"#,
        c = c.display(),
        g = g.display()
    );
    let mut child = entrypoint(&["sh", "-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let lines = Lines::new(child.stdout.take().expect("stdout"));
    let mut seen = [lines.next(), lines.next()];
    seen.sort();
    assert_eq!(seen, ["gc-ready", "ready"]);

    send_signal(child.id(), Signal::SIGUSR1);
    assert_eventually("the child handled USR1", || read(&c) == "usr1\n");
    send_signal(child.id(), Signal::SIGTERM);
    let status = wait_bounded(&mut child, "entrypoint after SIGTERM");
    assert_eq!(code(status), 0);
    assert_eq!(read(&c), "usr1\nterm\n");
    // The grandchild got TERM straight from the entrypoint (the child only
    // waited for it), and never USR1.
    assert_eq!(read(&g), "term\n");
}

fn pseudo_random(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn check_output_passes_through(with_cluster: bool) {
    let dir = temp_dir("output");
    // Binary noise (with plenty of '\n' and lines far over the line cap) on
    // stdout, many short text lines on stderr, no newline at either end.
    let out = pseudo_random(6 * 1024 * 1024 + 3, 0x9e37_79b9_7f4a_7c15);
    let mut err = Vec::new();
    for i in 0..200_000 {
        writeln!(err, "stderr line {i} {}", "x".repeat(i % 50)).expect("write");
    }
    err.extend_from_slice(b"no newline at the end");
    std::fs::write(dir.join("out"), &out).expect("write");
    std::fs::write(dir.join("err"), &err).expect("write");

    let script = format!("cat {d}/out & cat {d}/err >&2; wait", d = dir.display());
    let mut cmd = entrypoint(&["sh", "-c", &script]);
    if with_cluster {
        with_cluster_env(&mut cmd);
    }
    let output = output_bounded(&mut cmd);
    assert_eq!(code(output.status), 0);
    assert!(
        output.stdout == out,
        "stdout differs: {} bytes of {}",
        output.stdout.len(),
        out.len()
    );
    // Our own warning line(s) come first on stderr, then the child's bytes.
    assert!(
        output.stderr.ends_with(&err),
        "stderr does not end with the child's {} bytes (got {})",
        err.len(),
        output.stderr.len()
    );
    let ours = &output.stderr[..output.stderr.len() - err.len()];
    let ours = String::from_utf8_lossy(ours);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        ours.lines()
            .all(|l| l.starts_with("cairn-entrypoint: warning:")),
        "{ours}"
    );
}

#[test]
fn output_passes_through_unchanged() {
    check_output_passes_through(false);
}

/// With connection settings the log queue is on too (and overflows: nothing
/// drains it yet); pass-through must not change.
#[test]
fn output_passes_through_unchanged_with_the_log_queue() {
    check_output_passes_through(true);
}

#[test]
fn output_is_passed_through_promptly() {
    // The child writes a partial line and waits for our answer: the bytes
    // must come through without a newline and while the child still runs.
    let mut child = entrypoint(&[
        "sh",
        "-c",
        "printf 'prompt> '; read answer; echo \"got $answer\"",
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .spawn()
    .expect("spawn");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut buf = [0u8; 8];
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::Read;
        let r = stdout.read_exact(&mut buf).map(|_| buf);
        let _ = tx.send((r, stdout));
    });
    let (prompt, stdout) = rx.recv_timeout(DEADLINE).expect("the prompt in time");
    assert_eq!(&prompt.expect("read"), b"prompt> ");
    writeln!(child.stdin.take().expect("stdin"), "yes").expect("answer");
    let lines = Lines::new(stdout);
    assert_eq!(lines.next(), "got yes");
    assert_eq!(code(wait_bounded(&mut child, "entrypoint")), 0);
}

#[test]
fn disable_execs_the_command_as_the_same_pid() {
    let mut child = entrypoint(&["sh", "-c", "echo $$"])
        .env("CAIRN_DISABLE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let lines = Lines::new(child.stdout.take().expect("stdout"));
    assert_eq!(lines.next(), child.id().to_string(), "same pid: exec'd");
    let status = wait_bounded(&mut child, "disabled entrypoint");
    assert_eq!(code(status), 0);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("read");
    assert_eq!(stderr, "", "disabled: nothing of ours, not even a warning");

    // The control: supervised, the child is another process whose parent is
    // the entrypoint.
    let mut child = entrypoint(&["sh", "-c", "echo $$ $PPID"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let lines = Lines::new(child.stdout.take().expect("stdout"));
    let line = lines.next();
    let (pid, ppid) = line.split_once(' ').expect("two pids");
    assert_ne!(pid, child.id().to_string());
    assert_eq!(ppid, child.id().to_string());
    wait_bounded(&mut child, "entrypoint");
}

#[test]
fn disable_keeps_the_exit_status_and_reports_a_missing_command() {
    let out = output_bounded(entrypoint(&["sh", "-c", "exit 5"]).env("CAIRN_DISABLE", "true"));
    assert_eq!(code(out.status), 5);
    let out = output_bounded(entrypoint(&["cairn-no-such-command"]).env("CAIRN_DISABLE", "1"));
    assert_eq!(code(out.status), 127);
    assert!(String::from_utf8_lossy(&out.stderr).contains("cairn-no-such-command"));
}

#[test]
fn missing_command_is_a_usage_error() {
    for args in [&[][..], &["--"][..], &["--bogus", "ls"][..]] {
        let out = output_bounded(&mut entrypoint(args));
        assert_eq!(code(out.status), 2, "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("Usage: cairn-entrypoint [--] CMD"),
            "{args:?}: {stderr}"
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn help_explains_the_environment() {
    let out = output_bounded(&mut entrypoint(&["--help"]));
    assert_eq!(code(out.status), 0);
    let help = String::from_utf8_lossy(&out.stdout);
    for var in ALL_VARS {
        assert!(help.contains(var), "--help does not mention {var}");
    }
    // After `--`, --help is the command's.
    let out = output_bounded(&mut entrypoint(&["--", "--help"]));
    assert_eq!(code(out.status), 127);
}

#[test]
fn command_not_found_is_127() {
    let out = output_bounded(&mut entrypoint(&["cairn-no-such-command", "x"]));
    assert_eq!(code(out.status), 127);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot run cairn-no-such-command"),
        "{stderr}"
    );
}

#[test]
fn missing_settings_warn_once_and_still_run_the_child() {
    let out = output_bounded(&mut entrypoint(&["sh", "-c", "echo hello; exit 3"]));
    assert_eq!(code(out.status), 3);
    assert_eq!(out.stdout, b"hello\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("cairn-entrypoint: warning:"), "{stderr}");
    assert!(stderr.contains("CAIRN_ADDRS"), "{stderr}");
}

#[test]
fn invalid_settings_name_the_variable_and_still_run_the_child() {
    let mut cmd = entrypoint(&["sh", "-c", "echo hello"]);
    with_cluster_env(&mut cmd).env("CAIRN_CA_FINGERPRINT", "sha256:nothex");
    let out = output_bounded(&mut cmd);
    assert_eq!(code(out.status), 0);
    assert_eq!(out.stdout, b"hello\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("CAIRN_CA_FINGERPRINT"), "{stderr}");
}

#[test]
fn the_entrypoint_token_is_not_passed_to_the_child() {
    let mut cmd = entrypoint(&[
        "sh",
        "-c",
        "echo ${CAIRN_ENTRYPOINT_TOKEN-unset} $CAIRN_DEPLOYMENT_ID",
    ]);
    with_cluster_env(&mut cmd);
    let out = output_bounded(&mut cmd);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "unset web/v1\n");
}

#[test]
fn stdin_is_inherited() {
    let mut child = entrypoint(&["cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"through stdin\n")
        .expect("write");
    let lines = Lines::new(child.stdout.take().expect("stdout"));
    assert_eq!(lines.next(), "through stdin");
    assert_eq!(code(wait_bounded(&mut child, "entrypoint")), 0);
}

#[test]
fn a_grandchild_holding_the_pipes_does_not_keep_us_alive() {
    // The child leaves a background process that keeps stdout open; the
    // entrypoint exits after a bounded drain instead of waiting for it.
    let start = Instant::now();
    let mut child = entrypoint(&["sh", "-c", "sleep 30 & echo $!; exit 4"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let lines = Lines::new(child.stdout.take().expect("stdout"));
    let sleeper: u32 = lines.next().parse().expect("a pid");
    let status = wait_bounded(&mut child, "entrypoint");
    let elapsed = start.elapsed();
    send_signal(sleeper, Signal::SIGKILL);
    assert_eq!(code(status), 4);
    assert!(elapsed < std::time::Duration::from_secs(10), "{elapsed:?}");
}

/// Under a terminal, the child's process group gets the foreground, so an
/// interactive child can read the terminal (otherwise it would be stopped by
/// SIGTTIN, and this test would time out).
#[test]
fn an_interactive_child_can_read_the_terminal() {
    let inner = format!("{} sh -c 'read x; echo got $x; exit 4'", bin());
    let mut cmd = std::process::Command::new("script");
    // script(1) from util-linux runs the command on a new pseudo-terminal.
    cmd.args(["-qec", &inner, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    for var in ALL_VARS {
        cmd.env_remove(var);
    }
    let mut script = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("this test needs script(1) from util-linux: {e}"));
    let mut stdin = script.stdin.take().expect("stdin");
    stdin.write_all(b"hello\n").expect("type");
    let lines = Lines::new(script.stdout.take().expect("stdout"));
    assert_eventually_line(&lines, "got hello");
    let status = wait_bounded(&mut script, "script(1) with the entrypoint");
    drop(stdin);
    assert_eq!(code(status), 4);
}

fn assert_eventually_line(lines: &Lines, want: &str) {
    loop {
        if lines.next().trim_end_matches('\r') == want {
            return;
        }
    }
}
