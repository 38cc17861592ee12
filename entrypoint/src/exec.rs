//! Exec sessions: a command run in the app's context (its environment and
//! working directory) on a stream the node opened, with a pseudo-terminal
//! when asked.
//!
//! The stream carries [`ExecInput`] frames in and [`ExecOutput`] frames out
//! (see `cairn_protocol::instance`): `Started`, output, then `Exit` (or
//! `Failed` when the command could not run).
//!
//! Invariants:
//! - The command is spawned through [`crate::reaper`] (the only waiter), in
//!   a session (tty) or process group (pipes) of its own, and dies with the
//!   entrypoint (`PR_SET_PDEATHSIG`).
//! - The command never waits on the network for longer than the stream's
//!   flow control allows, and the entrypoint's app is never affected: each
//!   session has its own threads for blocking I/O.
//! - A session whose client went away before the command ended hangs the
//!   command up (`SIGHUP` to its group), then kills the group after
//!   [`HANGUP_GRACE`].
//! - Every reader thread ends: it polls with a timeout and stops once told,
//!   even when a leftover background process keeps the pipe open.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cairn_protocol::frame;
use cairn_protocol::instance::{ExecInput, ExecOutput, ExecSpec, EXEC_CHUNK};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use crate::child::ChildSpec;
use crate::reaper::{self, ExitStatus};

/// After the client went away, how long the command's group has between
/// `SIGHUP` and `SIGKILL`.
pub const HANGUP_GRACE: Duration = Duration::from_secs(2);
/// After the command ended, how long its output may stand still before we
/// stop waiting for the pipes to close (a background process may hold them).
pub const DRAIN_IDLE: Duration = Duration::from_millis(500);
/// How often a reader thread looks whether it should stop.
const POLL_MS: i32 = 200;
/// Output chunks in flight between the reader threads and the stream.
const OUTPUT_QUEUE: usize = 16;
/// The reader and writer threads do little; they need little stack.
const THREAD_STACK: usize = 64 * 1024;

/// What an exec session inherits from the app: its environment (as the app
/// was last started with it) and working directory (the entrypoint's).
pub trait AppContext: Send + Sync {
    /// The app's current spec: `env` on top of the entrypoint's own
    /// environment, without `env_remove`.
    fn app_spec(&self) -> ChildSpec;
}

impl AppContext for ChildSpec {
    fn app_spec(&self) -> ChildSpec {
        self.clone()
    }
}

/// Runs one exec session: `spec` in the app's context, input from `input`,
/// output to `output`. Returns the command's exit code (or the failure
/// code) once the last frame is written.
pub async fn serve<R, W>(app: &dyn AppContext, spec: ExecSpec, input: R, mut output: W) -> i32
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    let code = match Session::start(app, &spec) {
        Ok(session) => session.run(input, &mut output).await,
        Err(failed) => {
            let code = match &failed {
                ExecOutput::Failed { code, .. } => *code,
                _ => 1,
            };
            let _ = frame::write(&mut output, &failed).await;
            code
        }
    };
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut output).await;
    code
}

/// A started command and the ends of its I/O that we hold.
struct Session {
    pid: i32,
    exit: reaper::ExitWatch,
    /// Where stdin bytes go (`None`: no stdin).
    stdin: Option<std::sync::mpsc::Sender<Option<Vec<u8>>>>,
    /// The pty's master side (for resizes), with a tty.
    master: Option<Arc<OwnedFd>>,
    out_rx: mpsc::Receiver<ExecOutput>,
    stop: Arc<AtomicBool>,
}

impl Session {
    /// Spawns the command; `Err` holds the `Failed` frame to send.
    fn start(app: &dyn AppContext, spec: &ExecSpec) -> Result<Session, ExecOutput> {
        if let Some(message) = spec.invalid() {
            return Err(ExecOutput::Failed { message, code: 126 });
        }
        let base = app.app_spec();
        let mut cmd = Command::new(&spec.command[0]);
        cmd.args(&spec.command[1..]);
        for key in &base.env_remove {
            cmd.env_remove(key);
        }
        for (key, value) in &base.env {
            cmd.env(key, value);
        }
        let (tx, out_rx) = mpsc::channel(OUTPUT_QUEUE);
        let stop = Arc::new(AtomicBool::new(false));
        let io_err = |what: &str, e: io::Error| ExecOutput::Failed {
            message: format!("cannot {what}: {e}"),
            code: 126,
        };
        let (child, master, stdin_fd) = match &spec.tty {
            Some(tty) => {
                let size = nix::pty::Winsize {
                    ws_row: tty.rows,
                    ws_col: tty.cols,
                    ws_xpixel: 0,
                    ws_ypixel: 0,
                };
                let pty = nix::pty::openpty(Some(&size), None)
                    .map_err(|e| io_err("open a pseudo-terminal", e.into()))?;
                let slave = pty.slave;
                let dup = |fd: &OwnedFd| {
                    fd.try_clone()
                        .map_err(|e| io_err("open a pseudo-terminal", e))
                };
                cmd.env("TERM", &tty.term)
                    .stdin(Stdio::from(dup(&slave)?))
                    .stdout(Stdio::from(dup(&slave)?))
                    .stderr(Stdio::from(slave));
                own_session_with_terminal(&mut cmd);
                let child = spawn(&mut cmd, &spec.command[0])?;
                let master = Arc::new(pty.master);
                let reader = master
                    .try_clone()
                    .map_err(|e| io_err("read the pseudo-terminal", e))?;
                start_reader(reader, Kind::Stdout, tx.clone(), stop.clone())
                    .map_err(|e| io_err("start a reader thread", e))?;
                let writer = master
                    .try_clone()
                    .map_err(|e| io_err("write the pseudo-terminal", e))?;
                (child, Some(master), spec.stdin.then_some(writer))
            }
            None => {
                cmd.stdin(if spec.stdin {
                    Stdio::piped()
                } else {
                    Stdio::null()
                })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
                own_group(&mut cmd);
                let mut child = spawn(&mut cmd, &spec.command[0])?;
                // Invariant: both were set to `Stdio::piped()` just above.
                let (Some(out), Some(err)) = (child.1.stdout.take(), child.1.stderr.take()) else {
                    return Err(io_err("capture the output", io::ErrorKind::Other.into()));
                };
                for (fd, kind) in [
                    (OwnedFd::from(out), Kind::Stdout),
                    (err.into(), Kind::Stderr),
                ] {
                    start_reader(fd, kind, tx.clone(), stop.clone())
                        .map_err(|e| io_err("start a reader thread", e))?;
                }
                let stdin = child.1.stdin.take().map(OwnedFd::from);
                (child, None, stdin)
            }
        };
        let (pid, std_child, exit) = child;
        drop(std_child);
        let stdin = match stdin_fd {
            Some(fd) => Some(
                start_writer(fd, spec.tty.is_some())
                    .map_err(|e| io_err("start the stdin thread", e))?,
            ),
            None => None,
        };
        Ok(Session {
            pid,
            exit,
            stdin,
            master,
            out_rx,
            stop,
        })
    }

    async fn run<R, W>(mut self, input: R, output: &mut W) -> i32
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin,
    {
        let started = ExecOutput::Started {
            pid: self.pid as u32,
        };
        let mut client_gone = frame::write(output, &started).await.is_err();
        // Input: its own task, since a frame read must not be cancelled.
        let (gone_tx, mut gone_rx) = tokio::sync::oneshot::channel::<bool>();
        let input_task = tokio::spawn(read_input(
            input,
            self.stdin.take(),
            self.master.clone(),
            gone_tx,
        ));
        let mut exit = self.exit.clone();
        let mut status: Option<ExitStatus> = None;
        let mut input_open = true;
        // Until the command ends: pass output on, watch the client.
        while status.is_none() && !client_gone {
            tokio::select! {
                chunk = self.out_rx.recv() => match chunk {
                    Some(frame_out) => client_gone = frame::write(output, &frame_out).await.is_err(),
                    // Every reader ended; the exit follows.
                    None => status = wait_exit(&mut exit).await,
                },
                got = wait_exit(&mut exit) => status = got,
                clean = &mut gone_rx, if input_open => {
                    // A finished input is normal (the client sent all it
                    // had); a broken one means the client went away.
                    input_open = false;
                    client_gone = clean != Ok(true);
                }
            }
            if status.is_none() && exit.has_changed().is_err() {
                // The reaper sends the status, then drops its side.
                status = *exit.borrow();
                if status.is_none() {
                    // Gone without a status: cannot happen (see `reaper`),
                    // but never spin on it.
                    break;
                }
            }
        }
        if client_gone {
            self.hang_up(&mut exit).await;
            input_task.abort();
            self.stop.store(true, Ordering::Relaxed);
            return 129;
        }
        // The command ended: pass on what is left of its output.
        while let Ok(Some(frame_out)) = tokio::time::timeout(DRAIN_IDLE, self.out_rx.recv()).await {
            if frame::write(output, &frame_out).await.is_err() {
                break;
            }
        }
        let code = status.map_or(1, ExitStatus::exit_code);
        let _ = frame::write(output, &ExecOutput::Exit { code }).await;
        // Only now stop reading the client: the node then refuses the rest
        // of its input without disturbing the `Exit` on its way.
        self.stop.store(true, Ordering::Relaxed);
        input_task.abort();
        code
    }

    /// The client is gone: SIGHUP to the command's group, SIGKILL after
    /// [`HANGUP_GRACE`].
    async fn hang_up(&self, exit: &mut reaper::ExitWatch) {
        let group = Pid::from_raw(self.pid);
        let signal = |sig| reaper::while_alive(self.pid, || killpg(group, sig));
        signal(Signal::SIGHUP);
        signal(Signal::SIGCONT);
        if tokio::time::timeout(HANGUP_GRACE, exit.wait_for(Option::is_some))
            .await
            .is_err()
        {
            signal(Signal::SIGKILL);
        }
    }
}

async fn wait_exit(exit: &mut reaper::ExitWatch) -> Option<ExitStatus> {
    exit.wait_for(Option::is_some).await.ok().and_then(|s| *s)
}

/// Reads the client's frames: stdin to the writer thread, resizes to the
/// pty. Tells `gone` when the stream ends; returns whether it ended cleanly.
async fn read_input<R: AsyncRead + Unpin>(
    mut input: R,
    mut stdin: Option<std::sync::mpsc::Sender<Option<Vec<u8>>>>,
    master: Option<Arc<OwnedFd>>,
    gone: tokio::sync::oneshot::Sender<bool>,
) {
    let clean = loop {
        match frame::read::<_, ExecInput>(&mut input).await {
            Ok(Some(ExecInput::Stdin(bytes))) => {
                if let Some(tx) = &stdin {
                    if tx.send(Some(bytes)).is_err() {
                        stdin = None;
                    }
                }
            }
            Ok(Some(ExecInput::StdinEof)) => {
                if let Some(tx) = stdin.take() {
                    let _ = tx.send(None);
                }
            }
            Ok(Some(ExecInput::Resize { rows, cols })) => {
                if let Some(master) = &master {
                    resize(master, rows, cols);
                }
            }
            Ok(None) => break true,
            Err(_) => break false,
        }
    };
    let _ = gone.send(clean);
}

/// Sets the pty's window size (the kernel sends SIGWINCH to its group).
fn resize(master: &OwnedFd, rows: u16, cols: u16) {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which points
    // to a live, initialised value; the fd is open (we own it).
    #[allow(unsafe_code)]
    unsafe {
        libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size);
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Stdout,
    Stderr,
}

type Spawned = (i32, std::process::Child, reaper::ExitWatch);

fn spawn(cmd: &mut Command, program: &str) -> Result<Spawned, ExecOutput> {
    match reaper::spawn(cmd) {
        Ok((child, exit)) => Ok((child.id() as i32, child, exit)),
        Err(source) => {
            let code = if source.kind() == io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            Err(ExecOutput::Failed {
                message: format!("cannot run {program}: {source}"),
                code,
            })
        }
    }
}

/// A new session whose controlling terminal is the pty on fd 0.
#[allow(unsafe_code)]
fn own_session_with_terminal(cmd: &mut Command) {
    // SAFETY: runs in the forked child before exec; only async-signal-safe
    // calls (setsid, ioctl, prctl) on fd 0, which std has just set to the
    // pty's slave side.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            die_with_parent();
            Ok(())
        });
    }
}

/// A process group of its own (so a hang-up reaches all it started).
#[allow(unsafe_code)]
fn own_group(cmd: &mut Command) {
    cmd.process_group(0);
    // SAFETY: runs in the forked child before exec; prctl is
    // async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            die_with_parent();
            Ok(())
        });
    }
}

/// Asks the kernel to SIGKILL this (forked) process when its parent thread
/// ends. Call only between fork and exec.
#[allow(unsafe_code)]
pub(crate) fn die_with_parent() {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and changes
    // only this process's own attribute.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
    }
}

/// A thread reading `fd` into `tx` as output frames until end of file, an
/// error, or `stop`.
fn start_reader(
    fd: OwnedFd,
    kind: Kind,
    tx: mpsc::Sender<ExecOutput>,
    stop: Arc<AtomicBool>,
) -> io::Result<()> {
    std::thread::Builder::new()
        .name("exec-reader".into())
        .stack_size(THREAD_STACK)
        .spawn(move || {
            let mut file = File::from(fd);
            let mut buf = vec![0u8; EXEC_CHUNK];
            while !stop.load(Ordering::Relaxed) {
                if !readable(file.as_fd(), POLL_MS) {
                    continue;
                }
                let n = match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    // EIO: the pty's last slave fd closed.
                    Err(_) => break,
                };
                let chunk = buf[..n].to_vec();
                let msg = match kind {
                    Kind::Stdout => ExecOutput::Stdout(chunk),
                    Kind::Stderr => ExecOutput::Stderr(chunk),
                };
                if tx.blocking_send(msg).is_err() {
                    break;
                }
            }
        })?;
    Ok(())
}

/// Whether `fd` has something to read (or hit end of file / an error)
/// within `timeout_ms`.
fn readable(fd: std::os::fd::BorrowedFd<'_>, timeout_ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll reads and writes exactly one pollfd, which lives on this
    // stack frame for the whole call.
    #[allow(unsafe_code)]
    let n = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    n > 0
}

/// A thread writing what arrives on the returned sender to `fd`; `None` (or
/// dropping the sender) ends stdin: closes the pipe, or with a tty sends the
/// terminal's end-of-file character.
fn start_writer(fd: OwnedFd, tty: bool) -> io::Result<std::sync::mpsc::Sender<Option<Vec<u8>>>> {
    let (tx, rx) = std::sync::mpsc::channel::<Option<Vec<u8>>>();
    std::thread::Builder::new()
        .name("exec-stdin".into())
        .stack_size(THREAD_STACK)
        .spawn(move || {
            let mut file = File::from(fd);
            while let Ok(Some(bytes)) = rx.recv() {
                if file.write_all(&bytes).is_err() {
                    return;
                }
            }
            if tty {
                // ^D at the start of a line: end of input for the reader.
                let _ = file.write_all(&[0x04]);
            }
        })?;
    Ok(tx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_protocol::instance::TtySpec;
    use tokio::io::{duplex, DuplexStream};

    fn spec(command: &[&str], stdin: bool) -> ExecSpec {
        ExecSpec {
            command: command.iter().map(|s| s.to_string()).collect(),
            tty: None,
            stdin,
        }
    }

    fn app() -> ChildSpec {
        let mut app = ChildSpec::new("unused", Vec::<String>::new());
        app.env
            .push(("EXEC_TEST_VAR".into(), "from-the-app".into()));
        app.env_remove.push("HOME".into());
        app
    }

    /// Starts a session; returns (client's writer, client's reader, the
    /// session's task).
    fn start(
        spec: ExecSpec,
    ) -> (
        tokio::io::WriteHalf<DuplexStream>,
        tokio::io::ReadHalf<DuplexStream>,
        tokio::task::JoinHandle<i32>,
    ) {
        reaper::start().expect("reaper");
        let (client, server) = duplex(64 * 1024);
        let (server_in, server_out) = tokio::io::split(server);
        let task = tokio::spawn(async move { serve(&app(), spec, server_in, server_out).await });
        let (client_in, client_out) = tokio::io::split(client);
        (client_out, client_in, task)
    }

    /// Every frame until the stream ends.
    async fn frames(mut r: impl AsyncRead + Unpin) -> Vec<ExecOutput> {
        let mut out = Vec::new();
        while let Ok(Some(f)) = frame::read::<_, ExecOutput>(&mut r).await {
            out.push(f);
        }
        out
    }

    fn stdout_of(frames: &[ExecOutput]) -> String {
        frames
            .iter()
            .filter_map(|f| match f {
                ExecOutput::Stdout(b) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn a_command_gets_the_apps_env_and_ends_with_its_exit_code() {
        let (w, r, task) = start(spec(
            &[
                "sh",
                "-c",
                "echo $EXEC_TEST_VAR ${HOME:-no-home}; echo e >&2; exit 4",
            ],
            false,
        ));
        let got = frames(r).await;
        drop(w);
        assert!(
            matches!(got.first(), Some(ExecOutput::Started { .. })),
            "{got:?}"
        );
        assert_eq!(stdout_of(&got), "from-the-app no-home\n");
        assert!(
            got.contains(&ExecOutput::Stderr(b"e\n".to_vec())),
            "{got:?}"
        );
        assert_eq!(got.last(), Some(&ExecOutput::Exit { code: 4 }));
        assert_eq!(task.await.expect("session"), 4);
    }

    #[tokio::test]
    async fn stdin_is_streamed_then_closed() {
        let (mut w, r, task) = start(spec(&["cat"], true));
        frame::write(&mut w, &ExecInput::Stdin(b"abc".to_vec()))
            .await
            .expect("write");
        frame::write(&mut w, &ExecInput::Stdin(b"def\n".to_vec()))
            .await
            .expect("write");
        frame::write(&mut w, &ExecInput::StdinEof)
            .await
            .expect("write");
        let got = frames(r).await;
        assert_eq!(stdout_of(&got), "abcdef\n");
        assert_eq!(got.last(), Some(&ExecOutput::Exit { code: 0 }));
        assert_eq!(task.await.expect("session"), 0);
    }

    #[tokio::test]
    async fn not_found_fails_with_127() {
        let (_w, r, task) = start(spec(&["/no/such/program"], false));
        let got = frames(r).await;
        match got.as_slice() {
            [ExecOutput::Failed { message, code: 127 }] => {
                assert!(message.contains("/no/such/program"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(task.await.expect("session"), 127);
    }

    #[tokio::test]
    async fn a_pty_reports_its_size_and_takes_resizes() {
        let mut s = spec(&["sh", "-c", "stty size; read x; stty size"], true);
        s.tty = Some(TtySpec {
            rows: 11,
            cols: 33,
            term: "dumb".into(),
        });
        let (mut w, mut r, task) = start(s);
        let mut seen = String::new();
        while !seen.contains("11 33") {
            match frame::read::<_, ExecOutput>(&mut r).await.expect("frame") {
                Some(ExecOutput::Stdout(b)) => seen.push_str(&String::from_utf8_lossy(&b)),
                Some(ExecOutput::Started { .. }) => {}
                other => panic!("{other:?} after {seen:?}"),
            }
        }
        frame::write(&mut w, &ExecInput::Resize { rows: 44, cols: 55 })
            .await
            .expect("resize");
        frame::write(&mut w, &ExecInput::Stdin(b"go\r".to_vec()))
            .await
            .expect("type");
        let rest = frames(r).await;
        assert!(stdout_of(&rest).contains("44 55"), "{rest:?}");
        assert_eq!(rest.last(), Some(&ExecOutput::Exit { code: 0 }));
        assert_eq!(task.await.expect("session"), 0);
    }

    #[tokio::test]
    async fn a_client_that_goes_away_hangs_the_command_up() {
        // The next output finds the client gone; SIGHUP ends the command.
        let (w, mut r, task) = start(spec(
            &["sh", "-c", "while :; do echo x; sleep 0.1; done"],
            true,
        ));
        let pid = match frame::read::<_, ExecOutput>(&mut r).await {
            Ok(Some(ExecOutput::Started { pid })) => pid,
            other => panic!("{other:?}"),
        };
        drop(w);
        drop(r);
        let code = tokio::time::timeout(HANGUP_GRACE * 3, task)
            .await
            .expect("the session ends")
            .expect("no panic");
        assert_eq!(code, 129);
        // Reaped: the pid no longer names our child.
        assert!(reaper::while_alive(pid as i32, || ()).is_none());
    }

    #[tokio::test]
    async fn a_command_that_ignores_the_hangup_is_killed() {
        let (w, mut r, task) = start(spec(
            &[
                "sh",
                "-c",
                "trap '' HUP; echo ready; while :; do echo x; sleep 0.1; done",
            ],
            true,
        ));
        loop {
            match frame::read::<_, ExecOutput>(&mut r).await.expect("frame") {
                Some(ExecOutput::Stdout(b)) if b.starts_with(b"ready") => break,
                Some(_) => {}
                None => panic!("ended early"),
            }
        }
        let t0 = std::time::Instant::now();
        drop(w);
        drop(r);
        let code = tokio::time::timeout(HANGUP_GRACE * 3, task)
            .await
            .expect("the session ends")
            .expect("no panic");
        assert_eq!(code, 129);
        assert!(t0.elapsed() >= HANGUP_GRACE, "{:?}", t0.elapsed());
    }
}
