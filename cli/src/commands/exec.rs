//! `cairn exec`: run a command in an instance of a deployment, in the app's
//! environment and working directory, wherever the instance runs.
//!
//! The command's stdout and stderr come back on ours, its exit code is
//! ours. `-i` streams our stdin to it; `-t` gives it a pseudo-terminal (our
//! terminal goes to raw mode for the session and window size changes are
//! forwarded).

use std::io::{Read, Write};

use anyhow::{bail, Context as _};
use cairn_protocol::api::{ClientRequest, ClientResponse};
use cairn_protocol::frame;
use cairn_protocol::instance::{ExecInput, ExecOutput, ExecSpec, TtySpec, EXEC_CHUNK};
use cairn_protocol::rpc;
use tokio::sync::mpsc;

use super::{DeploymentArgs, Global};
use crate::client;

#[derive(Debug, Clone, clap::Args)]
pub struct ExecArgs {
    #[command(flatten)]
    pub target: DeploymentArgs,
    /// Keep stdin open and send it to the command.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Give the command a pseudo-terminal (for shells and full-screen programs).
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Run in this instance (its id or a unique prefix, see `cairn instance list`);
    /// default: any connected instance of the deployment.
    #[arg(long, value_name = "ID")]
    pub instance: Option<String>,
    /// The command and its arguments (after --).
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<String>,
}

/// Exit code when the session breaks before the command's exit is known.
const BROKEN: i32 = 255;

pub async fn run(g: &Global, a: &ExecArgs) -> anyhow::Result<i32> {
    let target = a.target.target(g)?;
    let tty = if a.tty {
        let (rows, cols) = terminal_size().unwrap_or((24, 80));
        Some(TtySpec {
            rows,
            cols,
            term: std::env::var("TERM")
                .ok()
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| "xterm".into()),
        })
    } else {
        None
    };
    let spec = ExecSpec {
        command: a.command.clone(),
        tty,
        stdin: a.interactive,
    };
    if let Some(reason) = spec.invalid() {
        bail!("{reason}");
    }
    let ctx = client::resolve(g.context.as_deref(), true).await?;
    let s = client::connect(&ctx).await?;
    let req = ClientRequest::Exec {
        target,
        instance: a.instance.clone(),
        spec,
    };
    let (mut send, mut recv) = rpc::open(&s.conn, &req).await?;
    match frame::read_required::<_, ClientResponse>(&mut recv).await {
        Ok(ClientResponse::ExecOpened { .. }) => {}
        Ok(ClientResponse::Error { message }) => bail!("{message}"),
        Ok(other) => bail!("unexpected answer from the node: {other:?}"),
        Err(e) => bail!("the node did not open the session: {e}"),
    }

    // Input: our stdin (with -i), terminal resizes (with -t).
    let (tx, mut rx) = mpsc::channel::<ExecInput>(16);
    if a.interactive {
        spawn_stdin_reader(tx.clone())?;
    } else {
        let _ = tx.send(ExecInput::StdinEof).await;
    }
    if a.tty {
        spawn_resize_watcher(tx.clone())?;
    }
    drop(tx);
    // Our side stays open until the session ends (end of stdin is a frame):
    // if this process dies, the stream breaks instead of ending cleanly,
    // and the command is hung up.
    let writer = tokio::spawn(async move {
        while let Some(input) = rx.recv().await {
            if frame::write(&mut send, &input).await.is_err() {
                return;
            }
        }
        std::future::pending::<()>().await;
        drop(send);
    });

    // Raw mode only once the session is open; restored on every way out.
    let _raw = if a.tty { RawMode::enter() } else { None };
    let code = relay_output(&mut recv).await;
    writer.abort();
    s.conn.close(0u32.into(), b"exec done");
    drop(_raw);
    match code {
        Ok(code) => Ok(code),
        Err(message) => {
            eprintln!("error: {message}");
            Ok(BROKEN)
        }
    }
}

/// Passes the command's output to ours until it exits; its exit code, or
/// why the session broke.
async fn relay_output(recv: &mut quinn::RecvStream) -> Result<i32, String> {
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    loop {
        match frame::read::<_, ExecOutput>(recv).await {
            Ok(Some(ExecOutput::Started { .. })) => {}
            Ok(Some(ExecOutput::Stdout(b))) => {
                let _ = stdout.write_all(&b);
                let _ = stdout.flush();
            }
            Ok(Some(ExecOutput::Stderr(b))) => {
                let _ = stderr.write_all(&b);
                let _ = stderr.flush();
            }
            Ok(Some(ExecOutput::Exit { code })) => return Ok(code),
            Ok(Some(ExecOutput::Failed { message, code })) => {
                eprintln!("error: {message}");
                return Ok(code);
            }
            Ok(None) => return Err("the session ended before the command's exit".into()),
            Err(e) => return Err(format!("the session broke: {e}")),
        }
    }
}

/// A thread reading our stdin (blocking) into `tx`, then `StdinEof`.
fn spawn_stdin_reader(tx: mpsc::Sender<ExecInput>) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("exec-stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = vec![0u8; EXEC_CHUNK];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if tx
                            .blocking_send(ExecInput::Stdin(buf[..n].to_vec()))
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
            let _ = tx.blocking_send(ExecInput::StdinEof);
        })
        .context("starting the stdin thread")?;
    Ok(())
}

/// Sends our terminal's new size on every SIGWINCH (the handler is in place
/// when this returns).
fn spawn_resize_watcher(tx: mpsc::Sender<ExecInput>) -> anyhow::Result<()> {
    let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        .context("watching the terminal's size")?;
    tokio::spawn(async move {
        while winch.recv().await.is_some() {
            if let Some((rows, cols)) = terminal_size() {
                if tx.send(ExecInput::Resize { rows, cols }).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok(())
}

/// Our terminal's (rows, cols), from stdin, stdout or stderr.
fn terminal_size() -> Option<(u16, u16)> {
    for fd in [0, 1, 2] {
        let mut ws = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one `winsize` into the pointer, which
        // points to a live value on this stack frame.
        #[allow(unsafe_code)]
        let r = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
        if r == 0 && ws.ws_row > 0 && ws.ws_col > 0 {
            return Some((ws.ws_row, ws.ws_col));
        }
    }
    None
}

/// Our stdin terminal in raw mode (input goes to the remote terminal as
/// typed: Ctrl-C included); the old mode comes back on drop.
struct RawMode {
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    /// `None` when stdin is not a terminal.
    fn enter() -> Option<RawMode> {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSADRAIN, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        use nix::sys::termios::{tcsetattr, SetArg};
        let _ = tcsetattr(std::io::stdin(), SetArg::TCSADRAIN, &self.saved);
    }
}
