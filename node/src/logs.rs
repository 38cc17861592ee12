//! App logs: the rolling window of lines this node keeps per instance whose
//! entrypoint is (or was) connected to it, and `cairn logs`, which gathers
//! them from every member.
//!
//! Logs are not replicated (DESIGN: "Replicated state"): an entrypoint ships
//! its lines to the node it is connected to; after it moves, its new lines go
//! to the new node and the old window stays readable until it expires.
//!
//! Invariants:
//! - Memory is bounded: a window holds at most [`LOG_WINDOW_LINES`] lines
//!   and [`LOG_WINDOW_BYTES`] bytes of text (the oldest go first); all
//!   windows together hold at most [`LOG_STORE_BYTES`] (counting
//!   [`LINE_OVERHEAD`] per line): past that, the window that grows is cut to
//!   its fair share (and, when that is not enough, every window). A window whose instance left is dropped
//!   [`WINDOW_EXPIRY`] after it last changed.
//! - Every line gets a sequence number from this node's counter; with the
//!   node's random [`LogStore::incarnation`] it is a cursor: a follower that
//!   lost a node's stream resumes after the last line it saw, without gaps
//!   or repeats, or from the start when that node restarted (its windows
//!   are new then).
//! - A reader that falls behind the live broadcast loses lines, and is told
//!   how many batches with a `Notice` line; the entrypoints are never slowed.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use cairn_protocol::api::ClientResponse;
use cairn_protocol::frame;
use cairn_protocol::instance::{LogEntry, LogStream, LogsQuery, ShippedLine};
use cairn_protocol::types::OpId;
use tokio::sync::{broadcast, mpsc};

use crate::cluster::Cluster;
use crate::peer::{PeerRequest, PeerResponse};
use crate::raft::NodeId;

/// Lines one instance's window keeps at most.
pub const LOG_WINDOW_LINES: usize = 10_000;
/// Bytes of line text one instance's window keeps at most.
pub const LOG_WINDOW_BYTES: usize = 4 * 1024 * 1024;
/// Bytes all of this node's windows keep at most, text and
/// [`LINE_OVERHEAD`] per line: a node with many busy instances keeps less
/// of each.
pub const LOG_STORE_BYTES: usize = 256 * 1024 * 1024;
/// What one kept line costs beyond its text (its entry, ids, queue slot),
/// counted against [`LOG_STORE_BYTES`].
pub const LINE_OVERHEAD: usize = 128;
/// A window whose instance is no longer connected here is dropped this long
/// after its last change.
pub const WINDOW_EXPIRY: Duration = crate::state::INSTANCE_EXPIRY;
/// Batches of new lines the live broadcast holds for slow readers.
const LIVE_BATCHES: usize = 1024;
/// Lines per `LogLines` frame sent to a client or a peer.
pub const LINES_PER_FRAME: usize = 1000;
/// How long a member may take to answer a log query (its first frame; a
/// live member answers from memory at once), and then to finish sending its
/// history: a member that is down costs a query this long at most.
pub const SOURCE_TIMEOUT: Duration = Duration::from_secs(3);
/// A follower waits this long before asking a member again after its
/// stream broke.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

pub use crate::peer::msg::{LogCursor, LogFilter};

/// What a logs query needs of the node: the cluster (its members, a linearizable read),
/// this node's log windows and its id.
#[derive(Clone)]
pub struct LogsCtx {
    pub cluster: Arc<Cluster>,
    pub logs: LogStore,
    /// This node.
    pub me: NodeId,
}

/// This node's log windows. Cheap to share (`Arc` inside).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<StoreInner>,
}

struct StoreInner {
    incarnation: u64,
    /// [`LOG_STORE_BYTES`], but in tests.
    budget: usize,
    windows: Mutex<Windows>,
    live: broadcast::Sender<Arc<Vec<LogEntry>>>,
}

#[derive(Default)]
struct Windows {
    by_instance: HashMap<(OpId, String), Window>,
    next_seq: u64,
    /// Σ (text + [`LINE_OVERHEAD`]) over every window's lines.
    cost: usize,
}

struct Window {
    lines: VecDeque<LogEntry>,
    bytes: usize,
    /// The `seq` of the newest line dropped from this window (0: none).
    evicted_upto: u64,
    /// The entrypoint's dropped count we last noted.
    dropped_seen: u64,
    connected: bool,
    touched: Instant,
}

impl Default for LogStore {
    fn default() -> Self {
        LogStore::with_budget(LOG_STORE_BYTES)
    }
}

impl LogStore {
    /// A store whose windows together cost at most `budget` bytes.
    pub fn with_budget(budget: usize) -> LogStore {
        let (live, _) = broadcast::channel(LIVE_BATCHES);
        LogStore {
            inner: Arc::new(StoreInner {
                budget,
                incarnation: random_u64(),
                windows: Mutex::new(Windows::default()),
                live,
            }),
        }
    }
}

/// A random number (the node's log incarnation).
fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    // The system's random source failing is not worth failing start-up
    // for: fall back on the clock, which differs between incarnations too.
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).is_err() {
        return std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
    }
    u64::from_le_bytes(b)
}

/// Who shipped a batch.
#[derive(Debug, Clone)]
pub struct Shipper {
    pub node: NodeId,
    pub deployment: OpId,
    pub sequence: u64,
    pub instance: String,
}

impl LogStore {
    pub fn incarnation(&self) -> u64 {
        self.inner.incarnation
    }

    fn lock(&self) -> MutexGuard<'_, Windows> {
        // Every critical section leaves the windows consistent.
        self.inner
            .windows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The instance connected (again): its window is kept while it is.
    pub fn connected(&self, deployment: OpId, instance: &str) {
        let mut w = self.lock();
        let win = w
            .by_instance
            .entry((deployment, instance.to_string()))
            .or_insert_with(Window::new);
        win.connected = true;
        win.touched = Instant::now();
    }

    /// The instance's connection here ended: its window expires from now.
    pub fn disconnected(&self, deployment: OpId, instance: &str) {
        let mut w = self.lock();
        if let Some(win) = w.by_instance.get_mut(&(deployment, instance.to_string())) {
            win.connected = false;
            win.touched = Instant::now();
        }
    }

    /// Adds a shipped batch to the instance's window and to the live
    /// broadcast. `dropped`: the entrypoint's running count of lines it
    /// dropped; an increase is noted as a `Notice` line.
    pub fn append(&self, from: &Shipper, lines: Vec<ShippedLine>, dropped: u64) {
        let mut w = self.lock();
        let Windows {
            by_instance,
            next_seq,
            cost,
        } = &mut *w;
        let key = (from.deployment, from.instance.clone());
        let windows = by_instance.len() + usize::from(!by_instance.contains_key(&key));
        let budget = self.inner.budget;
        let win = by_instance.entry(key).or_insert_with(Window::new);
        let mut added = Vec::with_capacity(lines.len() + 1);
        let mut entry = |time_ms, stream, line: String, truncated| {
            *next_seq += 1;
            LogEntry {
                deployment: from.deployment,
                sequence: from.sequence,
                instance: from.instance.clone(),
                node: from.node,
                seq: *next_seq,
                time_ms,
                stream,
                line,
                truncated,
            }
        };
        if dropped > win.dropped_seen {
            let n = dropped - win.dropped_seen;
            let time = lines
                .first()
                .map_or_else(cairn_protocol::now_ms, |l| l.time_ms);
            added.push(entry(
                time,
                LogStream::Notice,
                format!(
                    "cairn: {n} line{} dropped by the entrypoint (its queue was full, e.g. while disconnected)",
                    if n == 1 { "" } else { "s" }
                ),
                false,
            ));
        }
        win.dropped_seen = win.dropped_seen.max(dropped);
        for l in lines {
            added.push(entry(l.time_ms, l.stream, l.line, l.truncated));
        }
        // `cost` includes this window's: adjust by its change.
        let fair = (budget / windows).max(LINE_OVERHEAD);
        let before = win.cost();
        for e in &added {
            win.push(e.clone());
        }
        if *cost - before + win.cost() > budget {
            win.shrink_to(fair);
        }
        *cost = *cost - before + win.cost();
        win.touched = Instant::now();
        if *cost > budget {
            // Others are above their share (there are more windows than
            // when they grew): cut them all to it, once.
            for other in by_instance.values_mut() {
                other.shrink_to(fair);
            }
            *cost = by_instance.values().map(Window::cost).sum();
        }
        drop(w);
        if !added.is_empty() {
            // No receiver is fine.
            let _ = self.inner.live.send(Arc::new(added));
        }
    }

    /// The matching lines this node holds, each window oldest first, only
    /// those after `after` (when it names this incarnation).
    pub fn history(&self, filter: &LogFilter, after: Option<LogCursor>) -> Vec<LogEntry> {
        let after = after
            .filter(|c| c.incarnation == self.inner.incarnation)
            .map_or(0, |c| c.seq);
        let w = self.lock();
        let mut out: Vec<LogEntry> = w
            .by_instance
            .iter()
            .filter(|((dep, _), _)| *dep == filter.deployment)
            .flat_map(|(_, win)| win.lines.iter())
            .filter(|e| e.seq > after && filter.matches(e))
            .cloned()
            .collect();
        drop(w);
        out.sort_by_key(|e| (e.time_ms, e.seq));
        if let Some(n) = filter.tail {
            let n = n as usize;
            if out.len() > n {
                out.drain(..out.len() - n);
            }
        }
        out
    }

    /// The instances matching `filter` whose windows dropped lines newer
    /// than `after` (of this incarnation): a reader resuming there lost some.
    pub fn evicted_after(&self, filter: &LogFilter, after: u64) -> Vec<String> {
        let w = self.lock();
        let mut ids: Vec<String> = w
            .by_instance
            .iter()
            .filter(|((dep, id), win)| {
                *dep == filter.deployment
                    && filter
                        .instance
                        .as_ref()
                        .is_none_or(|p| id.starts_with(p.as_str()))
                    && win.evicted_upto > after
            })
            .map(|((_, id), _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Vec<LogEntry>>> {
        self.inner.live.subscribe()
    }

    /// Drops the windows of instances gone for longer than `after`.
    pub fn expire(&self, after: Duration) -> usize {
        let mut w = self.lock();
        let before = w.by_instance.len();
        let mut freed = 0;
        w.by_instance.retain(|_, win| {
            let keep = win.connected || win.touched.elapsed() < after;
            if !keep {
                freed += win.cost();
            }
            keep
        });
        w.cost -= freed;
        before - w.by_instance.len()
    }

    /// (windows, lines, bytes of text) held now.
    pub fn usage(&self) -> (usize, usize, usize) {
        let w = self.lock();
        let lines = w.by_instance.values().map(|v| v.lines.len()).sum();
        let bytes = w.by_instance.values().map(|v| v.bytes).sum();
        (w.by_instance.len(), lines, bytes)
    }

    /// What the windows cost against [`LOG_STORE_BYTES`].
    pub fn cost(&self) -> usize {
        self.lock().cost
    }
}

impl Window {
    fn new() -> Window {
        Window {
            lines: VecDeque::new(),
            bytes: 0,
            evicted_upto: 0,
            dropped_seen: 0,
            connected: true,
            touched: Instant::now(),
        }
    }

    /// Adds a line, dropping the oldest past the window's bounds.
    fn push(&mut self, e: LogEntry) {
        self.bytes += e.line.len();
        self.lines.push_back(e);
        while self.lines.len() > LOG_WINDOW_LINES || self.bytes > LOG_WINDOW_BYTES {
            if !self.evict_oldest() {
                break;
            }
        }
    }

    /// Drops the oldest line; false when there is none.
    fn evict_oldest(&mut self) -> bool {
        match self.lines.pop_front() {
            Some(old) => {
                self.bytes -= old.line.len();
                self.evicted_upto = old.seq;
                true
            }
            None => false,
        }
    }

    /// What this window costs: its text and [`LINE_OVERHEAD`] per line.
    fn cost(&self) -> usize {
        self.bytes + self.lines.len() * LINE_OVERHEAD
    }

    /// Drops the oldest lines until the window costs at most `budget`.
    fn shrink_to(&mut self, budget: usize) {
        while self.cost() > budget {
            if !self.evict_oldest() {
                break;
            }
        }
    }
}

/// What one node's log source tells the gatherer.
#[derive(Debug)]
pub enum SourceEvent {
    /// Lines, with the cursor after the last of them.
    Lines {
        node: NodeId,
        cursor: LogCursor,
        lines: Vec<LogEntry>,
    },
    /// That node's history is complete (live lines follow when following).
    HistoryEnd { node: NodeId },
    /// That node's lines cannot be had now.
    Failed { node: NodeId, reason: String },
}

/// This node's lines for `filter`: the history, then (with `follow`) new
/// lines as they arrive, until `tx` is closed.
pub async fn local_source(
    store: &LogStore,
    node: NodeId,
    filter: &LogFilter,
    follow: bool,
    after: Option<LogCursor>,
    tx: &mpsc::Sender<SourceEvent>,
) {
    // Subscribe before reading the history: nothing falls in between.
    let mut live = store.subscribe();
    let history = store.history(filter, after);
    let mut last = history.iter().map(|e| e.seq).max().unwrap_or_else(|| {
        after
            .filter(|c| c.incarnation == store.incarnation())
            .map_or(0, |c| c.seq)
    });
    for chunk in history.chunks(LINES_PER_FRAME) {
        let ev = SourceEvent::Lines {
            node,
            cursor: LogCursor {
                incarnation: store.incarnation(),
                seq: chunk.last().map_or(last, |e| e.seq),
            },
            lines: chunk.to_vec(),
        };
        if tx.send(ev).await.is_err() {
            return;
        }
    }
    if tx.send(SourceEvent::HistoryEnd { node }).await.is_err() || !follow {
        return;
    }
    let live_filter = LogFilter {
        tail: None,
        ..filter.clone()
    };
    loop {
        let batch = tokio::select! {
            b = live.recv() => b,
            _ = tx.closed() => return,
        };
        let lines: Vec<LogEntry> = match batch {
            Ok(batch) => batch
                .iter()
                .filter(|e| e.seq > last && live_filter.matches(e))
                .cloned()
                .collect(),
            Err(broadcast::error::RecvError::Lagged(_)) => {
                // This reader fell behind the broadcast: take what it missed
                // from the windows, and say which windows had already let
                // some of it go.
                let cursor = Some(LogCursor {
                    incarnation: store.incarnation(),
                    seq: last,
                });
                let mut lines = store.history(&live_filter, cursor);
                for id in store.evicted_after(&live_filter, last) {
                    lines.push(notice(
                        filter.deployment,
                        node,
                        format!("cairn: this reader fell behind; some lines of instance {id} on node {node:x} were lost"),
                    ));
                }
                lines
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        // Notices carry seq 0: they never move the cursor.
        if let Some(max) = lines.iter().map(|e| e.seq).max() {
            last = last.max(max);
        }
        if lines.is_empty() {
            continue;
        }
        let ev = SourceEvent::Lines {
            node,
            cursor: LogCursor {
                incarnation: store.incarnation(),
                seq: last,
            },
            lines,
        };
        if tx.send(ev).await.is_err() {
            return;
        }
    }
}

/// A line written by Cairn itself (not part of any window: `seq` 0).
fn notice(deployment: OpId, node: NodeId, line: String) -> LogEntry {
    LogEntry {
        deployment,
        sequence: 0,
        instance: String::new(),
        node,
        seq: 0,
        time_ms: cairn_protocol::now_ms(),
        stream: LogStream::Notice,
        line,
        truncated: false,
    }
}

/// Another member's lines, through the peer mesh. With `follow`, a broken
/// stream is reported once and asked again every [`RETRY_AFTER`], resuming
/// after the last line seen, until `tx` is closed.
pub async fn remote_source(
    ctx: &LogsCtx,
    node: NodeId,
    addr: String,
    filter: LogFilter,
    follow: bool,
    tx: mpsc::Sender<SourceEvent>,
) {
    let mut cursor: Option<LogCursor> = None;
    let mut reported = false;
    loop {
        let req = PeerRequest::Logs {
            filter: filter.clone(),
            follow,
            after: cursor,
        };
        let failure = match ctx
            .cluster
            .peers
            .open_stream(&addr, Some(node), &req, SOURCE_TIMEOUT)
            .await
        {
            Ok((first, _send, mut recv)) => {
                let mut next = Some(first);
                loop {
                    let resp = match next.take() {
                        Some(r) => r,
                        None => match frame::read::<_, PeerResponse>(&mut recv).await {
                            Ok(Some(r)) => r,
                            Ok(None) => break "its log stream ended".to_string(),
                            Err(e) => break e.to_string(),
                        },
                    };
                    let ev = match resp {
                        PeerResponse::LogLines { cursor: c, lines } => {
                            cursor = Some(c);
                            reported = false;
                            SourceEvent::Lines {
                                node,
                                cursor: c,
                                lines,
                            }
                        }
                        PeerResponse::LogsHistoryEnd => {
                            reported = false;
                            if tx.send(SourceEvent::HistoryEnd { node }).await.is_err() || !follow {
                                return;
                            }
                            continue;
                        }
                        PeerResponse::Refused(reason) => break reason,
                        other => break format!("unexpected answer {other:?}"),
                    };
                    if tx.send(ev).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => e.to_string(),
        };
        if !follow {
            let _ = tx
                .send(SourceEvent::Failed {
                    node,
                    reason: failure,
                })
                .await;
            return;
        }
        if !reported {
            reported = true;
            if tx
                .send(SourceEvent::Failed {
                    node,
                    reason: failure,
                })
                .await
                .is_err()
            {
                return;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY_AFTER) => {}
            _ = tx.closed() => return,
        }
    }
}

/// Serves `PeerRequest::Logs` on a peer stream: this node's lines as
/// `LogLines` frames, `LogsHistoryEnd`, then (following) live lines until
/// the asking node goes away.
pub async fn serve_peer(
    ctx: &LogsCtx,
    filter: LogFilter,
    follow: bool,
    after: Option<LogCursor>,
    mut send: quinn::SendStream,
) {
    let (tx, mut rx) = mpsc::channel(16);
    let node = ctx.me;
    // The source ends when `rx` is gone (the forwarder ended), and drops
    // `tx` when it ends (so the forwarder ends too).
    let source = async move {
        local_source(&ctx.logs, node, &filter, follow, after, &tx).await;
    };
    let forward = async {
        loop {
            let ev = tokio::select! {
                ev = rx.recv() => ev,
                // The asking node went away (stopped reading, or its
                // connection was lost).
                _ = send.stopped() => break,
            };
            let Some(ev) = ev else { break };
            let resp = match ev {
                SourceEvent::Lines { cursor, lines, .. } => {
                    PeerResponse::LogLines { cursor, lines }
                }
                SourceEvent::HistoryEnd { .. } => PeerResponse::LogsHistoryEnd,
                SourceEvent::Failed { reason, .. } => PeerResponse::Refused(reason),
            };
            if frame::write(&mut send, &resp).await.is_err() {
                break;
            }
        }
        drop(rx);
    };
    tokio::join!(source, forward);
    let _ = send.finish();
}

/// `cairn logs` on this node: gather the lines of the query's deployment
/// from every member (this one included), send the history oldest first,
/// then (following) new lines as they arrive, until the client goes away.
pub async fn serve_query(ctx: &LogsCtx, q: LogsQuery, mut send: quinn::SendStream) {
    let mut answers = query(ctx.clone(), q);
    loop {
        let next = tokio::select! {
            a = answers.recv() => a,
            _ = send.stopped() => return,
        };
        let Some(answer) = next else { break };
        let last = matches!(
            answer,
            ClientResponse::Error { .. } | ClientResponse::LogsEnd { .. }
        );
        if frame::write(&mut send, &answer).await.is_err() {
            return;
        }
        if last {
            break;
        }
    }
    let _ = send.finish();
}

/// A logs query's answers, whatever transport carries them: `LogLines` (the history, then,
/// with `follow`, live lines until the receiver is dropped), ending with `LogsEnd` without
/// `follow`; or one `Error`.
pub fn query(ctx: LogsCtx, q: LogsQuery) -> mpsc::Receiver<ClientResponse> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move { answer_query(&ctx, q, tx).await });
    rx
}

async fn answer_query(ctx: &LogsCtx, q: LogsQuery, send: mpsc::Sender<ClientResponse>) {
    let target = q.target.clone();
    let instance = q.instance.clone();
    let resolved = ctx
        .cluster
        .read(move |st| {
            let op = st.deployment_for(&target)?;
            if let Some(prefix) = &instance {
                let ids: std::collections::BTreeSet<&String> = st
                    .instances
                    .keys()
                    .filter(|(d, id)| *d == op.id && id.starts_with(prefix.as_str()))
                    .map(|(_, id)| id)
                    .collect();
                match ids.len() {
                    0 => {
                        return Err(format!(
                            "deployment v{} of {} has no instance {prefix:?} (see `cairn instance list`)",
                            op.sequence, op.app
                        ))
                    }
                    1 => {}
                    n => {
                        return Err(format!(
                            "{prefix:?} matches {n} instances of v{}; give more of the id",
                            op.sequence
                        ))
                    }
                }
            }
            Ok(op.id)
        })
        .await
        .and_then(|r| r);
    let deployment = match &resolved {
        Ok(id) => *id,
        Err(message) => {
            let _ = send
                .send(ClientResponse::Error {
                    message: message.clone(),
                })
                .await;
            return;
        }
    };
    let filter = LogFilter {
        deployment,
        instance: q.instance.clone(),
        since_ms: q.since_ms,
        tail: q.tail,
    };
    let members = ctx.cluster.raft.members();
    let (tx, mut rx) = mpsc::channel::<SourceEvent>(64);
    let me = ctx.me;
    let mut tasks = Vec::new();
    for (id, addr) in &members {
        let tx = tx.clone();
        let filter = filter.clone();
        let ctx = ctx.clone();
        let (id, addr) = (*id, addr.clone());
        let follow = q.follow;
        tasks.push(tokio::spawn(async move {
            if id == me {
                local_source(&ctx.logs, me, &filter, follow, None, &tx).await;
            } else {
                remote_source(&ctx, id, addr, filter, follow, tx).await;
            }
        }));
    }
    drop(tx);
    let _abort = AbortAll(tasks);

    // History: everything each member holds, merged oldest first.
    let mut pending: std::collections::BTreeSet<NodeId> =
        members.iter().map(|(id, _)| *id).collect();
    let mut history = Vec::new();
    let mut unavailable = Vec::new();
    let deadline = tokio::time::Instant::now() + SOURCE_TIMEOUT * 2;
    while !pending.is_empty() {
        let Ok(ev) = tokio::time::timeout_at(deadline, rx.recv()).await else {
            for node in std::mem::take(&mut pending) {
                unavailable.push(format!(
                    "node {node:x}: its history did not arrive within {:?}",
                    SOURCE_TIMEOUT * 2
                ));
            }
            break;
        };
        match ev {
            Some(SourceEvent::Lines { lines, .. }) => history.extend(lines),
            Some(SourceEvent::HistoryEnd { node }) => {
                pending.remove(&node);
            }
            Some(SourceEvent::Failed { node, reason }) => {
                if pending.remove(&node) {
                    unavailable.push(format!("node {node:x}: {reason}"));
                }
            }
            None => break,
        }
    }
    history.sort_by_key(|e| (e.time_ms, e.node, e.seq));
    if let Some(n) = q.tail {
        let n = n as usize;
        if history.len() > n {
            history.drain(..history.len() - n);
        }
    }
    for chunk in history.chunks(LINES_PER_FRAME) {
        if send
            .send(ClientResponse::LogLines(chunk.to_vec()))
            .await
            .is_err()
        {
            return;
        }
    }
    if !q.follow {
        let _ = send.send(ClientResponse::LogsEnd { unavailable }).await;
        return;
    }
    for reason in unavailable {
        let n = notice(
            deployment,
            me,
            format!("cairn: lines unavailable from {reason}"),
        );
        if send.send(ClientResponse::LogLines(vec![n])).await.is_err() {
            return;
        }
    }
    // Live: pass lines on as they come, until the client goes away.
    loop {
        let ev = tokio::select! {
            ev = rx.recv() => ev,
            _ = send.closed() => return,
        };
        let lines = match ev {
            Some(SourceEvent::Lines { lines, .. }) => lines,
            Some(SourceEvent::HistoryEnd { .. }) => continue,
            Some(SourceEvent::Failed { node, reason }) => vec![notice(
                deployment,
                me,
                format!("cairn: lost the log stream of node {node:x} ({reason}); retrying"),
            )],
            None => return,
        };
        if send.send(ClientResponse::LogLines(lines)).await.is_err() {
            return;
        }
    }
}

/// Aborts the tasks when dropped (the client went away).
struct AbortAll(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortAll {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipper(instance: &str) -> Shipper {
        Shipper {
            node: 1,
            deployment: 7,
            sequence: 2,
            instance: instance.into(),
        }
    }

    fn line(t: u64, text: &str) -> ShippedLine {
        ShippedLine {
            time_ms: t,
            stream: LogStream::Stdout,
            line: text.into(),
            truncated: false,
        }
    }

    fn filter() -> LogFilter {
        LogFilter {
            deployment: 7,
            instance: None,
            since_ms: None,
            tail: None,
        }
    }

    fn texts(v: &[LogEntry]) -> Vec<&str> {
        v.iter().map(|e| e.line.as_str()).collect()
    }

    #[test]
    fn windows_keep_the_newest_lines_within_their_bounds() {
        let store = LogStore::default();
        store.connected(7, "a");
        let lines: Vec<ShippedLine> = (0..LOG_WINDOW_LINES + 5)
            .map(|i| line(i as u64, &format!("l{i}")))
            .collect();
        store.append(&shipper("a"), lines, 0);
        let h = store.history(&filter(), None);
        assert_eq!(h.len(), LOG_WINDOW_LINES);
        assert_eq!(h[0].line, "l5");
        // Bytes: a few huge lines push out the old ones.
        let big = "x".repeat(LOG_WINDOW_BYTES / 2);
        store.append(
            &shipper("a"),
            vec![line(1, &big), line(2, &big), line(3, &big)],
            0,
        );
        let (_, n, bytes) = store.usage();
        assert!(bytes <= LOG_WINDOW_BYTES, "{bytes}");
        assert_eq!(n, 2, "only two halves fit");
    }

    #[test]
    fn all_windows_together_stay_within_the_store_budget() {
        let budget = 64 * 1024;
        let store = LogStore::with_budget(budget);
        let text = "y".repeat(100);
        // One busy instance fills the budget alone...
        for _ in 0..100 {
            let batch = (0..20).map(|i| line(i, &text)).collect();
            store.append(&shipper("busy"), batch, 0);
        }
        assert!(store.cost() <= budget, "{} > {budget}", store.cost());
        let (_, lines, bytes) = store.usage();
        assert_eq!(
            store.cost(),
            bytes + lines * LINE_OVERHEAD,
            "cost is kept exactly"
        );
        // ...then three more share it: each new one gets room, the busy one
        // is cut to a fair share as it grows.
        for who in ["a", "b", "c"] {
            for _ in 0..50 {
                let batch = (0..20).map(|i| line(i, &text)).collect();
                store.append(&shipper(who), batch, 0);
                store.append(&shipper("busy"), vec![line(1, &text)], 0);
            }
            assert!(store.cost() <= budget, "{} > {budget}", store.cost());
        }
        let f = |p: &str| LogFilter {
            instance: Some(p.into()),
            ..filter()
        };
        for who in ["busy", "a", "b", "c"] {
            let n = store.history(&f(who), None).len();
            assert!(n > 20, "{who} keeps some lines: {n}");
        }
        // Expiry gives the cost back.
        store.disconnected(7, "a");
        store.expire(Duration::ZERO);
        let (_, lines, bytes) = store.usage();
        assert_eq!(store.cost(), bytes + lines * LINE_OVERHEAD);
    }

    #[test]
    fn history_filters_sorts_tails_and_resumes_after_a_cursor() {
        let store = LogStore::default();
        store.append(&shipper("aa1"), vec![line(30, "a30"), line(10, "a10")], 0);
        store.append(&shipper("bb2"), vec![line(20, "b20")], 0);
        let other = Shipper {
            deployment: 8,
            ..shipper("aa1")
        };
        store.append(&other, vec![line(15, "other deployment")], 0);
        assert_eq!(
            texts(&store.history(&filter(), None)),
            ["a10", "b20", "a30"]
        );
        let f = LogFilter {
            instance: Some("aa".into()),
            ..filter()
        };
        assert_eq!(texts(&store.history(&f, None)), ["a10", "a30"]);
        let f = LogFilter {
            since_ms: Some(20),
            ..filter()
        };
        assert_eq!(texts(&store.history(&f, None)), ["b20", "a30"]);
        let f = LogFilter {
            tail: Some(1),
            ..filter()
        };
        assert_eq!(texts(&store.history(&f, None)), ["a30"]);
        // A cursor of this incarnation skips what was seen; another
        // incarnation's cursor (a restarted node) does not.
        let all = store.history(&filter(), None);
        let seen = all.iter().find(|e| e.line == "b20").expect("b20").seq;
        let cursor = LogCursor {
            incarnation: store.incarnation(),
            seq: seen,
        };
        // b20 was the last line shipped for deployment 7 (the other
        // deployment's line came after it but does not match).
        assert!(store.history(&filter(), Some(cursor)).is_empty());
        let before = LogCursor {
            incarnation: store.incarnation(),
            seq: seen - 1,
        };
        assert_eq!(texts(&store.history(&filter(), Some(before))), ["b20"]);
        let stale = LogCursor {
            incarnation: store.incarnation().wrapping_add(1),
            seq: u64::MAX,
        };
        assert_eq!(store.history(&filter(), Some(stale)).len(), 3);
    }

    #[test]
    fn dropped_lines_are_noted_once_per_increase() {
        let store = LogStore::default();
        store.append(&shipper("a"), vec![line(1, "one")], 0);
        store.append(&shipper("a"), vec![line(2, "two")], 5);
        store.append(&shipper("a"), vec![line(3, "three")], 5);
        store.append(&shipper("a"), vec![], 6);
        let h = store.history(&filter(), None);
        let notices: Vec<&str> = h
            .iter()
            .filter(|e| e.stream == LogStream::Notice)
            .map(|e| e.line.as_str())
            .collect();
        assert_eq!(notices.len(), 2, "{notices:?}");
        assert!(notices[0].contains("5 lines dropped"), "{}", notices[0]);
        assert!(notices[1].contains("1 line dropped"), "{}", notices[1]);
    }

    #[test]
    fn windows_of_departed_instances_expire() {
        let store = LogStore::default();
        store.connected(7, "a");
        store.connected(7, "b");
        store.append(&shipper("a"), vec![line(1, "x")], 0);
        store.append(&shipper("b"), vec![line(1, "y")], 0);
        store.disconnected(7, "b");
        assert_eq!(store.expire(Duration::from_secs(3600)), 0);
        assert_eq!(store.expire(Duration::ZERO), 1, "b left; a is connected");
        assert_eq!(texts(&store.history(&filter(), None)), ["x"]);
    }

    #[tokio::test]
    async fn a_follower_that_falls_behind_gets_the_missed_lines_from_the_window() {
        let store = LogStore::default();
        // A one-slot channel that nobody reads yet: the follower blocks and
        // its broadcast receiver overflows.
        let (tx, mut rx) = mpsc::channel(1);
        let s2 = store.clone();
        let follower = tokio::spawn(async move {
            local_source(&s2, 1, &filter(), true, None, &tx).await;
        });
        // The (empty) history's end goes first.
        let first = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("in time");
        assert!(
            matches!(first, Some(SourceEvent::HistoryEnd { .. })),
            "{first:?}"
        );
        let total = LIVE_BATCHES * 3;
        for i in 0..total {
            store.append(&shipper("a"), vec![line(i as u64, &format!("l{i}"))], 0);
        }
        let mut got = Vec::new();
        while got.len() < total {
            match tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("lines in time")
                .expect("open")
            {
                SourceEvent::Lines { lines, .. } => got.extend(lines.into_iter().map(|e| e.line)),
                other => panic!("{other:?}"),
            }
        }
        let expected: Vec<String> = (0..total).map(|i| format!("l{i}")).collect();
        assert_eq!(got, expected, "every line once, in order, no notice");
        drop(rx);
        store.append(&shipper("a"), vec![line(0, "wake")], 0);
        tokio::time::timeout(Duration::from_secs(10), follower)
            .await
            .expect("ends")
            .expect("no panic");
    }

    #[test]
    fn evictions_after_a_cursor_are_known() {
        let store = LogStore::default();
        let lines: Vec<ShippedLine> = (0..LOG_WINDOW_LINES + 3)
            .map(|i| line(i as u64, "x"))
            .collect();
        store.append(&shipper("a"), lines, 0);
        store.append(&shipper("b"), vec![line(1, "y")], 0);
        assert_eq!(store.evicted_after(&filter(), 0), ["a"]);
        assert_eq!(
            store.evicted_after(&filter(), 3),
            Vec::<String>::new(),
            "seq 1..=3 went"
        );
    }

    #[tokio::test]
    async fn a_local_follower_gets_history_then_live_lines_without_gaps() {
        let store = LogStore::default();
        store.append(&shipper("a"), vec![line(1, "old")], 0);
        let (tx, mut rx) = mpsc::channel(16);
        let s2 = store.clone();
        let follower = tokio::spawn(async move {
            local_source(&s2, 1, &filter(), true, None, &tx).await;
        });
        let mut got = Vec::new();
        let mut history_done = false;
        while got.len() < 3 {
            match tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("an event in time")
                .expect("open")
            {
                SourceEvent::Lines { lines, .. } => got.extend(lines.into_iter().map(|e| e.line)),
                SourceEvent::HistoryEnd { .. } => {
                    history_done = true;
                    store.append(&shipper("a"), vec![line(2, "new1"), line(3, "new2")], 0);
                }
                SourceEvent::Failed { reason, .. } => panic!("{reason}"),
            }
        }
        assert!(history_done);
        assert_eq!(got, ["old", "new1", "new2"]);
        drop(rx);
        store.append(&shipper("a"), vec![line(4, "after")], 0);
        tokio::time::timeout(Duration::from_secs(10), follower)
            .await
            .expect("the follower ends once its reader is gone")
            .expect("no panic");
    }
}
