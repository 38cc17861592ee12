//! The seam between openraft's replication and the wire.
//!
//! [`NetworkFactory`] and [`Network`] implement openraft's `RaftNetworkFactory`
//! / `RaftNetwork` by delegating every RPC to a [`PeerTransport`], keeping
//! openraft's error types intact (`Unreachable` → back off, `RemoteError` →
//! the peer answered with an error, …) so a QUIC transport can plug in without
//! touching this module. [`NoPeers`] is the transport of a node that has no
//! peer network yet: every RPC fails with `Unreachable`.

use std::future::Future;

use openraft::error::{
    Fatal, InstallSnapshotError, RPCError, RaftError, ReplicationClosed, StreamingError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, Snapshot, Vote};

use super::{Node, NodeId, TypeConfig};

/// openraft's RPC error for append-entries and vote.
pub type RpcError = RPCError<NodeId, Node, RaftError<NodeId>>;
/// openraft's RPC error for chunked snapshot installation.
pub type InstallSnapshotRpcError = RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>;
/// openraft's error for sending a whole snapshot.
pub type SnapshotStreamError = StreamingError<TypeConfig, Fatal<NodeId>>;

/// The target of an RPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub id: NodeId,
    /// The peer's address as recorded in the membership (`BasicNode::addr`).
    pub addr: String,
}

/// Sends Raft RPCs to a peer and returns its answer. Implementations must be
/// cheap to clone (share a connection pool) and must never panic on anything a
/// peer sends: a bad answer is an `RPCError`.
pub trait PeerTransport: Clone + Send + Sync + 'static {
    fn append_entries(
        &self,
        target: &Peer,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> impl Future<Output = Result<AppendEntriesResponse<NodeId>, RpcError>> + Send;

    fn vote(
        &self,
        target: &Peer,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> impl Future<Output = Result<VoteResponse<NodeId>, RpcError>> + Send;

    /// One chunk of a snapshot (openraft's chunked protocol).
    fn install_snapshot(
        &self,
        target: &Peer,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> impl Future<Output = Result<InstallSnapshotResponse<NodeId>, InstallSnapshotRpcError>> + Send;

    /// A whole snapshot in one transfer (e.g. one QUIC stream). Abort when
    /// `cancel` resolves.
    fn full_snapshot(
        &self,
        target: &Peer,
        vote: Vote<NodeId>,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> impl Future<Output = Result<SnapshotResponse<NodeId>, SnapshotStreamError>> + Send;
}

/// openraft's network factory over a [`PeerTransport`].
#[derive(Debug, Clone)]
pub struct NetworkFactory<T> {
    transport: T,
}

impl<T: PeerTransport> NetworkFactory<T> {
    pub fn new(transport: T) -> Self {
        Self { transport }
    }
}

impl<T: PeerTransport> RaftNetworkFactory<TypeConfig> for NetworkFactory<T> {
    type Network = Network<T>;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Self::Network {
        Network {
            transport: self.transport.clone(),
            target: Peer {
                id: target,
                addr: node.addr.clone(),
            },
        }
    }
}

/// openraft's connection to one peer, over a [`PeerTransport`].
#[derive(Debug, Clone)]
pub struct Network<T> {
    transport: T,
    target: Peer,
}

impl<T: PeerTransport> RaftNetwork<TypeConfig> for Network<T> {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcError> {
        self.transport
            .append_entries(&self.target, rpc, option)
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, InstallSnapshotRpcError> {
        self.transport
            .install_snapshot(&self.target, rpc, option)
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcError> {
        self.transport.vote(&self.target, rpc, option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote<NodeId>,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, SnapshotStreamError> {
        self.transport
            .full_snapshot(&self.target, vote, snapshot, cancel, option)
            .await
    }
}

/// The transport of a node without a peer network: every peer is unreachable.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPeers;

/// Why [`NoPeers`] cannot reach a peer.
#[derive(Debug, thiserror::Error)]
#[error("no peer transport configured: node {} at {} is unreachable", .0.id, .0.addr)]
pub struct NoTransport(pub Peer);

impl NoPeers {
    fn unreachable(target: &Peer) -> Unreachable {
        Unreachable::new(&NoTransport(target.clone()))
    }
}

impl PeerTransport for NoPeers {
    async fn append_entries(
        &self,
        target: &Peer,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcError> {
        Err(Self::unreachable(target).into())
    }

    async fn vote(
        &self,
        target: &Peer,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcError> {
        Err(Self::unreachable(target).into())
    }

    async fn install_snapshot(
        &self,
        target: &Peer,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, InstallSnapshotRpcError> {
        Err(Self::unreachable(target).into())
    }

    async fn full_snapshot(
        &self,
        target: &Peer,
        _vote: Vote<NodeId>,
        _snapshot: Snapshot<TypeConfig>,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, SnapshotStreamError> {
        Err(Self::unreachable(target).into())
    }
}
