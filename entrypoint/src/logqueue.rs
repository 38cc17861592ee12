//! The bounded queue between the output pumps and the (future) log shipper.
//!
//! Invariant: [`LogQueue::push`] never blocks and never grows the queue past
//! [`LOG_QUEUE_LINES`] lines or [`LOG_QUEUE_BYTES`] bytes of line text; a
//! line that does not fit is dropped and counted in [`LogQueue::dropped`]. The
//! app is never slowed down by its logs not being shipped.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

/// Lines the queue holds at most.
pub const LOG_QUEUE_LINES: usize = 4096;
/// Bytes of line text the queue holds at most (all lines together).
pub const LOG_QUEUE_BYTES: usize = 1024 * 1024;
/// A line longer than this is cut to this many bytes and marked `truncated`.
pub const MAX_LINE_BYTES: usize = 8 * 1024;

/// Which of the child's streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One line of the child's output, without its `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub stream: Stream,
    /// When the line was complete, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The line's bytes as the child wrote them (not necessarily UTF-8), at
    /// most [`MAX_LINE_BYTES`].
    pub bytes: Vec<u8>,
    /// The child wrote more than [`MAX_LINE_BYTES`] before the newline; the
    /// rest of the line was not kept.
    pub truncated: bool,
}

/// A bounded, thread-safe FIFO of [`LogLine`]s. Share it with an `Arc`.
#[derive(Debug)]
pub struct LogQueue {
    max_lines: usize,
    max_bytes: usize,
    inner: Mutex<Inner>,
    dropped: AtomicU64,
    ready: Notify,
}

#[derive(Debug, Default)]
struct Inner {
    lines: VecDeque<LogLine>,
    bytes: usize,
}

impl LogQueue {
    /// A queue with the default limits ([`LOG_QUEUE_LINES`], [`LOG_QUEUE_BYTES`]).
    pub fn new() -> Self {
        Self::with_limits(LOG_QUEUE_LINES, LOG_QUEUE_BYTES)
    }

    pub fn with_limits(max_lines: usize, max_bytes: usize) -> Self {
        Self {
            max_lines,
            max_bytes,
            inner: Mutex::new(Inner::default()),
            dropped: AtomicU64::new(0),
            ready: Notify::new(),
        }
    }

    /// Queues `line`, or drops it (and counts it) when the queue is full.
    /// Returns whether it was queued. Never blocks on the consumer.
    pub fn push(&self, line: LogLine) -> bool {
        let mut inner = self.lock();
        if inner.lines.len() >= self.max_lines || inner.bytes + line.bytes.len() > self.max_bytes {
            drop(inner);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        inner.bytes += line.bytes.len();
        inner.lines.push_back(line);
        drop(inner);
        self.ready.notify_one();
        true
    }

    /// Takes up to `max` lines, oldest first.
    pub fn drain(&self, max: usize) -> Vec<LogLine> {
        let mut inner = self.lock();
        let n = max.min(inner.lines.len());
        let taken: Vec<LogLine> = inner.lines.drain(..n).collect();
        inner.bytes -= taken.iter().map(|l| l.bytes.len()).sum::<usize>();
        taken
    }

    /// Lines dropped because the queue was full, since it was created.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub fn len(&self) -> usize {
        self.lock().lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until the queue holds at least one line (for the shipper).
    pub async fn readable(&self) {
        loop {
            let notified = self.ready.notified();
            if !self.is_empty() {
                return;
            }
            notified.await;
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave `Inner` half-updated in
        // a way that matters (at worst `bytes` is off for one line), so a
        // poisoned lock is used as is.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for LogQueue {
    fn default() -> Self {
        Self::new()
    }
}

/// Cuts one stream's bytes into [`LogLine`]s for a [`LogQueue`]. Bytes may
/// arrive in any chunks; a line is pushed when its `\n` arrives (or at
/// [`LineSplitter::finish`]). Memory is bounded by [`MAX_LINE_BYTES`].
#[derive(Debug)]
pub struct LineSplitter {
    stream: Stream,
    partial: Vec<u8>,
    truncated: bool,
}

impl LineSplitter {
    pub fn new(stream: Stream) -> Self {
        Self {
            stream,
            partial: Vec::new(),
            truncated: false,
        }
    }

    /// Feeds a chunk of output; pushes each line it completes.
    pub fn feed(&mut self, mut chunk: &[u8], queue: &LogQueue) {
        while let Some(nl) = chunk.iter().position(|&b| b == b'\n') {
            self.append(&chunk[..nl]);
            self.emit(queue);
            chunk = &chunk[nl + 1..];
        }
        self.append(chunk);
    }

    /// Pushes the last line if it had no `\n` (end of the stream).
    pub fn finish(&mut self, queue: &LogQueue) {
        if !self.partial.is_empty() || self.truncated {
            self.emit(queue);
        }
    }

    fn append(&mut self, bytes: &[u8]) {
        let room = MAX_LINE_BYTES - self.partial.len();
        if bytes.len() > room {
            self.truncated = true;
        }
        self.partial
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn emit(&mut self, queue: &LogQueue) {
        let bytes = std::mem::take(&mut self.partial);
        let truncated = std::mem::replace(&mut self.truncated, false);
        queue.push(LogLine {
            stream: self.stream,
            time_ms: now_ms(),
            bytes,
            truncated,
        });
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> LogLine {
        LogLine {
            stream: Stream::Stdout,
            time_ms: 0,
            bytes: text.as_bytes().to_vec(),
            truncated: false,
        }
    }

    fn texts(lines: &[LogLine]) -> Vec<String> {
        lines
            .iter()
            .map(|l| String::from_utf8_lossy(&l.bytes).into_owned())
            .collect()
    }

    #[test]
    fn drains_in_order_and_in_batches() {
        let q = LogQueue::new();
        for i in 0..5 {
            assert!(q.push(line(&format!("l{i}"))));
        }
        assert_eq!(q.len(), 5);
        assert_eq!(texts(&q.drain(2)), ["l0", "l1"]);
        assert_eq!(texts(&q.drain(100)), ["l2", "l3", "l4"]);
        assert!(q.drain(10).is_empty());
        assert!(q.is_empty());
        assert_eq!(q.dropped(), 0);
    }

    #[test]
    fn full_by_lines_drops_and_counts() {
        let q = LogQueue::with_limits(3, 1 << 20);
        for i in 0..10 {
            q.push(line(&format!("l{i}")));
        }
        assert_eq!(q.len(), 3);
        assert_eq!(q.dropped(), 7);
        // Draining makes room again; the queue keeps the oldest lines.
        assert_eq!(texts(&q.drain(1)), ["l0"]);
        assert!(q.push(line("new")));
        assert!(!q.push(line("too many")));
        assert_eq!(texts(&q.drain(10)), ["l1", "l2", "new"]);
        assert_eq!(q.dropped(), 8);
    }

    #[test]
    fn full_by_bytes_drops_and_counts() {
        let q = LogQueue::with_limits(100, 10);
        assert!(q.push(line("12345")));
        assert!(q.push(line("6789")));
        assert!(!q.push(line("ab")), "11 bytes > 10");
        assert!(q.push(line("a")));
        assert_eq!(q.dropped(), 1);
        q.drain(1);
        assert!(q.push(line("bcde")), "draining frees bytes");
    }

    #[test]
    fn default_limits_are_the_named_constants() {
        let q = LogQueue::new();
        for _ in 0..LOG_QUEUE_LINES + 10 {
            q.push(line("x"));
        }
        assert_eq!(q.len(), LOG_QUEUE_LINES);
        assert_eq!(q.dropped(), 10);
    }

    #[test]
    fn splitter_handles_chunks_across_lines() {
        let q = LogQueue::new();
        let mut s = LineSplitter::new(Stream::Stderr);
        s.feed(b"hel", &q);
        s.feed(b"lo\nwor", &q);
        s.feed(b"ld\n\nlast", &q);
        assert_eq!(texts(&q.drain(10)), ["hello", "world", ""]);
        s.finish(&q);
        let last = q.drain(10);
        assert_eq!(texts(&last), ["last"]);
        assert_eq!(last[0].stream, Stream::Stderr);
        s.finish(&q);
        assert!(q.is_empty(), "finish twice adds nothing");
    }

    #[test]
    fn splitter_caps_long_lines() {
        let q = LogQueue::new();
        let mut s = LineSplitter::new(Stream::Stdout);
        let long = vec![b'a'; MAX_LINE_BYTES * 3 + 5];
        for chunk in long.chunks(1000) {
            s.feed(chunk, &q);
        }
        s.feed(b"\nshort\n", &q);
        let lines = q.drain(10);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].bytes.len(), MAX_LINE_BYTES);
        assert!(lines[0].truncated);
        assert_eq!(lines[1].bytes, b"short");
        assert!(!lines[1].truncated);
    }

    #[test]
    fn splitter_keeps_binary_bytes() {
        let q = LogQueue::new();
        let mut s = LineSplitter::new(Stream::Stdout);
        s.feed(&[0xff, 0x00, b'\r', b'\n'], &q);
        assert_eq!(q.drain(1)[0].bytes, vec![0xff, 0x00, b'\r']);
    }

    #[tokio::test]
    async fn readable_wakes_on_push_from_another_thread() {
        let q = std::sync::Arc::new(LogQueue::new());
        let q2 = q.clone();
        let t = std::thread::spawn(move || q2.push(line("hi")));
        tokio::time::timeout(std::time::Duration::from_secs(10), q.readable())
            .await
            .expect("readable after a push");
        assert!(t.join().expect("pusher thread"));
        assert_eq!(texts(&q.drain(1)), ["hi"]);
    }
}
