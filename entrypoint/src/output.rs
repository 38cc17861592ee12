//! Output pumps: copy the child's stdout/stderr pipes through to our own
//! stdout/stderr, byte for byte, and cut them into lines for the log queue.
//!
//! Invariant: each pipe has its own thread that is always either reading the
//! pipe or writing what it just read, so the child is never held up by
//! anything but our own stdout/stderr (a pass-through cannot be faster than
//! its reader) — never by the log queue, the runtime or the network. If our
//! stdout/stderr is closed or broken, the pump keeps reading (and queueing)
//! and discards the pass-through.
//!
//! Plain threads rather than tasks: blocking writes to a terminal, file or
//! pipe must not stall the runtime thread that forwards signals and reaps.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
use tokio::sync::mpsc;

use crate::logqueue::{LineSplitter, LogQueue, Stream};

/// Bytes read from a pipe at once (a Linux pipe holds 64 KiB).
const PUMP_BUF: usize = 32 * 1024;
/// The pump threads do little; they need little stack.
const PUMP_STACK: usize = 64 * 1024;

/// The two running pumps of one child.
#[derive(Debug)]
pub struct OutputPumps {
    running: usize,
    done: mpsc::UnboundedReceiver<()>,
    progress: Arc<AtomicU64>,
}

impl OutputPumps {
    /// Starts pumping `stdout` to our stdout and `stderr` to our stderr;
    /// lines go to `logs` when given.
    pub fn start(
        stdout: impl Read + Send + 'static,
        stderr: impl Read + Send + 'static,
        logs: Option<Arc<LogQueue>>,
    ) -> io::Result<Self> {
        let (tx, done) = mpsc::unbounded_channel();
        let progress = Arc::new(AtomicU64::new(0));
        let mut running = 0;
        for (stream, src) in [
            (Stream::Stdout, Box::new(stdout) as Box<dyn Read + Send>),
            (Stream::Stderr, Box::new(stderr)),
        ] {
            let pump = Pump {
                src,
                dst: our_fd(stream),
                splitter: logs.as_ref().map(|_| LineSplitter::new(stream)),
                logs: logs.clone(),
                progress: progress.clone(),
            };
            let tx = tx.clone();
            std::thread::Builder::new()
                .name(format!("{stream:?}-pump").to_lowercase())
                .stack_size(PUMP_STACK)
                .spawn(move || {
                    pump.run();
                    // The receiver may be gone (we are exiting): fine.
                    let _ = tx.send(());
                })?;
            running += 1;
        }
        Ok(Self {
            running,
            done,
            progress,
        })
    }

    /// Waits until both pipes reach end of file (every byte passed through),
    /// or until nothing moved for `idle`: a process that inherited the pipes
    /// (a daemonised grandchild) may keep them open forever.
    pub async fn finish(mut self, idle: Duration) {
        let mut last = self.progress.load(Ordering::Relaxed);
        let mut tick = tokio::time::interval(idle);
        tick.reset(); // the first tick is one `idle` from now
        while self.running > 0 {
            tokio::select! {
                ended = self.done.recv() => match ended {
                    Some(()) => self.running -= 1,
                    None => return,
                },
                _ = tick.tick() => {
                    let now = self.progress.load(Ordering::Relaxed);
                    if now == last {
                        return;
                    }
                    last = now;
                }
            }
        }
    }
}

struct Pump {
    src: Box<dyn Read + Send>,
    dst: Option<File>,
    splitter: Option<LineSplitter>,
    logs: Option<Arc<LogQueue>>,
    progress: Arc<AtomicU64>,
}

impl Pump {
    fn run(mut self) {
        // When the child was given the terminal (see `child`), we write to it
        // from a background process group; with `stty tostop` that raises
        // SIGTTOU, which would stop the entrypoint. Blocked in this thread,
        // the write goes through instead.
        let mut ttou = SigSet::empty();
        ttou.add(Signal::SIGTTOU);
        let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&ttou), None);

        let mut buf = vec![0u8; PUMP_BUF];
        loop {
            let n = match self.src.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            self.progress.fetch_add(1, Ordering::Relaxed);
            let chunk = &buf[..n];
            if let Some(dst) = &mut self.dst {
                if dst.write_all(chunk).is_err() {
                    // Our reader is gone (EPIPE) or the fd broke: stop
                    // passing through, keep draining the child.
                    self.dst = None;
                }
                self.progress.fetch_add(1, Ordering::Relaxed);
            }
            if let (Some(splitter), Some(logs)) = (&mut self.splitter, &self.logs) {
                splitter.feed(chunk, logs);
            }
        }
        if let (Some(splitter), Some(logs)) = (&mut self.splitter, &self.logs) {
            splitter.finish(logs);
        }
    }
}

/// An unbuffered handle on our own stdout or stderr (a duplicate of fd 1 or
/// 2), or `None` when that fd is not open.
fn our_fd(stream: Stream) -> Option<File> {
    let fd = match stream {
        Stream::Stdout => io::stdout().as_fd().try_clone_to_owned(),
        Stream::Stderr => io::stderr().as_fd().try_clone_to_owned(),
    };
    fd.ok().map(File::from)
}
