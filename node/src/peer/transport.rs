//! [`QuicTransport`]: Raft RPCs (and leader requests) to peers over QUIC.
//!
//! Invariants:
//! - One cached connection per peer address, dialled from the node's own
//!   endpoint with mutual TLS (the node presents its certificate; the peer
//!   must chain to the pinned cluster CA). At most one dial per address at a
//!   time; a dead connection is dropped and dialled again on the next RPC.
//! - One bidirectional stream per RPC, bounded in time by the caller's
//!   timeout (openraft's `RPCOption::hard_ttl`).
//! - Errors say whether the request may have reached the peer:
//!   [`PeerError::Unreachable`] never did (safe to retry anywhere); the
//!   others may have.
//! - Nothing a peer sends is unwrapped: a bad answer is an error and the
//!   connection it came on is closed.

use std::collections::HashMap;
use std::future::Future;
use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_protocol::frame;
use cairn_protocol::handshake::{Hello, HelloReply, Role, Speaks};
use cairn_protocol::pki::{self, CertifiedKey, TransportLimits, NODE_SERVER_NAME};
use openraft::error::{
    NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError, Timeout,
    Unreachable,
};
use openraft::network::{RPCOption, RPCTypes};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, Snapshot, Vote};

use super::msg::{LeaderRequest, LeaderResponse, PeerRequest, PeerResponse};
use crate::raft::{
    InstallSnapshotRpcError, Node, NodeId, Peer, PeerTransport, RpcError, SnapshotStreamError,
    TypeConfig,
};

/// Longest a dial (QUIC + TLS + hello) to a peer may take.
pub const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// After this many RPCs in a row time out on one connection, it is closed
/// and the next RPC dials again (a peer killed without closing its
/// connections would otherwise look alive until the idle timeout).
pub const TIMEOUTS_BEFORE_REDIAL: u32 = 3;

/// Why a peer RPC failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PeerError {
    /// The request was not sent: the peer could not be dialled (or refused
    /// the connection).
    #[error("cannot reach node at {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    /// No answer in time; the request may have been received.
    #[error("no answer from {addr} within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    /// The stream or connection broke after the request was (maybe) sent.
    #[error("peer connection to {addr} failed: {reason}")]
    Network { addr: String, reason: String },
    /// The peer answered with something that makes no sense here.
    #[error("unexpected answer from {addr}: {reason}")]
    Protocol { addr: String, reason: String },
}

impl PeerError {
    /// `false` only when the request certainly did not reach the peer.
    pub fn maybe_delivered(&self) -> bool {
        !matches!(self, PeerError::Unreachable { .. })
    }
}

/// The node's client side of the peer network. Cheap to clone.
#[derive(Clone)]
pub struct QuicTransport {
    inner: Arc<Inner>,
}

struct Inner {
    self_id: NodeId,
    endpoint: quinn::Endpoint,
    client_config: quinn::ClientConfig,
    conns: Mutex<HashMap<String, PeerConn>>,
    dialing: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// When each peer last answered an RPC.
    last_contact: Mutex<HashMap<NodeId, Instant>>,
    /// When this transport (this node's process) started.
    started: Instant,
    /// What each peer runs, as learnt from the last handshake with it
    /// (either direction), and when that was.
    speaks: Mutex<HashMap<NodeId, (Speaks, Instant)>>,
    /// The cluster version: a peer that cannot speak it is not talked to.
    floor: std::sync::atomic::AtomicU32,
}

#[derive(Clone)]
struct PeerConn {
    conn: quinn::Connection,
    node_id: NodeId,
    /// The protocol version this connection speaks.
    version: u32,
    /// RPCs on this connection that timed out in a row.
    timeouts: Arc<std::sync::atomic::AtomicU32>,
}

impl std::fmt::Debug for QuicTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicTransport")
            .field("self_id", &self.inner.self_id)
            .finish_non_exhaustive()
    }
}

impl QuicTransport {
    /// Peers are dialled from `endpoint` (the node's own, so they see the
    /// node's address), presenting `identity` and pinning the CA `ca_fingerprint`.
    pub fn new(
        self_id: NodeId,
        endpoint: quinn::Endpoint,
        ca_fingerprint: &str,
        identity: &CertifiedKey,
    ) -> Result<QuicTransport, pki::PkiError> {
        let client_config = pki::client_config(
            ca_fingerprint,
            Some(identity),
            Role::Peer.alpn(),
            TransportLimits::DEFAULT,
        )?;
        Ok(QuicTransport {
            inner: Arc::new(Inner {
                self_id,
                endpoint,
                client_config,
                conns: Mutex::new(HashMap::new()),
                dialing: Mutex::new(HashMap::new()),
                last_contact: Mutex::new(HashMap::new()),
                started: Instant::now(),
                speaks: Mutex::new(HashMap::new()),
                floor: std::sync::atomic::AtomicU32::new(0),
            }),
        })
    }

    /// This node's id.
    pub fn self_id(&self) -> NodeId {
        self.inner.self_id
    }

    /// Remember what peer `id` runs (from a handshake in either direction).
    pub fn record_speaks(&self, id: NodeId, speaks: Speaks) {
        if let Ok(mut m) = self.inner.speaks.lock() {
            let changed = m.get(&id).is_none_or(|(s, _)| *s != speaks);
            if changed {
                tracing::info!(
                    peer = format!("{id:x}"),
                    release = %speaks.release,
                    versions = %speaks.versions,
                    version = speaks.version,
                    "peer release"
                );
            }
            m.insert(id, (speaks, Instant::now()));
        }
    }

    /// Follow the cluster version: connections to peers that cannot speak it
    /// are closed, and no new one is made.
    pub fn set_floor(&self, cluster_version: u32) {
        use std::sync::atomic::Ordering;
        if self.inner.floor.swap(cluster_version, Ordering::AcqRel) == cluster_version {
            return;
        }
        if let Ok(mut conns) = self.inner.conns.lock() {
            conns.retain(|addr, c| {
                let keep = c.version >= cluster_version;
                if !keep {
                    tracing::warn!(%addr, version = c.version, cluster_version, "closing the connection to a peer that cannot speak the cluster version");
                    c.conn.close(6u32.into(), b"below the cluster version");
                }
                keep
            });
        }
    }

    /// What peer `id` runs, as of the last handshake with it, and how long ago
    /// that handshake was.
    pub fn speaks(&self, id: NodeId) -> Option<(Speaks, Duration)> {
        let m = self.inner.speaks.lock().ok()?;
        m.get(&id).map(|(s, t)| (s.clone(), t.elapsed()))
    }

    /// The protocol version the connection to `addr` speaks (dialling it if
    /// needed): what a message whose form depends on it must be written in.
    pub async fn version_to(
        &self,
        addr: &str,
        expect: Option<NodeId>,
        timeout: Duration,
    ) -> Result<u32, PeerError> {
        Ok(self.connection(addr, expect, timeout).await?.version)
    }

    /// How long ago `id` last answered an RPC from this node, if ever.
    pub fn last_contact(&self, id: NodeId) -> Option<Duration> {
        let map = self.inner.last_contact.lock().ok()?;
        map.get(&id).map(|t| t.elapsed())
    }

    /// Whether `id` answered an RPC from this node within `d`. A peer not
    /// heard from yet counts as heard at this node's start: a node restarted
    /// a moment ago has not had the time to hear from anyone.
    pub fn heard_within(&self, id: NodeId, d: Duration) -> bool {
        match self.last_contact(id) {
            Some(ago) => ago < d,
            None => self.inner.started.elapsed() < d,
        }
    }

    /// Close every cached connection (on shutdown).
    pub fn close_all(&self) {
        if let Ok(mut conns) = self.inner.conns.lock() {
            for (_, c) in conns.drain() {
                c.conn.close(0u32.into(), b"node shutting down");
            }
        }
    }

    /// Send a leader request to the node at `addr` (`expect`: its id, if known).
    pub async fn leader_call(
        &self,
        addr: &str,
        expect: Option<NodeId>,
        req: LeaderRequest,
        timeout: Duration,
    ) -> Result<LeaderResponse, PeerError> {
        match self
            .call(addr, expect, &PeerRequest::Leader(req), None, timeout)
            .await?
        {
            PeerResponse::Leader(r) => Ok(r),
            PeerResponse::Refused(reason) => Err(PeerError::Unreachable {
                addr: addr.to_string(),
                reason: format!("refused: {reason}"),
            }),
            other => Err(self.protocol_error(addr, &other)),
        }
    }

    /// One RPC: (dial if needed), open a stream, send `req` (and `body` as raw
    /// bytes after it), read one answer. Bounded by `timeout` overall.
    pub async fn call(
        &self,
        addr: &str,
        expect: Option<NodeId>,
        req: &PeerRequest,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<PeerResponse, PeerError> {
        let started = tokio::time::Instant::now();
        let pc = self
            .connection(addr, expect, timeout.min(PEER_CONNECT_TIMEOUT))
            .await?;
        let remaining = timeout.saturating_sub(started.elapsed());
        let res = tokio::time::timeout(remaining, exchange(&pc.conn, req, body)).await;
        self.outcome(addr, &pc, timeout, res)
    }

    /// Account for one exchange on `pc`: a success refreshes the peer's last
    /// contact; a broken connection is forgotten (dialled again next time);
    /// [`TIMEOUTS_BEFORE_REDIAL`] timeouts in a row close it as unresponsive.
    fn outcome<T>(
        &self,
        addr: &str,
        pc: &PeerConn,
        timeout: Duration,
        res: Result<Result<T, String>, tokio::time::error::Elapsed>,
    ) -> Result<T, PeerError> {
        match res {
            Ok(Ok(v)) => {
                pc.timeouts.store(0, std::sync::atomic::Ordering::Relaxed);
                if let Ok(mut m) = self.inner.last_contact.lock() {
                    m.insert(pc.node_id, Instant::now());
                }
                Ok(v)
            }
            Ok(Err(reason)) => {
                if pc.conn.close_reason().is_some() {
                    self.forget(addr, &pc.conn);
                }
                Err(PeerError::Network {
                    addr: addr.to_string(),
                    reason,
                })
            }
            Err(_) => {
                let n = pc
                    .timeouts
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    + 1;
                if n >= TIMEOUTS_BEFORE_REDIAL {
                    tracing::debug!(%addr, timeouts = n, "peer connection unresponsive; dialling again next time");
                    self.forget(addr, &pc.conn);
                    pc.conn.close(5u32.into(), b"unresponsive");
                }
                Err(PeerError::Timeout {
                    addr: addr.to_string(),
                    timeout,
                })
            }
        }
    }

    /// Open a stream to the node at `addr` that outlives one answer: send
    /// `req` (the stream stays open) and read the first answer, within
    /// `timeout`. The caller owns the stream afterwards (a relayed job offer).
    pub async fn open_stream(
        &self,
        addr: &str,
        expect: Option<NodeId>,
        req: &PeerRequest,
        timeout: Duration,
    ) -> Result<(PeerResponse, quinn::SendStream, quinn::RecvStream), PeerError> {
        let started = tokio::time::Instant::now();
        let pc = self
            .connection(addr, expect, timeout.min(PEER_CONNECT_TIMEOUT))
            .await?;
        let remaining = timeout.saturating_sub(started.elapsed());
        let opened = tokio::time::timeout(remaining, async {
            let (mut send, mut recv) = pc.conn.open_bi().await.map_err(|e| e.to_string())?;
            frame::write(&mut send, req)
                .await
                .map_err(|e| e.to_string())?;
            let resp: PeerResponse = frame::read_required(&mut recv)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((resp, send, recv))
        })
        .await;
        self.outcome(addr, &pc, timeout, opened)
    }

    fn protocol_error(&self, addr: &str, got: &PeerResponse) -> PeerError {
        let reason = format!("answer does not match the request: {}", variant_name(got));
        // A peer that answers nonsense gets its connection closed.
        if let Ok(mut conns) = self.inner.conns.lock() {
            if let Some(c) = conns.remove(addr) {
                c.conn.close(4u32.into(), b"protocol error");
            }
        }
        tracing::warn!(%addr, %reason, "peer protocol error");
        PeerError::Protocol {
            addr: addr.to_string(),
            reason,
        }
    }

    fn forget(&self, addr: &str, conn: &quinn::Connection) {
        if let Ok(mut conns) = self.inner.conns.lock() {
            if conns
                .get(addr)
                .is_some_and(|c| c.conn.stable_id() == conn.stable_id())
            {
                conns.remove(addr);
            }
        }
    }

    fn cached(&self, addr: &str) -> Option<PeerConn> {
        let mut conns = self.inner.conns.lock().ok()?;
        match conns.get(addr) {
            Some(c) if c.conn.close_reason().is_none() => Some(c.clone()),
            Some(_) => {
                conns.remove(addr);
                None
            }
            None => None,
        }
    }

    /// The live connection to `addr`, dialling it if needed.
    async fn connection(
        &self,
        addr: &str,
        expect: Option<NodeId>,
        timeout: Duration,
    ) -> Result<PeerConn, PeerError> {
        let unreachable = |reason: String| PeerError::Unreachable {
            addr: addr.to_string(),
            reason,
        };
        let check = |pc: PeerConn| match expect {
            Some(id) if id != pc.node_id => Err(unreachable(format!(
                "node {:x} answers there, not node {id:x}",
                pc.node_id
            ))),
            _ => Ok(pc),
        };
        if let Some(pc) = self.cached(addr) {
            return check(pc);
        }
        let lock = {
            let mut d = self
                .inner
                .dialing
                .lock()
                .map_err(|_| unreachable("dial lock poisoned".into()))?;
            d.entry(addr.to_string()).or_default().clone()
        };
        let _guard = lock.lock().await;
        if let Some(pc) = self.cached(addr) {
            return check(pc);
        }
        let pc = tokio::time::timeout(timeout, self.dial(addr))
            .await
            .map_err(|_| unreachable(format!("no answer within {timeout:?}")))?
            .map_err(unreachable)?;
        if let Ok(mut conns) = self.inner.conns.lock() {
            conns.insert(addr.to_string(), pc.clone());
        }
        check(pc)
    }

    async fn dial(&self, addr: &str) -> Result<PeerConn, String> {
        let remote = resolve(addr).await?;
        let conn = self
            .inner
            .endpoint
            .connect_with(self.inner.client_config.clone(), remote, NODE_SERVER_NAME)
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        let hello = Hello::new(
            Role::Peer,
            String::new(),
            &format!(
                "cairn-node {} (node {:x})",
                cairn_protocol::VERSION,
                self.inner.self_id
            ),
        );
        let reply: Result<HelloReply, String> = async {
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
            frame::write(&mut send, &hello)
                .await
                .map_err(|e| e.to_string())?;
            send.finish().map_err(|e| e.to_string())?;
            frame::read_required(&mut recv)
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        match reply {
            Ok(HelloReply::Welcome { version, .. } | HelloReply::Agreed { version, .. })
                if version < self.inner.floor.load(std::sync::atomic::Ordering::Acquire) =>
            {
                conn.close(6u32.into(), b"below the cluster version");
                Err(format!(
                    "the peer speaks protocol version {version} at most, but the cluster finished an upgrade to version {}: upgrade that node",
                    self.inner.floor.load(std::sync::atomic::Ordering::Acquire)
                ))
            }
            Ok(HelloReply::Agreed {
                node_id,
                version,
                release,
                versions,
                ..
            }) => {
                tracing::debug!(%addr, peer = format!("{node_id:x}"), version, "peer connection up");
                self.record_speaks(
                    node_id,
                    Speaks {
                        version,
                        versions,
                        release,
                    },
                );
                Ok(PeerConn {
                    conn,
                    node_id,
                    version,
                    timeouts: Arc::default(),
                })
            }
            // A peer that speaks version 4 alone (release 0.1.0).
            Ok(HelloReply::Welcome {
                node_id, version, ..
            }) => {
                tracing::debug!(%addr, peer = format!("{node_id:x}"), version, "peer connection up (legacy)");
                self.record_speaks(node_id, Speaks::legacy(version));
                Ok(PeerConn {
                    conn,
                    node_id,
                    version,
                    timeouts: Arc::default(),
                })
            }
            Ok(HelloReply::Refused { reason }) => {
                conn.close(0u32.into(), b"refused");
                Err(format!("refused: {reason}"))
            }
            Err(e) => {
                conn.close(1u32.into(), b"bad hello");
                Err(format!("handshake failed: {e}"))
            }
        }
    }

    fn rpc_error<E: std::error::Error>(
        &self,
        target: &Peer,
        action: RPCTypes,
        e: PeerError,
    ) -> RPCError<NodeId, Node, E> {
        match e {
            PeerError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
            PeerError::Timeout { timeout, .. } => RPCError::Timeout(Timeout {
                action,
                id: self.inner.self_id,
                target: target.id,
                timeout,
            }),
            PeerError::Network { .. } | PeerError::Protocol { .. } => {
                RPCError::Network(NetworkError::new(&e))
            }
        }
    }

    /// A Raft RPC to `target`, with openraft's error mapping.
    async fn raft_call(
        &self,
        target: &Peer,
        action: RPCTypes,
        req: PeerRequest,
        option: &RPCOption,
    ) -> Result<PeerResponse, RpcError> {
        let resp = self
            .call(&target.addr, Some(target.id), &req, None, option.hard_ttl())
            .await
            .map_err(|e| self.rpc_error(target, action, e))?;
        match resp {
            PeerResponse::Fatal(f) => Err(RPCError::RemoteError(RemoteError::new_with_node(
                target.id,
                Node::new(target.addr.clone()),
                RaftError::Fatal(f),
            ))),
            PeerResponse::Refused(reason) => {
                let e = PeerError::Unreachable {
                    addr: target.addr.clone(),
                    reason: format!("refused: {reason}"),
                };
                Err(RPCError::Unreachable(Unreachable::new(&e)))
            }
            other => Ok(other),
        }
    }
}

/// Send one request on a fresh stream and read one answer.
async fn exchange(
    conn: &quinn::Connection,
    req: &PeerRequest,
    body: Option<Vec<u8>>,
) -> Result<PeerResponse, String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    frame::write(&mut send, req)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(body) = body {
        send.write_all(&body).await.map_err(|e| e.to_string())?;
    }
    send.finish().map_err(|e| e.to_string())?;
    frame::read_required(&mut recv)
        .await
        .map_err(|e| e.to_string())
}

async fn resolve(addr: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = addr.parse() {
        return Ok(a);
    }
    tokio::net::lookup_host(addr)
        .await
        .map_err(|e| format!("cannot resolve: {e}"))?
        .next()
        .ok_or_else(|| "name resolved to no address".to_string())
}

fn variant_name(r: &PeerResponse) -> &'static str {
    match r {
        PeerResponse::AppendEntries(_) => "AppendEntries",
        PeerResponse::Vote(_) => "Vote",
        PeerResponse::Snapshot(_) => "Snapshot",
        PeerResponse::Fatal(_) => "Fatal",
        PeerResponse::Leader(_) => "Leader",
        PeerResponse::Refused(_) => "Refused",
        PeerResponse::RelayOpen => "RelayOpen",
        PeerResponse::NoRunner(_) => "NoRunner",
        PeerResponse::LogLines { .. } => "LogLines",
        PeerResponse::LogsHistoryEnd => "LogsHistoryEnd",
        PeerResponse::NoInstance(_) => "NoInstance",
        PeerResponse::SourceFound { .. } => "SourceFound",
    }
}

impl PeerTransport for QuicTransport {
    async fn append_entries(
        &self,
        target: &Peer,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcError> {
        let action = RPCTypes::AppendEntries;
        match self
            .raft_call(target, action, PeerRequest::AppendEntries(rpc), &option)
            .await?
        {
            PeerResponse::AppendEntries(r) => Ok(r),
            other => Err(self.rpc_error(target, action, self.protocol_error(&target.addr, &other))),
        }
    }

    async fn vote(
        &self,
        target: &Peer,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcError> {
        let action = RPCTypes::Vote;
        match self
            .raft_call(target, action, PeerRequest::Vote(rpc), &option)
            .await?
        {
            PeerResponse::Vote(r) => Ok(r),
            other => Err(self.rpc_error(target, action, self.protocol_error(&target.addr, &other))),
        }
    }

    /// openraft 0.9 sends snapshots through `full_snapshot`; the chunked
    /// protocol is not spoken on the wire.
    async fn install_snapshot(
        &self,
        target: &Peer,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, InstallSnapshotRpcError> {
        let e = PeerError::Protocol {
            addr: target.addr.clone(),
            reason: "chunked snapshots are not supported; use full_snapshot".into(),
        };
        Err(RPCError::Network(NetworkError::new(&e)))
    }

    async fn full_snapshot(
        &self,
        target: &Peer,
        vote: Vote<NodeId>,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, SnapshotStreamError> {
        let mut data: Vec<u8> = Cursor::into_inner(*snapshot.snapshot);
        // A follower that speaks only release 0.1.0's protocol reads only its
        // snapshot format (during an upgrade).
        let legacy = match self
            .version_to(
                &target.addr,
                Some(target.id),
                option.hard_ttl().min(PEER_CONNECT_TIMEOUT),
            )
            .await
        {
            Ok(v) => v <= cairn_protocol::handshake::V0_1_PROTOCOL_VERSION,
            Err(e) => return Err(StreamingError::Network(NetworkError::new(&e))),
        };
        if legacy {
            data = crate::raft::state_machine::legacy_snapshot_data(data).map_err(|e| {
                StreamingError::Network(NetworkError::new(&PeerError::Protocol {
                    addr: target.addr.clone(),
                    reason: format!("cannot write the snapshot in release 0.1.0's format: {e}"),
                }))
            })?;
        }
        if data.len() > super::msg::MAX_SNAPSHOT_BYTES {
            let e = PeerError::Protocol {
                addr: target.addr.clone(),
                reason: format!(
                    "snapshot of {} bytes is over the {}-byte limit",
                    data.len(),
                    super::msg::MAX_SNAPSHOT_BYTES
                ),
            };
            return Err(StreamingError::Network(NetworkError::new(&e)));
        }
        tracing::info!(
            target = format!("{:x}", target.id),
            bytes = data.len(),
            snapshot_id = %snapshot.meta.snapshot_id,
            "sending snapshot"
        );
        let req = PeerRequest::FullSnapshot {
            vote,
            meta: snapshot.meta,
        };
        let call = self.call(
            &target.addr,
            Some(target.id),
            &req,
            Some(data),
            option.hard_ttl(),
        );
        let resp = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            r = call => r,
        };
        let action = RPCTypes::InstallSnapshot;
        let stream_err =
            |e: RPCError<NodeId, Node, openraft::error::Infallible>| -> SnapshotStreamError {
                match e {
                    RPCError::Timeout(t) => StreamingError::Timeout(t),
                    RPCError::Unreachable(u) => StreamingError::Unreachable(u),
                    RPCError::Network(n) => StreamingError::Network(n),
                    RPCError::PayloadTooLarge(p) => StreamingError::Network(NetworkError::new(&p)),
                    RPCError::RemoteError(r) => match r.source {},
                }
            };
        match resp {
            Ok(PeerResponse::Snapshot(r)) => Ok(r),
            Ok(PeerResponse::Fatal(f)) => Err(StreamingError::RemoteError(
                RemoteError::new_with_node(target.id, Node::new(target.addr.clone()), f),
            )),
            Ok(PeerResponse::Refused(reason)) => {
                let e = PeerError::Unreachable {
                    addr: target.addr.clone(),
                    reason: format!("refused: {reason}"),
                };
                Err(StreamingError::Unreachable(Unreachable::new(&e)))
            }
            Ok(other) => Err(stream_err(self.rpc_error(
                target,
                action,
                self.protocol_error(&target.addr, &other),
            ))),
            Err(e) => Err(stream_err(self.rpc_error(target, action, e))),
        }
    }
}
