//! `cairn logs` and `cairn exec` against real processes: a node, the CLI,
//! and an app deployed by `cairn up` on the process platform, each instance
//! under `cairn-entrypoint`.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_tests::{assert_eventually, pid_alive, write_app, Cli, NodeProc, TestCluster};
use serde_json::Value;

/// Two instances that say hello (stdout), complain once (stderr), write
/// their pid to a file and tick every 100 ms.
const TICKER: &str = r#"project = "shop"

app "web" {
  build {
    use "files" {}
  }
  deploy {
    use "process" {
      command = ["sh", "-c", "echo $$ > app-$CAIRN_INSTANCE.pid; echo \"hello from $CAIRN_INSTANCE $GREETING\"; echo \"oops $CAIRN_INSTANCE\" >&2; i=0; while :; do i=$((i+1)); echo \"tick $CAIRN_INSTANCE $i\"; sleep 0.1; done"]
      count = COUNT
      wait_for_port = false
    }
  }
}
"#;

const WITHIN: Duration = Duration::from_secs(30);

fn ticker(count: u32) -> tempfile::TempDir {
    write_app(&TICKER.replace("COUNT", &count.to_string()), &[])
}

/// `cairn logs ARGS… --json` in `dir`, parsed (it must succeed).
fn logs(cli: &Cli, dir: &Path, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["logs", "--json"];
    all.extend_from_slice(args);
    let out = cli.run_in(dir, &all).ok();
    out.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

/// The complete JSON lines of `out` (a follower's output so far).
fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn lines_of(v: &[Value]) -> Vec<&str> {
    v.iter().filter_map(|l| l["line"].as_str()).collect()
}

/// The connected instances of `shop/web` vN: (instance id, node id hex, pid).
fn connected(cli: &Cli, seq: u64) -> Vec<(String, String, u64)> {
    let out = cli.run(&["instance", "list", "--json"]);
    if !out.success() {
        return Vec::new();
    }
    let v: Value = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
    v.as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["deployment"] == format!("v{seq}") && i["state"] == "connected")
        .map(|i| {
            (
                i["instance"].as_str().unwrap_or_default().to_string(),
                i["node"].as_str().unwrap_or_default().to_string(),
                i["pid"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

/// Where the process platform put deployment vN of web (its working dir).
fn deployment_dir(cli: &Cli, seq: u64) -> PathBuf {
    cli.deployment_dir("web", seq)
}

/// The highest tick number of `instance` (0 or 1) in `lines`.
fn max_tick(lines: &[&str], instance: u32) -> u64 {
    let prefix = format!("tick {instance} ");
    lines
        .iter()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|n| n.parse().ok())
        .max()
        .unwrap_or(0)
}

#[test]
fn logs_gather_every_instance_filter_follow_and_pass_through() {
    let node = NodeProc::start_new();
    let cli = Cli::new();
    cli.connect_to(&node, "dev");
    let app = ticker(2);
    cli.run_in(app.path(), &["config", "set", "GREETING=hi"])
        .ok();
    cli.run_in(app.path(), &["up"]).ok();
    assert_eventually!(
        connected(&cli, 1).len() == 2,
        WITHIN,
        "two instances connect"
    );

    // Both instances' lines, stdout and stderr, with their deployment.
    assert_eventually!(
        {
            let all = logs(&cli, app.path(), &[]);
            let l = lines_of(&all);
            l.contains(&"hello from 0 hi")
                && l.contains(&"hello from 1 hi")
                && l.contains(&"oops 1")
        },
        WITHIN,
        "hello and oops lines of both instances: {:?}",
        lines_of(&logs(&cli, app.path(), &[]))
    );
    let all = logs(&cli, app.path(), &[]);
    let oops = all.iter().find(|l| l["line"] == "oops 0").expect("oops 0");
    assert_eq!(oops["stream"], "stderr");
    assert_eq!(oops["deployment"], "v1");
    let hello0 = all
        .iter()
        .find(|l| l["line"] == "hello from 0 hi")
        .expect("hello 0");
    assert_eq!(hello0["stream"], "stdout");
    let times: Vec<u64> = all.iter().filter_map(|l| l["time_ms"].as_u64()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "oldest first");

    // One instance, by a prefix of its id.
    let id0 = hello0["instance"]
        .as_str()
        .expect("instance id")
        .to_string();
    let only0 = logs(&cli, app.path(), &["--instance", &id0[..6]]);
    assert!(only0.iter().all(|l| l["instance"] == id0.as_str()));
    let l0 = lines_of(&only0);
    assert!(l0.contains(&"hello from 0 hi") && !l0.contains(&"hello from 1 hi"));
    assert!(l0.iter().all(|l| !l.starts_with("tick 1 ")));

    // --tail and --since.
    assert_eq!(logs(&cli, app.path(), &["--tail", "3"]).len(), 3);
    assert!(logs(&cli, app.path(), &["--since", "2099-01-01T00:00:00Z"]).is_empty());
    // --since 1s: only the newest lines (once the app has run a while).
    assert_eventually!(
        {
            let before = cairn_protocol::now_ms();
            let recent = logs(&cli, app.path(), &["--since", "1s"]);
            let all = logs(&cli, app.path(), &[]);
            !recent.is_empty()
                && recent.len() < all.len()
                && recent
                    .iter()
                    .all(|l| l["time_ms"].as_u64().unwrap_or(0) + 1000 >= before)
        },
        WITHIN,
        "--since 1s keeps the lines of the last second"
    );

    // The plain format names the instance on every line. (Eventually: an
    // instance whose entrypoint got the configuration after START_WAIT, as
    // on a loaded machine, restarts with it, and its first lines are not
    // ticks.)
    assert_eventually!(
        {
            let plain = cli.run_in(app.path(), &["logs", "--tail", "5"]).ok();
            plain.stdout.lines().count() == 5
                && plain.stdout.lines().all(|l| {
                    l.contains(" | tick ")
                        && l.split(" | ").next().is_some_and(|w| w.trim().len() == 8)
                })
        },
        WITHIN,
        "every plain line is `INSTANCE | tick …`: {}",
        cli.run_in(app.path(), &["logs", "--tail", "5"])
    );

    // -f: history, then new lines as they come.
    let seen = max_tick(&lines_of(&logs(&cli, app.path(), &[])), 0);
    let d = app.path().to_string_lossy().to_string();
    let follow = cli.spawn(&["-C", &d, "logs", "-f", "--json", "--instance", &id0]);
    assert_eventually!(
        {
            let out = follow.stdout_so_far();
            let lines: Vec<Value> = out
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            max_tick(&lines_of(&lines), 0) > seen + 5
        },
        WITHIN,
        "new ticks (after {seen}) arrive while following: {}",
        follow.stdout_so_far()
    );
    drop(follow);

    // The entrypoint passes the output through as well: the process
    // platform's instance log has it.
    let log = std::fs::read_to_string(
        cli.data_dir()
            .join("runner/deployments/web/v1.run/instance-0.log"),
    )
    .expect("instance log");
    assert!(log.contains("hello from 0 hi"), "{log}");
    assert!(log.contains("oops 0"), "{log}");

    // Bad input: one line naming what is wrong.
    let err = cli
        .run_in(app.path(), &["logs", "--instance", "zzzz"])
        .fails();
    assert!(err.stderr.contains("has no instance \"zzzz\""), "{err}");
    let err = cli
        .run_in(app.path(), &["logs", "--since", "yesterday"])
        .fails();
    assert!(err.stderr.contains("--since"), "{err}");
    let err = cli.run_in(app.path(), &["logs", "-d", "9"]).fails();
    assert!(err.stderr.contains("has no deployment v9"), "{err}");
}

#[test]
fn exec_runs_in_the_app_context_streams_stdin_and_propagates_the_exit_code() {
    let node = NodeProc::start_new();
    let cli = Cli::new();
    cli.connect_to(&node, "dev");
    let app = ticker(1);
    // PORT is the platform's: the configuration cannot override it.
    cli.run_in(app.path(), &["config", "set", "GREETING=hi", "PORT=1"])
        .ok();
    cli.run_in(app.path(), &["up"]).ok();
    assert_eventually!(connected(&cli, 1).len() == 1, WITHIN);
    let app_dir = app.path().to_string_lossy().to_string();

    // Environment and working directory are the app's; the exit code is the
    // command's; stdout and stderr stay apart.
    let out = cli.run_in(
        app.path(),
        &[
            "exec",
            "--",
            "sh",
            "-c",
            "echo \"$GREETING\"; pwd; echo \"port=$PORT token=${CAIRN_ENTRYPOINT_TOKEN:-none}\"; echo to-stderr >&2; exit 7",
        ],
    );
    assert_eq!(out.code, Some(7), "{out}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "hi", "{out}");
    let dir = std::fs::canonicalize(deployment_dir(&cli, 1)).expect("deployment dir");
    assert_eq!(Path::new(lines[1]), dir, "{out}");
    let port = lines[2]
        .strip_prefix("port=")
        .and_then(|r| r.split(' ').next())
        .expect("port");
    assert!(port != "1" && port.parse::<u16>().is_ok(), "{out}");
    assert!(
        lines[2].ends_with("token=none"),
        "the token stays hidden: {out}"
    );
    assert_eq!(out.stderr.trim(), "to-stderr", "{out}");

    // -i streams stdin to the command, end of file included.
    let out = cli.run_with_stdin(
        &["-C", &app_dir, "exec", "-i", "--", "tr", "a-z", "A-Z"],
        b"abc\ndef\n",
    );
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.stdout, "ABC\nDEF\n");
    // A larger stream keeps every byte, in order.
    let big: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
    let out = cli.run_with_stdin(&["-C", &app_dir, "exec", "-i", "--", "cat"], big.as_bytes());
    assert_eq!(out.code, Some(0));
    assert!(
        out.stdout == big,
        "{} of {} bytes came back",
        out.stdout.len(),
        big.len()
    );

    // A command that ends while stdin still streams: its exit code arrives
    // (the rest of the input is refused, not an error).
    let flood = vec![b'y'; 4 << 20];
    for _ in 0..3 {
        let out = cli.run_with_stdin(&["-C", &app_dir, "exec", "-i", "--", "true"], &flood);
        assert_eq!(out.code, Some(0), "{out}");
    }

    // Not found: 127 and a reason; a bad instance: one line.
    let out = cli.run_in(app.path(), &["exec", "--", "no-such-program-xyz"]);
    assert_eq!(out.code, Some(127), "{out}");
    assert!(
        out.stderr.contains("cannot run no-such-program-xyz"),
        "{out}"
    );
    let out = cli
        .run_in(app.path(), &["exec", "--instance", "zzzz", "--", "true"])
        .fails();
    assert!(
        out.stderr.contains("no connected instance \"zzzz\""),
        "{out}"
    );

    // A client killed mid-session: the command is hung up, then killed.
    let session = cli.spawn(&[
        "-C",
        &app_dir,
        "exec",
        "--",
        "sh",
        "-c",
        "echo $$ > exec.pid; exec sleep 60",
    ]);
    let pid_file = deployment_dir(&cli, 1).join("exec.pid");
    assert_eventually!(
        std::fs::read_to_string(&pid_file).is_ok_and(|t| t.ends_with('\n')),
        WITHIN
    );
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .expect("pid")
        .trim()
        .parse()
        .expect("a pid");
    assert!(pid_alive(pid));
    cairn_tests::signal(session.pid(), "KILL");
    assert_eventually!(!pid_alive(pid), WITHIN, "the command outlived its client");
    drop(session);

    // The session ends with the command even when a child keeps the output
    // open in the background.
    let t0 = Instant::now();
    let out = cli.run_in(
        app.path(),
        &["exec", "--", "sh", "-c", "sleep 30 & echo started"],
    );
    assert_eq!(out.code, Some(0), "{out}");
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
}

#[test]
fn exec_with_a_tty_gets_a_terminal_and_its_size_changes() {
    let node = NodeProc::start_new();
    let cli = Cli::new();
    cli.connect_to(&node, "dev");
    let app = ticker(1);
    cli.run_in(app.path(), &["up"]).ok();
    assert_eventually!(connected(&cli, 1).len() == 1, WITHIN);

    // Our side of the terminal: a pty whose slave is the CLI's stdio.
    let size = nix::pty::Winsize {
        ws_row: 24,
        ws_col: 80,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).expect("openpty");
    let slave = |fd: &OwnedFd| std::process::Stdio::from(fd.try_clone().expect("dup"));
    let mut cmd = cli.command(&[
        "-C",
        &app.path().to_string_lossy(),
        "exec",
        "-it",
        "--",
        "sh",
        "-c",
        "tty; stty size; echo TERM=$TERM; read x; stty size; echo got=$x; exit 3",
    ]);
    cmd.env("TERM", "xterm-256color")
        .stdin(slave(&pty.slave))
        .stdout(slave(&pty.slave))
        .stderr(slave(&pty.slave));
    let mut child = cmd.spawn().expect("spawn cairn exec");
    // Only the CLI holds the terminal now: the master reads end of file
    // once it exits.
    drop(cmd);
    drop(pty.slave);
    let output = Arc::new(Mutex::new(String::new()));
    let reader = {
        let output = output.clone();
        let mut master = std::fs::File::from(pty.master.try_clone().expect("dup master"));
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = master.read(&mut buf) {
                if n == 0 {
                    break;
                }
                output
                    .lock()
                    .expect("lock")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    let said = || output.lock().expect("lock").clone();
    assert_eventually!(said().contains("24 80"), WITHIN, "first size: {:?}", said());
    let text = said();
    assert!(text.contains("/dev/pts/"), "a pty: {text:?}");
    assert!(
        text.contains("TERM=xterm-256color"),
        "TERM follows ours: {text:?}"
    );

    // Our terminal grows: SIGWINCH to the CLI, which forwards the new size.
    let bigger = libc::winsize {
        ws_row: 50,
        ws_col: 132,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from a live local value.
    #[allow(unsafe_code)]
    let r = unsafe { libc::ioctl(pty.master.as_raw_fd(), libc::TIOCSWINSZ, &bigger) };
    assert_eq!(r, 0, "set the window size");
    cairn_tests::signal(child.id(), "WINCH");
    std::thread::sleep(Duration::from_millis(300));
    let mut master = std::fs::File::from(pty.master.try_clone().expect("dup master"));
    master.write_all(b"hello\r").expect("type a line");
    assert_eventually!(said().contains("got=hello"), WITHIN, "{:?}", said());
    assert!(
        said().contains("50 132"),
        "the new size reached the command: {:?}",
        said()
    );
    let deadline = Instant::now() + WITHIN;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "cairn exec did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(3), "{:?}", said());
    drop(master);
    drop(pty.master);
    let _ = reader.join();
}

#[test]
fn the_apps_node_dies_its_entrypoint_moves_and_exec_and_logs_work_again() {
    let mut cluster = TestCluster::start(3);
    let app = ticker(1);
    cluster
        .admin
        .run_in(app.path(), &["config", "set", "GREETING=hi"])
        .ok();
    cluster.admin.run_in(app.path(), &["up"]).ok();
    assert_eventually!(connected(&cluster.admin, 1).len() == 1, WITHIN);
    let (instance, node, ep_pid) = connected(&cluster.admin, 1).remove(0);
    let at = cluster
        .index_of(&node)
        .expect("the instance's node is ours");
    let app_pid: u32 = std::fs::read_to_string(deployment_dir(&cluster.admin, 1).join("app-0.pid"))
        .expect("app pid file")
        .trim()
        .parse()
        .expect("a pid");

    // A CLI on another node: exec and logs cross the peer mesh.
    let other = (at + 1) % 3;
    let far = cluster.cli_on(other);
    let out = far.run_in(app.path(), &["exec", "--", "sh", "-c", "echo $GREETING"]);
    assert_eq!((out.code, out.stdout.trim()), (Some(0), "hi"), "{out}");
    assert_eventually!(
        lines_of(&logs(&far, app.path(), &[])).contains(&"hello from 0 hi"),
        WITHIN
    );

    // A follower whose context names the instance's node (it has learnt
    // the other members on connecting).
    let near = cluster.cli_on(at);
    near.run(&["server", "info"]).ok();
    let d = app.path().to_string_lossy().to_string();
    let follow = near.spawn(&["-C", &d, "logs", "-f", "--json"]);
    assert_eventually!(
        follow.stdout_so_far().contains("tick 0 "),
        WITHIN,
        "{}",
        follow.stdout_so_far()
    );

    // The instance's node dies: the entrypoint moves to a live node and the
    // app is left alone.
    cluster.nodes[at].kill9();
    let cut = max_tick(&lines_of(&json_lines(&follow.stdout_so_far())), 0);
    let survivor = cluster.cli_on(other);
    assert_eventually!(
        connected(&survivor, 1)
            .iter()
            .any(|(id, n, _)| *id == instance && *n != node),
        Duration::from_secs(60),
        "instance {instance} reconnects to another node: {:?}",
        connected(&survivor, 1)
    );
    assert!(pid_alive(app_pid), "the app kept running");
    assert!(pid_alive(ep_pid as u32), "the entrypoint kept running");

    // Exec and logs work again, from either surviving node.
    for i in (0..3).filter(|i| *i != at) {
        let cli = cluster.cli_on(i);
        let out = cli.run_in(
            app.path(),
            &["exec", "--", "sh", "-c", "echo $GREETING $PPID"],
        );
        assert_eq!(out.code, Some(0), "{out}");
        assert_eq!(out.stdout.split_whitespace().next(), Some("hi"), "{out}");
        let seen = max_tick(&lines_of(&logs(&cli, app.path(), &[])), 0);
        assert_eventually!(
            max_tick(&lines_of(&logs(&cli, app.path(), &[])), 0) > seen,
            WITHIN,
            "new ticks reach `cairn logs` on node {i}"
        );
    }
    // The follower got its stream back from another member and goes on.
    assert_eventually!(
        max_tick(&lines_of(&json_lines(&follow.stdout_so_far())), 0) > cut + 10,
        Duration::from_secs(60),
        "the follower resumes after its node died (stderr: {})",
        follow.stderr_so_far()
    );
    drop(follow);

    // The dead node's window is gone with it; the command says so.
    let out = survivor.run_in(app.path(), &["logs", "--tail", "1"]).ok();
    assert!(out.stderr.contains("lines unavailable from node"), "{out}");
}
